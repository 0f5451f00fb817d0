"""One network on many processes (connector_sim.distributed).

The MPI runs go through ``mpiexec -n P`` in subprocesses (tests/mpi/run_distributed.py), so that the
pytest process never initialises MPI; they skip, with the reason, where mpi4py or mpiexec is missing.
The slicing, the counter-based sampling, the one-step kernels and the exact reduction are tested
in-process without MPI.
"""

import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import connector_sim as cs
from connector_sim import distributed
from connector_sim._kernels import counter_rng, distributed_step
from connector_sim._kernels.simulate_dense import BLOCK_SIZE
from connector_sim.distributions import Empirical, Gaussian, GaussianMixture
from backend_support import require_backend

HERE = Path(__file__).resolve().parent
REPOSITORY = Path(cs.__file__).resolve().parent.parent
SCRIPT = HERE / "mpi" / "run_distributed.py"
N = 3 * BLOCK_SIZE + 1000  # as in the script: four blocks, the last one partial
COV = np.eye(5) + 0.6 * np.eye(5, k=2) + 0.6 * np.eye(5, k=-2)


def _mpiexec():
    """The mpiexec beside the interpreter (the mpich wheel's) or on PATH, or skip with the reason."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip('mpi4py is not installed (pip install "connector_sim[mpi]")')
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec: install an MPI (pip install mpich, or the system's MPICH / Open MPI)")
    return found


def _run(command, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(REPOSITORY), OMP_NUM_THREADS="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


# --------------------------------------------------------------------------- in-process


def test_slice_bounds_tile_the_network_in_whole_blocks():
    for n_neurons, n_ranks in [(N, 1), (N, 2), (N, 4), (10 * BLOCK_SIZE - 3, 3)]:
        bounds = [distributed.slice_bounds(n_neurons, n_ranks, r) for r in range(n_ranks)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n_neurons
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(start % BLOCK_SIZE == 0 and stop > start for start, stop in bounds)


def test_more_ranks_than_blocks_is_a_clear_error():
    with pytest.raises(ValueError, match=r"2 MPI processes are too many for a network of 100 neurons.*mpirun -n 1"):
        distributed.slice_bounds(100, 2, 0)


def test_missing_mpi4py_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    with pytest.raises(ImportError, match=r"pip install \"connector_sim\[mpi\]\""):
        distributed._mpi()
    network = cs.LowRankRNN(np.ones((4, 1)), np.ones((4, 1)))
    with pytest.raises(ImportError, match="mpi4py"):
        cs.simulate(network, 3, comm=object())


@pytest.mark.parametrize("distribution", [
    Gaussian(np.zeros(5), COV, rank=2, n_inputs=1),
    GaussianMixture([0.3, 0.7], [[1.0, 0, 0, 0, 0.5], [-1.0, 0, 0, 0, -0.5]], [COV, 0.5 * np.eye(5)],
                    rank=2, bias=True),
    Empirical(np.arange(12.0).reshape(3, 4), rank=2),
], ids=["gaussian", "mixture", "empirical"])
def test_slices_concatenate_to_the_whole_network_bit_for_bit(distribution):
    whole, labels = distributed.sample_slice(distribution, N, seed=5, return_labels=True)
    cuts = [0, BLOCK_SIZE, 2 * BLOCK_SIZE + 17, N]  # any cut, not only block boundaries
    parts = [distributed.sample_slice(distribution, N, 5, a, b, return_labels=True) for a, b in zip(cuts, cuts[1:])]
    for name in ("m", "n", "I", "b"):
        assert np.array_equal(np.concatenate([getattr(p, name) for p, _ in parts]), getattr(whole, name))
    assert np.array_equal(np.concatenate([lab for _, lab in parts]), labels)


def test_counter_based_sampling_has_the_distribution():
    """Mean and covariance of 2e5 rows within 5 standard errors (1/sqrt(N) scaling)."""
    n = 200_000
    network = distributed.sample_slice(Gaussian(np.full(5, 0.5), COV, rank=2, n_inputs=1), n, seed=1)
    rows = np.hstack([network.m, network.n, network.I])
    assert np.all(np.abs(rows.mean(axis=0) - 0.5) < 5 * np.sqrt(np.diag(COV) / n))
    # Var of a sample covariance entry: (C_ii C_jj + C_ij^2) / n
    error = np.sqrt((np.outer(np.diag(COV), np.diag(COV)) + COV**2) / n)
    assert np.all(np.abs(np.cov(rows.T) - COV) < 5 * error)
    mixture = GaussianMixture([0.3, 0.7], [[1.0, 0], [-1.0, 0]], [np.eye(2), np.eye(2)], rank=1)
    _, labels = distributed.sample_slice(mixture, n, seed=2, return_labels=True)
    assert abs(labels.mean() - 0.7) < 5 * math.sqrt(0.21 / n)


def test_unit_normals_are_the_noise_of_those_units():
    whole = counter_rng.standard_normal(9, 2, 7, 3 * 128 + 5)
    assert np.array_equal(distributed_step.unit_normals(9, 2, 7, 128, 2 * 128 + 5), whole[128:])


class _FakeComm:
    """allgather over ranks simulated in one process: each 'rank' contributes one value."""

    def __init__(self, pieces):
        self.pieces = pieces

    def allgather(self, _):
        return [distributed._local_expansions(p) for p in self.pieces]


def test_exact_sum_does_not_depend_on_the_split():
    rng = np.random.default_rng(0)
    # Ill-conditioned block sums: a plain sum depends on the order, the exact one does not.
    partial = rng.standard_normal((300, 2, 3)) * 10.0 ** rng.integers(-8, 9, size=(300, 2, 3))
    partial[5] = 1e16
    partial[6] = -1e16
    reference = np.array([[math.fsum(partial[:, b, r]) for r in range(3)] for b in range(2)])
    for cuts in ([0, 300], [0, 1, 300], [0, 7, 150, 299, 300], list(range(0, 301, 30))):
        pieces = [partial[a:b] for a, b in zip(cuts, cuts[1:])]
        assert np.array_equal(distributed.exact_sum(pieces[0], _FakeComm(pieces)), reference)


def test_local_expansions_are_exact():
    """The vectorised extraction's terms sum exactly to each column's sum (checked with math.fsum).

    Columns with exponents spread over 40 decades, scaled to near overflow or to subnormals.
    """
    rng = np.random.default_rng(3)
    for case in range(120):
        n, c = int(rng.integers(1, 2000)), int(rng.integers(1, 4))
        scale = [1.0, 1e-290, 1e280][case % 3]
        p = rng.standard_normal((n, 1, c)) * 10.0 ** rng.integers(-20, 20, size=(n, 1, c)) * scale
        if case % 7 == 0:
            p[:3] = 1e-310 * rng.standard_normal((3, 1, c))  # subnormals
        before = p.copy()
        terms = distributed._local_expansions(p)
        assert np.array_equal(p, before)  # the block sums are not changed
        for j in range(c):
            assert math.fsum(terms[j]) == math.fsum(p[:, 0, j]), (case, j)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_step_kernels_match_their_reference(dtype):
    """The compiled one-step kernels against the NumPy reference, on a slice at unit 4096.

    Tolerances: float64 sums of 4096 terms in another order, 1e-12 relative; float32, 1e-5
    relative (rounding of the neuron-wise arithmetic and the kernels' own tanh and normals).
    """
    require_backend("cpp")
    rng = np.random.default_rng(1)
    n, B, R, D = 2 * BLOCK_SIZE + 300, 2, 2, 1
    network = cs.LowRankRNN(rng.standard_normal((n, R)), 2 * rng.standard_normal((n, R)), rng.standard_normal((n, D)),
                            0.1 * rng.standard_normal(n), dtype=dtype)
    loadings = (network.m_T, network.n_T, network.I_T, network.b, "tanh")
    mask = np.zeros(n, bool)
    mask[:50] = True
    clamp = (mask, np.full(n, 0.25, dtype), 3, 5)
    x0 = rng.standard_normal((B, n)).astype(dtype)
    units = np.array([0, 4100, n - 1])
    results = {}
    for backend in ("numpy", "cpp"):
        full, latent = distributed_step.kernels(backend)
        x, record = x0.copy(), np.empty((B, 3), dtype)
        before, after, latent_sums = (np.empty((3, B, R)) for _ in range(3))
        full(*loadings, x, np.ones((1, D)), 0.1, 0.3, 5, 0, 3, BLOCK_SIZE, None, units, record, clamp, before)
        full(*loadings, x, np.ones((1, D)), 0.1, 0.3, 5, 0, 3, BLOCK_SIZE, before.sum(0) / n, units, record, clamp,
             after)
        latent(*loadings, np.ones((B, R)), np.ones((B, D)), 4, clamp, latent_sums)
        results[backend] = (before, x, record, after, latent_sums)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for reference, compiled in zip(results["numpy"], results["cpp"]):
        scale = np.max(np.abs(reference))
        assert np.max(np.abs(compiled.astype(np.float64) - reference)) <= rtol * scale
    for backend in ("numpy", "cpp"):  # a slice must start at a block boundary (its noise pairs and sums)
        with pytest.raises(ValueError, match="unit_offset must be a multiple of 4096"):
            distributed_step.kernels(backend)[0](*loadings, x0.copy(), np.ones((1, D)), 0.1, 0.3, 5, 0, 3, 128,
                                                 None, units, record, clamp, before)


# --------------------------------------------------------------------------- under mpiexec


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The script's results for P = 1 and P = 2 (and the per-rank files)."""
    mpiexec = _mpiexec()
    require_backend("cpp")
    folder = tmp_path_factory.mktemp("mpi")
    out = {}
    for n_ranks, backend in ((1, "cpp"), (2, "cpp"), (2, "numpy")):
        path = folder / f"p{n_ranks}{backend}.npz"
        _run([mpiexec, "-n", str(n_ranks), sys.executable, str(SCRIPT), str(path), f"--backend={backend}"])
        key = n_ranks if backend == "cpp" else "numpy"
        out[key] = (dict(np.load(path)), [dict(np.load(f"{path}.rank{r}.npz")) for r in range(n_ranks)])
    return out


def test_two_processes_equal_one_bit_for_bit(runs):
    """The exact reduction makes P irrelevant: kappa, potentials and rates, full and latent paths."""
    one, two = runs[1][0], runs[2][0]
    assert int(one["n_ranks"]) == 1 and int(two["n_ranks"]) == 2
    for key in ("kappa_full", "potentials_full", "rates_full", "kappa_latent", "potentials_latent", "rates_latent"):
        assert np.array_equal(one[key], two[key]), key
    # x of each slice at the end is that part of the single process's x
    assert np.array_equal(np.concatenate([r["final_state"] for r in runs[2][1]], axis=1), runs[1][1][0]["final_state"])


def test_slices_of_two_processes_are_the_single_process_network(runs):
    distribution = Gaussian(np.zeros(5), COV, rank=2, n_inputs=1)
    whole = distributed.sample_slice(distribution, N, seed=11)
    ranks = runs[2][1]
    assert [int(r["start"]) for r in ranks] == [0, 2 * BLOCK_SIZE]
    for name in ("m", "n", "I"):
        assert np.array_equal(np.concatenate([r[name] for r in ranks]), getattr(whole, name))


def test_distributed_run_equals_simulate_to_rounding(runs):
    """Against simulate on the whole network: only the order of the block sums differs.

    The 40-step runs (noise, input pulse, clamp window 10..30) stay within 1e-12 of each other:
    a relative 1e-16 difference in krec per step, carried by contracting dynamics.
    """
    one = runs[1][0]
    whole = distributed.sample_slice(Gaussian(np.zeros(5), COV, rank=2, n_inputs=1), N, seed=11)
    inputs = np.zeros((40, 1))
    inputs[5:15] = 0.5
    kwargs = dict(dt=0.1, inputs=inputs, kappa0=[[1.0, -0.5], [-0.3, 0.8]], record_units=one["units"],
                  clamp={"units": np.arange(4000, 4200), "value": 0.0, "start": 10, "stop": 30}, backend="cpp")
    full = cs.simulate(whole, noise_std=0.3, seed=4, path="full", **kwargs)
    latent = cs.simulate(whole, path="latent", **kwargs)
    for result, path in ((full, "full"), (latent, "latent")):
        np.testing.assert_allclose(one[f"kappa_{path}"], result.kappa, rtol=0, atol=1e-12)
        np.testing.assert_allclose(one[f"rates_{path}"], result.rates, rtol=0, atol=1e-12)
    # the clamp silenced unit 4100 (in 4000..4199) during steps 10..29, on both paths
    column = list(one["units"]).index(4100)
    assert np.all(one["rates_full"][:, 10:30, column] == 0) and np.all(one["rates_full"][:, 30:, column] != 0)


def test_numpy_reference_backend_agrees(runs):
    """The distributed loop on the NumPy reference kernels, P = 2, against the compiled ones.

    Tolerance 1e-10: the kernels' tanh and noise normals differ from NumPy's by 1e-16 and 1e-14.
    """
    compiled, reference = runs[2][0], runs["numpy"][0]
    for key in ("kappa_full", "rates_full", "kappa_latent", "rates_latent"):
        np.testing.assert_allclose(reference[key], compiled[key], rtol=0, atol=1e-10, err_msg=key)


def test_errors_under_mpiexec():
    """A rank count larger than the blocks, and a bad comm, on 2 processes."""
    mpiexec = _mpiexec()
    script = (
        "import numpy as np, connector_sim as cs\n"
        "from connector_sim.distributed import DistributedNetwork\n"
        "g = cs.Gaussian(np.zeros(2), np.eye(2), rank=1)\n"
        "try:\n"
        "    DistributedNetwork.from_distribution(g, 100, seed=0)\n"
        "except ValueError as e:\n"
        "    assert 'too many for a network of 100 neurons' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
        "try:\n"
        "    cs.simulate(cs.LowRankRNN(np.ones((4, 1)), np.ones((4, 1))), 3, comm='world')\n"
        "except TypeError as e:\n"
        "    assert 'mpi4py intracommunicator' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
        "print('checked')\n"
    )
    done = _run([mpiexec, "-n", "2", sys.executable, "-c", script])
    assert done.stdout.count("checked") == 2


def test_cli_mpi_two_processes_equal_one(tmp_path):
    mpiexec = _mpiexec()
    require_backend("cpp")
    command = [sys.executable, "-m", "connector_sim", "simulate", "bistable", "--n-neurons", "9000", "--trials", "4",
               "--n-steps", "20", "--noise-std", "0.2", "--record-units", "3", "--mpi", "--out"]
    _run(command + [str(tmp_path / "one.npz")])  # a single process (MPI's singleton start)
    done = _run([mpiexec, "-n", "2"] + command + [str(tmp_path / "two.npz")])
    assert done.stdout.count("simulate --mpi") == 1  # rank 0 reports and writes
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert int(two["n_ranks"]) == 2 and np.array_equal(one["kappa"], two["kappa"])
    assert np.array_equal(one["rates"], two["rates"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npz", "two.npz"]  # no temporary files left


def test_import_does_not_load_mpi4py():
    code = "import sys, connector_sim, connector_sim.distributed; print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(REPOSITORY)))
    assert out.stdout.split() == ["False"]


def test_docstring_examples():
    import doctest

    failed, attempted = doctest.testmod(distributed, optionflags=doctest.ELLIPSIS)
    assert attempted >= 3 and failed == 0


def test_cli_mpi_without_mpi4py_is_a_clear_error(monkeypatch, tmp_path, capsys):
    from connector_sim.cli import main

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    status = main(["simulate", "bistable", "--n-neurons", "5000", "--n-steps", "2", "--mpi", "--quiet",
                   "--out", str(tmp_path / "out.npz")])
    assert status == 2 and 'pip install "connector_sim[mpi]"' in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists()
