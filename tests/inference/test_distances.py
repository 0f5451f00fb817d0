"""Dissimilarity of connectivity distributions (theory section 4) and the Valente et al. baseline."""

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

pytest.importorskip("torch")
pytest.importorskip("geomloss")

from connector_sim import Gaussian, GaussianMixture, LowRankRNN
from connector_sim.inference.distances import (
    SinkhornConvergenceWarning,
    conditional_mean_of,
    dissimilarity,
    effective_connectivity_dissimilarity,
    paired_effective_connectivity_dissimilarity,
    sinkhorn_divergence,
)
from connector_sim.synthetic import gaussian_network_distribution, quadstable_mixture

NAMES = ("bistable", "limit_cycle", "ring")


# --------------------------------------------------------------------------- the public names


def test_package_attributes_are_the_functions_not_submodules():
    import importlib
    import inspect
    import pkgutil

    from connector_sim import inference

    # Import every submodule first: importing a submodule binds its name on the package, which would
    # shadow a lazily exported function of the same name.
    for module in pkgutil.iter_modules(inference.__path__):
        importlib.import_module(f"connector_sim.inference.{module.name}")
    assert inference.dissimilarity is dissimilarity
    assert inspect.isfunction(inference.dissimilarity)
    assert inference.effective_connectivity_dissimilarity is effective_connectivity_dissimilarity
    assert inference.paired_effective_connectivity_dissimilarity is paired_effective_connectivity_dissimilarity
    assert inference.sinkhorn_divergence is sinkhorn_divergence
    assert inspect.isfunction(inference.sinkhorn_divergence)
    from connector_sim.inference import dissimilarity as imported

    assert imported is dissimilarity
    for name in inference.__all__:
        assert not inspect.ismodule(getattr(inference, name)), name


# --------------------------------------------------------------------------- Sinkhorn divergence


def test_sinkhorn_of_identical_and_degenerate_clouds():
    rng = np.random.default_rng(0)
    cloud = rng.standard_normal((300, 3))
    # The debiased divergence of a cloud with itself is 0 (returned >= 0).
    assert sinkhorn_divergence(cloud, cloud) == pytest.approx(0.0, abs=1e-8)
    point = np.zeros((100, 3))
    assert sinkhorn_divergence(point, point) == 0.0
    # Two single points at distance d: cost |x - y|^2 / 2 exactly.
    assert sinkhorn_divergence(point, point + 1.0) == pytest.approx(1.5, rel=1e-6)
    # A point against a cloud: finite and positive.
    assert 0 < sinkhorn_divergence(point, cloud) < np.inf


def test_sinkhorn_of_a_translated_cloud_is_half_the_squared_shift():
    # Translation is the optimal map; the debiased entropic cost keeps
    # S(x, x + s) = |s|^2 / 2 (measured to 1e-15 at s = 0.5, 1, 2).
    x = np.random.default_rng(1).standard_normal((400, 2))
    for shift in (0.5, 1.0, 2.0):
        assert sinkhorn_divergence(x, x + [shift, 0.0]) == pytest.approx(shift**2 / 2, rel=1e-6)


def test_sinkhorn_input_errors():
    with pytest.raises(ValueError, match="same d"):
        sinkhorn_divergence(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite"):
        sinkhorn_divergence(np.full((3, 2), np.nan), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"'scaling' parameter of sinkhorn_divergence must be in \(0, 0.99\]"):
        sinkhorn_divergence(np.zeros((3, 2)), np.zeros((3, 2)), scaling=1.0)


def reference_ot(x, y, eps):
    """OT_eps(x, y) of uniform clouds, cost |x - y|^2 / 2: BFGS on the log-domain semi-dual (NumPy/SciPy).

    Returns the dual value (a lower bound of OT_eps) and an upper bound of its error: the column-marginal
    violation |r|_1 times (osc(g) + osc(cost)) / 2 (the semi-dual is concave, its gradient r sums to 0,
    and the optimal potential's oscillation is at most the cost's).
    """
    cost = 0.5 * ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    log_a, log_b = np.full(len(x), -math.log(len(x))), np.full(len(y), -math.log(len(y)))

    def negative_semi_dual(g):
        f = -eps * logsumexp(log_b[None] + (g[None] - cost) / eps, axis=1)
        plan = np.exp(log_a[:, None] + log_b[None] + (f[:, None] + g[None] - cost) / eps)
        return -(np.exp(log_a) @ f + np.exp(log_b) @ g), plan.sum(0) - np.exp(log_b)

    result = minimize(negative_semi_dual, np.zeros(len(y)), jac=True, method="BFGS",
                      options={"gtol": 1e-14, "maxiter": 10_000})
    value, gradient = negative_semi_dual(result.x)
    oscillation = np.ptp(result.x) + np.ptp(cost)
    return -value, np.abs(gradient).sum() * oscillation / 2


def reference_divergence(x, y, blur):
    """S_eps = OT(x, y) - OT(x, x) / 2 - OT(y, y) / 2 and the bound of its error."""
    (xy, exy), (xx, exx), (yy, eyy) = (reference_ot(u, v, blur**2) for u, v in ((x, y), (x, x), (y, y)))
    return xy - xx / 2 - yy / 2, exy + exx / 2 + eyy / 2


def two_clouds(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2)), np.c_[rng.standard_normal(n) * 0.5 + 1.0, rng.standard_normal(n) * 1.5]


@pytest.mark.parametrize("n, blur", [(60, 0.1), (100, 0.2), (150, 0.5), (80, 0.05)])
def test_sinkhorn_default_agrees_with_a_converged_reference(n, blur):
    x, y = two_clouds(n, n)
    reference, bound = reference_divergence(x, y, blur)
    # The reference's own error bound (BFGS stops at a marginal violation of ~1e-8) is well below the 1e-5
    # tolerance: measured 3e-8 .. 1.5e-6 relative, a bound (the values agree with the default to 1e-9).
    assert bound < 2.5e-6 * reference
    value = sinkhorn_divergence(x, y, blur=blur)
    assert abs(value - reference) <= 1e-5 * reference + bound
    # A tighter tolerance gets closer (measured 1e-9 .. 1e-14 at tol=1e-9).
    tight = sinkhorn_divergence(x, y, blur=blur, tol=1e-9)
    assert abs(tight - reference) <= 1e-8 * reference + bound


def test_geomloss_scaling_is_measurably_off_where_the_default_is_not():
    # GeomLoss stops after its epsilon annealing: measured 0.77% off at scaling 0.9 on these 60 points, blur 0.1.
    x, y = two_clouds(60, 60)
    reference, bound = reference_divergence(x, y, 0.1)
    geomloss = sinkhorn_divergence(x, y, blur=0.1, method="geomloss", scaling=0.9)
    assert abs(geomloss - reference) > 1e-3 * reference
    assert abs(sinkhorn_divergence(x, y, blur=0.1) - reference) <= 1e-5 * reference + bound


def test_sinkhorn_tolerance_errors_and_non_convergence():
    x, y = two_clouds(40, 0)
    for tol in (0.0, -1e-5, 0.5):
        with pytest.raises(ValueError, match="'tol' parameter of sinkhorn_divergence"):
            sinkhorn_divergence(x, y, tol=tol)
    with pytest.raises(ValueError, match="'max_iter' parameter of sinkhorn_divergence"):
        sinkhorn_divergence(x, y, max_iter=0)
    with pytest.raises(ValueError, match="'method' parameter of sinkhorn_divergence"):
        sinkhorn_divergence(x, y, method="lbfgs")
    with pytest.raises(ValueError, match="'tol' parameter of dissimilarity"):
        dissimilarity(gaussian_network_distribution("ring"), gaussian_network_distribution("ring"), tol=1.0)
    # One iteration of the final solve cannot reach 1e-12 at blur 0.05: the best value comes with a warning.
    with pytest.warns(SinkhornConvergenceWarning, match="did not reach tol=1e-12 within max_iter=1"):
        value = sinkhorn_divergence(x, y, tol=1e-12, max_iter=1)
    assert value > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sinkhorn_divergence(x, y)


# --------------------------------------------------------------------------- conditional means


def test_gaussian_and_mixture_conditional_means():
    ring = gaussian_network_distribution("ring")
    m = np.random.default_rng(0).standard_normal((10, 2))
    mIb = np.hstack([m, np.zeros((10, 1))])
    # E[n | m] = A m with A = Cov(n, m) and Cov(m) = I.
    np.testing.assert_allclose(conditional_mean_of(ring, mIb), 1.6 * m, atol=1e-12)
    # One-component mixture = the Gaussian.
    mixture = GaussianMixture([1.0], ring.mean[None], ring.cov[None], rank=2)
    np.testing.assert_allclose(conditional_mean_of(mixture, mIb), 1.6 * m, atol=1e-12)
    # Quadstable mixture: posterior-weighted n-means (checked against a sample estimate).
    quad = quadstable_mixture()
    rows, _ = quad.sample_rows(400_000, random_state=1)
    near = np.linalg.norm(rows[:, :2] - [0.87, 0.87], axis=1) < 0.1
    estimate = rows[near, 2:].mean(axis=0)
    predicted = conditional_mean_of(quad, np.array([[0.87, 0.87, 0.0]]))[0]
    # Monte Carlo sd of the local mean ~ 0.5 / sqrt(#near) ~ 0.01, plus the window's curvature.
    np.testing.assert_allclose(predicted, estimate, atol=0.05)


def test_other_sources_are_rejected_with_a_hint():
    network = gaussian_network_distribution("ring").sample(50, 0)
    with pytest.raises(TypeError, match="fit a Connector to it"):
        dissimilarity(network, gaussian_network_distribution("ring"))


# --------------------------------------------------------------------------- D(p, q)


@pytest.fixture(scope="module")
def distributions():
    return {name: gaussian_network_distribution(name) for name in NAMES} | {"quadstable": quadstable_mixture()}


def test_dissimilarity_is_near_zero_for_a_distribution_against_itself(distributions):
    # Against itself the conditional-mean term is exactly 0 and the Sinkhorn
    # term is the sampling noise of 500 points (measured 0.025-0.038).
    for name, p in distributions.items():
        total, terms = dissimilarity(p, p, n_samples=500, return_terms=True)
        assert terms["conditional_mean"] == 0.0
        assert total < 0.08, name
    # Less noise with more samples (4x the points).
    ring = distributions["ring"]
    assert dissimilarity(ring, ring, n_samples=1000) < dissimilarity(ring, ring, n_samples=250)


def test_dissimilarity_is_positive_between_different_networks(distributions):
    # Off-diagonal values measured 0.80-3.4, the diagonal at most 0.038.
    names = list(distributions)
    matrix = np.array([[dissimilarity(distributions[a], distributions[b], n_samples=500) for b in names]
                       for a in names])
    off_diagonal = matrix[~np.eye(len(names), dtype=bool)]
    assert off_diagonal.min() > 0.5
    assert np.all(np.diag(matrix) < 0.1 * off_diagonal.min())
    # Pooled samples make D symmetric up to sampling noise (measured 4% at 500 samples).
    np.testing.assert_allclose(matrix, matrix.T, rtol=0.1, atol=0.05)


def test_bias_free_and_biased_layouts_compare_with_b_zero():
    ring = gaussian_network_distribution("ring")
    cov = np.zeros((5, 5))
    cov[:4, :4] = ring.cov
    with_bias = Gaussian(np.zeros(5), cov, rank=2, bias=True)
    assert dissimilarity(ring, with_bias) < 0.05
    with pytest.raises(ValueError, match="same rank and number of inputs"):
        dissimilarity(ring, Gaussian(np.zeros(2), np.eye(2), rank=1))


def test_the_conditional_mean_term_sees_a_change_in_n_only():
    # Same (m) marginal, n-m overlap 1.6 vs 1.2: the Sinkhorn term is noise,
    # the mean term is E|0.4 m|^2 = 0.32.
    a = gaussian_network_distribution("ring")
    cov = a.cov.copy()
    cov[:2, 2:] = cov[2:, :2] = 1.2 * np.eye(2)
    b = Gaussian(np.zeros(4), cov, rank=2)
    _, terms = dissimilarity(a, b, n_samples=1000, return_terms=True)
    # |0.4 m|^2 = 0.16 chi^2_2: Monte Carlo sd over 2,000 pooled rows 0.007 (2%).
    assert terms["conditional_mean"] == pytest.approx(0.32, rel=0.1)
    assert terms["sinkhorn"] < 0.05


# --------------------------------------------------------------------------- Valente et al. baseline


def dense_effective_connectivity(network):
    basis = np.hstack([network.m, network.I])
    projected = basis @ np.linalg.pinv(basis) @ network.n
    return network.m @ projected.T / network.n_neurons


def test_paired_effective_connectivity_baseline_matches_the_dense_computation():
    rng = np.random.default_rng(0)
    a = LowRankRNN(rng.standard_normal((200, 2)), rng.standard_normal((200, 2)), rng.standard_normal((200, 1)))
    b = LowRankRNN(rng.standard_normal((200, 1)), rng.standard_normal((200, 1)))
    dense_a, dense_b = dense_effective_connectivity(a), dense_effective_connectivity(b)
    expected = 1 - np.corrcoef(dense_a.ravel(), dense_b.ravel())[0, 1]
    assert paired_effective_connectivity_dissimilarity(a, b) == pytest.approx(expected, rel=1e-10)
    assert paired_effective_connectivity_dissimilarity(a, b, metric="mse") == pytest.approx(
        np.mean((dense_a - dense_b) ** 2), rel=1e-10)
    assert paired_effective_connectivity_dissimilarity(a, a) == pytest.approx(0.0, abs=1e-12)
    # Components of n outside span(m, I) do not count.
    outside = rng.standard_normal((200, 2))
    basis = np.hstack([a.m, a.I])
    outside -= basis @ np.linalg.lstsq(basis, outside, rcond=None)[0]
    shifted = LowRankRNN(a.m, a.n + outside, a.I)
    assert paired_effective_connectivity_dissimilarity(a, shifted) == pytest.approx(0.0, abs=1e-12)


def test_effective_connectivity_baseline_errors():
    rng = np.random.default_rng(0)
    a = LowRankRNN(rng.standard_normal((20, 1)), rng.standard_normal((20, 1)))
    with pytest.raises(ValueError, match="same number of neurons. Got 20 and 30"):
        paired_effective_connectivity_dissimilarity(a, LowRankRNN(rng.standard_normal((30, 1)), rng.standard_normal((30, 1))))
    zero = LowRankRNN(np.ones((20, 1)), np.ones((20, 1)))
    with pytest.raises(ValueError, match="no variance"):
        effective_connectivity_dissimilarity(a, zero)
    assert effective_connectivity_dissimilarity(a, zero, metric="mse") > 0
    with pytest.raises(TypeError, match="a must be a LowRankRNN"):
        effective_connectivity_dissimilarity(a.m, a)


def test_unpaired_baseline_ignores_the_order_of_neurons():
    # Issue check: a network against a permuted copy of itself. The paired baseline
    # sees two unrelated matrices (~1); the unpaired one, the default, compares the
    # sorted entries, which are identical: 0 up to rounding in the projection (1e-12).
    rng = np.random.default_rng(1)
    N = 300
    m, I = rng.standard_normal((N, 2)), rng.standard_normal((N, 1))
    a = LowRankRNN(m, 1.5 * m + rng.standard_normal((N, 2)), I)
    order = rng.permutation(N)
    permuted = LowRankRNN(a.m[order], a.n[order], a.I[order])
    assert paired_effective_connectivity_dissimilarity(a, permuted) > 0.5
    assert effective_connectivity_dissimilarity(a, permuted) == pytest.approx(0.0, abs=1e-12)
    assert effective_connectivity_dissimilarity(a, permuted, metric="mse") == pytest.approx(0.0, abs=1e-20)
    # It is the official Figure-4 formula: 1 - corr(sort(J1.flat), sort(J2.flat)).
    b = LowRankRNN(rng.standard_normal((N, 1)), rng.standard_normal((N, 1)))
    dense_a, dense_b = dense_effective_connectivity(a), dense_effective_connectivity(b)
    expected = 1 - np.corrcoef(np.sort(dense_a.ravel()), np.sort(dense_b.ravel()))[0, 1]
    assert effective_connectivity_dissimilarity(a, b) == pytest.approx(expected, rel=1e-10)
    assert effective_connectivity_dissimilarity(a, b, metric="mse") == pytest.approx(
        np.mean((np.sort(dense_a.ravel()) - np.sort(dense_b.ravel())) ** 2), rel=1e-10)


def test_unpaired_baseline_across_sizes_and_subsets():
    # Two networks drawn from one Gaussian distribution: their entry distributions
    # agree up to sampling (correlation of quantiles near 1), whatever the sizes,
    # and much closer than a network whose loadings have a mean (skewed entries).
    rng = np.random.default_rng(2)

    def draw(N, mean):
        m = mean + rng.standard_normal((N, 1))
        return LowRankRNN(m, 2.0 * m + rng.standard_normal((N, 1)))

    small, large, skewed = draw(200, 0.0), draw(500, 0.0), draw(200, 1.5)
    same = effective_connectivity_dissimilarity(small, large)
    other = effective_connectivity_dissimilarity(small, skewed)
    assert same < 0.02 and other > 5 * same
    subset = effective_connectivity_dissimilarity(small, large, n_neurons=150, random_state=0)
    assert subset < 0.05
    assert subset == effective_connectivity_dissimilarity(small, large, n_neurons=150, random_state=0)
    with pytest.raises(ValueError, match="no variance"):
        effective_connectivity_dissimilarity(small, LowRankRNN(np.ones((20, 1)), np.ones((20, 1))))
    with pytest.raises(ValueError, match="metric must be"):
        effective_connectivity_dissimilarity(small, large, metric="cosine")
