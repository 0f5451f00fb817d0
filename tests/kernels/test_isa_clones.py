"""Every instruction-set clone of the C++ kernels against the NumPy reference.

The C++ kernels are compiled three times, as the "avx512" (x86-64-v4),
"avx2" (x86-64-v3) and "default" (baseline x86-64) clones, and the widest
one the CPU supports runs (``connector_sim._backends.kernel_isa``). The other
kernel tests cover that one; these run each clone this CPU supports in turn
(``set_kernel_isa``) and name it in the test id and in the recorded property
``kernel_isa``. A clone the CPU lacks is skipped, saying so. To run every
other kernel test under a narrower clone, set ``CONNECTOR_SIM_ISA=avx2`` (or
``default``) in the environment.

Between clones: the avx512 and avx2 clones carry out the same operations in
the same order (the lane sums keep 32-byte vectors in both, the wider
vectors only change how many independent elements one instruction handles,
and both fuse multiply-adds), so they must agree bit for bit. The default
clone cannot fuse multiply-adds: it agrees with the reference within the
tolerances of the other kernel tests (each stated there with its reason).
"""

import numpy as np
import pytest

import test_flow_field as flow_tests
import test_simulate_dense as dense_tests
import test_simulate_sparse as sparse_tests
from backend_support import require_backend
from connector_sim._backends import KERNEL_ISAS, cpu_isa, kernel_isa, set_kernel_isa
from connector_sim._kernels import counter_rng

#: np.tanh against the kernels' tanh, absolute: the float32 rational
#: x P(x^2) / Q(x^2) on [-9, 9] errs by <= 3.5e-7 before its float32
#: rounding (fast_math.py), 4e-7 after it (as test_simulate_dense); the float64
#: 1 - 2 / (exp(2|x|) + 1) with a degree-12 Taylor exp by <= 1e-15.
TANH_BOUND = {np.float32: 4e-7, np.float64: 1e-15}

TANH_POINTS = np.concatenate([np.linspace(-12.0, 12.0, 240_001), np.geomspace(1e-12, 20.0, 2001),
                              -np.geomspace(1e-12, 20.0, 2001), [0.0, -0.0, 9.0, -9.0, 50.0, -50.0]])


@pytest.fixture(params=KERNEL_ISAS)
def isa(request, record_property):
    """Run the test under one clone, then restore the clone that ran before."""
    require_backend("cpp")
    widest = cpu_isa()
    if KERNEL_ISAS.index(request.param) < KERNEL_ISAS.index(widest):
        pytest.skip(f"this CPU lacks the {request.param} clone (widest: {widest})")
    previous = set(kernel_isa().values()).pop()
    set_kernel_isa(request.param)
    record_property("kernel_isa", request.param)
    try:
        assert set(kernel_isa().values()) == {request.param}
        yield request.param
    finally:
        set_kernel_isa(previous)


def under(isa_name, function, *args, **kwargs):
    """function(*args, **kwargs) with the isa_name clone running."""
    previous = set(kernel_isa().values()).pop()
    set_kernel_isa(isa_name)
    try:
        return function(*args, **kwargs)
    finally:
        set_kernel_isa(previous)


def check_against_avx2(isa_name, result, function, *args, **kwargs):
    """The avx512 clone's result equals the avx2 clone's bit for bit."""
    if isa_name != "avx512":
        return
    other = under("avx2", function, *args, **kwargs)
    items = result.items() if isinstance(result, dict) else [("result", result)]
    for name, value in items:
        want = other[name] if isinstance(other, dict) else other
        assert np.array_equal(value, want, equal_nan=True), f"{name}: avx512 and avx2 clones differ"


def test_cpu_isa_is_reported():
    require_backend("cpp")
    assert cpu_isa() in KERNEL_ISAS
    with pytest.raises(ValueError, match="'isa' parameter of set_kernel_isa"):
        set_kernel_isa("sse9")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_clone(isa, dtype):
    from connector_sim._ext import _simulate_dense_cpp

    x = TANH_POINTS.astype(dtype)
    got = _simulate_dense_cpp.simd_tanh(x)
    error = np.abs(got.astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert error.max() <= TANH_BOUND[dtype], f"{isa}: max error {error.max():.3g}"
    assert np.isnan(_simulate_dense_cpp.simd_tanh(np.array([np.nan], dtype))[0])
    check_against_avx2(isa, got, _simulate_dense_cpp.simd_tanh, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noise_clone(isa, dtype):
    from connector_sim._ext import _simulate_dense_cpp

    got = _simulate_dense_cpp.standard_normal(7, 1, 3, 20_000, dtype)
    want = counter_rng.standard_normal(7, 1, 3, 20_000)
    # The bounds of test_simulate_dense.test_cpp_noise_matches_counter_rng, with their reasons there.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14 if dtype is np.float64 else 2e-6)
    check_against_avx2(isa, got, _simulate_dense_cpp.standard_normal, 7, 1, 3, 20_000, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("noise_scale", [0.0, 0.1])
def test_dense_full_path_clone(isa, dtype, noise_scale):
    case = dense_tests.make_case(dtype, 5000, 3, 2, 2)
    window = dense_tests.make_clamp(case, (4, 9))
    options = dict(noise_scale=noise_scale, clamp=window)
    got = dense_tests.run_full("cpp", case, **options)
    dense_tests.assert_matches(got, dense_tests.run_full("numpy", case, **options), dtype)
    check_against_avx2(isa, got, dense_tests.run_full, "cpp", case, **options)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_dense_latent_path_clone(isa, dtype, activation):
    case = dense_tests.make_case(dtype, 5000, 3, 2, 2)
    got = dense_tests.run_latent("cpp", case, activation=activation)
    dense_tests.assert_matches(got, dense_tests.run_latent("numpy", case, activation=activation), dtype)
    check_against_avx2(isa, got, dense_tests.run_latent, "cpp", case, activation=activation)


@pytest.mark.parametrize("rank, n_inputs", [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3)])
@pytest.mark.parametrize("xperp", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_latent_trial_groups_clone(isa, rank, n_inputs, xperp, dtype):
    """The avx512 clone's tanh latent path takes whole chunks through a register-resident pass per
    trial: in float32 four trials at a time (latent_chunk_group_avx512), in float64 every trial
    (latent_chunk_trial_f64_avx512). Every trial must get the bits of its run alone (in float32 one
    trial is never grouped) and of the avx2 clone (which has neither pass).

    B = 5: one group and one trial alone. N = 5000: a whole block, then a partial one that ends in a
    partial chunk (left to the per-trial passes). The clamp window (4, 9) sends those steps through
    the per-trial passes too. (R, D) = (1, 0) and (2, 3) are shapes the register passes leave to them;
    the others are every shape they take (R = 1, K = 2 or 3; R = 2, K = 2 to 4).
    """
    case = dense_tests.make_case(dtype, 5000, 5, rank, n_inputs, seed=3)
    options = dict(xperp=xperp, clamp=dense_tests.make_clamp(case, (4, 9)))
    got = dense_tests.run_latent("cpp", case, **options)
    dense_tests.assert_matches(got, dense_tests.run_latent("numpy", case, **options), dtype)
    check_against_avx2(isa, got, dense_tests.run_latent, "cpp", case, **options)
    for b in (0, 3, 4):
        alone = {**case, **{key: case[key][b:b + 1] for key in ("x0", "u", "v", "xperp", "kappa0")}}
        dense_tests.assert_equal(dense_tests.run_latent("cpp", alone, **options),
                                 {key: value[b:b + 1] for key, value in got.items()})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_flow_field_clone(isa, dtype, activation):
    case = flow_tests.make_case(dtype, 9_000 + 7, 21, 2, 1, seed=2)
    got = flow_tests.run("cpp", case, activation)
    want = flow_tests.run("numpy", case, activation)
    assert np.all(np.abs(got - want) <= flow_tests.error_bound(case, activation))
    check_against_avx2(isa, got, flow_tests.run, "cpp", case, activation)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["fixed", "bernoulli"])
def test_sparse_clone(isa, dtype, kind):
    """The implicit fixed mask runs the hand-written AVX-512 / AVX2 hash (or the compiler's, default clone)."""
    sparse_tests.require_sparse_backend("cpp")
    case = sparse_tests.make_case(dtype)
    N = case["b"].shape[0]
    options = dict(noise_scale=0.3)
    reference = sparse_tests.run("numpy", case, sparse_tests.make_mask(N, kind, "stored"), **options)
    for representation in ("stored", "implicit"):
        mask = sparse_tests.make_mask(N, kind, representation)
        got = sparse_tests.run("cpp", case, mask, **options)
        sparse_tests.assert_close(got, reference, dtype)
        check_against_avx2(isa, got, sparse_tests.run, "cpp", case, mask, **options)


def test_implicit_hash_clone_over_many_rows(isa):
    """Rows beyond one 8-row vector and a ragged tail: the implicit fixed mask equals the stored one bit for bit."""
    sparse_tests.require_sparse_backend("cpp")
    case = sparse_tests.make_case(np.float64, n_neurons=1003, n_trials=1, rank=1)
    stored = sparse_tests.run("cpp", case, sparse_tests.make_mask(1003, "fixed", "stored"))
    implicit = sparse_tests.run("cpp", case, sparse_tests.make_mask(1003, "fixed", "implicit"))
    for name in ("x", "kappa_out", "record_out"):
        assert np.array_equal(stored[name], implicit[name]), name


def test_cli_backends_names_the_clone(capsys):
    require_backend("cpp")
    from connector_sim.cli import main

    assert main(["backends"]) == 0
    printed = capsys.readouterr().out
    for stem, isa_name in kernel_isa().items():
        assert f"{stem}: runs the {isa_name} clone" in printed
