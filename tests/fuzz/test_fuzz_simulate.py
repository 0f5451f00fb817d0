"""Property-based tests of simulate, LowRankRNN and the sparse networks (SparseMask, SparseLowRankRNN).

Every call runs in the sandbox (the compiled kernels see the hostile input):
see fuzzlib for the property.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzlib import (
    CLEAR_ERROR,
    ArraySpec,
    Verdict,
    arrays,
    check,
    examples,
    hostile_arrays,
    ints,
    make_network,
    network_recipes,
    reals,
    sometimes,
)

BACKENDS = ["numpy", "numba", "cpp", "auto"]


# --------------------------------------------------------------------------- cases (run in the sandbox)


def run_simulate(network, n_steps, kwargs, attributes=None):
    """simulate(make_network(**network), n_steps, **kwargs), after reassigning ``attributes`` of the network."""
    from connector_sim import simulate

    net = make_network(**network)
    for name, value in (attributes or {}).items():
        try:
            setattr(net, name, value)
        except AttributeError as exc:
            # An attribute that cannot be set (immutable, read-only) is a clear refusal too.
            if not str(exc).strip():
                raise Verdict("empty message", f"setting {name}: AttributeError without a message") from None
            raise Verdict(CLEAR_ERROR, f"setting {name}: AttributeError: {exc}") from None
    result = simulate(net, n_steps, **kwargs)
    return result, result.final_state, result.rates


def run_low_rank_rnn(args, kwargs):
    from connector_sim import LowRankRNN

    network = LowRankRNN(*args, **kwargs)
    return network.m, network.n, network.I, network.b, network.tau


def run_sparse(network, n_neurons, mask_kwargs, scaling, n_steps, kwargs, method):
    from connector_sim import SparseLowRankRNN, SparseMask, simulate

    mask = SparseMask(n_neurons, **mask_kwargs)
    if method is not None:
        value = getattr(mask, method)
        value = value() if callable(value) else value
        if method == "to_dense":
            return value.sum()
        return value
    sparse = SparseLowRankRNN(make_network(**network), mask, scaling=scaling)
    result = simulate(sparse, n_steps, **kwargs)
    return result, result.final_state


# --------------------------------------------------------------------------- strategies


@st.composite
def simulate_arguments(draw, diverging=None):
    """(network recipe, n_steps, keyword arguments): one or two of them hostile at a time."""
    network = draw(network_recipes(diverging=diverging))
    N, R, D = network["n_neurons"], network["rank"], network["n_inputs"]
    T = draw(st.integers(1, 300 if diverging else 30))
    B = draw(st.integers(1, 3))
    kwargs = {}
    n_steps = draw(sometimes(st.just(T), ints(1, 30)))
    if draw(st.booleans()):
        kwargs["dt"] = draw(sometimes(st.sampled_from([0.05, 0.1, 0.5]), reals(0.001, 3.0)))
    if D and draw(st.integers(0, 3)) == 0:
        shape = (B, T, D) if draw(st.booleans()) else (T, D)
        kwargs["inputs"] = draw(sometimes(arrays(shape, hostile=False), hostile_arrays(shape)))
        n_steps = draw(st.sampled_from([None, n_steps]))
    start = draw(st.sampled_from(["x0", "kappa0", None]))
    if start:
        size = N if start == "x0" else R
        shape = (B, size) if draw(st.booleans()) else (size,)
        kwargs[start] = draw(sometimes(arrays(shape, hostile=False), hostile_arrays(shape)))
    if D and draw(st.integers(0, 3)) == 0:
        kwargs["v0"] = draw(sometimes(arrays((D,), hostile=False), hostile_arrays((D,))))
    if draw(st.integers(0, 3)) == 0:
        kwargs["n_trials"] = draw(sometimes(st.integers(1, 3), ints(1, 3)))
    if draw(st.integers(0, 2)) == 0:
        kwargs["noise_std"] = draw(sometimes(st.floats(0, 1), reals(0, 1)))
        kwargs["seed"] = draw(sometimes(st.integers(0, 2**32), ints(0, 2**32)))
    if draw(st.integers(0, 3)) == 0:
        kwargs["record_units"] = draw(st.one_of(
            st.sampled_from([None, "all", "none", [], [0], [N], [-1], [0, 0], 0, 1.5, "0"]),
            st.lists(st.integers(0, N - 1), max_size=4),
            hostile_arrays((2,), 0, N - 1)))
    if draw(st.integers(0, 4)) == 0:
        clamp = {"units": draw(st.one_of(st.lists(st.integers(0, N - 1), min_size=1, max_size=3),
                                         st.sampled_from([[N], [-1], [], "all", None, [0.5]]),
                                         hostile_arrays((1,), 0, N - 1)))}
        if draw(st.booleans()):
            clamp["value"] = draw(st.one_of(floats_or_hostile(), hostile_arrays((1,))))
        if draw(st.booleans()):
            clamp["start"] = draw(ints(0, T))
        if draw(st.booleans()):
            clamp["stop"] = draw(st.one_of(ints(0, T + 2), st.none()))
        if draw(st.integers(0, 5)) == 0:
            clamp[draw(st.sampled_from(["Units", "values", "end"]))] = 1
        kwargs["clamp"] = draw(sometimes(st.just(clamp), st.sampled_from([[1], "units", 0])))
    if draw(st.integers(0, 3)) == 0:
        kwargs["path"] = draw(st.sampled_from(["auto", "full", "latent", "fast", None, 1]))
    kwargs["backend"] = draw(sometimes(st.sampled_from(BACKENDS), st.sampled_from(["CPP", "", None, 0])))
    if draw(st.integers(0, 3)) == 0:
        kwargs["n_threads"] = draw(ints(1, 2))
    if draw(st.integers(0, 5)) == 0:
        kwargs["max_record_bytes"] = draw(st.sampled_from(["1", 0, -1, 1, 10**3, float("nan"), 2.5, None, 10**30]))
    return network, n_steps, kwargs


def floats_or_hostile():
    return sometimes(st.floats(-2, 2), reals(-2, 2))


# --------------------------------------------------------------------------- properties


@settings(max_examples=examples(200))
@given(simulate_arguments())
def test_simulate_gives_a_clear_error_or_finite_latents(sandbox, case):
    network, n_steps, kwargs = case
    check(sandbox, "simulate", run_simulate, dict(network=network, n_steps=n_steps, kwargs=kwargs))


@settings(max_examples=examples(40))
@given(simulate_arguments(diverging=True))
def test_simulate_reports_diverging_dynamics(sandbox, case):
    """m and n 30 times larger, linear or relu: the state overflows; every backend must say so (or stay finite)."""
    network, n_steps, kwargs = case
    check(sandbox, "simulate (diverging)", run_simulate, dict(network=network, n_steps=n_steps, kwargs=kwargs))


@st.composite
def reassigned_attributes(draw):
    network = draw(network_recipes(diverging=False))
    N, R, D = network["n_neurons"], network["rank"], network["n_inputs"]
    name = draw(st.sampled_from(["b", "n_T", "m_T", "I_T", "tau", "activation", "dtype"]))
    shapes = {"b": (N,), "n_T": (R, N), "m_T": (R, N), "I_T": (D, N)}
    if name in shapes:
        value = draw(hostile_arrays(shapes[name]))
    elif name == "tau":
        value = draw(reals(0.5, 2))
    elif name == "activation":
        value = draw(st.sampled_from(["tanh", "softplus", None, 3]))
    else:
        value = draw(st.sampled_from(["float32", "int64", "complex128", None]))
    backend = draw(st.sampled_from(BACKENDS[:3]))
    return network, {name: value}, backend


@settings(max_examples=examples(100))
@given(reassigned_attributes())
def test_reassigned_network_attributes_are_validated(sandbox, case):
    """Issue item 3: an attribute set after construction is checked (or refused), never trusted by a kernel."""
    network, attributes, backend = case
    check(sandbox, "LowRankRNN (attributes set later)", run_simulate,
          dict(network=network, n_steps=5, kwargs={"backend": backend, "noise_std": 0.1, "seed": 1},
               attributes=attributes))


@st.composite
def low_rank_rnn_arguments(draw):
    N, R, D = draw(st.integers(1, 20)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
    args = [draw(sometimes(arrays((N, R), hostile=False), hostile_arrays((N, R)))),
            draw(sometimes(arrays((N, R), hostile=False), hostile_arrays((N, R))))]
    kwargs = {}
    if draw(st.booleans()):
        kwargs["I"] = draw(sometimes(arrays((N, D), hostile=False), hostile_arrays((N, D))))
    if draw(st.booleans()):
        kwargs["b"] = draw(sometimes(arrays((N,), hostile=False), hostile_arrays((N,))))
    if draw(st.booleans()):
        kwargs["tau"] = draw(reals(0.1, 10))
    if draw(st.integers(0, 3)) == 0:
        kwargs["activation"] = draw(st.sampled_from(["tanh", "relu", "identity", "TANH", "sigmoid", None, 1, np.tanh]))
    if draw(st.integers(0, 3)) == 0:
        kwargs["dtype"] = draw(st.sampled_from(["float32", "float64", np.float32, "int64", "complex128", "float16",
                                                ">f8", None, "x"]))
    return args, kwargs


@settings(max_examples=examples(150))
@given(low_rank_rnn_arguments())
def test_low_rank_rnn_validates_its_loadings(sandbox, case):
    args, kwargs = case
    check(sandbox, "LowRankRNN", run_low_rank_rnn, dict(args=args, kwargs=kwargs))


@st.composite
def sparse_arguments(draw):
    network = draw(network_recipes(max_neurons=30, diverging=False))
    N = network["n_neurons"]
    n_neurons = draw(sometimes(st.just(N), ints(1, 40), valid_weight=6))
    mask_kwargs = {}
    which = draw(st.sampled_from(["n_connections", "sparsity", "both", "neither"] + ["n_connections", "sparsity"] * 3))
    if which in ("n_connections", "both"):
        mask_kwargs["n_connections"] = draw(sometimes(st.integers(1, N), ints(1, N)))
    if which in ("sparsity", "both"):
        mask_kwargs["sparsity"] = draw(sometimes(st.floats(0, 0.95), reals(0, 0.99)))
    if draw(st.booleans()):
        mask_kwargs["seed"] = draw(ints(0, 2**40))
    mask_kwargs["representation"] = draw(st.sampled_from(["implicit", "stored"] * 4 + ["dense", None]))
    scaling = draw(st.sampled_from(["1/N", "1"] * 4 + ["N", None]))
    method = draw(st.sampled_from([None] * 4 + ["csr", "to_dense", "nnz", "degrees", "stored", "tile_offsets"]))
    T = draw(st.integers(1, 20))
    kwargs = {"backend": draw(st.sampled_from(BACKENDS)), "noise_std": draw(st.sampled_from([0.0, 0.3])), "seed": 2}
    start = draw(st.sampled_from(["x0", "kappa0", None]))
    if start:
        size = N if start == "x0" else network["rank"]
        kwargs[start] = draw(sometimes(arrays((size,), hostile=False), hostile_arrays((size,))))
    if draw(st.integers(0, 3)) == 0:
        kwargs["n_threads"] = draw(ints(1, 2))
    if draw(st.integers(0, 3)) == 0:
        kwargs["record_units"] = draw(st.sampled_from(["all", [0], [N], [], None]))
    if draw(st.integers(0, 4)) == 0:
        kwargs["path"] = draw(st.sampled_from(["latent", "full", "auto"]))
    n_steps = draw(sometimes(st.just(T), ints(1, 20)))
    return dict(network=network, n_neurons=n_neurons, mask_kwargs=mask_kwargs, scaling=scaling, n_steps=n_steps,
                kwargs=kwargs, method=method)


@settings(max_examples=examples(150))
@given(sparse_arguments())
def test_sparse_masks_and_networks_give_a_clear_error_or_finite_latents(sandbox, params):
    entry = f"SparseMask.{params['method']}" if params["method"] else "simulate (SparseLowRankRNN)"
    check(sandbox, "SparseMask" if params["method"] else entry, run_sparse, params)


# --------------------------------------------------------------------------- the reproducers of issue 12, always run

NET = dict(n_neurons=4, rank=1, n_inputs=1, dtype="float64", activation="tanh", tau=1.0, scale=1.0, bias=False, seed=0)
DIVERGING = dict(NET, activation="identity", scale=30.0, n_inputs=0)
X0 = np.linspace(-1.0, 1.0, 4)

ISSUE_CASES = {
    # item 1: thread counts beyond what the OpenMP runtime can start
    "n_threads=100_000 (cpp)": (NET, 5, {"n_threads": 100_000, "backend": "cpp", "noise_std": 0.1, "seed": 0}),
    "n_threads=2**31-1 (cpp)": (NET, 5, {"n_threads": 2**31 - 1, "backend": "cpp"}),
    "n_threads=2**31 (numba)": (NET, 5, {"n_threads": 2**31, "backend": "numba", "noise_std": 0.1, "seed": 0}),
    # item 2: diverging dynamics, every backend
    "diverging (numpy)": (DIVERGING, 300, {"kappa0": [1.0], "backend": "numpy"}),
    "diverging (numba)": (DIVERGING, 300, {"kappa0": [1.0], "backend": "numba"}),
    "diverging (cpp)": (DIVERGING, 300, {"kappa0": [1.0], "backend": "cpp"}),
    "diverging, full path (cpp)": (DIVERGING, 300, {"kappa0": [1.0], "backend": "cpp", "path": "full"}),
    "diverging float32 (numba)": (dict(DIVERGING, dtype="float32"), 60, {"kappa0": [1.0], "backend": "numba"}),
    # item 5: sizes checked before any work
    "n_steps=10**10": (NET, 10**10, {}),
    # item 6: memory
    "n_trials=10**12": (NET, 5, {"n_trials": 10**12}),
    "n_trials=2**63": (NET, 5, {"n_trials": 2**63}),
    "n_trials=10**9, full path": (NET, 5, {"n_trials": 10**9, "noise_std": 0.1, "seed": 0}),
    # item 7: clear errors
    "max_record_bytes='1'": (NET, 5, {"max_record_bytes": "1", "record_units": [0]}),
    "ragged x0": (NET, 5, {"x0": ArraySpec(np.ones((2, 4)), layout="ragged")}),
    "ragged v0": (NET, 5, {"v0": [[1.0], [1.0, 2.0]]}),
    "clamp value 'x'": (NET, 5, {"clamp": {"units": [0], "value": "x"}}),
    "noise_std=10**400": (NET, 5, {"noise_std": 10**400, "seed": 0}),
    "record_units=[]": (NET, 5, {"record_units": []}),
    "inputs with zero time steps": (NET, None, {"inputs": np.zeros((0, 1))}),
    "unaligned x0 (cpp)": (NET, 5, {"x0": ArraySpec(X0, layout="unaligned"), "backend": "cpp", "noise_std": 0.1,
                                    "seed": 0}),
    "big-endian read-only x0 (numba)": (NET, 5, {"x0": ArraySpec(X0, ">f8", "readonly"), "backend": "numba"}),
    # found by the thorough profile
    "dt=1e300 with inputs": (NET, 20, {"dt": 1e300, "v0": [0.3], "backend": "numpy"}),
    "dt=1e308 with inputs": (dict(NET, bias=True), 1, {"dt": 1e308}),
    "float32 final_state overflow (latent path)": (
        dict(n_neurons=23, rank=3, n_inputs=2, dtype="float32", activation="relu", tau=0.5, scale=30.0, bias=True,
             seed=785), 12, {"dt": 0.05, "v0": [1.362, -1.578], "n_trials": 1, "backend": "numpy"}),
    "n_steps=10**400": (NET, 10**400, {}),
}


@pytest.mark.parametrize("name", list(ISSUE_CASES))
def test_simulate_issue_reproducers(sandbox, name):
    network, n_steps, kwargs = ISSUE_CASES[name]
    check(sandbox, "simulate", run_simulate, dict(network=network, n_steps=n_steps, kwargs=kwargs))


ATTRIBUTE_CASES = {"b = NaN": {"b": np.array([np.nan, 0.0, 0.0, 0.0])}, "n_T too short": {"n_T": np.ones((1, 2))},
                   "I_T wrong": {"I_T": np.ones((3, 4))}, "tau = 0": {"tau": 0}, "tau = -1": {"tau": -1.0}}


@pytest.mark.parametrize("name", list(ATTRIBUTE_CASES))
@pytest.mark.parametrize("backend", ["numpy", "numba", "cpp"])
def test_network_attribute_issue_reproducers(sandbox, name, backend):
    """Issue item 3: numba read out of bounds, numpy broadcast, tau = 0 gave ZeroDivisionError."""
    check(sandbox, "LowRankRNN (attributes set later)", run_simulate,
          dict(network=NET, n_steps=5, kwargs={"backend": backend, "noise_std": 0.1, "seed": 1},
               attributes=ATTRIBUTE_CASES[name]))
