"""The SDE description and its Euler-Maruyama reference simulator."""

import numpy as np
import pytest
import scipy.linalg

from connector_sim import private_noise
from connector_sim.ddm import SDE, double_well, euler_maruyama, largest_lyapunov_exponent, multi_well, stack_last


def _ou_drift(A):
    return lambda z: z @ np.asarray(A).T


# ------------------------------------------------------------------ validation
def test_drift_with_wrong_shape_is_rejected():
    sde = SDE(lambda z: z[..., :1], 0.1, 2, name="bad")
    with pytest.raises(ValueError, match="same shape"):
        sde.drift(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="same shape"):
        euler_maruyama(sde, [0.0, 0.0], 10, 0.01)


def test_drift_with_non_finite_values_is_rejected():
    sde = SDE(lambda z: np.log(z), 0.1, 1, name="log")
    with pytest.raises(ValueError, match="non-finite"):
        sde.drift(np.array([[-1.0]]))


def test_state_of_wrong_dimension_is_rejected():
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        multi_well().drift(np.zeros((4, 3)))


@pytest.mark.parametrize("diffusion, error, match", [
    (np.ones((2, 3)), ValueError, "shape"),
    (-0.5, ValueError, ">= 0"),
    (np.array([1.0, -1.0]), ValueError, ">= 0"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), ValueError, "finite"),
    ("noise", TypeError, "number"),
    (True, TypeError, "number"),
])
def test_invalid_diffusion_is_rejected(diffusion, error, match):
    with pytest.raises(error, match=match):
        SDE(lambda z: -z, diffusion, 2)


def test_state_dependent_diffusion_of_wrong_shape_is_rejected():
    sde = SDE(lambda z: -z, lambda z: z, 2)
    with pytest.raises(ValueError, match="shape"):
        sde.diffusion(np.zeros((3, 2)))


def test_non_callable_drift_and_bad_dim_are_rejected():
    with pytest.raises(TypeError, match="callable"):
        SDE(np.eye(2), 0.1, 2)
    with pytest.raises(ValueError, match="dim"):
        SDE(lambda z: z, 0.1, 0)


def test_from_covariance_rejects_non_psd_and_non_symmetric():
    with pytest.raises(ValueError, match="positive semidefinite"):
        SDE.from_covariance(lambda z: -z, np.array([[1.0, 2.0], [2.0, 1.0]]), 2)
    with pytest.raises(ValueError, match="symmetric"):
        SDE.from_covariance(lambda z: -z, np.array([[1.0, 0.5], [0.0, 1.0]]), 2)


def test_from_covariance_reproduces_the_covariance():
    C = np.array([[2.0, 0.6], [0.6, 0.5]])
    sde = SDE.from_covariance(lambda z: -z, C, 2)
    np.testing.assert_allclose(sde.noise_covariance(), C, atol=1e-12)
    np.testing.assert_allclose(sde.diffusion_tensor(), C / 2, atol=1e-12)


@pytest.mark.parametrize("diffusion, G", [
    (0.3, 0.3 * np.eye(2)),
    (np.array([0.2, 0.5]), np.diag([0.2, 0.5])),
    (np.array([[1.0, 0.0], [0.5, 0.2]]), np.array([[1.0, 0.0], [0.5, 0.2]])),
])
def test_constant_diffusion_forms(diffusion, G):
    sde = SDE(lambda z: -z, diffusion, 2)
    np.testing.assert_array_equal(sde.constant_diffusion, G)
    np.testing.assert_allclose(sde.noise_covariance(), G @ G.T)
    assert sde.diffusion(np.zeros((4, 3, 2))).shape == (4, 3, 2, 2)


def test_state_dependent_diffusion_tensor():
    sde = SDE(lambda z: -z, lambda z: z[..., :, None] * np.eye(2), 2)
    assert sde.constant_diffusion is None
    z = np.array([[1.0, 2.0], [3.0, -1.0]])
    np.testing.assert_allclose(sde.diffusion_tensor(z), 0.5 * np.stack([np.diag([1, 4.0]), np.diag([9, 1.0])]))
    with pytest.raises(ValueError, match="pass z"):
        sde.noise_covariance()


# ------------------------------------------------------------------ Euler-Maruyama
def test_euler_maruyama_paths_do_not_depend_on_batch_size():
    sde = multi_well(rotation=0.5)
    z0 = np.array([1.0, 0.0])
    batch = euler_maruyama(sde, z0, 300, 0.01, n_trials=5, seed=11)
    for b in (0, 3):
        alone = euler_maruyama(sde, z0, 300, 0.01, n_trials=1, seed=11, trial_offset=b)
        # elementwise float64 arithmetic: bitwise equal up to libm differences between SIMD and scalar loops
        np.testing.assert_allclose(alone[0], batch[b], rtol=0, atol=1e-12)
    other = euler_maruyama(sde, z0, 300, 0.01, n_trials=5, seed=12)
    assert np.abs(other - batch).max() > 0.1


def test_euler_maruyama_uses_the_counter_based_draws():
    # f = 0, constant G: z_T - z_0 = sqrt(dt) G sum_t xi_t with xi the package's private noise (n_units = d)
    G = np.array([[1.0, 0.0], [0.5, 2.0]])
    sde = SDE(lambda z: 0.0 * z, G, 2)
    dt, T = 0.04, 50
    z = euler_maruyama(sde, [0.0, 0.0], T, dt, n_trials=3, seed=5, record_every=T)
    xi = private_noise(5, T, 2, n_trials=3)
    np.testing.assert_allclose(z[:, 1], np.sqrt(dt) * xi.sum(axis=1) @ G.T, atol=1e-12)


def test_euler_maruyama_record_every_and_shapes():
    sde = double_well()
    full = euler_maruyama(sde, [0.5], 20, 0.01, seed=3)
    sub = euler_maruyama(sde, [0.5], 20, 0.01, seed=3, record_every=4)
    assert full.shape == (1, 21, 1) and sub.shape == (1, 6, 1)
    np.testing.assert_array_equal(sub[0], full[0, ::4])
    with pytest.raises(ValueError, match="z0"):
        euler_maruyama(sde, [0.5, 1.0], 20, 0.01)
    with pytest.raises(ValueError, match="n_trials"):
        euler_maruyama(sde, np.zeros((3, 1)), 20, 0.01, n_trials=2)
    with pytest.raises(ValueError, match="dt"):
        euler_maruyama(sde, [0.5], 20, -0.1)


def test_euler_maruyama_divergence_is_reported():
    sde = SDE(lambda z: z**3, 0.0, 1)
    with pytest.raises(FloatingPointError, match="reduce dt"):
        euler_maruyama(sde, [2.0], 200, 0.5)


def test_euler_maruyama_ou_covariance_matches_the_discrete_lyapunov_equation():
    # EM on dz = A z dt + G dW is the AR(1) z' = (I + A dt) z + sqrt(dt) G xi, whose stationary covariance
    # S_dt solves S = P S P^T + dt G G^T exactly (and -> the continuous S as dt -> 0).
    A = np.array([[-1.0, -2.0], [2.0, -1.5]])
    G = np.array([[1.0, 0.0], [0.4, 0.6]])
    dt = 0.05
    sde = SDE(_ou_drift(A), G, 2)
    P = np.eye(2) + A * dt
    S_dt = scipy.linalg.solve_discrete_lyapunov(P, dt * G @ G.T)
    z = euler_maruyama(sde, [0.0, 0.0], 4000, dt, n_trials=32, seed=1, record_every=4)[:, 50:]
    per_trial = np.einsum("bti,btj->bij", z, z) / z.shape[1]
    mean = per_trial.mean(axis=0)
    se = per_trial.std(axis=0, ddof=1) / np.sqrt(per_trial.shape[0])
    assert np.all(np.abs(mean - S_dt) < 4 * se + 1e-3), (mean, S_dt, se)


def test_euler_maruyama_state_dependent_diffusion_moments():
    # geometric Brownian motion dX = mu X dt + s X dW under EM: X_{t+1} = X_t (1 + mu dt + s sqrt(dt) xi),
    # so E[X_n] = x0 (1 + mu dt)^n and E[X_n^2] = x0^2 ((1 + mu dt)^2 + s^2 dt)^n exactly.
    mu, s, dt, n = 0.3, 0.4, 0.01, 100
    sde = SDE(lambda z: mu * z, lambda z: s * z[..., None], 1)
    x = euler_maruyama(sde, [1.0], n, dt, n_trials=4000, seed=2, record_every=n)[:, 1, 0]
    m1, m2 = (1 + mu * dt) ** n, ((1 + mu * dt) ** 2 + s * s * dt) ** n
    assert abs(x.mean() - m1) < 4 * x.std() / np.sqrt(x.size)
    assert abs((x**2).mean() - m2) < 4 * (x**2).std() / np.sqrt(x.size)


def test_largest_lyapunov_exponent_of_a_linear_flow():
    # for dz/dt = A z every separation grows at the largest real part of A's eigenvalues
    A = np.array([[0.3, -1.0], [1.0, 0.3]]) - np.diag([0.0, 0.5])
    lam = largest_lyapunov_exponent(lambda z: z @ A.T, np.array([[1.0, 0.0], [0.0, 1.0]]), 60.0, dt=0.01,
                                    t_transient=5.0)
    expected = np.linalg.eigvals(A).real.max()
    np.testing.assert_allclose(lam, expected, atol=0.02)   # O(1/t_max) from the transient direction


def test_builtin_drifts_accept_torch_tensors():
    torch = pytest.importorskip("torch")
    from connector_sim.ddm import benchmark_systems

    rng = np.random.default_rng(0)
    for name, sde in benchmark_systems().items():
        z = rng.standard_normal((7, sde.dim))
        out = sde.drift(torch.as_tensor(z))
        assert isinstance(out, torch.Tensor), name
        np.testing.assert_allclose(out.numpy(), sde.drift(z), rtol=1e-12, atol=1e-12, err_msg=name)


def test_stack_last_with_numpy():
    z = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(stack_last([z[..., 1], z[..., 0]], z), z[:, ::-1])


def test_importing_ddm_imports_neither_torch_nor_matplotlib():
    import subprocess
    import sys

    code = ("import sys, connector_sim.ddm; "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
