"""The drift-diffusion matching report: run_system and the `connector-sim ddm` command (tiny sizes)."""

import json
import os

import numpy as np
import pytest

from connector_sim.cli import main

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

TINY = ["--quick", "--n-neurons", "100", "--epochs", "1", "--big-neurons", "2000", "--trials", "4",
        "--duration", "10"]


def test_cli_trains_simulates_and_compares_one_system(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["ddm", "cycling", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "held-out drift error" in printed and "sampled network N = 2,000" in printed
    for suffix in (".md", ".json", ".png"):
        assert (out / f"ddm_cycling{suffix}").stat().st_size > 0
    report = json.loads((out / "ddm_cycling.json").read_text())
    assert report["big_neurons"] == 2000 and report["n_trials"] == 4
    assert 0 < report["drift_error"] < 0.5 and report["time_scale"] > 0
    # 10 SDE time units at the preset step 0.02: 500 steps, simulated through the latent path.
    assert report["simulation_sampled"]["n_steps"] == 500 and report["simulation_sampled"]["path"] == "latent"
    rows = report["comparison_sampled"]
    assert {"mean", "standard deviation", "occupancy", "period"} <= {row["statistic"] for row in rows}
    assert "| statistic |" in (out / "ddm_cycling.md").read_text()
    # Both the SDE and the network cycle counterclockwise (omega = 1.5 > 0).
    split = report["decomposition"]
    assert split["cycling_rate_sde"] > 0 and split["cycling_rate_network"] > 0
    assert 0 <= split["asymmetry"] <= 1 and (out / "ddm_cycling_decomposition.png").exists()


def test_run_system_without_a_large_network(tmp_path):
    from connector_sim.ddm.pipeline import run_system

    messages = []
    report = run_system("double_well", str(tmp_path), quick=True, n_neurons=100, n_epochs=1, big_neurons=0,
                        n_trials=4, duration=20.0, log=messages.append)
    assert "comparison_sampled" not in report and report["agree_trained"]
    assert np.isnan(report["expected_sampled_drift_error"]) if report["expected_sampled_drift_error"] is not None \
        else True
    assert os.path.exists(tmp_path / "ddm_double_well.png") and messages[0].startswith("[ddm double_well]")


@pytest.mark.parametrize("arguments, message", [
    (["ddm", "pendulum"], "SYSTEM must be one of"),
    (["ddm", "lorenz", "--n-neurons", "1"], "--n-neurons must be an int >= 2"),
    (["ddm", "lorenz", "--duration", "-1"], "--duration must be a positive"),
    (["ddm", "all", "--epochs", "3"], "runs the report's own sizes"),
    (["ddm", "lorenz", "--device", "gpu"], "--device must be"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, arguments, message):
    assert main([*arguments, "--out", str(tmp_path / "never")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "never").exists()
