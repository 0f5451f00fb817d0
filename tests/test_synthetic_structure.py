"""Each synthetic network has the latent dynamics its docstring states (connector_sim/synthetic.py).

Every number asserted here is also looked up in the module docstring, so the text and the
computation cannot drift apart.
"""

import math

import numpy as np
import pytest

from connector_sim import classify_dynamics, find_fixed_points, find_limit_cycle, find_ring, latent_flow
from connector_sim import synthetic

BOX = [[-3.0, 3.0], [-3.0, 3.0]]
DOC = " ".join(synthetic.__doc__.split())
N = 1000  # synthetic_network's default; sampled fixed points move by O(1 / sqrt(N)):
SHIFT = 6 / math.sqrt(N)  # measured <= 3.6 / sqrt(N) for the default network (random_state=0)


def documented(*numbers):
    for number in numbers:
        assert number in DOC, f"{number!r} is not in the synthetic module docstring"


def by_kind(points):
    kinds = {}
    for point in points:
        kinds.setdefault(point.stability, []).append(point.position)
    return {kind: np.array(positions) for kind, positions in kinds.items()}


def assert_same_points(found, expected, atol):
    found, expected = np.asarray(found), np.asarray(expected, dtype=float)
    assert found.shape == expected.shape
    distance = np.linalg.norm(found[:, None] - expected[None], axis=-1)
    assert np.all(distance.min(axis=1) < atol) and np.all(distance.min(axis=0) < atol)


def check_points(name, expected):
    network = synthetic.synthetic_network(name, n_neurons=N)
    for flow, atol in ((latent_flow(network.distribution), 1e-3), (latent_flow(network.network), SHIFT)):
        kinds = by_kind(find_fixed_points(flow, BOX, n_starts=40))
        assert sorted(kinds) == sorted(expected)
        for kind, positions in expected.items():
            assert_same_points(kinds[kind], positions, atol)


def test_quadstable_has_four_stable_nodes_on_the_axes():
    a, d = 1.825, 1.013
    documented("(+-1.825, 0)", "(0, +-1.825)", "(+-1.013, +-1.013)", "four stable nodes on the axes")
    check_points("quadstable", {
        "stable node": [[a, 0], [-a, 0], [0, a], [0, -a]],
        "saddle": [[d, d], [d, -d], [-d, d], [-d, -d]],
        "unstable node": [[0, 0]],
    })


def test_bistable_has_two_stable_nodes_along_the_top_eigenvector():
    documented("+-(0.848, 0.424)", "+-(0.486, 0)", "(2, 1)")
    check_points("bistable", {
        "stable node": [[0.848, 0.424], [-0.848, -0.424]],
        "saddle": [[0.486, 0.0], [-0.486, 0.0]],
        "unstable node": [[0, 0]],
    })


def test_limit_cycle_has_the_documented_radius_and_period():
    documented("radius 0.948 and period 4 pi", "(12.566)", "unstable focus at 0")
    network = synthetic.synthetic_network("limit_cycle", n_neurons=N)
    mean_field = find_limit_cycle(latent_flow(network.distribution), [1.0, 0.0], dt=0.2, n_steps=600)
    assert mean_field.period == pytest.approx(4 * math.pi, rel=1e-3)
    assert round(mean_field.radius, 3) == 0.948
    # Sampled: period within 45 / sqrt(N) and radius within 6 / sqrt(N) (tests/test_fixed_points.py).
    sampled = find_limit_cycle(latent_flow(network.network), [1.0, 0.0], dt=0.2, n_steps=600)
    assert sampled.period == pytest.approx(4 * math.pi, abs=45 / math.sqrt(N))
    assert sampled.radius == pytest.approx(0.948, abs=SHIFT)
    for flow in (latent_flow(network.distribution), latent_flow(network.network)):
        assert [p.stability for p in find_fixed_points(flow, BOX, n_starts=20)] == ["unstable focus"]


def test_ring_has_the_documented_radius_exact_in_mean_field_approximate_when_sampled():
    documented("radius 0.948", "unstable node at 0", '"approximate ring"')
    network = synthetic.synthetic_network("ring", n_neurons=N)
    flow = latent_flow(network.distribution)
    points = find_fixed_points(flow, BOX, n_starts=40)
    ring = find_ring(flow, points)
    assert ring is not None and round(ring.radius, 3) == 0.948
    assert [p.stability for p in points if np.linalg.norm(p.position) < 1e-6] == ["unstable node"]
    sampled = classify_dynamics(latent_flow(network.network), BOX)
    assert sampled.kind == "approximate ring" and sampled.ring.radius == pytest.approx(0.948, abs=SHIFT)
