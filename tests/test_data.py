"""Trial data: validation, the .npz layout, binning and smoothing, NWB reading."""

import datetime
import os

import numpy as np
import pytest

from connector_sim.data import (
    as_trial_data,
    bin_spike_times,
    causal_gaussian_kernel,
    load_npz,
    read_nwb,
    save_npz,
)


def test_ragged_lists_are_padded_with_lengths():
    rng = np.random.default_rng(0)
    trials = [rng.poisson(2.0, (length, 4)) for length in (5, 8, 3)]
    inputs = [rng.standard_normal((length, 2)) for length in (5, 8, 3)]
    data = as_trial_data(trials, inputs, kind="counts", dt=0.01)
    assert data.spikes.shape == (3, 8, 4) and data.inputs.shape == (3, 8, 2)
    np.testing.assert_array_equal(data.lengths, [5, 8, 3])
    np.testing.assert_array_equal(data.trial(2)[0], trials[2])
    np.testing.assert_array_equal(data.trial(0)[1], inputs[0])
    assert data.spikes[2, 3:].sum() == 0 and data.mask().sum() == 16


def test_npz_round_trip_is_exact_and_atomic(tmp_path):
    rng = np.random.default_rng(1)
    spikes = rng.poisson(1.0, (3, 6, 5)).astype(float)
    spikes[1, 4:] = np.nan  # padding beyond the length may hold anything
    data = as_trial_data(spikes, rng.standard_normal((3, 6, 2)), lengths=[6, 4, 5], kind="counts")
    path = tmp_path / "session.npz"
    save_npz(path, data)
    assert sorted(os.listdir(tmp_path)) == ["session.npz"]  # no temporary left behind
    with np.load(path) as archive:
        assert sorted(archive.files) == ["externalinputs", "lengths", "spikes"]
        assert archive["spikes"].shape == (3, 6, 5) and archive["externalinputs"].shape == (3, 6, 2)
    loaded = load_npz(path, kind="counts")
    np.testing.assert_array_equal(loaded.spikes, data.spikes)
    np.testing.assert_array_equal(loaded.inputs, data.inputs)
    np.testing.assert_array_equal(loaded.lengths, [6, 4, 5])
    # Without inputs the file still has the key, with D = 0.
    data.inputs = None
    data.save_npz(path)
    assert load_npz(path).inputs is None


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.npz"
    save_npz(path, as_trial_data(np.ones((1, 2, 3))))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save_npz(path, as_trial_data(np.zeros((1, 2, 3))))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["keep.npz"]
    np.testing.assert_array_equal(load_npz(path).spikes, 1.0)


@pytest.mark.parametrize(
    "spikes, inputs, lengths, kind, message",
    [
        ([np.ones((4, 3)), np.ones((4, 2))], None, None, "rates",
         r"spikes of trial 1 has 2 columns, but trial 0 has 3"),
        (np.where(np.arange(24).reshape(2, 4, 3) == 17, np.nan, 1.0), None, None, "rates",
         r"spikes of trial 1 contains a non-finite value \(nan\) at time bin 1, column 2"),
        (np.where(np.arange(24).reshape(2, 4, 3) == 5, -1.0, 1.0), None, None, "counts",
         r"spikes of trial 0 holds a negative spike count \(-1.0\) at time bin 1, neuron 2"),
        (np.full((1, 2, 2), 0.5), None, None, "counts", "non-integer spike count"),
        ([np.ones((4, 3)), np.ones((5, 3))], [np.ones((4, 1)), np.ones((3, 1))], None, "rates",
         r"externalinputs of trial 1 has 3 time bins, but spikes has 5"),
        (np.ones((2, 5, 3)), np.ones((2, 4, 1)), [3, 5], "rates",
         r"externalinputs of trial 1 has 4 time bins, but spikes has 5"),
        (np.ones((2, 5, 3)), np.ones((3, 5, 1)), None, "rates", "spikes has 2 trials, externalinputs has 3"),
        (np.ones((2, 5, 3)), None, [5, 6], "rates", r"lengths of trial 1 must be in \[1, 5\]"),
        (np.ones((2, 5, 3)), None, [5], "rates", r"shape \(2,\)"),
        (np.ones((5, 3)), None, None, "rates", "must be 3-D"),
    ],
)
def test_validation_names_trial_and_field(spikes, inputs, lengths, kind, message):
    with pytest.raises(ValueError, match=message):
        as_trial_data(spikes, inputs, lengths, kind=kind)


def test_nan_in_inputs_is_reported():
    inputs = np.zeros((2, 3, 1))
    inputs[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="externalinputs of trial 1 contains a non-finite value"):
        as_trial_data(np.ones((2, 3, 2)), inputs)
    # ... but not when it lies beyond the trial's length.
    assert as_trial_data(np.ones((2, 3, 2)), inputs, lengths=[3, 2]).inputs[1, 2, 0] == 0


def test_causal_kernel():
    kernel = causal_gaussian_kernel(0.01, 0.1)
    assert len(kernel) == 31 and kernel.sum() == pytest.approx(1.0)
    assert np.all(np.diff(kernel) < 0)
    np.testing.assert_allclose(kernel[10] / kernel[0], np.exp(-0.5))


def direct_rates(spike_times, start, n_bins, bin_width, sigma, truncate=3.0):
    """Each spike adds w(lag) / dt to the bins at or after its own, lag in whole bins."""
    n_lags = int(round(truncate * sigma / bin_width)) + 1  # 30 + 1 for the defaults
    weights = np.exp(-0.5 * (np.arange(n_lags) * bin_width / sigma) ** 2)
    weights /= weights.sum()
    rates = np.zeros((n_bins, len(spike_times)))
    for unit, times in enumerate(spike_times):
        for s in times:
            spike_bin = int(np.floor((s - start) / bin_width))
            for t in range(n_bins):
                if 0 <= t - spike_bin < n_lags:
                    rates[t, unit] += weights[t - spike_bin] / bin_width
    return rates


def make_spikes(seed=0):
    rng = np.random.default_rng(seed)
    # Spike times off the bin edges (offset 0.3 of a bin), so floor() is unambiguous.
    return [np.sort(0.01 * (rng.choice(400, size=size, replace=False) + 0.3)) for size in (40, 25, 60)]


def test_bin_spike_times_matches_direct_computation():
    spikes = make_spikes()
    starts, stops = np.array([0.5, 1.2, 2.8]), np.array([1.1, 2.0, 3.5])
    data = bin_spike_times(spikes, starts, stops, 0.01, 0.1)
    np.testing.assert_array_equal(data.lengths, [60, 80, 70])
    for k, start in enumerate(starts):
        expected = direct_rates(spikes, start, data.lengths[k], 0.01, 0.1)
        np.testing.assert_allclose(data.spikes[k, : data.lengths[k]], expected, rtol=1e-10, atol=1e-9)
    counts = bin_spike_times(spikes, starts, stops, 0.01, None)
    assert counts.kind == "counts"
    assert counts.spikes[0].sum() == sum(((s >= 0.5) & (s < 1.1)).sum() for s in spikes)


def test_nwb_round_trip(tmp_path):
    pynwb = pytest.importorskip("pynwb")
    spikes = make_spikes(1)
    nwbfile = pynwb.NWBFile(
        session_description="connector_sim test", identifier="test-units",
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    for times in spikes:
        nwbfile.add_unit(spike_times=times)
    intervals = [(0.4, 1.0), (1.5, 2.25), (3.0, 3.8)]
    for start, stop in intervals:
        nwbfile.add_trial(start_time=start, stop_time=stop)
    path = tmp_path / "session.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    data = read_nwb(path)
    assert data.dt == 0.01 and data.n_neurons == 3
    np.testing.assert_array_equal(data.lengths, [60, 75, 80])
    for k, (start, _) in enumerate(intervals):
        expected = direct_rates(spikes, start, data.lengths[k], 0.01, 0.1)
        np.testing.assert_allclose(data.spikes[k, : data.lengths[k]], expected, rtol=1e-10, atol=1e-9)
    subset = read_nwb(path, units=[2], trials=[1], smoothing=None, bin_width=0.05)
    assert subset.spikes.shape == (1, 15, 1)
    assert subset.spikes.sum() == ((spikes[2] >= 1.5) & (spikes[2] < 2.25)).sum()


# --------------------------------------------------------------------------- networks and named arrays


def test_network_file_round_trip(tmp_path):
    from connector_sim import LowRankRNN
    from connector_sim.data import load_network, save_network

    rng = np.random.default_rng(0)
    network = LowRankRNN(rng.standard_normal((30, 2)), rng.standard_normal((30, 2)), I=rng.standard_normal((30, 3)),
                         b=rng.standard_normal(30), tau=0.5, activation="relu", dtype=np.float32)
    labels = rng.integers(0, 3, 30)
    save_network(tmp_path / "net.npz", network, labels=labels)
    assert [p.name for p in tmp_path.iterdir()] == ["net.npz"]  # no temporary file left behind
    loaded, extra = load_network(tmp_path / "net.npz", return_extra=True)
    for name in ("m", "n", "I", "b"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(network, name))
    assert loaded.dtype == np.float32 and loaded.tau == 0.5 and loaded.activation == "relu"
    assert set(extra) == {"labels"}
    np.testing.assert_array_equal(extra["labels"], labels)
    # Plain NumPy reads it without pickle.
    with np.load(tmp_path / "net.npz", allow_pickle=False) as archive:
        assert str(archive["kind"]) == "LowRankRNN"
    # Overwriting replaces the file whole.
    save_network(tmp_path / "net.npz", LowRankRNN(np.ones((4, 1)), np.ones((4, 1))))
    assert load_network(tmp_path / "net.npz").n_neurons == 4


def test_network_and_array_files_refuse_bad_input(tmp_path):
    from connector_sim import LowRankRNN
    from connector_sim.data import load_arrays, load_network, save_arrays, save_network

    network = LowRankRNN(np.ones((4, 1)), np.ones((4, 1)))
    with pytest.raises(ValueError, match=r"path must end in '.npz'. Got '.*net.txt'"):
        save_network(tmp_path / "net.txt", network)
    with pytest.raises(TypeError, match=r"network must be a LowRankRNN. Got ndarray"):
        save_network(tmp_path / "net.npz", np.ones(3))
    with pytest.raises(ValueError, match=r"may not use the network's own keys \['tau'\]"):
        save_network(tmp_path / "net.npz", network, tau=2.0)
    with pytest.raises(TypeError, match=r"Array 'ragged' has dtype object, which only loads with pickle"):
        save_arrays(tmp_path / "a.npz", ragged=np.array([np.ones(2), np.ones(3)], dtype=object))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match=r"missing.npz' does not exist \(expected an .npz file of a low-rank"):
        load_network(tmp_path / "missing.npz")
    save_arrays(tmp_path / "latents.npz", kappa=np.zeros((2, 3, 2)))
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['m', 'n', 'tau', 'activation'\] of a low-rank network.*"
                                         r"Found \['kappa'\]"):
        load_network(tmp_path / "latents.npz")
    save_arrays(tmp_path / "bad.npz", m=np.ones((4, 2)), n=np.ones((4, 3)), tau=1.0, activation="tanh")
    with pytest.raises(ValueError, match=r"bad.npz' does not hold a valid network: m and n must have the same rank"):
        load_network(tmp_path / "bad.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match=r"text.npz' is not a readable .npz archive of arrays"):
        load_arrays(tmp_path / "text.npz")
