"""Fixed points, limit cycles and rings: hand-checked flows, then the four synthetic networks."""

import numpy as np
import pytest
from scipy.optimize import brentq

from connector_sim import (
    classify_dynamics,
    detect_limit_cycle,
    find_fixed_points,
    find_limit_cycle,
    find_ring,
    latent_flow,
    mean_field_trajectory,
    simulate,
)
from connector_sim.fixed_points import integrate, jacobian
from connector_sim.mean_field import gaussian_averages
from connector_sim.synthetic import gaussian_network_distribution, latent_grid, quadstable_mixture, quadstable_network

BOX = [[-3.0, 3.0], [-3.0, 3.0]]

LINEAR = {
    "stable node": [[-1.0, 0.0], [0.0, -2.0]],
    "stable focus": [[-1.0, 2.0], [-2.0, -1.0]],
    "saddle": [[1.0, 0.0], [0.0, -1.0]],
    "unstable node": [[1.0, 0.5], [0.0, 2.0]],
    "unstable focus": [[0.5, -1.0], [1.0, 0.5]],
    "center/marginal": [[0.0, 1.0], [-1.0, 0.0]],
}


@pytest.mark.parametrize("stability", sorted(LINEAR))
def test_linear_flows_have_one_fixed_point_of_the_right_class(stability):
    # F(kappa) = A kappa + c: one root, kappa* = -A^{-1} c, Jacobian A
    # (central differences are exact on a linear map up to rounding, 1e-9).
    A = np.array(LINEAR[stability])
    c = np.array([0.3, -0.2])
    points = find_fixed_points(lambda k: k @ A.T + c, BOX, n_starts=20)
    assert len(points) == 1
    np.testing.assert_allclose(points[0].position, -np.linalg.solve(A, c), atol=1e-10)
    np.testing.assert_allclose(points[0].jacobian, A, atol=1e-9)
    np.testing.assert_allclose(np.sort_complex(points[0].eigenvalues), np.sort_complex(np.linalg.eigvals(A)), atol=1e-9)
    assert points[0].stability == stability


def test_roots_outside_the_box_are_dropped_and_duplicates_merged():
    # F = kappa^2 - 1 per axis: roots at (+-1, +-1); a box over x in [0, 3] keeps two.
    points = find_fixed_points(lambda k: k**2 - 1.0, [[0.0, 3.0], [-3.0, 3.0]], n_starts=50)
    np.testing.assert_allclose([p.position for p in points], [[1.0, -1.0], [1.0, 1.0]], atol=1e-10)
    assert [p.stability for p in points] == ["saddle", "unstable node"]


def hopf(omega=2.0):
    """r' = r (1 - r^2), theta' = omega: a limit cycle of radius 1 and period 2 pi / omega."""

    def velocity(kappa):
        x, y = kappa[..., 0], kappa[..., 1]
        growth = 1.0 - x**2 - y**2
        return np.stack([growth * x - omega * y, growth * y + omega * x], axis=-1)

    return velocity


def test_limit_cycle_of_the_hopf_normal_form():
    # RK4 at dt = 0.01 and linear interpolation of the crossings: the
    # period is exact to ~1e-6. Centre and radius are trapezoidal time
    # averages over one period, the extent a max over samples dt apart:
    # O(dt^2) = 1e-4.
    cycle = find_limit_cycle(hopf(), [0.1, 0.0], dt=0.01, n_steps=3000)
    assert cycle.period == pytest.approx(np.pi, abs=1e-5)
    assert cycle.radius == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(cycle.amplitude, [2.0, 2.0], atol=1e-4)
    np.testing.assert_allclose(cycle.center, [0.0, 0.0], atol=1e-4)
    assert find_limit_cycle(lambda k: k @ np.array(LINEAR["stable focus"]).T, [1.0, 0.0]) is None
    assert find_limit_cycle(lambda k: -k, [1.0, 0.5]) is None


def test_integrate_is_fourth_order_and_batched():
    # kappa' = -kappa: RK4's one-step factor 1 - h + h^2/2 - h^3/6 + h^4/24.
    h = 0.1
    out = integrate(lambda k: -k, np.ones((3, 2)), h, 10)
    assert out.shape == (3, 11, 2)
    np.testing.assert_allclose(out[:, -1], (1 - h + h**2 / 2 - h**3 / 6 + h**4 / 24) ** 10, rtol=1e-14)


def radial(kappa):
    """kappa' = kappa (1 - |kappa|): every point of the unit circle is a fixed point."""
    return kappa * (1.0 - np.linalg.norm(kappa, axis=-1, keepdims=True))


def test_a_continuum_of_fixed_points_is_reported_as_one_ring():
    dynamics = classify_dynamics(radial, BOX, n_starts=40)
    assert dynamics.kind == "ring"
    assert dynamics.ring.radius == pytest.approx(1.0, abs=1e-8)
    np.testing.assert_allclose(dynamics.ring.center, [0.0, 0.0], atol=1e-8)
    assert dynamics.ring.speed_on < 1e-8 * dynamics.ring.speed_off
    assert len(dynamics.ring.fixed_points) > 10
    # A Jacobian eigenvector along the ring has eigenvalue 0, the radial one -1.
    point = dynamics.ring.fixed_points[0]
    np.testing.assert_allclose(np.sort(point.eigenvalues.real), [-1.0, 0.0], atol=1e-8)
    # The same marginal points without the ring's slow flow between them are not a ring.
    assert find_ring(lambda k: radial(k) + 0.5 * np.ones(2), dynamics.fixed_points) is None


def ring_radius(overlap=1.6):
    """|kappa*| of the Gaussian ring / limit-cycle networks: overlap <phi'>(0, r) = 1."""
    return brentq(lambda r: overlap * gaussian_averages("tanh", 0.0, r)[1] - 1.0, 0.1, 3.0, xtol=1e-14)


def test_the_four_synthetic_networks_in_mean_field():
    # Mean field of the ground-truth distributions (closed form).
    quadstable = classify_dynamics(latent_flow(quadstable_mixture()), BOX)
    assert quadstable.kind == "fixed points"
    stable = [p for p in quadstable.fixed_points if p.stable]
    assert len(stable) == 4
    assert sum(p.stability == "saddle" for p in quadstable.fixed_points) == 4
    # Symmetry of the mixture under 90-degree rotations: the four stable
    # points have one norm, 1.825 (on the axes: m-means at +-45 degrees).
    np.testing.assert_allclose([np.linalg.norm(p.position) for p in stable], 1.82507, atol=1e-5)

    bistable = classify_dynamics(latent_flow(gaussian_network_distribution("bistable")), BOX)
    assert bistable.kind == "fixed points"
    kinds = [p.stability for p in bistable.fixed_points]
    assert kinds.count("stable node") == 2 and kinds.count("saddle") == 2 and kinds.count("unstable node") == 1
    # Stable along the eigenvector (2, 1) of A for its top eigenvalue 1.6.
    for point in bistable.fixed_points:
        if point.stable:
            direction = point.position / np.linalg.norm(point.position)
            assert abs(direction @ np.array([2.0, 1.0]) / np.sqrt(5)) == pytest.approx(1.0, abs=1e-9)

    # kappa' = -kappa + A kappa <phi'>(0, |kappa|) with A = 1.6 I + 0.8 J:
    # on the circle 1.6 <phi'> = 1 the flow rotates at 0.8 / 1.6 = 0.5 rad per tau.
    radius = ring_radius()
    cycle = classify_dynamics(latent_flow(gaussian_network_distribution("limit_cycle")), BOX)
    assert cycle.kind == "limit cycle"
    assert cycle.limit_cycle.period == pytest.approx(4 * np.pi, rel=1e-3)
    assert cycle.limit_cycle.radius == pytest.approx(radius, rel=1e-3)
    assert [p.stability for p in cycle.fixed_points] == ["unstable focus"]

    ring = classify_dynamics(latent_flow(gaussian_network_distribution("ring")), BOX)
    assert ring.kind == "ring"
    assert ring.ring.radius == pytest.approx(radius, abs=1e-8)
    assert ring.ring.speed_on < 1e-8 * ring.ring.speed_off


def end_states(network, kappa0, n_steps=400, clamp=None):
    return simulate(network, n_steps, kappa0=kappa0, clamp=clamp).kappa[:, -1]


def nearest_distance(points, targets):
    return np.min(np.linalg.norm(points[:, None] - targets[None], axis=-1), axis=1)


N_SIM = 5_000
# Shifted off the symmetry lines (axes, diagonals), whose points flow to saddles.
STARTS = latent_grid(5, 2.4) + [0.13, -0.07]


def test_fixed_point_networks_in_simulation():
    # End states after 400 steps (40 tau, the slowest mode ~ exp(-0.25 t))
    # of N = 5000 neurons lie at the mean-field stable points up to the
    # finite-N shift of the fixed points, measured 2.8 / sqrt(N) (quadstable)
    # and 2.7 / sqrt(N) (bistable) at N = 5e3 and 5e4; 6 / sqrt(N) bounds it.
    for distribution, network in [
        (quadstable_mixture(), quadstable_network(N_SIM, 1)[0]),
        (gaussian_network_distribution("bistable"), gaussian_network_distribution("bistable").sample(N_SIM, 1)),
    ]:
        stable = np.array([p.position for p in find_fixed_points(latent_flow(distribution), BOX) if p.stable])
        end = end_states(network, STARTS)
        assert np.all(nearest_distance(end, stable) < 6 / np.sqrt(N_SIM))
        # Every stable point attracts some of the starts.
        assert np.all(nearest_distance(stable, end) < 6 / np.sqrt(N_SIM))


def test_limit_cycle_network_in_simulation():
    # Same Euler steps (alpha = 0.1) in mean field and simulation: the
    # periods differ by the finite-N fluctuation of the overlaps, sd
    # 9 / sqrt(N) (measured over 12 seeds at N = 2e3 and 8e3); 45 / sqrt(N) is 5 sd.
    distribution = gaussian_network_distribution("limit_cycle")
    theory = detect_limit_cycle(mean_field_trajectory(distribution, [1.0, 0.0], 1500)[0], 0.1)
    simulated = detect_limit_cycle(simulate(distribution.sample(N_SIM, 1), 1500, kappa0=[1.0, 0.0]).kappa[0], 0.1)
    assert simulated is not None
    assert simulated.period == pytest.approx(theory.period, abs=45 / np.sqrt(N_SIM))
    assert simulated.radius == pytest.approx(theory.radius, abs=6 / np.sqrt(N_SIM))
    # Euler at alpha = 0.1 against the continuous-time period 4 pi: O(alpha).
    assert theory.period == pytest.approx(4 * np.pi, rel=0.03)


@pytest.mark.parametrize("n_neurons", [2_000, 32_000])
def test_finite_network_approaches_mean_field_like_one_over_sqrt_n(n_neurons):
    # The same tolerance, C / sqrt(N), holds at two N 16x apart, so the gap
    # shrinks like 1 / sqrt(N). Fixed points of the sampled bistable network's
    # own flow (one root search from each mean-field point): shift rms
    # 3.2 / sqrt(N) at N = 2e3 and 4.8 / sqrt(N) at 3.2e4, max 8.7 / sqrt(N)
    # (6 seeds x 5 points each); same stability class every time.
    # Limit-cycle period: rms 12 / sqrt(N) and 14 / sqrt(N) (8 seeds each).
    bistable = gaussian_network_distribution("bistable")
    theory = find_fixed_points(latent_flow(bistable), BOX)
    flow = latent_flow(bistable.sample(n_neurons, 3))
    for point in theory:
        (x, y) = point.position
        found = find_fixed_points(flow, [[x - 0.3, x + 0.3], [y - 0.3, y + 0.3]], n_starts=1)
        assert len(found) == 1 and found[0].stability == point.stability
        assert np.linalg.norm(found[0].position - point.position) < 15 / np.sqrt(n_neurons)
    cycle = gaussian_network_distribution("limit_cycle")
    period = detect_limit_cycle(mean_field_trajectory(cycle, [1.0, 0.0], 1500)[0], 0.1).period
    simulated = detect_limit_cycle(simulate(cycle.sample(n_neurons, 3), 1500, kappa0=[1.0, 0.0]).kappa[0], 0.1)
    assert simulated.period == pytest.approx(period, abs=45 / np.sqrt(n_neurons))


def test_ring_network_in_simulation():
    # End states sit on the ring (radius within the finite-N ripple,
    # measured 3 / sqrt(N)) but keep their angles: no point attractor.
    network = gaussian_network_distribution("ring").sample(N_SIM, 1)
    end = end_states(network, STARTS)
    radius = ring_radius()
    assert np.all(np.abs(np.linalg.norm(end, axis=1) - radius) < 6 / np.sqrt(N_SIM))
    sectors = np.unique(np.floor((np.arctan2(end[:, 1], end[:, 0]) + np.pi) / (2 * np.pi) * 8))
    assert len(sectors) == 8
    # The finite network's own flow, with a tolerance for its O(1/sqrt(N))
    # near-zero modes, is still recognised as a ring of that radius.
    points = find_fixed_points(latent_flow(network), BOX, n_starts=30, marginal_tol=0.1)
    ring = find_ring(latent_flow(network), points, speed_ratio=0.3)
    assert ring is not None and ring.radius == pytest.approx(radius, abs=6 / np.sqrt(N_SIM))


def test_silencing_one_quadstable_type_leaves_two_attractors():
    # Mean field of the mixture: removing type 0 leaves the two stable
    # points on the other diagonal.
    mixture = quadstable_mixture()
    silenced = [p for p in find_fixed_points(latent_flow(mixture, clamp_components={0: 0.0}), BOX) if p.stable]
    assert len(silenced) == 2
    np.testing.assert_allclose(np.abs([p.position for p in silenced]), 1.01348, atol=1e-5)
    # Simulation with the type-0 units clamped at 0: the starts end at two points.
    network, labels = quadstable_network(N_SIM, 1)
    end = end_states(network, STARTS, clamp={"units": labels == 0, "value": 0.0})
    # The network's n is E[n | m] + noise, so type 0's neurons carry n-means
    # mixed with their neighbours' where the m-clouds overlap, and silencing
    # them shifts the attractors by 0.082 from the mixture's (measured on 1e6
    # neurons). The exact silenced mean field is a sample average over a
    # large network of the same construction: finite-N tolerance as above.
    large, large_labels = quadstable_network(200_000, 2)
    exact_flow = latent_flow(large, labels=large_labels, clamp_components={0: 0.0})
    # One root search from each mixture attractor (the centre of its box).
    exact = np.array([find_fixed_points(exact_flow, [[x - 0.2, x + 0.2], [y - 0.2, y + 0.2]], n_starts=1)[0].position
                      for x, y in (p.position for p in silenced)])
    np.testing.assert_allclose(np.linalg.norm(exact - [p.position for p in silenced], axis=1), 0.082, atol=0.01)
    assert np.all(nearest_distance(end, exact) < 6 / np.sqrt(N_SIM))
    assert np.all(nearest_distance(exact, end) < 6 / np.sqrt(N_SIM))


def test_bad_inputs_say_what_was_expected():
    with pytest.raises(ValueError, match=r"box must have shape \(R, 2\).*Got shape \(3,\)"):
        find_fixed_points(radial, [-1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"low < high"):
        find_fixed_points(radial, [[1.0, -1.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"velocity must map latent points of shape \(\.\.\., R\).*returned shape \(3,\)"):
        find_fixed_points(lambda k: np.zeros(3), BOX)
    with pytest.raises(ValueError, match=r"trajectory must have shape \(n_times, R\)"):
        detect_limit_cycle(np.zeros(10), 0.1)
    with pytest.raises(ValueError, match=r"kappa0 must be one latent point"):
        find_limit_cycle(hopf(), np.zeros((2, 2)))
    assert jacobian(radial, [2.0, 0.0]).shape == (2, 2)
