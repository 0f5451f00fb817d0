"""Figures: flow fields with fixed points and trajectories, trial-averaged PSTHs with
bootstrap confidence intervals, and scatter matrices of loadings by cell type.

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

    The speed is ``|F(kappa)|`` with F(kappa) = dkappa/dt (for instance
    F(kappa) = -kappa + E_p[n phi(m^T kappa + b)], theory eq. 4). Fixed points
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

    Raises
    ------
    ValueError
        If neither ``box`` nor ``grid`` is given, the box is not (2, 2), the
        grid axes are not 1-D, velocities given as an array do not match the
        grid, or ``fixed_points`` is not None, "find" or a list of FixedPoint
        ("find" needs a flow, not an array).
    TypeError
        If ``resolution`` is not an int.
    TooLargeError
        If the grid would not fit in memory.

    Examples
    --------
    >>> import numpy as np
    >>> def spiral(k):
    ...     return np.stack([k[..., 1], -k[..., 0] - k[..., 1]], axis=-1)
    >>> ax = plot_flow_field(spiral, [[-1, 1], [-1, 1]], resolution=10, fixed_points="find",
    ...                      fixed_point_options={"n_starts": 5})
    >>> {group: points.round(6) + 0.0 for group, points in fixed_point_markers(ax).items()}
    {'stable': array([[0., 0.]])}
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
    """{group: (n_points, 2) positions} of the fixed points :func:`plot_flow_field` drew on ``ax``.

    Examples
    --------
    >>> import numpy as np
    >>> ax = plot_flow_field(lambda k: -k, [[-1, 1], [-1, 1]], resolution=10, fixed_points="find",
    ...                      fixed_point_options={"n_starts": 5})
    >>> sorted(fixed_point_markers(ax))
    ['stable']
    """
    found = {}
    for line in ax.get_lines():
        gid = line.get_gid() or ""
        if gid.startswith("fixed_points:"):
            found[gid.split(":", 1)[1]] = np.column_stack([line.get_xdata(), line.get_ydata()])
    return found


# --------------------------------------------------------------------------- PSTHs


class PSTH:
    """Trial-averaged rates with bootstrap confidence intervals (the data of :func:`plot_psth`).

    Attributes
    ----------
    times : ndarray of shape (n_times,)
    mean : ndarray of shape (n_times, n_units)
        Mean over the trials valid at each bin.
    low, high : ndarray of shape (n_times, n_units)
        The (1 - confidence) / 2 and (1 + confidence) / 2 percentiles of the
        bootstrap means.
    n_trials : ndarray of shape (n_times,)
        Trials valid at each bin.
    """

    def __init__(self, times, mean, low, high, n_trials):
        self.times, self.mean, self.low, self.high, self.n_trials = times, mean, low, high, n_trials


def psth(rates, *, times=None, lengths=None, n_boot=1000, confidence=0.95, random_state=None):
    """Trial-averaged rates and percentile-bootstrap confidence intervals over trials.

    Each bootstrap replicate draws ``n_trials`` trials with replacement, as
    counts ``c ~ Multinomial(n_trials, uniform)`` (``rng.multinomial``), and
    takes the mean over the drawn trials valid at each bin::

        mean_b(t, i) = sum_k c_bk valid_k(t) r_k(t, i) / sum_k c_bk valid_k(t)

    The interval is the percentiles of ``mean_b`` over replicates (NaN where
    a replicate drew no valid trial at a bin).

    Parameters
    ----------
    rates : array-like of shape (n_trials, n_times, n_units)
    times : array-like of shape (n_times,), optional
        Bin times; default 0, 1, 2, ...
    lengths : array-like of int of shape (n_trials,), optional
        Valid bins per trial (later bins are ignored).
    n_boot : int, default=1000
    confidence : float in (0, 1), default=0.95
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    PSTH

    Raises
    ------
    ValueError
        For rates not of shape (n_trials, n_times, n_units), bad lengths, or a
        confidence outside (0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> rates = np.random.default_rng(0).normal(1.0, 0.1, size=(20, 5, 3))  # trials, bins, units
    >>> result = psth(rates, n_boot=200, random_state=0)
    >>> result.mean.shape, bool(np.all((result.low < result.mean) & (result.mean < result.high)))
    ((5, 3), True)
    """
    from ._validation import check_random_state

    rates = check_array(rates, "rates", ndim=3, dtype=np.float64)
    K, T, U = rates.shape
    n_boot = check_int(n_boot, "n_boot", minimum=1, owner="psth")
    if not 0 < confidence < 1:
        raise ValueError(f"The 'confidence' parameter of psth must be in (0, 1). Got {confidence!r} instead.")
    times = np.arange(T, dtype=np.float64) if times is None else check_array(times, "times", ndim=1,
                                                                             dtype=np.float64, shape=(T,))
    if lengths is None:
        valid = np.ones((K, T), bool)
    else:
        lengths = check_array(lengths, "lengths", ndim=1, shape=(K,))
        if np.any(lengths < 1) or np.any(lengths > T) or np.any(lengths != np.round(lengths)):
            raise ValueError(f"lengths must be integers in [1, n_times = {T}]. Got {lengths}.")
        valid = np.arange(T)[None, :] < lengths[:, None]
    check_allocation(8 * 3 * n_boot * T * U + 8 * n_boot * K, f"psth with {n_boot} bootstrap replicates of "
                     f"{T} x {U} means", "Use fewer bootstrap replicates (n_boot) or fewer units.")
    flat = np.where(valid[..., None], rates, 0.0).reshape(K, T * U)
    counts = check_random_state(random_state).multinomial(K, np.full(K, 1.0 / K), size=n_boot).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = flat.sum(axis=0).reshape(T, U) / valid.sum(axis=0)[:, None]
        boot = (counts @ flat).reshape(n_boot, T, U) / (counts @ valid)[:, :, None]
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(boot, [tail, 100 - tail], axis=0) if np.isnan(boot).any() else \
        np.percentile(boot, [tail, 100 - tail], axis=0)
    return PSTH(times, mean, low, high, valid.sum(axis=0))


def plot_psth(rates, *, units=None, times=None, lengths=None, n_boot=1000, confidence=0.95, random_state=None,
              ax=None, labels=None, colors=None, title=None):
    """Trial-averaged rates of some units, each with its bootstrap confidence band (see :func:`psth`).

    Parameters
    ----------
    rates : array-like of shape (n_trials, n_times, n_units)
    units : sequence of int, optional
        Units to draw (default: all, at most 10 of them: the first 10).
    times, lengths, n_boot, confidence, random_state
        As in :func:`psth`.
    ax : matplotlib Axes, optional
    labels : sequence of str, optional
        One legend label per drawn unit (default "unit i").
    colors : sequence of colours, optional
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes
        The mean of unit i is the line with gid ``"psth:i"``, its band the
        collection with gid ``"psth_ci:i"``; ``ax.psth`` holds the :class:`PSTH`.

    Raises
    ------
    ValueError
        As :func:`psth`; also if ``units`` are out of range or ``labels`` do not
        give one label per drawn unit.

    Examples
    --------
    >>> import numpy as np
    >>> rates = np.random.default_rng(0).normal(1.0, 0.1, size=(20, 5, 3))  # trials, bins, units
    >>> ax = plot_psth(rates, units=[0, 2], n_boot=100, random_state=0)
    >>> [line.get_gid() for line in ax.lines]
    ['psth:0', 'psth:2']
    """
    rates = check_array(rates, "rates", ndim=3, dtype=np.float64)
    if units is None:
        units = list(range(min(10, rates.shape[2])))
    units = [int(u) for u in np.atleast_1d(units)]
    if any(u < 0 or u >= rates.shape[2] for u in units):
        raise ValueError(f"units must be indices in [0, {rates.shape[2]}). Got {units}.")
    if labels is not None and len(labels) != len(units):
        raise ValueError(f"labels must give one label per unit drawn ({len(units)}). Got {len(labels)}.")
    result = psth(rates[:, :, units], times=times, lengths=lengths, n_boot=n_boot, confidence=confidence,
                  random_state=random_state)
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(5.0, 3.5)).subplots()
    for j, unit in enumerate(units):
        color = None if colors is None else colors[j % len(colors)]
        label = f"unit {unit}" if labels is None else labels[j]
        (line,) = ax.plot(result.times, result.mean[:, j], color=color, lw=1.5, label=label, gid=f"psth:{unit}")
        band = ax.fill_between(result.times, result.low[:, j], result.high[:, j], color=line.get_color(),
                               alpha=0.25, linewidth=0)
        band.set_gid(f"psth_ci:{unit}")
    ax.set(xlabel="time", ylabel=f"rate (mean, {100 * confidence:.0f}% CI)")
    if len(units) > 1 or labels is not None:
        ax.legend(fontsize=7, framealpha=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    ax.psth = result
    return ax


# --------------------------------------------------------------------------- loadings


def _loading_table(loadings, names):
    from .network import LowRankRNN

    if isinstance(loadings, LowRankRNN):
        R, D = loadings.rank, loadings.n_inputs
        table = np.hstack([loadings.m, loadings.n, loadings.I]).astype(np.float64)
        default = ([f"$m_{k + 1}$" for k in range(R)] + [f"$n_{k + 1}$" for k in range(R)]
                   + [f"$I_{k + 1}$" for k in range(D)])
        if np.any(loadings.b != 0):
            table = np.hstack([table, loadings.b[:, None].astype(np.float64)])
            default.append("$b$")
    else:
        table = check_array(loadings, "loadings", ndim=2, dtype=np.float64)
        default = [f"column {k}" for k in range(table.shape[1])]
    names = default if names is None else list(names)
    if len(names) != table.shape[1]:
        raise ValueError(f"names must give one name per loading column ({table.shape[1]}). Got {len(names)}.")
    return table, names


def plot_loadings(loadings, labels=None, *, names=None, kde=True, max_points=2000, random_state=0, fig=None,
                  cmap="tab10", title=None):
    """Scatter matrix of neuron loadings, coloured by cell type, with KDE contours per type.

    Off the diagonal, panel (row a, column b) scatters loading b (x) against
    loading a (y), one colour per cell type, with the contours (levels at
    20%, 50% and 80% of the peak) of each type's Gaussian kernel density
    estimate (``scipy.stats.gaussian_kde``); on the diagonal, each type's
    1-D density (KDE, or a histogram with ``kde=False``).

    Parameters
    ----------
    loadings : LowRankRNN or array-like of shape (n_neurons, n_columns)
        A network gives the columns [m, n, I] (and b if nonzero).
    labels : array-like of int of shape (n_neurons,), optional
        Cell type of each neuron (default: one type).
    names : sequence of str, optional
        Axis names of the columns.
    kde : bool, default=True
        Draw KDE contours and diagonal densities.
    max_points : int, default=2000
        Neurons scattered (a random subset of larger networks; the KDEs use
        every neuron).
    random_state : None, int or numpy.random.Generator, default=0
        Draws the scattered subset.
    fig : matplotlib Figure, optional
    cmap : str, default="tab10"
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes`` in row-major order (n_columns^2 panels); the scatter of
        type k in each panel has gid ``"loadings:k"``, its contours
        ``"kde:k"``.

    Raises
    ------
    ValueError
        If ``loadings`` is not a network or 2-D array, has more than 8 columns,
        ``names`` or ``labels`` do not match it, or ``max_points`` < 1.
    TypeError
        If ``max_points`` is not an int.

    Examples
    --------
    >>> from connector_sim.sparse import rank_one_gaussian
    >>> fig = plot_loadings(rank_one_gaussian(100, 1.0, 0.5, random_state=0), kde=False)
    >>> len(fig.axes)  # columns m and n: a 2 x 2 scatter matrix
    4
    """
    from matplotlib import colormaps

    from ._validation import check_random_state

    table, names = _loading_table(loadings, names)
    N, C = table.shape
    if C > 8:
        raise ValueError(f"plot_loadings draws at most 8 loading columns ({C}^2 panels asked). Select columns first.")
    if labels is None:
        labels = np.zeros(N, int)
    labels = check_array(labels, "labels", ndim=1, shape=(N,))
    types = np.unique(labels)
    max_points = check_int(max_points, "max_points", minimum=1, owner="plot_loadings")
    shown = np.arange(N)
    if N > max_points:
        shown = np.sort(check_random_state(random_state).choice(N, max_points, replace=False))
    palette = colormaps[cmap]
    colors = {t: palette(k % palette.N) for k, t in enumerate(types)}
    if fig is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(1.9 * C + 0.6, 1.9 * C + 0.4))
    axes = fig.subplots(C, C, squeeze=False)
    limits = [(lo - 0.05 * (hi - lo + 1e-12), hi + 0.05 * (hi - lo + 1e-12))
              for lo, hi in zip(table.min(axis=0), table.max(axis=0))]
    for a in range(C):
        for b in range(C):
            ax = axes[a, b]
            for t in types:
                members = table[labels == t]
                if a == b:
                    if kde and len(members) > 2 and np.ptp(members[:, a]) > 0:
                        from scipy.stats import gaussian_kde

                        grid = np.linspace(*limits[a], 200)
                        ax.plot(grid, gaussian_kde(members[:, a])(grid), color=colors[t], gid=f"density:{t}")
                    else:
                        ax.hist(members[:, a], bins=30, range=limits[a], density=True, color=colors[t], alpha=0.5)
                    continue
                drawn = table[shown][labels[shown] == t]
                ax.scatter(drawn[:, b], drawn[:, a], s=3, color=colors[t], alpha=0.5, linewidths=0,
                           label=f"type {t}", gid=f"loadings:{t}")
                if kde and len(members) > 3:
                    pair = members[:, [b, a]].T
                    if np.linalg.matrix_rank(np.cov(pair)) == 2:
                        from scipy.stats import gaussian_kde

                        x, y = np.meshgrid(np.linspace(*limits[b], 60), np.linspace(*limits[a], 60))
                        density = gaussian_kde(pair)(np.vstack([x.ravel(), y.ravel()])).reshape(x.shape)
                        contours = ax.contour(x, y, density, levels=density.max() * np.array([0.2, 0.5, 0.8]),
                                              colors=[colors[t]], linewidths=0.8)
                        contours.set_gid(f"kde:{t}")
            ax.set_xlim(limits[b])
            if a != b:
                ax.set_ylim(limits[a])
            ax.tick_params(labelsize=6)
            if a == C - 1:
                ax.set_xlabel(names[b], fontsize=8)
            if b == 0:
                ax.set_ylabel(names[a], fontsize=8)
    if len(types) > 1:
        handles = [axes[0, 1 if C > 1 else 0].scatter([], [], color=colors[t], s=10) for t in types]
        fig.legend(handles, [f"type {t}" for t in types], loc="upper right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
