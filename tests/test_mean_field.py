"""Mean field: quadrature, closed form against sampled networks, perturbations, cell-type flows."""

import numpy as np
import pytest
from scipy.integrate import quad

from connector_sim import (
    Empirical,
    Gaussian,
    GaussianMixture,
    LowRankRNN,
    find_fixed_points,
    latent_flow,
    latent_velocity,
    mean_field_trajectory,
    normalized_difference,
    simulate,
    synthetic_network,
)
from connector_sim._kernels import flow_field
from connector_sim.mean_field import DEFAULT_ORDER, WIDE_THRESHOLD, gaussian_averages
from connector_sim.synthetic import latent_grid, quadstable_mixture


def adaptive_average(f, mu, s):
    """E[f(mu + s g)] by adaptive quadrature over mu +- 13 s (to 1e-13), split at the kinks of tanh and relu."""
    if s == 0:
        return f(mu)
    density = lambda y: f(y) * np.exp(-0.5 * ((y - mu) / s) ** 2) / (s * np.sqrt(2 * np.pi))  # noqa: E731
    low, high = mu - 13 * s, mu + 13 * s
    breaks = sorted(p for p in {mu, mu - s, mu + s, 0.0, -1.0, 1.0, -3.0, 3.0} if low < p < high)
    return quad(density, low, high, points=breaks, epsabs=1e-13, epsrel=1e-13, limit=1000)[0]


PHI = {
    "tanh": (np.tanh, lambda y: 1.0 - np.tanh(y) ** 2),
    "relu": (lambda y: max(y, 0.0), lambda y: float(y > 0)),
    "softplus": (lambda y: np.logaddexp(0.0, y), lambda y: 0.5 * (1.0 + np.tanh(0.5 * y))),
    "sigmoid": (lambda y: 0.5 * (1.0 + np.tanh(0.5 * y)), lambda y: 0.25 * (1.0 - np.tanh(0.5 * y) ** 2)),
}

# s from 0 through the switch of rules (0.6) to the wide-variance regime (20, 200).
AVERAGE_CASES = [(mu, s) for mu in (0.0, 0.7, -2.5, 9.0) for s in (0.0, 1e-3, 0.3, 0.59, 0.61, 1.0, 3.0, 20.0, 200.0)]


@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus", "sigmoid"])
def test_gaussian_averages_match_adaptive_quadrature(activation):
    # The adaptive reference is good to ~1e-13; the default rule is 1e-12
    # or better everywhere, so 1e-10 leaves room for both.
    f, df = PHI[activation]
    mu, s = np.array(AVERAGE_CASES).T
    phi, dphi = gaussian_averages(activation, mu, s)
    for i, (m, sd) in enumerate(AVERAGE_CASES):
        assert phi[i] == pytest.approx(adaptive_average(f, m, sd), abs=1e-10), (m, sd)
        if sd > 0 or m != 0:  # phi'(0) of relu is a convention
            assert dphi[i] == pytest.approx(adaptive_average(df, m, sd), abs=1e-10), (m, sd)


def test_wide_variance_defeats_low_order_and_plain_gauss_hermite():
    # At s = 20, tanh(mu + s g) is a step of width 1/20 in g: plain
    # Gauss-Hermite misses it by 3e-2 even with the default number of nodes,
    # and order 10 of the split rule by 4e-4; the default is exact to 1e-12.
    mu, s = 0.7, 20.0
    exact = adaptive_average(PHI["tanh"][0], mu, s), adaptive_average(PHI["tanh"][1], mu, s)
    x, w = np.polynomial.hermite.hermgauss(DEFAULT_ORDER)
    plain = np.tanh(mu + s * np.sqrt(2) * x) @ w / np.sqrt(np.pi)
    assert abs(plain - exact[0]) > 1e-2
    low = gaussian_averages("tanh", mu, s, order=10)
    assert max(abs(low[0] - exact[0]), abs(low[1] - exact[1])) > 1e-4
    default = gaussian_averages("tanh", mu, s)
    np.testing.assert_allclose(default, exact, atol=1e-12)
    # Near the switch, order 10 is off by 1e-2 too.
    low = gaussian_averages("tanh", mu, 1.2 * WIDE_THRESHOLD, order=10)
    assert abs(low[0] - adaptive_average(PHI["tanh"][0], mu, 1.2 * WIDE_THRESHOLD)) > 1e-3


def random_gaussian(rank=2, n_inputs=1, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    dim = 2 * rank + n_inputs + int(bias)
    factor = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return Gaussian(0.3 * rng.standard_normal(dim), factor @ factor.T + 0.2 * np.eye(dim), rank=rank,
                    n_inputs=n_inputs, bias=bias)


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity", "softplus", "sigmoid"])
def test_mean_field_matches_sample_average_at_two_sizes(activation):
    # Theory check: the flow of N sampled neurons is a sample mean of
    # n_i phi(z_i), so it differs from the mean field by ~ sd / sqrt(N) per
    # point; 6 standard errors (computed from the same neurons) bounds it.
    distribution = random_gaussian()
    kappa = latent_grid(5, 2.0).reshape(5, 5, 2)
    v = np.array([0.5])
    theory = latent_velocity(distribution, kappa, v, activation=activation)
    assert theory.shape == (5, 5, 2)
    for n_neurons in (4_000, 64_000):
        network = distribution.sample(n_neurons, 1, activation=activation)
        sampled = latent_velocity(network, kappa, v)
        z = kappa @ network.m.T + v @ network.I.T + network.b
        rates = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0), "identity": lambda x: x,
                 "softplus": lambda x: np.logaddexp(0, x), "sigmoid": lambda x: 0.5 + 0.5 * np.tanh(0.5 * x)}[activation](z)
        terms = rates[..., None] * network.n  # (5, 5, N, 2)
        standard_error = terms.std(axis=2) / np.sqrt(n_neurons)
        assert np.all(np.abs(sampled - theory) <= 6 * standard_error)


def test_empirical_rows_and_network_give_the_same_flow():
    network = random_gaussian().sample(500, 3)
    kappa = latent_grid(4, 1.5)
    rows = Empirical(network.rows(), rank=2, n_inputs=1, bias=True)
    np.testing.assert_allclose(latent_velocity(rows, kappa, [0.2]), latent_velocity(network, kappa, [0.2]),
                               rtol=0, atol=1e-14)


def test_flow_field_reference_is_the_direct_sum_for_any_chunking(monkeypatch):
    # Chunking over points and blocking over neurons change only the
    # order of float64 additions: 1e-14.
    network = random_gaussian(seed=4).sample(777, 5)
    rng = np.random.default_rng(6)
    kappa, v = rng.standard_normal((13, 2)), rng.standard_normal((13, 1))
    direct = np.array([network.n.T @ np.tanh(network.m @ k + network.I @ u + network.b) / 777 for k, u in zip(kappa, v)])
    out = np.empty((13, 2))
    flow_field.flow_field_reference(network.m_T, network.n_T, network.I_T, network.b, "tanh", kappa, v, out)
    np.testing.assert_allclose(out, direct, rtol=0, atol=1e-14)
    monkeypatch.setattr(flow_field, "BLOCK_SIZE", 100)
    monkeypatch.setattr(flow_field, "_TEMPORARY_ELEMENTS", 300)
    flow_field.flow_field_reference(network.m_T, network.n_T, network.I_T, network.b, "tanh", kappa, v, out)
    np.testing.assert_allclose(out, direct, rtol=0, atol=1e-14)


def test_trajectory_of_a_sampled_network_reproduces_the_simulator():
    # Same Euler recursion (theory eq. 3) on the same neurons: rounding only.
    network = random_gaussian(seed=2).sample(300, 7)
    rng = np.random.default_rng(8)
    kappa0 = rng.standard_normal((3, 2))
    inputs = rng.standard_normal((3, 40, 1))
    expected = simulate(network, inputs=inputs, kappa0=kappa0, v0=[0.1], dt=0.2).kappa
    got = mean_field_trajectory(network, kappa0, dt=0.2, inputs=inputs, v0=[0.1])
    assert got.shape == (3, 41, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_clamped_cell_type_of_a_network_matches_the_simulator_clamp():
    network, labels = quadstable_mixture().sample(400, 9, return_labels=True)
    kappa0 = latent_grid(3, 1.5)
    expected = simulate(network, 60, kappa0=kappa0, clamp={"units": labels == 2, "value": 0.3}).kappa
    got = mean_field_trajectory(network, kappa0, 60, labels=labels, clamp_components={2: 0.3})
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def rank_one(overlap, var_n=5.0):
    """Rank one, Var(m) = 1, Cov(m, n) = overlap, zero means."""
    return Gaussian([0.0, 0.0], [[1.0, overlap], [overlap, var_n]], rank=1)


def test_rank_one_nonzero_fixed_point_exists_iff_overlap_above_one():
    # dkappa/dt = -kappa + s kappa <phi'>(0, |kappa|): the origin has slope
    # s - 1, and <phi'> < 1 away from it, so kappa* != 0 needs s > 1.
    below = find_fixed_points(latent_flow(rank_one(0.8)), [[-4, 4]])
    assert [(float(p.position[0]), p.stability) for p in below] == [(0.0, "stable node")]
    above = find_fixed_points(latent_flow(rank_one(1.3)), [[-4, 4]])
    assert [p.stability for p in above] == ["stable node", "unstable node", "stable node"]
    assert above[0].position[0] == pytest.approx(-above[2].position[0], abs=1e-9)
    assert above[2].position[0] > 0.3
    np.testing.assert_allclose(above[1].eigenvalues.real, [0.3], atol=1e-8)


def test_silencing_a_random_fraction_scales_the_overlap():
    # Silencing a random fraction f of the units removes a fraction f of
    # every sum over neurons: in mean field, s -> (1 - f) s. The simulated
    # fixed point fluctuates with the sampled overlap, sd ~ 2.4 / sqrt(N)
    # (measured over 20 seeds); 12 / sqrt(N) is 5 sd.
    f = 0.25
    mixture = GaussianMixture([1 - f, f], np.zeros((2, 2)), np.stack([rank_one(2.0).cov] * 2), rank=1)
    silenced = latent_flow(mixture, clamp_components={1: 0.0})
    scaled = latent_flow(rank_one((1 - f) * 2.0, var_n=5.0 * (1 - f) ** 2))
    kappa = np.linspace(-3, 3, 31)[:, None]
    np.testing.assert_allclose(silenced(kappa), scaled(kappa), rtol=0, atol=1e-14)
    target = max(p.position[0] for p in find_fixed_points(scaled, [[-4, 4]]) if p.stable)
    assert target == pytest.approx(0.8434, abs=1e-4)
    for n_neurons in (5_000, 50_000):
        network = rank_one(2.0).sample(n_neurons, 11)
        units = np.random.default_rng(12).choice(n_neurons, int(f * n_neurons), replace=False)
        end = simulate(network, 300, kappa0=[[1.0], [-1.0]], clamp={"units": units, "value": 0.0}).kappa[:, -1, 0]
        np.testing.assert_allclose(end, [target, -target], atol=12 / np.sqrt(n_neurons))


def test_clamp_replaces_a_component_by_its_mean_n_times_the_value():
    mixture = quadstable_mixture()
    kappa = latent_grid(4, 2.0)
    full = latent_velocity(mixture, kappa)
    component = latent_velocity(mixture, kappa, component=1)
    clamped = latent_velocity(mixture, kappa, clamp_components={1: 0.5})
    # w_1 E_1[n phi] -> w_1 E_1[n] 0.5, with E_1[n] the component's n-mean.
    expected = full - 0.25 * (component + kappa) + 0.25 * 0.5 * mixture.means[1, 2:]
    np.testing.assert_allclose(clamped, expected, rtol=0, atol=1e-14)


def test_cell_type_flows_add_up_and_normalized_difference_is_antisymmetric():
    mixture = quadstable_mixture()
    kappa = latent_grid(6, 2.4)
    total = sum(w * (latent_velocity(mixture, kappa, component=k) + kappa) for k, w in enumerate(mixture.weights))
    np.testing.assert_allclose(total - kappa, latent_velocity(mixture, kappa), rtol=0, atol=1e-14)
    index = normalized_difference(mixture, kappa, 0, 2)
    assert index.shape == (36,)
    assert np.all(np.abs(index) <= 1)
    np.testing.assert_allclose(normalized_difference(mixture, kappa, 2, 0), -index, atol=1e-15)
    np.testing.assert_array_equal(normalized_difference(mixture, kappa, 1, 1), 0.0)
    # On a sampled network, types are neuron labels; with 50,000 neurons its
    # per-type speeds are within ~0.03 of the mean field's, so the index
    # (a ratio of speeds of order 1) agrees to 0.05.
    network, labels = mixture.sample(50_000, 13, return_labels=True)
    np.testing.assert_allclose(normalized_difference(network, kappa, 0, 2, labels=labels), index, atol=0.05)


def test_synthetic_network_bundles_truth_network_and_trajectories():
    bundle = synthetic_network("quadstable", n_neurons=400, random_state=3)
    assert isinstance(bundle.distribution, GaussianMixture)
    assert isinstance(bundle.network, LowRankRNN) and bundle.network.n_neurons == 400
    np.testing.assert_array_equal(np.bincount(bundle.labels), [100] * 4)
    np.testing.assert_array_equal(bundle.kappa0, latent_grid(20, 2.4))
    assert bundle.trajectories.shape == (400, 101, 2)
    np.testing.assert_allclose(bundle.trajectories, simulate(bundle.network, 100, dt=0.1, kappa0=bundle.kappa0).kappa)
    ring = synthetic_network("ring", n_neurons=300)
    assert isinstance(ring.distribution, Gaussian) and not ring.labels.any()
    with pytest.raises(ValueError, match="Unknown synthetic network 'torus'. Expected one of"):
        synthetic_network("torus")


def test_bad_inputs_say_what_was_expected():
    mixture = quadstable_mixture()
    with pytest.raises(ValueError, match=r"kappa must have shape \(\.\.\., 2\).*Got shape \(10, 3\)"):
        latent_velocity(mixture, np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"clamp_components names cell type 4, which does not exist.*\[0, 1, 2, 3\]"):
        latent_velocity(mixture, [0.0, 0.0], clamp_components={4: 0.0})
    with pytest.raises(ValueError, match="component names cell type 7"):
        latent_velocity(mixture, [0.0, 0.0], component=7)
    with pytest.raises(ValueError, match="labels are the cell types of a sampled network"):
        latent_velocity(mixture, [0.0, 0.0], labels=np.zeros(4, int))
    with pytest.raises(ValueError, match=r"v must be None: the source has no inputs"):
        latent_velocity(mixture, [0.0, 0.0], v=[1.0])
    with pytest.raises(ValueError, match="clamp_components\\[0\\] must be a finite number"):
        latent_velocity(mixture, [0.0, 0.0], clamp_components={0: np.nan})
    network = mixture.sample(50, 0)
    with pytest.raises(ValueError, match=r"labels must be one integer cell type per neuron.*shape \(50,\)"):
        latent_velocity(network, [0.0, 0.0], labels=np.zeros(49, int))
    with pytest.raises(TypeError, match="needs a Gaussian, GaussianMixture, Empirical or LowRankRNN"):
        latent_velocity(np.eye(4), [0.0, 0.0])
    with pytest.raises(ValueError, match=r"closed-form mean field supports the activations \['tanh', 'relu', 'identity', 'softplus', 'sigmoid'\]"):
        latent_velocity(mixture, [0.0, 0.0], activation="softsign")
    with pytest.raises(ValueError, match="Give n_steps"):
        mean_field_trajectory(mixture, [0.0, 0.0])
