"""Public paths as fast as their kernels (issue 17, items 3 and 4).

- ``latent_velocity(..., dtype="float32")`` runs the float32 flow-field
  kernel, within the bound of ``flow_field.float32_error_bound`` of the float64 flow;
- ``simulate``'s full path forms x0 = m kappa0 + I v0 + b without float64
  arrays of size N (tracemalloc probe) and its latents from x0 without them;
- ``n_threads="auto"`` never takes more threads than free cores, one on a
  loaded machine, and never changes results.
"""

import tracemalloc

import numpy as np
import pytest

from connector_sim import Gaussian, LowRankRNN, latent_flow, latent_velocity, simulate
from connector_sim import _threads
from connector_sim._kernels import flow_field
from connector_sim._validation import check_n_threads
from connector_sim.synthetic import latent_grid


def random_gaussian(n_inputs, seed=0):
    """Rank 2, n_inputs inputs, with bias: loadings correlated so the flow is not small."""
    rng = np.random.default_rng(seed)
    size = 2 * 2 + n_inputs + 1
    a = rng.standard_normal((size, size))
    cov = a @ a.T / size + np.eye(size)
    return Gaussian(0.3 * rng.standard_normal(size), cov, rank=2, n_inputs=n_inputs, bias=True)


# --- latent_velocity(dtype=...) -------------------------------------------------------------------


@pytest.mark.parametrize("network_dtype", [np.float32, np.float64])
def test_float32_flow_is_within_its_bound_of_the_float64_flow(network_dtype):
    # backend="auto": the fastest compiled kernel (the numba one is checked against the same
    # arithmetic bound in tests/kernels/test_flow_field.py; compiling it here would cost ~10 s).
    network = random_gaussian(1).sample(20_000 + 3, 1, dtype=network_dtype)
    kappa, v = latent_grid(5, 2.0), np.full((25, 1), 0.4)
    f64 = latent_velocity(network, kappa, [0.4])
    f32 = latent_velocity(network, kappa, [0.4], dtype=np.float32)
    assert f32.dtype == np.float64 and f32.shape == kappa.shape
    bound = flow_field.float32_error_bound(network.m_T, network.n_T, network.I_T, network.b, "tanh", kappa, v)
    error = np.abs(f32 - f64)
    np.testing.assert_array_less(error, bound)
    if flow_field.available_backends()[0] != "numpy":
        # float32 arithmetic really ran: the float64 flows of two backends agree to ~1e-15.
        assert error.max() > 1e-10
    # The error seen is far below the worst case (documented in latent_velocity): measured
    # 0.06-0.08 eps mean|n| at N = 1e4 .. 1e6; the float32 tanh alone may err by 3 eps.
    scale = np.abs(network.n_T.astype(np.float64)).mean() * np.finfo(np.float32).eps
    assert error.max() < 20 * scale


def test_float32_flow_uses_a_float32_network_as_it_is():
    network = random_gaussian(0).sample(1_000, 0, dtype=np.float32)
    flow = latent_flow(network, dtype="float32")
    assert flow(np.zeros(2)).shape == (2,)
    # The float32 kernel reads the network's own arrays: no float64 copy is made.
    from connector_sim.mean_field import _MeanField

    field = _MeanField(network, activation=None, order=64, labels=None, component=None, clamp_components=None,
                       dtype=np.float32)
    m_T = field.terms.loadings[0][0]
    assert m_T.dtype == np.float32 and np.shares_memory(m_T, network.m_T)


def test_bad_flow_dtype_says_what_was_expected():
    network = random_gaussian(0).sample(100, 0)
    with pytest.raises(TypeError, match="'dtype' parameter must be float32 or float64. Got int64"):
        latent_velocity(network, np.zeros(2), dtype=np.int64)
    with pytest.raises(TypeError, match="'dtype' parameter must be float32 or float64"):
        latent_velocity(random_gaussian(0), np.zeros(2), dtype="float16")


# --- simulate: no float64 temporaries of size N -------------------------------------------------------


def _rank2_network(n_neurons, dtype, n_inputs=1, seed=0):
    rng = np.random.default_rng(seed)
    return LowRankRNN(rng.standard_normal((n_neurons, 2)), 2 * rng.standard_normal((n_neurons, 2)),
                      rng.standard_normal((n_neurons, n_inputs)), 0.1 * rng.standard_normal(n_neurons),
                      dtype=dtype)


def test_full_path_float32_allocates_no_float64_state():
    # The initial state is formed in simulate itself, before any backend's kernel: one
    # backend (the fastest built) covers it.
    backend = "auto"
    N = 400_000
    network = _rank2_network(N, np.float32)
    options = dict(kappa0=[0.5, -0.3], v0=[0.2], noise_std=0.1, seed=3, path="full", backend=backend, n_threads=1)
    simulate(network, 2, **options)  # compile, caches
    tracemalloc.start()
    try:
        simulate(network, 4, **options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    state = N * 4  # the float32 state x (1, N) that the full path must hold
    # Before: x0 built from three float64 (1, N) arrays and their sum (>= 2 x 8 N bytes live at once).
    # Now: x itself, plus block-sized (16384-neuron) temporaries and the small outputs.
    assert peak < 1.25 * state + (1 << 20), f"peak {peak / 1e6:.2f} MB for a {state / 1e6:.2f} MB state"
    # A float32 x0 given by the user: read block by block for its latents, never copied to float64.
    x0 = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    options.pop("kappa0")
    tracemalloc.start()
    try:
        simulate(network, 4, x0=x0, **options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * state + (1 << 20), f"peak {peak / 1e6:.2f} MB for a {state / 1e6:.2f} MB state"


@pytest.mark.parametrize("batch", [1, 3])
def test_full_path_initial_state_is_m_kappa0_plus_I_v0_plus_b(batch, monkeypatch):
    from connector_sim._kernels import affine_state as module
    from connector_sim._kernels.affine_state import affine_state, affine_state_reference

    network = _rank2_network(50_000 + 11, np.float32, n_inputs=2)
    rng = np.random.default_rng(1)
    kappa0, v0 = rng.standard_normal((batch, 2)), rng.standard_normal((batch, 2))
    monkeypatch.setattr(module, "COMPILED_MIN_SIZE", 0)
    result = simulate(network, 1, kappa0=kappa0, v0=v0, path="full", record_units="all", n_threads=1)
    # The numba kernel and its NumPy reference (block by block, the same float64 sum order) agree bitwise.
    reference = affine_state_reference(network.m_T, network.I_T, network.b, kappa0, v0,
                                       np.empty((batch, network.n_neurons), np.float32))
    np.testing.assert_array_equal(result.potentials[:, 0], reference)
    shared_v = affine_state(network.m_T, network.I_T, network.b, kappa0, v0[:1],
                            np.empty((batch, network.n_neurons), np.float64))
    np.testing.assert_array_equal(
        shared_v, affine_state_reference(network.m_T, network.I_T, network.b, kappa0, v0[:1],
                                         np.empty((batch, network.n_neurons))))
    # Both are the float64 value rounded once: within one float32 rounding (plus float64 noise) of
    # the matrix expression.
    exact = (kappa0 @ network.m_T.astype(np.float64) + v0 @ network.I_T.astype(np.float64)
             + network.b.astype(np.float64))
    np.testing.assert_array_less(np.abs(reference - exact), np.abs(exact) * 2.0**-24 * (1 + 1e-9) + 1e-300)


def test_full_path_latents_of_x0_match_least_squares():
    network = _rank2_network(30_000, np.float64)
    rng = np.random.default_rng(2)
    x0 = rng.standard_normal((2, network.n_neurons))
    result = simulate(network, 1, x0=x0, v0=[0.3], path="full", n_threads=1)
    residual = x0 - (0.3 * network.I[:, 0] + network.b)
    expected = np.linalg.lstsq(network.m, residual.T, rcond=None)[0].T
    # Normal equations in float64: error ~ cond(m)^2 eps, cond(m) ~ 1 for Gaussian loadings.
    np.testing.assert_allclose(result.kappa[:, 0], expected, rtol=0, atol=1e-12)
    # A rank-deficient m (two equal columns): the minimum-norm latents, as lstsq on m gives.
    m = np.repeat(rng.standard_normal((500, 1)), 2, axis=1)
    degenerate = LowRankRNN(m, rng.standard_normal((500, 2)))
    x0 = rng.standard_normal(500)
    got = simulate(degenerate, 1, x0=x0, path="full", n_threads=1).kappa[0, 0]
    np.testing.assert_allclose(got, np.linalg.lstsq(m, x0, rcond=None)[0], rtol=0, atol=1e-12)


# --- n_threads="auto" -----------------------------------------------------------------------------------


def _machine(monkeypatch, cores, load):
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(_threads.os, "getloadavg", lambda: (load, load, load))


@pytest.mark.parametrize("cores", [1, 2, 8, 64])
@pytest.mark.parametrize("load", [0.0, 0.5, 1.0, 1.7, 3.0, 7.5, 40.0])
def test_auto_threads_never_exceed_the_free_cores(monkeypatch, cores, load):
    _machine(monkeypatch, cores, load)
    for work in (0, 10_000, 1_000_000, 10**8, 10**12):
        threads = _threads.auto_threads(work)
        assert 1 <= threads <= cores
        # The caller's thread is one of the load: others occupy load - 1 cores.
        assert threads <= max(1.0, cores - max(0.0, load - 1.0))
        assert threads <= max(1, work // _threads.MIN_WORK_PER_THREAD)


def test_auto_threads_is_one_on_a_loaded_machine_or_a_small_network(monkeypatch):
    _machine(monkeypatch, 2, 4.0)  # this machine: 2 cores, 8 people working at once
    assert _threads.auto_threads(10**9) == 1
    _machine(monkeypatch, 16, 16.5)
    assert _threads.auto_threads(10**9) == 1
    _machine(monkeypatch, 16, 1.0)  # idle but for the caller
    assert _threads.auto_threads(10**9) == 16
    assert _threads.auto_threads(_threads.MIN_WORK_PER_THREAD - 1) == 1
    assert _threads.auto_threads(3 * _threads.MIN_WORK_PER_THREAD) == 3
    monkeypatch.delattr(_threads.os, "getloadavg")  # no load average: never oversubscribe
    assert _threads.auto_threads(10**9) == 1


def _auto_in_a_sweep_task(work):
    return _threads.auto_threads(work)


def test_auto_threads_is_one_inside_a_sweep_task_and_only_there(monkeypatch):
    from connector_sim.parallel import run_tasks

    _machine(monkeypatch, 16, 1.0)  # idle: outside a task, auto takes the cores
    assert _threads.auto_threads(10**9) == 16
    with _threads.one_thread_per_task():
        assert _threads.auto_threads(10**9) == 1
        assert _threads.resolve_n_threads(4, 10**9) == 4  # an explicit count is used as given
    assert _threads.auto_threads(10**9) == 16  # restored after the block
    # A process pool's tasks (a fresh process: the real machine, whose cores are what they are).
    assert run_tasks(_auto_in_a_sweep_task, [10**9, 10**9], scheduler="processes:2") == [1, 1]
    assert _threads.resolve_n_threads("auto", 10**9, min_work_per_thread=10**9) == 1  # spectra's own threshold


def test_check_n_threads_accepts_auto_where_allowed():
    assert check_n_threads("auto", "simulate", allow_auto=True) == "auto"
    assert check_n_threads(3, "simulate", allow_auto=True) == 3
    with pytest.raises(TypeError, match="'n_threads' parameter of owner must be an int"):
        check_n_threads("auto", "owner")
    with pytest.raises(TypeError, match="must be 'auto' or an int in the range"):
        check_n_threads("two", "simulate", allow_auto=True)


def test_simulate_auto_threads_follow_the_load_and_keep_results(monkeypatch):
    network = _rank2_network(600_000, np.float32, seed=4)
    options = dict(kappa0=[0.5, -0.3], noise_std=0.2, seed=5, path="full", record_units=[0, 7, 599_999])
    _machine(monkeypatch, 2, 9.0)
    loaded = simulate(network, 3, **options)
    assert loaded.n_threads == 1
    _machine(monkeypatch, 2, 0.0)
    idle = simulate(network, 3, **options)
    assert idle.n_threads == 2  # 6e5 neuron-updates per step: 3e5 per thread
    two = simulate(network, 3, n_threads=2, **options)
    for result in (idle, two):
        np.testing.assert_array_equal(result.kappa, loaded.kappa)
        np.testing.assert_array_equal(result.potentials, loaded.potentials)


# --- backend="auto" per case ---------------------------------------------------------------------------


def test_auto_backend_follows_the_documented_table():
    from connector_sim._backends import auto_backend

    everything = ["cpp", "numba", "numpy"]
    assert auto_backend(everything) == "cpp"  # dense
    assert auto_backend(everything, sparse_kind="fixed", gathered=1) == "numba"
    assert auto_backend(everything, sparse_kind="fixed", gathered=2) == "cpp"
    assert auto_backend(everything, sparse_kind="bernoulli", gathered=1) == "cpp"
    assert auto_backend(["cpp", "numpy"], sparse_kind="fixed", gathered=1) == "cpp"  # numba missing
    assert auto_backend(["numpy"], sparse_kind="fixed", gathered=1) == "numpy"


def test_simulate_auto_backend_of_a_sparse_network_is_per_case():
    from connector_sim import sparsify
    from connector_sim._backends import available_backends

    if "numba" not in available_backends():
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(0)
    dense = LowRankRNN(rng.standard_normal((2_000, 1)), rng.standard_normal((2_000, 1)))
    network = sparsify(dense, n_connections=50, seed=1)
    one = simulate(network, 3, kappa0=[0.5], noise_std=0.1, seed=2, n_threads=1)
    assert one.backend == "numba"
    two = simulate(network, 3, kappa0=[[0.5], [0.5]], noise_std=0.1, seed=2, n_threads=1)
    assert two.backend == available_backends()[0]
    # The choice never changes the trajectory beyond the backends' documented agreement.
    np.testing.assert_allclose(two.kappa[:1], one.kappa, rtol=0, atol=1e-12)


def test_cli_simulate_takes_threads_auto(tmp_path, capsys):
    from connector_sim.cli import main

    for threads in ("auto", "1"):
        main(["simulate", "ring", "--n-neurons", "40", "--trials", "2", "--n-steps", "5", "--threads", threads,
              "--out", str(tmp_path / f"x{threads}.npz")])
    with np.load(tmp_path / "xauto.npz") as auto, np.load(tmp_path / "x1.npz") as one:
        np.testing.assert_array_equal(auto["kappa"], one["kappa"])
    with pytest.raises(SystemExit):
        main(["simulate", "ring", "--threads", "two", "--out", str(tmp_path / "y.npz")])
    assert "expected 'auto' or an int, got 'two'" in capsys.readouterr().err
