import numpy as np
import pytest

from connector_sim.ddm.compare import (
    autocorrelation,
    compare_dynamics,
    oscillation_statistics,
    well_transitions,
)


def ar1(n_trials, n_times, dim, a, scale, seed):
    """Stationary AR(1) trajectories z_{t+1} = a z_t + scale sqrt(1 - a^2) xi (unit-variance when scale = 1)."""
    rng = np.random.default_rng(seed)
    z = np.empty((n_trials, n_times, dim))
    z[:, 0] = scale * rng.standard_normal((n_trials, dim))
    noise = scale * np.sqrt(1 - a**2) * rng.standard_normal((n_trials, n_times, dim))
    for t in range(1, n_times):
        z[:, t] = a * z[:, t - 1] + noise[:, t]
    return z


def telegraph(n_trials, n_times, rate, dt, seed):
    """Two-state switching between wells at -1 and +1 with rate ``rate`` each way, plus small jitter."""
    rng = np.random.default_rng(seed)
    flips = rng.random((n_trials, n_times)) < rate * dt
    state = np.cumsum(flips, axis=1) % 2
    return (2.0 * state - 1 + 0.05 * rng.standard_normal((n_trials, n_times)))[:, :, None]


def test_autocorrelation_of_ar1_is_geometric():
    z = ar1(40, 2000, 1, 0.9, 1.0, seed=0)
    acf = autocorrelation(z, 5)
    # 80,000 samples with correlation time ~19 steps: standard error ~0.02
    np.testing.assert_allclose(acf[:, 0], 0.9 ** np.arange(6), atol=0.05)


def test_same_process_agrees_and_a_different_variance_does_not():
    reference = ar1(30, 400, 2, 0.8, 1.0, seed=1)
    same = ar1(30, 400, 2, 0.8, 1.0, seed=2)
    wider = ar1(30, 400, 2, 0.8, 1.6, seed=3)
    statistics = ["moments", "correlation", "histogram", "autocorrelation"]
    table = compare_dynamics(reference, same, dt=0.1, statistics=statistics, n_bootstrap=100)
    agree = np.mean([row["agree"] for row in table])
    # 95% intervals on ~14 rows: a chance disagreement or two is expected, not more
    assert agree >= 0.8, table.to_markdown()
    table = compare_dynamics(reference, wider, dt=0.1, statistics=statistics, n_bootstrap=100)
    for row in table.select("standard deviation"):
        assert not row["agree"]
        assert row["candidate"] == pytest.approx(1.6 * row["reference"], rel=0.15)
    for row in table.select("histogram total variation"):
        assert row["candidate_low"] > row["reference_high"]
    # the correlation time is the same for both (a = 0.8): it does not depend on the scale
    for row in table.select("correlation time"):
        assert row["agree"]


def test_correlation_time_of_ar1():
    a, dt = 0.9, 0.1
    z = ar1(40, 2000, 1, a, 1.0, seed=4)
    table = compare_dynamics(z, z, dt=dt, statistics=["autocorrelation"], n_bootstrap=20)
    (row,) = table.select("correlation time")
    # dt (sum_k a^k - 1/2) = dt ((1 + a) / (2 (1 - a))), the integral of the ACF by the trapezoid rule
    expected = dt * (0.5 * (1 + a) / (1 - a))
    assert row["reference"] == pytest.approx(expected, rel=0.15)


def test_well_transitions_recover_the_switching_rate():
    rate, dt = 0.2, 0.05
    z = telegraph(50, 4000, rate, dt, seed=5)
    counts, time_in, dwell = well_transitions(z, [[-1.0], [1.0]], 0.5, dt)
    estimate = counts[0, 1] / time_in[0]
    # ~1000 transitions: relative standard error ~3%
    assert estimate == pytest.approx(rate, rel=0.1)
    assert np.mean(dwell[0]) == pytest.approx(1 / rate, rel=0.1)
    table = compare_dynamics(z, telegraph(50, 4000, rate, dt, seed=6), dt=dt, statistics=["wells"],
                             wells=[[-1.0], [1.0]], n_bootstrap=100)
    assert all(row["agree"] for row in table.select("transition rate"))
    slower = telegraph(50, 4000, rate / 2, dt, seed=7)
    table = compare_dynamics(z, slower, dt=dt, statistics=["wells"], wells=[[-1.0], [1.0]], n_bootstrap=100)
    assert not any(row["agree"] for row in table.select("transition rate"))
    assert not any(row["agree"] for row in table.select("dwell time"))


def test_milestoning_ignores_excursions_that_do_not_reach_the_other_core():
    trace = np.array([-1, -0.2, -1, 0.3, -1, 1, 0.2, 1], dtype=float)[None, :, None]
    counts, time_in, _ = well_transitions(trace, [[-1.0], [1.0]], 0.5, 1.0)
    assert counts[0, 1] == 1 and counts[1, 0] == 0
    assert time_in.sum() == trace.shape[1]


def test_oscillation_statistics_of_noisy_sine():
    dt, period, amplitude = 0.01, 2.0, 1.5
    t = np.arange(5000) * dt
    rng = np.random.default_rng(8)
    phases = rng.uniform(0, 2 * np.pi, 10)
    z = amplitude * np.sin(2 * np.pi * t[None] / period + phases[:, None])
    z = (z + 0.05 * rng.standard_normal(z.shape))[:, :, None]
    measured_period, measured_amplitude, n_cycles = oscillation_statistics(z, dt)
    assert measured_period == pytest.approx(period, rel=0.01)
    # the noise adds its extremes to each cycle's range: ~2.5 sd of 0.05
    assert measured_amplitude == pytest.approx(amplitude, abs=0.2)
    assert n_cycles >= 10 * 23


def test_lyapunov_rows_use_both_drifts():
    rates = np.array([-0.5, -2.0])
    z = ar1(8, 50, 2, 0.5, 1.0, seed=9)
    table = compare_dynamics(z, z, dt=0.1, statistics=["lyapunov"], reference_drift=lambda p: p * rates,
                             candidate_drift=lambda p: p * 2 * rates, lyapunov_time=40.0)
    (row,) = table.select("largest Lyapunov exponent")
    assert row["reference"] == pytest.approx(-0.5, abs=0.02)
    assert row["candidate"] == pytest.approx(-1.0, abs=0.02)
    assert not row["agree"]


def test_sinkhorn_row_has_a_floor():
    pytest.importorskip("geomloss")
    reference = ar1(20, 200, 2, 0.5, 1.0, seed=10)
    shifted = ar1(20, 200, 2, 0.5, 1.0, seed=11) + 1.0
    table = compare_dynamics(reference, shifted, dt=0.1, statistics=["sinkhorn"], n_bootstrap=4,
                             sinkhorn_samples=300)
    (row,) = table.select("Sinkhorn divergence")
    # a shift by (1, 1) costs |shift|^2 / 2 = 1 in the debiased p = 2 divergence; the floor is near 0
    assert row["candidate"] == pytest.approx(1.0, rel=0.3)
    assert row["reference"] < 0.1
    assert not row["agree"]


def test_markdown_lists_every_row():
    z = ar1(10, 100, 1, 0.5, 1.0, seed=12)
    table = compare_dynamics(z, z, dt=0.1, statistics=["moments"], n_bootstrap=10)
    text = table.to_markdown()
    assert text.count("\n") == len(table) + 2
    assert "standard deviation" in text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(candidate=np.zeros((2, 10, 3))), "components"),
        (dict(candidate=np.full((2, 10, 1), np.nan)), "NaN"),
        (dict(candidate=np.zeros((2, 2, 1))), "at least 4"),
        (dict(statistics=["entropy"]), "statistics"),
        (dict(statistics=["wells"]), "wells"),
        (dict(statistics=["lyapunov"]), "drifts"),
        (dict(wells=[[0.0, 1.0]]), "wells"),
        (dict(dt=0.0), "dt"),
        (dict(confidence=1.5), "confidence"),
        (dict(burn_in=20), "burn_in"),
        (dict(candidate=np.zeros((2, 10, 1), dtype=complex)), "real array"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, match):
    arguments = dict(reference=np.zeros((4, 10, 1)), candidate=np.zeros((4, 10, 1)), dt=0.1)
    arguments.update(kwargs)
    reference = arguments.pop("reference")
    candidate = arguments.pop("candidate")
    with pytest.raises(ValueError, match=match):
        compare_dynamics(reference, candidate, **arguments)


def test_sde_as_reference_agrees_with_its_own_euler_maruyama_paths():
    from connector_sim.ddm import euler_maruyama, ornstein_uhlenbeck

    sde = ornstein_uhlenbeck()
    dt = 0.05
    z0 = np.zeros((40, sde.dim))
    candidate = euler_maruyama(sde, z0, 800, dt, seed=123)
    table = compare_dynamics(sde, candidate, dt=dt, burn_in=100, statistics=["moments", "correlation",
                             "histogram", "autocorrelation"], n_bootstrap=100, random_state=1)
    agree = np.mean([row["agree"] for row in table])
    assert agree >= 0.8, table.to_markdown()
    # the stationary covariance of the OU process is known: the SDE's own paths reproduce it
    covariance = sde.exact["stationary_covariance"]
    for j, row in enumerate(table.select("standard deviation")):
        assert row["candidate_low"] - 0.05 < np.sqrt(covariance[j, j]) < row["candidate_high"] + 0.05


def test_a_well_never_left_gives_nan_without_a_warning():
    # all trials stay in well 0: its dwell time and rates are undefined, not an error
    z = 1.0 + 0.01 * np.random.default_rng(13).standard_normal((5, 100, 1))
    z -= 2.0
    table = compare_dynamics(z, z, dt=0.1, statistics=["wells"], wells=[[-1.0], [1.0]], n_bootstrap=20)
    (dwell,) = [row for row in table.select("dwell time") if row["component"] == "well 0"]
    assert np.isnan(dwell["reference"]) and np.isnan(dwell["reference_low"])
    occupancy = table.select("occupancy")
    assert occupancy[0]["reference"] == 1.0 and occupancy[1]["reference"] == 0.0
