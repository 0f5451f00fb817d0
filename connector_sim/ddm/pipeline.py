"""The drift-diffusion matching report: train, simulate at scale, compare, and the memories.

:func:`run_system` (``connector-sim ddm SYSTEM``) does, for one benchmark SDE:

1. fits a :class:`~connector_sim.ddm.DriftDiffusionMatching` network
   (``n_neurons`` rows, trained on SDE trajectories);
2. samples a network of ``big_neurons`` (default 100,000, float32) from the
   fitted rows (:meth:`~connector_sim.ddm.DriftDiffusionMatching.sample_network`);
3. simulates both with the input noise that realises the diffusion, all
   trials in one batched pass of the compiled kernels (latent path), the SDE
   step ``dt_sde`` being the network step divided by the time scale;
4. compares each with the SDE itself (:func:`~connector_sim.ddm.compare_dynamics`,
   Euler-Maruyama at the same step from the same starts; confidence
   intervals from independent trials) and writes ``ddm_<system>.md`` (the
   tables), ``ddm_<system>.json`` (every number, timings) and
   ``ddm_<system>.png`` (drift, stationary marginal, training curve,
   trajectories);
5. splits the fitted connectivity into symmetric and antisymmetric parts
   and, for d <= 2, the drifts of SDE and network into reversible and
   irreversible parts (stationary Fokker-Planck on a grid: entropy
   production, cycling rate; ``ddm_<system>_decomposition.png``).

:func:`run_ddm_report` (``connector-sim ddm all``) runs it for the double
well, the cycling multi-well and Lorenz, then the memories
(:mod:`connector_sim.ddm.memories`): the switching probability of a 4-well
network against the pulse strength, its dwell times against the SDE's, and
the sequence statistics of cycling networks against the rotation strength
(``ddm_memories.png``, ``ddm_memories.json``), and indexes everything in
``ddm_report.md`` / ``ddm_report.json``.
"""

import math
import os
import sys
import time

import numpy as np

from .._files import json_safe
from ..demo import save_figure_atomic, write_json_atomic, write_text_atomic

#: What each system is run with: its SDE, the SDE time step of the
#: simulations, their duration and burn-in (SDE time units) and trials.
#: The steps keep Euler-Maruyama accurate for each (the Lorenz flow's fastest
#: rate is ~ 20 per unit time).
PRESETS = {
    "double_well": dict(system=("double_well", {"noise": 0.5}), dt_sde=0.05, duration=400.0, burn_in=10.0,
                        wells=[[-1.0], [1.0]]),
    "multi_well": dict(system=("multi_well", {"noise": 0.5}), dt_sde=0.02, duration=200.0, burn_in=5.0),
    "cycling": dict(system=("multi_well", {"rotation": 1.5, "noise": 0.3}), dt_sde=0.02, duration=100.0,
                    burn_in=5.0),
    "lorenz": dict(system=("lorenz", {}), dt_sde=0.005, duration=20.0, burn_in=2.0, lyapunov=True),
    "van_der_pol": dict(system=("van_der_pol", {"noise": 0.1}), dt_sde=0.01, duration=100.0, burn_in=10.0),
    "rossler": dict(system=("rossler", {}), dt_sde=0.01, duration=200.0, burn_in=20.0),
    "ornstein_uhlenbeck": dict(system=("ornstein_uhlenbeck", {}), dt_sde=0.02, duration=100.0, burn_in=5.0),
}
SYSTEMS = tuple(PRESETS)
#: Statistics of every comparison table (plus wells, oscillation and the Lyapunov exponent where they apply).
#: Not the Sinkhorn divergence: with its bootstrap it took ~2 minutes per table on two busy cores.
STATISTICS = ("moments", "correlation", "histogram", "autocorrelation")
REPORT_SYSTEMS = ("double_well", "cycling", "lorenz")

#: Sizes of the full report and of the quick one (tests, --quick).
SIZES = {
    "full": dict(n_neurons=500, n_epochs=50, n_samples=8192, big_neurons=100_000, n_trials=16, duration_factor=1.0,
                 memory_trials=100, rotations=(0.0, 0.6, 1.2, 2.0), lyapunov_time=100.0),
    "quick": dict(n_neurons=200, n_epochs=3, n_samples=2048, big_neurons=10_000, n_trials=8, duration_factor=0.2,
                  memory_trials=20, rotations=(0.5, 1.5), lyapunov_time=20.0),
}


def make_sde(name):
    """The SDE of a preset name (see :data:`PRESETS`)."""
    from . import systems

    if name not in PRESETS:
        raise ValueError(f"Unknown system {name!r}. Expected one of {list(SYSTEMS)}.")
    factory, kwargs = PRESETS[name]["system"]
    return getattr(systems, factory)(**kwargs)


def _wells(name, sde):
    preset = PRESETS[name]
    if "wells" in preset:
        return np.asarray(preset["wells"], dtype=np.float64)
    return sde.exact.get("well_centers")


def _log(message):
    print(message, file=sys.stderr, flush=True)


def check_run_options(n_neurons, n_epochs, big_neurons, n_trials, duration, names=None):
    """Validate the sizes of :func:`run_system` before any work (ValueError naming the option).

    ``names`` maps the parameter names to the names shown (e.g. command-line options).
    """
    names = names or {}
    for value, name, minimum in ((n_neurons, "n_neurons", 2), (n_epochs, "n_epochs", 0),
                                 (big_neurons, "big_neurons", 0), (n_trials, "n_trials", 2)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < minimum):
            raise ValueError(f"{names.get(name, name)} must be an int >= {minimum}. Got {value!r}.")
    if duration is not None and not (isinstance(duration, (int, float)) and math.isfinite(duration)
                                     and duration > 0):
        raise ValueError(f"{names.get('duration', 'duration')} must be a positive number of SDE time units. "
                         f"Got {duration!r}.")


def run_system(name, out="report", *, quick=False, n_neurons=None, n_epochs=None, big_neurons=None, n_trials=None,
               duration=None, seed=0, device="auto", backend="auto", n_threads=1, log=_log, callback=None,
               progress=None):
    """Train, simulate (trained N and large N) and compare one benchmark system; write its files.

    Parameters
    ----------
    name : str
        One of :data:`SYSTEMS`.
    out : str
        Report folder (created if missing).
    quick : bool, default=False
        The small sizes of :data:`SIZES` (tests, ``--quick``).
    n_neurons, n_epochs, big_neurons, n_trials : int, optional
        Override the sizes (``big_neurons=0`` skips the large network).
    duration : float, optional
        SDE time per trial; default the preset's (a fifth of it when quick).
    seed : int, default=0
    device : str, default="auto"
        Training device (CUDA when available).
    backend, n_threads
        Simulation backend and threads.
    log : callable
        Progress messages.
    callback : callable, optional
        Given to :class:`DriftDiffusionMatching` (called after each epoch).
    progress : callable, optional
        ``progress(steps_done, n_steps)`` of each simulation, as in
        :func:`connector_sim.simulate`.

    Returns
    -------
    dict
        Everything written to ``ddm_<name>.json``.
    """
    from .matching import DriftDiffusionMatching

    if name not in PRESETS:
        raise ValueError(f"Unknown system {name!r}. Expected one of {list(SYSTEMS)}.")
    check_run_options(n_neurons, n_epochs, big_neurons, n_trials, duration)
    sizes = SIZES["quick" if quick else "full"]
    preset = PRESETS[name]
    n_neurons = sizes["n_neurons"] if n_neurons is None else n_neurons
    n_epochs = sizes["n_epochs"] if n_epochs is None else n_epochs
    big_neurons = sizes["big_neurons"] if big_neurons is None else big_neurons
    n_trials = sizes["n_trials"] if n_trials is None else n_trials
    duration = preset["duration"] * sizes["duration_factor"] if duration is None else float(duration)
    os.makedirs(out, exist_ok=True)
    sde = make_sde(name)
    dt_sde = preset["dt_sde"]
    report = {"system": name, "sde": repr(sde), "params": sde.params, "n_neurons": n_neurons, "n_epochs": n_epochs,
              "big_neurons": big_neurons, "n_trials": n_trials, "duration": duration, "dt_sde": dt_sde,
              "seed": seed, "quick": quick, "seconds": {}}

    log(f"[ddm {name}] fitting {n_neurons} neurons ({n_epochs} epochs)")
    started = time.perf_counter()
    estimator = DriftDiffusionMatching(n_neurons=n_neurons, n_epochs=n_epochs, n_samples=sizes["n_samples"],
                                       sample_size=max(big_neurons, n_neurons) if big_neurons else None,
                                       device=device, random_state=seed, callback=callback).fit(sde)
    report["seconds"]["fit"] = time.perf_counter() - started
    report.update(drift_error=estimator.drift_error_, initial_drift_error=estimator.initial_drift_error_,
                  expected_sampled_drift_error=estimator.sampled_drift_error_,
                  time_scale=estimator.time_scale_, latent_scale=estimator.latent_scale_,
                  rank=estimator.network_.rank, device=str(estimator.device_), epochs_run=estimator.n_epochs_,
                  best_epoch=estimator.best_epoch_, noise=estimator.noise_)
    log(f"[ddm {name}]   held-out drift error {estimator.drift_error_:.4f}, time scale {estimator.time_scale_:.3g} "
        f"(1 SDE time unit = {estimator.time_scale_:.3g} tau), {report['seconds']['fit']:.1f} s")

    dt = dt_sde * estimator.time_scale_
    rng = np.random.default_rng(seed)
    z0 = estimator.samples_[rng.integers(0, len(estimator.samples_), n_trials)]
    networks = [("trained", estimator.network_)]
    if big_neurons:
        started = time.perf_counter()
        networks.append(("sampled", estimator.sample_network(big_neurons, random_state=seed + 1, dtype=np.float32)))
        report["seconds"]["sample_big_network"] = time.perf_counter() - started
        points = estimator.samples_[rng.integers(0, len(estimator.samples_), 512)]
        f = sde.drift(points)
        error = estimator.latent_drift(points, network=networks[-1][1]) - f
        report["big_network_drift_error"] = math.sqrt(float((error**2).sum() / (f**2).sum()))
        log(f"[ddm {name}]   sampled N = {big_neurons:,}: relative drift error {report['big_network_drift_error']:.4f}")
    wells = _wells(name, sde)
    burn_in = int(round(preset["burn_in"] / dt_sde))
    trajectories, tables = {}, {}
    for label, network in networks:
        log(f"[ddm {name}] simulating N = {network.n_neurons:,}: {n_trials} trials x "
            f"{int(round(duration / dt_sde)):,} steps")
        result = estimator.simulate(duration, dt=dt, z0=z0, seed=seed + 2, network=network, backend=backend,
                                    n_threads=n_threads, progress=progress)
        z = estimator.latent_trajectories(result)
        trajectories[label] = z
        report["seconds"][f"simulate_{label}"] = result.wall_time
        report[f"simulation_{label}"] = {"n_neurons": network.n_neurons, "dtype": network.dtype.name,
                                         "backend": result.backend, "path": result.path,
                                         "n_steps": int(z.shape[1] - 1), "dt_network": dt,
                                         "kernel_seconds": result.wall_time,
                                         "trial_steps_per_second": n_trials * (z.shape[1] - 1) / result.wall_time}
        log(f"[ddm {name}]   {result.backend}/{result.path}: {result.wall_time:.1f} s; comparing with the SDE")
        started = time.perf_counter()
        lyapunov = bool(preset.get("lyapunov")) and label == "trained"
        statistics = list(STATISTICS) + (["wells"] if wells is not None else []) + (
            ["oscillation"] if "period" in sde.exact else []) + (["lyapunov"] if lyapunov else [])
        table = _compare(
            sde, z, dt=dt_sde, burn_in=burn_in, wells=wells, random_state=seed + 3, statistics=statistics,
            candidate_drift=estimator.latent_drift if lyapunov else None,
            reference_drift=sde.drift if lyapunov else None, lyapunov_time=sizes["lyapunov_time"])
        report["seconds"][f"compare_{label}"] = time.perf_counter() - started
        tables[label] = table
        report[f"comparison_{label}"] = table.rows
        report[f"agree_{label}"] = f"{sum(bool(row['agree']) for row in table.rows)} / {len(table.rows)}"

    started = time.perf_counter()
    report["decomposition"] = _decomposition(out, name, sde, estimator, quick)
    report["seconds"]["decomposition"] = time.perf_counter() - started

    from .sde import euler_maruyama

    reference = euler_maruyama(sde, z0, trajectories["trained"].shape[1] - 1, dt_sde, seed=seed + 3)
    _system_figure(os.path.join(out, f"ddm_{name}.png"), name, sde, estimator, trajectories, reference, burn_in,
                   dt_sde)
    report["seconds"]["total"] = sum(report["seconds"].values())
    write_json_atomic(os.path.join(out, f"ddm_{name}.json"), json_safe(report))
    write_text_atomic(os.path.join(out, f"ddm_{name}.md"), _system_markdown(report, tables, networks))
    log(f"[ddm {name}] wrote {out}/ddm_{name}.md, .json, .png")
    return report


def _decomposition(out, name, sde, estimator, quick):
    """Connectivity split of the fitted network; for d <= 2 the Helmholtz-Hodge split of SDE and network drifts.

    The network's latent dynamics are the SDE dz = f_net dt + G dW (its
    diffusion is realised exactly), so the same Fokker-Planck solve applies
    to both; ``ddm_<name>_decomposition.png`` shows the network's.
    """
    from .decomposition import connectivity_decomposition, cycling_rate, helmholtz_hodge, make_grid
    from .sde import SDE

    split = connectivity_decomposition(estimator.network_)
    result = {"asymmetry": split.asymmetry, "norm_symmetric": split.norm_symmetric,
              "norm_antisymmetric": split.norm_antisymmetric,
              "latent_eigenvalues_antisymmetric": np.abs(split.latent_eigenvalues_antisymmetric)}
    if sde.dim > 2:
        return result
    low, high = np.percentile(estimator.samples_, [0.1, 99.9], axis=0)
    margin = 0.25 * (high - low)
    grid = make_grid(np.stack([low - margin, high + margin], axis=1), 200 if sde.dim == 1 else (40 if quick else 80))
    network_sde = SDE(estimator.latent_drift, sde.constant_diffusion, sde.dim, name=f"network ({name})")
    for label, system in (("sde", sde), ("network", network_sde)):
        hh = helmholtz_hodge(system, grid)
        result[f"entropy_production_{label}"] = hh.entropy_production
        if sde.dim == 2:
            result[f"cycling_rate_{label}"] = cycling_rate(hh, center=tuple(estimator.embedding_.center))
    if sde.dim == 2:
        from .plotting import plot_helmholtz_hodge

        figure = plot_helmholtz_hodge(hh, suptitle=f"{name}: the trained network's latent drift")
        save_figure_atomic(figure, os.path.join(out, f"ddm_{name}_decomposition.png"))
    return result


def _compare(*args, **kwargs):
    """compare_dynamics; a statistic without events (no transition out of a well in a short run) is NaN there."""
    import warnings

    from .compare import compare_dynamics

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        return compare_dynamics(*args, **kwargs)


def _system_markdown(report, tables, networks):
    name = report["system"]
    lines = [
        f"# Drift-diffusion matching: {name}",
        "",
        f"{report['sde']}, params {report['params']}. Network: N = {report['n_neurons']}, rank {report['rank']}, "
        f"{report['epochs_run']} epochs (best {report['best_epoch']}) on {report['device']}; held-out relative drift "
        f"error {report['drift_error']:.4f} (closed-form start: {report['initial_drift_error']:.4f}). "
        f"Time scale: 1 SDE time unit = {report['time_scale']:.4g} tau; SDE step {report['dt_sde']} "
        f"(network step {report['dt_sde'] * report['time_scale']:.4g} tau).",
        "",
    ]
    for label, network in networks:
        sim = report[f"simulation_{label}"]
        lines += [
            f"## SDE against the {label} network (N = {network.n_neurons:,}, {sim['dtype']}, {sim['backend']} "
            f"{sim['path']} path: {sim['kernel_seconds']:.1f} s for {report['n_trials']} trials x "
            f"{sim['n_steps']:,} steps)",
            "",
            f"{report[f'agree_{label}']} rows agree.",
            "",
            tables[label].to_markdown(),
        ]
    split = report["decomposition"]
    lines += ["## Decomposition", "",
              f"Connectivity of the trained network: ||J_s||_F = {split['norm_symmetric']:.4g}, ||J_a||_F = "
              f"{split['norm_antisymmetric']:.4g} (asymmetry {split['asymmetry']:.3f})."]
    if "entropy_production_sde" in split:
        lines.append(f"Entropy production rate (stationary Fokker-Planck on a grid): SDE "
                     f"{split['entropy_production_sde']:.4g}, network {split['entropy_production_network']:.4g}.")
    if "cycling_rate_sde" in split:
        lines.append(f"Cycling rate (turns per SDE time unit): SDE {split['cycling_rate_sde']:.4g}, network "
                     f"{split['cycling_rate_network']:.4g}.")
    lines += ["", "Seconds: " + ", ".join(f"{key} {value:.1f}" for key, value in report["seconds"].items()), ""]
    return "\n".join(lines)


def _system_figure(path, name, sde, estimator, trajectories, reference, burn_in, dt_sde):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(16, 3.8))
    axes = [figure.add_subplot(1, 4, i + 1) for i in range(4)]
    samples = estimator.samples_
    low, high = np.percentile(samples, [1, 99], axis=0)
    if sde.dim == 1:
        grid = np.linspace(low[0], high[0], 200)[:, None]
        axes[0].plot(grid[:, 0], sde.drift(grid)[:, 0], "k", lw=2, label="SDE f(z)")
        axes[0].plot(grid[:, 0], estimator.latent_drift(grid)[:, 0], "r--", label="network")
        axes[0].set(xlabel="z", ylabel="drift", title=f"{name}: drift")
        axes[0].legend()
    elif sde.dim == 2:
        from ..plotting import plot_flow_field

        box = np.stack([low, high], axis=1)
        plot_flow_field(estimator.latent_drift, box, ax=axes[0], resolution=25, colorbar=False,
                        trajectories=trajectories["sampled" if "sampled" in trajectories else "trained"][:3, ::10],
                        title=f"{name}: network drift (SDE units)")
        axes[0].set(xlabel="z1", ylabel="z2")
    else:
        for label, z, colour in (("SDE", reference, "k"), ("network", trajectories["trained"], "r")):
            axes[0].plot(z[0, burn_in:, 0], z[0, burn_in:, 2], colour, lw=0.4, alpha=0.7, label=label)
        axes[0].set(xlabel="z1", ylabel="z3", title=f"{name}: one trajectory each")
        axes[0].legend()
    bins = np.linspace(low[0], high[0], 40)
    axes[1].hist(reference[:, burn_in:, 0].ravel(), bins=bins, density=True, histtype="step", color="k", lw=2,
                 label="SDE (Euler-Maruyama)")
    for label, z in trajectories.items():
        axes[1].hist(z[:, burn_in:, 0].ravel(), bins=bins, density=True, histtype="step",
                     label=f"network N = {'trained' if label == 'trained' else 'sampled'}")
    axes[1].set(xlabel="z1", ylabel="density", title="stationary marginal")
    axes[1].legend(fontsize=7)
    history = estimator.history_
    axes[2].semilogy(history["epoch"], history["train_loss"], label="train")
    if history["val_loss"][0] is not None:
        axes[2].semilogy(history["epoch"], history["val_loss"], label="validation")
    axes[2].set(xlabel="epoch", ylabel="expected latent velocity MSE",
                title=f"training (drift error {estimator.drift_error_:.3g})")
    axes[2].legend()
    n_show = min(reference.shape[1], 2000)
    time_axis = dt_sde * np.arange(n_show)
    shown = trajectories.get("sampled", trajectories["trained"])
    axes[3].plot(time_axis[:n_show], reference[0, :n_show, 0], "k", lw=0.6, label="SDE")
    axes[3].plot(time_axis[:n_show], shown[0, :n_show, 0], "r", lw=0.6, label="network")
    axes[3].set(xlabel="SDE time", ylabel="z1", title="trajectories (different noise)")
    axes[3].legend()
    figure.tight_layout()
    save_figure_atomic(figure, path)


def run_memories(out="report", *, quick=False, seed=0, device="auto", backend="auto", n_threads=1, log=_log,
                 callback=None, progress=None):
    """Associative and episodic memory of multi-well networks; writes ``ddm_memories.json`` and ``.png``.

    ``log``, ``callback`` and ``progress`` are as in :func:`run_system`.

    Returns
    -------
    dict
        Everything written to ``ddm_memories.json``.
    """
    from .matching import DriftDiffusionMatching
    from .memories import associative_memory, dwell_times, episodic_memory
    from .systems import multi_well

    sizes = SIZES["quick" if quick else "full"]
    os.makedirs(out, exist_ok=True)
    matching = dict(n_neurons=sizes["n_neurons"], n_epochs=sizes["n_epochs"], n_samples=sizes["n_samples"],
                    device=device)
    report = {"seconds": {}}
    started = time.perf_counter()
    log("[ddm memories] associative memory: a 4-well network, pulses from well 0 towards well 1")
    sde = multi_well(noise=0.5)
    wells = sde.exact["well_centers"]
    estimator = DriftDiffusionMatching(random_state=seed, callback=callback, **matching).fit(sde)
    dt_sde = 0.05
    dt = dt_sde * estimator.time_scale_
    strengths = np.linspace(0.0, 4.0, 9)
    curve = associative_memory(estimator, strengths, n_trials=sizes["memory_trials"], pulse_duration=0.5,
                               dt=dt, seed=seed, backend=backend, n_threads=n_threads)
    report["associative"] = {"drift_error": estimator.drift_error_, "pulse_duration": 0.5, **curve}
    duration = 400.0 * sizes["duration_factor"]
    result = estimator.simulate(duration, dt=dt, z0=wells[np.arange(sizes["n_trials"]) % 4],
                                seed=seed + 1, backend=backend, n_threads=n_threads, progress=progress)
    z = estimator.latent_trajectories(result)
    network_dwell = dwell_times(z, wells, dt_sde)
    from .sde import euler_maruyama

    reference = euler_maruyama(sde, z[:, 0], z.shape[1] - 1, dt_sde, seed=seed + 2)
    sde_dwell = dwell_times(reference, wells, dt_sde)
    report["dwell_times"] = {
        source: {"mean": d["mean"], "ci": d["ci"], "n": d["n"], "transitions": d["transitions"]}
        for source, d in (("network", network_dwell), ("sde", sde_dwell))}
    table = _compare(reference, z, dt=dt_sde, statistics=["wells"], wells=wells, random_state=seed)
    report["well_comparison"] = table.rows
    report["seconds"]["associative"] = time.perf_counter() - started

    started = time.perf_counter()
    log(f"[ddm memories] episodic memory: cycling networks for rotations {list(sizes['rotations'])}")
    rows = episodic_memory(sizes["rotations"], noise=0.5, duration=200.0 * sizes["duration_factor"],
                           n_trials=sizes["n_trials"], dt_sde=0.02, matching=matching, seed=seed, backend=backend,
                           n_threads=n_threads)
    report["episodic"] = rows
    report["seconds"]["episodic"] = time.perf_counter() - started
    _memories_figure(os.path.join(out, "ddm_memories.png"), report, network_dwell, sde_dwell)
    write_json_atomic(os.path.join(out, "ddm_memories.json"), json_safe(report))
    return report


def _memories_figure(path, report, network_dwell, sde_dwell):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 4))
    axes = [figure.add_subplot(1, 3, i + 1) for i in range(3)]
    curve = report["associative"]
    p = np.asarray(curve["p_target"])
    strength = np.asarray(curve["strength"])
    axes[0].errorbar(strength, p, yerr=[p - np.asarray(curve["ci_low"]), np.asarray(curve["ci_high"]) - p], fmt="o-")
    axes[0].set(xlabel="pulse strength (force, SDE units)", ylabel="P(switch to the target well)",
                title="associative memory (95% Wilson CI)", ylim=(-0.05, 1.05))
    bins = np.linspace(0, max(1e-9, np.percentile(np.concatenate([network_dwell["all"], sde_dwell["all"], [1.0]]),
                                                  95)), 25)
    axes[1].hist(sde_dwell["all"], bins=bins, density=True, histtype="step", color="k", lw=2,
                 label=f"SDE (n = {sde_dwell['n']})")
    axes[1].hist(network_dwell["all"], bins=bins, density=True, histtype="step", color="r",
                 label=f"network (n = {network_dwell['n']})")
    axes[1].set(xlabel="dwell time (SDE units)", ylabel="density", title="dwell times in a well")
    axes[1].legend()
    for source, colour in (("sde", "k"), ("network", "r")):
        rows = [row for row in report["episodic"] if row["source"] == source]
        omega = [row["rotation"] for row in rows]
        axes[2].plot(omega, [row["order"] for row in rows], "o-", color=colour, label=f"{source}: order")
        axes[2].plot(omega, [row["period_cv"] for row in rows], "s--", color=colour, label=f"{source}: period CV")
    axes[2].set(xlabel="rotation strength omega", title="episodic memory: sequence statistics")
    axes[2].legend(fontsize=7)
    figure.tight_layout()
    save_figure_atomic(figure, path)


def run_ddm_report(out="report", *, systems=REPORT_SYSTEMS, quick=False, memories=True, seed=0, device="auto",
                   backend="auto", n_threads=1, log=_log, callback=None, progress=None):
    """The drift-diffusion matching section of the report: :func:`run_system` for each system, then the memories.

    Writes ``ddm_report.json`` and ``ddm_report.md`` (drift errors, agreement
    counts, timings) next to each system's files. About 3-4 minutes on two
    cores at the full sizes; ``quick=True`` in well under a minute. ``log``,
    ``callback`` and ``progress`` are as in :func:`run_system`.
    """
    for name in systems:
        if name not in PRESETS:
            raise ValueError(f"Unknown system {name!r}. Expected some of {list(SYSTEMS)}.")
    started = time.perf_counter()
    summary = {"systems": {}, "quick": quick, "seed": seed}
    for name in systems:
        result = run_system(name, out, quick=quick, seed=seed, device=device, backend=backend, n_threads=n_threads,
                            log=log, callback=callback, progress=progress)
        summary["systems"][name] = {key: result.get(key) for key in (
            "drift_error", "time_scale", "n_neurons", "big_neurons", "agree_trained", "agree_sampled", "seconds",
            "simulation_sampled")}
    if memories:
        summary["memories"] = run_memories(out, quick=quick, seed=seed, device=device, backend=backend,
                                           n_threads=n_threads, log=log, callback=callback,
                                           progress=progress)["seconds"]
    summary["total_seconds"] = time.perf_counter() - started
    write_json_atomic(os.path.join(out, "ddm_report.json"), json_safe(summary))
    write_text_atomic(os.path.join(out, "ddm_report.md"), _report_markdown(summary))
    log(f"[ddm] report written to {out}/ddm_report.md in {summary['total_seconds']:.0f} s")
    return summary


def _report_markdown(summary):
    lines = ["# Drift-diffusion matching", "",
             "| system | drift error (held out) | time scale (tau per SDE unit) | rows agreeing: trained N | "
             "sampled N | N = big simulation (s) | total (s) |", "|---|---|---|---|---|---|---|"]
    for name, entry in summary["systems"].items():
        big = entry.get("simulation_sampled") or {}
        lines.append(f"| [{name}](ddm_{name}.md) | {entry['drift_error']:.4f} | {entry['time_scale']:.3g} | "
                     f"{entry['agree_trained']} | {entry.get('agree_sampled') or '-'} | "
                     f"{big.get('kernel_seconds', float('nan')):.1f} | {entry['seconds']['total']:.1f} |")
    if "memories" in summary:
        lines += ["", "Memories: see `ddm_memories.png` and `ddm_memories.json` (" + ", ".join(
            f"{key} {value:.1f} s" for key, value in summary["memories"].items()) + ")."]
    lines += ["", f"Total: {summary['total_seconds']:.0f} s.", ""]
    return "\n".join(lines)
