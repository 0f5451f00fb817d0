"""The Connector estimator: API, persistence, bad input, and dynamics of sampled networks."""

import copy

import numpy as np
import pytest

pytest.importorskip("torch")

from scipy.optimize import brentq

from connector_sim import (
    Empirical,
    LowRankRNN,
    find_fixed_points,
    find_limit_cycle,
    find_ring,
    latent_flow,
    latent_velocity,
    simulate,
)
from connector_sim.inference import Connector
from connector_sim.inference.conditional_mean import gaussian_log_prob
from connector_sim.synthetic import synthetic_network

QUICK = dict(n_epochs=5, hidden=32, n_layers=2, batch_size=128, random_state=0)


@pytest.fixture(scope="module")
def limit_cycle():
    return synthetic_network("limit_cycle")


@pytest.fixture(scope="module")
def quick_connector(limit_cycle):
    """A barely trained Connector: enough for the API, not for the dynamics."""
    return Connector(**QUICK).fit(limit_cycle.network, limit_cycle.trajectories)


def network_with_inputs(N=400, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((N, 1))
    I = rng.standard_normal((N, 2))
    b = 0.3 * rng.standard_normal(N)
    n = 1.5 * m + rng.standard_normal((N, 1))
    network = LowRankRNN(m, n, I, b, tau=2.0)
    u = rng.standard_normal((10, 30, 2))
    result = simulate(network, inputs=u, kappa0=rng.standard_normal((10, 1)), dt=0.2)
    return network, result, u


# --------------------------------------------------------------------------- the estimator


def test_fitted_attributes(quick_connector, limit_cycle):
    c = quick_connector
    assert c.layout_.rank == 2 and c.layout_.n_inputs == 0 and c.layout_.bias
    assert c.layout is c.layout_
    assert c.n_rows_ == 1000 and c.alpha_ == 0.1 and c.tau_ == 1.0 and c.activation_ == "tanh"
    # The bias of the synthetic network is zero for every neuron: held fixed, not modelled.
    np.testing.assert_array_equal(c.marginal_.free_, [True, True, False])
    assert c.conditional_ is None
    np.testing.assert_allclose(c.n_covariance_, np.eye(2))
    assert c.conditional_mean_.n_time_points == 2000  # max_time_points of the 40,000
    assert "Connector(rank=2" in repr(c)


def test_sample_returns_a_network_and_its_rows(quick_connector):
    network, rows, labels = quick_connector.sample(257, random_state=1, return_rows=True, return_labels=True)
    assert isinstance(network, LowRankRNN) and network.n_neurons == 257
    assert network.tau == 1.0 and network.activation == "tanh"
    np.testing.assert_array_equal(network.rows(), rows)
    np.testing.assert_array_equal(labels, np.zeros(257))
    np.testing.assert_array_equal(rows[:, 4], 0.0)  # b
    # Same seed, same network; another seed, another one.
    np.testing.assert_array_equal(quick_connector.sample(257, random_state=1).rows(), rows)
    assert not np.array_equal(quick_connector.sample(257, random_state=2).rows(), rows)
    assert quick_connector.sample(10, 0, dtype=np.float32, tau=3.0).dtype == np.float32
    sampled_rows, _ = quick_connector.sample_rows(33, random_state=4)
    assert sampled_rows.shape == (33, 5)


def test_n_is_the_conditional_mean_plus_the_max_entropy_noise(quick_connector):
    _, rows = quick_connector.sample(20_000, random_state=3, return_rows=True)
    layout = quick_connector.layout_
    residual = rows[:, layout.n] - quick_connector.conditional_mean(rows[:, layout.mIb])
    # Sigma = I: Monte Carlo sd of the entries ~ 0.01 (2e4 samples); 4 sd.
    np.testing.assert_allclose(np.cov(residual.T), np.eye(2), atol=0.04)
    np.testing.assert_allclose(residual.mean(axis=0), 0.0, atol=0.03)


def test_the_learned_distribution_works_with_the_mean_field(quick_connector):
    points = np.array([[1.0, 0.0], [0.3, -0.5]])
    network = quick_connector.sample(2000, random_state=0)
    from_network = latent_velocity(network, points)
    from_rows = latent_velocity(quick_connector.empirical(2000, random_state=0), points)
    # Same draws (same seed) as a network or as Empirical rows: the same flow.
    np.testing.assert_allclose(from_rows, from_network, rtol=1e-10, atol=1e-12)
    means = quick_connector.empirical(5000, random_state=1, conditional_mean=True)
    assert isinstance(means, Empirical)
    np.testing.assert_allclose(quick_connector.latent_flow(n_samples=5000, random_state=1)(points),
                               latent_velocity(means, points), rtol=1e-12)


def test_log_prob_is_the_marginal_plus_the_gaussian_conditional(quick_connector):
    _, rows = quick_connector.sample(50, random_state=5, return_rows=True)
    layout = quick_connector.layout_
    mIb = rows[:, layout.mIb]
    expected = (quick_connector.marginal_.log_prob(mIb)
                + gaussian_log_prob(rows[:, layout.n], quick_connector.conditional_mean(mIb), np.eye(2)))
    np.testing.assert_allclose(quick_connector.log_prob(rows), expected, rtol=1e-12)
    with pytest.raises(ValueError, match=r"rows must have shape \(n_rows, 5\)"):
        quick_connector.log_prob(rows[:, :4])


def test_save_load_round_trip_gives_identical_samples(quick_connector, tmp_path):
    quick_connector.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "weights.pt"]
    loaded = Connector.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.sample(500, random_state=11).rows(),
                                  quick_connector.sample(500, random_state=11).rows())
    rows, _ = quick_connector.sample_rows(20, random_state=2)
    np.testing.assert_array_equal(loaded.log_prob(rows), quick_connector.log_prob(rows))
    assert loaded.get_params() == {**quick_connector.get_params(), "device": "auto"}
    # Saving again over the folder replaces it atomically (no temporary files left).
    loaded.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "weights.pt"]
    with pytest.raises(ValueError, match="holds a 'FlowMatchingCNF', not a Connector"):
        quick_connector.marginal_.save(tmp_path / "flow")
        Connector.load(tmp_path / "flow")


def test_fit_with_inputs_bias_residual_covariance_and_a_conditional_cnf(tmp_path):
    network, result, u = network_with_inputs()
    c = Connector(**QUICK, n_covariance="residual").fit(network, result.kappa, inputs=u, alpha=result.alpha)
    assert c.layout_.n_inputs == 2 and c.tau_ == 2.0 and c.alpha_ == pytest.approx(0.1)
    assert c.marginal_.free_.all()
    residual = network.n - c.conditional_mean(np.hstack([network.m, network.I, network.b[:, None]]))
    np.testing.assert_allclose(c.n_covariance_, np.atleast_2d(np.cov(residual.T)), rtol=1e-12)
    sampled = c.sample(300, random_state=0)
    assert sampled.n_inputs == 2 and sampled.tau == 2.0
    # The filtered inputs of the simulation give the same regression as the raw inputs.
    same = Connector(**QUICK, n_covariance="residual")
    same.fit(network, result.kappa, v=result.v, alpha=result.alpha)
    np.testing.assert_allclose(same.conditional_mean_.weights, c.conditional_mean_.weights, rtol=1e-10)
    cnf = Connector(**QUICK, conditional="cnf", n_covariance=0.5)
    cnf.fit(network, result.kappa, inputs=u, alpha=result.alpha)
    assert cnf.conditional_ is not None and cnf.conditional_.condition_dim_ == 4
    cnf.save(tmp_path / "cnf")
    loaded = Connector.load(tmp_path / "cnf")
    np.testing.assert_array_equal(loaded.sample_rows(200, 3)[0], cnf.sample_rows(200, 3)[0])
    assert np.all(np.isfinite(cnf.log_prob(cnf.sample_rows(20, 1)[0])))


def test_fit_from_a_network_alone_simulates_its_latents():
    network = synthetic_network("ring", n_neurons=300).network
    c = Connector(**QUICK, max_time_points=None).fit(network, n_sim_steps=20)
    # 400 default starts x 20 steps.
    assert c.conditional_mean_.n_time_points == 400 * 20


# --------------------------------------------------------------------------- bad input


def test_too_few_samples_for_the_dimension(limit_cycle):
    with pytest.raises(ValueError, match=r"more neurons than dimensions .* at least 4 rows for R \+ D \+ 1 = 3\. Got"):
        Connector(**QUICK).fit_latents(limit_cycle.trajectories, limit_cycle.network.m[:3])


def test_non_finite_loadings(limit_cycle):
    m = limit_cycle.network.m.copy()
    m[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"m must contain only finite values.*index \(7, 1\)"):
        Connector(**QUICK).fit_latents(limit_cycle.trajectories, m)
    b = np.zeros(1000)
    b[3] = np.inf
    with pytest.raises(ValueError, match="b must contain only finite values"):
        Connector(**QUICK).fit_latents(limit_cycle.trajectories, limit_cycle.network.m, b=b)


def test_latent_trajectory_shorter_than_two_steps(limit_cycle):
    with pytest.raises(ValueError, match=r"at least two time points .* Got 1 time point"):
        Connector(**QUICK).fit_latents(limit_cycle.trajectories[:, :1], limit_cycle.network.m)


def test_mismatched_latents_and_loadings(limit_cycle):
    m = limit_cycle.network.m
    with pytest.raises(ValueError, match=r"disagree on the rank: kappa has 2 .* m has 1 column"):
        Connector(**QUICK).fit_latents(limit_cycle.trajectories, m[:, :1])
    with pytest.raises(ValueError, match=r"I has 1 column\(s\) .* inputs have 0 dimension"):
        Connector(**QUICK).fit_latents(limit_cycle.trajectories, m, I=np.zeros((1000, 1)))
    with pytest.raises(ValueError, match=r"I must have shape \(1000, any\)"):
        Connector(**QUICK).fit_latents(limit_cycle.trajectories, m, I=np.zeros((999, 1)))
    with pytest.raises(ValueError, match=r"n must have shape \(1000, 2\)"):
        Connector(**QUICK).fit_latents(limit_cycle.trajectories, m, n=np.zeros((1000, 3)))
    network, result, u = network_with_inputs()
    with pytest.raises(ValueError, match=r"inputs must have shape \(10, 30, D\) or \(30, D\)"):
        Connector(**QUICK).fit(network, result.kappa, inputs=u[:, :-1])


def test_parameter_and_state_errors(limit_cycle):
    args = (limit_cycle.network, limit_cycle.trajectories)
    with pytest.raises(ValueError, match="'conditional' parameter of Connector must be one of"):
        Connector(conditional="gmm").fit(*args)
    with pytest.raises(ValueError, match="'n_regression_samples' parameter .* Got 1"):
        Connector(n_regression_samples=1).fit(*args)
    with pytest.raises(ValueError, match="residual' needs the fitted network's left factors"):
        Connector(**QUICK, n_covariance="residual").fit_latents(limit_cycle.trajectories, limit_cycle.network.m)
    with pytest.raises(ValueError, match="a number, a vector, a matrix or 'residual'"):
        Connector(**QUICK, n_covariance="diagonal").fit(*args)
    with pytest.raises(TypeError, match="network must be a LowRankRNN"):
        Connector().fit(limit_cycle.network.m, limit_cycle.trajectories)
    with pytest.raises(ValueError, match="supports the activations"):
        Connector(**QUICK).fit_latents(limit_cycle.trajectories, limit_cycle.network.m, activation="softsign")
    with pytest.raises(RuntimeError, match="not fitted yet"):
        Connector().sample(10)


# --------------------------------------------------------------------------- dynamics of sampled networks

BOX = np.array([[-2.5, 2.5], [-2.5, 2.5]])
# Trained enough for the dynamics: 200 epochs on 5,000 rows (batch 256) of a
# 3 x 64 MLP, and nbar from four regressions of 2,000 rows with a fixed ridge;
# ~12 s of CPU per fit. The paper's prior form (lambda_p = 1e-4, 1,000 rows)
# shrinks nbar and made the ring radius 3-8% small (see Connector's docstring).
TRAINED = dict(n_epochs=200, hidden=64, n_layers=3, batch_size=256, learning_rate=2e-3, random_state=0,
               ridge=100.0, n_regression_samples=2000, n_regressions=4)


def radial_nullcline_radius(velocity, n_angles=64):
    """Mean over directions e of the radius r where the radial velocity e . F(r e) vanishes.

    For a ring attractor this is the ring's radius; it stays defined when a
    finite network breaks the ring into a few fixed points on that circle.
    """
    radii = []
    for angle in np.linspace(0, 2 * np.pi, n_angles, endpoint=False):
        direction = np.array([np.cos(angle), np.sin(angle)])
        radii.append(brentq(lambda r, e=direction: velocity(r * e) @ e, 0.3, 2.0))
    return float(np.mean(radii)), float(np.std(radii))


@pytest.mark.slow
def test_networks_sampled_from_a_ring_fit_keep_the_ring():
    # Ground truth: the ring network with N = 5000 (closer to its mean field
    # than N = 1000, whose own ring radius is 8% off). Connector is fitted to
    # its latents and loadings; a network of 20,000 neurons sampled from it
    # has its ring radius within 5% (measured |error| <= 3.0% over
    # random_state 0-4; 0.5% for 0).
    truth = synthetic_network("ring", n_neurons=5000)
    true_flow = latent_flow(truth.distribution)
    reference = find_ring(true_flow, find_fixed_points(true_flow, BOX))
    assert reference is not None
    assert radial_nullcline_radius(true_flow)[0] == pytest.approx(reference.radius, rel=1e-6)
    connector = Connector(**TRAINED).fit(truth.network, truth.trajectories)
    sampled_flow = latent_flow(connector.sample(20_000, random_state=1))
    radius, spread = radial_nullcline_radius(sampled_flow)
    assert radius == pytest.approx(reference.radius, rel=0.05)
    # Still ring-like: the radius varies little with the angle (measured sd <= 2.1%).
    assert spread < 0.1 * radius
    # Its fixed points all lie on that circle (a broken ring) or at the origin.
    points = find_fixed_points(sampled_flow, BOX, n_starts=30, marginal_tol=0.1)
    norms = np.array([np.linalg.norm(p.position) for p in points])
    assert np.all((norms < 1e-6) | (np.abs(norms - reference.radius) < 0.15 * reference.radius))


@pytest.mark.slow
def test_networks_sampled_from_a_limit_cycle_fit_keep_the_cycle():
    # Period and radius of the limit cycle of a sampled network of 20,000
    # neurons within 5% of the ground truth's mean field (measured
    # |error| <= 1.6% and 2.3% over random_state 0-4).
    truth = synthetic_network("limit_cycle", n_neurons=5000)
    reference = find_limit_cycle(latent_flow(truth.distribution), [1.0, 0.0])
    connector = Connector(**TRAINED).fit(truth.network, truth.trajectories)
    cycle = find_limit_cycle(latent_flow(connector.sample(20_000, random_state=1)), [1.0, 0.0])
    assert cycle is not None
    assert cycle.period == pytest.approx(reference.period, rel=0.05)
    assert cycle.radius == pytest.approx(reference.radius, rel=0.05)


@pytest.mark.slow
def test_conditional_cnf_agrees_with_the_closed_form():
    # The paper's route (a conditional CNF trained on n ~ N(nbar, Sigma)),
    # with the paper's regression (lambda_p = 1e-4, 1,000 rows), against the
    # closed form it is trained on: conditional means, spread, dynamics.
    truth = synthetic_network("limit_cycle", n_neurons=2000)
    settings = dict(n_epochs=100, hidden=64, n_layers=3, batch_size=256, learning_rate=2e-3, random_state=0,
                    ridge_scaling="paper")
    connector = Connector(**settings, conditional="cnf", n_covariance=0.25,
                          n_conditional_samples=4000).fit(truth.network, truth.trajectories)
    conditions = connector.marginal_.sample(20, random_state=3)
    n = connector.conditional_.sample(condition=np.repeat(conditions, 500, axis=0), random_state=4)
    n = n.reshape(20, 500, 2)
    nbar = connector.conditional_mean(conditions)
    # RMS error of the CNF's conditional means relative to the spread of nbar
    # itself (measured 0.039-0.054 over random_state 0-2); spread sd 0.5
    # (measured 0.46-0.48).
    assert np.sqrt(np.mean((n.mean(axis=1) - nbar) ** 2)) < 0.15 * nbar.std()
    np.testing.assert_allclose(n.std(axis=1).mean(axis=0), 0.5, rtol=0.15)
    # Networks sampled through the CNF and through the closed form (same
    # marginal and nbar) have the same limit cycle (periods measured within
    # 1%), and both that of the ground truth's mean field (within 3.3%).
    closed_form = copy.copy(connector)
    closed_form.conditional_ = None
    reference = find_limit_cycle(latent_flow(truth.distribution), [1.0, 0.0])
    periods = []
    for source in (connector, closed_form):
        cycle = find_limit_cycle(latent_flow(source.sample(20_000, random_state=1)), [1.0, 0.0])
        assert cycle is not None
        periods.append(cycle.period)
    assert periods[0] == pytest.approx(periods[1], rel=0.03)
    assert periods[0] == pytest.approx(reference.period, rel=0.05)


@pytest.mark.parametrize("activation", ["softplus", "sigmoid"])
def test_smooth_activations_carry_through_fit_sample_and_flow(limit_cycle, activation):
    # The network's activation becomes the Connector's (the conditional mean's phi),
    # its sampled networks', and the mean field's: the sampled network's flow is the
    # sample average of n phi(m kappa) with this phi (reference flow, 1e-12).
    source = limit_cycle.network
    network = LowRankRNN(source.m, source.n, source.I, source.b, activation=activation)
    trajectories = simulate(network, 30, dt=0.1, kappa0=np.random.default_rng(0).normal(size=(8, 2))).kappa
    connector = Connector(**QUICK).fit(network, trajectories)
    assert connector.activation_ == activation and connector.conditional_mean_.activation == activation
    sampled = connector.sample(300, random_state=1)
    assert sampled.activation == activation
    kappa = np.array([[0.3, -0.2], [1.0, 0.5]])
    phi = {"softplus": lambda z: np.logaddexp(0, z), "sigmoid": lambda z: 1 / (1 + np.exp(-z))}[activation]
    direct = -kappa + phi(kappa @ sampled.m.T + sampled.b) @ sampled.n / sampled.n_neurons
    np.testing.assert_allclose(latent_velocity(sampled, kappa), direct, rtol=0, atol=1e-12)


def test_official_preset_samples_with_the_official_number_of_evaluations(limit_cycle, tmp_path):
    # The official sampler: ODESolver(method="midpoint", step_size=0.05) on [0, 1] is
    # 20 midpoint steps, 2 velocity evaluations each: 40 calls of each velocity MLP
    # per batch of samples (this class's default, 10 steps, makes 20).
    connector = Connector.official(n_epochs=2, random_state=0)
    assert connector.n_steps == 20 and connector.solver == "midpoint" and connector.weight_decay == 1e-5
    assert connector.conditional == "cnf" and connector.validation_fraction == 0.0 and not connector.cosine
    assert Connector.official(n_steps=7).n_steps == 7
    connector.fit(limit_cycle.network, limit_cycle.trajectories)
    assert len(connector.marginal_.history_["val_loss"]) == 2  # no early stopping

    def count_calls(flow):
        calls = []
        flow.model_.register_forward_hook(lambda module, inputs, output: calls.append(1))
        return calls

    marginal_calls, conditional_calls = count_calls(connector.marginal_), count_calls(connector.conditional_)
    connector.sample(50, random_state=0)
    assert len(marginal_calls) == 40 and len(conditional_calls) == 40
    default = Connector(n_epochs=2, random_state=0).fit(limit_cycle.network, limit_cycle.trajectories)
    calls = count_calls(default.marginal_)
    default.sample(50, random_state=0)
    assert len(calls) == 20
    # The preset's settings survive save and load.
    connector.save(tmp_path / "official")
    loaded = Connector.load(tmp_path / "official", device="cpu")
    assert {**loaded.get_params(), "device": "auto"} == connector.get_params()


def test_callback_follows_the_marginal_then_the_conditional_flow_and_is_not_saved(limit_cycle, tmp_path):
    seen = {}
    connector = Connector(**dict(QUICK, n_epochs=2), conditional="cnf", n_covariance=0.5,
                          callback=lambda flow, epoch, losses: seen.setdefault(id(flow), []).append(epoch))
    connector.fit(limit_cycle.network, limit_cycle.trajectories)
    flows = [connector.marginal_, connector.conditional_]
    assert [seen[id(flow)] for flow in flows] == [[1, 2], [1, 2]]
    assert "callback" not in connector.get_params()
    connector.save(tmp_path / "model")
    assert Connector.load(tmp_path / "model").callback is None
