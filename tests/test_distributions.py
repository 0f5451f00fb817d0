import numpy as np
import pytest

from connector_sim import Empirical, Gaussian, GaussianMixture
from connector_sim.synthetic import gaussian_network_distribution, quadstable_mixture, quadstable_network


def test_gaussian_sample_moments():
    # Sample moments of 2e5 rows: standard errors ~ 1/sqrt(2e5) = 0.0022 times the scale.
    distribution = gaussian_network_distribution("bistable")
    network = distribution.sample(200_000, random_state=1)
    rows = network.rows()[:, :4]
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(np.cov(rows.T), distribution.cov, atol=0.05)


def test_singular_covariance_is_allowed():
    cov = np.zeros((3, 3))
    cov[:2, :2] = np.eye(2)
    network = Gaussian([0.0, 0.0, 0.5], cov, rank=1, bias=True).sample(100, 0)
    np.testing.assert_allclose(network.b, 0.5)


def test_mixture_labels_and_component_means():
    mixture = quadstable_mixture()
    network, labels = mixture.sample(40_000, random_state=2, return_labels=True)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    # Per type, the mean of m is within ~6 standard errors (sd 0.5, ~1e4 samples).
    for k in range(4):
        np.testing.assert_allclose(network.m[labels == k].mean(axis=0), mixture.means[k, :2], atol=0.03)
    np.testing.assert_allclose(np.bincount(labels) / len(labels), 0.25, atol=0.02)


def test_empirical_resamples_rows_and_sampling_is_reproducible():
    rows = np.arange(12, dtype=float).reshape(3, 4)
    distribution = Empirical(rows, rank=2)
    network, index = distribution.sample(50, random_state=3, return_labels=True)
    np.testing.assert_array_equal(network.rows()[:, :4], rows[index])
    again = distribution.sample(50, random_state=3)
    np.testing.assert_array_equal(again.m, network.m)


def test_from_network_round_trip():
    network, _ = quadstable_network(100, 0)
    resampled = Empirical.from_network(network).sample(10, random_state=0)
    assert resampled.rank == 2 and resampled.n_neurons == 10


def test_quadstable_network_has_equal_types():
    network, labels = quadstable_network(1000, 0)
    assert np.bincount(labels).tolist() == [250, 250, 250, 250]
    assert network.n_neurons == 1000


def test_float32_sampling_in_chunks_matches_float64():
    distribution = gaussian_network_distribution("ring")
    a = distribution.sample(3000, random_state=5, dtype=np.float32)
    b = distribution.sample(3000, random_state=5, dtype=np.float64)
    np.testing.assert_allclose(a.m, b.m, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Gaussian(np.zeros(3), np.eye(3), rank=2), r"mean must have shape \(4\)"),
        (lambda: Gaussian(np.zeros(4), -np.eye(4), rank=2), "positive semi-definite"),
        (lambda: Gaussian(np.zeros(4), np.triu(np.ones((4, 4))), rank=2), "symmetric"),
        (lambda: GaussianMixture([0.5, 0.6], np.zeros((2, 2)), np.stack([np.eye(2)] * 2), rank=1), "sum to 1"),
        (lambda: Empirical(np.zeros((0, 2)), rank=1), "at least one row"),
        (lambda: Empirical([[1.0, np.nan]], rank=1), "finite"),
        (lambda: Gaussian(np.zeros(2), np.eye(2), rank=1).sample(0), "'n_neurons' parameter of Gaussian must be an int in the range"),
    ],
)
def test_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        make()
