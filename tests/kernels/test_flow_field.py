"""The flow-field kernels of a sampled network (numba, C++) against the NumPy reference.

out[p, :] = sum_i n_i phi(m_i^T kappa_p + I_i^T v_p + b_i) / N at P latent points
(connector_sim/_kernels/flow_field.py). Three kinds of check: every backend
against the reference with an error bound derived from the arithmetic, thread
counts that must not change a bit, and the flow of a large sampled Gaussian
network against the closed-form mean field (error ~ 1/sqrt(N)).
"""

import numpy as np
import pytest

from connector_sim import Gaussian, latent_velocity
from connector_sim._kernels import flow_field
from connector_sim.synthetic import latent_grid
from backend_support import REQUIRE_BACKENDS

#: Largest absolute error of the compiled tanh against float64 np.tanh
#: (fast_math.py: rational float32 3.5e-7; exp-based float64 1e-15).
TANH_ERROR = {np.float32: 3.5e-7, np.float64: 1e-15}
#: Largest error of the compiled softplus and sigmoid relative to max(1, |phi|)
#: (measured 1.3e-7 and 2.2e-16 in test_activations.py), with room.
SMOOTH_ERROR = {np.float32: 3e-7, np.float64: 1e-15}
#: Terms per float32 lane partial sum in the C++ kernel: CHUNK / LANES of
#: flow_field.hpp (numba sums in float64 throughout; the bound covers both).
CHUNK_TERMS = 32


def require_flow_backend(name):
    """Skip (or, under CONNECTOR_SIM_STRICT_BUILD, fail) when a flow-field backend is missing."""
    if name not in flow_field.available_backends():
        message = f"flow-field backend {name!r} is not built here (available: {flow_field.available_backends()})"
        if REQUIRE_BACKENDS:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(params=["numba", "cpp"])
def fast_backend(request):
    require_flow_backend(request.param)
    return request.param


def make_case(dtype, n_neurons, n_points, rank, n_inputs, seed=0):
    """Loadings with n correlated to m (so the flow is not small), biases, inputs; latent points kappa, v."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((rank, n_neurons))
    return dict(
        m_T=np.ascontiguousarray(m, dtype),
        n_T=np.ascontiguousarray(1.5 * m + rng.standard_normal((rank, n_neurons)), dtype),
        I_T=np.ascontiguousarray(rng.standard_normal((n_inputs, n_neurons)), dtype),
        b=np.ascontiguousarray(0.5 * rng.standard_normal(n_neurons), dtype),
        kappa=2.0 * rng.standard_normal((n_points, rank)),
        v=rng.standard_normal((n_points, n_inputs)),
    )


def run(backend, case, activation, n_threads=1):
    out = np.full(case["kappa"].shape, np.nan)
    flow_field.kernel(backend)(case["m_T"], case["n_T"], case["I_T"], case["b"], activation, case["kappa"],
                               case["v"], out, n_threads=n_threads)
    return out


def error_bound(case, activation):
    """Largest |backend - reference| the arithmetic allows, at each point: shape (P, R).

    The reference computes z and phi in float64. A compiled backend casts
    kappa_p and v_p to the dtype of the loadings and forms z_i with C = R + D
    multiply-adds: at most 2 (C + 1) roundings, each within eps / 2 of
    S_i = |b_i| + |I_i|.|v_p| + |m_i|.|kappa_p|. With |phi'| <= 1 and the
    compiled tanh within TANH_ERROR of np.tanh, each unit's rate errs by at
    most (C + 1) eps S_i (+ TANH_ERROR); the units are weighted by |n_i| and
    averaged. A float32 network's kernel sums each lane's products over one
    chunk in float32 (flow_field.hpp: at most CHUNK / LANES = 32 terms, each
    product and partial sum rounded once): at most (32 + 1) eps / 2 of
    sum_i |n_i| |phi_i|, with |phi_i| <= 1 + S_i for every activation. The
    float64 sums (any order) add at most 1e-13 of mean_i |n_i| (1 + S_i), far
    above their ~N eps64 worst case relative to it.
    """
    dtype = case["m_T"].dtype.type
    m, n, I, b = (np.abs(case[key].astype(np.float64)) for key in ("m_T", "n_T", "I_T", "b"))
    C = m.shape[0] + I.shape[0]
    size = b + np.abs(case["kappa"]) @ m + np.abs(case["v"]) @ I  # (P, N): S_i at each point
    tanh_error = TANH_ERROR[dtype] if activation == "tanh" else 0.0
    if activation in ("softplus", "sigmoid"):
        tanh_error = SMOOTH_ERROR[dtype] * (1.0 + size)  # |phi| <= 1 + S_i
    eps = np.finfo(dtype).eps
    per_unit = (C + 1) * eps * size + tanh_error
    float32_partials = (CHUNK_TERMS + 1) * eps / 2 if dtype is np.float32 else 0.0
    return (per_unit @ n.T + (float32_partials + 1e-13) * (1.0 + size) @ n.T) / m.shape[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["tanh", "relu", "identity", "softplus", "sigmoid"])
@pytest.mark.parametrize("rank, n_inputs", [(1, 0), (2, 2), (3, 1)])
def test_backends_match_reference(fast_backend, dtype, activation, rank, n_inputs):
    # N crosses the 4096-neuron blocks and leaves remainders of the 256-neuron
    # chunks and 16-neuron lanes; 21 points leave a partial point block.
    case = make_case(dtype, 9_000 + 7, 21, rank, n_inputs, seed=rank)
    reference = run("numpy", case, activation)
    got = run(fast_backend, case, activation)
    assert np.all(np.isfinite(got))
    np.testing.assert_array_less(np.abs(got - reference), error_bound(case, activation))


def test_float32_partial_sums_are_as_short_as_the_bound_assumes():
    require_flow_backend("cpp")
    from connector_sim._ext import _flow_field_cpp

    assert _flow_field_cpp.CHUNK // _flow_field_cpp.LANES <= CHUNK_TERMS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_is_not_vacuous(dtype):
    # The bound above is of the size of the deviations the kernels show:
    # float32 deviations are of order 1e-7 to 1e-6 (the bound, ~3e-5, also covers the
    # float32 lane partial sums of the C++ kernel), float64 ones 1e-15 to 1e-13.
    case = make_case(dtype, 9_007, 21, 2, 2)
    bound = error_bound(case, "tanh")
    assert bound.max() < {np.float32: 5e-5, np.float64: 1e-11}[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_do_not_change_results(fast_backend, dtype):
    # Each point is computed by one thread from its own kappa_p, v_p, with
    # fixed neuron blocks: the partition of the points over threads changes
    # nothing, bit for bit.
    case = make_case(dtype, 5_000, 37, 2, 1)
    one = run(fast_backend, case, "tanh", n_threads=1)
    two = run(fast_backend, case, "tanh", n_threads=2)
    np.testing.assert_array_equal(one, two)


def test_single_point_and_no_points(fast_backend):
    # One point (a root finder's call) equals that point inside a batch; no points is no work.
    case = make_case(np.float64, 3_000, 9, 2, 1)
    batch = run(fast_backend, case, "tanh")
    single = dict(case, kappa=case["kappa"][4:5].copy(), v=case["v"][4:5].copy())
    np.testing.assert_array_equal(run(fast_backend, single, "tanh"), batch[4:5])
    empty = dict(case, kappa=np.zeros((0, 2)), v=np.zeros((0, 1)))
    assert run(fast_backend, empty, "tanh").shape == (0, 2)


def test_user_activation_on_numba_matches_reference():
    require_flow_backend("numba")
    import numba

    softsign = numba.njit(lambda x: x / (1.0 + abs(x)))
    case = make_case(np.float64, 2_000, 5, 2, 1)
    # The reference calls the same function element by element; only the sums differ in order.
    np.testing.assert_allclose(run("numba", case, softsign), run("numpy", case, softsign), rtol=0, atol=1e-13)


def random_gaussian(seed=0):
    """Rank 2, one input, with bias: rows [m1, m2, n1, n2, I, b] with some overlap of n on m."""
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal((6, 6)) / np.sqrt(6)
    mix = np.eye(6)
    mix[2, 0] = mix[3, 1] = 0.8  # n_r += 0.8 m_r
    cov = mix @ (factor @ factor.T + 0.3 * np.eye(6)) @ mix.T
    return Gaussian(0.2 * rng.standard_normal(6), cov, rank=2, n_inputs=1, bias=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_sampled_network_approaches_the_mean_field(fast_backend, dtype):
    # Theory check: the flow of N sampled neurons is a sample mean of
    # n_i phi(z_i), within a few standard errors sd / sqrt(N) of the
    # closed-form mean field E[n phi(z)]. From N = 1e4 to 16e4 the standard
    # error, and with it the observed error, shrinks about 4-fold.
    distribution = random_gaussian()
    kappa = latent_grid(4, 1.5)  # (16, 2)
    v = np.array([0.3])
    theory = latent_velocity(distribution, kappa, v)
    errors, standard_errors = [], []
    for n_neurons in (10_000, 160_000):
        network = distribution.sample(n_neurons, 5, dtype=dtype)
        sampled = latent_velocity(network, kappa, v, backend=fast_backend)
        z = kappa @ network.m.T.astype(np.float64) + v @ network.I.T.astype(np.float64) + network.b
        rates = np.tanh(z)
        standard_error = np.sqrt(np.stack([(rates**2) @ (n.astype(np.float64) ** 2) / n_neurons
                                           - (rates @ n.astype(np.float64) / n_neurons) ** 2
                                           for n in network.n.T], axis=-1) / n_neurons)
        error = np.abs(sampled - theory)
        assert np.all(error <= 6 * standard_error)
        errors.append(np.sqrt(np.mean(error**2)))
        standard_errors.append(np.sqrt(np.mean(standard_error**2)))
    assert 3.0 < standard_errors[0] / standard_errors[1] < 5.3  # sqrt(16) = 4
    assert errors[1] < errors[0] / 2


def test_public_functions_take_the_backend():
    # latent_velocity on a sampled network goes through the chosen kernel;
    # "auto" is the fastest available one, bit for bit.
    network = random_gaussian(1).sample(3_000, 2)
    kappa, v = latent_grid(3, 1.0), [0.2]
    reference = latent_velocity(network, kappa, v, backend="numpy")
    for backend in flow_field.available_backends():
        np.testing.assert_allclose(latent_velocity(network, kappa, v, backend=backend), reference, rtol=0,
                                   atol=1e-13)
    fastest = flow_field.available_backends()[0]
    np.testing.assert_array_equal(latent_velocity(network, kappa, v), latent_velocity(network, kappa, v,
                                                                                      backend=fastest))


def test_float32_network_flow_is_evaluated_in_float64(fast_backend):
    # latent_velocity converts float32 loadings to float64 once: the flow of
    # the float32 network equals that of the same (rounded) values in float64
    # to summation order, not to the 1e-7 of float32 arithmetic.
    network32 = random_gaussian(2).sample(4_000, 3, dtype=np.float32)
    loadings = [a.astype(np.float64) for a in (network32.m_T, network32.n_T, network32.I_T, network32.b)]
    kappa, v = latent_grid(3, 1.5), np.full((9, 1), 0.4)
    expected = np.empty((9, 2))
    flow_field.kernel("numpy")(*loadings, "tanh", kappa, v, expected)
    got = latent_velocity(network32, kappa, [0.4], backend=fast_backend) + kappa
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


def test_bad_backend_says_what_was_expected():
    network = random_gaussian(1).sample(100, 2)
    with pytest.raises(ValueError, match=r"backend must be 'auto' or one of \['cpp', 'numba', 'numpy'\].*Got 'gpu'"):
        latent_velocity(network, np.zeros(2), [0.0], backend="gpu")
    with pytest.raises(ValueError, match=r"backend must be 'auto'.*Got 'gpu'"):
        latent_velocity(random_gaussian(1), np.zeros(2), [0.0], backend="gpu")


def test_user_activation_refuses_cpp():
    require_flow_backend("cpp")
    numba = pytest.importorskip("numba")
    softsign = numba.njit(lambda x: x / (1.0 + abs(x)))
    network = random_gaussian(1).sample(100, 2, activation=softsign)
    with pytest.raises(ValueError, match=r"user-supplied \(numba\) activation runs on the 'numba' and 'numpy'.*"
                                         r"got backend='cpp'\. Use backend='numba' or 'auto'"):
        latent_velocity(network, np.zeros(2), [0.0], backend="cpp")
    assert flow_field.choose_backend("auto", softsign) == "numba"


def test_compiled_kernel_rejects_mismatched_arrays():
    # The binding converts nothing: a wrong dtype, layout or shape is a ValueError naming the array.
    require_flow_backend("cpp")
    from connector_sim._ext import _flow_field_cpp as ext

    case = make_case(np.float32, 100, 3, 2, 1)
    args = [case["m_T"], case["n_T"], case["I_T"], case["b"], 0, case["kappa"], case["v"], np.zeros((3, 2))]
    ext.flow_field(*args)
    bad = list(args)
    bad[1] = case["n_T"].astype(np.float64)
    with pytest.raises(ValueError, match=r"n_T must have dtype float32, got float64"):
        ext.flow_field(*bad)
    bad = list(args)
    bad[5] = np.asfortranarray(np.zeros((3, 2)))[:, ::-1]
    with pytest.raises(ValueError, match=r"kappa must be C-contiguous"):
        ext.flow_field(*bad)
    bad = list(args)
    bad[7] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"out must have shape \(3, 2\), got \(3, 3\)"):
        ext.flow_field(*bad)
    with pytest.raises(ValueError, match=r"n_threads must be at least 1, got 0"):
        ext.flow_field(*args, n_threads=0)
    with pytest.raises(ValueError, match=r"unknown activation code 7"):
        ext.flow_field(*args[:4], 7, *args[5:])
