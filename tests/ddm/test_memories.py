"""Memories: labels, dwell times and sequence statistics on hand-made paths; switching and cycling networks."""

import math

import numpy as np
import pytest

from connector_sim.ddm import multi_well
from connector_sim.ddm.matching import DriftDiffusionMatching
from connector_sim.ddm.memories import (
    associative_memory,
    dwell_times,
    episodic_memory,
    sequence_statistics,
    well_labels,
    wilson_interval,
)

WELLS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])


def staircase(sequence, lengths):
    """A path sitting exactly on the given wells for the given numbers of steps."""
    return np.concatenate([np.repeat(WELLS[[w]], n, axis=0) for w, n in zip(sequence, lengths)])[None]


def test_labels_dwell_times_and_sequences_on_a_known_path():
    # Two counterclockwise cycles 0 1 2 3 0 1 2 3 0 with 10, 20, 30, ... steps per visit.
    sequence = [0, 1, 2, 3, 0, 1, 2, 3, 0]
    lengths = [10, 20, 30, 40, 10, 20, 30, 40, 5]
    z = staircase(sequence, lengths)
    # A point between wells (outside every core) keeps the previous label.
    z[0, 15] = [0.5, 0.5]
    labels = well_labels(z, WELLS)
    assert labels[0, 15] == 1 and labels[0, 9] == 0 and labels[0, 10] == 1
    dwell = dwell_times(z, WELLS, dt=0.5)
    np.testing.assert_allclose(np.sort(dwell["all"]), 0.5 * np.array([10, 20, 20, 30, 30, 40, 40]))
    assert dwell["transitions"][0, 1] == 2 and dwell["transitions"][3, 0] == 2
    stats = sequence_statistics(z, WELLS, dt=0.5)
    assert stats["order"] == 1.0 and stats["n_transitions"] == 8
    # Windings complete at the first returns to angle 0 (start of each visit to well 0): one period of 100 steps.
    assert stats["n_periods"] == 1 and stats["period_mean"] == pytest.approx(50.0)
    reverse = sequence_statistics(z[:, ::-1], WELLS, dt=0.5)
    assert reverse["order"] == 0.0


def test_wilson_interval():
    low, high = wilson_interval(np.array([0, 5, 10]), 10)
    assert low[0] == 0.0 and high[2] == pytest.approx(1.0)
    assert low[1] < 0.5 < high[1]
    assert np.isnan(wilson_interval(0, 0)[0])


@pytest.fixture(scope="module")
def four_wells():
    pytest.importorskip("torch")
    sde = multi_well(noise=0.3)
    return DriftDiffusionMatching(n_neurons=300, n_samples=2048, n_epochs=5, device="cpu",
                                  random_state=0).fit(sde)


def test_associative_memory_switches_with_the_pulse_strength(four_wells):
    # Barrier 0.5 against D = 0.045: no spontaneous switch in 8 time units
    # (Kramers time >> 1e3); a pulse of force 4 for 0.5 time units carries
    # the state over the saddle (1.41 away) without overshooting the target
    # well (measured 40 / 40; longer or stronger pulses overshoot).
    est = four_wells
    out = associative_memory(est, [0.0, 4.0], n_trials=40, dt=0.05 * est.time_scale_, seed=3, pulse_duration=0.5)
    assert out["p_target"][0] == 0.0 and out["p_leave"][0] == 0.0
    assert out["ci_low"][1] > 0.85
    assert 0.0 < out["threshold"] <= 4.0


def test_episodic_memory_network_cycles_like_the_sde():
    # omega = 1.5 > omega_c = 1: cycling in the rotation sense only; the
    # period of network and SDE agree within their 95% intervals (plus the
    # ~2% drift error's effect on the speed around the circle, 3%).
    pytest.importorskip("torch")
    rows = episodic_memory([1.5], duration=100.0, n_trials=10, dt_sde=0.05,
                           matching=dict(n_neurons=300, n_samples=2048, n_epochs=5, device="cpu"))
    network, sde = rows
    assert network["order"] == 1.0 and sde["order"] == 1.0
    half = (network["period_ci"][1] - network["period_ci"][0] + sde["period_ci"][1] - sde["period_ci"][0]) / 2
    assert abs(network["period_mean"] - sde["period_mean"]) < half + 0.03 * sde["period_mean"]
    # Deterministic period 2 pi / sqrt(omega^2 - omega_c^2) = 5.62; noise shortens it a little.
    assert abs(sde["period_mean"] - 2 * math.pi / math.sqrt(1.5**2 - 1)) < 0.1 * sde["period_mean"]


def test_bad_input(four_wells):
    with pytest.raises(ValueError, match="different wells"):
        associative_memory(four_wells, [1.0], source=1, target=1)
    with pytest.raises(ValueError, match="strengths"):
        associative_memory(four_wells, [-1.0])
    with pytest.raises(ValueError, match="shape \\(k >= 2, 2\\)"):
        well_labels(np.zeros((1, 5, 2)), np.zeros((1, 2)))
