"""The main job on the embedded default: the quadstable network.

Samples the quadstable Gaussian-mixture lrRNN (Connector paper, section 6.1),
simulates latent trajectories from a 20 x 20 grid of initial conditions at
N = 1,000 (the embedded default) and at a large N, plus noisy trials, and
writes a report folder: ``trajectories.png``, ``flow_field.png`` (the
mean-field flow of the quadstable mixture with its fixed points, and some
of the N = 1,000 trajectories) and ``report.json`` (what was run, what came
out, how long it took).
"""

import json
import os
import platform
import time

import numpy as np

from ._backends import available_backends
from ._files import write_atomic
from .fixed_points import find_fixed_points
from .mean_field import latent_flow
from .simulate import simulate
from .synthetic import latent_grid, quadstable_mixture, quadstable_network


def _attractors(end_points, decimals=1):
    """Distinct end points (rounded), with how many trials reached each."""
    rounded = np.round(end_points, decimals) + 0.0  # +0.0 folds -0.0 into 0.0
    points, counts = np.unique(rounded, axis=0, return_counts=True)
    return [{"kappa": point.tolist(), "n_trials": int(count)} for point, count in zip(points, counts)]


def write_json_atomic(path, payload):
    """Write JSON to ``path`` through a temporary file and a rename."""
    write_atomic(path, json.dumps(payload, indent=2).encode())


def write_text_atomic(path, text):
    """Write text to ``path`` through a temporary file and a rename."""
    write_atomic(path, text.encode())


def save_figure_atomic(figure, path, dpi=120):
    """Save a matplotlib figure as PNG through a temporary file and a rename."""
    write_atomic(path, lambda stream: figure.savefig(stream, dpi=dpi, format="png"))


def plot_mean_field(path, trajectories, box=((-3.0, 3.0), (-3.0, 3.0))):
    """Flow field of the quadstable mixture's mean field, its fixed points and some trajectories.

    Returns the fixed points (list of :class:`~connector_sim.FixedPoint`).
    """
    from .plotting import plot_flow_field

    flow = latent_flow(quadstable_mixture())
    points = find_fixed_points(flow, box)
    ax = plot_flow_field(flow, box, fixed_points=points, trajectories=trajectories,
                         title="quadstable: mean field (flow, fixed points)\nand N = 1,000 trajectories (red)")
    ax.figure.tight_layout()
    save_figure_atomic(ax.figure, path)
    return points


def plot_trajectories(path, panels):
    """One panel per (title, kappa (B, T, 2)) pair; trajectories coloured by end quadrant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis, (title, kappa) in zip(axes[0], panels):
        angle = np.arctan2(kappa[:, -1, 1], kappa[:, -1, 0])
        group = np.round(angle / (np.pi / 2)).astype(int) % 4
        for trajectory, g in zip(kappa, group):
            axis.plot(trajectory[:, 0], trajectory[:, 1], lw=0.6, alpha=0.6, color=colours(g))
        axis.plot(kappa[:, -1, 0], kappa[:, -1, 1], "k.", ms=4)
        axis.set(title=title, xlabel=r"$\kappa_1$", ylabel=r"$\kappa_2$", aspect="equal")
    figure.tight_layout()
    try:
        save_figure_atomic(figure, path)
    finally:
        plt.close(figure)


def run_demo(out_dir="report", *, large_n=1_000_000, n_steps=300, seed=0, backend="auto",
             log=print, progress=None):
    """Simulate the quadstable network and write the report folder.

    Parameters
    ----------
    out_dir : str
        Created if missing; ``trajectories.png``, ``flow_field.png`` and
        ``report.json`` go there.
    large_n : int
        Size of the second, large network sampled from the same recipe.
    n_steps : int
        Steps run from each grid point (alpha = 0.1); the end points show
        the attractors.
    seed : int
    backend : str
    log : callable
        Progress messages.
    progress : callable, optional
        ``progress(steps_done, n_steps)`` of each simulation, as in
        :func:`connector_sim.simulate`.

    Returns
    -------
    dict
        The report written to ``report.json``.
    """
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    grid = latent_grid(20, 2.4)
    report = {"network": "quadstable", "seed": seed, "alpha": 0.1, "grid": "20 x 20 in [-2.4, 2.4]^2",
              "backends_available": available_backends(), "runs": []}
    panels = []
    for n_neurons, dtype in [(1000, np.float64), (large_n, np.float32)]:
        log(f"[demo] sampling the quadstable network, N = {n_neurons:,} ({np.dtype(dtype).name})")
        t0 = time.perf_counter()
        network, labels = quadstable_network(n_neurons, seed, dtype=dtype)
        sample_time = time.perf_counter() - t0
        log(f"[demo] simulating {len(grid)} trials x {n_steps} steps in one batched pass")
        result = simulate(network, n_steps, dt=0.1, kappa0=grid, backend=backend, progress=progress)
        attractors = _attractors(result.kappa[:, -1])
        log(f"[demo]   {result.backend}/{result.path} path: {result.wall_time:.2f} s, "
            f"{len(attractors)} end states: {[a['kappa'] for a in attractors]}")
        report["runs"].append({
            "n_neurons": n_neurons, "dtype": np.dtype(dtype).name, "cell_type_counts": np.bincount(labels).tolist(),
            "n_trials": len(grid), "n_steps": n_steps, "backend": result.backend, "path": result.path,
            "sample_seconds": round(sample_time, 3), "simulate_seconds": round(result.wall_time, 3),
            "trial_steps_per_second": round(len(grid) * n_steps / result.wall_time),
            "end_states": attractors,
        })
        panels.append((f"N = {n_neurons:,}: {len(grid)} trials", result.kappa))
    log("[demo] noisy trials (private noise sigma = 0.5, full path), N = 1,000")
    network, _ = quadstable_network(1000, seed)
    noisy = simulate(network, n_steps, dt=0.1, kappa0=grid[::23], noise_std=0.5, seed=seed, backend=backend)
    report["runs"].append({
        "n_neurons": 1000, "dtype": "float64", "n_trials": len(grid[::23]), "n_steps": n_steps,
        "noise_std": 0.5, "backend": noisy.backend, "path": noisy.path,
        "simulate_seconds": round(noisy.wall_time, 3), "end_states": _attractors(noisy.kappa[:, -1], 0),
    })
    panels.append(("N = 1,000, private noise", noisy.kappa))
    plot_trajectories(os.path.join(out_dir, "trajectories.png"), panels)
    log("[demo] mean-field flow field of the quadstable mixture, with its fixed points")
    points = plot_mean_field(os.path.join(out_dir, "flow_field.png"), panels[0][1][::23])
    report["mean_field_fixed_points"] = [{"kappa": (np.round(p.position, 6) + 0.0).tolist(), "stability": p.stability}
                                         for p in points]
    report["total_seconds"] = round(time.perf_counter() - started, 3)
    report["machine"] = {"python": platform.python_version(), "processor": platform.machine(),
                         "cpu_count": os.cpu_count()}
    write_json_atomic(os.path.join(out_dir, "report.json"), report)
    log(f"[demo] wrote {out_dir}/trajectories.png, {out_dir}/flow_field.png and {out_dir}/report.json "
        f"in {report['total_seconds']:.1f} s")
    return report
