"""Property-based tests of LINT.fit, Connector.fit and dissimilarity (torch; tiny sizes, few epochs; see fuzzlib)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzlib import arrays, check, examples, hostile_arrays, ints, make_network, network_recipes, reals, sometimes

pytest.importorskip("torch")

# --------------------------------------------------------------------------- cases (run in the sandbox)


def run_lint(rates, inputs, lengths, params):
    from connector_sim.inference import LINT

    lint = LINT(**params).fit(rates, inputs, lengths)
    return lint.network_.m, lint.network_.n, lint.network_.I, lint.network_.b, lint.latents_


#: Connector settings small enough for a fit in well under a second.
TINY_CONNECTOR = dict(hidden=4, n_layers=1, n_epochs=1, batch_size=8, n_regression_samples=16, max_time_points=40,
                      n_steps=2, device="cpu", random_state=0)


def run_connector(network, kappa, fit_kwargs, params):
    from connector_sim.inference import Connector

    connector = Connector(**{**TINY_CONNECTOR, **params}).fit(make_network(**network), kappa, **fit_kwargs)
    sampled = connector.sample(5, random_state=0)
    return sampled.m, sampled.n, sampled.I, sampled.b


def run_dissimilarity(p, q, kwargs):
    from connector_sim import Gaussian
    from connector_sim.inference import dissimilarity

    def gaussian(recipe):
        rank, shift, scale = recipe
        dim = 2 * rank
        return Gaussian(np.full(dim, shift), scale * np.eye(dim), rank=rank)

    return dissimilarity(gaussian(p), gaussian(q), **kwargs)


# --------------------------------------------------------------------------- strategies


@st.composite
def lint_arguments(draw):
    K, T, N, D = draw(st.integers(2, 4)), draw(st.integers(2, 6)), draw(st.integers(1, 5)), draw(st.integers(0, 2))
    rates = draw(sometimes(arrays((K, T, N), -0.9, 0.9, hostile=False), hostile_arrays((K, T, N), -0.9, 0.9),
                           valid_weight=5))
    inputs = None
    if D and draw(st.booleans()):
        inputs = draw(sometimes(arrays((K, T, D), hostile=False), hostile_arrays((K, T, D))))
    lengths = None
    if draw(st.integers(0, 3)) == 0:
        lengths = draw(st.one_of(st.lists(st.integers(1, T), min_size=K, max_size=K),
                                 st.sampled_from([[0] * K, [T + 1] * K, [1.5] * K, [-1] * K, [T]])))
    params = {"rank": draw(sometimes(st.integers(1, 2), ints(1, 2))), "n_epochs": draw(sometimes(st.integers(1, 2), ints(1, 2))),
              "batch_size": 2, "patience": 1, "random_state": 0, "device": "cpu"}
    for name, strategy in (("dt", reals(0.05, 0.2)), ("tau", reals(1.0, 2.0)), ("learning_rate", reals(1e-3, 1e-1)),
                           ("ridge", reals(0, 1e-2)), ("validation_fraction", reals(0.0, 0.5)),
                           ("activation", st.sampled_from(["tanh", "relu", "identity", "softplus"])),
                           ("readout", st.sampled_from(["identity", "affine", "x"])),
                           ("init", st.sampled_from(["rrr", "random", "x"])),
                           ("dtype", st.sampled_from(["float32", "float64", "float16"])),
                           ("n_threads", ints(1, 2)), ("batch_size", ints(1, 4)), ("max_grad_norm", reals(0.1, 10)),
                           ("weight_decay", reals(0, 1e-3)), ("tol", reals(0, 1e-3))):
        if draw(st.integers(0, 9)) == 0:
            params[name] = draw(strategy)
    return dict(rates=rates, inputs=inputs, lengths=lengths, params=params)


@settings(max_examples=examples(60))
@given(lint_arguments())
def test_lint_fit_gives_a_clear_error_or_a_finite_network(sandbox, params):
    check(sandbox, "LINT.fit", run_lint, params)


@st.composite
def connector_arguments(draw):
    network = draw(network_recipes(max_neurons=12, max_rank=2, max_inputs=0, diverging=False))
    R = network["rank"]
    K, T = draw(st.integers(1, 3)), draw(st.integers(2, 6))
    kappa = draw(st.one_of(st.none(), sometimes(arrays((K, T, R), hostile=False), hostile_arrays((K, T, R))),
                           sometimes(arrays((T, R), hostile=False), hostile_arrays((T, R)))))
    fit_kwargs = {}
    if draw(st.integers(0, 3)) == 0:
        fit_kwargs["alpha"] = draw(reals(0.05, 0.5))
    if kappa is None:
        fit_kwargs["n_sim_steps"] = draw(sometimes(st.integers(2, 10), ints(2, 10)))
        if draw(st.booleans()):
            fit_kwargs["kappa0"] = draw(sometimes(arrays((4, R), hostile=False), hostile_arrays((4, R))))
        else:
            fit_kwargs["kappa0"] = np.zeros((4, R)) + np.linspace(-1, 1, 4)[:, None]
    params = {}
    for name, strategy in (("hidden", ints(2, 6)), ("n_layers", ints(1, 2)), ("n_epochs", ints(1, 2)),
                           ("n_covariance", reals(0.1, 2)), ("lambda_prior", reals(1e-5, 1e-3)),
                           ("n_regression_samples", ints(4, 20)), ("max_time_points", ints(4, 40)),
                           ("learning_rate", reals(1e-4, 1e-2)), ("validation_fraction", reals(0, 0.5)),
                           ("n_steps", ints(1, 3)), ("solver", st.sampled_from(["euler", "midpoint", "rk4", "x"])),
                           ("conditional", st.sampled_from(["closed_form", "cnf", "x"])),
                           ("batch_size", ints(1, 16)), ("n_threads", ints(1, 2))):
        if draw(st.integers(0, 9)) == 0:
            params[name] = draw(strategy)
    return dict(network=network, kappa=kappa, fit_kwargs=fit_kwargs, params=params)


@settings(max_examples=examples(40))
@given(connector_arguments())
def test_connector_fit_gives_a_clear_error_or_a_finite_model(sandbox, params):
    check(sandbox, "Connector.fit", run_connector, params)


@st.composite
def dissimilarity_arguments(draw):
    rank = draw(st.integers(1, 2))
    p = (rank, draw(st.floats(-1, 1)), draw(st.floats(0.1, 2)))
    q = (draw(sometimes(st.just(rank), st.integers(1, 3))), draw(st.floats(-1, 1)), draw(st.floats(0.1, 2)))
    kwargs = {"n_samples": draw(sometimes(st.integers(1, 40), ints(1, 40)))}
    for name, strategy in (("blur", reals(0.01, 0.5)), ("scaling", reals(0.5, 0.95)), ("n_threads", ints(1, 2)),
                           ("random_state", st.sampled_from([0, 1, None, -1, "x", 1.5])),
                           ("return_terms", st.booleans())):
        if draw(st.integers(0, 4)) == 0:
            kwargs[name] = draw(strategy)
    return dict(p=p, q=q, kwargs=kwargs)


@settings(max_examples=examples(80))
@given(dissimilarity_arguments())
def test_dissimilarity_gives_a_clear_error_or_a_finite_value(sandbox, params):
    check(sandbox, "dissimilarity", run_dissimilarity, params)


# --------------------------------------------------------------------------- the reproducers of issue 12, always run


@pytest.mark.parametrize("kwargs", [{"blur": 1e-200}, {"blur": 1e-320}, {"n_threads": 0}, {"n_threads": 100_000},
                                    {"scaling": 1.0}, {"n_samples": 10**12}], ids=str)
def test_dissimilarity_issue_reproducers(sandbox, kwargs):
    check(sandbox, "dissimilarity", run_dissimilarity, dict(p=(1, 0.0, 1.0), q=(1, 0.5, 1.0),
                                                             kwargs=dict({"n_samples": 20}, **kwargs)))


@pytest.mark.parametrize("params", [{"rank": 1000}, {"n_threads": 100_000}, {"n_threads": 0}, {"dt": 1e-200},
                                    {"learning_rate": 1e308, "ridge": 0.0}], ids=str)
def test_lint_issue_reproducers(sandbox, params):
    rates = np.tanh(np.random.default_rng(0).standard_normal((3, 5, 4)))
    check(sandbox, "LINT.fit", run_lint, dict(rates=rates, inputs=None, lengths=None,
                                              params=dict({"n_epochs": 1, "random_state": 0, "device": "cpu"}, **params)))


CONNECTOR_NET = dict(n_neurons=8, rank=2, n_inputs=0, dtype="float64", activation="identity", tau=2.0, scale=1.0,
                     bias=False, seed=195)


@pytest.mark.parametrize("params", [{"lambda_prior": 1e-200}, {"n_regression_samples": 2**32 + 1},
                                    {"lambda_prior": 10**400}], ids=str)
def test_connector_fit_reproducers(sandbox, params):
    """Found by the thorough profile: a singular regression, a sample count that cannot fit, an int beyond float."""
    kappa = np.random.default_rng(0).uniform(-2, 2, (2, 6, 2))
    check(sandbox, "Connector.fit", run_connector, dict(network=CONNECTOR_NET, kappa=kappa, fit_kwargs={},
                                                        params=params), timeout=30)
