"""Sparse masks with exactly C connections per column (per="column", Herbert & Ostojic) next to per row."""

import math

import numpy as np
import pytest

from connector_sim import SparseMask, rank_one_gaussian, simulate, sparsify, spectra


def test_column_mask_is_the_transpose_of_the_row_mask():
    N, C = 200, 15
    row = SparseMask(N, n_connections=C, seed=4)
    column = SparseMask(N, n_connections=C, seed=4, per="column")
    assert column.representation == "stored" and column.per == "column" and row.per == "row"
    X = column.to_dense()
    np.testing.assert_array_equal(X, row.to_dense().T)
    assert np.all(X.sum(axis=0) == C)  # exactly C per column ...
    assert X.sum(axis=1).std() > 0  # ... and a varying number per row (mean C)
    np.testing.assert_array_equal(column.degrees(), X.sum(axis=1))
    assert column.nnz == N * C and column.density == C / N
    for i in (0, 57, 199):
        np.testing.assert_array_equal(column.columns(i), np.flatnonzero(X[i]))
    indptr, indices = column.csr()
    assert indices.dtype == np.int32 and indptr[-1] == N * C
    assert "per='column'" in repr(column) and column.stored() is column


def test_column_masks_have_no_implicit_form():
    with pytest.raises(ValueError, match="per='column' cannot be implicit.*representation='stored'"):
        SparseMask(100, n_connections=10, per="column", representation="implicit")
    with pytest.raises(ValueError, match="'per'.*'row' or 'column'"):
        SparseMask(100, n_connections=10, per="both")
    with pytest.raises(ValueError, match="Bernoulli mask.*Leave per='row'"):
        SparseMask(100, sparsity=0.5, per="column")
    with pytest.raises(ValueError, match="cannot be implicit"):
        sparsify(rank_one_gaussian(100, 1.0, 0.5), n_connections=10, per="column").with_representation("implicit")
    with pytest.raises(ValueError, match="per row only"):
        SparseMask(100, n_connections=10, per="column").tile_offsets()


@pytest.mark.parametrize("per", ["row", "column"])
def test_simulation_equals_the_dense_euler_steps(per):
    dense = rank_one_gaussian(300, 2.0, 1.5, random_state=0, n_inputs=1, input_overlap=0.5)
    network = sparsify(dense, n_connections=40, seed=2, per=per, scaling="1")
    inputs = np.sin(np.arange(25) / 4)[:, None]
    result = simulate(network, inputs=inputs, kappa0=[0.7], backend="numpy", record_units="all")
    P = network.connectivity()
    x = network.m[:, 0] * 0.7
    for t in range(25):
        x = x + 0.1 * (-x + P @ np.tanh(x) + network.I[:, 0] * inputs[t, 0])
        # float64, sums in another order: ~1e-16 per step.
        np.testing.assert_allclose(result.potentials[0, t + 1], x, atol=1e-12)
    assert network.gain == 40.0  # w N (1 - s) = C with w = 1, the same for both


@pytest.mark.parametrize("per", ["row", "column"])
def test_spectrum_matches_the_same_theory(per):
    # The theory uses only the mean and variance of X_ij, equal for both (theory section 5).
    N, C, variance, covariance = 600, 120, 16.0, 8.0
    network = sparsify(rank_one_gaussian(N, variance, covariance, random_state=1), n_connections=C, seed=3, per=per)
    values = spectra.eigenvalues(network)
    theory = spectra.network_theory(network)
    lam = values[np.argmax(values.real)].real
    # Outlier: the sample overlap n^T m / N has relative sd 2.2 / sqrt(N) (tests/test_sparse.py): 4 sd.
    assert lam == pytest.approx(spectra.predicted_outlier(covariance, n_connections=C, n_neurons=N),
                                rel=4 * 2.2 / math.sqrt(N))
    assert theory.outliers[0].real == pytest.approx(lam, rel=4 * 2.2 / math.sqrt(N))
    # Bulk: as tests/test_sparse.py, the 99 % quantile sits a few % inside the edge.
    predicted = spectra.predicted_bulk_radius(variance, n_connections=C, n_neurons=N, covariance=covariance,
                                              correlated=True)
    measured = spectra.measured_bulk_radius(values, n_outliers=1)
    assert abs(measured / predicted - 1) < 0.06 + 3 / math.sqrt(N)


def test_compiled_backend_reads_the_column_mask_as_csr():
    from backend_support import require_backend

    require_backend("numba")
    dense = rank_one_gaussian(300, 2.0, 1.5, random_state=0)
    network = sparsify(dense, n_connections=40, seed=2, per="column")
    options = dict(kappa0=[[0.7], [-0.2]], noise_std=0.2, seed=5, record_units=[0, 9], n_steps=20)
    reference = simulate(network, backend="numpy", **options)
    result = simulate(network, backend="numba", **options)
    np.testing.assert_allclose(result.potentials, reference.potentials, atol=1e-12)
