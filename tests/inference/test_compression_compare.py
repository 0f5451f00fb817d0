"""The compression comparison: alignment on known cases, the baselines on a linear-Gaussian embedding, the table."""

import json

import numpy as np
import pytest

from connector_sim.compression_data import make_dataset, network_dataset
from connector_sim.inference.compression_compare import (
    LinearDynamicsCompression,
    PCACompression,
    compare_compression,
    comparison_markdown,
    forecast_nmse,
    signed_permutation_alignment,
    write_comparison,
)


@pytest.fixture(scope="module")
def linear():
    return make_dataset("linear_gaussian", n_trials=24, n_times=100, n_features=50, random_state=1)


def test_signed_permutation_recovers_a_permuted_flipped_scaled_copy_exactly():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((500, 3)) * [1.0, 2.0, 0.5]
    Z = np.empty((500, 4))
    Z[:, [2, 0, 3]] = truth * [-3.0, 0.5, 2.0] + [1.0, -2.0, 0.3]  # reference dim i lives in column [2, 0, 3][i]
    Z[:, 1] = rng.standard_normal(500)                              # an extra, unrelated learned dimension
    result = signed_permutation_alignment(Z, truth)
    np.testing.assert_array_equal(result.permutation, [2, 0, 3])
    np.testing.assert_array_equal(result.signs, [-1, 1, 1])
    np.testing.assert_allclose(result.scale, [1 / 3, 2.0, 0.5], rtol=1e-12)
    assert result.r2 == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(result.transform(Z), truth, atol=1e-12)
    # Unit scale: an exact signed copy still aligns exactly.
    exact = signed_permutation_alignment(-truth[:, ::-1], truth, scale=False)
    np.testing.assert_array_equal(exact.permutation, [2, 1, 0])
    assert exact.r2 == pytest.approx(1.0, abs=1e-12)


def test_a_rotation_is_not_a_signed_permutation():
    rng = np.random.default_rng(1)
    truth = rng.standard_normal((4000, 2))
    angle = np.pi / 4
    rotated = truth @ np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]).T
    # 45 degrees mixes the unit-variance axes equally: each learned axis explains half of each true one (R^2 = 1/2,
    # up to the sampling error of a correlation, ~ 1 / sqrt(4000)).
    assert signed_permutation_alignment(rotated, truth).r2 == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="same samples"):
        signed_permutation_alignment(rotated[:10], truth)


def test_forecast_nmse_known_cases():
    rng = np.random.default_rng(2)
    target = rng.standard_normal((100, 5))
    assert forecast_nmse(target, target) == 0.0
    assert forecast_nmse(target, np.broadcast_to(target.mean(axis=0), target.shape)) == pytest.approx(1.0)


def test_pca_recovers_a_linear_gaussian_embedding_and_picks_its_dimension(linear):
    pca = PCACompression(k_max=6).fit(linear.X)
    assert pca.dimension_picked_ == 2 and pca.n_components_ == 2
    Z = pca.transform(linear.X)
    from connector_sim.latents import align_latents

    # Observation noise 0.05 per feature on unit-variance features: the projection onto 2 of 50 orthonormal
    # directions keeps 2 noise dimensions of variance 0.0025 against a signal of variance ~50 / 2 each.
    assert align_latents(Z, linear.latents, affine=True).r2 > 0.999
    np.testing.assert_allclose(pca.inverse_transform(Z), linear.X, atol=0.3)


def test_ppca_heldout_log_likelihood_matches_a_gaussian_density():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    train, held = rng.standard_normal((300, 6)) * np.arange(1, 7), rng.standard_normal((50, 6)) * np.arange(1, 7)
    mean, eigenvalues, vt = PCACompression._eigen(train)
    scores = PCACompression._ppca_log_likelihood(mean, eigenvalues, vt, held, 6)
    for k in (1, 3, 5):
        sigma2 = eigenvalues[k:].mean()
        cov = vt[:k].T @ np.diag(eigenvalues[:k] - sigma2) @ vt[:k] + sigma2 * np.eye(6)
        assert scores[k - 1] == pytest.approx(multivariate_normal(mean, cov).logpdf(held).mean(), rel=1e-10)
    # Fewer samples than features takes the SVD path: the same spectrum as the covariance's.
    few = train[:4]
    _, values, vectors = PCACompression._eigen(few)
    centred = few - few.mean(axis=0)
    np.testing.assert_allclose(values, np.sort(np.linalg.eigvalsh(centred.T @ centred / 4))[::-1], atol=1e-9)


def test_lds_on_noise_free_linear_data_recovers_the_one_step_map():
    data = make_dataset("linear_gaussian", n_trials=6, n_times=60, n_features=20, noise=0.0, observation_noise=0.0)
    lds = LinearDynamicsCompression(2, k_max=4).fit(data.X)
    # Euler-Maruyama without noise, 2 substeps of h = 0.025 per bin: z_{t+1} = (I + h A)^2 z_t; PCA latents are an
    # invertible linear map of z, so A_ is similar to (I + h A)^2: same eigenvalues (to rounding).
    A = np.array([[-0.5, -2.0], [2.0, -0.5]])
    step = np.linalg.matrix_power(np.eye(2) + 0.025 * A, 2)
    np.testing.assert_allclose(np.sort_complex(np.linalg.eigvals(lds.A_)), np.sort_complex(np.linalg.eigvals(step)),
                               atol=1e-8)
    Z, Xhat = lds.generate(5, x0=data.X[:, 0])
    np.testing.assert_allclose(Xhat[:, 5], data.X[:, 5], atol=1e-8)  # noise-free: the forecast is exact


def test_comparison_table_on_the_linear_gaussian_case(linear, tmp_path):
    rows = compare_compression(linear, methods=("pca", "pca_lds"), horizon=5, k_max=6)
    assert [row["method"] for row in rows] == ["PCA", "PCA + LDS"]
    for row in rows:
        assert row["latent_dim"] == 2 and row["dimension_picked"] == 2 and row["seed_agreement"] == 1.0
        assert row["r2_affine"] > 0.999 and row["n_test"] == 6 and row["n_train"] == 18
        # PCA's axes are a rotation of the truth's, so the signed-permutation R^2 is below the affine one.
        assert row["r2_signed"] < row["r2_affine"]
    pca, lds = rows
    assert lds["forecast_nmse"] < pca["forecast_nmse"]  # a damped rotation: dynamics beat persistence
    markdown = comparison_markdown(rows, title="linear")
    assert markdown.startswith("## linear") and "| linear_gaussian | PCA + LDS | 50 | 2 | 2 |" in markdown
    md, js = write_comparison(rows, str(tmp_path / "table"))
    with open(js) as stream:
        assert json.load(stream)[1]["method"] == "PCA + LDS"


def test_lint_enters_the_table_with_a_seed_agreement():
    data = network_dataset("lrrnn_limit_cycle", n_neurons=60, n_trials=8, n_times=30, random_state=0)
    rows = compare_compression(data, methods=("lint",), n_seeds=2, horizon=5,
                               lint_params={"n_epochs": 2, "patience": None})
    (row,) = rows
    assert row["method"] == "LINT" and row["n_seeds"] == 2 and row["dimension_picked"] is None
    # LINT starts from a reduced-rank regression on rates of a rank-2 tanh network: its latents are close to the truth.
    assert row["r2_affine"] > 0.9 and np.isfinite(row["seed_agreement"]) and np.isfinite(row["forecast_nmse"])


def test_comparison_bad_input(linear):
    with pytest.raises(ValueError, match="must name methods"):
        compare_compression(linear, methods=("pca", "umap"))
    with pytest.raises(ValueError, match="multiple of lag"):
        compare_compression(linear, methods=("pca",), horizon=5, lag=2)
    unlabelled = linear.subset(np.arange(10))
    unlabelled.latents = None
    with pytest.raises(ValueError, match="give latent_dim"):
        compare_compression(unlabelled, methods=("pca",))
    with pytest.raises(ValueError, match="'k_max' parameter"):
        compare_compression(linear, methods=("pca",), k_max=51)
