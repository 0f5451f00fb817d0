"""The sparse kernels (numba, C++) against the NumPy reference, and the mask assembly.

Runs are short (12 steps): the error between backends grows along a
trajectory, and point-by-point comparisons of long runs test chaos, not code.
"""

import numpy as np
import pytest
from backend_support import REQUIRE_BACKENDS, require_backend

from connector_sim import SparseMask
from connector_sim._backends import extension_built, load_extension
from connector_sim._kernels import simulate_sparse, sparse_mask

ALPHA = 0.2
N_STEPS = 12
NO_CLAMP = (None, None, 0, 0)

#: Largest error allowed, relative to max(1, max |reference|). float64: the
#: kernels sum the gathered values in four lanes and the reference with
#: np.add.at, and use an exp-based tanh within 3e-16 of np.tanh (measured
#: <= 5e-16 after 12 steps). float32: the kernels' rational tanh (error
#: <= 3.5e-7) and float32 Box-Muller (<= 6e-7 times the noise scale), with
#: rounding in a different order (measured <= 1.5e-7).
TOLERANCE = {np.float32: 3e-6, np.float64: 1e-12}

MASKS = {
    "fixed": dict(n_connections=23),
    "fixed-divides": dict(n_connections=25),
    "bernoulli": dict(sparsity=0.9),
    "dense": dict(sparsity=0.0),
}


def require_sparse_backend(name):
    require_backend(name)
    if name == "cpp" and not extension_built("_simulate_sparse_cpp"):
        message = "the sparse C++ module was not built"
        if REQUIRE_BACKENDS:
            pytest.fail(message)
        pytest.skip(message)


def make_case(dtype, n_neurons=250, n_trials=2, rank=2, n_inputs=1, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((rank, n_neurons))
    n = 2.0 * m + rng.standard_normal((rank, n_neurons))

    def cast(a):
        return np.ascontiguousarray(a, dtype)

    return dict(
        m_T=cast(m), n_T=cast(n), I_T=cast(rng.standard_normal((n_inputs, n_neurons))),
        b=cast(0.3 * rng.standard_normal(n_neurons)),
        x0=cast(2.0 * rng.standard_normal((n_trials, n_neurons))),
        u=cast(rng.standard_normal((n_trials, N_STEPS, n_inputs))),
        kappa0=rng.standard_normal((n_trials, rank)),
    )


def make_mask(n_neurons, kind, representation, seed=5):
    return SparseMask(n_neurons, seed=seed, representation=representation, **MASKS[kind])._kernel_args()


def run(backend, case, mask, *, noise_scale=0.0, clamp=NO_CLAMP, n_threads=1, weight=None, gain=0.7,
        activation="tanh"):
    full_path, _ = simulate_sparse.kernels(backend)
    B, N = case["x0"].shape
    R = case["m_T"].shape[0]
    record_idx = np.array([0, N - 1, N // 2, 3], np.int64)
    x = case["x0"].copy()
    kappa = case["kappa0"].copy()
    kappa_out = np.empty((B, N_STEPS + 1, R))
    record_out = np.empty((B, N_STEPS + 1, len(record_idx)), x.dtype)
    weight = 3.0 / N if weight is None else weight
    full_path(mask, case["m_T"], case["n_T"], case["I_T"], case["b"], activation, weight, gain, x, case["u"], ALPHA,
              noise_scale, 17, 1, record_idx, kappa, kappa_out, record_out, clamp, n_threads=n_threads)
    return dict(x=x, kappa=kappa, kappa_out=kappa_out, record_out=record_out)


def assert_close(result, reference, dtype):
    for name in ("x", "kappa_out", "record_out"):
        scale = max(1.0, float(np.max(np.abs(reference[name]))))
        error = float(np.max(np.abs(result[name].astype(np.float64) - reference[name].astype(np.float64))))
        assert error <= TOLERANCE[dtype] * scale, f"{name}: error {error:.3g} > {TOLERANCE[dtype] * scale:.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", list(MASKS))
@pytest.mark.parametrize("noisy", [False, True])
def test_kernel_matches_reference(fast_backend, dtype, kind, noisy):
    require_sparse_backend(fast_backend)
    case = make_case(dtype)
    N = case["b"].shape[0]
    rng = np.random.default_rng(3)
    clamp = (rng.random(N) < 0.3, (0.5 * rng.standard_normal(N)).astype(dtype), 2, 7)
    options = dict(noise_scale=0.3 if noisy else 0.0, clamp=clamp)
    reference = run("numpy", case, make_mask(N, kind, "stored"), **options)
    for representation in ("stored", "implicit"):
        result = run(fast_backend, case, make_mask(N, kind, representation), **options)
        assert_close(result, reference, dtype)


@pytest.mark.parametrize("activation", ["softplus", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smooth_activations_match_reference(fast_backend, activation, dtype):
    # Same tolerance as tanh: both compiled activations are within 2e-16 (float64) and
    # 1.3e-7 (float32) of the reference relative to max(1, |phi|) (test_activations.py),
    # as the tanh is.
    require_sparse_backend(fast_backend)
    case = make_case(dtype)
    reference = run("numpy", case, make_mask(250, "fixed", "stored"), noise_scale=0.3, activation=activation)
    result = run(fast_backend, case, make_mask(250, "fixed", "stored"), noise_scale=0.3, activation=activation)
    assert_close(result, reference, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["fixed", "bernoulli"])
def test_stored_and_implicit_masks_are_bitwise_identical(fast_backend, dtype, kind):
    require_sparse_backend(fast_backend)
    for n_trials, rank in ((1, 1), (1, 2), (3, 2)):  # the specialised widths B R = 1, 2 and the general one
        case = make_case(dtype, n_trials=n_trials, rank=rank)
        N = case["b"].shape[0]
        stored = run(fast_backend, case, make_mask(N, kind, "stored"), noise_scale=0.2)
        implicit = run(fast_backend, case, make_mask(N, kind, "implicit"), noise_scale=0.2)
        for name in stored:
            np.testing.assert_array_equal(stored[name], implicit[name])


def test_fixed_masks_over_several_tiles_and_subtiles(fast_backend):
    # N spans two tiles of sparse_mask.TILE_ROWS rows (the second partial); C is odd (a
    # last stratum without a pair); 20 trials of rank 2 (B R = 40) make the C++ kernel
    # sum each tile in three subtiles.
    require_sparse_backend(fast_backend)
    N = sparse_mask.TILE_ROWS + 3616
    for n_trials, rank in ((1, 1), (20, 2)):
        case = make_case(np.float64, n_neurons=N, n_trials=n_trials, rank=rank)
        case["u"] = np.ascontiguousarray(case["u"][:, :3])
        masks = {representation: SparseMask(N, n_connections=9, seed=4, representation=representation)
                 for representation in ("stored", "implicit")}
        results = {}
        for representation, mask in masks.items():
            results[representation] = run3(fast_backend, case, mask._kernel_args())
        reference = run3("numpy", case, masks["stored"]._kernel_args())
        for name in results["stored"]:
            np.testing.assert_array_equal(results["stored"][name], results["implicit"][name])
        assert_close(results["stored"], reference, np.float64)


def run3(backend, case, mask):
    """Three noisy steps (``case["u"]`` of 3 steps)."""
    full_path, _ = simulate_sparse.kernels(backend)
    B, N = case["x0"].shape
    R = case["m_T"].shape[0]
    steps = case["u"].shape[1]
    record_idx = np.array([0, N - 1, sparse_mask.TILE_ROWS, sparse_mask.TILE_ROWS - 1], np.int64)
    x, kappa = case["x0"].copy(), case["kappa0"].copy()
    kappa_out = np.empty((B, steps + 1, R))
    record_out = np.empty((B, steps + 1, len(record_idx)), x.dtype)
    full_path(mask, case["m_T"], case["n_T"], case["I_T"], case["b"], "tanh", 3.0 / N, 0.7, x, case["u"], ALPHA,
              0.2, 17, 1, record_idx, kappa, kappa_out, record_out, NO_CLAMP, n_threads=1)
    return dict(x=x, kappa=kappa, kappa_out=kappa_out, record_out=record_out)


def test_results_do_not_depend_on_threads(fast_backend):
    require_sparse_backend(fast_backend)
    case = make_case(np.float64, n_neurons=9000, n_trials=1, rank=1)
    mask = make_mask(9000, "fixed", "implicit")
    one = run(fast_backend, case, mask, noise_scale=0.1, n_threads=1)
    two = run(fast_backend, case, mask, noise_scale=0.1, n_threads=2)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name])


@pytest.mark.parametrize("kind", list(MASKS))
def test_matvec_matches_dense_product(backend, kind):
    require_sparse_backend(backend)
    N = 120
    sparse = SparseMask(N, seed=2, representation="stored", **MASKS[kind])
    rng = np.random.default_rng(0)
    m_T, n_T = rng.standard_normal((2, N)), rng.standard_normal((2, N))
    dense = sparse.to_dense() * (m_T.T @ n_T) * 0.5
    v = rng.standard_normal((N, 3))
    _, matvec = simulate_sparse.kernels(backend)
    for representation in ("stored", "implicit"):
        mask = (sparse if representation == "stored" else sparse.implicit())._kernel_args()
        # float64 sums of 10-120 terms in a different order: ~1e-15 relative.
        np.testing.assert_allclose(matvec(mask, m_T, n_T, 0.5, v), dense @ v, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(matvec(mask, m_T, n_T, 0.5, v[:, 0]), dense @ v[:, 0], rtol=1e-12, atol=1e-12)


def test_cpp_rejects_unsafe_masks():
    require_sparse_backend("cpp")
    case = make_case(np.float64, n_neurons=50, n_trials=1, rank=1)
    csr = make_mask(50, "bernoulli", "stored")
    bad_indices = csr._replace(indices=np.where(np.arange(len(csr.indices)) == 7, 50, csr.indices).astype(np.int32))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 50\)"):
        run("cpp", case, bad_indices)
    good = make_mask(50, "fixed", "stored")
    # offsets[7]: row 7, stratum 0, of width floor(50 / 23) = 2
    bad_offsets = good._replace(indices=np.where(np.arange(len(good.indices)) == 7, 3, good.indices).astype(np.uint16))
    with pytest.raises(ValueError, match="offset 3 of stratum 0 is not below its width 2"):
        run("cpp", case, bad_offsets)
    bad_strata = make_mask(50, "fixed", "implicit")
    bad_strata = bad_strata._replace(strata=bad_strata.strata * 2)
    with pytest.raises(ValueError, match="strata must run from 0 to N"):
        run("cpp", case, bad_strata)
    bad_log_q = make_mask(50, "bernoulli", "implicit")._replace(log_q=0.0)
    with pytest.raises(ValueError, match="log_q must be negative"):
        run("cpp", case, bad_log_q)


# --- mask assembly: the Cython module against the specification -------------------------


def require_mask_module():
    if not extension_built("_sparse_mask"):
        if REQUIRE_BACKENDS:
            pytest.fail("the Cython module _sparse_mask was not built")
        pytest.skip("the Cython module _sparse_mask was not built")
    return load_extension("_sparse_mask")


@pytest.mark.parametrize("N, C", [(1, 1), (7, 7), (100, 1), (1000, 37), (1000, 1000), (999, 998)])
def test_cython_fixed_mask_matches_reference(N, C):
    ext = require_mask_module()
    indptr, indices = sparse_mask.csr_reference(123, N, n_connections=C)
    np.testing.assert_array_equal(ext.fixed_indices(123, N, C, sparse_mask.strata(N, C)), indices)
    rows = indices.reshape(N, C)
    assert np.all(np.diff(rows, axis=1) > 0), "columns of a row must be distinct and sorted"
    assert rows.min() >= 0 and rows.max() < N


@pytest.mark.parametrize("N, C", [(1, 1), (1000, 37), (16384, 3), (2 * 16384 + 5, 4), (70000, 1)])
def test_tile_offsets_of_stored_fixed_masks(N, C):
    # Cython writes the stored layout directly; it must be sparse_mask.to_tile_offsets of the rows,
    # in uint16 when every stratum is at most 2**16 wide and uint32 otherwise (N = 70000, C = 1).
    ext = require_mask_module()
    rows = sparse_mask.csr_reference(9, N, n_connections=C)[1]
    offsets = sparse_mask.to_tile_offsets(rows, N, C)
    assert offsets.dtype == (np.uint32 if N > 2**16 * C else np.uint16)
    np.testing.assert_array_equal(sparse_mask.from_tile_offsets(offsets, N, C), rows)
    built = np.empty_like(offsets)
    ext.fixed_tile_offsets(9, N, C, sparse_mask.strata(N, C), sparse_mask.TILE_ROWS, built)
    np.testing.assert_array_equal(built, offsets)
    # column k of row t T + r of a tile of n rows: lo_k + offsets[t T C + k n + r]
    T = sparse_mask.TILE_ROWS
    row, k = N - 1, C - 1
    i0, n = row - row % T, min(T, N - row + row % T)
    assert sparse_mask.strata(N, C)[k] + offsets[i0 * C + k * n + (row - i0)] == rows[row * C + k]


def test_tile_size_is_shared_with_the_cpp_kernels():
    require_sparse_backend("cpp")
    assert load_extension("_simulate_sparse_cpp").TILE_ROWS == sparse_mask.TILE_ROWS


@pytest.mark.parametrize("N, p", [(1, 0.5), (300, 1.0), (300, 0.5), (2000, 0.01)])
def test_cython_bernoulli_mask_matches_reference(N, p):
    ext = require_mask_module()
    log_q = -np.inf if p == 1.0 else np.log1p(-p)
    indptr, indices = sparse_mask.csr_reference(-7, N, log_q=log_q)
    ext_indptr, ext_indices = ext.bernoulli_csr(-7, N, log_q)
    np.testing.assert_array_equal(ext_indptr, indptr)
    np.testing.assert_array_equal(ext_indices, indices)


def test_seed_changes_the_mask_and_keys_wrap_to_64_bits():
    a = sparse_mask.fixed_columns(1, 1000, 10, np.arange(5))
    b = sparse_mask.fixed_columns(2, 1000, 10, np.arange(5))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(sparse_mask.fixed_columns(-1, 1000, 10, [3]),
                                  sparse_mask.fixed_columns(2**64 - 1, 1000, 10, [3]))
