"""The excitatory/inhibitory random part of LowRankPlusRandomRNN (Rajan & Abbott 2006; theory section 5)."""

import math

import numpy as np
import pytest

from connector_sim import ExcitatoryInhibitory, LowRankPlusRandomRNN, rank_one_gaussian, simulate, spectra
from connector_sim import sparse_dynamics as sd


def ei_network(N, seed, *, g=0.5, variance=1.0, covariance=0.0, balanced=True, mean_i=-3.0):
    spec = ExcitatoryInhibitory(0.8, mean_e=1.0, mean_i=mean_i, variance_e=1.0, variance_i=4.0, balanced=balanced)
    return LowRankPlusRandomRNN(rank_one_gaussian(N, variance, covariance, random_state=seed), g, seed=seed + 100,
                                random=spec)


def test_entries_have_the_population_statistics():
    N, g = 1000, 0.5
    network = ei_network(N, 0, balanced=False)
    chi = network.random_part / g * math.sqrt(N)  # mu_c + sigma_c xi
    excitatory, inhibitory = chi[:, :800], chi[:, 800:]
    # 800 000 and 200 000 entries: the means within 5 sd (sd sigma / sqrt(count)), the variances within 5 sd.
    assert abs(excitatory.mean() - 1.0) < 5 * 1.0 / math.sqrt(excitatory.size)
    assert abs(inhibitory.mean() + 3.0) < 5 * 2.0 / math.sqrt(inhibitory.size)
    assert abs(excitatory.var() - 1.0) < 5 * math.sqrt(2 / excitatory.size)
    assert abs(inhibitory.var() / 4.0 - 1.0) < 5 * math.sqrt(2 / inhibitory.size)
    # Balanced: every row of the random part sums to zero (to rounding).
    balanced = ei_network(N, 0)
    assert np.max(np.abs(balanced.random_part.sum(axis=1))) < 1e-12
    assert balanced.random.n_excitatory(N) == 800


# N = 1000 (dense eigenvalues, ~2 s each on a loaded core); the tolerances were measured at N = 1000 and 2000.
@pytest.mark.parametrize("N, seeds", [(1000, (0, 1))])
def test_balanced_spectrum_is_a_disk_of_the_predicted_radius_without_outlier(N, seeds):
    radius = spectra.predicted_ei_radius(0.5, 0.8, 1.0, 4.0)  # 0.5 sqrt(0.8 + 0.8) = 0.632
    for seed in seeds:
        network = ei_network(N, seed)
        theory = spectra.network_theory(network)
        assert theory.bulk_radius == pytest.approx(radius, rel=1e-12)
        assert spectra.predicted_ei_outlier(0.5, 0.8, 1.0, -3.0, N, balanced=True) == 0.0
        values = spectra.eigenvalues(network)
        # No outlier: the largest modulus overshoots the limiting disk by the finite-N edge
        # fluctuation only (measured <= 10 % at N = 1000, 3 % at 2000 over seeds 0-2); 4 / sqrt(N) bounds it.
        assert np.abs(values).max() < radius * (1 + 4 / math.sqrt(N))
        # The 99 % quantile of |lambda| sits within a few % of the radius (measured |error| <= 2.6 %).
        assert spectra.measured_bulk_radius(values) == pytest.approx(radius, rel=3 / math.sqrt(N))


@pytest.mark.parametrize("N", [1000])
def test_unbalanced_mean_gives_the_predicted_outlier(N):
    outlier = spectra.predicted_ei_outlier(0.5, 0.8, 1.0, -3.0, N)  # 0.5 sqrt(N) 0.2
    assert outlier == pytest.approx(0.1 * math.sqrt(N))
    radius = spectra.predicted_ei_radius(0.5, 0.8, 1.0, 4.0)
    for seed in (0,):
        network = ei_network(N, seed, balanced=False)
        values = spectra.eigenvalues(network)
        theory = spectra.network_theory(network)
        # The (R + 1) x (R + 1) theory: its top eigenvalue is the mean outlier (plus the n^T m / N coupling).
        assert theory.outliers[0].real == pytest.approx(outlier, rel=0.05)
        # The measured outlier: relative error 5.4 % at N = 1000, 1.5 % at 2000 (seeds 0-2); 4 / sqrt(N).
        assert values[0].real == pytest.approx(theory.outliers[0].real, rel=4 / math.sqrt(N))
        assert abs(values[0].imag) < 1e-9
        # The rest is the disk (the low-rank outlier n^T m / N ~ 0 lies inside it).
        assert np.abs(values[1:]).max() < radius * (1 + 4 / math.sqrt(N))


def test_low_rank_outlier_outside_the_ei_bulk():
    N, covariance = 600, 1.5
    network = ei_network(N, 3, variance=2.0, covariance=covariance)
    values, theory = spectra.eigenvalues(network), spectra.network_theory(network)
    top = values[np.argmax(values.real)]
    # As for a Gaussian chi: the outlier stays at n^T m / N up to O(r / sqrt(N)).
    assert abs(top - theory.outliers[0]) < 4 * theory.bulk_radius / math.sqrt(N)


def test_ei_network_simulates_as_the_euler_step_of_its_matrix():
    network = ei_network(300, 0, g=1.5)
    x0 = np.random.default_rng(0).standard_normal(300)
    result = sd.simulate_low_rank_plus_random(network, n_steps=1, x0=x0, dt=0.1, record_units="all")
    expected = x0 + 0.1 * (-x0 + network.connectivity() @ np.tanh(x0))
    np.testing.assert_allclose(result.potentials[0, 1], expected, atol=1e-13)
    # A long run stays finite and, with r = 1.9 > 1, keeps fluctuating (the chaotic side of the disk).
    long = sd.simulate_low_rank_plus_random(network, n_steps=2000, x0=x0, record_units=[0, 1, 2])
    tail = long.potentials[0, 1000:]
    assert np.all(np.isfinite(tail)) and tail.std(axis=0).min() > 0.05
    # g = 0: the plain low-rank simulation.
    quiet = LowRankPlusRandomRNN(network.dense, 0.0, seed=1, random=network.random)
    np.testing.assert_allclose(sd.simulate_low_rank_plus_random(quiet, n_steps=20, kappa0=[0.5]).kappa,
                               simulate(network.dense, 20, kappa0=[0.5], path="full", backend="numpy").kappa,
                               atol=1e-12)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"fraction": 0.0}, ValueError, "'fraction'.*> 0"),
    ({"fraction": 1.5}, ValueError, r"'fraction'.*\(0, 1\]"),
    ({"variance_e": -1.0}, ValueError, "'variance_e'"),
    ({"mean_e": "a"}, TypeError, "'mean_e'.*number"),
    ({"balanced": 1}, TypeError, "'balanced'.*True or False"),
    ({"n_connections": 0}, ValueError, "'n_connections'"),
])
def test_bad_ei_parameters_say_what_was_expected(kwargs, error, message):
    with pytest.raises(error, match=message):
        ExcitatoryInhibitory(**kwargs)


def test_unknown_random_part_is_refused():
    with pytest.raises(ValueError, match="'random'.*'gaussian' or an ExcitatoryInhibitory"):
        LowRankPlusRandomRNN(rank_one_gaussian(10, 1.0, 0.5), 1.0, random="ei")


def test_sparse_ei_with_fixed_in_degree():
    N, C, g = 1000, 100, 0.5
    balanced = ExcitatoryInhibitory(0.8, mean_e=1.0, mean_i=-3.0, variance_e=1.0, variance_i=4.0, n_connections=C)
    network = LowRankPlusRandomRNN(rank_one_gaussian(N, 1.0, 0.0, random_state=0), g, seed=1, random=balanced)
    kept = network.random_part != 0
    assert np.all(kept.sum(axis=1) == C) and np.max(np.abs(network.random_part.sum(axis=1))) < 1e-12
    # The mask spreads the means: r = g sqrt(f (1 + 0.9 mu_E^2) + (1 - f) (4 + 0.9 mu_I^2)) = 0.992.
    radius = spectra.predicted_ei_radius(g, 0.8, 1.0, 4.0, mean_e=1.0, mean_i=-3.0, density=C / N)
    assert spectra.network_theory(network).bulk_radius == pytest.approx(radius, rel=1e-12)
    values = spectra.eigenvalues(network)
    # Measured (seeds 0, 1): max |lambda| 0.993-1.001, 99 % quantile 0.973-0.976: as for the dense part.
    assert np.abs(values).max() < radius * (1 + 4 / math.sqrt(N))
    assert spectra.measured_bulk_radius(values) == pytest.approx(radius, rel=3 / math.sqrt(N))
    # Unbalanced: the mean outlier g sqrt(C) (f mu_E + (1 - f) mu_I) = 0.5 * 10 * 0.4 = 2, outside r = 0.87.
    unbalanced = ExcitatoryInhibitory(0.8, mean_e=1.0, mean_i=-2.0, variance_e=1.0, variance_i=4.0, balanced=False,
                                      n_connections=C)
    network = LowRankPlusRandomRNN(network.dense, g, seed=2, random=unbalanced)
    outlier = spectra.predicted_ei_outlier(g, 0.8, 1.0, -2.0, N, n_connections=C)
    assert outlier == pytest.approx(2.0) and unbalanced.mean_outlier(N, g) == pytest.approx(2.0)
    values = spectra.eigenvalues(network)
    assert values[0].real == pytest.approx(outlier, rel=4 / math.sqrt(N))


def test_gaussian_only_mean_field_refuses_an_ei_random_part():
    with pytest.raises(ValueError, match="excitatory/inhibitory random part.*Simulate it"):
        sd.input_fixed_point(ei_network(50, 0), kappa0=[0.5])
