"""The benchmark systems: each exact fact in ``SDE.exact`` checked against an independent computation."""

import numpy as np
import pytest

from connector_sim.ddm import (
    benchmark_systems,
    double_well,
    euler_maruyama,
    largest_lyapunov_exponent,
    limit_cycle_period,
    lorenz,
    multi_well,
    ornstein_uhlenbeck,
    rossler,
    van_der_pol,
)


_VARIANTS = {}


def _all_variants():
    if _VARIANTS:
        return _VARIANTS
    systems = dict(benchmark_systems())
    systems["multi_well_level_set"] = multi_well(rotation=1.0, rotation_field="level_set")
    systems["multi_well_fast"] = multi_well(n_wells=3, rotation=2.0, depth=0.2)
    systems["multi_well_6"] = multi_well(n_wells=6, radius=1.5, depth=0.3, rotation=0.5)
    _VARIANTS.update(systems)
    return _VARIANTS


@pytest.mark.parametrize("name", list(_all_variants()))
def test_fixed_points_are_zeros_of_the_drift(name):
    sde = _all_variants()[name]
    fps = sde.exact["fixed_points"]
    assert fps.shape[1] == sde.dim and len(fps) >= 1
    np.testing.assert_allclose(sde.drift(fps), 0.0, atol=1e-10)


def test_benchmark_library_names():
    assert set(benchmark_systems()) == {"ornstein_uhlenbeck", "double_well", "multi_well", "multi_well_cycling",
                                        "van_der_pol", "lorenz", "rossler"}


# ------------------------------------------------------------------ Ornstein-Uhlenbeck
def _random_ou(seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((3, 3)) - 3.0 * np.eye(3)
    G = np.tril(rng.standard_normal((3, 3))) + 2.0 * np.eye(3)
    return ornstein_uhlenbeck(A, G), A, G


@pytest.mark.parametrize("seed", [0, 1])
def test_ou_covariance_solves_the_lyapunov_equation(seed):
    sde, A, G = _random_ou(seed)
    S = sde.exact["stationary_covariance"]
    np.testing.assert_allclose(A @ S + S @ A.T + G @ G.T, 0.0, atol=1e-10)
    assert np.all(np.linalg.eigvalsh(S) > 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_ou_entropy_production_matches_the_trace_formula(seed):
    # e_p = tr(A_irr^T D^{-1} A_irr S) equals tr(A^T D^{-1} A S) + tr(A) (expand A_irr = A + D S^{-1}
    # and use tr(S^{-1} D) = -tr(A), the trace of the Lyapunov equation times S^{-1}).
    sde, A, G = _random_ou(seed)
    D = G @ G.T / 2
    S = sde.exact["stationary_covariance"]
    other = np.trace(A.T @ np.linalg.inv(D) @ A @ S) + np.trace(A)
    np.testing.assert_allclose(sde.exact["entropy_production"], other, rtol=1e-10)
    # the irreversible drift keeps the Gaussian stationary: A_irr S is antisymmetric
    M = sde.exact["irreversible_drift_matrix"] @ S
    np.testing.assert_allclose(M + M.T, 0.0, atol=1e-10)


@pytest.mark.parametrize("rotation", [0.0, 0.5, 2.0])
def test_default_ou_entropy_production_is_two_omega_squared(rotation):
    sde = ornstein_uhlenbeck(rotation=rotation, sigma=0.7)
    np.testing.assert_allclose(sde.exact["stationary_covariance"], 0.7**2 / 2 * np.eye(2), atol=1e-12)
    np.testing.assert_allclose(sde.exact["entropy_production"], 2 * rotation**2, atol=1e-12)


def test_ou_rejects_unstable_drift():
    with pytest.raises(ValueError, match="stable"):
        ornstein_uhlenbeck(A=np.array([[0.1, 0.0], [0.0, -1.0]]))


# ------------------------------------------------------------------ double well
def test_double_well_density_is_boltzmann_and_normalised():
    sde = double_well(noise=0.6)
    x = np.linspace(-4, 4, 8001)
    p = sde.exact["stationary_density"](x[:, None])
    assert abs(np.sum(p) * (x[1] - x[0]) - 1) < 1e-8
    U = x**4 / 4 - x**2 / 2
    ratio = p * np.exp(2 * U / 0.36)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)


def test_kramers_rate_approximates_the_exact_first_passage_time():
    # 1 / k_Kramers ~ MFPT(-1 -> +1). Steepest descent on the two Laplace integrals of the exact
    # 1-D formula leaves a relative error of order D / Delta U; we measured 0.50-0.58 D / Delta U for
    # D / Delta U in [0.25, 0.5]. Assert it stays below 0.7 D / Delta U and shrinks with the noise.
    errors = []
    for s in (0.35, 0.4, 0.5):
        sde = double_well(noise=s)
        eps = (s * s / 2) / 0.25
        err = sde.exact["mean_first_passage_time"] * sde.exact["kramers_rate"] - 1
        assert 0 < err < 0.7 * eps, (s, err, eps)
        errors.append(err)
    assert errors[0] < errors[1] < errors[2]


def test_double_well_first_passage_time_matches_simulation():
    # exact MFPT (quadrature) vs Euler-Maruyama; CI from 400 independent trials (the passage time is
    # close to exponential, SE ~ mean / 20); dt = 0.01 adds a bias well below the CI (recording every
    # 5 steps delays detection by < 0.05).
    sde = double_well(noise=0.6)
    z = euler_maruyama(sde, [-1.0], 20000, 0.01, n_trials=400, seed=4, record_every=5)[:, :, 0]
    reached = z >= 1.0
    assert reached.any(axis=1).all()
    t = reached.argmax(axis=1) * 0.05
    exact = sde.exact["mean_first_passage_time"]
    assert abs(t.mean() - exact) < 4 * t.std() / np.sqrt(t.size), (t.mean(), exact)


# ------------------------------------------------------------------ multi well
def test_multi_well_wells_and_barrier():
    sde = multi_well(n_wells=5, radius=1.2, depth=0.3)
    U = sde.exact["potential"]
    wells = sde.exact["well_centers"]
    th = np.linspace(0, 2 * np.pi, 2001)
    ring = 1.2 * np.stack([np.cos(th), np.sin(th)], axis=1)
    np.testing.assert_allclose(U(ring).max() - U(wells).min(), 2 * 0.3, rtol=1e-6)
    # the wells are minima: U increases in every direction
    for c in wells:
        for ang in np.linspace(0, 2 * np.pi, 8, endpoint=False):
            assert U(c + 1e-3 * np.array([np.cos(ang), np.sin(ang)])) > U(c)
    # drift = -grad U (finite differences)
    z = np.random.default_rng(0).uniform(-1.5, 1.5, (20, 2))
    h = 1e-6
    grad = np.stack([(U(z + h * e) - U(z - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
    np.testing.assert_allclose(sde.drift(z), -grad, atol=1e-6)


def test_level_set_rotation_keeps_the_boltzmann_density():
    # v = omega J grad U is orthogonal to grad U and divergence-free, so div(v exp(-2U/s^2)) = 0.
    grad_sde, rot_sde = multi_well(), multi_well(rotation=1.3, rotation_field="level_set")
    U = grad_sde.exact["potential"]
    z = np.random.default_rng(1).uniform(-1.5, 1.5, (30, 2))
    h = 1e-4
    s2 = 0.5**2

    def flux(w):  # v p
        return (rot_sde.drift(w) - grad_sde.drift(w)) * np.exp(-2 * U(w) / s2)[:, None]

    v = rot_sde.drift(z) - grad_sde.drift(z)
    np.testing.assert_allclose(np.sum(v * grad_sde.drift(z), axis=1), 0.0, atol=1e-10)
    div = sum((flux(z + h * e)[:, k] - flux(z - h * e)[:, k]) / (2 * h) for k, e in enumerate(np.eye(2)))
    scale = np.abs(flux(z)).max()
    assert np.abs(div).max() < 1e-6 * scale
    assert rot_sde.exact["stationary_density"] is not None


def test_strong_solid_rotation_has_the_exact_period():
    # on the invariant circle theta' = omega - omega_c sin(k theta): period 2 pi / sqrt(omega^2 - omega_c^2)
    sde = multi_well(rotation=1.5)
    T = limit_cycle_period(sde, [1.0, 0.01], dt=0.01, t_transient=2.0, t_max=20.0, coordinate=1)
    np.testing.assert_allclose(T, sde.exact["period"], rtol=1e-5)


def test_weak_solid_rotation_keeps_fixed_points_and_has_no_period():
    sde = multi_well(rotation=0.5)
    assert "period" not in sde.exact and len(sde.exact["fixed_points"]) == 1 + 2 * 4


def test_multi_well_parameter_errors():
    with pytest.raises(ValueError, match="n_wells"):
        multi_well(n_wells=1)
    with pytest.raises(ValueError, match="stiffness"):
        multi_well(depth=2.0)
    with pytest.raises(ValueError, match="rotation_field"):
        multi_well(rotation_field="curl")
    with pytest.raises(ValueError, match=">= 0"):
        double_well(noise=-1.0)


# ------------------------------------------------------------------ oscillators and chaos
def test_van_der_pol_period_mu_one():
    # reference 6.663286859 (mu = 1); RK4 at dt = 0.01 with interpolated crossings is accurate to ~1e-6
    T = limit_cycle_period(van_der_pol(1.0), [2.0, 0.0], dt=0.01, t_transient=20.0, t_max=30.0)
    np.testing.assert_allclose(T, van_der_pol(1.0).exact["period"], rtol=1e-5)


def test_van_der_pol_small_mu_expansion():
    # 2 pi (1 + mu^2/16 - 5 mu^4/3072) leaves O(mu^6) ~ 6e-5 at mu = 0.2
    sde = van_der_pol(0.2)
    T = limit_cycle_period(sde, [2.0, 0.0], dt=0.01, t_transient=50.0, t_max=20.0)
    assert abs(T - sde.exact["period_small_mu"]) < 1e-3


def test_lorenz_largest_lyapunov_exponent():
    # Benettin estimate from 4 starts over t = 60: finite-time exponents of Lorenz-63 fluctuate with a
    # standard deviation ~0.02 per start at t = 100 (measured), so the mean of 4 at t = 60 has SE ~0.015;
    # 0.07 also covers the O(dt^4) RK4 error and the transient.
    sde = lorenz()
    starts = np.array([[1.0, 1.0, 20.0]]) + 0.3 * np.arange(4)[:, None]
    lam = largest_lyapunov_exponent(sde, starts, 60.0, dt=0.01, t_transient=5.0)
    assert abs(lam.mean() - sde.exact["lyapunov_exponent"]) < 0.07, lam


def test_lorenz_and_rossler_fixed_points_closed_form():
    sde = lorenz(rho=28.0, beta=8 / 3)
    c = np.sqrt(8 / 3 * 27)
    np.testing.assert_allclose(sorted(sde.exact["fixed_points"][:, 0]), [-c, 0.0, c])
    assert len(lorenz(rho=0.5).exact["fixed_points"]) == 1
    r = rossler()
    assert r.exact["fixed_points"].shape == (2, 3)
    np.testing.assert_allclose(r.drift(r.exact["fixed_points"]), 0.0, atol=1e-12)
