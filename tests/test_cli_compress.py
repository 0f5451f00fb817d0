"""``connector-sim compress``: bad input ends with one line and status 2 before any fit; a tiny run end to end."""

import contextlib
import io
import json

import numpy as np
import pytest

from connector_sim.cli import BAD_INPUT, main
from connector_sim.data import load_arrays, save_arrays

pytest.importorskip("torch")


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def bad(argv, message):
    status, out, err = run(argv)
    assert status == BAD_INPUT, (out, err)
    assert err.count("\n") == 1 and message in err, err
    assert err.startswith("connector-sim compress: error:")


def test_bad_input_ends_with_one_line_and_status_2(tmp_path):
    out = ["--out", tmp_path / "run"]
    bad(["compress", "van_der_pol", "--k-target", 5, "--k-max", 4, *out], "--k-target (5) must be at most --k-max (4)")
    bad(["compress", "van_der_pol", "--k-max", 40, "--n-features", 30, "--trials", 4, "--n-times", 20, *out],
        "--k-max (40) must be at most the data's dimension D = 30")
    bad(["compress", tmp_path / "missing.npz", *out], "does not exist")
    bad(["compress", "van_der_pool", *out], "DATA must be a synthetic dataset")
    bad(["compress", "van_der_pol", "--compare", "pca,umap", *out], "--compare takes")
    bad(["compress", "van_der_pol", "--epochs", 0, *out], "--epochs must be at least 1")
    bad(["compress", "van_der_pol", "--depth", 0, *out], "--depth must be at least 1")
    bad(["compress", "van_der_pol", "--horizon", 5, "--lag", 2, *out], "must be a multiple of --lag")
    bad(["compress", "van_der_pol", "--device", "tpu", *out], "device must be")
    (tmp_path / "file").write_text("")
    bad(["compress", "van_der_pol", "--out", tmp_path / "file"], "--out must name a folder")
    X = np.zeros((3, 10, 6))
    X[1, 4, 2] = np.nan
    save_arrays(tmp_path / "nan.npz", X=X)
    bad(["compress", tmp_path / "nan.npz", *out], "non-finite value")
    save_arrays(tmp_path / "short.npz", X=np.ones((3, 2, 6)))
    bad(["compress", tmp_path / "short.npz", "--lag", 1, "--k-max", 4, *out], "at least lag + 2 = 3 bins")
    bad(["compress", tmp_path / "short.npz", "--trials", 3, *out], "apply to the synthetic datasets only")
    assert not (tmp_path / "run").exists()  # nothing written by a refused command


def test_a_tiny_run_writes_the_model_the_latents_and_the_table(tmp_path):
    from connector_sim.inference import DynamicCompressionFlow

    status, out, err = run(["compress", "van_der_pol", "--trials", 8, "--n-times", 30, "--n-features", 12,
                            "--k-max", 3, "--epochs", 2, "--horizon", 4, "--device", "cpu", "--compression-width", 16,
                            "--dynamics-width", 16, "--depth", 2, "--solver", "midpoint",
                            "--out", tmp_path / "vdp"])
    assert status == 0, err
    assert out.startswith("compress: van_der_pol (8 trials x 30 bins x 12 features): DCF picked k = ")
    latents = load_arrays(tmp_path / "vdp" / "latents.npz")
    k = int(latents["n_components"])
    assert latents["latents"].shape == (8, 30, k) and latents["true_latents"].shape == (8, 30, 2)
    assert latents["dimension_importance"].shape == (3,)
    model = DynamicCompressionFlow.load(str(tmp_path / "vdp" / "model"))
    np.testing.assert_allclose(model.transform(np.zeros((1, 3, 12))).shape, (1, 3, k))
    with open(tmp_path / "vdp" / "comparison.json") as stream:
        rows = json.load(stream)
    assert [row["method"] for row in rows] == ["PCA", "PCA + LDS", "DCF"]
    assert all(row["latent_dim"] == 2 for row in rows)
    assert "| van_der_pol | DCF | 12 | 2 |" in (tmp_path / "vdp" / "comparison.md").read_text()
