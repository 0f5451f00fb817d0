"""The compiled dense kernels (numba, C++) against the NumPy reference.

Runs are short (at most 15 steps): the error between backends grows along a
trajectory, and point-by-point comparisons of long runs test chaos, not code.
"""

import numpy as np
import pytest

from connector_sim._kernels import counter_rng
from connector_sim._kernels.simulate_dense import BLOCK_SIZE, kernels
from backend_support import require_backend

ALPHA = 0.2
N_STEPS = 15
NO_CLAMP = (None, None, 0, 0)

#: Largest error allowed, relative to max(1, max |reference|).
#: float64: the reference sums n^T phi(x) in BLAS order and the kernels in
#: float64 blocks, and the kernels' exp-based tanh is within 3e-16 of np.tanh;
#: both give errors ~1e-16 per step (measured: <= 6e-16 after 15 steps).
#: float32: the kernels use a rational tanh (error <= 3.5e-7) and round x to
#: float32 in a different order (FMA); measured <= 3e-7 after 15 steps.
#: With noise, the kernels' float32 Box-Muller differs from the float64
#: reference normals by <= 6e-7 (times noise_scale), far below both.
TOLERANCE = {np.float32: 3e-6, np.float64: 1e-12}


def make_case(dtype, n_neurons, n_trials, rank, n_inputs, *, input_rows=None, seed=0):
    """Loadings with some overlap of n on m, so that kappa moves."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((rank, n_neurons))
    n = 1.5 * m + rng.standard_normal((rank, n_neurons))

    def cast(a):
        return np.ascontiguousarray(a, dtype)

    return dict(
        m_T=cast(m),
        n_T=cast(n),
        I_T=cast(rng.standard_normal((n_inputs, n_neurons))),
        b=cast(0.3 * rng.standard_normal(n_neurons)),
        x0=cast(2.0 * rng.standard_normal((n_trials, n_neurons))),
        u=cast(rng.standard_normal((input_rows or n_trials, N_STEPS, n_inputs))),
        v=rng.standard_normal((input_rows or n_trials, N_STEPS + 1, n_inputs)),
        xperp=cast(rng.standard_normal((n_trials, n_neurons))),
        kappa0=rng.standard_normal((n_trials, rank)),
    )


def make_clamp(case, window, seed=1):
    """Clamp ~30% of the units to random values (some to 0) in a step window."""
    if window is None:
        return NO_CLAMP
    rng = np.random.default_rng(seed)
    N = case["b"].shape[0]
    value = rng.standard_normal(N) * (rng.random(N) < 0.5)
    return rng.random(N) < 0.3, value.astype(case["b"].dtype), window[0], window[1]


def run_full(backend, case, *, noise_scale=0.0, seed=11, trial_offset=2, clamp=NO_CLAMP, n_threads=1,
             activation="tanh", step_offset=0):
    full_path, _ = kernels(backend)
    B, N = case["x0"].shape
    R = case["m_T"].shape[0]
    record_idx = np.array([0, N - 1, N // 2, min(3, N - 1), 0], np.int64)
    x = case["x0"].copy()
    kappa = case["kappa0"].copy()
    kappa_out = np.empty((B, N_STEPS + 1, R))
    record_out = np.empty((B, N_STEPS + 1, len(record_idx)), x.dtype)
    full_path(case["m_T"], case["n_T"], case["I_T"], case["b"], activation, x, case["u"], ALPHA, noise_scale,
              seed, trial_offset, record_idx, kappa, kappa_out, record_out, clamp, step_offset=step_offset,
              n_threads=n_threads)
    return dict(x=x, kappa=kappa, kappa_out=kappa_out, record_out=record_out)


def run_latent(backend, case, *, xperp=True, clamp=NO_CLAMP, n_threads=1, activation="tanh"):
    _, latent_path = kernels(backend)
    B, N = case["x0"].shape
    R = case["m_T"].shape[0]
    xperp_kernel = case["xperp"] if xperp else np.zeros((0, N), case["b"].dtype)
    decay = (1 - ALPHA) ** np.arange(N_STEPS + 1, dtype=np.float64)
    kappa = case["kappa0"].copy()
    kappa_out = np.empty((B, N_STEPS + 1, R))
    latent_path(case["m_T"], case["n_T"], case["I_T"], case["b"], activation, case["v"], xperp_kernel, decay,
                ALPHA, kappa, kappa_out, clamp, n_threads=n_threads)
    return dict(kappa=kappa, kappa_out=kappa_out)


def assert_matches(actual, desired, dtype):
    for name, want in desired.items():
        got = actual[name]
        assert got.dtype == want.dtype, name
        error = np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), initial=0.0)
        scale = max(1.0, np.max(np.abs(want), initial=0.0))
        assert error <= TOLERANCE[dtype] * scale, f"{name}: error {error:.3g} at scale {scale:.3g}"


def assert_equal(actual, desired):
    for name, want in desired.items():
        assert np.array_equal(actual[name], want), name


# N = 5000: two blocks, the second partial; N = 37: one short block, below
# a SIMD chunk. (R, D) = (1, 0) has no inputs.
SIZES = [(5000, 1), (37, 3), (5000, 3)]
SHAPES = [(1, 0), (2, 2)]
# The window (0, 5) clamps the rates of x_0, summed before the first step.
WINDOWS = [None, (0, 5), (4, 9)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_neurons, n_trials", SIZES)
@pytest.mark.parametrize("rank, n_inputs", SHAPES)
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("noise_scale", [0.0, 0.1])
def test_full_path_matches_reference(fast_backend, dtype, n_neurons, n_trials, rank, n_inputs, window,
                                     noise_scale):
    case = make_case(dtype, n_neurons, n_trials, rank, n_inputs)
    clamp = make_clamp(case, window)
    desired = run_full("numpy", case, noise_scale=noise_scale, clamp=clamp)
    actual = run_full(fast_backend, case, noise_scale=noise_scale, clamp=clamp)
    assert_matches(actual, desired, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_neurons, n_trials", SIZES)
@pytest.mark.parametrize("rank, n_inputs", SHAPES)
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("xperp", [False, True])
def test_latent_path_matches_reference(fast_backend, dtype, n_neurons, n_trials, rank, n_inputs, window, xperp):
    case = make_case(dtype, n_neurons, n_trials, rank, n_inputs)
    clamp = make_clamp(case, window)
    desired = run_latent("numpy", case, xperp=xperp, clamp=clamp)
    actual = run_latent(fast_backend, case, xperp=xperp, clamp=clamp)
    assert_matches(actual, desired, dtype)


# softplus and sigmoid: the compiled versions are within 2e-16 (float64) and 1.3e-7
# (float32) of the reference, relative to max(1, |phi|) (test_activations.py): the
# tanh's error, so TOLERANCE holds for them as well.
@pytest.mark.parametrize("activation", ["relu", "identity", "softplus", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_other_activations_match_reference(fast_backend, activation, dtype):
    case = make_case(dtype, 5000, 2, 2, 1)
    # Keep the linear network from growing: weak overlap of n on m.
    case["n_T"] = np.ascontiguousarray(0.1 * case["n_T"])
    clamp = make_clamp(case, (2, 6))
    desired = run_full("numpy", case, noise_scale=0.1, clamp=clamp, activation=activation)
    assert_matches(run_full(fast_backend, case, noise_scale=0.1, clamp=clamp, activation=activation), desired, dtype)
    desired = run_latent("numpy", case, clamp=clamp, activation=activation)
    assert_matches(run_latent(fast_backend, case, clamp=clamp, activation=activation), desired, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("input_rows", [1, 3])
def test_latent_path_equals_full_path(fast_backend, dtype, input_rows):
    """Noise-free, x_t = m kappa_t + I v_t + b + (1 - alpha)^t xperp (theory eq. 2)."""
    case = make_case(dtype, 5000, 3, 2, 2, input_rows=input_rows)
    u, v = case["u"].astype(np.float64), case["v"]
    for t in range(N_STEPS):
        v[:, t + 1] = (1 - ALPHA) * v[:, t] + ALPHA * u[:, t]
    x0 = (case["kappa0"] @ case["m_T"].astype(np.float64) + v[:, 0] @ case["I_T"].astype(np.float64)
          + case["b"].astype(np.float64) + case["xperp"].astype(np.float64))
    case["x0"] = x0.astype(dtype)
    full = run_full(fast_backend, case)
    latent = run_latent(fast_backend, case)
    # float64: the two paths round differently (x is carried on the full path,
    # rebuilt on the latent one): ~1e-15 per step. float32: x0 and x_t rounded
    # to float32 (6e-8 relative, |x| ~ 5) plus the tanh approximation in two
    # different places: measured <= 1e-6.
    tolerance = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(latent["kappa_out"], full["kappa_out"], rtol=0, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_do_not_change_results(fast_backend, dtype):
    case = make_case(dtype, 3 * BLOCK_SIZE + 100, 3, 2, 1)
    clamp = make_clamp(case, (3, 7))
    one = run_full(fast_backend, case, noise_scale=0.1, clamp=clamp, n_threads=1)
    two = run_full(fast_backend, case, noise_scale=0.1, clamp=clamp, n_threads=2)
    assert_equal(two, one)
    one = run_latent(fast_backend, case, clamp=clamp, n_threads=1)
    two = run_latent(fast_backend, case, clamp=clamp, n_threads=2)
    assert_equal(two, one)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_trials_equal_separate_runs(fast_backend, dtype):
    """Trial b of a batch with trial_offset o draws the noise of trial o + b."""
    batch = make_case(dtype, 5000, 4, 2, 1)
    together = run_full(fast_backend, batch, noise_scale=0.1, trial_offset=5)
    together_latent = run_latent(fast_backend, batch)
    for b in range(4):
        single = {key: value[b:b + 1].copy() for key, value in batch.items() if key in ("x0", "u", "v", "xperp",
                                                                                      "kappa0")}
        case = {**batch, **single}
        alone = run_full(fast_backend, case, noise_scale=0.1, trial_offset=5 + b)
        assert_equal(alone, {key: value[b:b + 1] for key, value in together.items()})
        alone = run_latent(fast_backend, case)
        assert_equal(alone, {key: value[b:b + 1] for key, value in together_latent.items()})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_offset_keys_the_noise_by_the_global_step(fast_backend, dtype):
    """Step t of a call with step_offset s draws the noise of step s + t, as the reference does."""
    case = make_case(dtype, 300, 2, 2, 1)
    clamp = make_clamp(case, (3, 7))
    shifted = run_full(fast_backend, case, noise_scale=0.1, clamp=clamp, step_offset=40)
    assert_matches(shifted, run_full("numpy", case, noise_scale=0.1, clamp=clamp, step_offset=40), dtype)
    assert not np.array_equal(shifted["x"], run_full(fast_backend, case, noise_scale=0.1, clamp=clamp)["x"])


def test_trial_offset_changes_the_noise(fast_backend):
    case = make_case(np.float64, 37, 1, 1, 0)
    first = run_full(fast_backend, case, noise_scale=0.1, trial_offset=0)
    second = run_full(fast_backend, case, noise_scale=0.1, trial_offset=1)
    assert not np.array_equal(first["x"], second["x"])


@pytest.fixture
def cpp_module():
    require_backend("cpp")
    from connector_sim._ext import _simulate_dense_cpp

    return _simulate_dense_cpp


def test_cpp_block_size_matches_python(cpp_module):
    assert cpp_module.BLOCK_SIZE == BLOCK_SIZE


def test_cpp_tanh_float32_error(cpp_module):
    x = np.linspace(-12.0, 12.0, 4_000_001).astype(np.float32)
    error = np.abs(cpp_module.simd_tanh(x).astype(np.float64) - np.tanh(x.astype(np.float64)))
    # fast_math.py states 3.5e-7 for the rational approximation evaluated in float32.
    assert error.max() <= 4e-7


def test_cpp_tanh_float64_error(cpp_module):
    x = np.concatenate([np.linspace(-12.0, 12.0, 2_000_001), np.geomspace(1e-300, 1e3, 10_000),
                        -np.geomspace(1e-300, 1e3, 10_000)])
    error = np.abs(cpp_module.simd_tanh(x) - np.tanh(x))
    assert error.max() <= 1e-15
    special = cpp_module.simd_tanh(np.array([np.inf, -np.inf, np.nan, 0.0]))
    np.testing.assert_array_equal(special, [1.0, -1.0, np.nan, 0.0])


@pytest.mark.parametrize("seed, trial, step", [(0, 0, 0), (12345, 7, 99), (2**64 - 1, -3, 2**40)])
def test_cpp_noise_matches_counter_rng(cpp_module, seed, trial, step):
    desired = counter_rng.standard_normal(seed, trial, step, 200_000)
    # float64: the reference rounds 2 pi u2 (up to 2 pi) to ~4e-16, times the
    # radius (<= 6.7); the kernels' log, cos and sin are within a few ulps.
    actual = cpp_module.standard_normal(seed, trial, step, 200_000, np.float64)
    np.testing.assert_allclose(actual, desired, rtol=0, atol=1e-14)
    # float32: both halves and the result rounded to float32 (6e-8 relative),
    # times |xi| <= 6.7; the log keeps float precision as u1 -> 1 (measured 6e-7).
    actual = cpp_module.standard_normal(seed, trial, step, 200_000, np.float32)
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, desired, rtol=0, atol=2e-6)


def cpp_full_args(case, **changes):
    B, N = case["x0"].shape
    R = case["m_T"].shape[0]
    dtype = case["b"].dtype
    args = dict(m_T=case["m_T"], n_T=case["n_T"], I_T=case["I_T"], b=case["b"], activation=0, x=case["x0"].copy(),
                u=case["u"], alpha=ALPHA, noise_scale=0.0, seed=0, trial_offset=0,
                record_idx=np.array([0], np.int64), kappa=case["kappa0"].copy(),
                kappa_out=np.empty((B, N_STEPS + 1, R)), record_out=np.empty((B, N_STEPS + 1, 1), dtype),
                clamp_mask=np.zeros(0, np.uint8), clamp_value=np.zeros(0, dtype), clamp_start=0, clamp_stop=0,
                n_threads=1)
    args.update(changes)
    return args


@pytest.mark.parametrize("change, message", [
    (dict(x=np.zeros((2, 37), np.float64)), "x must have dtype float32"),
    (dict(x=np.zeros((37, 2), np.float32).T), "x must be C-contiguous"),
    (dict(kappa_out=np.empty((2, N_STEPS, 1))), "kappa_out must have shape"),
    (dict(record_idx=np.array([37], np.int64)), "outside the neuron range"),
    (dict(clamp_mask=np.zeros(36, np.uint8), clamp_value=np.zeros(36, np.float32)), "clamp_mask must have shape"),
    (dict(activation=5), "unknown activation code"),
    (dict(n_threads=0), "n_threads must be at least 1"),
])
def test_cpp_rejects_bad_arrays(cpp_module, change, message):
    case = make_case(np.float32, 37, 2, 1, 1)
    with pytest.raises(ValueError, match=message):
        cpp_module.full_path(**cpp_full_args(case, **change))


def test_cpp_reports_blow_up(cpp_module):
    case = make_case(np.float64, 37, 1, 1, 0)
    case["n_T"] = np.ascontiguousarray(1e3 * case["m_T"])
    args = cpp_full_args(case, activation=2, alpha=1.0)  # identity: kappa grows ~1e3-fold per step
    assert cpp_module.full_path(**args) == 0
    args = cpp_full_args(case, activation=2, alpha=1.0, u=np.zeros((1, 200, 0)),
                         kappa_out=np.empty((1, 201, 1)), record_out=np.empty((1, 201, 1)))
    assert cpp_module.full_path(**args) == 1
