"""Attractors of finite networks: approximate rings and the full-network Jacobian at a fixed point."""

import math

import numpy as np
import pytest

from connector_sim import (
    ExcitatoryInhibitory,
    LowRankPlusRandomRNN,
    classify_dynamics,
    find_approximate_ring,
    find_fixed_points,
    latent_flow,
    network_jacobian,
)
from connector_sim.fixed_points import finite_size_speed
from connector_sim.sparse_dynamics import simulate_low_rank_plus_random
from connector_sim.synthetic import gaussian_network_distribution, quadstable_network

BOX = [[-3.0, 3.0], [-3.0, 3.0]]
RING = gaussian_network_distribution("ring")
MEAN_FIELD_RADIUS = 0.948134  # 1.6 <phi'>(0, r) = 1 (tests/test_fixed_points.py::ring_radius)


@pytest.mark.parametrize("N, seeds", [(500, (0, 1, 2)), (1000, (0, 1, 2)), (2000, (0, 1)), (5000, (0, 1))])
def test_sampled_rings_are_approximate_rings(N, seeds):
    for seed in seeds:
        dynamics = classify_dynamics(latent_flow(RING.sample(N, seed)), BOX)
        assert dynamics.kind == "approximate ring"
        ring = dynamics.ring
        assert not ring.exact
        # Radius of the slow curve: finite-N shift measured <= 3 / sqrt(N) (seeds 0-2, N = 500-5000).
        assert ring.radius == pytest.approx(MEAN_FIELD_RADIUS, abs=6 / math.sqrt(N))
        assert ring.radius_spread < 6 / math.sqrt(N)
        # The flow on the curve is finite-N noise; off it, the O(1) relaxation.
        assert ring.speed_rms <= 1.25 * ring.finite_size_speed
        assert ring.speed_off > 0.2
        # Slow points: nodes and saddles alternate along the curve, or none and a slow rotation.
        kinds = [p.stability for p in ring.fixed_points]
        assert ring.n_slow_points % 2 == 0 and len(kinds) == ring.n_slow_points
        assert kinds.count("stable node") == kinds.count("saddle") == ring.n_slow_points // 2
        if ring.n_slow_points == 0:
            # One turn of the curve at the on-ring speed takes far longer than the off-ring relaxation (~tau).
            assert ring.period > 2 * math.pi * ring.radius / ring.speed_on
            assert ring.period > 50


def test_mean_field_ring_stays_exact():
    dynamics = classify_dynamics(latent_flow(RING), BOX)
    assert dynamics.kind == "ring" and dynamics.ring.exact
    assert dynamics.ring.radius == pytest.approx(MEAN_FIELD_RADIUS, abs=1e-6)


def test_few_fixed_point_networks_are_not_rings():
    # The quadstable network's slow curve carries a mean-field flow of 0.2 (four nodes, four saddles):
    # speed_rms / sigma_F measured >= 1.83 at N = 1000 (10 seeds), above the 1.25 threshold, and it
    # grows like sqrt(N). The bistable network has no closed curve at all (rays along its stable axis
    # find no outward flow).
    for N in (1000, 2000):
        for seed in (0, 1, 2):
            for network in (quadstable_network(N, seed)[0], gaussian_network_distribution("bistable").sample(N, seed)):
                assert find_approximate_ring(latent_flow(network), [0.0, 0.0], box=BOX) is None
    quadstable = classify_dynamics(latent_flow(quadstable_network(1000, 0)[0]), BOX, n_trajectories=1)
    assert quadstable.kind == "fixed points" and sum(p.stable for p in quadstable.fixed_points) == 4


def test_finite_size_speed_is_the_spread_of_the_flow_over_samples():
    # F_N(kappa) - F_mean_field(kappa) over 40 independent networks of N = 400: its rms norm equals
    # sqrt(E sigma_F^2) up to the sampling error of 40 x 2 squares (sd ~ 8 %); 25 % bounds it.
    kappa = np.array([0.8, -0.3])
    exact = latent_flow(RING)(kappa)
    deviations, sigmas = [], []
    for seed in range(40):
        network = RING.sample(400, seed)
        deviations.append(latent_flow(network)(kappa) - exact)
        sigmas.append(finite_size_speed(network, kappa))
    measured = math.sqrt(np.mean(np.sum(np.square(deviations), axis=1)))
    assert measured == pytest.approx(math.sqrt(np.mean(np.square(sigmas))), rel=0.25)
    # The flow of a network carries it; a mean-field flow does not.
    assert latent_flow(RING.sample(400, 0)).finite_size_speed(kappa) == finite_size_speed(RING.sample(400, 0), kappa)
    assert not hasattr(latent_flow(RING), "finite_size_speed")


def test_approximate_ring_needs_a_closed_slow_curve():
    # A plain sink: no outward flow anywhere, no curve.
    assert find_approximate_ring(lambda k: -k, [0.0, 0.0], r_max=2.0) is None
    # The unit-circle ring with a small rotation: slow against the relaxation, so a ring for any flow.
    def rotating(k):
        r2 = np.sum(k**2, axis=-1, keepdims=True)
        return k * (1 - r2) + 0.01 * np.stack([-k[..., 1], k[..., 0]], axis=-1)

    ring = find_approximate_ring(rotating, [0.0, 0.0], box=BOX)
    assert ring.radius == pytest.approx(1.0, abs=1e-9) and ring.n_slow_points == 0
    assert ring.period == pytest.approx(2 * math.pi / 0.01, rel=1e-3)
    # A faster rotation (a limit cycle) is not a ring.
    assert find_approximate_ring(lambda k: rotating(k) * [1, 1] + 0.5 * np.stack([-k[..., 1], k[..., 0]], -1),
                                 [0.0, 0.0], box=BOX) is None
    with pytest.raises(ValueError, match="rank-two"):
        find_approximate_ring(rotating, [0.0, 0.0, 0.0], r_max=1.0)
    with pytest.raises(ValueError, match="box or r_max"):
        find_approximate_ring(rotating, [0.0, 0.0])


def dense_jacobian(network, x):
    matrix = network.connectivity() * (1 - np.tanh(x) ** 2)[None, :]
    return matrix - np.eye(len(x))


def test_jacobian_outliers_equal_the_dense_eigenvalues():
    N = 300
    for name, seed in (("bistable", 0), ("ring", 1), ("limit_cycle", 2)):
        network = gaussian_network_distribution(name).sample(N, seed)
        for point in find_fixed_points(latent_flow(network), BOX, n_starts=30):
            jac = network_jacobian(network, point.position)
            values = np.linalg.eigvals(dense_jacobian(network, network.m @ point.position))
            structured = values[np.abs(values + 1) > 1e-8]
            # Exactly R eigenvalues leave -1, and they are the reduced matrix's (float64 rounding of N x N).
            assert len(structured) == 2 and jac.bulk_radius == 0.0 and jac.bulk_multiplicity == N - 2
            np.testing.assert_allclose(np.sort_complex(structured), np.sort_complex(jac.outliers), atol=1e-9)
            np.testing.assert_allclose(np.abs(values[np.abs(values + 1) <= 1e-8] + 1), 0, atol=1e-8)
            # ... and the latent Jacobian's eigenvalues: the fixed point's stability is the network's.
            np.testing.assert_allclose(np.sort_complex(jac.outliers), np.sort_complex(point.eigenvalues), atol=1e-6)
            assert jac.stable == (values.real.max() < 0) == point.stable
            assert jac.residual < 1e-9


def test_jacobian_with_a_random_part():
    N = 300
    for g, random in ((0.5, "gaussian"), (0.5, ExcitatoryInhibitory(0.8, mean_e=0.25, mean_i=-1.0, variance_i=2.0))):
        network = LowRankPlusRandomRNN(gaussian_network_distribution("bistable").sample(N, 1), g, seed=2,
                                       random=random)
        x = simulate_low_rank_plus_random(network, n_steps=3000, kappa0=[1.0, 0.5]).final_state[0]
        jac = network_jacobian(network, x=x, dense=True)
        assert jac.residual < 1e-6  # the run has settled on a fixed point
        np.testing.assert_allclose(jac.eigenvalues, np.linalg.eigvals(dense_jacobian(network, x))[
            np.argsort(-np.linalg.eigvals(dense_jacobian(network, x)).real, kind="stable")], atol=1e-9)
        # The bulk: the 99 % quantile of |lambda + 1| (outliers removed) within the finite-N edge
        # (measured 4 % at N = 300) of g sqrt(mean sigma_c^2 phi'^2).
        bulk = np.abs(jac.eigenvalues[2:] + 1)
        assert np.quantile(bulk, 0.99) == pytest.approx(jac.bulk_radius, rel=4 / math.sqrt(N))
        assert jac.stable and jac.leading == pytest.approx(jac.eigenvalues[0].real)
        # Without dense=True, the reduced estimate: the same verdict for this stable state.
        assert network_jacobian(network, x=x).stable


def test_jacobian_refuses_bad_input():
    network = RING.sample(50, 0)
    with pytest.raises(ValueError, match="exactly one of kappa"):
        network_jacobian(network)
    with pytest.raises(ValueError, match="give its full state"):
        network_jacobian(LowRankPlusRandomRNN(network, 0.5, seed=0), [0.0, 0.0])
    with pytest.raises(TypeError, match="LowRankRNN or a LowRankPlusRandomRNN"):
        network_jacobian("network", [0.0, 0.0])
