"""Dynamic mean field of low-rank plus random networks (theory section 8) against quadrature and simulation.

Finite-N tolerances: a population average over N units of a quantity with unit-to-unit standard
deviation sd has sampling error sd / sqrt(N); the tests allow 4 sd / sqrt(N) (measured from the
simulated state itself), plus, for chaotic states, the seed-to-seed spread of the quenched random
part noted at each test.
"""

import math

import numpy as np
import pytest
from scipy.integrate import quad

from connector_sim import Gaussian
from connector_sim.dmf import (
    DMF,
    chaotic_solutions,
    predicted_dmf_regime,
    rank_one_structure,
    sample_network,
    simulated_dmf_regime,
    stability,
    stationary_solutions,
)
from connector_sim.mean_field import (
    AVERAGE_QUANTITIES,
    _product,
    double_gaussian_average,
    gaussian_average,
    gaussian_averages,
    primitive,
)
from connector_sim.sparse_dynamics import simulate_low_rank_plus_random

# The adaptive references warn when they reach rounding (their error is then ~1e-14, not a problem).
pytestmark = pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")

ACTIVATIONS = ("tanh", "relu", "identity", "softplus", "sigmoid")


def _reference(activation, quantity, mu, s, power=0):
    def integrand(g):
        y = np.array([mu + s * g])
        return _product(activation, AVERAGE_QUANTITIES[quantity], y)[0] * (s * g) ** power * math.exp(-g * g / 2)

    points = [-mu / s] if abs(mu / s) < 12 else None
    return quad(integrand, -12, 12, points=points, limit=400, epsabs=1e-14, epsrel=1e-13)[0] / math.sqrt(2 * math.pi)


# --- Gaussian averages ------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gaussian_average_matches_adaptive_quadrature(activation):
    # 1e-11 relative to max(1, |value|): the accurate rule reaches ~1e-13, adaptive quad ~1e-12.
    for quantity in AVERAGE_QUANTITIES:
        for mu, s in [(-3.0, 0.05), (0.0, 0.6), (0.7, 2.0), (25.0, 30.0)]:
            for power in (0, 2):
                value = float(gaussian_average(activation, quantity, mu, s, power=power))
                expected = _reference(activation, quantity, mu, s, power)
                assert abs(value - expected) <= 1e-11 * max(1.0, abs(expected)), (quantity, mu, s, power)


def test_gaussian_average_agrees_with_existing_and_closed_forms():
    mu, s = np.array([0.0, 0.5, -2.0, 1.0]), np.array([1.0, 0.3, 5.0, 40.0])
    phi, dphi = gaussian_averages("tanh", mu, s)
    np.testing.assert_allclose(gaussian_average("tanh", "phi", mu, s), phi, atol=1e-12)
    np.testing.assert_allclose(gaussian_average("tanh", "dphi", mu, s), dphi, atol=1e-12)
    np.testing.assert_allclose(gaussian_average("tanh", "phi2", mu, s), 1.0 - dphi, atol=1e-12)  # tanh^2 = 1 - tanh'
    # relu: E[max(g, 0)^2] / 2 = 1/4; identity: <Phi> = (mu^2 + s^2) / 2; Stein: <(x - mu) phi> = s^2 <phi'>
    assert gaussian_average("relu", "Phi", 0.0, 1.0) == pytest.approx(0.25, abs=1e-15)
    np.testing.assert_allclose(gaussian_average("identity", "Phi", mu, s), (mu**2 + s**2) / 2, rtol=1e-13)
    np.testing.assert_allclose(gaussian_average("tanh", "phi", mu, s, power=1), s**2 * dphi, atol=1e-11)


def test_hermite_rule_is_plain_gauss_hermite():
    x, w = np.polynomial.hermite.hermgauss(10)
    mu, s = 0.4, 1.3
    expected = np.sum(w * np.tanh(mu + s * math.sqrt(2) * x) ** 2) / math.sqrt(math.pi)
    assert gaussian_average("tanh", "phi2", mu, s, rule="hermite", order=10) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_primitive_is_an_antiderivative(activation):
    y = np.linspace(-45.0, 45.0, 181) + 0.013
    h = 1e-5
    derivative = (primitive(activation, y + h) - primitive(activation, y - h)) / (2 * h)
    phi = _product(activation, ("phi",), y)
    # central difference: truncation h^2 |phi''| / 6 ~ 1e-11, rounding 1e-16 |Phi| / h ~ 1e-8 (|y|^2 / 2 at 45)
    assert np.all(np.abs(derivative - phi) <= 1e-7 * np.maximum(1.0, y * y))


def test_double_average_against_nested_quadrature_and_limits():
    def nested(mu, s_s, s_f, name):
        def outer(z):
            inner = quad(lambda x: _product("tanh", (name,), np.array([mu + s_f * x + s_s * z]))[0]
                         * math.exp(-x * x / 2), -12, 12, epsabs=1e-14, epsrel=1e-13)[0] / math.sqrt(2 * math.pi)
            return inner**2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

        return quad(outer, -12, 12, epsabs=1e-13, epsrel=1e-12)[0]

    for mu, s_s, s_f in [(1.0, 3.0, 0.5)]:
        for name in ("phi", "Phi"):
            expected = nested(mu, s_s, s_f, name)
            assert double_gaussian_average("tanh", name, mu, s_s, s_f) == pytest.approx(expected, abs=1e-11)
    # s_f = 0: <f^2>; s_s = 0: <f>^2
    assert double_gaussian_average("tanh", "Phi", 0.3, 1.5, 0.0) == pytest.approx(
        float(gaussian_average("tanh", "Phi2", 0.3, 1.5)), abs=1e-13)
    assert double_gaussian_average("tanh", "phi", 0.3, 0.0, 1.5) == pytest.approx(
        float(gaussian_average("tanh", "phi", 0.3, 1.5)) ** 2, abs=1e-13)


# --- solutions against simulation -------------------------------------------------------------------


def _run(network, x0, n_discard=150, n_window=250, dt=0.2):
    transient = simulate_low_rank_plus_random(network, n_discard, dt=dt, x0=x0)
    window = simulate_low_rank_plus_random(network, n_window, dt=dt, x0=transient.final_state, record_units="all")
    return window.potentials[:, 1:], window.kappa[:, 1:, 0]


def test_static_structured_state_matches_simulation():
    structure, g, N = 2.5, 0.8, 2000
    model = DMF(rank_one_structure(structure), g)
    solutions = stationary_solutions(model)
    stable = [s for s in solutions if s.stable]
    assert [s.branch for s in stable] == ["structured", "structured"]  # the symmetric pair
    assert stable[0].kappa[0] == pytest.approx(-stable[1].kappa[0], rel=1e-10)
    theory = stable[1]
    for seed in (0,):
        network = sample_network(structure, g, N, random_state=seed, seed=seed + 10)
        m = network.m[:, 0]
        x0 = np.stack([m, -m]) / m.std() + np.random.default_rng(seed).standard_normal((2, N))
        x, kappa = _run(network, x0, n_window=50)
        assert np.ptp(x[:, -10:], axis=1).max() < 1e-6  # static
        for trial, sign in enumerate((1.0, -1.0)):
            state = x[trial, -1]
            rates = np.tanh(state)
            n = network.n[:, 0]
            tol_kappa = 4 * np.std(n * rates) / math.sqrt(N)
            tol_mu = 4 * np.std(state) / math.sqrt(N)
            tol_delta = 4 * np.std((state - state.mean()) ** 2) / math.sqrt(N)
            assert abs(kappa[trial, -1] - sign * theory.kappa[0]) < tol_kappa
            assert abs(state.mean() - sign * theory.mu) < tol_mu
            assert abs(state.var() - theory.delta0) < tol_delta


@pytest.mark.parametrize("overlaps", [(0.6, 0.0), (0.0, 0.8)], ids=["input along m", "input along n"])
def test_input_driven_state_matches_simulation(overlaps):
    # structure 0.5 (no structured state without input), g = 0.5, a constant input v = 1.5 along m or n
    from connector_sim import LowRankRNN, LowRankPlusRandomRNN
    from connector_sim.sparse_dynamics import _whitened_gaussian

    structure, g, N, v = 0.5, 0.5, 2000, 1.5
    distribution = rank_one_structure(structure, kind="covariance", input_overlaps=overlaps)
    (state,) = [s for s in stationary_solutions(DMF(distribution, g, inputs=[v])) if s.stable]
    rows = _whitened_gaussian(N, 3, np.random.default_rng(2)) @ np.linalg.cholesky(np.asarray(distribution.cov)).T
    network = LowRankPlusRandomRNN(LowRankRNN(rows[:, :1], rows[:, 1:2], rows[:, 2:]), g, seed=5)
    result = simulate_low_rank_plus_random(network, 300, dt=0.2, inputs=np.full((300, 1), v), x0=np.zeros(N))
    x = result.final_state[0]
    n = network.n[:, 0]
    assert abs(result.kappa[0, -1, 0] - state.kappa[0]) < 4 * np.std(n * np.tanh(x)) / math.sqrt(N)
    assert abs(x.var() - state.delta0) < 4 * np.std((x - x.mean()) ** 2) / math.sqrt(N)
    if overlaps[0] == 0.0:  # along n only: kappa comes from the input through Cov(n, I)
        assert state.kappa[0] > 0.1


def _chaos_statistics(network, lag=100):
    N = network.n_neurons
    m = network.m[:, 0]
    x0 = np.stack([m, -m]) / m.std() + np.random.default_rng(0).standard_normal((2, N))
    x, kappa = _run(network, x0)
    centred = x - x.mean(axis=2, keepdims=True)
    delta0 = np.mean(centred**2, axis=(1, 2))
    delta_inf = np.mean(centred[:, :-lag] * centred[:, lag:], axis=(1, 2))
    fluctuation = np.mean(x.var(axis=1))
    # |kappa(t)| averaged: a finite structured-chaotic network may switch between +-kappa
    return np.abs(kappa).mean(axis=1), x.mean(axis=(1, 2)), delta0, delta_inf, fluctuation


def test_homogeneous_chaos_matches_simulation():
    structure, g, N = 0.5, 2.0, 2000
    model = DMF(rank_one_structure(structure), g)
    assert not any(s.stable for s in stationary_solutions(model))
    (theory,) = chaotic_solutions(model)
    assert theory.branch == "homogeneous" and abs(theory.delta_inf) < 1e-10  # odd phi, kappa = 0
    kappa, mu, delta0, delta_inf, fluctuation = _chaos_statistics(sample_network(structure, g, N, seed=3), lag=60)
    assert fluctuation > 0.5  # chaotic
    tol = 4 * math.sqrt(2) * theory.delta0 / math.sqrt(N)  # sd of (x - mu)^2 for Gaussian x: sqrt(2) Delta_0
    np.testing.assert_allclose(delta0, theory.delta0, atol=tol)
    # Delta(lag = 20 tau) -> Delta_inf = 0; its time average over 30 tau fluctuates ~0.2 (windows measured)
    np.testing.assert_allclose(delta_inf, 0.0, atol=tol + 0.4)
    np.testing.assert_allclose(kappa, 0.0, atol=4 * math.sqrt(theory.delta0 + 1) / math.sqrt(N) + 0.05)


def test_structured_chaos_matches_simulation():
    # Structured chaos: structure 4, g = 3, between gB = 2.74 and the kappa -> 0 line at 3.61.
    structure, g, N = 4.0, 3.0, 2000
    model = DMF(rank_one_structure(structure), g)
    assert predicted_dmf_regime(model) == "structured chaotic"
    theory = max(chaotic_solutions(model), key=lambda c: c.kappa[0])
    assert theory.branch == "structured" and theory.delta_inf < theory.delta0
    kappa, mu, delta0, delta_inf, fluctuation = _chaos_statistics(sample_network(structure, g, N, seed=11), lag=60)
    assert fluctuation > 0.1
    # Measured on two networks at N = 2000 (the quenched random part differs from network to network):
    # |kappa| 2-14 % above the theory, Delta_0 within 2 %, Delta(12 tau) 2-10 % above Delta_inf (the
    # autocovariance decays to Delta_inf from above, so a finite lag overestimates it). The tolerances
    # are these spreads plus 4 sd / sqrt(N) (~ 4 sqrt(2) / sqrt(2000) = 13 % of the fluctuating part).
    np.testing.assert_allclose(kappa, theory.kappa[0], rtol=0.2)
    np.testing.assert_allclose(delta0, theory.delta0, rtol=0.05)
    np.testing.assert_allclose(delta_inf, theory.delta_inf, rtol=0.15)


def test_bulk_line_brackets_the_simulated_onset_of_chaos():
    from connector_sim.dmf import critical_lines

    lines = critical_lines([2.0], tol=1e-2, g_max=3.0, chaotic_line=False)
    gB = float(lines.g_bulk[0])
    assert 1.6 < gB < 1.8
    below = stationary_solutions(DMF(rank_one_structure(2.0), gB - 0.2))
    assert any(s.stable and s.branch == "structured" for s in below)
    for g, expected in ((gB - 0.2, "structured"), (gB + 0.15, "structured chaotic")):
        regime, _ = simulated_dmf_regime(sample_network(2.0, g, 2000, seed=5), n_initial=2, n_discard=150, n_window=60)
        assert regime == expected, (g, regime)


def test_four_regions_predicted_and_simulated():
    points = {"decaying": (0.5, 0.5), "structured": (2.5, 0.8), "homogeneous chaotic": (0.5, 2.0)}
    for expected, (structure, g) in points.items():
        assert predicted_dmf_regime(DMF(rank_one_structure(structure), g)) == expected
        # N = 1000: the points are far from every boundary
        network = sample_network(structure, g, 1000, seed=7)
        regime, _ = simulated_dmf_regime(network, n_initial=2, n_discard=150, n_window=60)
        assert regime == expected, (structure, g, regime)
    # structured chaotic: by simulation in test_bulk_line_brackets_the_simulated_onset_of_chaos (gB + 0.15)
    # and test_structured_chaos_matches_simulation


def test_outlier_of_a_heterogeneous_state_matches_the_eigenvalues():
    # kappa = 0 state made heterogeneous by an orthogonal input: outlier sigma_mn <phi'>, bulk g sqrt(<phi'^2>).
    distribution = rank_one_structure(1.5, kind="covariance", variance=2.0, input_overlaps=(0.0, 0.0))
    model = DMF(distribution, 0.5, inputs=[2.0])
    (state,) = [s for s in stationary_solutions(model) if s.branch == "homogeneous"]
    outliers, radius, stable = stability(model, state.kappa)
    from connector_sim import LowRankRNN, LowRankPlusRandomRNN
    from connector_sim.sparse_dynamics import _whitened_gaussian

    N = 1000
    rows = _whitened_gaussian(N, 3, np.random.default_rng(0)) @ np.linalg.cholesky(np.asarray(distribution.cov)).T
    network = LowRankPlusRandomRNN(LowRankRNN(rows[:, :1], rows[:, 1:2], rows[:, 2:]), 0.5, seed=1)
    result = simulate_low_rank_plus_random(network, 600, dt=0.2, inputs=np.full((600, 1), 2.0), x0=np.zeros(N))
    x = result.final_state[0]
    values = np.linalg.eigvals(network.connectivity() * (1 - np.tanh(x) ** 2)[None, :])
    values = values[np.argsort(-values.real)]
    # outlier: sample error of n^T S m / N ~ sd(n m phi') / sqrt(N) = 0.05; bulk edge: ~N^(-1/2) as well
    assert abs(values[0].real - outliers[0].real) < 0.06
    assert abs(np.quantile(np.abs(values[1:]), 0.995) - radius) < 0.05
    assert stable


def test_outlier_of_a_structured_state_matches_the_eigenvalues():
    # Structured state (mu != 0) with a random part: the outlier of J phi'(x*) needs the (R + 1)-th mode
    # (the correlation of the eigenvector's random input with the state's own): E[n m phi'] alone gives
    # 0.776, the (R + 1) x (R + 1) matrix 0.711; the N = 1000 network's Jacobian has 0.712.
    from connector_sim.dmf import stability_matrix

    structure, g, N = 1.2, 0.5, 1000
    model = DMF(rank_one_structure(structure), g)
    state = [s for s in stationary_solutions(model) if s.branch == "structured"][-1]
    assert state.stable and state.outliers.size == 1
    dense_only = stability_matrix(model, state.kappa)[0, 0]
    network = sample_network(structure, g, N, random_state=3, seed=4)
    result = simulate_low_rank_plus_random(network, 800, dt=0.2, kappa0=state.kappa)
    x = result.final_state[0]
    values = np.linalg.eigvals(network.connectivity() * (1 - np.tanh(x) ** 2)[None, :])
    values = values[np.argsort(-values.real)]
    # finite-N error of the outlier: sd(n m phi') / sqrt(N) ~ 0.03 (measured 0.001-0.006 on three networks)
    assert abs(values[0].real - state.outliers[0].real) < 0.03
    assert abs(dense_only - values[0].real) > 0.05  # the correction is seen
    assert abs(np.quantile(np.abs(values[1:]), 0.99) - state.bulk_radius) < 0.03


def test_rank_two_with_independent_structures_reduces_to_rank_one():
    # rows [m1, m2, n1, n2]: Cov(m1, n1) = 2, Cov(m2, n2) = 0.5 (below 1), independent otherwise
    cov = np.diag([1.0, 1.0, 5.0, 5.0])
    cov[0, 2] = cov[2, 0] = 2.0
    cov[1, 3] = cov[3, 1] = 0.5
    model = DMF(Gaussian(np.zeros(4), cov, rank=2), 0.5)
    rank_one = [s for s in stationary_solutions(DMF(rank_one_structure(2.0, kind="covariance"), 0.5))]
    kappa_one = max(s.kappa[0] for s in rank_one)
    solutions = stationary_solutions(model)
    stable = [s for s in solutions if s.stable]
    assert stable and all(abs(abs(s.kappa[0]) - kappa_one) < 1e-7 and abs(s.kappa[1]) < 1e-7 for s in stable)
    assert any(not s.stable and np.allclose(s.kappa, 0.0) for s in solutions)


# --- bad input --------------------------------------------------------------------------------------


def test_bad_input():
    good = rank_one_structure(2.0)
    with pytest.raises(TypeError, match="Gaussian"):
        DMF("not a distribution", 1.0)
    with pytest.raises(ValueError, match="'g'"):
        DMF(good, -1.0)
    with pytest.raises(ValueError, match="rule"):
        DMF(good, 1.0, rule="simpson")
    with pytest.raises(ValueError, match="inputs"):
        DMF(Gaussian([0, 0, 0], np.eye(3), rank=1, n_inputs=1), 1.0, inputs=[1.0, 2.0])
    with pytest.raises(ValueError, match="variance"):
        rank_one_structure(2.0, kind="covariance", variance=0.0)
    with pytest.raises(ValueError, match="positive"):
        rank_one_structure(0.5, kind="covariance", input_overlaps=(2.0, 0.0))
    with pytest.raises(ValueError, match="kind"):
        rank_one_structure(2.0, kind="median")
    with pytest.raises(ValueError, match="quantity"):
        gaussian_average("tanh", "phi3", 0.0, 1.0)
    with pytest.raises(ValueError, match="power"):
        gaussian_average("tanh", "phi", 0.0, 1.0, power=3)
    with pytest.raises(ValueError, match="'s'"):
        gaussian_average("tanh", "phi", 0.0, -1.0)
    with pytest.raises(ValueError, match="activations"):
        gaussian_average("elu", "phi", 0.0, 1.0)
    with pytest.raises(ValueError, match="quantity"):
        double_gaussian_average("tanh", "dphi", 0.0, 1.0, 1.0)


# --- the complete regime map (spectra) --------------------------------------------------------------


def test_regime_map_keeps_the_spectral_answer_and_says_who_decided():
    from connector_sim import spectra

    # lambda_1 = C sigma_mn, R ~ sqrt(C) sigma^2: decaying, structured, chaotic by the spectrum; both above 1
    for variance, covariance in [(0.01, 0.0), (0.1, 0.5), (1.0, 0.005), (0.3, 0.02)]:
        options = {"n_connections": 100, "n_neurons": 1000}
        old = spectra.predicted_regime(variance, covariance, **options)
        new = spectra.predicted_regime_map(variance, covariance, **options)
        assert new.spectral_regime == old  # predicted_regime is unchanged, and reported alongside
        both_above = new.outlier > 1 and new.bulk_radius > 1
        assert new.method == ("dmf" if both_above else "spectrum")
        if not both_above:
            assert new.regime == {"chaotic": "homogeneous chaotic"}.get(old, old)
        assert new.regime in spectra.REGIME_MAP


def test_regime_boundaries_separate_the_dmf_regions():
    from connector_sim import spectra

    b = spectra.regime_boundaries(3.0, tol=1e-2, g_max=3.5)
    assert (b.outlier_line, b.bulk_line) == (1.0, 1.0)
    assert 1.0 < b.g_bulk < b.g_chaotic_structure < 3.0 and np.isnan(b.g_outlier)
    expected = [(0.5, "structured", "spectrum"), (b.g_bulk - 0.05, "structured", "dmf"),
                (b.g_bulk + 0.05, "structured chaotic", "dmf"),
                (b.g_chaotic_structure + 0.05, "homogeneous chaotic", "dmf")]
    for radius, regime, method in expected:
        prediction = spectra.regime_from_spectrum(3.0, radius)
        assert (prediction.regime, prediction.method) == (regime, method), radius
    assert spectra.regime_from_spectrum(0.5, 2.0).regime == "homogeneous chaotic"
    with pytest.raises(ValueError, match="finite"):
        spectra.regime_from_spectrum(float("nan"), 1.0)


# --- command line -----------------------------------------------------------------------------------


def test_cli_dmf_writes_the_phase_diagram(tmp_path, capsys):
    import json

    from connector_sim.cli import main

    out = tmp_path / "report"
    assert main(["dmf", "--out", str(out), "--gs", "0.5,2", "--structures", "0.5", "--n-neurons", "100", "-q"]) == 0
    payload = json.loads((out / "dmf_phase_diagram.json").read_text())
    assert payload["predicted"] == [["decaying", "homogeneous chaotic"]]
    assert len(payload["simulated"][0]) == 2 and (out / "dmf_phase_diagram.png").stat().st_size > 0
    assert main(["dmf", "--out", str(tmp_path / "bad"), "--gs", "a,b", "-q"]) == 2
    assert not (tmp_path / "bad" / "dmf_phase_diagram.json").exists()
    assert "--gs takes numbers" in capsys.readouterr().err
