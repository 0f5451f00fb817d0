"""Datasets for dynamic compression: shapes, ground truth consistent with X, reproducible seeds, file loaders."""

import numpy as np
import pytest

from connector_sim.compression_data import (
    DATASETS,
    CompressionDataset,
    RandomEmbedding,
    embed,
    load_compression_data,
    make_dataset,
    network_dataset,
    van_der_pol_dataset,
    van_der_pol_sde,
)
from connector_sim.data import save_arrays, save_npz, as_trial_data
from connector_sim.ddm import rk4_trajectory

SMALL = dict(n_trials=6, n_times=40)


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_has_the_documented_shapes(name):
    extra = {"n_neurons": 120} if name.startswith("lrrnn") else {"n_features": 30}
    data = make_dataset(name, **SMALL, **extra)
    D = extra.get("n_neurons", extra.get("n_features"))
    d = 3 if name == "lorenz" else 2
    assert isinstance(data, CompressionDataset) and data.name == name
    assert data.X.shape == (6, 40, D) and data.latents.shape == (6, 40, d)
    assert data.latent_dim == d and data.n_features == D
    np.testing.assert_array_equal(data.lengths, np.full(6, 40))
    assert data.dt > 0 and np.all(np.isfinite(data.X)) and np.all(np.isfinite(data.latents))
    assert data.trial_data().spikes.shape == data.X.shape


def test_linear_embedding_is_an_orthonormal_map_plus_noise_of_the_stated_size():
    data = make_dataset("linear_gaussian", n_trials=20, n_times=100, n_features=60)
    e = data.embedding
    np.testing.assert_allclose(e.readout.T @ e.readout, np.eye(2), atol=1e-12)
    u = (data.latents - e.latent_mean) / e.latent_std
    residual = data.X - e.scale * u @ e.readout.T
    # 20 * 100 * 60 = 120,000 draws of N(0, 0.05^2): the sample std is within ~0.2% (3 standard errors of 1/sqrt(2n)).
    assert residual.std() == pytest.approx(0.05, rel=0.01)
    # unit mean variance of the noise-free features
    clean = (e.scale * u @ e.readout.T).reshape(-1, 60)
    assert clean.var(axis=0).mean() == pytest.approx(1.0, rel=1e-9)


def test_tanh_embedding_reproduces_X_from_the_latents_and_is_not_linear():
    data = make_dataset("van_der_pol", n_trials=10, n_times=100, n_features=40)
    e = data.embedding
    clean = e.scale * e((data.latents - e.latent_mean) / e.latent_std)
    assert (data.X - clean).std() == pytest.approx(0.05, rel=0.02)
    # The best affine map of the 2 latents leaves part of the clean data unexplained (a linear embedding leaves none).
    z = np.hstack([data.latents.reshape(-1, 2), np.ones((1000, 1))])
    coef = np.linalg.lstsq(z, clean.reshape(-1, 40), rcond=None)[0]
    unexplained = ((clean.reshape(-1, 40) - z @ coef) ** 2).sum() / ((clean - clean.mean((0, 1))) ** 2).sum()
    assert unexplained > 0.05


def test_random_embedding_checks_its_parameters():
    with pytest.raises(ValueError, match="'kind' parameter of RandomEmbedding"):
        RandomEmbedding(2, 10, kind="quadratic")
    with pytest.raises(ValueError, match="'n_features' parameter"):
        RandomEmbedding(3, 2)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        RandomEmbedding(2, 10, random_state=0)(np.zeros((4, 3)))
    X, e = embed(np.zeros((2, 5, 2)), 8, observation_noise=0.0, random_state=0)  # constant latents: no division by 0
    assert np.all(np.isfinite(X))


def test_van_der_pol_sde_has_the_lienard_period():
    """rho = 2, tau = 15: the classical oscillator with mu = 2 in time tau t; its period is 7.6299 / tau."""
    sde = van_der_pol_sde(2.0, 15.0, noise=0.0)
    path = rk4_trajectory(sde, np.array([1.0, 1.0]), 4000, 0.001)[:, 0]
    up = np.flatnonzero((path[:-1] < 0) & (path[1:] >= 0))[2:]  # upward zero crossings after the transient
    period = np.diff(up).mean() * 0.001
    # 7.6299 is the mu = 2 period of x'' - mu (1 - x^2) x' + x = 0 (tabulated); crossings are on a 0.001 grid (0.2%).
    assert period == pytest.approx(7.6299 / 15, rel=0.005)


def test_the_same_seed_gives_the_same_data_and_trials_do_not_depend_on_their_number():
    a = van_der_pol_dataset(n_trials=4, n_times=30, n_features=20, random_state=3)
    b = van_der_pol_dataset(n_trials=4, n_times=30, n_features=20, random_state=3)
    c = van_der_pol_dataset(n_trials=4, n_times=30, n_features=20, random_state=4)
    more = van_der_pol_dataset(n_trials=8, n_times=30, n_features=20, random_state=3)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.latents, b.latents)
    assert not np.allclose(a.latents, c.latents)
    # counter-based SDE noise keyed by trial, initial states drawn row by row: the first 4 trials are the same.
    np.testing.assert_array_equal(more.latents[:4], a.latents)


def test_network_dataset_rates_are_phi_of_m_kappa():
    from connector_sim.synthetic import gaussian_network_distribution

    data = network_dataset("lrrnn_limit_cycle", n_neurons=150, n_trials=3, n_times=50, random_state=2)
    network = gaussian_network_distribution("limit_cycle").sample(150, random_state=2)
    # noise-free, started on the latent subspace: x_t = m kappa_t exactly (theory eq. 2), rates tanh(x_t).
    np.testing.assert_allclose(data.X, np.tanh(data.latents @ network.m.T), atol=1e-10)
    with pytest.raises(ValueError, match="'name' parameter of network_dataset"):
        network_dataset("lrrnn_chaos")


def test_load_an_npz_with_X_and_latents_and_a_findr_file(tmp_path):
    rng = np.random.default_rng(0)
    X, z = rng.standard_normal((5, 12, 7)), rng.standard_normal((5, 12, 2))
    save_arrays(tmp_path / "data.npz", X=X, latents=z, dt=0.02, lengths=np.array([12, 10, 12, 9, 12]))
    data = load_compression_data(str(tmp_path / "data.npz"))
    assert data.dt == 0.02 and data.name == "data" and data.latent_dim == 2
    np.testing.assert_array_equal(data.lengths, [12, 10, 12, 9, 12])
    np.testing.assert_array_equal(data.X[1, :10], X[1, :10])
    assert np.all(data.X[1, 10:] == 0)  # padding beyond a trial's length is zeroed
    save_npz(tmp_path / "findr.npz", as_trial_data(rng.poisson(2.0, (3, 8, 4)), lengths=[8, 6, 7], kind="counts"))
    findr = load_compression_data(str(tmp_path / "findr.npz"))
    assert findr.X.shape == (3, 8, 4) and findr.latents is None
    np.testing.assert_array_equal(findr.lengths, [8, 6, 7])


def test_loader_bad_input(tmp_path):
    with pytest.raises(ValueError, match="synthetic dataset name"):
        load_compression_data("data.csv")
    with pytest.raises(ValueError, match="Unknown dataset|synthetic dataset name"):
        load_compression_data("van_der_poll")
    with pytest.raises(FileNotFoundError):
        load_compression_data(str(tmp_path / "missing.npz"))
    save_arrays(tmp_path / "nokey.npz", kappa=np.zeros((2, 3, 2)))
    with pytest.raises(ValueError, match="has no observations"):
        load_compression_data(str(tmp_path / "nokey.npz"))
    X = np.zeros((2, 4, 3))
    X[1, 2, 0] = np.nan
    save_arrays(tmp_path / "nan.npz", X=X)
    with pytest.raises(ValueError, match="non-finite value"):
        load_compression_data(str(tmp_path / "nan.npz"))
    save_arrays(tmp_path / "badlatents.npz", X=np.zeros((2, 4, 3)), latents=np.zeros((2, 5, 1)))
    with pytest.raises(ValueError, match="same trials and bins"):
        load_compression_data(str(tmp_path / "badlatents.npz"))


def write_nwb(path, rates_hz, n_trials, trial_seconds, seed=0):
    """A synthetic NWB file: Poisson units whose rates differ per unit, and a trials table."""
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile

    rng = np.random.default_rng(seed)
    nwb = NWBFile(session_description="synthetic", identifier="compression-test",
                  session_start_time=datetime(2026, 1, 1, tzinfo=timezone.utc))
    total = n_trials * trial_seconds
    for rate in rates_hz:
        times = np.sort(rng.uniform(0, total, rng.poisson(rate * total)))
        nwb.add_unit(spike_times=times)
    for k in range(n_trials):
        nwb.add_trial(start_time=k * trial_seconds, stop_time=(k + 1) * trial_seconds)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_nwb_path_gives_binned_rates(tmp_path):
    pytest.importorskip("pynwb")
    rates = [5.0, 20.0, 40.0]
    write_nwb(tmp_path / "session.nwb", rates, n_trials=4, trial_seconds=2.0)
    data = load_compression_data(str(tmp_path / "session.nwb"), bin_width=0.02, smoothing=0.05)
    assert data.X.shape == (4, 100, 3) and data.latents is None and data.dt == 0.02
    # Mean smoothed rate per unit ~ its Poisson rate: 8 s of data, standard error sqrt(rate / 8 s) (< 2.3 Hz).
    mean = data.X.reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(mean - rates) < 4 * np.sqrt(np.array(rates) / 8.0) + 1.0), mean
    # The recording goes through the comparison like synthetic data (no ground truth: R^2 columns are NaN).
    from connector_sim.inference.compression_compare import compare_compression

    rows = compare_compression(data, latent_dim=2, methods=("pca", "pca_lds"), horizon=5, k_max=3)
    assert [row["dataset"] for row in rows] == ["session", "session"]
    assert all(np.isnan(row["r2_affine"]) and np.isfinite(row["forecast_nmse"]) for row in rows)
