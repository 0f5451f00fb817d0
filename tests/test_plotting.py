"""The flow-field figure helper: draws without error, marks fixed points by stability."""

import numpy as np
import pytest

from connector_sim import find_fixed_points, latent_flow, plot_flow_field
from connector_sim.plotting import fixed_point_markers
from connector_sim.synthetic import gaussian_network_distribution, quadstable_mixture

BOX = [[-3.0, 3.0], [-3.0, 3.0]]


def test_quadstable_flow_field_marks_each_fixed_point_by_stability(tmp_path):
    flow = latent_flow(quadstable_mixture())
    points = find_fixed_points(flow, BOX, n_starts=30)
    trajectories = np.cumsum(np.full((3, 10, 2), 0.1), axis=1)
    ax = plot_flow_field(flow, BOX, resolution=20, fixed_points=points, trajectories=trajectories, title="quadstable")
    markers = fixed_point_markers(ax)
    # Four stable nodes, four saddles and the unstable origin (test_fixed_points).
    assert {group: len(xy) for group, xy in markers.items()} == {"stable": 4, "saddle": 4, "unstable": 1}
    stable = np.array([p.position for p in points if p.stable])
    np.testing.assert_array_equal(markers["stable"], stable)
    line = next(line for line in ax.get_lines() if line.get_gid() == "fixed_points:stable")
    assert line.get_markerfacecolor() == "black" and line.get_marker() == "o"
    assert next(line for line in ax.get_lines() if line.get_gid() == "fixed_points:saddle").get_marker() == "x"
    assert sum(line.get_gid() == "trajectories" for line in ax.get_lines()) == 3
    assert len(ax.collections) >= 1  # the streamlines
    path = tmp_path / "flow.png"
    ax.figure.savefig(path)
    assert path.stat().st_size > 1000


def test_velocities_on_a_grid_and_found_fixed_points():
    # A limit-cycle network: one unstable focus, drawn open.
    flow = latent_flow(gaussian_network_distribution("limit_cycle"))
    ax = plot_flow_field(flow, BOX, resolution=15, fixed_points="find", fixed_point_options=dict(n_starts=10),
                         colorbar=False)
    assert {group: len(xy) for group, xy in fixed_point_markers(ax).items()} == {"unstable": 1}
    x, y = np.linspace(-2, 2, 11), np.linspace(-1, 1, 7)
    grid = np.stack(np.meshgrid(x, y, indexing="ij"), axis=-1)
    ax = plot_flow_field(flow(grid), grid=(x, y))
    assert ax.get_xlim() == (-2.0, 2.0) and fixed_point_markers(ax) == {}


def test_bad_figure_inputs_say_what_was_expected():
    flow = latent_flow(quadstable_mixture())
    with pytest.raises(ValueError, match=r"Give box=\[\[low, high\], \[low, high\]\]"):
        plot_flow_field(flow)
    with pytest.raises(ValueError, match=r"box must have shape \(2, 2\). Got shape \(3, 2\)"):
        plot_flow_field(lambda k: k, [[-1, 1]] * 3)
    with pytest.raises(ValueError, match="need grid=\\(x, y\\)"):
        plot_flow_field(np.zeros((3, 3, 2)), BOX)
    with pytest.raises(ValueError, match="fixed_points must be None, 'find'"):
        plot_flow_field(flow, BOX, fixed_points="all")


def test_demo_writes_the_flow_field_figure(tmp_path):
    from connector_sim.demo import run_demo

    report = run_demo(str(tmp_path), large_n=2_000, n_steps=30, log=lambda message: None)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["flow_field.png", "report.json", "trajectories.png"]
    kinds = [point["stability"] for point in report["mean_field_fixed_points"]]
    assert kinds.count("stable node") == 4 and kinds.count("saddle") == 4 and len(kinds) == 9
