"""The Connector pipeline (paper section 6.1) end to end, in its quick version."""

import json

import numpy as np
import pytest

from connector_sim.cli import main


@pytest.mark.slow
def test_quick_demo_writes_a_consistent_report(tmp_path):
    assert main(["demo", "--quick", "--skip-simulation", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "connector.json").read_text())
    for name in ("connector_flow_fields.png", "cell_types.png", "connector.md"):
        assert (tmp_path / name).stat().st_size > 0
    # LINT on noise-free rates recovers the latents up to a linear map.
    assert report["lint"]["latent_alignment_r2"] > 0.95
    # The ground truth has its four attractors; so does the Connector sample's mean field.
    assert report["n_stable_fixed_points"]["ground truth"] == 4
    assert report["n_stable_fixed_points"]["Connector"] == 4
    # Each ground truth is closest to the Connector fit of itself.
    matrix = np.array(report["dissimilarity"]["matrix"])
    assert matrix.shape == (4, 4)
    assert all(report["dissimilarity"]["diagonal_is_row_minimum"])
    assert np.all(matrix >= -1e-6)
    # Every section of the full report is there (the quick run is a smoke run of the same code).
    # The conditional mean's ridge choice is reported (lambda = c N with N = 1,000 rows).
    assert report["connector"]["ridge_scaling"] == "linear"
    assert report["connector"]["ridge_lambda"] == pytest.approx(1000 * report["connector"]["ridge_constant"])
    assert set(report) == {"settings", "lint", "connector", "fixed_points", "n_stable_fixed_points", "cell_types",
                           "silencing", "dissimilarity", "seconds"}
    # Cell types: the k chosen is the best held-out completed log-likelihood; each rule's k is in its table.
    for found in report["cell_types"].values():
        scores = found["scores"]
        assert found["criterion"] == "completed_log_likelihood"
        assert scores["k"] == list(range(1, report["settings"]["k_max"] + 1))
        assert found["k"] == scores["k"][int(np.argmax(scores["completed_log_likelihood"]))]
        assert found["k_by_silhouette"] == scores["k"][int(np.nanargmax(np.array(scores["silhouette"], float)))]
        assert found["k_by_log_likelihood"] in scores["k"]
    assert len(report["silencing"]) == report["cell_types"]["Connector"]["k"]
    # Silencing a cell type leaves at least one attractor per type, and the types cover all neurons.
    fractions = [entry["fraction_of_neurons"] for entry in report["silencing"].values()]
    assert sum(fractions) == pytest.approx(1.0)
    assert all(entry["n_stable"] >= 1 for entry in report["silencing"].values())
