"""n_threads: one check (check_n_threads) for every public entry point, before any work.

Regression for thread counts that crashed the compiled kernels (100_000
threads segfaulted, 2**31 - 1 aborted inside the OpenMP runtime).
"""

import contextlib
import io

import numpy as np
import pytest

from connector_sim import Gaussian, LowRankRNN, Perturbation, perturbation_study, simulate, sparsify
from connector_sim._validation import MAX_THREADS, check_n_threads
from connector_sim.cli import main
from connector_sim.spectra import leading_eigenvalues

#: (value, error): too many threads, none, negative, and values that are not ints.
BAD = [(100_000, ValueError), (2**31 - 1, ValueError), (2**63, ValueError), (MAX_THREADS + 1, ValueError),
       (0, ValueError), (-1, ValueError), (True, TypeError), (np.bool_(True), TypeError), (2.5, TypeError),
       ("2", TypeError), (None, TypeError)]


def small_network(n_neurons=200):
    rng = np.random.default_rng(0)
    return LowRankRNN(rng.standard_normal((n_neurons, 2)), rng.standard_normal((n_neurons, 2)))


def test_check_n_threads_accepts_ints_up_to_the_cap():
    assert MAX_THREADS >= 64
    for value in (1, 2, np.int64(3), np.uint8(4), MAX_THREADS):
        assert check_n_threads(value) == int(value)
        assert type(check_n_threads(value)) is int
    assert check_n_threads(None, allow_none=True) is None


@pytest.mark.parametrize("value, error", BAD)
def test_check_n_threads_message_says_what_how_and_the_range(value, error):
    with pytest.raises(error, match=rf"'n_threads' parameter of owner must be an int.*\[1, {MAX_THREADS}\]"):
        check_n_threads(value, "owner")


@pytest.mark.parametrize("value, error", BAD)
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_simulate_rejects_bad_thread_counts_on_every_backend(value, error, kind, backend):
    network = small_network()
    if kind == "sparse":
        network = sparsify(network, n_connections=20, seed=0)
    with pytest.raises(error, match="'n_threads' parameter of simulate"):
        simulate(network, 5, n_threads=value, backend=backend)


@pytest.mark.parametrize("value, error", BAD[:4] + BAD[6:8])
def test_spectra_perturbations_and_dissimilarity_reject_bad_thread_counts(value, error):
    network = small_network()
    with pytest.raises(error, match="'n_threads' parameter of leading_eigenvalues"):
        leading_eigenvalues(sparsify(network, n_connections=20, seed=0), n_threads=value)
    with pytest.raises(error, match="'n_threads' parameter of perturbation_study"):
        perturbation_study(network, [Perturbation()], np.zeros(2), n_steps=5, n_threads=value)
    from connector_sim.inference.distances import dissimilarity

    p = Gaussian(np.zeros(4), np.eye(4), rank=2)
    with pytest.raises(error, match="'n_threads' parameter of dissimilarity"):
        dissimilarity(p, p, n_threads=value)


def test_dissimilarity_with_zero_threads_is_a_clear_error():
    from connector_sim.inference.distances import dissimilarity

    p = Gaussian(np.zeros(4), np.eye(4), rank=2)
    with pytest.raises(ValueError, match=r"must be an int in the range \[1, "):
        dissimilarity(p, p, n_threads=0)


@pytest.mark.parametrize("threads", ["0", "100000", "2147483647"])
def test_cli_threads_out_of_range_exit_2_with_one_line(threads, tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["simulate", "quadstable", "--n-neurons", "50", "--trials", "2", "--n-steps", "3",
                       "--threads", threads, "--out", str(tmp_path / "sim.npz")])
    assert status == 2
    assert err.getvalue().count("\n") == 1 and "--threads must be in [1, " in err.getvalue()
    assert not (tmp_path / "sim.npz").exists()
