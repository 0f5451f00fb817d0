"""The ridge conditional mean of n (theory section 3, step 4) and the maximum-entropy conditional."""

import numpy as np
import pytest

from connector_sim import LowRankRNN, simulate
from connector_sim.inference import conditional_mean as cm
from connector_sim.inference.conditional_mean import (
    ConditionalMean,
    conditional_covariance,
    fit_conditional_mean,
    gaussian_log_prob,
    regression_data,
    ridge_lambda,
    sample_conditional,
)
from connector_sim.mean_field import mean_field_trajectory
from connector_sim.synthetic import GAUSSIAN_OVERLAPS, gaussian_network_distribution, latent_grid


def small_network_with_inputs(N=300, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((N, 2))
    I = rng.standard_normal((N, 1))
    b = 0.2 * rng.standard_normal(N)
    n = m @ np.array([[1.5, -0.4], [0.4, 1.5]]).T + rng.standard_normal((N, 2))
    return LowRankRNN(m, n, I, b)


def test_increments_are_the_population_average_of_n_phi():
    # theory eq. 3: (kappa_{t+1} - (1 - alpha) kappa_t) / alpha = (1/N) n^T phi(m kappa_t + I v_t + b),
    # with v filtered from the raw inputs exactly as the simulator does. Float64 rounding only.
    network = small_network_with_inputs()
    rng = np.random.default_rng(1)
    u = rng.standard_normal((3, 40, 1))
    result = simulate(network, inputs=u, kappa0=rng.standard_normal((3, 2)), dt=0.2)
    points, v_points, increments = regression_data(result.kappa, 0.2, inputs=u)
    assert points.shape == (3 * 40, 2) and v_points.shape == (3 * 40, 1)
    rates = np.tanh(points @ network.m.T + v_points @ network.I.T + network.b)
    np.testing.assert_allclose(increments, rates @ network.n / network.n_neurons, rtol=0, atol=1e-10)
    # The simulator's own filtered inputs give the same points.
    _, v_from_result, _ = regression_data(result.kappa, 0.2, v=result.v)
    np.testing.assert_allclose(v_from_result, v_points, rtol=0, atol=1e-12)


def regression_problem(N=300, seed=0):
    network = small_network_with_inputs(N, seed)
    rng = np.random.default_rng(seed + 1)
    u = rng.standard_normal((4, 30, 1))
    result = simulate(network, inputs=u, kappa0=rng.standard_normal((4, 2)))
    points, v_points, increments = regression_data(result.kappa, 0.1, inputs=u)
    return network, points, v_points, increments


@pytest.mark.parametrize("N", [50, 300])
def test_dual_and_primal_forms_agree(N):
    # T = 120 time points: N = 50 is the primal's case, N = 300 the dual's; both forms must give the same W.
    network, points, v_points, increments = regression_problem(N)
    options = dict(I=network.I, b=network.b, v_points=v_points, ridge=5.0)
    dual, n_dual = fit_conditional_mean(network.m, points, increments, form="dual", return_n=True, **options)
    primal, n_primal = fit_conditional_mean(network.m, points, increments, form="primal", return_n=True, **options)
    # Different (well-conditioned, lambda = 5) solves of the same system: 1e-8 relative.
    scale = np.abs(dual.weights).max()
    np.testing.assert_allclose(primal.weights, dual.weights, rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(n_primal, n_dual, rtol=0, atol=1e-8 * np.abs(n_dual).max())
    # Nm_hat = Phi^T W is the closed form evaluated at the fitted rows.
    np.testing.assert_allclose(dual(network.m, network.I, network.b), n_dual, rtol=0, atol=1e-10 * np.abs(n_dual).max())


def test_small_ridge_fits_the_increments():
    # With lambda -> 0 the regression reproduces Delta = Phi Nm_hat (the
    # increments are exactly (1/N) Phi n for the true n, so a solution exists).
    # The residual is Delta - Phi Nm_hat = lambda W, large where the Gram
    # matrix of the smooth trajectories is nearly singular: measured 3e-6 of
    # max |increment| at lambda = 1e-6.
    network, points, v_points, increments = regression_problem(300)
    _, n_hat = fit_conditional_mean(network.m, points, increments, I=network.I, b=network.b, v_points=v_points,
                                    ridge=1e-6, return_n=True)
    rates = np.tanh(points @ network.m.T + v_points @ network.I.T + network.b)
    np.testing.assert_allclose(rates @ n_hat / 300, increments, rtol=0, atol=3e-5 * np.abs(increments).max())


def test_chunked_evaluation_matches_one_block(monkeypatch):
    network, points, v_points, increments = regression_problem(300)
    options = dict(I=network.I, b=network.b, v_points=v_points, ridge=1.0, form="dual")
    whole = fit_conditional_mean(network.m, points, increments, **options)
    expected = whole(network.m, network.I, network.b)
    monkeypatch.setattr(cm, "_BLOCK_ELEMENTS", 7 * len(points))  # 7 neurons per chunk
    chunked = fit_conditional_mean(network.m, points, increments, **options)
    # Summation order of the Gram matrix changes: rounding only.
    np.testing.assert_allclose(chunked.weights, whole.weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(chunked(network.m, network.I, network.b), expected, rtol=1e-9, atol=1e-12)
    rows = np.hstack([network.m, network.I, network.b[:, None]])
    np.testing.assert_allclose(chunked.from_rows(rows), expected, rtol=1e-9, atol=1e-12)


def test_ridge_lambda_prior_form():
    # lambda = lambda_p N^2 / alpha^2: the paper's 1e-4, N = 1000, alpha = 0.1 give 1e4.
    assert ridge_lambda(1000, 0.1, ridge_scaling="paper") == pytest.approx(1e4)
    assert ridge_lambda(1000, 0.1, ridge=3.0) == 3.0
    with pytest.raises(ValueError, match="'lambda_prior' parameter .* > 0"):
        ridge_lambda(10, 0.1, lambda_prior=0.0, ridge_scaling="paper")
    # The default linear form: lambda = c N.
    assert ridge_lambda(1000, 0.1, ridge_constant=0.3) == pytest.approx(300.0)


@pytest.fixture(scope="module")
def limit_cycle_regression():
    """Mean-field trajectories of the Gaussian limit-cycle network (exact E[n phi]), 800 time points."""
    distribution = gaussian_network_distribution("limit_cycle")
    kappa = mean_field_trajectory(distribution, latent_grid(8, 2.4), 100)
    points, _, increments = regression_data(kappa, 0.1)
    keep = np.random.default_rng(0).choice(len(points), 800, replace=False)
    m_test = np.random.default_rng(99).standard_normal((5000, 2))
    return points[keep], increments[keep], m_test, m_test @ GAUSSIAN_OVERLAPS["limit_cycle"].T


def mean_error(problem, N, **options):
    points, increments, m_test, truth = problem
    errors = []
    for seed in range(3):
        m = np.random.default_rng(seed).standard_normal((N, 2))
        errors.append(np.mean((fit_conditional_mean(m, points, increments, **options)(m_test) - truth) ** 2))
    return float(np.mean(errors))


def test_closed_form_recovers_the_conditional_mean_as_n_grows(limit_cycle_regression):
    # E[n | m] = A m for the Gaussian network. With a fixed ridge the error of
    # nbar on new m falls with N (measured 0.15, 0.073, 0.046 at N = 250,
    # 1000, 4000; E|A m|^2 = 6.4): the part left at large N comes from the
    # 800 time points, which span the features phi(m^T kappa_t) only so far.
    errors = [mean_error(limit_cycle_regression, N, ridge=100.0) for N in (250, 1000, 4000)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.5 * errors[0]
    assert errors[2] < 0.02 * 6.4


def test_prior_form_with_fixed_lambda_p_is_biased_at_large_n(limit_cycle_regression):
    # lambda = lambda_p N^2 / alpha^2 grows faster than Phi Phi^T ~ N: the
    # prior dominates as N grows (documented in the module). At the paper's
    # N = 1000 the error is measured at 0.18 (3% of E|A m|^2).
    at_paper_size = mean_error(limit_cycle_regression, 1000, ridge_scaling="paper")
    assert at_paper_size < 0.05 * 6.4
    assert mean_error(limit_cycle_regression, 4000, ridge_scaling="paper") > at_paper_size


# --------------------------------------------------------------------------- maximum entropy


def test_conditional_covariance_forms():
    cov, factor = conditional_covariance(0.5, 3)
    np.testing.assert_allclose(cov, 0.5 * np.eye(3))
    np.testing.assert_allclose(factor @ factor.T, cov, atol=1e-14)
    cov, _ = conditional_covariance([1.0, 2.0], 2)
    np.testing.assert_allclose(cov, np.diag([1.0, 2.0]))
    full = np.array([[2.0, 0.5], [0.5, 1.0]])
    cov, factor = conditional_covariance(full, 2)
    np.testing.assert_allclose(factor @ factor.T, full, atol=1e-14)
    _, factor = conditional_covariance(0.0, 2)
    np.testing.assert_array_equal(factor, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite and >= 0"):
        conditional_covariance(-1.0, 2)
    with pytest.raises(ValueError, match="symmetric"):
        conditional_covariance([[1.0, 0.5], [0.0, 1.0]], 2)
    with pytest.raises(ValueError, match="positive semi-definite"):
        conditional_covariance([[1.0, 2.0], [2.0, 1.0]], 2)
    with pytest.raises(ValueError, match=r"n_covariance must have shape \(2\)"):
        conditional_covariance([1.0, 2.0, 3.0], 2)


def test_maximum_entropy_samples_and_density():
    from scipy.stats import multivariate_normal

    full = np.array([[2.0, 0.5], [0.5, 1.0]])
    cov, factor = conditional_covariance(full, 2)
    nbar = np.tile([1.0, -1.0], (200_000, 1))
    n = sample_conditional(nbar, factor, random_state=0)
    # Monte Carlo: sd of the covariance entries ~ sqrt(2 / N) * 2 = 0.006.
    np.testing.assert_allclose(np.cov(n.T), full, atol=0.03)
    np.testing.assert_allclose(n.mean(axis=0), [1.0, -1.0], atol=0.02)
    np.testing.assert_allclose(gaussian_log_prob(n[:50], nbar[:50], cov),
                               multivariate_normal([1.0, -1.0], full).logpdf(n[:50]), rtol=1e-12)
    with pytest.raises(ValueError, match="non-singular conditional covariance"):
        gaussian_log_prob(n[:5], nbar[:5], np.zeros((2, 2)))


# --------------------------------------------------------------------------- bad input


def test_a_trajectory_needs_two_time_points():
    with pytest.raises(ValueError, match=r"at least two time points .* Got 1 time point"):
        regression_data(np.zeros((5, 1, 2)))


def test_regression_data_input_errors():
    kappa = np.zeros((3, 11, 2))
    with pytest.raises(ValueError, match=r"inputs must have shape \(3, 10, D\) or \(10, D\)"):
        regression_data(kappa, inputs=np.zeros((3, 11, 1)))
    with pytest.raises(ValueError, match="either inputs .* or v"):
        regression_data(kappa, inputs=np.zeros((10, 1)), v=np.zeros((11, 1)))
    with pytest.raises(ValueError, match=r"alpha = dt / tau must be in \(0, 1\]"):
        regression_data(kappa, 2.0)
    bad = kappa.copy()
    bad[1, 3, 0] = np.inf
    with pytest.raises(ValueError, match=r"kappa must contain only finite values.*\(1, 3, 0\)"):
        regression_data(bad)


def test_fit_input_errors():
    points, increments = np.zeros((10, 2)), np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"m must have shape \(N, 2\): the latents have rank 2"):
        fit_conditional_mean(np.zeros((5, 3)), points, increments)
    with pytest.raises(ValueError, match=r"increments must have shape \(10, 2\)"):
        fit_conditional_mean(np.zeros((5, 2)), points, increments[:9])
    with pytest.raises(ValueError, match="I has inputs .* v_points was not given"):
        fit_conditional_mean(np.zeros((5, 2)), points, increments, I=np.zeros((5, 1)))
    with pytest.raises(ValueError, match="activation must be one of"):
        fit_conditional_mean(np.zeros((5, 2)), points, increments, activation="softsign")
    m = np.zeros((5, 2))
    m[2, 1] = np.nan
    with pytest.raises(ValueError, match="m must contain only finite values"):
        fit_conditional_mean(m, points, increments)
    model = ConditionalMean(points, np.zeros((10, 0)), increments)
    with pytest.raises(ValueError, match=r"m must have shape \(N, 2\)"):
        model(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"mIb must have shape \(N, 3\)"):
        model.from_rows(np.zeros((4, 2)))


@pytest.mark.parametrize("alpha", [1e-200, 1e-320])
def test_ridge_lambda_of_a_tiny_alpha_is_a_clear_error(alpha):
    # lambda_p N^2 / alpha^2 is not representable: alpha**2 underflowed to 0 (ZeroDivisionError) before.
    with pytest.raises(ValueError, match="overflows"):
        ridge_lambda(11, alpha, ridge_scaling="paper")
    # Where it is representable, it is the formula (1e-100: lambda = 1e-4 * 121 * 1e200).
    assert ridge_lambda(11, 1e-100, ridge_scaling="paper") == pytest.approx(1e-4 * 121 * 1e200)


def test_connector_fit_with_a_tiny_alpha_is_a_clear_error():
    from connector_sim import LowRankRNN
    from connector_sim.inference import Connector

    rng = np.random.default_rng(0)
    network = LowRankRNN(rng.standard_normal((11, 1)), rng.standard_normal((11, 1)))
    with pytest.raises(ValueError, match="overflows"):
        Connector(hidden=4, n_layers=1, n_epochs=1, device="cpu", ridge_scaling="paper").fit(
            network, alpha=1e-320, n_sim_steps=2, kappa0=np.zeros((4, 1)))


def test_a_numerically_singular_ridge_regression_is_a_clear_error():
    # A normal matrix that is not positive definite in floating point (lambda_prior = 1e-200 in Connector.fit):
    # scipy's LinAlgError from inside cho_factor became a ValueError that says what to change.
    from connector_sim.inference.conditional_mean import _cholesky

    with pytest.raises(ValueError, match="numerically singular .* lambda_prior"):
        _cholesky(np.array([[1.0, 2.0], [2.0, 1.0]]), 1e-196)
    factor, lower = _cholesky(np.array([[4.0, 0.0], [0.0, 9.0]]), 1e-4)
    np.testing.assert_allclose(np.diag(factor), [2.0, 3.0])
