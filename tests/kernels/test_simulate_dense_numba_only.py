"""What only the numba backend has: user activations, its own float64 tanh and noise.

The comparisons of the numba and C++ kernels with the reference on built-in
activations are in test_simulate_dense.py.
"""

import numpy as np
import pytest

from connector_sim._kernels import counter_rng
from connector_sim._kernels.fast_math import tanh_f32_reference
from connector_sim._kernels.simulate_dense import full_path_reference, latent_path_reference
from backend_support import require_backend

numba = pytest.importorskip("numba")

ALPHA = 0.2
N_STEPS = 6


@pytest.fixture(scope="module")
def numba_kernels():
    require_backend("numba")
    from connector_sim._kernels import _simulate_dense_numba

    return _simulate_dense_numba


@numba.njit
def _map(function, x, out):
    for i in range(x.size):
        out[i] = function(x[i])


@numba.njit
def _map_pair(function, x, first, second):
    for i in range(x.size):
        first[i], second[i] = function(x[i])


@numba.njit
def _fill(fill_noise, key, lo, out):
    fill_noise(key, lo, 1.0, out)


@numba.njit
def softsign(x):
    return x / (1 + abs(x))


def test_user_activation_matches_reference(numba_kernels):
    # The reference calls the same njit function element by element.
    rng = np.random.default_rng(3)
    R, D, B, N = 2, 1, 2, 5000
    m_T = rng.standard_normal((R, N))
    n_T = 1.5 * m_T + rng.standard_normal((R, N))
    I_T, b = rng.standard_normal((D, N)), 0.3 * rng.standard_normal(N)
    x0 = 2.0 * rng.standard_normal((B, N))
    u = rng.standard_normal((B, N_STEPS, D))
    v = rng.standard_normal((1, N_STEPS + 1, D))
    decay = (1 - ALPHA) ** np.arange(N_STEPS + 1)
    mask = rng.random(N) < 0.3
    clamp = (mask, np.where(mask, 0.5, 0.0), 2, 4)
    results = []
    for full_path, latent_path in ((numba_kernels.full_path_numba, numba_kernels.latent_path_numba),
                                   (full_path_reference, latent_path_reference)):
        x = x0.copy()
        kappa = np.zeros((B, R))
        kappa_out = np.empty((B, N_STEPS + 1, R))
        record_out = np.empty((B, N_STEPS + 1, 2))
        full_path(m_T, n_T, I_T, b, softsign, x, u, ALPHA, 0.1, 7, 0, np.array([0, N - 1]), kappa, kappa_out,
                  record_out, clamp)
        latent_kappa = np.ones((B, R))
        latent_out = np.empty((B, N_STEPS + 1, R))
        latent_path(m_T, n_T, I_T, b, softsign, v, x0, decay, ALPHA, latent_kappa, latent_out, clamp)
        results.append((x, kappa_out, record_out, latent_out))
    # float64 throughout; block sums and FMAs: ~1e-16 per step.
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_tanh_float64_absolute_error_below_1e_15(numba_kernels):
    x = np.concatenate([np.linspace(-25, 25, 1_000_001), np.random.default_rng(0).standard_normal(10**6) * 3,
                        [0.0, -0.0, 1e-300, 19.0, 20.0, 21.0, 1e10, -1e10]])
    out = np.empty_like(x)
    _map(numba_kernels._tanh_f64, x, out)
    assert np.max(np.abs(out - np.tanh(x))) < 1e-15


def test_tanh_float32_is_the_specified_rational(numba_kernels):
    x = np.linspace(-12, 12, 400_001).astype(np.float32)
    out = np.empty_like(x)
    _map(numba_kernels._tanh_f32, x, out)
    # fast_math.py's bound; FMAs and a reciprocal round differently from the
    # NumPy evaluation, so the two may sit on either side of tanh.
    assert np.max(np.abs(out - np.tanh(x.astype(np.float64)))) <= 3.5e-7
    np.testing.assert_allclose(out, tanh_f32_reference(x), rtol=0, atol=7e-7)


@pytest.mark.parametrize("seed, trial, step", [(0, 0, 0), (2**64 - 1, 5, 17), (12345, 2**40, 3)])
def test_vectorised_box_muller_matches_counter_rng(numba_kernels, seed, trial, step):
    key = counter_rng.step_key(seed, trial, step)
    out = np.empty(10007)
    _fill(numba_kernels._fill_noise, np.uint64(key), 0, out)
    expected = counter_rng.standard_normal(seed, trial, step, 10007)
    # Own log, cos and sin (vectorisable) instead of libm's: a few ulp.
    np.testing.assert_allclose(out, expected, rtol=0, atol=3e-15)
    # Ranges cut inside pair blocks: the tail, the middle of one block (across
    # its cosine / sine halves), and partial blocks on both ends of whole ones.
    for lo, n in [(10000, 7), (60, 10), (100, 300), (127, 2)]:
        part = np.empty(n)
        _fill(numba_kernels._fill_noise, np.uint64(key), lo, part)
        np.testing.assert_allclose(part, expected[lo:lo + n], rtol=0, atol=3e-15)


def test_log_cos_and_sin_at_the_ends_of_the_32_bit_range(numba_kernels):
    # The ends, the quadrant boundaries (2**30 k) and their neighbours.
    quadrants = np.array([2**30, 2**31, 3 * 2**30], dtype=np.int64)
    halves = np.concatenate([[0, 1, 2, 3, 2**32 - 2, 2**32 - 1], quadrants - 1, quadrants, quadrants + 1])
    halves = halves.astype(np.uint64)
    uniform = (halves.astype(np.float64) + 0.5) * 2.0**-32
    logs, cosines, sines = np.empty(halves.size), np.empty(halves.size), np.empty(halves.size)
    _map(numba_kernels._log_uniform, halves, logs)
    _map_pair(numba_kernels._sincos_two_pi_uniform, halves, cosines, sines)
    np.testing.assert_allclose(logs, np.log(uniform), rtol=1e-15, atol=0)
    np.testing.assert_allclose(cosines, np.cos(2 * np.pi * uniform), rtol=0, atol=1e-15)
    np.testing.assert_allclose(sines, np.sin(2 * np.pi * uniform), rtol=0, atol=1e-15)


def test_thread_count_is_capped_and_restored(numba_kernels):
    previous = numba.get_num_threads()
    with numba_kernels._threads(10_000):
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    assert numba.get_num_threads() == previous
