"""Latents: projection, identifiability checks, alignment and the loading transform."""

import numpy as np
import pytest

from connector_sim import LowRankRNN, simulate
from connector_sim.latents import (
    IdentifiabilityWarning,
    align_latents,
    check_identifiability,
    filtered_inputs,
    project_latents,
    r2_score,
    transform_loadings,
    transform_network,
)


def random_network(N=60, R=2, D=1, seed=0):
    rng = np.random.default_rng(seed)
    return LowRankRNN(rng.standard_normal((N, R)), 2.0 * rng.standard_normal((N, R)),
                      rng.standard_normal((N, D)), 0.3 * rng.standard_normal(N))


def test_known_invertible_map_is_recovered():
    # Noise-free latents: least squares recovers A up to rounding (cond(A) ~ 10,
    # 200 well-spread samples), far below 1e-8.
    rng = np.random.default_rng(1)
    kappa = rng.standard_normal((4, 50, 3))
    A = np.array([[2.0, 0.5, -1.0], [0.3, -1.5, 0.2], [1.0, 0.0, 0.7]])
    alignment = align_latents(kappa, kappa @ A.T)
    np.testing.assert_allclose(alignment.A, A, atol=1e-8)
    np.testing.assert_allclose(alignment.offset, 0.0)
    assert alignment.r2 == pytest.approx(1.0, abs=1e-12)
    offset = np.array([0.5, -2.0, 1.0])
    affine = align_latents(kappa, kappa @ A.T + offset, affine=True)
    np.testing.assert_allclose(affine.A, A, atol=1e-8)
    np.testing.assert_allclose(affine.offset, offset, atol=1e-8)
    np.testing.assert_allclose(affine.transform(kappa), kappa @ A.T + offset, atol=1e-8)
    # A linear fit cannot absorb the offset: its R^2 drops.
    assert align_latents(kappa, kappa @ A.T + offset).r2 < 0.9


def test_transformed_network_has_identical_dynamics():
    # m' n'^T = m n^T exactly, so both simulations agree to rounding (1e-10 over
    # 80 steps of a contracting network), and the latents map by A.
    network = random_network()
    A = np.array([[1.5, -0.4], [0.7, 0.9]])
    transformed = transform_network(network, A)
    np.testing.assert_allclose(transformed.connectivity(), network.connectivity(), atol=1e-12)
    np.testing.assert_array_equal(transformed.I, network.I)
    np.testing.assert_array_equal(transformed.b, network.b)
    rng = np.random.default_rng(2)
    inputs = rng.standard_normal((3, 80, 1))
    kappa0 = rng.standard_normal((3, 2))
    x0 = kappa0 @ network.m.T + network.b
    original = simulate(network, inputs=inputs, x0=x0, record_units="all", backend="numpy", dt=0.1)
    mapped = simulate(transformed, inputs=inputs, x0=x0, record_units="all", backend="numpy", dt=0.1)
    np.testing.assert_allclose(mapped.potentials, original.potentials, atol=1e-10)
    np.testing.assert_allclose(mapped.kappa, original.kappa @ A.T, atol=1e-10)
    # The loadings transform row-wise: m'_i = A^{-T} m_i, n'_i = A n_i.
    m_new, n_new = transform_loadings(network.m, network.n, A)
    np.testing.assert_allclose(m_new[5], np.linalg.inv(A).T @ network.m[5], atol=1e-12)
    np.testing.assert_allclose(n_new[5], A @ network.n[5], atol=1e-12)


def test_absorbed_offset_writes_the_same_potentials():
    network = random_network(D=0)
    A = np.array([[0.5, 1.0], [-1.0, 2.0]])
    offset = np.array([0.3, -0.2])
    shifted = transform_network(network, A, offset=offset)
    kappa = np.random.default_rng(3).standard_normal((10, 2))
    x = kappa @ network.m.T + network.b
    np.testing.assert_allclose((kappa @ A.T + offset) @ shifted.m.T + shifted.b, x, atol=1e-12)


def test_project_latents_inverts_the_latent_form():
    network = random_network()
    rng = np.random.default_rng(4)
    inputs = rng.standard_normal((2, 30, 1))
    result = simulate(network, inputs=inputs[:, :-1], kappa0=rng.standard_normal((2, 2)), record_units="all",
                      backend="numpy", dt=0.2)
    v = filtered_inputs(inputs, 0.2)
    np.testing.assert_allclose(v, result.v, atol=1e-12)
    np.testing.assert_allclose(project_latents(network, result.potentials, v), result.kappa, atol=1e-10)
    with pytest.raises(ValueError, match="filtered inputs v"):
        project_latents(network, result.potentials)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 60\)"):
        project_latents(network, result.potentials[..., :5], v)


def test_identifiability_warnings():
    rng = np.random.default_rng(5)
    good = rng.standard_normal((100, 2))
    report = check_identifiability(good)
    assert report.identifiable and report.constant_directions.shape == (2, 0)
    # c^T kappa constant (kappa_1 + kappa_2 = 1): spans R^2 but is not identifiable.
    t = rng.standard_normal(100)
    constant = np.stack([t, 1.0 - t], axis=1)
    with pytest.warns(IdentifiabilityWarning, match="constant in time"):
        report = check_identifiability(constant)
    assert report.spans and not report.varies
    direction = report.constant_directions[:, 0]
    assert abs(abs(direction @ np.array([1.0, 1.0]) / np.sqrt(2)) - 1.0) < 1e-10
    # Latents on a line through the origin do not span R^2.
    with pytest.warns(IdentifiabilityWarning, match="do not span"):
        report = check_identifiability(np.outer(t, [1.0, 2.0]))
    assert not report.spans
    assert not check_identifiability(np.outer(t, [1.0, 2.0]), warn=False).identifiable


def test_r2_score():
    y = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 9.0]])
    assert r2_score(y, y) == 1.0
    np.testing.assert_allclose(r2_score(y, np.tile(y.mean(0), (3, 1)), multioutput="raw_values"), 0.0)
    expected = 1 - ((y - 0.9 * y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    assert r2_score(y, 0.9 * y) == pytest.approx(expected)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="same samples"):
        align_latents(np.zeros((10, 2)), np.zeros((9, 2)))
    with pytest.raises(ValueError, match="invertible 2 x 2"):
        transform_loadings(np.ones((5, 2)), np.ones((5, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="at least 3 samples"):
        align_latents(np.ones((2, 2)), np.ones((2, 2)), affine=True)
    with pytest.raises(ValueError, match="finite"):
        check_identifiability(np.array([[1.0, np.nan], [0.0, 1.0]]))
