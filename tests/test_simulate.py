"""The public simulator: argument handling, paths, batching, noise and theory."""

import math

import numpy as np
import pytest

import connector_sim
from connector_sim import Gaussian, LowRankRNN, available_backends, private_noise, simulate
from connector_sim.synthetic import gaussian_network_distribution


def small_network(n_neurons=300, n_inputs=1, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return LowRankRNN(rng.standard_normal((n_neurons, 2)), 2 * rng.standard_normal((n_neurons, 2)),
                      rng.standard_normal((n_neurons, n_inputs)), 0.1 * rng.standard_normal(n_neurons),
                      dtype=dtype)


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, connector_sim; print('torch' in sys.modules, 'numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_result_shapes_and_time_axis():
    network = small_network()
    inputs = np.zeros((25, 1))
    result = simulate(network, inputs=inputs, dt=0.2, kappa0=[0.5, -0.5], record_units=[0, 3, 7])
    assert result.kappa.shape == (1, 26, 2)
    assert result.potentials.shape == (1, 26, 3)
    assert result.rates.shape == (1, 26, 3)
    np.testing.assert_allclose(result.time, 0.2 * np.arange(26))
    assert result.alpha == pytest.approx(0.2)
    assert result.final_state.shape == (1, 300)


def test_latent_and_full_paths_agree_with_inputs_and_x0(backend):
    # Noise-free, the full state stays x = m kappa + I v + b + (1-alpha)^t xperp:
    # the two paths differ by rounding only (float64: 1e-12).
    network = small_network()
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((3, 30, 1))
    x0 = rng.standard_normal((3, 300))
    full = simulate(network, inputs=inputs, x0=x0, path="full", record_units="all", backend=backend)
    latent = simulate(network, inputs=inputs, x0=x0, path="latent", record_units="all", backend=backend)
    assert (full.path, latent.path) == ("full", "latent")
    np.testing.assert_allclose(latent.kappa, full.kappa, atol=1e-12)
    np.testing.assert_allclose(latent.potentials, full.potentials, atol=1e-11)
    np.testing.assert_allclose(latent.final_state, full.final_state, atol=1e-11)


def test_batched_equals_looped(backend):
    # Each trial of a batch sees the same arithmetic as when run alone; the
    # noise key is (seed, trial, step, unit), so trial b of a batch equals a
    # run whose single trial has index b only for b = 0. Noise-free here.
    network = small_network()
    rng = np.random.default_rng(2)
    kappa0 = rng.standard_normal((4, 2))
    inputs = rng.standard_normal((4, 20, 1))
    batched = simulate(network, inputs=inputs, kappa0=kappa0, path="full", backend=backend, record_units=[1, 2])
    for trial in range(4):
        alone = simulate(network, inputs=inputs[trial], kappa0=kappa0[trial], path="full", backend=backend,
                         record_units=[1, 2])
        np.testing.assert_allclose(batched.kappa[trial], alone.kappa[0], rtol=0, atol=1e-13)
        np.testing.assert_allclose(batched.potentials[trial], alone.potentials[0], rtol=0, atol=1e-13)


def test_backends_agree_with_reference_through_the_api(fast_backend):
    network = small_network(n_neurons=5000)
    kappa0 = np.array([[1.0, 0.5], [-0.3, 0.2]])
    inputs = np.random.default_rng(3).standard_normal((15, 1))
    for path, noise in [("latent", 0.0), ("full", 0.0), ("full", 0.3)]:
        reference = simulate(network, inputs=inputs, kappa0=kappa0, path=path, noise_std=noise, seed=7,
                             backend="numpy", record_units=[0, 10])
        fast = simulate(network, inputs=inputs, kappa0=kappa0, path=path, noise_std=noise, seed=7,
                        backend=fast_backend, record_units=[0, 10])
        # float64 with the exp-based tanh (abs error < 1e-15) and a different
        # summation order: agreement to ~1e-12 over 15 steps.
        np.testing.assert_allclose(fast.kappa, reference.kappa, atol=1e-11)
        np.testing.assert_allclose(fast.potentials, reference.potentials, atol=1e-10)


def test_thread_count_does_not_change_results(fast_backend):
    network = small_network(n_neurons=20_000)
    kwargs = dict(kappa0=[[0.4, -0.2], [1.0, 1.0]], n_steps=10, noise_std=0.2, seed=3, record_units=[5],
                  backend=fast_backend)
    one = simulate(network, n_threads=1, **kwargs)
    two = simulate(network, n_threads=2, **kwargs)
    np.testing.assert_array_equal(one.kappa, two.kappa)
    np.testing.assert_array_equal(one.final_state, two.final_state)


def test_noise_increments_have_the_right_mean_and_variance():
    # No recurrence, identity phi: x_1 - (1 - alpha) x_0 = sqrt(alpha) sigma xi.
    N, sigma, dt = 100_000, 0.7, 0.1
    network = LowRankRNN(np.zeros((N, 1)), np.zeros((N, 1)), activation="identity")
    result = simulate(network, 1, dt=dt, noise_std=sigma, seed=11, record_units="all")
    increments = result.potentials[0, 1] - (1 - dt) * result.potentials[0, 0]
    expected_sd = math.sqrt(dt) * sigma
    assert abs(increments.mean()) < 5 * expected_sd / math.sqrt(N)
    # Var of a sample variance: 2 sd^4 / N.
    assert abs(increments.var() - expected_sd**2) < 5 * expected_sd**2 * math.sqrt(2 / N)
    # They are exactly the documented counter-based draws.
    np.testing.assert_allclose(increments / expected_sd, private_noise(11, 1, N)[0, 0], atol=1e-9)


def _gauss_hermite_mean(function, mean, sd, order=80):
    x, w = np.polynomial.hermite.hermgauss(order)
    return np.sum(w * function(mean + math.sqrt(2) * sd * x)) / math.sqrt(math.pi)


@pytest.mark.parametrize("n_neurons", [2_000, 50_000])
def test_rank_one_fixed_point_matches_mean_field(n_neurons):
    # Rank one, m ~ N(0, 1), Cov(n, m) = sigma_mn = 2, zero means. Mean field
    # (Stein): dk/dt = -k + sigma_mn k <tanh'>(0, |k|), so the nonzero fixed
    # point solves 1 = sigma_mn <1 - tanh^2>(0, k*). Finite N moves it by
    # ~ sd(n tanh(m k*)) / sqrt(N) / |F'(k*)|: the tolerance shrinks like 1/sqrt(N).
    from scipy.optimize import brentq

    sigma_mn = 2.0
    gain = lambda k: sigma_mn * _gauss_hermite_mean(lambda z: 1 - np.tanh(z) ** 2, 0.0, k)  # noqa: E731
    k_star = brentq(lambda k: gain(k) - 1.0, 1e-3, 10.0)
    flow = lambda k: -k + k * gain(k)  # noqa: E731
    slope = abs((flow(k_star + 1e-4) - flow(k_star - 1e-4)) / 2e-4)
    distribution = Gaussian(np.zeros(2), [[1.0, sigma_mn], [sigma_mn, 5.0]], rank=1)
    errors = []
    for seed in range(3):
        network = distribution.sample(n_neurons, random_state=seed)
        result = simulate(network, 400, dt=0.2, kappa0=[[1.0], [-1.0]])
        end = np.abs(result.kappa[:, -1, 0])
        spread = np.std(network.n[:, 0] * np.tanh(network.m[:, 0] * k_star))
        tolerance = 5 * spread / math.sqrt(n_neurons) / slope
        errors.append(np.abs(end - k_star).max())
        assert np.all(np.abs(end - k_star) < tolerance), (end, k_star, tolerance)
    assert np.mean(errors) < 0.5  # sanity: the run converged somewhere near k*


def test_auto_backend_is_the_fastest_available():
    result = simulate(small_network(), 3)
    assert result.backend == available_backends()[0]


def test_user_activation_runs_on_numba():
    numba = pytest.importorskip("numba")
    softsign = numba.njit(lambda x: x / (1.0 + abs(x)))
    network = LowRankRNN(np.ones((50, 1)), 2 * np.ones((50, 1)), activation=softsign)
    result = simulate(network, 20, kappa0=[0.3])
    assert result.backend == "numba"
    # Reference: the same recursion in NumPy.
    k = 0.3
    for _ in range(20):
        k = 0.9 * k + 0.1 * 2 * (k / (1 + abs(k)))
    assert result.kappa[0, -1, 0] == pytest.approx(k, rel=1e-12)
    with pytest.raises(ValueError, match="numba backend only"):
        simulate(network, 5, backend="numpy")


def test_clamping_silences_units():
    # Silencing every unit removes the recurrence: kappa decays as (1 - alpha)^t.
    network = small_network(n_inputs=0)
    result = simulate(network, 10, kappa0=[1.0, 2.0], clamp={"units": np.arange(300), "value": 0.0})
    np.testing.assert_allclose(result.kappa[0, -1], 0.9**10 * np.array([1.0, 2.0]), rtol=1e-12)
    window = simulate(network, 10, kappa0=[1.0, 2.0], clamp={"units": np.arange(300), "start": 5},
                      record_units=[0])
    assert np.all(window.rates[0, 5:, 0] == 0.0) and np.all(window.rates[0, :5, 0] != 0.0)


BAD_CALLS = [
    (dict(n_steps=5, x0=np.ones(7)), ValueError, r"x0 must have shape \(any, 300\)|x0 must have shape \(300\)"),
    (dict(n_steps=5, kappa0=np.ones(3)), ValueError, r"kappa0 must have shape \(2\)"),
    (dict(inputs=np.ones((5, 2))), ValueError, r"inputs must have shape \(any, 1\). Got shape \(5, 2\)"),
    (dict(inputs=np.full((5, 1), np.nan)), ValueError, r"inputs must contain only finite values. Got nan at index \(0, 0\)"),
    (dict(n_steps=5, x0=np.full(300, np.inf)), ValueError, "x0 must contain only finite values. Got inf"),
    (dict(n_steps=5, kappa0=[np.nan, 0.0]), ValueError, "kappa0 must contain only finite values"),
    (dict(n_steps=5, dt=0.0), ValueError, "'dt' parameter of simulate must be a finite number > 0. Got 0.0"),
    (dict(n_steps=5, dt=-0.1), ValueError, "'dt' parameter of simulate must be a finite number > 0. Got -0.1"),
    (dict(n_steps=0), ValueError, r"'n_steps' parameter of simulate must be an int in the range \[1, inf\]. Got 0"),
    (dict(), ValueError, "Give n_steps"),
    (dict(n_steps=5, backend="cuda"), ValueError, r"Unknown backend 'cuda'. Expected 'auto' or one of \['cpp', 'numba', 'numpy'\]"),
    (dict(n_steps=5, path="exact"), ValueError, r"path must be one of \['auto', 'full', 'latent'\]. Got 'exact'"),
    (dict(n_steps=5, path="latent", noise_std=0.1), ValueError, "path='latent' needs noise_std = 0"),
    (dict(n_steps=5, noise_std=-1.0), ValueError, "'noise_std' parameter of simulate must be a finite number >= 0"),
    (dict(n_steps=5, kappa0=np.ones((2, 2)), inputs=np.ones((3, 5, 1))), ValueError, "disagree on the number of trials.*kappa0: 2.*inputs: 3"),
    (dict(n_steps=5, x0=np.ones(300), kappa0=np.ones(2)), ValueError, "either x0 or kappa0"),
    (dict(n_steps=6, inputs=np.ones((5, 1))), ValueError, "n_steps = 6 disagrees with inputs, which have 5 time steps"),
    (dict(n_steps=5, record_units=[0, 300]), ValueError, r"record_units must be indices in \[0, 299\]"),
    (dict(n_steps=5, record_units="everything"), ValueError, "record_units must be None, 'all'"),
    (dict(n_steps=5, clamp={"units": [1000]}), ValueError, r"indices in \[0, 299\]"),
    (dict(n_steps=5, clamp={"neurons": [1]}), TypeError, "clamp must be a dict like"),
    (dict(n_steps=5, n_threads=0), ValueError, "'n_threads' parameter of simulate must be an int"),
    (dict(n_steps=5, seed=1.5), TypeError, "seed. parameter of simulate must be an int or None"),
    (dict(n_steps=1000, record_units="all", max_record_bytes=1000), ValueError,
     r"Recording 300 units over 1001 time points and 1 trial\(s\) needs 2.4 MB, more than the max_record_bytes given.*record fewer units"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_CALLS)
def test_bad_input_messages(kwargs, error, message):
    with pytest.raises(error, match=message):
        simulate(small_network(), **kwargs)


def test_network_must_be_a_low_rank_rnn():
    with pytest.raises(TypeError, match=r"network must be a LowRankRNN( or a SparseLowRankRNN)?. Got Gaussian"):
        simulate(gaussian_network_distribution("ring"), 5)


def test_dt_larger_than_tau_warns():
    with pytest.warns(RuntimeWarning, match="dt = 1.5 is larger than tau = 1.0"):
        simulate(small_network(), 3, dt=1.5)


def test_unavailable_backend_lists_the_available_ones(monkeypatch):
    monkeypatch.setattr(connector_sim._backends, "available_backends", lambda: ["numpy"])
    with pytest.raises(ValueError, match=r"The 'cpp' backend is not available here. Available backends: \['numpy'\]"):
        simulate(small_network(), 3, backend="cpp")


def test_recording_too_large_for_memory_is_refused_before_allocating():
    network = LowRankRNN(np.ones((1_000_000, 1), np.float32), np.ones((1_000_000, 1), np.float32), dtype=np.float32)
    with pytest.raises(ValueError, match="needs 4 TB, more than half the available memory"):
        simulate(network, 999_999, record_units="all")
