"""Foreign file layouts: the official Connector data npz, LINT's .pt networks, NWB.

Each test writes its own small file in the foreign layout (as the official
code, LINT or pynwb would) and checks that reading it gives the same arrays
and the same dynamics as a short NumPy re-implementation of the foreign
code's documented update.
"""

import pickle

import numpy as np
import pytest

import connector_sim as cs
from connector_sim.data import as_trial_data, read_nwb
from connector_sim.interop import (
    lint_noise_to_sigma,
    load_lint_network,
    load_official_data,
    read_nwb_timeseries,
    save_lint_network,
    save_official_data,
    sigma_to_lint_noise,
    write_nwb,
)


def _network(N=40, R=2, D=1, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    return cs.LowRankRNN(rng.normal(size=(N, R)), 2.0 * rng.normal(size=(N, R)), rng.normal(size=(N, D)),
                         0.3 * rng.normal(size=N) if bias else None)


# --------------------------------------------------------------------------- official Connector data


def test_official_data_in_the_official_layout_has_the_official_dynamics(tmp_path):
    """A file laid out as the official notebook writes it: MBD, N, latents, potentials, rates, inv_perm, enms."""
    rng = np.random.default_rng(1)
    N, R, T, alpha = 60, 2, 30, 0.1
    M, Nm = rng.normal(size=(N, R)), 2 * rng.normal(size=(N, R))
    starts = rng.uniform(-2, 2, size=(5, R))
    # The official generator's update: xy <- xy + alpha (-xy + tanh(xy @ M.T) @ N / N_neurons).
    latents = np.zeros((5, T, R))
    for k, xy in enumerate(starts):
        for t in range(T):
            latents[k, t] = xy
            xy = xy + alpha * (-xy + np.tanh(xy @ M.T) @ Nm / N)
    inv_perm = rng.permutation(N)
    path = tmp_path / "official.npz"
    np.savez(path, latents=latents, MBD=M, N=Nm, potentials=latents @ M.T, rates=np.tanh(latents @ M.T),
             inv_perm=inv_perm, enms=Nm[::-1])
    official = load_official_data(path)
    assert not official.bias and official.rank == R
    np.testing.assert_array_equal(official.network.m, M)
    np.testing.assert_array_equal(official.network.n, Nm)
    np.testing.assert_array_equal(official.network.b, 0)
    np.testing.assert_array_equal(official.latents, latents)
    np.testing.assert_array_equal(official.data.spikes, np.tanh(latents @ M.T))
    np.testing.assert_array_equal(official.potentials, latents @ M.T)
    np.testing.assert_array_equal(official.enms, Nm[::-1])
    np.testing.assert_array_equal(official.inv_perm, inv_perm)
    assert official.data.dt == pytest.approx(alpha)
    result = cs.simulate(official.network, T - 1, dt=official.alpha, kappa0=latents[:, 0], backend="numpy")
    # Same update, same float64 operations up to summation order: a few ulps over 30 steps.
    np.testing.assert_allclose(result.kappa, latents, rtol=1e-12, atol=1e-12)


def test_official_data_round_trip(tmp_path):
    network = _network()
    u = np.random.default_rng(2).normal(size=(3, 12, 1))
    result = cs.simulate(network, inputs=u, kappa0=np.ones((3, 2)), record_units="all", backend="numpy")
    path = tmp_path / "ours.npz"
    perm = np.random.default_rng(3).permutation(network.n_neurons)
    # The official layout puts u_t on the bins of the latents (u_t drives t -> t + 1; the last one is unused).
    u_bins = np.concatenate([u, np.zeros((3, 1, 1))], axis=1)
    save_official_data(path, network, latents=result.kappa, rates=result.rates, potentials=result.potentials,
                       inputs=u_bins, enms=network.n, inv_perm=perm)
    with np.load(path, allow_pickle=False) as archive:
        assert archive["MBD"].shape == (40, 2 + 1 + 1)  # [m, B, d]
        np.testing.assert_array_equal(archive["MBD"][:, -1], network.b)
    official = load_official_data(path)
    assert official.bias
    for name in ("m", "n", "I", "b"):
        np.testing.assert_array_equal(getattr(official.network, name), getattr(network, name))
    np.testing.assert_array_equal(official.latents, result.kappa)
    np.testing.assert_array_equal(official.potentials, result.potentials)
    np.testing.assert_array_equal(official.data.spikes, result.rates)
    np.testing.assert_array_equal(official.data.inputs, u_bins)
    np.testing.assert_array_equal(official.inv_perm, perm)
    again = cs.simulate(official.network, inputs=u, kappa0=np.ones((3, 2)), backend="numpy")
    np.testing.assert_array_equal(again.kappa, result.kappa)


def test_official_data_bad_files(tmp_path):
    missing = tmp_path / "missing.npz"
    np.savez(missing, N=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="lacks the key"):
        load_official_data(missing)
    rows = tmp_path / "rows.npz"
    np.savez(rows, MBD=np.zeros((5, 2)), N=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="'N' must have shape"):
        load_official_data(rows)
    width = tmp_path / "width.npz"
    np.savez(width, MBD=np.zeros((5, 5)), N=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="'MBD' must have shape"):
        load_official_data(width)
    perm = tmp_path / "perm.npz"
    np.savez(perm, MBD=np.zeros((5, 2)), N=np.zeros((5, 2)), inv_perm=np.array([0, 0, 1, 2, 3]))
    with pytest.raises(ValueError, match="permutation"):
        load_official_data(perm)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, MBD=np.array([{"m": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        load_official_data(pickled)
    with pytest.raises(FileNotFoundError):
        load_official_data(tmp_path / "absent.npz")


# --------------------------------------------------------------------------- LINT networks


def _lint_state(N=30, R=2, D=2, K=1, seed=4):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(seed)
    return {"wi": torch.randn(D, N, generator=g), "si": torch.rand(D, generator=g) + 0.5,
            "m": torch.randn(N, R, generator=g), "n": 3 * torch.randn(N, R, generator=g),
            "b": torch.zeros(N), "wo": torch.randn(N, K, generator=g), "so": torch.rand(K, generator=g) + 0.5,
            "h0": 0.5 * torch.randn(N, generator=g)}


def _lint_reference(state, u, xi, alpha, noise_std):
    """LINT's LowRankRNN.forward in NumPy (float64): its documented update and readout."""
    p = {k: v.double().numpy() for k, v in state.items()}
    N = p["m"].shape[0]
    wi_full, wo_full = p["wi"] * p["si"][:, None], p["wo"] * p["so"]
    h = np.broadcast_to(p["h0"], (u.shape[0], N)).copy()
    r = np.tanh(h)
    hs, outputs = [h.copy()], []
    for i in range(u.shape[1]):
        h = h + noise_std * xi[:, i] + alpha * (-h + r @ p["n"] @ p["m"].T / N + u[:, i] @ wi_full)
        r = np.tanh(h + p["b"])
        outputs.append(np.tanh(h) @ wo_full / N)
        hs.append(h.copy())
    return np.stack(hs, axis=1), np.stack(outputs, axis=1)


def test_lint_network_has_lint_dynamics(tmp_path):
    torch = pytest.importorskip("torch")
    state = _lint_state()
    path = tmp_path / "rdm_rank2_30.pt"
    torch.save(state, path)
    alpha, lint_noise, seed = 0.2, 0.05, 7
    lint = load_lint_network(path, alpha=alpha, noise_std=lint_noise)
    assert lint.noise_std == pytest.approx(lint_noise / np.sqrt(alpha), rel=1e-15)
    u = np.random.default_rng(5).normal(size=(3, 25, 2))
    xi = cs.private_noise(seed, 25, 30, n_trials=3)
    h_ref, out_ref = _lint_reference(state, u, xi, alpha, lint_noise)
    result = cs.simulate(lint.network, inputs=u, dt=lint.dt, x0=lint.x0, noise_std=lint.noise_std, seed=seed,
                         record_units="all", backend="numpy")
    # x = h + b; sqrt(alpha) * (noise / sqrt(alpha)) differs from noise by an ulp: float64 rounding only.
    np.testing.assert_allclose(result.potentials - lint.network.b, h_ref, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(lint.output(result.potentials[:, 1:]), out_ref, rtol=1e-11, atol=1e-12)
    # The scales are applied in float64 (LINT multiplies its float32 parameters in float32).
    np.testing.assert_array_equal(lint.network.I, (state["wi"].double() * state["si"].double()[:, None]).numpy().T)
    np.testing.assert_array_equal(lint.readout, (state["wo"].double() * state["so"].double()).numpy())


def test_lint_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    network = _network(N=20, R=1, D=2)
    readout = np.random.default_rng(6).normal(size=(20, 3))
    x0 = np.random.default_rng(7).normal(size=20)
    path = tmp_path / "ours.pt"
    save_lint_network(path, network, readout=readout, x0=x0)
    state = torch.load(path, weights_only=True)
    assert sorted(state) == sorted(["wi", "si", "m", "n", "b", "wo", "so", "h0"])
    assert tuple(state["wi"].shape) == (2, 20) and tuple(state["wo"].shape) == (20, 3)
    lint = load_lint_network(path, alpha=0.1)
    for name in ("m", "n", "I", "b"):
        np.testing.assert_array_equal(getattr(lint.network, name), getattr(network, name))
    np.testing.assert_array_equal(lint.readout, readout)
    np.testing.assert_allclose(lint.x0, x0, rtol=0, atol=1e-15)  # (x0 - b) + b
    a = cs.simulate(network, 20, x0=x0, backend="numpy")
    b = cs.simulate(lint.network, 20, x0=lint.x0, backend="numpy")
    np.testing.assert_allclose(b.kappa, a.kappa, rtol=0, atol=1e-13)
    assert sigma_to_lint_noise(lint_noise_to_sigma(0.05, 0.2), 0.2) == pytest.approx(0.05, rel=1e-15)


class _Payload:
    pass


def test_lint_bad_files(tmp_path):
    torch = pytest.importorskip("torch")
    pickled = tmp_path / "object.pt"
    torch.save({"net": _Payload()}, pickled)
    with pytest.raises(ValueError, match="without running code") as info:
        load_lint_network(pickled)
    assert "weights_only=False" not in str(info.value)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"m": 1}))
    with pytest.raises(ValueError, match="without running code"):
        load_lint_network(plain)
    state = _lint_state()
    del state["so"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['so'\]"):
        load_lint_network(tmp_path / "missing.pt")
    state = _lint_state()
    state["n"] = state["n"][:-1]
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match="'n' of shape"):
        load_lint_network(tmp_path / "shape.pt")
    torch.save({"model_state_dict": {}, "args": {}}, tmp_path / "official.pth")
    with pytest.raises(ValueError, match="load_official_checkpoint"):
        load_lint_network(tmp_path / "official.pth")


# --------------------------------------------------------------------------- NWB


def test_nwb_rates_round_trip(tmp_path):
    pynwb = pytest.importorskip("pynwb")
    rng = np.random.default_rng(8)
    lengths = np.array([7, 10, 4])
    data = as_trial_data(rng.random((3, 10, 5)), rng.normal(size=(3, 10, 2)), lengths, dt=0.01)
    latents = rng.normal(size=(3, 10, 2)) * data.mask()[..., None]
    path = tmp_path / "sim.nwb"
    write_nwb(path, data, latents=latents, identifier="test")
    assert pynwb.validate(path=str(path)) == []
    back = read_nwb_timeseries(path)
    for field in ("spikes", "inputs", "lengths"):
        np.testing.assert_array_equal(getattr(back, field), getattr(data, field))
    assert back.dt == pytest.approx(0.01)
    latents_back = read_nwb_timeseries(path, name="latents", inputs=None)
    np.testing.assert_array_equal(latents_back.spikes, latents)
    # read_nwb finds the rates series when the file has no units table.
    np.testing.assert_array_equal(read_nwb(path).spikes, data.spikes)
    np.testing.assert_array_equal(read_nwb(path, trials=[2, 0]).spikes[0, :4], data.spikes[2, :4])
    # Other NWB tools read it with pynwb alone.
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        assert nwbfile.acquisition["rates"].data.shape == (lengths.sum(), 5)
        assert len(nwbfile.trials) == 3
    with pytest.raises(ValueError, match="no TimeSeries named 'spikes'"):
        read_nwb_timeseries(path, name="spikes")


def test_nwb_spike_counts_round_trip(tmp_path):
    pynwb = pytest.importorskip("pynwb")
    counts = np.random.default_rng(9).poisson(1.5, size=(2, 6, 4)).astype(float)
    data = as_trial_data(counts, None, [6, 5], kind="counts", dt=0.02)
    path = tmp_path / "spikes.nwb"
    write_nwb(path, data, identifier="spikes")
    assert pynwb.validate(path=str(path)) == []
    back = read_nwb(path, bin_width=0.02, smoothing=None)
    np.testing.assert_array_equal(back.lengths, data.lengths)
    np.testing.assert_array_equal(back.spikes, data.spikes)
    with pytest.raises(ValueError, match="end in '.nwb'"):
        write_nwb(tmp_path / "x.h5", data)


def test_cli_reads_nwb_data(tmp_path):
    pytest.importorskip("pynwb")
    import contextlib
    import io

    from connector_sim.cli import _read_neural_data, main

    rates = np.random.default_rng(10).random((2, 8, 3))
    write_nwb(tmp_path / "rec.nwb", as_trial_data(rates, dt=0.05), identifier="rec")
    read, inputs, lengths, kappa, dt, tau = _read_neural_data(tmp_path / "rec.nwb")  # what `fit` reads
    np.testing.assert_array_equal(read, rates)
    assert inputs is None and kappa is None and dt == pytest.approx(0.05)
    np.testing.assert_array_equal(lengths, [8, 8])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["fit", str(tmp_path / "absent.nwb"), "--rank", "2", "--out", str(tmp_path / "fit.npz")])
    assert status == 2 and "does not exist" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1


def test_read_nwb_reads_a_rates_series_with_timestamps(tmp_path):
    """A TimeSeries with timestamps, as another NWB tool may write it, cut by the trials table."""
    pynwb = pytest.importorskip("pynwb")
    import datetime

    times = np.cumsum(np.full(20, 0.1)) - 0.1  # 0.0, 0.1, ... 1.9
    values = np.arange(40.0).reshape(20, 2)
    nwbfile = pynwb.NWBFile(session_description="other tool", identifier="other",
                            session_start_time=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
    nwbfile.add_acquisition(pynwb.TimeSeries(name="smoothed", data=values, unit="Hz", timestamps=times))
    nwbfile.add_trial(start_time=0.0, stop_time=0.55)   # samples 0.0 .. 0.5
    nwbfile.add_trial(start_time=1.0, stop_time=1.25)   # samples 1.0 .. 1.2
    with pynwb.NWBHDF5IO(str(tmp_path / "other.nwb"), "w") as io:
        io.write(nwbfile)
    data = read_nwb(tmp_path / "other.nwb", series="smoothed")
    np.testing.assert_array_equal(data.lengths, [6, 3])
    np.testing.assert_array_equal(data.spikes[0, :6], values[:6])
    np.testing.assert_array_equal(data.spikes[1, :3], values[10:13])
    assert data.dt is None
