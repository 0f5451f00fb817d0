"""The dynamic-compression report section: the quick run writes its figure and table; the period estimator."""

import json

import numpy as np
import pytest

from connector_sim.compression_report import oscillation_period, run_compression_report

pytest.importorskip("torch")


def test_oscillation_period_of_sines():
    t = np.arange(0, 20, 0.01)
    signal = np.stack([np.sin(2 * np.pi * t / 1.7 + phase) for phase in (0.0, 1.0, 2.5)])
    # crossings found by linear interpolation between samples 0.01 apart: error O(dt^2) per crossing.
    assert oscillation_period(signal, 0.01) == pytest.approx(1.7, rel=1e-4)
    assert np.isnan(oscillation_period(np.ones((2, 50)), 0.1))


def test_quick_report_writes_figure_table_and_json(tmp_path):
    report = run_compression_report(str(tmp_path), quick=True, progress=False)
    for name in ("compression.png", "compression.md", "compression.json"):
        assert (tmp_path / name).stat().st_size > 0
    with open(tmp_path / "compression.json") as stream:
        saved = json.load(stream)
    assert [row["method"] for row in saved["table"]] == ["PCA", "PCA + LDS", "DCF"]
    assert saved["dcf"]["n_components"] == report["dcf"]["n_components"]
    assert len(saved["dcf"]["dimension_importance"]) == 4
    text = (tmp_path / "compression.md").read_text()
    assert text.startswith("# Dynamic compression flows on the embedded Van der Pol oscillator")
    assert "| van_der_pol | DCF | 30 | 2 |" in text
