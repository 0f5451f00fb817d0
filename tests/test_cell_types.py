"""Cell types: choosing k on mixture samples, and mixtures rebuilt from clusters."""

import warnings
import numpy as np
import pytest

from connector_sim import GaussianMixture, RowLayout, choose_k, find_cell_types, latent_velocity, mixture_from_labels
from connector_sim.synthetic import latent_grid, quadstable_mixture

N_SAMPLES = 2000


@pytest.fixture(scope="module")
def quadstable_rows():
    return quadstable_mixture().sample_rows(N_SAMPLES, 0)


def match_components(labels, true_labels):
    """For each found cluster, the true component most of its samples come from."""
    return {k: np.bincount(true_labels[labels == k]).argmax() for k in np.unique(labels)}


@pytest.mark.parametrize("method", ["gmm", "kmeans"])
def test_four_types_are_found_in_quadstable_samples(quadstable_rows, method):
    rows, true_labels = quadstable_rows
    types = find_cell_types(rows, method=method)
    assert types.n_types == 4
    table = types.scores
    np.testing.assert_array_equal(table["k"], np.arange(1, 9))
    assert np.isnan(table["silhouette"][0]) and np.all(np.isfinite(table["silhouette"][1:]))
    assert np.argmax(table["silhouette"][1:]) + 2 == 4
    assert np.all(np.diff(table["inertia"]) < 0)
    assert np.all(np.isfinite(table["log_likelihood"])) == (method == "gmm")
    # The components are 3.5 sd apart in m and 9 sd in n: clusters are the
    # types, one to one, with few (< 1%) samples misassigned.
    mapping = match_components(types.labels, true_labels)
    assert sorted(mapping.values()) == [0, 1, 2, 3]
    recovered = np.vectorize(mapping.get)(types.labels)
    assert np.mean(recovered == true_labels) > 0.99


def test_held_out_likelihood_stops_rising_at_four(quadstable_rows):
    rows, _ = quadstable_rows
    table = find_cell_types(rows, k_range=[2, 3, 4, 6]).scores
    gains = np.diff(table["log_likelihood"])
    # Each missing type costs far more than one standard error; more than
    # four types gain less than one.
    assert np.all(gains[:2] > 10 * table["log_likelihood_se"][1:3])
    assert gains[2] < table["log_likelihood_se"][2]


def warped_mixture(n_samples, seed):
    """Four equal clusters in 4-D, each a Gaussian bent into a banana and squashed by tanh along one axis."""
    rng = np.random.default_rng(seed)
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=float)
    centres = 1.5 * np.hstack([signs, signs[:, ::-1]])
    labels = rng.integers(0, 4, n_samples)
    z = rng.standard_normal((n_samples, 4))
    shape = z.copy()
    shape[:, 0] = np.tanh(1.5 * z[:, 0]) / 1.5
    shape[:, 1] = z[:, 1] + 0.75 * (z[:, 0] ** 2 - 1)
    return centres[labels] + 0.5 * shape, labels


def test_non_gaussian_clusters_are_counted_as_clusters():
    rows, true_labels = warped_mixture(2000, seed=1)
    types = find_cell_types(rows)
    assert types.criterion == "completed_log_likelihood"
    assert types.n_types == 4
    table = types.scores
    assert np.argmax(table["completed_log_likelihood"]) == 3
    # The completed log-likelihood is the plain one minus the mean assignment entropy (>= 0, 0 for k = 1).
    assert table["completed_log_likelihood"][0] == pytest.approx(table["log_likelihood"][0])
    assert np.all(table["completed_log_likelihood"] <= table["log_likelihood"] + 1e-12)
    assert np.all(table["completed_log_likelihood_se"] > 0)
    mapping = match_components(types.labels, true_labels)
    assert sorted(mapping.values()) == [0, 1, 2, 3]
    # The plain held-out log-likelihood keeps rising as extra components fit each cluster's shape,
    # which is why it is not the default.
    plain = find_cell_types(rows, criterion="log_likelihood")
    assert plain.criterion == "log_likelihood" and plain.n_types > 4
    np.testing.assert_array_equal(plain.scores["log_likelihood"], table["log_likelihood"])
    assert find_cell_types(rows, criterion="silhouette").n_types == 4
    # choose_k applies each rule to the same table.
    assert choose_k(table) == 4
    assert choose_k(table, "log_likelihood") == plain.n_types


def test_one_gaussian_is_one_type():
    rows = np.random.default_rng(2).multivariate_normal(np.zeros(4), np.eye(4) + 0.5, size=1500)
    assert find_cell_types(rows, k_range=range(1, 6)).n_types == 1
    assert find_cell_types(rows, k_range=range(1, 6), criterion="log_likelihood").n_types == 1


def test_a_subset_of_columns_is_enough(quadstable_rows):
    rows, _ = quadstable_rows
    assert find_cell_types(rows[:, :2], k_range=range(1, 7)).n_types == 4


def test_mixture_from_labels_round_trips(quadstable_rows):
    # Per-type sample estimates from ~500 rows: weight sd 0.01, mean sd
    # 0.5 / sqrt(500) = 0.022, covariance entries sd ~ 0.25 sqrt(2 / 500) = 0.016;
    # 5 sd tolerances.
    rows, true_labels = quadstable_rows
    truth = quadstable_mixture()
    fitted = mixture_from_labels(rows, true_labels, RowLayout(rank=2))
    assert isinstance(fitted, GaussianMixture) and fitted.n_components == 4
    np.testing.assert_allclose(fitted.weights, truth.weights, atol=0.05)
    np.testing.assert_allclose(fitted.means, truth.means, atol=0.11)
    np.testing.assert_allclose(fitted.covs, truth.covs, atol=0.08)
    # Found clusters give the same mixture up to the order of the components.
    types = find_cell_types(rows)
    mapping = match_components(types.labels, true_labels)
    refitted = mixture_from_labels(rows, types.labels, RowLayout(rank=2))
    order = np.argsort([mapping[k] for k in range(4)])
    np.testing.assert_allclose(refitted.means[order], fitted.means, atol=0.05)
    # Mean field and sampler accept it; its flow is the truth's up to the
    # estimation error of the n-means (0.02), scaled by w_k <tanh> <= 0.25.
    kappa = latent_grid(6, 2.4)
    np.testing.assert_allclose(latent_velocity(refitted, kappa), latent_velocity(truth, kappa), atol=0.05)
    assert refitted.sample(10, 0).n_neurons == 10


def test_singular_cluster_covariance_gets_a_ridge_and_a_warning():
    rng = np.random.default_rng(1)
    rows = np.hstack([rng.standard_normal((30, 4)), np.zeros((30, 1))])  # a zero bias column
    with pytest.warns(UserWarning, match=r"covariance of cluster 0 \(30 rows in dimension 5\) is singular.*ridge = 1e-06"):
        mixture = mixture_from_labels(rows, np.zeros(30, int), RowLayout(rank=2, bias=True))
    assert mixture.covs[0, 4, 4] == pytest.approx(1e-6)
    # Two one-row clusters: each one warns, naming itself.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixture_from_labels(rows[:2], np.array([7, 8]), RowLayout(rank=2, bias=True))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "cluster 7 (1 rows in dimension 5) is singular" in messages[0]
    assert "cluster 8 (1 rows in dimension 5) is singular" in messages[1]


def test_bad_inputs_say_what_was_expected(quadstable_rows):
    rows, _ = quadstable_rows
    with pytest.raises(ValueError, match=r"k_range asks for up to 9 clusters, more than the 8 training samples of each fold"):
        find_cell_types(rows[:10], k_range=[2, 9], n_folds=5)
    with pytest.raises(ValueError, match=r"asks for up to 12 clusters, more than the 10 samples"):
        find_cell_types(rows[:10], k_range=[12], method="kmeans", n_folds=5)
    bad = rows[:100].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"samples must contain only finite values. Got nan at index \(3, 1\)"):
        find_cell_types(bad)
    with pytest.raises(ValueError, match=r"at least 2 samples per fold: 9 samples in n_folds = 5 folds give 1"):
        find_cell_types(rows[:9], k_range=[1])
    with pytest.raises(ValueError, match=r"samples must be a 2-D array of shape \(n_samples, n_features\)"):
        find_cell_types(rows[:, 0])
    with pytest.raises(ValueError, match=r"'method' parameter of find_cell_types must be one of \['gmm', 'kmeans'\]"):
        find_cell_types(rows, method="dbscan")
    with pytest.raises(ValueError, match=r"'criterion' parameter of find_cell_types must be one of "
                                         r"\['completed_log_likelihood', 'log_likelihood', 'silhouette'\]. Got 'bic'"):
        find_cell_types(rows, criterion="bic")
    with pytest.raises(ValueError, match=r"criterion='log_likelihood' needs the held-out likelihoods of Gaussian "
                                         r"mixtures: use method='gmm'"):
        find_cell_types(rows, method="kmeans", criterion="log_likelihood")
    kmeans_table = find_cell_types(rows[:200], k_range=[1, 2], method="kmeans").scores
    with pytest.raises(ValueError, match=r"The table has no log_likelihood scores \(k-means fits have none\)"):
        choose_k(kmeans_table, "log_likelihood")
    with pytest.raises(ValueError, match=r"'criterion' parameter of choose_k must be one of"):
        choose_k(kmeans_table, "aic")
    with pytest.raises(ValueError, match=r"samples must have layout.dim = 5 columns"):
        mixture_from_labels(rows, np.zeros(len(rows), int), RowLayout(rank=2, bias=True))
    with pytest.raises(ValueError, match=r"labels must be one integer cluster per sample"):
        mixture_from_labels(rows, np.zeros(len(rows)), RowLayout(rank=2))
