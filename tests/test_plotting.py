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


# --------------------------------------------------------------------------- PSTHs and loadings


def bootstrap_by_hand(rates, valid, n_boot, seed):
    """Resample trial indices explicitly (np.repeat of the multinomial counts) and average the valid bins."""
    K = len(rates)
    counts = np.random.default_rng(seed).multinomial(K, np.full(K, 1.0 / K), size=n_boot)
    means = []
    for c in counts:
        drawn = np.repeat(np.arange(K), c)
        r, v = rates[drawn], valid[drawn]
        with np.errstate(invalid="ignore"):
            means.append(np.where(v[..., None], r, 0).sum(axis=0) / v.sum(axis=0)[:, None])
    return np.array(means)


def test_psth_mean_and_bootstrap_interval_against_numpy(tmp_path):
    from connector_sim import plot_psth, psth

    rng = np.random.default_rng(0)
    rates = rng.normal(size=(40, 25, 3)) + np.sin(np.linspace(0, 3, 25))[None, :, None]
    lengths = rng.integers(15, 26, 40)
    valid = np.arange(25)[None] < lengths[:, None]
    result = psth(rates, lengths=lengths, n_boot=300, confidence=0.9, random_state=5)
    masked = np.where(valid[..., None], rates, np.nan)
    np.testing.assert_allclose(result.mean, np.nanmean(masked, axis=0), rtol=0, atol=1e-13)
    assert np.array_equal(result.n_trials, valid.sum(axis=0))
    means = bootstrap_by_hand(rates, valid, 300, 5)
    np.testing.assert_allclose(result.low, np.nanpercentile(means, 5, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.high, np.nanpercentile(means, 95, axis=0), rtol=0, atol=1e-12)
    # Theory: the bootstrap sd of a mean of k trials is sd / sqrt(k); the 90% interval spans
    # 2 x 1.645 of it, up to the bootstrap's own error (~ 1 / sqrt(2 n_boot) = 4%) and that of
    # the sample sd (~ 1 / sqrt(2 k) <= 18% at k = 15): 35% covers both.
    expected = 2 * 1.645 * np.nanstd(masked, axis=0, ddof=1) / np.sqrt(result.n_trials)[:, None]
    np.testing.assert_allclose(result.high - result.low, expected, rtol=0.35)
    ax = plot_psth(rates, units=[0, 2], lengths=lengths, n_boot=300, confidence=0.9, random_state=5)
    line = next(line for line in ax.get_lines() if line.get_gid() == "psth:2")
    np.testing.assert_allclose(line.get_ydata(), result.mean[:, 2], rtol=0, atol=1e-13)
    assert any(c.get_gid() == "psth_ci:0" for c in ax.collections)
    np.testing.assert_allclose(ax.psth.low[:, 1], result.low[:, 2], rtol=0, atol=1e-12)
    ax.figure.savefig(tmp_path / "psth.png")
    assert (tmp_path / "psth.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="'confidence' parameter of psth must be in"):
        psth(rates, confidence=95)
    with pytest.raises(ValueError, match="units must be indices"):
        plot_psth(rates, units=[3])


def test_loading_scatter_matrix_by_cell_type(tmp_path):
    from connector_sim import LowRankRNN, plot_loadings

    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 150)
    m = np.where(labels[:, None] == 0, -1.0, 1.0) + 0.3 * rng.standard_normal((300, 1))
    network = LowRankRNN(m, 2 * m + 0.3 * rng.standard_normal((300, 1)))
    fig = plot_loadings(network, labels)
    assert len(fig.axes) == 4  # 2 columns (m, n): 2 x 2 panels
    panel = fig.axes[1]  # row m, column n: x = n, y = m
    for t in (0, 1):
        scatter = next(c for c in panel.collections if c.get_gid() == f"loadings:{t}")
        np.testing.assert_allclose(scatter.get_offsets(), np.column_stack([network.n, network.m])[labels == t])
        assert any(c.get_gid() == f"kde:{t}" for c in panel.collections)
    # Diagonal: each type's KDE integrates to ~1 over the plotted range (which covers
    # the data plus 5%; the Gaussian kernels' tails leave < 3% outside).
    density = next(line for line in fig.axes[0].get_lines() if line.get_gid() == "density:1")
    x, y = density.get_xdata(), density.get_ydata()
    assert 0.97 < np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) <= 1.0
    assert fig.axes[2].get_xlabel() == "$m_1$" and fig.axes[2].get_ylabel() == "$n_1$"
    fig.savefig(tmp_path / "loadings.png")
    assert (tmp_path / "loadings.png").stat().st_size > 1000
    # Subsampled scatter, arrays with names.
    fig = plot_loadings(np.column_stack([network.m, network.n]), labels, names=["a", "b"], max_points=50, kde=False)
    assert sum(len(c.get_offsets()) for c in fig.axes[1].collections) == 50
    with pytest.raises(ValueError, match="names must give one name per loading column"):
        plot_loadings(network, labels, names=["x"])
