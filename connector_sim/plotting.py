"""Figures of latent dynamics: flow fields with fixed points and trajectories.

matplotlib is imported inside the functions, and figures are made without
pyplot (``matplotlib.figure.Figure``), so they work on headless machines and
in threads, with any (or no) interactive backend selected.
"""

import numpy as np

from ._memory import check_allocation
from ._validation import check_array, check_int

#: Marker of each stability class: filled = stable, open = unstable, x = saddle.
FIXED_POINT_MARKERS = {
    "stable": dict(marker="o", markerfacecolor="black", markeredgecolor="black"),
    "unstable": dict(marker="o", markerfacecolor="white", markeredgecolor="black"),
    "saddle": dict(marker="x", markerfacecolor="none", markeredgecolor="black", markeredgewidth=2.0),
    "marginal": dict(marker="s", markerfacecolor="white", markeredgecolor="black"),
}


def _marker_group(stability):
    if stability.startswith("stable"):
        return "stable"
    if stability == "saddle":
        return "saddle"
    if stability.startswith("unstable"):
        return "unstable"
    return "marginal"


def _grid_axes(box, resolution):
    from .fixed_points import _check_box

    box = _check_box(box)
    if box.shape[0] != 2:
        raise ValueError(f"plot_flow_field draws rank-2 latents: box must have shape (2, 2). Got shape {box.shape}.")
    resolution = check_int(resolution, "resolution", minimum=2, owner="plot_flow_field")
    check_allocation(8 * 2 * 4 * resolution**2, f"plot_flow_field with resolution {resolution} ({resolution}^2 points)",
                     "Use a lower resolution.")
    return box, [np.linspace(low, high, resolution) for low, high in box]


def plot_flow_field(velocity, box=None, *, grid=None, resolution=40, ax=None, fixed_points=None,
                    trajectories=None, density=1.2, cmap="viridis", colorbar=True, fixed_point_options=None,
                    title=None):
    """Streamlines of a 2-D latent flow, coloured by speed, with fixed points marked by stability.

    The speed is |F(kappa)| with F(kappa) = dkappa/dt (for instance
    F(kappa) = -kappa + E_p[n phi(m^T kappa + b)], SPEC eq. 4). Fixed points
    are drawn filled when stable, open when unstable (node or focus), as x
    when saddles and as open squares when marginal.

    Parameters
    ----------
    velocity : callable, distribution, network, or ndarray of shape (n_x, n_y, 2)
        A flow ``kappa (..., 2) -> dkappa/dt`` (e.g. :func:`connector_sim.latent_flow`
        or :func:`connector_sim.perturbed_flow`); a Gaussian, GaussianMixture,
        Empirical or LowRankRNN (its :func:`~connector_sim.latent_flow`); or
        velocities already evaluated on ``grid``.
    box : array-like of shape (2, 2), optional
        [[low, high], [low, high]] of kappa_1 and kappa_2. Needed unless
        ``grid`` is given.
    grid : tuple (x, y) of 1-D arrays, optional
        The grid axes (increasing, evenly spaced); velocities of an ndarray
        ``velocity`` are at ``(x[i], y[j])``, index [i, j].
    resolution : int, default=40
        Grid points per axis when the grid is built from ``box``.
    ax : matplotlib Axes, optional
        Drawn into; a new figure (without pyplot) otherwise.
    fixed_points : None, "find" or list of FixedPoint, default=None
        "find" runs :func:`connector_sim.find_fixed_points` in the box (a
        flow is needed, not an array).
    trajectories : array-like of shape (n_trials, n_times, 2) or (n_times, 2), optional
        Latent trajectories drawn on top, with their end points.
    density : float, default=1.2
        Streamline density (matplotlib ``streamplot``).
    cmap : str, default="viridis"
    colorbar : bool, default=True
    fixed_point_options : dict, optional
        Passed to :func:`connector_sim.find_fixed_points` with "find".
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes
        Fixed points are Line2D artists with gid "fixed_points:<group>"
        (group: stable, unstable, saddle, marginal), one marker per point;
        trajectories have gid "trajectories".
    """
    from .fixed_points import find_fixed_points
    from .mean_field import latent_flow

    if not callable(velocity) and not isinstance(velocity, np.ndarray):
        velocity = latent_flow(velocity)
    if grid is not None:
        if len(grid) != 2:
            raise ValueError(f"grid must be a pair (x, y) of 1-D axes. Got {len(grid)} entries.")
        axes = [check_array(axis, name, ndim=1, dtype=np.float64) for axis, name in zip(grid, ("grid[0]", "grid[1]"))]
        if box is None:
            box = [[axes[0][0], axes[0][-1]], [axes[1][0], axes[1][-1]]]
        box, _ = _grid_axes(box, 2)
    elif box is not None:
        box, axes = _grid_axes(box, resolution)
    else:
        raise ValueError("Give box=[[low, high], [low, high]] (or grid=(x, y)) for the region to draw.")
    check_allocation(8 * 2 * 4 * len(axes[0]) * len(axes[1]), f"plot_flow_field on a {len(axes[0])} x {len(axes[1])} grid",
                     "Use shorter grid axes.")
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    if callable(velocity):
        field = np.asarray(velocity(points), dtype=np.float64)
        if field.shape != points.shape:
            raise ValueError(
                "plot_flow_field draws rank-2 flows: velocity must map points of shape (..., 2) to the same shape. "
                f"Given {points.shape} it returned {field.shape}."
            )
    else:
        if grid is None:
            raise ValueError("Velocities given as an array need grid=(x, y), the axes they were evaluated on.")
        field = check_array(velocity, "velocity", ndim=3, dtype=np.float64, shape=points.shape)
    if isinstance(fixed_points, str):
        if fixed_points != "find":
            raise ValueError(f"fixed_points must be None, 'find' or a list of FixedPoint. Got {fixed_points!r}.")
        if not callable(velocity):
            raise ValueError("fixed_points='find' needs a flow (callable or source), not velocities on a grid.")
        fixed_points = find_fixed_points(velocity, box, **(fixed_point_options or {}))

    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(5.0, 4.4)).subplots()
    speed = np.linalg.norm(field, axis=-1)
    # streamplot wants arrays indexed [y, x].
    stream = ax.streamplot(axes[0], axes[1], field[..., 0].T, field[..., 1].T, color=speed.T, cmap=cmap,
                           density=density, linewidth=1.0, arrowsize=0.8)
    if colorbar:
        ax.figure.colorbar(stream.lines, ax=ax, label=r"speed $|d\kappa/dt|$")
    if trajectories is not None:
        trajectories = np.asarray(trajectories, dtype=np.float64)
        if trajectories.ndim == 2:
            trajectories = trajectories[None]
        trajectories = check_array(trajectories, "trajectories", ndim=3, shape=(None, None, 2))
        for trajectory in trajectories:
            ax.plot(trajectory[:, 0], trajectory[:, 1], color="tab:red", lw=0.8, alpha=0.7, gid="trajectories")
        ax.plot(trajectories[:, -1, 0], trajectories[:, -1, 1], ".", color="tab:red", ms=4, gid="trajectory_ends")
    for group in FIXED_POINT_MARKERS:
        chosen = [point.position for point in fixed_points or () if _marker_group(point.stability) == group]
        if chosen:
            chosen = np.array(chosen)
            ax.plot(chosen[:, 0], chosen[:, 1], linestyle="none", markersize=8, zorder=5,
                    label=f"{group} ({len(chosen)})", gid=f"fixed_points:{group}", **FIXED_POINT_MARKERS[group])
    if fixed_points:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    ax.set(xlim=box[0], ylim=box[1], xlabel=r"$\kappa_1$", ylabel=r"$\kappa_2$", aspect="equal")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def fixed_point_markers(ax):
    """{group: (n_points, 2) positions} of the fixed points :func:`plot_flow_field` drew on ``ax``."""
    found = {}
    for line in ax.get_lines():
        gid = line.get_gid() or ""
        if gid.startswith("fixed_points:"):
            found[gid.split(":", 1)[1]] = np.column_stack([line.get_xdata(), line.get_ydata()])
    return found
