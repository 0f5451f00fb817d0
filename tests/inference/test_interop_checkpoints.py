"""Checkpoints of the official Connector code read into a Connector.

The tests write small checkpoints in the official layout (``model_state_dict``
with the two velocity MLPs ``mbd_model`` / ``n_model``, and ``args``) and
compare the loaded Connector's samples with a re-implementation, in the
test, of the official sampler: Swish MLPs on [x, t] and [y, c, t], x_0 ~
N(0, I), torchdiffeq's midpoint rule with step 0.05 on [0, 1] (20 steps),
n = scale * y.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from connector_sim.inference import Connector, dissimilarity  # noqa: E402
from connector_sim.inference.interop import OFFICIAL_N_STEPS, load_official_checkpoint  # noqa: E402


def _mlp_state(prefix, n_in, n_out, hidden, generator):
    state, width = {}, n_in
    for index in range(0, 10, 2):
        out = n_out if index == 8 else hidden
        state[f"{prefix}.{index}.weight"] = torch.randn(out, width, generator=generator) / np.sqrt(width)
        state[f"{prefix}.{index}.bias"] = 0.3 * torch.randn(out, generator=generator)
        width = out
    return state


def _checkpoint(path, *, rank=2, n_inputs=0, bias=False, scale=2.0, hidden=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mbd_dim = rank + n_inputs + int(bias)
    state = _mlp_state("mbd_model", mbd_dim + 1, mbd_dim, hidden, g)
    state.update(_mlp_state("n_model", rank + mbd_dim + 1, rank, hidden, g))
    args = {"k": 1, "n_splits": 5, "latent_dim": rank, "hidden_dim": hidden, "obs_dim": 200, "batch_size": 64,
            "accel": False, "seed": 1, "lr": 1e-3, "weight_decay": 1e-5, "activation": "tanh", "scale": scale,
            "bias": bias, "mbd_training_epochs": 10, "n_training_epochs": 10, "regularizer": 1e-4, "nsamples": 200,
            "datapath": "data.npz", "modelpath": "model", "alpha": 0.1, "train_id": 0}
    torch.save({"model_state_dict": state, "args": args, "best_val_loss": -1, "train_mbd_losses": [1.0],
                "train_n_losses": [1.0], "valid_n_losses": [1.0], "test_n_losses": [1.0]}, path)
    return state


def _official_mlp(state, prefix, inputs):
    h = inputs
    for index in range(0, 10, 2):
        h = h @ state[f"{prefix}.{index}.weight"].T + state[f"{prefix}.{index}.bias"]
        if index < 8:
            h = torch.sigmoid(h) * h  # Swish
    return h


def _official_midpoint(velocity, x, step=0.05, n_steps=20):
    for k in range(n_steps):
        t = k * step
        x = x + step * velocity(x + 0.5 * step * velocity(x, t), t + 0.5 * step)
    return x


def _official_sample(state, x0_mbd, x0_n, scale):
    def time_column(x, t):
        return torch.full((x.shape[0], 1), t, dtype=torch.float32)

    with torch.no_grad():
        mbd = _official_midpoint(lambda x, t: _official_mlp(state, "mbd_model", torch.cat([x, time_column(x, t)], 1)),
                                 torch.as_tensor(x0_mbd))
        y = _official_midpoint(
            lambda x, t: _official_mlp(state, "n_model", torch.cat([x, mbd, time_column(x, t)], 1)),
            torch.as_tensor(x0_n))
    return mbd.double().numpy(), scale * y.double().numpy()


@pytest.mark.parametrize("n_inputs, bias, scale", [(0, False, 2.0), (1, True, 1.0)])
def test_samples_are_the_official_samplers(tmp_path, n_inputs, bias, scale):
    path = tmp_path / "model_fold_1_seed_1_id_0.pth"
    state = _checkpoint(path, n_inputs=n_inputs, bias=bias, scale=scale)
    connector = load_official_checkpoint(path, device="cpu")
    assert isinstance(connector, Connector)
    layout = connector.layout_
    assert (layout.rank, layout.n_inputs) == (2, n_inputs)
    network, rows = connector.sample(300, random_state=5, return_rows=True)
    rng = np.random.default_rng(5)  # the draws Connector.sample makes: x_0 of the marginal, then of n
    mbd_dim = 2 + n_inputs + int(bias)
    x0_mbd = rng.standard_normal((300, mbd_dim)).astype(np.float32)
    x0_n = rng.standard_normal((300, 2)).astype(np.float32)
    mbd, n = _official_sample(state, x0_mbd, x0_n, scale)
    # float32 MLPs (SiLU against sigmoid(x) x, the same times up to float32 rounding), 20 steps: 1e-5.
    np.testing.assert_allclose(network.m, mbd[:, :2], atol=1e-5)
    np.testing.assert_allclose(network.I, mbd[:, 2:2 + n_inputs], atol=1e-5)
    np.testing.assert_allclose(network.b, mbd[:, -1] if bias else 0.0, atol=1e-5)
    np.testing.assert_allclose(network.n, n, atol=1e-5 * scale)
    assert network.tau == 1.0 and network.activation == "tanh" and connector.alpha_ == 0.1


def test_official_sampler_steps_and_connector_api(tmp_path):
    path = tmp_path / "model.pth"
    _checkpoint(path)
    connector = load_official_checkpoint(path, device="cpu", n_mean_draws=4)
    calls = []
    hook = connector.marginal_.model_.register_forward_hook(lambda *args: calls.append(1))
    connector.marginal_.sample(10, random_state=0)
    hook.remove()
    assert OFFICIAL_N_STEPS == 20 and len(calls) == 2 * 20  # 20 midpoint steps of two evaluations
    rows, _ = connector.sample_rows(50, random_state=1)
    log_p = connector.log_prob(rows)
    assert log_p.shape == (50,) and np.all(np.isfinite(log_p))
    total, terms = dissimilarity(connector, connector, n_samples=60, return_terms=True)
    assert terms["conditional_mean"] == 0.0 and np.isfinite(total)
    other = tmp_path / "other.pth"
    _checkpoint(other, scale=6.0, seed=1)
    far = dissimilarity(connector, load_official_checkpoint(other, device="cpu", n_mean_draws=4), n_samples=60)
    assert far > total
    # The mean-field flow averages n phi(m^T kappa + b) over sampled rows (n drawn from the checkpoint's flow).
    velocity = connector.latent_flow(n_samples=2000)
    kappa = np.array([[0.5, -1.0], [2.0, 0.3]])
    rows, _ = connector.sample_rows(2000, random_state=0)
    m, n, b = rows[:, :2], rows[:, 2:4], rows[:, -1]
    expected = -kappa + np.tanh(kappa @ m.T + b) @ n / 2000
    np.testing.assert_allclose(velocity(kappa), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(NotImplementedError, match="load_official_checkpoint"):
        connector.save(tmp_path / "folder")


class _Payload:
    pass


def test_bad_checkpoints(tmp_path):
    pickled = tmp_path / "object.pth"
    torch.save({"model_state_dict": _Payload(), "args": {}}, pickled)
    with pytest.raises(ValueError, match="without running code") as info:
        load_official_checkpoint(pickled)
    assert "weights_only=False" not in str(info.value)
    lint = tmp_path / "lint.pt"
    torch.save({"m": torch.zeros(3, 1), "n": torch.zeros(3, 1), "wi": torch.zeros(1, 3)}, lint)
    with pytest.raises(ValueError, match="load_lint_network"):
        load_official_checkpoint(lint)
    state = _checkpoint(tmp_path / "good.pth")
    state["n_model.8.weight"] = state["n_model.8.weight"][:1]
    state["n_model.8.bias"] = state["n_model.8.bias"][:1]
    torch.save({"model_state_dict": state, "args": {"latent_dim": 2}}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="'n_model' maps"):
        load_official_checkpoint(tmp_path / "shape.pth")
    state = _checkpoint(tmp_path / "good.pth")
    state["extra.weight"] = torch.zeros(1)
    torch.save({"model_state_dict": state, "args": {"latent_dim": 2}}, tmp_path / "keys.pth")
    with pytest.raises(ValueError, match="unexpected keys"):
        load_official_checkpoint(tmp_path / "keys.pth")
    state = _checkpoint(tmp_path / "good.pth")
    torch.save({"model_state_dict": state, "args": {}}, tmp_path / "args.pth")
    with pytest.raises(ValueError, match="latent_dim"):
        load_official_checkpoint(tmp_path / "args.pth")
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(tmp_path / "absent.pth")


# --------------------------------------------------------------------------- command line


def _run(argv):
    import contextlib
    import io

    from connector_sim.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def _official_data_file(path, N=60, T=12, n_trials=6, seed=0):
    """A file in the official data layout (MBD, N, latents, potentials, rates), from the official update."""
    rng = np.random.default_rng(seed)
    M, Nm = rng.normal(size=(N, 2)), 2.5 * rng.normal(size=(N, 2))
    latents = np.zeros((n_trials, T, 2))
    xy = rng.uniform(-2, 2, size=(n_trials, 2))
    for t in range(T):
        latents[:, t] = xy
        xy = xy + 0.1 * (-xy + np.tanh(xy @ M.T) @ Nm / N)
    np.savez(path, MBD=M, N=Nm, latents=latents, potentials=latents @ M.T, rates=np.tanh(latents @ M.T))
    return M, Nm, latents


def test_cli_reads_foreign_files(tmp_path):
    from connector_sim import simulate
    from connector_sim.data import load_arrays
    from connector_sim.interop import load_lint_network, save_lint_network

    M, Nm, latents = _official_data_file(tmp_path / "official.npz")
    status, out, err = _run(["simulate", tmp_path / "official.npz", "--trials", 4, "--n-steps", 30,
                             "--out", tmp_path / "sim.npz"])
    assert status == 0, err
    assert "official Connector data" in out
    sim = load_arrays(tmp_path / "sim.npz")
    from connector_sim import LowRankRNN

    expected = simulate(LowRankRNN(M, Nm), 30, kappa0=sim["kappa0"])
    np.testing.assert_array_equal(sim["kappa"], expected.kappa)

    network = LowRankRNN(M, Nm)
    save_lint_network(tmp_path / "lint.pt", network)
    status, out, err = _run(["simulate", tmp_path / "lint.pt", "--trials", 4, "--n-steps", 10, "--dt", 0.2,
                             "--out", tmp_path / "sim_lint.npz"])
    assert status == 0, err
    sim = load_arrays(tmp_path / "sim_lint.npz")
    expected = simulate(load_lint_network(tmp_path / "lint.pt").network, 10, dt=0.2, kappa0=sim["kappa0"])
    np.testing.assert_array_equal(sim["kappa"], expected.kappa)

    # fit: the official 'rates' and 'latents' (the fit is written in the latents' coordinates).
    status, out, err = _run(["fit", tmp_path / "official.npz", "--epochs", 1, "--out", tmp_path / "fit.npz"])
    assert status == 0, err
    assert "latents aligned" in out
    # infer: the network and its latents from the one official file.
    status, out, err = _run(["infer", tmp_path / "official.npz", "--epochs", 2, "--hidden", 16, "--layers", 2,
                             "--flow-samples", 2000, "--out", tmp_path / "model"])
    assert status == 0, err
    # perturb: an official checkpoint is a Connector to sample from.
    _checkpoint(tmp_path / "model_fold_1_seed_1_id_0.pth")
    status, out, err = _run(["perturb", tmp_path / "model_fold_1_seed_1_id_0.pth", "--n-neurons", 300,
                             "--silence-units", "0:10", "--n-steps", 20, "--cell-type-samples", 200, "--k-max", 2,
                             "--grid", 2, "--out", tmp_path / "perturb"])
    assert status == 0, err
    assert "sampled at N = 300" in out


def test_cli_rejects_bad_foreign_files_before_any_work(tmp_path):
    _checkpoint(tmp_path / "model.pth")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    np.savez(tmp_path / "no_rates.npz", MBD=np.zeros((5, 2)), N=np.zeros((5, 2)))
    cases = [(["simulate", tmp_path / "model.pth", "--out", tmp_path / "a.npz"], "perturb"),
             (["simulate", tmp_path / "bad.pt", "--out", tmp_path / "a.npz"], "without running code"),
             (["fit", tmp_path / "no_rates.npz", "--rank", 2, "--out", tmp_path / "a.npz"], "'rates'"),
             (["infer", tmp_path / "no_rates.npz", "--out", tmp_path / "m"], "'latents'"),
             (["infer", tmp_path / "model.pth", "--out", tmp_path / "m"], "already a Connector")]
    for argv, words in cases:
        status, out, err = _run(argv)
        assert status == 2 and out == "", (argv, out, err)
        assert len(err.strip().splitlines()) == 1 and words in err, err
    assert not (tmp_path / "a.npz").exists() and not (tmp_path / "m").exists()
