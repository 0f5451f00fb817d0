"""simulate(..., input_noise=S): reference, backends, paths, draws and statistics."""

import math

import numpy as np
import pytest
from scipy.linalg import solve_discrete_lyapunov

from connector_sim import LowRankRNN, private_noise, simulate
from connector_sim import input_noise as input_noise_module
from connector_sim.input_noise import input_noise_draws, simulate_input_noise_reference

S = np.array([[0.7, 0.0], [0.3, 0.4]])


def small_network(n_neurons=200, seed=0):
    rng = np.random.default_rng(seed)
    return LowRankRNN(rng.standard_normal((n_neurons, 2)), 2 * rng.standard_normal((n_neurons, 2)),
                      rng.standard_normal((n_neurons, 2)), 0.1 * rng.standard_normal(n_neurons))


@pytest.mark.parametrize("path", ["full", "latent"])
def test_every_backend_and_path_matches_the_reference(backend, path):
    # Same draws, same float64 arithmetic up to summation order: 1e-10.
    network = small_network()
    rng = np.random.default_rng(1)
    inputs = 0.3 * rng.standard_normal((3, 40, 2))
    kappa0 = rng.standard_normal((3, 2))
    expected_kappa, expected_x = simulate_input_noise_reference(
        network, 40, 0.1, S, seed=5, kappa0=kappa0, inputs=inputs, n_trials=3)
    result = simulate(network, inputs=inputs, kappa0=kappa0, dt=0.1, seed=5, input_noise=S, path=path,
                      backend=backend, record_units="all")
    assert result.path == path
    np.testing.assert_allclose(result.kappa, expected_kappa, atol=1e-10)
    np.testing.assert_allclose(result.potentials, expected_x, atol=1e-10)


def test_scalar_and_vector_forms_and_unbatched_inputs():
    network = small_network(100)
    common = dict(n_steps=20, dt=0.1, seed=3, n_trials=2, path="latent", backend="numpy")
    scalar = simulate(network, input_noise=0.5, **common)
    vector = simulate(network, input_noise=[0.5, 0.5], **common)
    matrix = simulate(network, input_noise=0.5 * np.eye(2), **common)
    np.testing.assert_array_equal(scalar.kappa, vector.kappa)
    np.testing.assert_array_equal(scalar.kappa, matrix.kappa)
    # v carries the noise: v_{t+1} = (1 - alpha) v_t + sqrt(alpha) S eta_t.
    eta = input_noise_draws(3, 20, 2, n_trials=2)
    v = np.zeros((2, 2))
    for t in range(20):
        v = 0.9 * v + math.sqrt(0.1) * 0.5 * eta[:, t]
    np.testing.assert_allclose(scalar.v[:, -1], v, atol=1e-12)
    assert not np.allclose(scalar.kappa[0], scalar.kappa[1])


def test_draws_are_their_own_stream_and_counter_based(monkeypatch):
    eta = input_noise_draws(11, 30, 3, n_trials=4)
    assert not np.allclose(eta, private_noise(11, 30, 3, n_trials=4))
    np.testing.assert_array_equal(input_noise_draws(11, 10, 3, n_trials=2, trial_offset=2, step_start=20),
                                  eta[2:, 20:])
    # Chunking the draws by steps changes nothing.
    network = small_network(50)
    whole = simulate(network, n_steps=30, dt=0.1, seed=11, input_noise=S, n_trials=2, backend="numpy")
    monkeypatch.setattr(input_noise_module, "_CHUNK_STEPS", 7)
    chunked = simulate(network, n_steps=30, dt=0.1, seed=11, input_noise=S, n_trials=2, backend="numpy")
    np.testing.assert_array_equal(whole.kappa, chunked.kappa)


def linear_latent_network(K, A, n_neurons=64, seed=0):
    """identity phi, I = m A, b = 0: z = kappa + A v obeys tau dz = (K - 1) z dt + sqrt(tau) A S dW."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n_neurons, 2))
    n = n_neurons * m @ np.linalg.inv(m.T @ m) @ K.T
    return LowRankRNN(m, n, m @ A, None, activation="identity")


def test_latent_noise_statistics_match_euler_maruyama_theory():
    # With I = m A the latent z_t = kappa_t + A v_t is the Euler-Maruyama chain
    # z_{t+1} = F z_t + sqrt(alpha) A S eta_t, F = 1 + alpha (K - 1), whose
    # stationary covariance solves Sigma = F Sigma F^T + alpha A S S^T A^T.
    # 4000 trials after 40 tau (>> relaxation time 2 tau): the sample
    # covariance has relative standard error ~ sqrt(2 / 4000) = 2.2%; 10% is
    # 4.5 standard errors.
    K = np.array([[0.5, -1.0], [1.0, 0.3]])
    A = np.array([[1.0, 0.2], [0.0, 0.8]])
    network = linear_latent_network(K, A)
    alpha = 0.1
    result = simulate(network, n_steps=400, dt=alpha, seed=2, input_noise=S, n_trials=4000, backend="numba")
    assert result.path == "latent"
    z = result.kappa[:, -1] + result.v[:, -1] @ A.T
    F = np.eye(2) + alpha * (K - np.eye(2))
    Q = alpha * A @ S @ S.T @ A.T
    expected = solve_discrete_lyapunov(F, Q)
    np.testing.assert_allclose(np.cov(z.T), expected, atol=0.1 * np.abs(expected).max())
    assert np.abs(z.mean(axis=0)).max() < 5 * math.sqrt(expected.max() / 4000)
    # The same SDE, dz = (K - 1) z dt + A S dW, by the Euler-Maruyama reference
    # (independent draws): the two sample covariances agree within the same 10%.
    from connector_sim.ddm import SDE, euler_maruyama

    sde = SDE(lambda y: y @ (K - np.eye(2)).T, A @ S, 2)
    reference = euler_maruyama(sde, np.zeros(2), 400, alpha, n_trials=4000, seed=9)[:, -1]
    np.testing.assert_allclose(np.cov(z.T), np.cov(reference.T), atol=0.1 * np.abs(expected).max())


def test_bad_input_noise():
    network = small_network(50)
    with pytest.raises(ValueError, match="shape \\(2, 2\\)"):
        simulate(network, n_steps=5, input_noise=np.eye(3))
    with pytest.raises(ValueError, match=">= 0"):
        simulate(network, n_steps=5, input_noise=-1.0)
    with pytest.raises(ValueError, match="finite"):
        simulate(network, n_steps=5, input_noise=[np.nan, 1.0])
    no_inputs = LowRankRNN(network.m, network.n)
    with pytest.raises(ValueError, match="n_inputs = 0"):
        simulate(no_inputs, n_steps=5, input_noise=0.1)
