"""The command line: simulate -> fit -> infer -> perturb on tiny networks, and its bad-input messages."""

import contextlib
import csv
import io
import json
import re
import time

import numpy as np
import pytest

from connector_sim import LowRankRNN, latent_velocity, simulate
from connector_sim.cli import main
from connector_sim.data import load_arrays, load_network, save_arrays, save_network
from connector_sim.synthetic import latent_grid, quadstable_network

pytest.importorskip("torch")

N_NEURONS, N_TRIALS, N_STEPS = 200, 16, 50


def run(argv):
    """main(argv) with its stdout and stderr captured: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's errors
            status = exc.code
    return status, out.getvalue(), err.getvalue()


def number_after(text, label):
    return float(re.search(re.escape(label) + r"\s*=\s*(-?[0-9.]+)", text).group(1))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """simulate (quadstable, N = 120, a 4 x 4 grid of initial latents, rates of every unit), then fit (LINT)."""
    folder = tmp_path_factory.mktemp("cli")
    outputs = {}
    outputs["simulate"] = run(["simulate", "quadstable", "--n-neurons", N_NEURONS, "--trials", N_TRIALS,
                               "--n-steps", N_STEPS, "--record-units", "all", "--out", folder / "sim.npz",
                               "--network-out", folder / "truth.npz"])
    outputs["fit"] = run(["fit", folder / "sim.npz", "--epochs", 3, "--out", folder / "lint.npz"])
    return folder, outputs


def test_simulate_writes_latents_and_the_rates_of_the_recorded_units(chain):
    folder, outputs = chain
    status, out, err = outputs["simulate"]
    assert status == 0, err
    assert f"quadstable (N = {N_NEURONS}, seed 0), {N_TRIALS} trials x {N_STEPS} steps" in out
    assert f"{N_NEURONS} units recorded" in out
    sim = load_arrays(folder / "sim.npz")
    network, labels = quadstable_network(N_NEURONS, random_state=0)
    # 16 trials: the full 4 x 4 grid of initial latents over [-2.4, 2.4]^2.
    np.testing.assert_array_equal(sim["kappa0"], latent_grid(4, 2.4))
    assert sim["kappa"].shape == (N_TRIALS, N_STEPS + 1, 2)
    np.testing.assert_array_equal(sim["kappa"][:, 0], sim["kappa0"])
    assert float(sim["alpha"]) == pytest.approx(0.1) and float(sim["dt"]) == pytest.approx(0.1)
    # Noise-free and started on the latent subspace: rates = tanh(m kappa_t), to rounding.
    assert sim["rates"].shape == (N_TRIALS, N_STEPS + 1, N_NEURONS)
    np.testing.assert_allclose(sim["rates"], np.tanh(sim["kappa"] @ network.m.T), atol=1e-10)
    np.testing.assert_array_equal(sim["unit_labels"], labels)
    # The same run through the library gives the same latents.
    reference = simulate(network, N_STEPS, dt=0.1, kappa0=latent_grid(4, 2.4), backend="numpy")
    np.testing.assert_allclose(sim["kappa"], reference.kappa, rtol=0, atol=1e-10)
    # The network file holds the simulated network and its cell types.
    saved, extra = load_network(folder / "truth.npz", return_extra=True)
    np.testing.assert_array_equal(saved.m, network.m)
    np.testing.assert_array_equal(saved.n, network.n)
    np.testing.assert_array_equal(extra["labels"], labels)
    assert saved.activation == "tanh" and saved.tau == 1.0


def test_simulate_a_network_file_with_noise_random_starts_and_a_few_units(tmp_path):
    rng = np.random.default_rng(3)
    network = LowRankRNN(rng.standard_normal((50, 3)), 2 * rng.standard_normal((50, 3)), b=0.1 * rng.standard_normal(50),
                         tau=2.0, dtype=np.float32)
    save_network(tmp_path / "net.npz", network)
    argv = ["simulate", tmp_path / "net.npz", "--trials", 5, "--n-steps", 20, "--noise-std", 0.3,
            "--record-units", 4, "--extent", 1.5, "--seed", 7, "--out", tmp_path / "a.npz"]
    status, _, err = run(argv)
    assert status == 0, err
    first = load_arrays(tmp_path / "a.npz")
    # Rank 3: random initial latents in the box; dt defaults to tau / 10; noise needs the full path.
    assert first["kappa"].shape == (5, 21, 3)
    assert np.all(np.abs(first["kappa0"]) <= 1.5)
    assert float(first["dt"]) == pytest.approx(0.2) and str(first["path"]) == "full"
    assert first["rates"].shape == (5, 21, 4) and first["rates"].dtype == np.float32
    np.testing.assert_array_equal(first["units"], np.arange(4))
    # The seed fixes initial latents and noise: the same command gives the same file, another seed another.
    assert run(argv[:-1] + [tmp_path / "b.npz"])[0] == 0
    np.testing.assert_array_equal(load_arrays(tmp_path / "b.npz")["kappa"], first["kappa"])
    assert run(argv[:-4] + ["--seed", 8, "--out", tmp_path / "c.npz"])[0] == 0
    assert not np.allclose(load_arrays(tmp_path / "c.npz")["kappa"], first["kappa"])


def test_fit_lint_writes_a_network_whose_latents_are_the_data_s(chain):
    folder, outputs = chain
    status, out, err = outputs["fit"]
    assert status == 0, err
    assert number_after(out, "rate R^2") > 0.95
    assert number_after(out, "R^2") > 0.95
    network = load_network(folder / "lint.npz")
    latents = load_arrays(folder / "lint_latents.npz")
    assert network.n_neurons == N_NEURONS and network.rank == 2
    assert latents["kappa"].shape == (N_TRIALS, N_STEPS + 1, 2)
    assert float(latents["alpha"]) == pytest.approx(0.1) and str(latents["method"]) == "lint"
    # Aligned to the simulation's latents (the file had them) ...
    truth = load_arrays(folder / "sim.npz")["kappa"]
    residual = np.sum((latents["kappa"] - truth) ** 2) / np.sum((truth - truth.mean(axis=(0, 1))) ** 2)
    assert residual < 0.05
    # ... and the written network is written in those coordinates: simulated from the first latents, it
    # runs through all of them (LINT trains in float32: 1e-3).
    rerun = simulate(network, N_STEPS, dt=0.1, kappa0=latents["kappa"][:, 0], backend="numpy").kappa
    np.testing.assert_allclose(rerun, latents["kappa"], atol=1e-3)


def test_fit_velocity_matching_on_the_simulated_latents(chain, tmp_path):
    folder, _ = chain
    status, out, err = run(["fit", folder / "sim.npz", "--method", "velocity", "--n-neurons", 60, "--epochs", 20,
                            "--out", tmp_path / "vm.npz", "--latents-out", tmp_path / "vm_kappa.npz"])
    assert status == 0, err
    network = load_network(tmp_path / "vm.npz")
    latents = load_arrays(tmp_path / "vm_kappa.npz")
    assert network.n_neurons == 60 and network.rank == 2
    # Velocity matching keeps the given latents; its network's latent velocity matches theirs.
    kappa = load_arrays(folder / "sim.npz")["kappa"]
    np.testing.assert_array_equal(latents["kappa"], kappa)
    target = ((kappa[:, 1:] - kappa[:, :-1]) / 0.1).reshape(-1, 2)
    fitted = latent_velocity(network, kappa[:, :-1].reshape(-1, 2))
    r2 = 1 - np.sum((fitted - target) ** 2) / np.sum((target - target.mean(axis=0)) ** 2)
    assert r2 > 0.9
    assert number_after(out, "velocity R^2") == pytest.approx(r2, abs=1e-3)


def test_infer_then_perturb_the_connector(chain, tmp_path):
    from connector_sim.inference import Connector

    folder, _ = chain
    status, out, err = run(["infer", folder / "lint.npz", "--out", tmp_path / "model", "--epochs", 30,
                            "--hidden", 32, "--layers", 2, "--flow-samples", 5000])
    assert status == 0, err
    connector = Connector.load(tmp_path / "model")
    assert connector.n_rows_ == N_NEURONS and connector.layout_.rank == 2 and connector.alpha_ == pytest.approx(0.1)
    assert np.isfinite(number_after(out, "points"))  # the mean-field check's R^2
    assert number_after(out, "points") > 0.5
    # The conditional mean's ridge: linear scaling, c cross-validated, and said so.
    assert connector.ridge_scaling == "linear" and connector.ridge_constant == "cv"
    assert f"lambda = c N = {connector.ridge_lambda_:.4g} (linear scaling, c = {connector.ridge_constant_:g} " \
           "cross-validated over trials" in out
    assert connector.regression_sampling == "sobol" and "N = 1000 sobol rows)" in out

    # --official: the official code's settings, saved with the model.
    status, out, err = run(["infer", folder / "lint.npz", "--out", tmp_path / "official", "--official",
                            "--epochs", 2, "--hidden", 16, "--layers", 1, "--flow-samples", 500])
    assert status == 0, err
    official = Connector.load(tmp_path / "official")
    assert official.n_steps == 20 and official.weight_decay == 1e-5 and official.conditional_ is not None
    assert official.ridge_scaling == "paper" and "lambda = lambda_p N^2 / alpha^2 = 1e+04 (paper scaling" in out
    assert official.regression_sampling == "random" and "N = 1000 random rows)" in out

    status, out, err = run(["perturb", tmp_path / "model", "--silence", "all", "--n-neurons", 1000, "--grid", 3,
                            "--n-steps", 200, "--k-max", 4, "--cell-type-samples", 400, "--out", tmp_path / "p"])
    assert status == 0, err
    summary = json.loads((tmp_path / "p.json").read_text())
    n_types = summary["cell_types"]["n_types"]
    assert summary["perturbations"] == ["control"] + [f"silence type {k}" for k in range(n_types)]
    assert sum(summary["type_fractions"].values()) == pytest.approx(1.0)
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(summary["rows"]) == (1 + n_types) * 9
    for written, row in zip(rows, summary["rows"]):
        assert written["perturbation"] == row["perturbation"]
        assert float(written["kappa_end_0"]) == pytest.approx(row["kappa_end_0"], rel=1e-12)
    for perturbation in summary["perturbations"]:
        assert f"  {perturbation}: " in out


def test_perturb_the_ground_truth_network_silencing_each_type_leaves_two_attractors(chain, tmp_path):
    folder, _ = chain
    status, out, err = run(["perturb", folder / "truth.npz", "--silence", "all", "--silence-units", "0:50",
                            "--out", tmp_path / "truth"])
    assert status == 0, err
    summary = json.loads((tmp_path / "truth.json").read_text())
    assert summary["cell_types"] is None  # the file's own labels
    assert summary["type_fractions"] == {str(k): 0.25 for k in range(4)}

    def stable(system):
        return [p["kappa"] for p in summary["fixed_points"][system] if p["stability"].startswith("stable")]

    # The quadstable network has four attractors; silencing any one of its four cell types leaves a bistable
    # network (paper, Figure 3A). Units 0-49 are type 0: the same perturbation by index.
    assert len(stable("unperturbed")) == 4
    for k in range(4):
        assert len(stable(f"silence type {k}")) == 2
    np.testing.assert_allclose(sorted(stable("silence units 0:50")), sorted(stable("silence type 0")), atol=1e-6)
    # Every run settles onto a stable fixed point of the system in force (16 initial latents per perturbation).
    assert len(summary["rows"]) == 6 * 16
    assert all(row["settled"] and row["attractor_stability"].startswith("stable") for row in summary["rows"])
    assert "control: 4 stable fixed point(s)" in out and "silence type 2: 2 stable fixed point(s)" in out


def test_a_network_with_inputs_goes_through_fit_and_infer(tmp_path):
    from connector_sim.inference import Connector

    rng = np.random.default_rng(0)
    network = LowRankRNN(rng.standard_normal((80, 1)), 2 * rng.standard_normal((80, 1)),
                         I=rng.standard_normal((80, 1)))
    inputs = np.zeros((6, 40, 1))
    inputs[:, 5:15, 0] = np.linspace(-1, 1, 6)[:, None]
    result = simulate(network, dt=0.1, inputs=inputs, record_units="all")
    # LINT's convention: inputs on the rates' bins (u_t acts on bin t + 1).
    padded = np.concatenate([inputs, np.zeros((6, 1, 1))], axis=1)
    save_arrays(tmp_path / "data.npz", rates=result.rates, inputs=padded)
    status, _, err = run(["fit", tmp_path / "data.npz", "--rank", 1, "--epochs", 2, "--out", tmp_path / "net.npz"])
    assert status == 0, err
    fitted = load_network(tmp_path / "net.npz")
    assert fitted.n_inputs == 1 and fitted.rank == 1
    np.testing.assert_array_equal(load_arrays(tmp_path / "net_latents.npz")["inputs"], padded)
    status, _, err = run(["infer", tmp_path / "net.npz", "--out", tmp_path / "model", "--epochs", 3,
                            "--hidden", 16, "--layers", 2, "--flow-samples", 2000])
    assert status == 0, err
    assert Connector.load(tmp_path / "model").layout_.n_inputs == 1


def test_bad_input_ends_with_a_message_and_status_2(chain, tmp_path):
    folder, _ = chain
    save_network(tmp_path / "rank3.npz", LowRankRNN(np.ones((10, 3)), np.ones((10, 3))))
    assert run(["simulate", "quadstable", "--n-neurons", 40, "--trials", 4, "--n-steps", 5,
                "--out", tmp_path / "no_rates.npz"])[0] == 0
    save_arrays(tmp_path / "flat.npz", rates=np.zeros((20, 5)))
    save_arrays(tmp_path / "rates_only.npz", rates=np.zeros((2, 5, 10)))
    save_arrays(tmp_path / "no_alpha.npz", kappa=np.zeros((2, 5, 2)))
    save_arrays(tmp_path / "rank1.npz", kappa=np.zeros((2, 5, 1)), alpha=0.1)
    (tmp_path / "text.npz").write_text("not an archive")
    (tmp_path / "a_file").write_text("")
    cases = [
        (["simulate", "foo", "--out", tmp_path / "x.npz"],
         r"network must be one of \['quadstable', 'bistable', 'limit_cycle', 'ring'\] or a network .npz file"),
        (["simulate", "ring", "--out", tmp_path / "x.txt"], r"--out must name an .npz file. Got '.*x.txt'"),
        (["simulate", tmp_path / "missing.npz", "--out", tmp_path / "x.npz"], r"missing.npz' does not exist"),
        (["simulate", tmp_path / "rank3.npz", "--init", "grid", "--out", tmp_path / "x.npz"],
         r"--init grid needs a rank-2 network; this one has rank 3. Use --init random"),
        (["simulate", "ring", "--trials", 0, "--out", tmp_path / "x.npz"], r"--trials must be at least 1. Got 0"),
        (["simulate", tmp_path / "text.npz", "--out", tmp_path / "x.npz"], r"text.npz' is not a readable .npz archive"),
        (["fit", tmp_path / "no_rates.npz", "--out", tmp_path / "f.npz"],
         r"has no 'rates' .* simulate again with --record-units all"),
        (["fit", tmp_path / "flat.npz", "--rank", 2, "--out", tmp_path / "f.npz"],
         r"'rates' must have shape \(n_trials, n_times, n_neurons\). Got shape \(20, 5\)"),
        (["fit", tmp_path / "rates_only.npz", "--out", tmp_path / "f.npz"],
         r"Give --rank \(the data file has no 'kappa' latents to take it from\)"),
        (["fit", folder / "lint_latents.npz", "--method", "velocity", "--out", tmp_path / "f.npz"], r"has no 'rates'"),
        (["infer", folder / "lint.npz", "--latents", tmp_path / "no_alpha.npz", "--out", tmp_path / "m"],
         r"lacks the key\(s\) \['alpha'\]"),
        (["infer", folder / "lint.npz", "--latents", tmp_path / "rank1.npz", "--out", tmp_path / "m"],
         r"'kappa' must have shape \(n_trials, n_times >= 2, 2\) for the rank-2 network"),
        (["infer", folder / "lint.npz", "--out", tmp_path / "a_file"], r"--out must be a folder"),
        (["perturb", folder / "truth.npz", "--silence", 9, "--out", tmp_path / "p"],
         r"--silence 9: no such cell type. The cell types here are \[0, 1, 2, 3\]"),
        (["perturb", folder / "truth.npz", "--out", tmp_path / "p"], r"Say what to silence"),
        (["perturb", folder / "truth.npz", "--silence-units", "150:250", "--out", tmp_path / "p"],
         rf"--silence-units must name units in \[0, {N_NEURONS - 1}\]"),
        (["perturb", tmp_path / "nowhere", "--silence", "all", "--out", tmp_path / "p"],
         r"source must be a Connector folder or a network .npz file. '.*nowhere' does not exist"),
        (["perturb", tmp_path, "--silence", "all", "--out", tmp_path / "p"], r"is not a Connector folder"),
    ]
    for argv, message in cases:
        status, out, err = run(argv)
        assert status == 2, (argv, out, err)
        assert re.search(message, err), (argv, err)
        assert err.startswith(f"connector-sim {argv[0]}: error: ") and "Traceback" not in err
    # Velocity matching needs latents in the data file.
    status, _, err = run(["fit", tmp_path / "rates_only.npz", "--method", "velocity", "--rank", 2,
                          "--out", tmp_path / "f.npz"])
    assert status == 2 and "needs a 'kappa' array (n_trials, n_times, R)" in err


# --------------------------------------------------------------------------- issue 12: validation before work


def files_in(folder):
    return sorted(path.name for path in folder.iterdir())


def test_every_bad_option_is_one_line_and_status_2_before_any_work_or_write(chain, tmp_path):
    from connector_sim.inference import Connector

    folder, _ = chain
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    save_arrays(inputs / "complex.npz", rates=np.ones((2, 5, 50)) * (1 + 2j))
    save_arrays(inputs / "fifty.npz", rates=np.random.default_rng(0).uniform(-0.5, 0.5, (2, 5, 50)))
    data = (folder / "sim.npz").read_bytes()
    (inputs / "truncated.npz").write_bytes(data[: len(data) // 3])
    np.save(inputs / "array.npy", np.zeros(3))
    (inputs / "array.npy").rename(inputs / "array.npz")
    (inputs / "folder.npz").mkdir()
    (inputs / "notes").mkdir()
    (inputs / "notes" / "todo.txt").write_text("mine")
    rng = np.random.default_rng(0)
    model = inputs / "model"
    Connector(n_epochs=1, hidden=4, n_layers=1, n_regression_samples=20, device="cpu").fit_latents(
        np.cumsum(rng.standard_normal((2, 6, 2)), axis=1), rng.standard_normal((20, 2))).save(model)
    weights = bytearray((model / "weights.pt").read_bytes())
    weights[len(weights) // 2] ^= 0xFF
    (model / "weights.pt").write_bytes(bytes(weights))
    before = files_in(inputs)
    out = tmp_path / "out"
    out.mkdir()
    simulate_ = ["simulate", "ring", "--n-neurons", 40, "--trials", 2, "--n-steps", 5]
    lint, latents = folder / "lint.npz", folder / "lint_latents.npz"
    cases = [
        (simulate_ + ["--seed", 99999999999999999999999, "--out", out / "x.npz"],
         r"--seed must be in \[0, 9223372036854775807\]. Got 99999999999999999999999"),
        (simulate_ + ["--seed", -1, "--out", out / "x.npz"], r"--seed must be in \[0, "),
        (simulate_ + ["--seed", "abc", "--out", out / "x.npz"], r"argument --seed: invalid int value: 'abc'"),
        (simulate_ + ["--dt", 0, "--out", out / "x.npz"], r"--dt must be a finite number > 0. Got 0.0"),
        (simulate_ + ["--noise-std", "nan", "--out", out / "x.npz"], r"--noise-std must be a finite number >= 0"),
        (simulate_ + ["--extent", "inf", "--out", out / "x.npz"], r"--extent must be a finite number > 0"),
        (simulate_ + ["--threads", 0, "--out", out / "x.npz"], r"--threads must be in \[1, [0-9]+\]. Got 0"),
        (simulate_ + ["--record-units", "some", "--out", out / "x.npz"], r"--record-units must be 'none', 'all'"),
        (simulate_ + ["--out", inputs / "folder.npz"], r"--out: Cannot write the file .*folder.npz': it is a folder"),
        (simulate_ + ["--out", out / "missing" / "x.npz"], r"--out: Cannot write .* does not exist. Create it first"),
        (simulate_ + ["--out", out / "x.npz", "--network-out", out / "x.npz"], r"--network-out must differ from --out"),
        (["simulate", inputs / "truncated.npz", "--out", out / "x.npz"], r"truncated.npz' is not a readable .npz"),
        (["simulate", inputs / "array.npz", "--out", out / "x.npz"], r"it is a single .npy array"),
        (["fit", inputs / "complex.npz", "--rank", 2, "--out", out / "f.npz"],
         r"complex.npz': 'rates' must be a real numeric array. Got dtype complex128"),
        (["fit", inputs / "fifty.npz", "--rank", 1000, "--out", out / "f.npz"],
         r"--rank 1000 is more than the data's 50 neurons"),
        (["fit", inputs / "fifty.npz", "--rank", 2, "--epochs", 0, "--out", out / "f.npz"], r"--epochs must be in \[1, "),
        (["fit", inputs / "fifty.npz", "--rank", 2, "--dt", -1, "--out", out / "f.npz"], r"--dt must be a finite"),
        (["fit", inputs / "fifty.npz", "--rank", 2, "--out", out / "f.npz", "--latents-out", out / "f.npz"],
         r"--latents-out must differ from --out"),
        (["infer", lint, "--latents", latents, "--flow-samples", 0, "--out", out / "m"],
         r"--flow-samples must be at least 1. Got 0"),
        (["infer", lint, "--latents", latents, "--hidden", 0, "--out", out / "m"], r"--hidden must be at least 1"),
        (["infer", lint, "--latents", latents, "--flow-samples", 10**23, "--out", out / "m"],
         r"--flow-samples 100000000000000000000000: the mean-field check's samples needs"),
        (["infer", lint, "--latents", latents, "--epochs", 2**63, "--out", out / "m"],
         r"--epochs must be in \[1, 1000000\]. Got 9223372036854775808"),
        (["fit", inputs / "fifty.npz", "--rank", 2, "--epochs", 10**7, "--out", out / "f.npz"], r"--epochs must be in"),
        (["infer", lint, "--latents", latents, "--n-covariance", -1, "--out", out / "m"], r"--n-covariance must"),
        (["infer", lint, "--latents", latents, "--ridge-constant", -1, "--out", out / "m"],
         r"--ridge-constant must be a finite number > 0 \(c of lambda = c N\) or 'cv'. Got -1.0"),
        (["infer", lint, "--latents", latents, "--ridge-constant", "CV", "--out", out / "m"],
         r"--ridge-constant must be a number > 0 or 'cv'. Got 'CV'"),
        (["infer", lint, "--latents", latents, "--hidden", 100_000, "--out", out / "m"],
         r"'hidden' parameter of FlowMatchingCNF must be an int in the range \[1, 65536\]"),
        (["infer", lint, "--latents", latents, "--hidden", 20_000, "--layers", 1000, "--out", out / "m"],
         r"The velocity MLP of FlowMatchingCNF would have about 4e\+11 weights"),
        (["infer", lint, "--latents", latents, "--out", inputs / "notes"],
         r"--out must be a folder that a Connector can be saved as: .* holds other files \('todo.txt'\)"),
        (["infer", lint, "--latents", inputs / "truncated.npz", "--out", out / "m"], r"is not a readable .npz"),
        (["perturb", model, "--silence", "all", "--out", out / "p"],
         r"model' is not a Connector folder .*weights.pt does not match its config"),
        (["perturb", folder / "truth.npz", "--silence-units", "0:10000000000000", "--out", out / "p"],
         rf"--silence-units must name units in \[0, {N_NEURONS - 1}\]"),
        (["perturb", folder / "truth.npz", "--silence-units", "-1", "--out", out / "p"], r"--silence-units must"),
        (["perturb", folder / "truth.npz", "--silence", 0, "--seed", 2**64, "--out", out / "p"], r"--seed must be"),
        (["perturb", folder / "truth.npz", "--silence", 0, "--out", inputs / "folder.npz" / "missing" / "p"],
         r"--out: Cannot write"),
        (["demo", "--out", inputs / "complex.npz"], r"--out: Cannot write the report folder .*: it is a file"),
        (["demo", "--large-n", 0, "--out", out / "report"], r"--large-n must be at least 1"),
    ]
    for argv, message in cases:
        started = time.perf_counter()
        status, stdout, err = run(argv)
        assert status == 2, (argv, stdout, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert err.startswith(f"connector-sim {argv[0]}: error: ") and re.search(message, err), (argv, err)
        assert time.perf_counter() - started < 10, argv  # refused at once (a hang guard)
        assert files_in(out) == [] and files_in(inputs) == before, argv  # and before any write


def test_argparse_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "ring", "--seed", "abc", "--out", "x.npz"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err == ("connector-sim simulate: error: argument --seed: invalid int value: 'abc' "
                   "(see connector-sim simulate --help)\n")


def test_sigterm_during_the_save_ends_with_143_and_leaves_the_previous_file(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    target = tmp_path / "sim.npz"
    save_arrays(target, kappa=np.zeros(3))
    before = target.read_bytes()
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from connector_sim.cli import main

        def slow_savez(stream, **arrays):
            stream.write(b"PK half an archive")
            print("saving", flush=True)
            time.sleep(30)

        np.savez = slow_savez
        sys.exit(main(["simulate", "ring", "--n-neurons", "30", "--trials", "2", "--n-steps", "3",
                       "--backend", "numpy", "--out", {str(target)!r}]))
    """)
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=repository,
                                                                        OMP_NUM_THREADS="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "saving\n"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143 and err == "connector-sim simulate: terminated\n", err
    assert files_in(tmp_path) == ["sim.npz"] and target.read_bytes() == before


def test_demo_refuses_a_large_network_that_cannot_fit_before_any_work(tmp_path):
    status, _, err = run(["demo", "--large-n", 10**13, "--out", tmp_path / "report"])
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("connector-sim demo: error: --large-n 10000000000000: the sampled network needs ")
    assert files_in(tmp_path) == []


def test_fit_shows_a_progress_bar_on_stderr_unless_quiet(chain, tmp_path):
    folder, _ = chain
    status, out, err = run(["fit", folder / "sim.npz", "--epochs", 3, "--out", tmp_path / "a.npz"])
    assert status == 0, err
    # tqdm's bar: the description, the epoch count reached, the ETA field "<" and the rate unit.
    assert "fit LINT" in err and "3/3" in err and "<" in err and "epoch/s" in err, err
    assert out.startswith("fit: ") and "fit LINT" not in out  # the bar goes to stderr only
    status, out, err = run(["fit", folder / "sim.npz", "--epochs", 3, "--out", tmp_path / "b.npz", "--quiet"])
    assert status == 0 and err == "" and out.startswith("fit: "), err


def test_bad_data_found_by_the_estimator_is_still_one_line_with_bars_on(tmp_path):
    # The CLI's own checks pass; LINT.fit rejects the NaN before its first epoch, so no bar has started.
    rates = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 5, 10))
    rates[0, 0, 0] = np.nan
    save_arrays(tmp_path / "nan.npz", rates=rates)
    status, out, err = run(["fit", tmp_path / "nan.npz", "--rank", 1, "--epochs", 2, "--out", tmp_path / "f.npz"])
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("connector-sim fit: error: ") and "%|" not in err, err


def test_ctrl_c_during_a_fit_closes_the_bar_and_exits_130(chain, tmp_path, monkeypatch):
    from connector_sim import _progress

    epochs = _progress.Progress.epochs

    def interrupted_at_epoch_2(self, description, labels=()):
        callback = epochs(self, description, labels)

        def wrapped(estimator, epoch, losses):
            callback(estimator, epoch, losses)
            if epoch == 2:
                raise KeyboardInterrupt
            return False

        return wrapped

    monkeypatch.setattr(_progress.Progress, "epochs", interrupted_at_epoch_2)
    folder, _ = chain
    status, out, err = run(["fit", folder / "sim.npz", "--epochs", 5, "--out", tmp_path / "f.npz"])
    assert status == 130 and out == "", err
    assert "fit LINT" in err and "2/5" in err  # the bar as it stood ...
    assert err.endswith("\nconnector-sim fit: interrupted\n"), err  # ... closed: the message has its own line
    assert files_in(tmp_path) == []


def test_progress_adapter_follows_a_simulation_and_is_silent_when_disabled():
    from connector_sim._progress import Progress

    network, _ = quadstable_network(100, 0)
    stream = io.StringIO()
    with Progress(file=stream) as progress:
        simulate(network, 40, dt=0.1, kappa0=latent_grid(2, 1.0), progress=progress.steps("simulate", delay=0))
    assert "simulate" in stream.getvalue() and "40/40" in stream.getvalue()
    quiet = Progress(enabled=False, file=stream)
    assert quiet.steps("x") is None and quiet.epochs("x") is None and quiet.runs("x") is None
    quiet.log("not shown")
    assert "not shown" not in stream.getvalue()
