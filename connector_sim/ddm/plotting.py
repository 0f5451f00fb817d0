"""Figures of a drift-diffusion decomposition: drift and its two parts, stationary density, current, paths.

Made without pyplot (``matplotlib.figure.Figure``), so they work headless;
the streamline panels reuse :func:`connector_sim.plot_flow_field`.
"""

import numpy as np

from ..plotting import plot_flow_field
from .decomposition import HelmholtzHodge

__all__ = ["plot_helmholtz_hodge", "plot_stationary_density", "plot_probability_current", "plot_trajectories"]


def _check_hh(hh, owner):
    if not isinstance(hh, HelmholtzHodge):
        raise TypeError(f"{owner} needs a HelmholtzHodge (from connector_sim.ddm.helmholtz_hodge). "
                        f"Got {type(hh).__name__} instead.")
    return hh


def _new_axes(ax, figsize=(5.0, 4.4)):
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=figsize).subplots()


def plot_stationary_density(hh, *, ax=None, log=False, cmap="magma", colorbar=True, title="stationary density"):
    """The stationary density p_s: an image for 2-D, a curve for 1-D. Returns the Axes.

    Raises
    ------
    TypeError
        If ``hh`` is not a HelmholtzHodge.

    Examples
    --------
    >>> from connector_sim.ddm import helmholtz_hodge, make_grid, ornstein_uhlenbeck
    >>> split = helmholtz_hodge(ornstein_uhlenbeck(), make_grid([(-4.0, 4.0), (-4.0, 4.0)], 30))
    >>> ax = plot_stationary_density(split)
    >>> ax.get_title()
    'stationary density'
    """
    hh = _check_hh(hh, "plot_stationary_density")
    ax = _new_axes(ax)
    p = hh.density
    if len(hh.grid) == 1:
        ax.plot(hh.grid[0], p, color="black", gid="density")
        ax.set(xlabel="$z$", ylabel="$p_s(z)$")
    elif len(hh.grid) == 2:
        x, y = hh.grid
        values = np.log10(np.clip(p, p.max() * 1e-12, None)) if log else p
        image = ax.imshow(values.T, origin="lower", extent=(x[0], x[-1], y[0], y[-1]), cmap=cmap, aspect="equal",
                          gid="density")
        if colorbar:
            ax.figure.colorbar(image, ax=ax, label=r"$\log_{10} p_s$" if log else r"$p_s$")
        ax.set(xlabel="$z_1$", ylabel="$z_2$")
    else:
        raise ValueError("plot_stationary_density draws 1-D and 2-D densities only.")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_probability_current(hh, *, ax=None, density=1.0, title="probability current $j_s$ on $p_s$"):
    """Streamlines of the stationary current j_s over the density (2-D). Returns the Axes.

    Raises
    ------
    TypeError
        If ``hh`` is not a HelmholtzHodge.
    ValueError
        If ``hh`` is 1-D (its stationary current is 0).

    Examples
    --------
    >>> from connector_sim.ddm import helmholtz_hodge, make_grid, ornstein_uhlenbeck
    >>> split = helmholtz_hodge(ornstein_uhlenbeck(), make_grid([(-4.0, 4.0), (-4.0, 4.0)], 30))
    >>> ax = plot_probability_current(split)
    >>> len(ax.collections) > 0
    True
    """
    hh = _check_hh(hh, "plot_probability_current")
    if len(hh.grid) != 2:
        raise ValueError("plot_probability_current draws 2-D currents only (a 1-D stationary current is 0).")
    ax = plot_stationary_density(hh, ax=ax, colorbar=False, title=None)
    x, y = hh.grid
    j = hh.current
    speed = np.linalg.norm(j, axis=-1)
    if speed.max() > 0:
        ax.streamplot(x, y, j[..., 0].T, j[..., 1].T, color="white", density=density, linewidth=0.8,
                      arrowsize=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_trajectories(trajectories, *, dt=1.0, ax=None, max_trials=5, title="sample trajectories"):
    """Sample paths: time series for 1-D, the (z_1, z_2) plane for d >= 2. Returns the Axes.

    Raises
    ------
    ValueError
        If ``trajectories`` is not of shape (n_trials, n_times, d) or (n_times, d).

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.ddm import euler_maruyama, ornstein_uhlenbeck
    >>> paths = euler_maruyama(ornstein_uhlenbeck(), np.zeros(2), n_steps=200, dt=0.01, n_trials=3, seed=0)
    >>> ax = plot_trajectories(paths, dt=0.01)
    >>> len(ax.lines) >= 3  # one path per trial (in the plane for d = 2)
    True
    """
    traj = np.asarray(trajectories, dtype=float)
    if traj.ndim == 2:
        traj = traj[None]
    if traj.ndim != 3:
        raise ValueError("plot_trajectories needs shape (n_trials, n_times, d) or (n_times, d). "
                         f"Got {np.shape(trajectories)}.")
    ax = _new_axes(ax)
    for path in traj[:max_trials]:
        if traj.shape[2] == 1:
            ax.plot(np.arange(len(path)) * dt, path[:, 0], lw=0.7, gid="trajectories")
        else:
            ax.plot(path[:, 0], path[:, 1], lw=0.6, alpha=0.8, gid="trajectories")
    if traj.shape[2] == 1:
        ax.set(xlabel="time", ylabel="$z$")
    else:
        ax.set(xlabel="$z_1$", ylabel="$z_2$", aspect="equal")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_helmholtz_hodge(hh, *, trajectories=None, dt=1.0, suptitle=None, stream_density=1.0):
    """A four-panel figure: drift f, reversible part f_rev, irreversible part f_irr, and p_s with j_s.

    2-D: streamlines coloured by speed (f_irr only where p_s is resolved)
    and, on the last panel, the density with the current and the given
    ``trajectories``. 1-D: the three drifts as curves and the density.
    ``stream_density`` is matplotlib's streamline density (lower is faster).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    TypeError
        If ``hh`` is not a HelmholtzHodge.

    Examples
    --------
    >>> from connector_sim.ddm import helmholtz_hodge, make_grid, ornstein_uhlenbeck
    >>> split = helmholtz_hodge(ornstein_uhlenbeck(), make_grid([(-4.0, 4.0), (-4.0, 4.0)], 30))
    >>> len(plot_helmholtz_hodge(split).axes) >= 4
    True
    """
    hh = _check_hh(hh, "plot_helmholtz_hodge")
    from matplotlib.figure import Figure

    dim = len(hh.grid)
    fig = Figure(figsize=(17.0, 4.2) if dim == 2 else (10.0, 3.8))
    if dim == 1:
        ax_f, ax_p = fig.subplots(1, 2)
        x = hh.grid[0]
        ax_f.plot(x, hh.drift[:, 0], color="black", label="$f$")
        ax_f.plot(x, hh.reversible[:, 0], "--", color="tab:blue", label=r"$f_{rev}$")
        ax_f.plot(x, hh.irreversible[:, 0], ":", color="tab:red", label=r"$f_{irr}$")
        ax_f.axhline(0, color="0.7", lw=0.5)
        ax_f.set(xlabel="$z$", ylabel="drift")
        ax_f.legend(fontsize=8)
        plot_stationary_density(hh, ax=ax_p)
    elif dim == 2:
        axes = fig.subplots(1, 4)
        for ax, field, name in zip(axes[:3], (hh.drift, hh.reversible, hh.irreversible),
                                   ("drift $f$", r"reversible $f_{rev} = D\nabla\log p_s$",
                                    r"irreversible $f_{irr} = j_s / p_s$")):
            if np.abs(field).max() > 0:
                plot_flow_field(field, grid=hh.grid, ax=ax, colorbar=True, title=name, density=stream_density)
            else:
                ax.set_title(name + " (zero)", fontsize=10)
            ax.set(xlabel="$z_1$", ylabel="$z_2$")
        plot_probability_current(hh, ax=axes[3], density=stream_density)
        if trajectories is not None:
            plot_trajectories(trajectories, dt=dt, ax=axes[3], title=None)
            axes[3].set(xlim=(hh.grid[0][0], hh.grid[0][-1]), ylim=(hh.grid[1][0], hh.grid[1][-1]))
    else:
        raise ValueError("plot_helmholtz_hodge draws 1-D and 2-D decompositions only.")
    title = suptitle if suptitle is not None else f"entropy production {hh.entropy_production:.3g}"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
