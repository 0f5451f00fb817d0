"""Dynamics of sparse low-rank networks: the dense-plus-random comparison model, regimes from theory and
simulation, input-driven dynamics and the evidence-accumulation task (Herbert & Ostojic; SPEC section 5)."""

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from connector_sim import LowRankRNN, rank_one_gaussian, simulate, sparsify, spectra
from connector_sim import sparse_dynamics as sd
from connector_sim.mean_field import gaussian_averages
from connector_sim.noise import private_noise
from connector_sim.sparse import LowRankPlusRandomRNN

# --- the comparison model J = m n^T / N + g chi ---------------------------------------------------


def test_without_random_part_it_is_the_dense_simulation():
    dense = rank_one_gaussian(300, 2.0, 1.5, random_state=0, n_inputs=1, input_overlap=0.5)
    network = LowRankPlusRandomRNN(dense, 0.0, seed=3)
    options = {"kappa0": [[1.0], [-0.3]], "inputs": np.sin(np.arange(25) / 4)[:, None], "noise_std": 0.2, "seed": 7,
                   "record_units": [0, 5, 299]}
    result = sd.simulate_low_rank_plus_random(network, **options)
    reference = simulate(dense, path="full", backend="numpy", **options)
    # Same equations and noise keys; the sums run in a different order (float64: ~1e-16 per step).
    np.testing.assert_allclose(result.kappa, reference.kappa, atol=1e-12)
    np.testing.assert_allclose(result.potentials, reference.potentials, atol=1e-12)
    np.testing.assert_allclose(result.v, reference.v)
    assert result.kappa.shape == (2, 26, 1) and result.path == "full" and result.backend == "numpy"


def test_one_step_is_the_euler_step_of_the_full_matrix():
    dense = rank_one_gaussian(200, 1.0, 0.5, random_state=1, n_inputs=1, input_overlap=0.3)
    network = LowRankPlusRandomRNN(dense, 0.8, seed=2)
    x0 = np.random.default_rng(0).standard_normal(200)
    result = sd.simulate_low_rank_plus_random(network, inputs=[[0.7]], x0=x0, dt=0.1, noise_std=0.3, seed=5,
                                              record_units="all")
    J = network.connectivity()
    np.testing.assert_allclose(J, dense.connectivity() + network.random_part, rtol=1e-15)
    alpha = 0.1
    xi = private_noise(5, 1, 200)[0, 0]
    expected = x0 + alpha * (-x0 + J @ np.tanh(x0) + dense.I[:, 0] * 0.7) + math.sqrt(alpha) * 0.3 * xi
    np.testing.assert_allclose(result.potentials[0, 1], expected, atol=1e-13)
    np.testing.assert_allclose(result.final_state[0], expected, atol=1e-13)
    # chi ~ N(0, 1/N): the entries of g chi have variance g^2 / N (40000 entries: 4 sd of a variance ~ 3 %).
    assert abs(network.random_part.var() * 200 / 0.64 - 1) < 4 * math.sqrt(2 / 40000)


def test_spectrum_is_the_low_rank_outlier_plus_a_disk_of_radius_g():
    N, g, covariance = 400, 0.6, 1.5
    network = LowRankPlusRandomRNN(rank_one_gaussian(N, 2.0, covariance, random_state=3), g, seed=4)
    values = spectra.eigenvalues(network)
    theory = spectra.network_theory(network)
    assert theory.bulk_radius == g
    outlier = values[np.argmax(values.real)]
    # The outlier of m n^T / N + g chi stays at n^T m / N (|lambda| > g, Tao 2013) up to O(g / sqrt(N)) noise;
    # n^T m / N itself has sd sqrt(sigma^4 + sigma_mn^2) / sqrt(N) around sigma_mn.
    assert abs(outlier - theory.outliers[0]) < 4 * g / math.sqrt(N)
    assert abs(theory.outliers[0].real - covariance) < 4 * math.hypot(2.0, covariance) / math.sqrt(N)
    # Circular law: the 99 % quantile of the moduli sits a few % inside g (as in tests/test_sparse.py).
    assert abs(spectra.measured_bulk_radius(values, n_outliers=1) / g - 1) < 0.06 + 3 / math.sqrt(N)


def test_a_random_part_too_large_fails_before_allocating():
    dense = rank_one_gaussian(200_000, 1.0, 0.5, random_state=0, dtype=np.float32)
    with pytest.raises(ValueError, match=r"random part g chi\): a dense 200000 x 200000 matrix needs 160 GB"
                                         r".*Use a smaller network.*sparsify"):
        LowRankPlusRandomRNN(dense, 1.0)


@pytest.mark.parametrize("call, error, message", [
    (lambda: LowRankPlusRandomRNN(np.zeros((5, 1)), 1.0), TypeError, "network must be a LowRankRNN"),
    (lambda: LowRankPlusRandomRNN(rank_one_gaussian(5, 1.0, 0.5), -1.0), ValueError, r"'g'.*>= 0.*Got -1.0"),
    (lambda: sd.simulate_low_rank_plus_random(rank_one_gaussian(5, 1.0, 0.5), 3), TypeError,
     r"must be one of \(LowRankPlusRandomRNN\). Got LowRankRNN"),
    (lambda: sd.simulate_low_rank_plus_random(LowRankPlusRandomRNN(rank_one_gaussian(5, 1.0, 0.5), 1.0)),
     ValueError, "Give n_steps"),
    (lambda: sd.exact_rank_one(100, 1.0, 1.0), ValueError, r"\|sigma_mn\| < sigma\^2 = 1.0.*Got 1.0"),
    (lambda: sd.exact_rank_one(100, 1.0, 0.5, n_inputs=1, input_overlap=1.0), ValueError,
     "not positive definite.*sigma_nI = 1.0"),
    (lambda: sd.classify_activity(rank_one_gaussian(10, 1.0, 0.5), n_window=1), ValueError,
     r"'n_window'.*\[2, inf\]. Got 1"),
    (lambda: sd.simulated_regime_diagram([0.01], [0.02, 0.05], n_neurons=100, n_connections=10), ValueError,
     r"No grid point.*has \|sigma_mn\| < sigma\^2"),
    (lambda: sd.participation_ratio(np.zeros((1, 5))), ValueError, r"T >= 2. Got shape \(1, 5\)"),
    (lambda: sd.input_driven_sweep(rank_one_gaussian(10, 1.0, 0.0), n_connections=[5]), ValueError,
     "one input vector I.*n_inputs = 0"),
    (lambda: sd.input_driven_sweep(rank_one_gaussian(10, 1.0, 0.0, n_inputs=1), n_connections=[5], g=[0.1]),
     ValueError, r"exactly one of n_connections, sparsities and g.*\['g', 'n_connections'\]"),
    (lambda: sd.evidence_accumulation_network(100, n_connections=10, variance=0.05, covariance=0.04,
                                              input_overlap=0.2), ValueError,
     r"sigma_mn \+ sigma_nI\^2 <= sigma\^2.*sigma_nI = 0.2"),
    (lambda: sd.psychometric_curve(rank_one_gaussian(10, 1.0, 0.5), [0.0]), TypeError,
     "must be an EvidenceTask.*Got LowRankRNN"),
    (lambda: sd.psychometric_curves(100, [10.5], [0.0]), ValueError, "non-empty 1-D list of ints"),
])
def test_bad_arguments_say_what_was_expected(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_exact_rank_one_has_the_population_moments():
    network = sd.exact_rank_one(500, 0.3, 0.1, random_state=2, n_inputs=1, input_overlap=0.2)
    rows = np.hstack([network.m, network.n, network.I])
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-15)
    np.testing.assert_allclose(rows.T @ rows / 500, [[0.3, 0.1, 0.0], [0.1, 0.3, 0.2], [0.0, 0.2, 1.0]],
                               atol=1e-14)


# --- regimes of the autonomous dynamics -----------------------------------------------------------


def test_boundary_distance_on_hand_checked_points():
    e = math.e
    assert sd.predicted_boundary_distance(1 / e, 1 / e**2) == pytest.approx(1.0)   # decaying: ln lambda = -1
    assert sd.predicted_boundary_distance(e**2, 1 / e) == pytest.approx(2.0)       # structured: to lambda = 1
    assert sd.predicted_boundary_distance(e**2, e) == pytest.approx(1 / math.sqrt(2))  # to lambda = R
    assert sd.predicted_boundary_distance(0.5, 0.5) == pytest.approx(math.log(2))
    assert sd.predicted_boundary_distance(e, e) == pytest.approx(0.0, abs=1e-12)
    assert sd.predicted_boundary_distance(-1.0, 1 / e) == pytest.approx(1.0)  # no outlier: only R matters


# C = 100 connections per row, N = 3000, P_ij = X_ij m_i n_j: outlier C sigma_mn, bulk sqrt(C (sigma^4 +
# 2 sigma_mn^2) (1 - C / N)). Corners (lambda_1, R): (0.2, 0.69) decaying, (6, 1.1) structured, (0.2, 2.9)
# chaotic, (6, 3.1) structured.
VARIANCES = [0.07, 0.14, 0.2, 0.3]
COVARIANCES = [0.002, 0.006, 0.02, 0.06]
#: Theory and simulation are compared at grid points at least this far (ln units) from a boundary.
#: It covers (i) the finite-N shift of the outlier by the mask, of order R^2 sqrt(C / N) / lambda_1
#: (second-order perturbation; ~10 % here), (ii) the classifier's resolution (0.1 in eigenvalue units)
#: and (iii) the band where the structured state already fluctuates before R reaches lambda_1
#: (measured near R / lambda_1 ~ 0.75-0.9 at N = 4000; the theory puts the boundary at R = lambda_1).
MARGIN = 0.3


@pytest.fixture(scope="module")
def diagram():
    return sd.simulated_regime_diagram(VARIANCES, COVARIANCES, n_neurons=3000, n_connections=100)


def test_corners_of_the_phase_diagram_land_in_the_predicted_regimes(diagram):
    corners = {(0, 0): "decaying", (-1, 0): "structured", (0, -1): "chaotic", (-1, -1): "structured"}
    for (i, j), regime in corners.items():
        assert diagram.predicted[i, j] == regime
        assert diagram.simulated[i, j] == regime, (i, j, diagram.results[i][j])
        assert diagram.distance[i, j] >= MARGIN


def test_theory_and_simulation_agree_away_from_the_boundaries(diagram):
    away = diagram.distance >= MARGIN
    assert away.sum() >= 10  # the comparison is not vacuous
    disagree = [(v, c, p, s) for v, c, p, s, a in zip(
        np.broadcast_to(VARIANCES, away.shape).ravel(), np.broadcast_to(np.array(COVARIANCES)[:, None],
                                                                        away.shape).ravel(),
        diagram.predicted.ravel(), diagram.simulated.ravel(), away.ravel()) if a and p != s]
    assert not disagree
    assert diagram.agreement(MARGIN) == 1.0
    # Every simulated trial of these points got the same label (no split decisions).
    for i, j in zip(*np.nonzero(away)):
        assert set(diagram.results[i][j].labels) == {diagram.simulated[i, j]}


def test_dense_plus_random_regimes_follow_outlier_and_radius():
    # The comparison model has the same regimes with the bulk radius g (Mastrogiuseppe & Ostojic 2018).
    for covariance, g, regime in ((2.0, 0.5, "structured"), (0.2, 2.0, "chaotic"), (0.3, 0.5, "decaying")):
        network = LowRankPlusRandomRNN(sd.exact_rank_one(500, 4.0, covariance, random_state=0), g, seed=1)
        result = sd.classify_activity(network, n_initial=2)
        assert result.predicted == regime and result.regime == regime, (covariance, g, result)


def test_structured_activity_sits_on_the_mean_field_fixed_point():
    # Static activity along m: x_i = m_i h_i, h_i = sum_j X_ij n_j phi(x_j), with mean kappa on the
    # outlier's nonlinear branch kappa = C <n phi(x)> (both signs: x -> -x is a symmetry).
    C, N, variance, covariance = 100, 3000, 0.07, 0.06
    result = sd.simulated_regime(variance, covariance, n_neurons=N, n_connections=C, n_initial=2)
    assert result.regime == "structured" and np.all(np.abs(result.overlap) > 0.9)
    assert result.kappa[0, 0] == -result.kappa[1, 0]
    network = sparsify(sd.exact_rank_one(N, variance, covariance, random_state=0), n_connections=C, seed=1,
                          scaling="1")
    kappa_star = sd.input_fixed_point(network, kappa0=[1.0])[0]
    # The projection on m averages the quenched h_i - kappa (variance V <= C sigma^2, as |phi| <= 1) with
    # weights m_i^2: sd sqrt(3 V / N) (E m^4 = 3 sigma^4). 4 sd.
    assert abs(abs(result.kappa[0, 0]) - kappa_star) < 4 * math.sqrt(3 * C * variance / N)


def test_plot_regime_diagram_shows_theory_and_simulation(diagram):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = sd.plot_regime_diagram(diagram, resolution=40)
    assert len(ax.collections) >= 1 + len(set(diagram.simulated.ravel()) - {""})
    assert ax.get_xlabel() == "variance sigma^2"
    plt.close(ax.figure)


# --- input-driven dynamics ------------------------------------------------------------------------


def test_participation_ratio_on_hand_checked_trajectories():
    t = np.linspace(0, 1, 50)[:, None]
    direction = np.random.default_rng(0).standard_normal(30)
    assert sd.participation_ratio(np.sin(3 * t) * direction) == pytest.approx(1.0)
    # Two orthogonal directions with uncorrelated, equal-variance time courses: PR = 2.
    e1, e2 = np.eye(30)[0], np.eye(30)[1]
    s, c = np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)
    assert sd.participation_ratio(s * e1 + c * e2) == pytest.approx(2.0, rel=1e-3)
    # Against the definition: eigenvalues of the N x N covariance.
    x = np.random.default_rng(1).standard_normal((2, 20, 8))
    for trial in range(2):
        lam = np.linalg.eigvalsh(np.cov(x[trial].T))
        expected = lam.sum() ** 2 / (lam**2).sum()
        assert sd.participation_ratio(x)[trial] == pytest.approx(expected, rel=1e-12)


N_INPUT = 2000
SIGMA2, SIGMA_NI, U = 0.02, 0.1, 1.0


@pytest.fixture(scope="module")
def sparsity_sweep():
    dense = sd.exact_rank_one(N_INPUT, SIGMA2, 0.0, random_state=0, n_inputs=1, input_overlap=SIGMA_NI)
    return dense, sd.input_driven_sweep(dense, n_connections=[N_INPUT, 200, 50, 5], amplitude=U, n_steps=200)


def test_dense_limit_kappa_is_the_mean_field_fixed_point(sparsity_sweep):
    dense, sweep = sparsity_sweep
    # C = N is the dense rank-one network m n^T (gain N); its activity stays on m kappa + I v, so
    # kappa_r is the sampled network's mean-field fixed point up to the Euler transient (exp(-20)).
    assert sweep.sparsity[0] == 0.0 and sweep.gain[0] == N_INPUT
    assert sweep.kappa_scale[0] < 1e-6 * sweep.kappa_r[0]  # the activity stays on the plane
    assert abs(sweep.kappa_r[0] / sweep.kappa_theory[0] - 1) < 1e-6
    # Population theory (paper's mean field, Stein's lemma, m independent of I and n):
    # kappa = gain sigma_nI u <phi'>(0, sqrt(sigma^2 kappa^2 + u^2)).
    gain = N_INPUT

    def residual(kappa):
        return gain * SIGMA_NI * U * gaussian_averages("tanh", 0.0, math.sqrt(SIGMA2 * kappa**2 + U**2))[1] - kappa
    population = brentq(residual, 1e-9, gain * SIGMA_NI * U)
    # The sample average gain <n phi(m kappa + I u)> over N rows differs from the expectation by
    # ~ gain sd(n phi) / sqrt(N) (the whitened rows remove only the second moments): 4 sd.
    x = dense.m[:, 0] * sweep.kappa_r[0] + dense.I[:, 0] * U
    scale = gain * np.std(dense.n[:, 0] * np.tanh(x)) / math.sqrt(N_INPUT)
    assert abs(sweep.kappa_r[0] - population) < 4 * scale


def test_dense_limit_activity_is_two_dimensional(sparsity_sweep):
    dense, sweep = sparsity_sweep
    # x(t) = m kappa(t) + I v(t): the N-dimensional PR equals the PR of the 2 x 2 latent covariance, with
    # kappa(t) from the mean-field ODE of m (N n) I (independent of the simulation).
    source = LowRankRNN(dense.m, dense.n * N_INPUT, dense.I)
    inputs = np.full((200, 1), U)
    kappa = sd_mean_field(source, inputs)
    v = np.zeros(201)
    for t in range(200):
        v[t + 1] = 0.9 * v[t] + 0.1 * U
    L = np.hstack([dense.m, dense.I])
    latents = np.stack([kappa, v], axis=1)
    latents -= latents.mean(axis=0)
    M = (L.T @ L) @ (latents.T @ latents)
    predicted = np.trace(M) ** 2 / np.trace(M @ M)
    assert sweep.participation_ratio[0] == pytest.approx(predicted, rel=1e-6)
    assert 1.0 <= sweep.participation_ratio[0] < 1.01  # close to 1: kappa(t) and v(t) rise together


def sd_mean_field(source, inputs):
    from connector_sim.mean_field import mean_field_trajectory

    return mean_field_trajectory(source, [0.0], inputs=inputs, dt=0.1)[0, :, 0]


def test_sparsity_lowers_kappa_and_adds_then_removes_dimensions(sparsity_sweep):
    _, sweep = sparsity_sweep
    # kappa_r follows the gain C: it falls with sparsity (paper Fig. 4F, lower) ...
    assert np.all(np.diff(sweep.kappa_r) < 0)
    # ... as the mean field with the quenched heterogeneity of the recurrent input predicts, to within
    # 4 times the finite-N scale of what that mean field leaves out (see InputDrivenSweep.kappa_scale).
    error = np.abs(sweep.kappa_r - sweep.kappa_theory)
    assert np.all(error <= 4 * sweep.kappa_scale + 1e-6 * np.abs(sweep.kappa_theory)), error / sweep.kappa_scale
    # The heterogeneity adds dimensions beyond the low-rank plane at every sparse level ...
    assert np.all(sweep.participation_ratio[1:] > sweep.participation_ratio_latent[1:])
    # ... and the PR rises with sparsity, then falls back towards 1 as the recurrence fades (x -> I v(t)).
    pr = sweep.participation_ratio
    assert pr[2] > pr[0] and pr[2] > pr[3] and pr[3] < 1.001


def test_random_part_adds_dimensions_and_follows_the_mean_field():
    dense = sd.exact_rank_one(1000, 1.0, 0.0, random_state=0, n_inputs=1, input_overlap=0.5)
    sweep = sd.input_driven_sweep(dense, g=[0.0, 0.5, 0.9], amplitude=1.0, n_steps=150)
    assert np.all(sweep.gain == 1.0) and sweep.kind == "g"
    # Gaussian closure of the static mean field (random variance Delta = g^2 <phi^2>), 4 finite-N scales.
    error = np.abs(sweep.kappa_r - sweep.kappa_theory)
    assert np.all(error <= 4 * sweep.kappa_scale + 1e-6 * np.abs(sweep.kappa_theory))
    # kappa_r changes by far less than the random part (paper Fig. 4C, lower) while the PR grows with g.
    assert abs(sweep.kappa_r[-1] / sweep.kappa_r[0] - 1) < 0.2
    assert np.all(np.diff(sweep.participation_ratio) > 0)


def test_plot_input_driven(sparsity_sweep):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = sd.plot_input_driven(sparsity_sweep[1])
    assert len(axes) == 2 and len(axes[0].lines) == 2 and len(axes[1].lines) == 2
    plt.close(axes[0].figure)


# --- evidence accumulation ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def curves():
    # N = 1000; C = 50 and 100 (s = 0.95 and 0.9), sigma^2 = 0.05, sigma_mn = 0.03: outliers 1.5 and 3
    # above bulks ~0.45 and ~0.6 (bistable structured regime). Threshold c_0 = 0.1.
    strengths = 0.1 + np.array([-0.4, -0.15, 0.0, 0.15, 0.4])
    return sd.psychometric_curves(1000, [50, 100], strengths, threshold=0.1, n_trials=160, n_steps=60,
                                  task_options={"variance": 0.05, "covariance": 0.03})


def test_geometric_recipe_of_the_task_network():
    task = sd.evidence_accumulation_network(1000, n_connections=50, variance=0.05, covariance=0.03,
                                            input_overlap=0.1, readout_overlap=0.12)
    m, n, I, w = task.network.m[:, 0], task.network.n[:, 0], task.network.I[:, 0], task.readout
    np.testing.assert_allclose([m @ n, n @ I, m @ w, m @ I, n @ w, m @ m, n @ n], np.array(
        [0.03, 0.1, 0.12, 0.0, 0.0, 0.05, 0.05]) * 1000, atol=1e-10)
    theory = spectra.network_theory(task.network)
    assert theory.outliers[0].real == pytest.approx(50 * 0.03)
    assert theory.outliers[0].real > max(1.0, theory.bulk_radius)


def test_psychometric_curve_is_monotone_and_crosses_half_at_the_threshold(curves):
    for curve in curves:
        p, se = curve.fraction_positive, curve.standard_error
        # Monotone up to sampling noise: each step up may not fall by more than 3 combined standard errors.
        assert np.all(np.diff(p) > -3 * np.hypot(se[1:], se[:-1])), p
        # Odd tanh, b = 0, x_0 = 0 and symmetric noise: P(+ | c) = 1 - P(+ | 2 c_0 - c), so the expected
        # curve is exactly 1/2 at c = c_0. The estimate from n trials has sd 0.5 / sqrt(n): 4 sd.
        assert curve.strengths[2] == curve.threshold
        assert abs(p[2] - 0.5) < 4 * 0.5 / math.sqrt(curve.n_trials)
        # Far from the threshold the choice is reliable: beyond 4 standard errors from 1/2 on each side.
        assert p[0] < 0.5 - 4 * 0.5 / math.sqrt(curve.n_trials) and p[-1] > 0.5 + 4 * 0.5 / math.sqrt(curve.n_trials)
        assert curve.strengths[1] <= curve.crossing() <= curve.strengths[3]
    assert [curve.n_connections for curve in curves] == [50, 100]
    assert curves[0].sparsity == pytest.approx(0.95)


def test_plot_psychometric(curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = sd.plot_psychometric(curves)
    assert len(ax.containers) == 2
    plt.close(ax.figure)
