"""simulate runs long simulations in chunks of steps: bitwise the same results,
progress and Ctrl-C between chunks, and one report of a diverging state on every backend."""

import importlib
import os
import re
import signal
import threading
import time
import warnings

import numpy as np
import pytest

from connector_sim import LowRankRNN, NonFiniteStateWarning, simulate, sparsify
from backend_support import require_backend

simulate_module = importlib.import_module("connector_sim.simulate")

N_STEPS = 23


def small_network(dtype=np.float64, activation="tanh", n_neurons=300):
    rng = np.random.default_rng(0)
    return LowRankRNN(rng.standard_normal((n_neurons, 2)), 3 * rng.standard_normal((n_neurons, 2)),
                      rng.standard_normal((n_neurons, 1)), 0.1 * rng.standard_normal(n_neurons),
                      activation=activation, dtype=dtype)


@pytest.fixture
def chunk_steps(monkeypatch):
    """Force the number of steps per kernel call."""

    def force(steps):
        monkeypatch.setattr(simulate_module, "_chunk_steps", lambda *args: steps)

    return force


CASES = {
    # private noise (full path), a clamp window that straddles chunk boundaries, batched inputs and x0
    "dense-full-noise": dict(kind="dense", noise_std=0.4, path="full", dtype=np.float64),
    "dense-full-noise-float32": dict(kind="dense", noise_std=0.4, path="full", dtype=np.float32),
    "dense-full": dict(kind="dense", noise_std=0.0, path="full", dtype=np.float64),
    "dense-latent": dict(kind="dense", noise_std=0.0, path="latent", dtype=np.float64),
    "sparse-noise": dict(kind="sparse", noise_std=0.4, path="full", dtype=np.float64),
}


def run_case(case, backend):
    network = small_network(case["dtype"])
    if case["kind"] == "sparse":
        network = sparsify(network, n_connections=30, seed=3)
    rng = np.random.default_rng(1)
    return simulate(network, inputs=rng.standard_normal((2, N_STEPS, 1)), x0=rng.standard_normal((2, 300)),
                    noise_std=case["noise_std"], seed=7, path=case["path"], backend=backend,
                    record_units=[0, 11, 299], clamp={"units": np.arange(0, 300, 7), "value": 0.5,
                                                      "start": 5, "stop": 14})


@pytest.mark.parametrize("name", CASES)
def test_chunked_runs_equal_one_call_bitwise(name, backend, chunk_steps):
    chunk_steps(N_STEPS)
    whole = run_case(CASES[name], backend)
    for steps in (1, 4):
        chunk_steps(steps)
        chunked = run_case(CASES[name], backend)
        np.testing.assert_array_equal(chunked.kappa, whole.kappa)
        np.testing.assert_array_equal(chunked.potentials, whole.potentials)
        np.testing.assert_array_equal(chunked.final_state, whole.final_state)


def test_chunks_follow_a_cost_estimate():
    # About CHUNK_WORK units of work per thread and chunk (B N (2R + D + 2) per latent
    # step, twice that on the full path); the dense full path takes up to 4 steps.
    chunk_steps, work = simulate_module._chunk_steps, simulate_module.CHUNK_WORK
    latent_step = 10 * 10**5 * (2 * 2 + 1 + 2)
    assert chunk_steps(10**6, 10, 10**5, 2, 1, "latent", False, 0.0, 1) == int(work // latent_step)
    assert chunk_steps(10**6, 10, 10**5, 2, 1, "latent", False, 0.0, 3) == int(3 * work // latent_step)
    assert chunk_steps(10**6, 10, 10**5, 2, 1, "full", True, 0.0, 1) == int(work // (10 * 10**5 * 20))
    assert chunk_steps(10**6, 10, 10**5, 2, 1, "full", False, 5.0, 1) == int(work // (10 * 10**5 * 24))
    big = int(work // (2 * 7))  # B N with one full step = one chunk's work
    assert chunk_steps(10**6, 1, big, 2, 1, "full", False, 0.0, 1) == 4
    assert chunk_steps(10**6, 1, 8 * big, 2, 1, "full", False, 0.0, 1) == 1
    assert chunk_steps(10**6, 1, 8 * big, 2, 1, "latent", False, 0.0, 1) == 1
    assert chunk_steps(5, 1, 100, 2, 1, "latent", False, 0.0, 1) == 5
    assert simulate_module._step_chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_progress_is_called_after_each_chunk_and_can_interrupt(backend, chunk_steps):
    chunk_steps(4)
    calls = []
    simulate(small_network(), 10, backend=backend, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 10), (8, 10), (10, 10)]

    def interrupt(done, total):
        calls.append(done)
        raise KeyboardInterrupt

    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        simulate(small_network(), 10, noise_std=0.1, backend=backend, progress=interrupt)
    assert calls == [4]


def test_progress_true_prints_and_a_bad_progress_is_a_type_error(capsys):
    simulate(small_network(), 3, progress=True)
    assert "[simulate] 3/3 steps" in capsys.readouterr().err
    with pytest.raises(TypeError, match="'progress' parameter of simulate"):
        simulate(small_network(), 3, progress="yes")


def test_ctrl_c_stops_a_long_compiled_run_within_a_second(fast_backend):
    # 20,000 latent steps at N = 1e6 take 20-60 s in one kernel call. SIGINT
    # sent while the second chunk runs in the kernel must end the call at the
    # end of that chunk (measured: within 0.4 s on a loaded machine).
    rng = np.random.default_rng(0)
    N = 1_000_000
    network = LowRankRNN(rng.standard_normal((N, 1), np.float32), rng.standard_normal((N, 1), np.float32),
                         dtype=np.float32)
    simulate(network, 2, backend=fast_backend)  # compile (numba) outside the timed part
    sent, chunks_done = [], []

    def progress(done, total):
        chunks_done.append(done)
        if len(chunks_done) == 1:
            threading.Timer(0.05, interrupt).start()

    def interrupt():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        simulate(network, 20_000, kappa0=[0.5], backend=fast_backend, progress=progress)
    assert sent and time.perf_counter() - sent[0] < 1.0
    assert len(chunks_done) <= 3 and chunks_done[-1] < 20_000


# --- divergence ------------------------------------------------------------------------


def diverging_network(kind, activation, dtype=np.float64, N=256):
    # m = 1, n = 101: the outlier eigenvalue is 101, so kappa grows 11-fold per
    # step (alpha = 0.1) until it overflows.
    network = LowRankRNN(np.ones((N, 1)), np.full((N, 1), 101.0), activation=activation, dtype=dtype)
    return sparsify(network, n_connections=N // 2, seed=0) if kind == "sparse" else network


def reported_step(record):
    return int(re.search(r"from time step (\d+)", str(record.message)).group(1))


@pytest.mark.parametrize("kind, path, dtype", [("dense", "latent", np.float64), ("dense", "full", np.float64),
                                               ("dense", "full", np.float32), ("sparse", "full", np.float64)])
@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_every_backend_reports_the_same_first_nonfinite_step(kind, path, dtype, activation, chunk_steps):
    steps = {}
    for backend in ("numpy", "numba", "cpp"):
        require_backend(backend)
        chunk_steps(50)
        with pytest.warns(NonFiniteStateWarning, match="stopped being finite") as records:
            result = simulate(diverging_network(kind, activation, dtype), 400, kappa0=[1.0], path=path,
                              backend=backend)
        assert len([r for r in records if r.category is NonFiniteStateWarning]) == 1
        step = reported_step(records[0])
        message = str(records[0].message)
        assert "trial 0" in message and "smaller dt" in message and "'tanh'" in message
        # The step named is the first non-finite row of kappa.
        assert np.isfinite(result.kappa[0, :step]).all() and not np.isfinite(result.kappa[0, step]).all()
        steps[backend] = step
    if dtype == np.float64:
        assert len(set(steps.values())) == 1, steps
    else:
        # The cpp float32 kernel adds 8 products n_i phi(x_i) per lane in float32
        # before summing in float64: they overflow 8 * 101 ~ 11**2.8 times sooner,
        # so its kappa itself turns inf up to 3 steps earlier (its report matches its kappa).
        assert steps["numpy"] == steps["numba"] and 0 <= steps["numpy"] - steps["cpp"] <= 3, steps
    if (kind, dtype) == ("dense", np.float64):
        # kappa_t = 11**t until the float64 sum of N n_i phi(x_i) = 101 N 11**t overflows
        assert abs(steps["numpy"] - np.log(np.finfo(float).max / (101 * 256)) / np.log(11)) < 2


def test_on_nonfinite_raise_stops_with_floating_point_error(backend):
    with pytest.raises(FloatingPointError, match=r"kappa of trial 0 are not finite from time step \d+"):
        simulate(diverging_network("dense", "identity"), 400, kappa0=[1.0], backend=backend, on_nonfinite="raise")
    with pytest.raises(ValueError, match="'on_nonfinite' parameter of simulate must be one of"):
        simulate(diverging_network("dense", "identity"), 4, on_nonfinite="ignore")


def test_unstable_euler_with_tanh_is_reported_too(backend):
    # alpha = 3 > 2: x doubles in magnitude every step while tanh keeps kappa
    # bounded, until x overflows; every backend must say so.
    network = small_network(np.float32)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        simulate(network, 300, dt=3.0, kappa0=[1.0, 1.0], path="full", backend=backend)
    categories = [r.category for r in records]
    assert categories.count(NonFiniteStateWarning) == 1
    assert set(categories) <= {NonFiniteStateWarning, RuntimeWarning}


def test_a_finite_run_warns_nothing(backend):
    # pytest runs with filterwarnings = error: any warning would fail this.
    result = simulate(small_network(), 50, noise_std=0.3, seed=1, backend=backend)
    assert np.isfinite(result.kappa).all()


def test_the_low_rank_plus_random_simulator_reports_divergence_the_same_way():
    from connector_sim import LowRankPlusRandomRNN
    from connector_sim.sparse_dynamics import simulate_low_rank_plus_random

    network = LowRankPlusRandomRNN(diverging_network("dense", "identity"), 0.5, seed=0)
    with pytest.warns(NonFiniteStateWarning, match=r"kappa of trial 0 are not finite from time step \d+") as records:
        result = simulate_low_rank_plus_random(network, 400, kappa0=[1.0])
    step = reported_step(records[0])
    assert np.isfinite(result.kappa[0, :step]).all() and not np.isfinite(result.kappa[0, step]).all()


@pytest.mark.parametrize("path", ["auto", "full"])
def test_a_huge_dt_gives_the_package_s_warnings_only(backend, path):
    # alpha = 1e300: the input filter and the decay overflow; NumPy's own
    # overflow warnings stay inside, the user sees simulate's two warnings.
    network = LowRankRNN(np.ones((2, 1)), np.ones((2, 1)), I=np.ones((2, 1)))
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        simulate(network, 20, dt=1e300, v0=[0.3], backend=backend, path=path)
    messages = sorted((r.category.__name__, str(r.message)[:6]) for r in records)
    assert messages == [("NonFiniteStateWarning", "The si"), ("RuntimeWarning", "dt = 1")], messages
