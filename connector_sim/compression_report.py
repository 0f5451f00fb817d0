"""The dynamic-compression section of the report: a DCF fit of the embedded Van der Pol oscillator, and the comparison.

:func:`run_compression_report` (part of ``connector-sim demo``):

1. makes the stochastic Van der Pol dataset (rho = 2, tau = 15) embedded into
   D = 100 dimensions by a random tanh map plus noise
   (:func:`connector_sim.compression_data.van_der_pol_dataset`);
2. runs :func:`connector_sim.inference.compression_compare.compare_compression`:
   PCA, PCA + a linear dynamical system, LINT and DCF at k = 2 on the same
   training trials, scored on held-out trials;
3. draws ``compression.png``: the held-out latents of DCF coloured by time
   beside the true ones, DCF's latent flow field (``velocity``), its
   nested-dropout spectrum (``dimension_importance_``), and trajectories it
   generates from held-out first frames against the held-out latents;
4. writes ``compression.md`` (the table, the period of generated
   trajectories against the truth's) and ``compression.json``.

Settings (:data:`SETTINGS`): "full" adds about two minutes to the demo on
two cores (few epochs: the numbers show the method working, not its best);
"quick" is for the tests. More seeds and epochs go through ``n_seeds`` and
``dcf_params``, or the ``connector-sim compress`` command.
"""

import os
import sys
import time

import numpy as np

from .demo import save_figure_atomic, write_json_atomic, write_text_atomic

#: Sizes and epochs of the full section (in the demo) and of the quick one (tests, ``demo --quick``).
SETTINGS = {
    "full": dict(n_trials=48, n_times=150, n_features=100, n_seeds=2, horizon=10, k_max=6, lint_epochs=20,
                 methods=("pca", "pca_lds", "lint", "dcf"),
                 dcf=dict(n_epochs=60, compression_width=128, dynamics_width=128, depth=3, solver="midpoint")),
    "quick": dict(n_trials=16, n_times=60, n_features=30, n_seeds=2, horizon=5, k_max=4, lint_epochs=2,
                  methods=("pca", "pca_lds", "dcf"),
                  dcf=dict(n_epochs=3, compression_width=32, dynamics_width=32, depth=2, solver="midpoint")),
}
#: Why these choices: on two loaded cores one epoch of the paper's widths (256 / 512, depth 4) over the 5,400
#: training pairs took 2.5-3 s and the final nested-dropout spectrum with dopri5 7 s; widths 128 / 128 at depth 3
#: take 0.45 s per epoch, so 60 epochs x 2 seeds, LINT and the baselines fit in about 100 s. The midpoint solver
#: (10 steps per unit time) halves the cost of the spectrum and of generation against dopri5.


def oscillation_period(signal, dt):
    """Mean period of a roughly periodic signal from its upward crossings of its mean (NaN if fewer than 2).

    signal : ndarray of shape (n_trials, n_times); crossings are pooled over trials.
    """
    signal = np.asarray(signal, dtype=np.float64)
    periods = []
    for trace in signal:
        trace = trace[np.isfinite(trace)]
        centred = trace - trace.mean()
        up = np.flatnonzero((centred[:-1] < 0) & (centred[1:] >= 0))
        if len(up) >= 2:
            # linear interpolation of each crossing time
            exact = up + centred[up] / (centred[up] - centred[up + 1])
            periods.extend(np.diff(exact))
    return float(np.mean(periods) * dt) if periods else float("nan")


def run_compression_report(out="report", *, quick=False, seed=0, n_seeds=None, dcf_params=None, progress=True):
    """Fit DCF and the baselines to the embedded Van der Pol data; write the figure and the table.

    Parameters
    ----------
    out : str
        Report folder (created if missing).
    quick : bool, default=False
        The small version (tests, ``demo --quick``).
    seed : int, default=0
    n_seeds : int, optional
        Fits per stochastic method (default: the settings', 2).
    dcf_params : dict, optional
        Extra :class:`~connector_sim.inference.DynamicCompressionFlow` parameters (epochs, widths, device).
    progress : bool, default=True
        A line on stderr before each step.

    Returns
    -------
    dict
        Everything written to ``compression.json``.
    """
    from .compression_data import van_der_pol_dataset
    from .inference.compression_compare import comparison_markdown, compare_compression

    settings = SETTINGS["quick" if quick else "full"]
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()

    def log(message):
        if progress:
            print(f"[compression] {message} ({time.perf_counter() - started:.0f} s so far)", file=sys.stderr,
                  flush=True)

    log("simulate the stochastic Van der Pol oscillator and embed it")
    data = van_der_pol_dataset(n_trials=settings["n_trials"], n_times=settings["n_times"],
                               n_features=settings["n_features"], random_state=seed)
    params = dict(settings["dcf"])
    params.update(dcf_params or {})
    rows, models = compare_compression(
        data, methods=settings["methods"], n_seeds=settings["n_seeds"] if n_seeds is None else n_seeds,
        horizon=settings["horizon"], k_max=settings["k_max"], lint_params={"n_epochs": settings["lint_epochs"]},
        dcf_params=params, random_state=seed, progress=log, return_models=True)
    dcf = models["dcf"][0]
    test = models["test_trials"]
    held = data.subset(test)
    log("figures: latents, flow field, nested-dropout spectrum, generated trajectories")
    Z = dcf.transform(held.X, held.lengths)
    n_steps = (held.n_times - 1) // dcf.lag
    Zgen, _ = dcf.generate(n_steps, x0=held.X[:, 0])
    period_true = oscillation_period(held.latents[..., 0], data.dt)
    period_data = oscillation_period(Z[..., 0], data.dt)
    period_generated = oscillation_period(Zgen[..., 0], data.dt * dcf.lag)
    _figure(os.path.join(out, "compression.png"), held, Z, Zgen, dcf)
    report = {
        "settings": dict(settings, quick=quick, seed=seed, methods=list(settings["methods"]), dcf_params=params),
        "data": dict(data.params, n_trials=data.n_trials, n_times=data.n_times, n_features=data.n_features),
        "table": rows,
        "dcf": {"n_components": int(dcf.n_components_),
                "dimension_importance": np.asarray(dcf.dimension_importance_, np.float64).tolist(),
                "period_true": period_true, "period_of_latents": period_data, "period_generated": period_generated},
        "seconds": time.perf_counter() - started,
    }
    write_json_atomic(os.path.join(out, "compression.json"), _json(report))
    write_text_atomic(os.path.join(out, "compression.md"), _summary(report, comparison_markdown(rows)))
    log("wrote compression.png, compression.md, compression.json")
    return report


def _json(report):
    from ._files import json_safe

    return json_safe(report)


def _time_coloured(ax, trajectories, cmap="viridis"):
    from matplotlib.collections import LineCollection

    for trajectory in trajectories:
        trajectory = trajectory[np.all(np.isfinite(trajectory), axis=1)]
        segments = np.stack([trajectory[:-1, :2], trajectory[1:, :2]], axis=1)
        lines = LineCollection(segments, cmap=cmap, linewidths=0.8)
        lines.set_array(np.arange(len(segments)))
        ax.add_collection(lines)
    points = np.concatenate([t[np.all(np.isfinite(t), axis=1), :2] for t in trajectories])
    ax.set_xlim(points[:, 0].min(), points[:, 0].max())
    ax.set_ylim(points[:, 1].min(), points[:, 1].max())
    return lines


def _figure(path, held, Z, Zgen, dcf):
    from matplotlib.figure import Figure

    from .plotting import plot_flow_field

    figure = Figure(figsize=(20, 4.2))
    axes = [figure.add_subplot(1, 5, i + 1) for i in range(5)]
    shown = slice(0, min(8, held.n_trials))
    line = _time_coloured(axes[0], held.latents[shown])
    axes[0].set(title="true latents (held-out trials)", xlabel="$z_1$", ylabel="$z_2$")
    figure.colorbar(line, ax=axes[0], label="time bin")
    if Z.shape[2] >= 2:
        _time_coloured(axes[1], Z[shown])
        axes[1].set(title=f"DCF latents (k = {dcf.n_components_})", xlabel=r"$\mu_1$", ylabel=r"$\mu_2$")
    else:
        for trajectory in Z[shown]:
            axes[1].plot(trajectory[:, 0], lw=0.8)
        axes[1].set(title="DCF latent (k = 1)", xlabel="time bin", ylabel=r"$\mu_1$")
    valid = Z[np.all(np.isfinite(Z), axis=2)]
    if Z.shape[2] == 2:
        low, high = valid.min(axis=0), valid.max(axis=0)
        pad = 0.1 * (high - low)
        box = np.stack([low - pad, high + pad], axis=1)
        plot_flow_field(dcf.velocity, box, ax=axes[2], resolution=25, colorbar=False, trajectories=Zgen[:3],
                        title="DCF latent flow field (velocity)\nand generated trajectories")
        axes[2].set(xlabel=r"$\mu_1$", ylabel=r"$\mu_2$")
    else:
        centre = valid.mean(axis=0)
        g1, g2 = np.meshgrid(*[np.linspace(valid[:, i].min(), valid[:, i].max(), 15) for i in (0, 1)])
        grid = np.broadcast_to(centre, g1.shape + (len(centre),)).copy()
        if Z.shape[2] >= 2:
            grid[..., 0], grid[..., 1] = g1, g2
            v = np.asarray(dcf.velocity(grid))
            axes[2].quiver(g1, g2, v[..., 0], v[..., 1])
        axes[2].set(title="DCF velocity (first two latents, others at their mean)")
    importance = np.asarray(dcf.dimension_importance_, np.float64)
    axes[3].bar(np.arange(1, len(importance) + 1), importance,
                color=["C0" if i < dcf.n_components_ else "0.7" for i in range(len(importance))])
    axes[3].set(title="nested-dropout spectrum", xlabel="latent dimension", ylabel="importance")
    steps = np.arange(Zgen.shape[1]) * dcf.lag
    for i in range(min(3, len(Z))):
        axes[4].plot(np.arange(Z.shape[1]), Z[i, :, 0], color=f"C{i}", lw=1.0)
        axes[4].plot(steps, Zgen[i, :, 0], color=f"C{i}", lw=1.0, ls="--")
    axes[4].set(title="held-out (solid) vs generated (dashed)", xlabel="time bin", ylabel=r"$\mu_1$")
    figure.tight_layout()
    save_figure_atomic(figure, path)


def _summary(report, table):
    settings, dcf = report["settings"], report["dcf"]
    kind = "Quick run (tiny sizes and epochs)." if settings["quick"] else "Demo run (few epochs: about two minutes)."
    data = report["data"]
    return "\n".join([
        "# Dynamic compression flows on the embedded Van der Pol oscillator", "",
        f"{kind} Stochastic Van der Pol (rho = {data['rho']}, tau = {data['tau']}, noise {data['noise']}), "
        f"{data['n_trials']} trials x {data['n_times']} bins of dt = {data['dt']}, embedded into D = "
        f"{data['n_features']} by a random tanh map plus noise ({data['observation_noise']} of the signal's "
        f"standard deviation). DCF {settings['dcf_params']}.", "",
        f"- DCF picked k = {dcf['n_components']}; nested-dropout spectrum "
        + ", ".join(f"{value:.3g}" for value in dcf["dimension_importance"]),
        f"- Period: true latents {dcf['period_true']:.3f}, DCF latents of the held-out data "
        f"{dcf['period_of_latents']:.3f}, trajectories DCF generates from their first frames "
        f"{dcf['period_generated']:.3f}", "",
        table,
        f"Total {report['seconds']:.0f} s.", ""])
