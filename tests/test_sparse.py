"""Sparse low-rank networks: masks, simulation through simulate(), spectra against theory."""

import math

import numpy as np
import pytest
from backend_support import require_backend

from connector_sim import (
    SparseLowRankRNN,
    SparseMask,
    rank_one_gaussian,
    simulate,
    sparsify,
    spectra,
)
from connector_sim._backends import extension_built


def sparse_backend(name):
    require_backend(name)
    if name == "cpp" and not extension_built("_simulate_sparse_cpp"):
        pytest.skip("the sparse C++ module was not built")


# --- masks -----------------------------------------------------------------------------


@pytest.mark.parametrize("representation", ["stored", "implicit"])
def test_fixed_mask_has_exactly_c_distinct_sorted_columns(representation):
    mask = SparseMask(1000, n_connections=37, seed=4, representation=representation)
    indptr, indices = mask.csr()
    assert indptr[-1] == 1000 * 37 == mask.nnz
    rows = indices.reshape(1000, 37)
    assert np.all(np.diff(rows, axis=1) > 0)
    np.testing.assert_array_equal(mask.columns(123), rows[123])
    # Every column is present with probability C / N: in-degrees have mean C, and
    # (rows independent) variance C (1 - C / N) like a binomial.
    in_degree = np.bincount(indices, minlength=1000)
    assert in_degree.mean() == 37
    assert abs(in_degree.var() / (37 * (1 - 0.037)) - 1) < 0.2  # sd of a variance estimate over 1000: ~4.5%


def test_bernoulli_mask_has_the_right_rate():
    N, s = 2000, 0.95
    mask = SparseMask(N, sparsity=s, seed=9)
    degrees = mask.degrees()
    p = 1 - s
    # Total connections ~ Binomial(N^2, p): 5 standard deviations.
    assert abs(degrees.sum() - N * N * p) < 5 * math.sqrt(N * N * p * (1 - p))
    # Row degrees ~ Binomial(N, p): their variance too (relative sd of the estimate ~ sqrt(2 / N) = 3%).
    assert abs(degrees.var() / (N * p * (1 - p)) - 1) < 0.15
    dense = mask.to_dense()
    assert dense.sum() == degrees.sum()
    np.testing.assert_array_equal(np.flatnonzero(dense[17]), mask.columns(17))


def test_stored_and_implicit_masks_are_the_same_network():
    for N, kwargs in ((500, dict(n_connections=50)), (500, dict(sparsity=0.7)), (20000, dict(n_connections=3))):
        implicit = SparseMask(N, seed=3, **kwargs)
        stored = implicit.stored()
        # 2 bytes per connection for a fixed mask (offsets within strata of at most 2**16), 4 + indptr for CSR
        assert implicit.nbytes == 0 and stored.nbytes == (2 * stored.nnz if stored.kind == "fixed" else
                                                          4 * stored.nnz + 8 * (N + 1))
        for a, b in zip(implicit.csr(), stored.csr()):
            np.testing.assert_array_equal(a, b)
        for row in (0, N // 2, N - 1):
            np.testing.assert_array_equal(implicit.columns(row), stored.columns(row))
        if stored.kind == "fixed":
            np.testing.assert_array_equal(implicit.tile_offsets(), stored.tile_offsets())
    with pytest.raises(ValueError, match="tile_offsets\\(\\) exists for masks with a fixed number"):
        SparseMask(10, sparsity=0.5).tile_offsets()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(sparsity=1.0), ValueError, r"must be a number in \[0, 1\).*Got 1.0"),
    (dict(sparsity=-0.1), ValueError, r"must be a number in \[0, 1\).*Got -0.1"),
    (dict(sparsity="0.5"), TypeError, r"'sparsity' parameter"),
    (dict(n_connections=101), ValueError, r"must be an int in \[1, n_neurons = 100\].*Got 101"),
    (dict(n_connections=0), ValueError, r"must be an int in \[1, n_neurons = 100\].*Got 0"),
    (dict(n_connections=2.5), TypeError, r"'n_connections' parameter"),
    (dict(), ValueError, "Give exactly one of n_connections"),
    (dict(sparsity=0.5, n_connections=5), ValueError, "Give exactly one of n_connections"),
    (dict(sparsity=0.5, representation="csr"), ValueError, r"'representation'.*\['implicit', 'stored'\]"),
    (dict(sparsity=0.5, seed=1.5), TypeError, r"'seed' parameter"),
])
def test_bad_mask_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        SparseMask(100, **kwargs)


def test_too_large_requests_fail_before_allocating():
    huge = SparseMask(2_000_000_000, n_connections=1000)  # implicit: costs nothing
    assert huge.nbytes == 0
    with pytest.raises(ValueError, match="Use representation='implicit'"):
        huge.stored()
    big = sparsify(rank_one_gaussian(200_000, 1.0, 0.5, random_state=0, dtype=np.float32), n_connections=5)
    with pytest.raises(ValueError, match=r"connectivity\(\): a dense 200000 x 200000 matrix needs 320 GB"):
        big.connectivity()
    medium = sparsify(rank_one_gaussian(9000, 1.0, 0.5, random_state=0), n_connections=5)
    with pytest.raises(ValueError, match="Use leading_eigenvalues"):
        spectra.eigenvalues(medium)


def test_network_validation_messages():
    dense = rank_one_gaussian(50, 1.0, 0.5, random_state=0)
    with pytest.raises(ValueError, match="The mask is for 40 neurons but the network has 50"):
        SparseLowRankRNN(dense, SparseMask(40, n_connections=4))
    with pytest.raises(ValueError, match="'scaling'.*Got 'N'"):
        sparsify(dense, n_connections=4, scaling="N")
    with pytest.raises(TypeError, match="network must be a LowRankRNN"):
        sparsify(dense.m, n_connections=4)
    with pytest.raises(ValueError, match=r"\|sigma_mn\| <= sigma\^2"):
        rank_one_gaussian(50, 1.0, 2.0)


def test_connectivity_is_the_masked_low_rank_matrix():
    dense = rank_one_gaussian(60, 2.0, 1.0, random_state=1)
    for scaling, w in (("1/N", 1 / 60), ("1", 1.0)):
        network = sparsify(dense, n_connections=6, seed=2, scaling=scaling)
        P = network.connectivity()
        expected = w * np.outer(dense.m[:, 0], dense.n[:, 0]) * network.mask.to_dense()
        np.testing.assert_allclose(P, expected, rtol=1e-14)
        np.testing.assert_allclose(network.to_scipy(np.float64).toarray(), expected, rtol=1e-14)


# --- simulation --------------------------------------------------------------------------


def test_no_sparsity_reproduces_the_dense_network(backend):
    sparse_backend(backend)
    dense = rank_one_gaussian(400, 2.0, 1.5, random_state=0, n_inputs=1, input_overlap=0.5)
    options = dict(kappa0=[[1.0], [-0.3]], inputs=np.sin(np.arange(30) / 5)[:, None], backend=backend,
                   noise_std=0.2, seed=3, record_units=[0, 5])
    reference = simulate(dense, path="full", **options)
    for kwargs in (dict(sparsity=0.0), dict(n_connections=400)):
        result = simulate(sparsify(dense, seed=1, **kwargs), **options)
        # Same equations; the sums run in a different order (float64: ~1e-16 per step).
        np.testing.assert_allclose(result.kappa, reference.kappa, atol=1e-12)
        np.testing.assert_allclose(result.potentials, reference.potentials, atol=1e-12)


def test_simulate_sparse_on_every_backend_with_inputs_noise_clamp_and_trials(fast_backend):
    sparse_backend(fast_backend)
    dense = rank_one_gaussian(300, 3.0, 2.0, random_state=2, n_inputs=1, input_overlap=0.5, dtype=np.float32)
    network = sparsify(dense, n_connections=40, seed=5, scaling="1")
    options = dict(inputs=np.random.default_rng(0).standard_normal((3, 15, 1)), noise_std=0.3, seed=8,
                   clamp={"units": np.arange(0, 300, 7), "value": 0.0, "start": 5, "stop": 10},
                   record_units="all")
    reference = simulate(network, backend="numpy", **options)
    result = simulate(network, backend=fast_backend, **options)
    assert result.kappa.shape == (3, 16, 1) and result.potentials.shape == (3, 16, 300)
    assert result.path == "full" and result.backend == fast_backend
    # float32 kernels: rational tanh and float32 Box-Muller (see tests/kernels/test_simulate_sparse.py).
    np.testing.assert_allclose(result.potentials, reference.potentials, atol=3e-6 * 10)
    stored = simulate(network.with_representation("stored"), backend=fast_backend, **options)
    np.testing.assert_array_equal(stored.potentials, result.potentials)
    np.testing.assert_array_equal(stored.kappa, result.kappa)


def test_simulate_rejects_the_latent_path_for_sparse_networks():
    network = sparsify(rank_one_gaussian(50, 1.0, 0.5, random_state=0), n_connections=5)
    with pytest.raises(ValueError, match="path='latent' is exact for dense low-rank networks only"):
        simulate(network, 5, path="latent")


def test_kappa_follows_the_mean_field_gain():
    # Structured regime: lambda_1 = C sigma_mn = 3 > bulk sqrt(C) sigma^2 = 0.9; the state settles
    # along m with x ~ m kappa, kappa = gain <n phi(m kappa)>.
    dense = rank_one_gaussian(4000, 0.09, 0.015, random_state=0)
    network = sparsify(dense, n_connections=200, seed=1, scaling="1")
    result = simulate(network, 400, kappa0=[1.0], record_units="all", dt=0.2)
    x = result.potentials[0, -1].astype(np.float64)
    m = dense.m[:, 0]
    projection = m @ x / (m @ m)
    assert abs(result.kappa[0, -1, 0] - projection) < 0.05 * abs(projection)
    assert abs(projection) > 1.0


# --- spectra -----------------------------------------------------------------------------


@pytest.mark.parametrize("N", [300, pytest.param(1200, marks=pytest.mark.slow)])
@pytest.mark.parametrize("s", [0.3, 0.8])
def test_outlier_and_bulk_match_theory(N, s):
    variance, covariance = 16.0, 8.0
    outlier_error, bulk_error = [], []
    for seed in range(2 if N < 1000 else 1):
        network = sparsify(rank_one_gaussian(N, variance, covariance, random_state=seed), sparsity=s, seed=seed)
        values = spectra.eigenvalues(network)
        lam = values[np.argmax(values.real)].real
        outlier_error.append(lam / spectra.predicted_outlier(covariance, sparsity=s) - 1)
        measured = spectra.measured_bulk_radius(values, n_outliers=1)
        predicted = spectra.predicted_bulk_radius(variance, sparsity=s, n_neurons=N, covariance=covariance,
                                                  correlated=True)
        bulk_error.append(measured / predicted - 1)
    # The outlier carries the sample overlap n^T m / N, whose sd is sqrt(sigma^4 + sigma_mn^2) / sqrt(N)
    # (relative 2.2 / sqrt(N) here): 4 sd.
    assert np.max(np.abs(outlier_error)) < 4 * 2.2 / math.sqrt(N)
    # The 99% quantile of the moduli sits a few % inside the edge (measured 2-5%), plus finite-N
    # fluctuations of the heavy-tailed m_i^2 n_i^2 moments (~ 3 / sqrt(N)).
    assert np.max(np.abs(bulk_error)) < 0.06 + 3 / math.sqrt(N)


def test_independent_m_n_bulk_matches_the_paper_and_correlation_grows_it():
    N, s, variance = 800, 0.5, 4.0
    network = sparsify(rank_one_gaussian(N, variance, 0.0, random_state=3), sparsity=s, seed=1)
    measured = spectra.measured_bulk_radius(spectra.eigenvalues(network))
    assert abs(measured / spectra.predicted_bulk_radius(variance, sparsity=s, n_neurons=N) - 1) < 0.06 + 3 / N**0.5
    # Correlated m, n: the paper's radius (sigma^4 only) is too small by sqrt(1 + 2 rho^2).
    correlated = sparsify(rank_one_gaussian(N, variance, 3.6, random_state=3), sparsity=s, seed=1)
    grown = spectra.measured_bulk_radius(spectra.eigenvalues(correlated), n_outliers=1)
    assert grown > 1.2 * spectra.predicted_bulk_radius(variance, sparsity=s, n_neurons=N)
    theory = spectra.network_theory(correlated)
    assert abs(grown / theory.bulk_radius - 1) < 0.06 + 3 / N**0.5


@pytest.mark.parametrize("N", [400, pytest.param(1200, marks=pytest.mark.slow)])
def test_high_sparsity_scaling_matches_theory(N):
    C, variance, covariance = 100, 0.09, 0.02
    network = sparsify(rank_one_gaussian(N, variance, covariance, random_state=N), n_connections=C, seed=2,
                       scaling="1")
    values = spectra.eigenvalues(network)
    outlier = spectra.predicted_outlier(covariance, n_connections=C, n_neurons=N, scaling="1")
    assert outlier == pytest.approx(C * covariance)
    # The outlier: sample overlap sd sqrt(sigma^4 + sigma_mn^2) / sqrt(N) times C, 4 sd.
    assert abs(values[np.argmax(values.real)].real - outlier) < 4 * C * math.hypot(variance, covariance) / N**0.5
    bulk = spectra.predicted_bulk_radius(variance, n_connections=C, n_neurons=N, scaling="1",
                                         covariance=covariance, correlated=True)
    assert bulk == pytest.approx(math.sqrt(C) * math.sqrt(variance**2 + 2 * covariance**2) * math.sqrt((N - C) / N))
    assert abs(spectra.measured_bulk_radius(values, n_outliers=1) / bulk - 1) < 0.06 + 3 / N**0.5


def test_leading_eigenvalues_are_matrix_free_and_match_the_dense_solver(backend):
    sparse_backend(backend)
    network = sparsify(rank_one_gaussian(300, 16.0, 10.0, random_state=0), n_connections=100, seed=4)
    dense_values = spectra.eigenvalues(network)
    outlier = dense_values[np.argmax(dense_values.real)]
    values = spectra.leading_eigenvalues(network, k=3, backend=backend)
    assert abs(values[0] - outlier) < 1e-8 * abs(outlier)


def test_random_radius_and_theory_inputs():
    assert spectra.predicted_random_radius(2.0, sparsity=0.75) == pytest.approx(1.0)
    assert spectra.predicted_random_radius(1.0, n_connections=25, n_neurons=100) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="exactly one of sparsity and n_connections"):
        spectra.predicted_outlier(1.0)
    with pytest.raises(ValueError, match="needs n_neurons"):
        spectra.predicted_bulk_radius(1.0, sparsity=0.5)


def test_plot_spectrum_draws_eigenvalues_outlier_and_circle():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    network = sparsify(rank_one_gaussian(200, 4.0, 2.0, random_state=0), sparsity=0.5, seed=1)
    ax = spectra.plot_spectrum(spectra.eigenvalues(network), theory=spectra.network_theory(network))
    assert len(ax.collections) == 2 and len(ax.lines) == 2
    plt.close(ax.figure)


def test_phase_diagram_corners_land_in_the_predicted_regimes():
    # C = 200, N = 1000, P_ij = X_ij m_i n_j: outlier C sigma_mn, bulk sqrt(C) sigma^2 sqrt(0.8).
    grid = dict(n_connections=200, n_neurons=1000)
    assert spectra.predicted_regime(0.01, 0.001, **grid) == "decaying"        # 0.2 and 0.13
    assert spectra.predicted_regime(0.01, 0.01, **grid) == "structured"       # 2.0 and 0.13
    assert spectra.predicted_regime(0.2, 0.001, **grid) == "chaotic"          # 0.2 and 2.5
    assert spectra.predicted_regime(0.2, 0.02, **grid) == "structured"        # 4.0 and 2.5
    assert spectra.predicted_regime(0.2, 0.01, **grid) == "chaotic"           # 2.0 and 2.5
    diagram = spectra.regime_diagram([0.01, 0.2], [0.001, 0.02], **grid)
    assert diagram.tolist() == [["decaying", "chaotic"], ["structured", "structured"]]


def test_simulated_activity_agrees_with_the_predicted_regimes():
    # Away from the boundaries: decaying activity vanishes, structured activity is static along m,
    # chaotic activity keeps fluctuating (N = 1000, C = 200, 300 steps of dt = 0.2).
    def run(variance, covariance):
        dense = rank_one_gaussian(1000, variance, covariance, random_state=1)
        network = sparsify(dense, n_connections=200, seed=2, scaling="1")
        x0 = np.random.default_rng(0).standard_normal(1000) + dense.m[:, 0]
        x = simulate(network, 300, x0=x0, dt=0.2, record_units="all").potentials[0].astype(np.float64)
        late = x[-100:]
        return np.sqrt(np.mean(late**2)), np.sqrt(np.mean(late.var(axis=0)))

    size, fluctuation = run(0.01, 0.001)
    assert size < 1e-3
    size, fluctuation = run(0.01, 0.01)
    assert size > 0.1 and fluctuation < 1e-3 * size
    size, fluctuation = run(0.2, 0.001)
    assert size > 0.5 and fluctuation > 0.1 * size
