"""Decompositions: connectivity asymmetry, Fokker-Planck density, Helmholtz-Hodge, entropy production,
irreversibility."""

import numpy as np
import pytest
import scipy.linalg

from connector_sim import LowRankRNN
from connector_sim.ddm import (
    SDE,
    connectivity_decomposition,
    cycling_rate,
    double_well,
    entropy_production,
    entropy_production_from_paths,
    euler_maruyama,
    helmholtz_hodge,
    irreversibility_from_trajectories,
    make_grid,
    multi_well,
    ornstein_uhlenbeck,
    stationary_density,
)
from connector_sim.ddm.decomposition import _mesh


# ------------------------------------------------------------------ connectivity
def _network(N, R, seed, antisym=1.0):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((N, R))
    K = rng.standard_normal((R, R))
    n = rng.standard_normal((N, R)) + m @ (K + antisym * (K - K.T))
    return LowRankRNN(m, n)


def test_connectivity_decomposition_matches_the_dense_matrices():
    net = _network(400, 3, 0)
    cd = connectivity_decomposition(net)
    J = net.connectivity()
    Js, Ja = (J + J.T) / 2, (J - J.T) / 2
    np.testing.assert_allclose([cd.norm, cd.norm_symmetric, cd.norm_antisymmetric],
                               [np.linalg.norm(J), np.linalg.norm(Js), np.linalg.norm(Ja)], rtol=1e-10)
    ev = np.sort(np.linalg.eigvalsh(Js))
    np.testing.assert_allclose(np.sort(cd.eigenvalues_symmetric), np.concatenate([ev[:3], ev[-3:]]), atol=1e-10)
    eva = np.sort(np.linalg.eigvals(Ja).imag)
    np.testing.assert_allclose(cd.eigenvalues_antisymmetric.imag, np.concatenate([eva[:3], eva[-3:]]), atol=1e-10)
    top = np.linalg.eigvals(J)
    top = top[np.argsort(-np.abs(top))[:3]]
    np.testing.assert_allclose(np.sort_complex(cd.eigenvalues), np.sort_complex(top), atol=1e-10)
    np.testing.assert_allclose(cd.overlap, net.n.T @ net.m / 400)
    # the latent split is J_s, J_a restricted to span(m) in orthonormal coordinates
    Q = np.linalg.qr(net.m)[0]
    np.testing.assert_allclose(cd.latent_symmetric, Q.T @ Js @ Q, atol=1e-12)
    np.testing.assert_allclose(cd.latent_antisymmetric, Q.T @ Ja @ Q, atol=1e-12)
    np.testing.assert_allclose(np.sort_complex(np.linalg.eigvals(cd.latent)), np.sort_complex(cd.eigenvalues),
                               atol=1e-10)


def test_symmetric_network_has_no_antisymmetric_part():
    rng = np.random.default_rng(1)
    m = rng.standard_normal((300, 2))
    cd = connectivity_decomposition(LowRankRNN(m, m @ np.diag([1.0, -2.0])))
    assert cd.norm_antisymmetric < 1e-12 * cd.norm and cd.asymmetry < 1e-12
    assert cd.latent_norm_antisymmetric < 1e-12 * cd.latent_norm_symmetric


def test_connectivity_decomposition_at_large_n_without_forming_j():
    cd = connectivity_decomposition(_network(200_000, 2, 2))   # J would take 320 GB
    assert 0 < cd.asymmetry < 1 and cd.eigenvalues_symmetric.shape == (4,)
    with pytest.raises(TypeError, match="LowRankRNN"):
        connectivity_decomposition(np.eye(3))


# ------------------------------------------------------------------ Fokker-Planck
def test_fokker_planck_density_of_the_double_well_is_boltzmann_second_order():
    # L1 error vs exp(-2U/s^2)/Z measured: 5.9e-3 (50 cells), 1.5e-3 (100), 3.7e-4 (200), 9.2e-5 (400)
    sde = double_well(noise=0.5)
    errors = []
    for n in (100, 200):
        g = make_grid([(-3, 3)], n)
        p = stationary_density(sde, g)
        h = g[0][1] - g[0][0]
        assert abs(p.sum() * h - 1) < 1e-12
        errors.append(np.abs(p - sde.exact["stationary_density"](g[0][:, None])).sum() * h)
    assert errors[1] < 5e-4
    assert 3.5 < errors[0] / errors[1] < 4.5          # second order


def test_fokker_planck_with_state_dependent_diffusion():
    # dx = -x dt + s sqrt(1 + x^2) dW (Ito): zero flux gives D p ~ exp(int f / D), so
    # p = (1 + x^2)^(-1 - 1/s^2) / Z; for s = 1, Z = pi / 2 (the tails beyond |x| = 20 hold 8e-5).
    sde = SDE(lambda z: -z, lambda z: np.sqrt(1 + z[..., :, None] ** 2), 1)
    g = make_grid([(-20, 20)], 800)
    p = stationary_density(sde, g)
    exact = (1 + g[0] ** 2) ** -2 / (np.pi / 2)
    assert np.abs(p - exact).sum() * (g[0][1] - g[0][0]) < 5e-4     # measured 1.6e-4 (2.3e-3 at 200 cells)


def test_gradient_multi_well_has_no_irreversible_part():
    # measured on [-2.2, 2.2]^2 with 80^2 cells: L1 2.1e-3, max |f_irr| 4.3e-4 where p > 1e-3 max p,
    # e_p 4e-8 (all O(h^2): 5.3e-4, 1.1e-4, 2.6e-9 at 160^2)
    sde = multi_well()
    hh = helmholtz_hodge(sde, make_grid([(-2.2, 2.2)] * 2, 80))
    exact = sde.exact["stationary_density"](_mesh(hh.grid))
    assert np.abs(hh.density - exact).sum() * hh.cell_volume < 4e-3
    core = hh.density > 1e-3 * hh.density.max()
    assert np.abs(hh.irreversible[core]).max() < 1e-3
    assert 0 <= hh.entropy_production < 1e-6
    # and the reversible part is the whole drift, -grad U = D grad log p
    np.testing.assert_allclose(hh.reversible[core], hh.drift[core], atol=1e-3)


def test_level_set_rotation_entropy_production():
    # density unchanged (Boltzmann), f_irr = omega J grad U, e_p = omega^2 E|grad U|^2 / D = 7.699 (omega = 1,
    # D = 1/8; quadrature on 600^2 points). The scheme measured 7.51 (80^2), 7.65 (160^2): O(h^2).
    sde = multi_well(rotation=1.0, rotation_field="level_set")
    hh = helmholtz_hodge(sde, make_grid([(-2.2, 2.2)] * 2, 80))
    exact = sde.exact["stationary_density"](_mesh(hh.grid))
    assert np.abs(hh.density - exact).sum() * hh.cell_volume < 1e-2
    g = make_grid([(-3, 3)] * 2, 400)
    Z = _mesh(g)
    grad = multi_well().drift(Z.reshape(-1, 2)).reshape(Z.shape)
    p = sde.exact["stationary_density"](Z)
    ep_exact = np.sum((grad**2).sum(-1) * p) * (g[0][1] - g[0][0]) ** 2 / 0.125
    assert abs(hh.entropy_production - ep_exact) < 0.04 * ep_exact


@pytest.mark.parametrize("case", ["rotation", "general"])
def test_ou_decomposition_equals_the_closed_form(case):
    # OU: f_irr = A_irr z, f_rev = (A - A_irr) z, e_p = tr(A_irr^T D^{-1} A_irr S). Measured relative e_p
    # error: 0.78% (rotation, 80^2 cells on [-5, 5]^2), 0.61% (general, 80^2 on [-4, 4]^2), O(h^2).
    if case == "rotation":
        sde, box = ornstein_uhlenbeck(rotation=1.0), 5.0
    else:
        sde, box = ornstein_uhlenbeck(np.array([[-1.0, 2.0], [-0.5, -2.0]]), np.array([[1.0, 0.0], [0.6, 0.8]])), 4.0
    hh = helmholtz_hodge(sde, make_grid([(-box, box)] * 2, 80))
    ep = sde.exact["entropy_production"]
    assert abs(entropy_production(hh) - ep) < 0.015 * ep
    exact = sde.exact["stationary_density"](_mesh(hh.grid))
    assert np.abs(hh.density - exact).sum() * hh.cell_volume < 1e-2
    z = _mesh(hh.grid)
    # where p_s is resolved (> 5% of its peak: within ~2.4 sd); in the tails j / p loses accuracy
    # (the general case's density is narrow, sd 0.39 = 3.9 cells, along its minor axis)
    core = hh.density > 0.05 * hh.density.max()
    f_irr = z @ sde.exact["irreversible_drift_matrix"].T
    scale = np.abs(f_irr[core]).max()
    assert np.abs(hh.irreversible[core] - f_irr[core]).max() < 0.03 * scale
    np.testing.assert_allclose(hh.reversible + hh.irreversible, hh.drift)


def test_ou_entropy_production_matches_simulation():
    # Stratonovich path estimator on Euler-Maruyama paths: e_p = 2 (closed form); CI from 16 trials,
    # plus an O(dt) scheme bias (measured 1.963 +- 0.042 at dt = 0.005).
    sde = ornstein_uhlenbeck(rotation=1.0)
    z = euler_maruyama(sde, [0.0, 0.0], 12000, 0.005, n_trials=16, seed=7)[:, 1000:]
    rate, per_trial = entropy_production_from_paths(sde, z, 0.005)
    se = per_trial.std(ddof=1) / np.sqrt(len(per_trial))
    assert abs(rate - 2.0) < 4 * se + 0.03


def test_cycling_rate_matches_simulated_winding():
    # FP flux through a ray: 0.0744 (60^2), 0.0748 (100^2), 0.0749 (140^2); EM winding 0.0748 +- 0.0013
    sde = multi_well(rotation=0.8)
    hh = helmholtz_hodge(sde, make_grid([(-2.2, 2.2)] * 2, 60))
    rate = cycling_rate(hh)
    z = euler_maruyama(sde, [1.0, 0.0], 10000, 0.01, n_trials=64, seed=5)
    th = np.unwrap(np.arctan2(z[..., 1], z[..., 0]), axis=1)
    per_trial = (th[:, -1] - th[:, 0]) / (2 * np.pi * 100.0)
    se = per_trial.std(ddof=1) / np.sqrt(len(per_trial))
    assert abs(per_trial.mean() - rate) < 4 * se + 1e-3
    assert cycling_rate(helmholtz_hodge(multi_well(), hh.grid)) == pytest.approx(0.0, abs=1e-6)


def test_samples_and_trajectory_estimates():
    sde = ornstein_uhlenbeck(rotation=1.0)
    # start in the stationary law N(0, S): no burn-in
    z0 = np.random.default_rng(0).multivariate_normal([0, 0], sde.exact["stationary_covariance"], size=64)
    z = euler_maruyama(sde, z0, 6000, 0.005, seed=3, record_every=2)
    g = make_grid([(-2, 2)] * 2, 8)
    p = stationary_density(sde, g, samples=z.reshape(-1, 2))
    # histogram vs the exact cell averages (2-point Gauss-Legendre per axis, ample for cells of 0.7 sd)
    h = g[0][1] - g[0][0]
    gl = np.array([-1, 1]) * h / (2 * np.sqrt(3))
    cells = _mesh(g)
    exact = np.mean([sde.exact["stationary_density"](cells + np.array([a, b])) for a in gl for b in gl], axis=0)
    # sampling noise: ~64 * 30 / tau_corr ~ 1e3 effective samples per axis -> L1 ~ 0.04 (measured 0.02)
    assert np.abs(p - exact).sum() * h**2 < 0.06
    hh = helmholtz_hodge(sde, g, trajectories=z, dt=0.01)
    # coarse cells and the mass outside the grid (2.8 sd) lose some e_p: measured 1.79 for 2.0
    assert 1.5 < hh.entropy_production < 2.2
    with pytest.raises(ValueError, match="dt"):
        helmholtz_hodge(sde, g, trajectories=z)


def test_invalid_grid_is_rejected():
    with pytest.raises(ValueError, match="one axis per dimension"):
        stationary_density(multi_well(), make_grid([(-2, 2)], 10))
    with pytest.raises(ValueError, match="uniformly"):
        stationary_density(double_well(), (np.array([0.0, 1.0, 3.0]),))
    with pytest.raises(ValueError, match="low < high"):
        make_grid([(2, -2)], 10)


# ------------------------------------------------------------------ irreversibility from trajectories
def test_covariance_asymmetry_of_ou_matches_the_closed_form():
    sde = ornstein_uhlenbeck(np.array([[-1.0, -1.5], [1.0, -0.7]]), 0.8)
    dt = 0.05
    z = euler_maruyama(sde, [0.0, 0.0], 16000, 0.0125, n_trials=16, seed=9, record_every=4)[:, 50:]
    ir = irreversibility_from_trajectories(z, dt, lags=(1, 4, 10))
    for i, L in enumerate(ir.lags):
        C = sde.exact["lagged_covariance"](L * dt)
        exact = (C - C.T)[1, 0] / 2
        # 4 SE across trials, plus the Euler-Maruyama bias O(dt_sim) ~ 1% of the value
        se = ir.covariance_asymmetry_se[i, 1, 0]
        assert abs(ir.covariance_asymmetry[i, 1, 0] - exact) < 4 * se + 0.02 * abs(exact)


def test_gradient_system_is_reversible_from_trajectories_and_rotation_is_not():
    dt = 0.05
    zg = euler_maruyama(multi_well(), [1.0, 0.0], 12000, 0.0125, n_trials=8, seed=1, record_every=4)[:, 100:]
    ir = irreversibility_from_trajectories(zg, dt, lags=(1, 5))
    assert np.all(np.abs(ir.covariance_asymmetry) <= 4 * ir.covariance_asymmetry_se + 1e-12)
    kl_se = ir.kl_rate_trials.std(ddof=1) / np.sqrt(len(ir.kl_rate_trials))
    assert ir.kl_rate < ir.kl_rate_bias + 4 * kl_se
    sde = multi_well(rotation=0.8)
    zr = euler_maruyama(sde, [1.0, 0.0], 12000, 0.0125, n_trials=8, seed=1, record_every=4)[:, 100:]
    irr = irreversibility_from_trajectories(zr, dt, lags=(1, 5))
    kl_se = irr.kl_rate_trials.std(ddof=1) / np.sqrt(len(irr.kl_rate_trials))
    assert irr.kl_rate > irr.kl_rate_bias + 4 * kl_se
    # a coarse-grained KL rate bounds the entropy production from below (3.15 from Fokker-Planck)
    assert irr.kl_rate - irr.kl_rate_bias < 3.15


def test_irreversibility_input_errors():
    with pytest.raises(ValueError, match="n_times"):
        irreversibility_from_trajectories(np.zeros((2, 2, 2)), 0.1)
    with pytest.raises(ValueError, match="lags"):
        irreversibility_from_trajectories(np.random.default_rng(0).standard_normal((2, 50, 2)), 0.1, lags=(60,))


# ------------------------------------------------------------------ figures
def test_decomposition_figures(tmp_path):
    pytest.importorskip("matplotlib")
    from connector_sim.ddm.plotting import (
        plot_helmholtz_hodge,
        plot_probability_current,
        plot_stationary_density,
        plot_trajectories,
    )

    sde = multi_well(rotation=0.8)
    hh = helmholtz_hodge(sde, make_grid([(-2, 2)] * 2, 30))
    z = euler_maruyama(sde, [1.0, 0.0], 200, 0.01, n_trials=2, seed=0)
    fig = plot_helmholtz_hodge(hh, trajectories=z, stream_density=0.4)
    assert len(fig.axes) >= 4
    fig.savefig(tmp_path / "hh.png", dpi=50)
    assert (tmp_path / "hh.png").stat().st_size > 0
    ax = plot_probability_current(hh, density=0.4)
    assert any(im.get_gid() == "density" for im in ax.get_images())
    hh1 = helmholtz_hodge(double_well(), make_grid([(-2.5, 2.5)], 50))
    assert len(plot_helmholtz_hodge(hh1).axes) == 2
    assert [line.get_gid() for line in plot_stationary_density(hh1).get_lines()] == ["density"]
    assert len(plot_trajectories(z[:, :, :1], dt=0.01).get_lines()) == 2
    with pytest.raises(TypeError, match="HelmholtzHodge"):
        plot_stationary_density(np.zeros((3, 3)))


def test_three_dimensional_ou_from_simulation():
    # d > 2: density from simulation, entropy production from paths, against the closed form
    A = np.array([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.5], [0.0, -0.5, -1.5]])
    sde = ornstein_uhlenbeck(A, 0.8)
    S = sde.exact["stationary_covariance"]
    g = make_grid([(-1.5, 1.5)] * 3, 5)
    p = stationary_density(sde, g, n_trials=32, n_steps=4000, dt=0.01, burn_in=300, seed=1)
    assert p.shape == (5, 5, 5)
    # exact cell averages (2-point Gauss-Legendre per axis) of the Euler-Maruyama chain's own stationary law
    # N(0, S_dt), S_dt = P S_dt P^T + dt G G^T (no scheme bias); the histogram's error is then sampling noise
    # (32 paths of 37 time units, correlation time ~1): measured 0.075-0.098 over 4 seeds
    P = np.eye(3) + 0.01 * A
    S_dt = scipy.linalg.solve_discrete_lyapunov(P, 0.01 * 0.64 * np.eye(3))
    inv, norm = np.linalg.inv(S_dt), 1 / np.sqrt(np.linalg.det(2 * np.pi * S_dt))
    q = np.array([-1, 1]) * (g[0][1] - g[0][0]) / (2 * np.sqrt(3))
    shifts = np.array(np.meshgrid(q, q, q, indexing="ij")).reshape(3, -1).T
    exact = np.mean([norm * np.exp(-0.5 * np.einsum("...i,ij,...j->...", _mesh(g) + sh, inv, _mesh(g) + sh))
                     for sh in shifts], axis=0)
    assert np.abs(p - exact).sum() / np.abs(exact).sum() < 0.15
    z0 = np.random.default_rng(2).multivariate_normal(np.zeros(3), S, size=16)
    z = euler_maruyama(sde, z0, 6000, 0.005, seed=2)
    rate, per_trial = entropy_production_from_paths(sde, z, 0.005)
    se = per_trial.std(ddof=1) / 4
    ep = sde.exact["entropy_production"]
    assert abs(rate - ep) < 4 * se + 0.03 * ep
    with pytest.raises(ValueError, match="trajectories"):
        helmholtz_hodge(sde, g)
