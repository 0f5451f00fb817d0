"""Property-based tests of the distributions, find_fixed_points and perturbation_study (see fuzzlib)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzlib import arrays, check, examples, hostile_arrays, ints, make_network, network_recipes, reals, sometimes

# --------------------------------------------------------------------------- cases (run in the sandbox)


def _gaussian_parts(rank, n_inputs, bias, seed):
    dim = 2 * rank + n_inputs + int(bias)
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal((dim, dim))
    return rng.standard_normal(dim), factor @ factor.T / dim + 0.1 * np.eye(dim)


def run_distribution(kind, args, layout, n_neurons, sample_kwargs, rows_only):
    from connector_sim import Empirical, Gaussian, GaussianMixture

    cls = {"Gaussian": Gaussian, "GaussianMixture": GaussianMixture, "Empirical": Empirical}[kind]
    distribution = cls(*args, **layout)
    if rows_only:
        return distribution.sample_rows(n_neurons, sample_kwargs.get("random_state"))
    network = distribution.sample(n_neurons, **sample_kwargs)
    network = network[0] if isinstance(network, tuple) else network
    return network.m, network.n, network.I, network.b


def velocity_of(name):
    """Latent flows by name (picklable): smooth ones, and hostile ones (NaN, inf, complex, wrong shape, not callable).

    (A flow that raises its own exception is the user's: find_fixed_points lets it through, as it should.)
    """
    def linear(kappa):
        return -np.asarray(kappa) + 0.5

    def bistable(kappa):
        kappa = np.asarray(kappa)
        with np.errstate(over="ignore", invalid="ignore"):  # far from the box: inf, without numpy's warning
            return kappa - kappa**3

    def nan_outside(kappa):
        kappa = np.asarray(kappa, dtype=float)
        out = -kappa
        out[np.abs(kappa) > 1] = np.nan
        return out

    def wrong_shape(kappa):
        return np.zeros(3)

    def complex_valued(kappa):
        return -np.asarray(kappa) + 1j

    def overflow(kappa):
        kappa = np.asarray(kappa, dtype=float)
        return np.where(np.abs(kappa) > 0.5, np.inf, -kappa)

    def network_flow(kappa):
        from connector_sim import latent_flow

        network = make_network(20, np.shape(kappa)[-1], 0, "float64", "tanh", 1.0, 1.0, False, 0)
        return latent_flow(network)(kappa)

    return dict(linear=linear, bistable=bistable, nan_outside=nan_outside, wrong_shape=wrong_shape,
                complex_valued=complex_valued, overflow=overflow, network=network_flow, none=None, number=3.0)[name]


def run_find_fixed_points(velocity, box, kwargs):
    from connector_sim import find_fixed_points

    points = find_fixed_points(velocity_of(velocity), box, **kwargs)
    return [(p.position, p.jacobian, p.eigenvalues, p.residual) for p in points]


def run_perturbation_study(source, perturbations, initial_conditions, kwargs):
    from connector_sim import GaussianMixture, Perturbation, perturbation_study

    kind, recipe = source
    if kind == "network":
        source = make_network(**recipe)
    else:
        rank = recipe["rank"]
        mean, cov = _gaussian_parts(rank, 0, False, recipe["seed"])
        source = GaussianMixture([0.5, 0.5], [mean, -mean], [cov, cov], rank=rank)
    built = []
    for i, spec in enumerate(perturbations):
        spec = dict(spec)
        constructor = spec.pop("constructor")
        spec.setdefault("name", f"p{i}")
        built.append(Perturbation(**spec) if constructor == "init" else getattr(Perturbation, constructor)(**spec))
    table = perturbation_study(source, built, initial_conditions, **kwargs)
    rows = [dict(row) for row in table.rows]
    for row in rows:
        if row.get("attractor") == -1:
            # Documented: no stable fixed point to match, the attractor's position and distance are nan.
            for key in [key for key in row if key.startswith("attractor_")]:
                row.pop(key)
    return rows


# --------------------------------------------------------------------------- strategies


@st.composite
def distribution_arguments(draw):
    kind = draw(st.sampled_from(["Gaussian", "GaussianMixture", "Empirical"]))
    rank, n_inputs, bias = draw(st.integers(1, 2)), draw(st.integers(0, 1)), draw(st.booleans())
    dim = 2 * rank + n_inputs + int(bias)
    mean, cov = _gaussian_parts(rank, n_inputs, bias, draw(st.integers(0, 100)))
    layout = {"rank": draw(sometimes(st.just(rank), ints(1, 2))), "n_inputs": draw(sometimes(st.just(n_inputs), ints(0, 1))),
              "bias": draw(sometimes(st.just(bias), st.sampled_from([1, "yes", None, 2.0])))}
    if kind == "Gaussian":
        args = [draw(sometimes(st.just(mean), hostile_arrays((dim,)))),
                draw(sometimes(st.just(cov), st.one_of(hostile_arrays((dim, dim)),
                                                       st.just(-cov), st.just(cov + np.triu(np.ones((dim, dim)), 1)))))]
    elif kind == "GaussianMixture":
        k = draw(st.integers(1, 3))
        weights = np.full(k, 1.0 / k)
        args = [draw(sometimes(st.just(weights), st.one_of(hostile_arrays((k,), 0, 1),
                                                            st.just(-weights), st.just(weights * 2)))),
                draw(sometimes(st.just(np.tile(mean, (k, 1))), hostile_arrays((k, dim)))),
                draw(sometimes(st.just(np.tile(cov, (k, 1, 1))), hostile_arrays((k, dim, dim))))]
    else:
        args = [draw(sometimes(arrays((draw(st.integers(1, 8)), dim), hostile=False),
                               hostile_arrays((draw(st.integers(0, 8)), dim))))]
    n_neurons = draw(sometimes(st.integers(1, 50), ints(1, 50)))
    sample_kwargs = {}
    if draw(st.integers(0, 3)) == 0:
        sample_kwargs["random_state"] = draw(st.sampled_from([0, None, -1, 2**70, 1.5, "seed", np.random.default_rng(0)]))
    if draw(st.integers(0, 3)) == 0:
        sample_kwargs["dtype"] = draw(st.sampled_from(["float32", np.float64, "int32", "complex64", None]))
    if draw(st.integers(0, 4)) == 0:
        sample_kwargs["tau"] = draw(reals(0.5, 2))
    if draw(st.integers(0, 4)) == 0:
        sample_kwargs["activation"] = draw(st.sampled_from(["relu", "bogus", None]))
    if draw(st.integers(0, 5)) == 0:
        sample_kwargs["return_labels"] = True
    return dict(kind=kind, args=args, layout=layout, n_neurons=n_neurons, sample_kwargs=sample_kwargs,
                rows_only=draw(st.integers(0, 4)) == 0)


@settings(max_examples=examples(250))
@given(distribution_arguments())
def test_distributions_give_a_clear_error_or_a_finite_network(sandbox, params):
    entry = f"{params['kind']}.{'sample_rows' if params['rows_only'] else 'sample'}"
    check(sandbox, entry, run_distribution, params)


@st.composite
def fixed_point_arguments(draw):
    velocity = draw(st.sampled_from(["linear", "bistable", "network"] * 3
                                    + ["nan_outside", "wrong_shape", "complex_valued", "overflow", "none",
                                       "number"]))
    rank = draw(st.integers(1, 2))
    box = np.array([[-2.0, 2.0]] * rank)
    box = draw(sometimes(st.just(box), st.one_of(hostile_arrays((rank, 2)), st.just(box[:, ::-1]),
                                                 st.just(box.T), st.just(np.array([[0.0, 0.0]] * rank))), valid_weight=5))
    kwargs = {"n_starts": draw(sometimes(st.integers(1, 12), ints(1, 12)))}
    for name, low, high in (("tol", 1e-9, 1e-6), ("dedup_tol", 1e-5, 1e-3), ("jacobian_step", 1e-6, 1e-4),
                            ("marginal_tol", 1e-7, 1e-5)):
        if draw(st.integers(0, 3)) == 0:
            kwargs[name] = draw(st.one_of(reals(low, high), st.sampled_from([1j, None, 1 + 0j, [1e-9]])))
    if draw(st.integers(0, 4)) == 0:
        kwargs["random_state"] = draw(st.sampled_from([0, None, -1, 1.5, "x", 2**70]))
    return dict(velocity=velocity, box=box, kwargs=kwargs)


@settings(max_examples=examples(150))
@given(fixed_point_arguments())
def test_find_fixed_points_gives_a_clear_error_or_finite_points(sandbox, params):
    check(sandbox, "find_fixed_points", run_find_fixed_points, params)


@st.composite
def perturbation_arguments(draw):
    rank = draw(st.integers(1, 2))
    if draw(st.booleans()):
        recipe = draw(network_recipes(max_neurons=30, max_rank=rank, max_inputs=0, diverging=False))
        recipe["rank"] = rank
        source, N = ("network", recipe), recipe["n_neurons"]
    else:
        source, N = ("mixture", {"rank": rank, "seed": draw(st.integers(0, 100))}), None
    perturbations = [{"constructor": "init"}]
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["units", "cell_types", "fraction"]))
        spec = {"constructor": draw(st.sampled_from(["init", "silence"])) if kind == "units" else "init"}
        if kind == "units":
            spec["units"] = draw(st.one_of(st.lists(st.integers(0, (N or 10) - 1), min_size=1, max_size=3),
                                           st.sampled_from([[N or 10], [-1], [], [0.5], "all"]),
                                           hostile_arrays((2,), 0, (N or 10) - 1)))
        elif kind == "cell_types":
            spec["cell_types"] = draw(st.sampled_from([0, 1, [0, 1], 5, -1, [], "a", 1.5]))
        else:
            spec["fraction"] = draw(reals(0, 1))
        if spec["constructor"] == "init" and draw(st.booleans()):
            spec["value"] = draw(sometimes(st.floats(-1, 1), st.one_of(reals(-1, 1), st.sampled_from(["x", [1.0]]))))
        if spec["constructor"] == "init" and draw(st.integers(0, 3)) == 0:
            spec["start"], spec["stop"] = draw(ints(0, 5)), draw(st.one_of(st.none(), ints(1, 10)))
        perturbations.append(spec)
    initial = draw(sometimes(arrays((draw(st.integers(1, 3)), rank), hostile=False),
                             hostile_arrays((draw(st.integers(0, 3)), rank))))
    kwargs = {"n_steps": draw(sometimes(st.integers(1, 30), ints(1, 30))),
              "fixed_point_options": draw(sometimes(st.just({"n_starts": 4}),
                                                    st.sampled_from([{"n_starts": 2**63}, {"bogus": 1}, {"tol": -1},
                                                                     "x", {"n_starts": 0}])))}
    if N is None and draw(st.integers(0, 2)) == 0:
        kwargs["n_neurons"] = draw(sometimes(st.integers(1, 40), ints(1, 40)))
    if N is not None and draw(st.integers(0, 2)) == 0:
        kwargs["labels"] = draw(sometimes(st.just(np.arange(N) % 2), hostile_arrays((N,), 0, 2)))
    if draw(st.integers(0, 4)) == 0:
        kwargs["dt"] = draw(reals(0.05, 0.5))
    if (N is not None or "n_neurons" in kwargs) and draw(st.integers(0, 4)) == 0:
        kwargs["noise_std"] = draw(reals(0, 0.5))
    if draw(st.integers(0, 4)) == 0:
        kwargs["seeds"] = draw(st.sampled_from([(0, 1), (), (-1,), (2**64,), "0", (1.5,), [[0, 1]]]))
    if draw(st.integers(0, 4)) == 0:
        kwargs["box"] = draw(hostile_arrays((rank, 2)))
    if draw(st.integers(0, 4)) == 0:
        kwargs["settle_tol"] = draw(reals(1e-4, 1e-2))
    if draw(st.integers(0, 4)) == 0:
        kwargs["reference"] = draw(st.sampled_from(["auto", "mean field", "network", "x"]))
    if draw(st.integers(0, 3)) == 0:
        kwargs["backend"] = draw(st.sampled_from(["numpy", "numba", "cpp", "bogus"]))
    if draw(st.integers(0, 4)) == 0:
        kwargs["n_threads"] = draw(ints(1, 2))
    if draw(st.integers(0, 5)) == 0:
        kwargs["dtype"] = draw(st.sampled_from(["float32", "int8", None]))
    return dict(source=source, perturbations=perturbations, initial_conditions=initial, kwargs=kwargs)


@settings(max_examples=examples(100))
@given(perturbation_arguments())
def test_perturbation_study_gives_a_clear_error_or_a_finite_table(sandbox, params):
    check(sandbox, "perturbation_study", run_perturbation_study, params)


# --------------------------------------------------------------------------- the reproducers of issue 12, always run


def run_leading_eigenvalues(n_threads, backend):
    from connector_sim import SparseLowRankRNN, SparseMask
    from connector_sim.spectra import leading_eigenvalues

    network = make_network(30, 1, 0, "float64", "tanh", 1.0, 1.0, False, 0)
    return leading_eigenvalues(SparseLowRankRNN(network, SparseMask(30, n_connections=5, seed=0)), 2,
                               backend=backend, n_threads=n_threads)


BOX = np.array([[-2.0, 2.0]])


@pytest.mark.parametrize("params", [
    dict(velocity="linear", box=BOX, kwargs={"n_starts": 2**63}),
    dict(velocity="linear", box=BOX, kwargs={"n_starts": 10**12}),
    dict(velocity="linear", box=BOX, kwargs={"tol": 1j}),
    dict(velocity="linear", box=BOX, kwargs={"tol": None}),
    dict(velocity="linear", box=BOX, kwargs={"dedup_tol": 1 + 0j}),
    dict(velocity="linear", box=BOX, kwargs={"jacobian_step": 1 + 0j}),
    dict(velocity="linear", box=BOX, kwargs={"marginal_tol": None}),
    dict(velocity="complex_valued", box=BOX, kwargs={"n_starts": 3}),
    dict(velocity="overflow", box=BOX, kwargs={"n_starts": 4}),
], ids=lambda p: f"{p['velocity']}-{p['kwargs']}")
def test_find_fixed_points_issue_reproducers(sandbox, params):
    check(sandbox, "find_fixed_points", run_find_fixed_points, params)


GAUSSIAN = ("Gaussian", [np.zeros(2), np.eye(2)], {"rank": 1})


@pytest.mark.parametrize("n_neurons", [10**12, 2**63, 10**10, 10**400])
@pytest.mark.parametrize("rows_only", [False, True])
def test_distribution_issue_reproducers(sandbox, n_neurons, rows_only):
    kind, args, layout = GAUSSIAN
    check(sandbox, f"{kind}.{'sample_rows' if rows_only else 'sample'}", run_distribution,
          dict(kind=kind, args=args, layout=layout, n_neurons=n_neurons, sample_kwargs={}, rows_only=rows_only))


PERTURB_NET = dict(n_neurons=20, rank=1, n_inputs=0, dtype="float64", activation="tanh", tau=1.0, scale=1.0, bias=False,
                   seed=0)


@pytest.mark.parametrize("kwargs", [{"n_steps": 10**10}, {"n_threads": 100_000}, {"n_threads": 0},
                                    {"n_steps": 5, "fixed_point_options": {"n_starts": 2**63}}, {"n_steps": 5, "empty": 1}],
                         ids=str)
def test_perturbation_study_issue_reproducers(sandbox, kwargs):
    kwargs = dict(kwargs)
    initial = np.zeros((0, 1)) if kwargs.pop("empty", None) else np.array([[0.5]])
    check(sandbox, "perturbation_study", run_perturbation_study,
          dict(source=("network", PERTURB_NET), perturbations=[{"constructor": "init"}],
               initial_conditions=initial, kwargs=dict({"fixed_point_options": {"n_starts": 4}}, **kwargs)))


@pytest.mark.parametrize("n_threads", [100_000, 2**31 - 1, 0, 1])
@pytest.mark.parametrize("backend", ["cpp", "numba", "auto"])
def test_leading_eigenvalues_thread_counts(sandbox, n_threads, backend):
    """Issue item 1: spectra.leading_eigenvalues with n_threads beyond what OpenMP can start."""
    check(sandbox, "spectra.leading_eigenvalues", run_leading_eigenvalues, dict(n_threads=n_threads, backend=backend))
