"""The Connector experiment of the paper's section 6.1, end to end, on the embedded quadstable network.

:func:`run_connector_pipeline` does, in one call (``connector-sim demo``):

1. samples the quadstable network (N = 1,000, four cell types) and simulates
   its rates from a grid of initial latents (100 steps, alpha = 0.1);
2. fits a rank-2 LINT network to those rates and aligns its latents to the
   ground truth's (``m' = A^{-T} m``, ``n' = A n``);
3. fits :class:`~connector_sim.inference.Connector` to the LINT network and
   its (aligned) latents, and samples a network of N = 100,000 from it;
4. reports the flow fields and fixed points of ground truth, LINT and
   Connector side by side; cell types of the LINT loadings and of
   Connector samples (held-out GMM completed log-likelihood, which
   chooses k, log-likelihood and silhouette against k; see
   :func:`~connector_sim.find_cell_types`);
   the fixed points left when each Connector cell type is silenced; and the
   dissimilarity matrix of the four synthetic networks' ground truths
   against Connector fits of them (section 4 of the theory page).

Outputs in the report folder: ``connector_flow_fields.png``,
``cell_types.png``, ``connector.json`` (every number) and ``connector.md``
(a one-page summary), each written atomically. ``quick=True`` runs a
smaller version in well under two minutes (the tests run it).
"""

import sys
import time

import numpy as np

from .cell_types import choose_k, find_cell_types
from .demo import save_figure_atomic, write_json_atomic, write_text_atomic
from .fixed_points import find_fixed_points
from .mean_field import latent_flow
from .perturbations import Perturbation, perturbed_flow
from .simulate import simulate
from .synthetic import SYNTHETIC_NETWORKS, latent_grid, synthetic_network

#: The full experiment (paper section 6.1) and the quick one of the tests.
SETTINGS = {
    "full": dict(n_neurons=1000, grid=20, n_steps=100, lint_trials=100, lint_epochs=20, connector_epochs=300,
                 hidden=128, n_layers=4, n_regressions=4, sample_neurons=100_000, flow_samples=20_000,
                 cell_type_samples=2000, k_max=8, dissimilarity_epochs=150, dissimilarity_samples=1000,
                 fixed_point_starts=60),
    "quick": dict(n_neurons=400, grid=8, n_steps=60, lint_trials=64, lint_epochs=1, connector_epochs=15,
                  hidden=32, n_layers=2, n_regressions=4, sample_neurons=5000, flow_samples=4000,
                  cell_type_samples=600, k_max=6, dissimilarity_epochs=8, dissimilarity_samples=250,
                  fixed_point_starts=25),
}
#: Why these choices: the quick run fits LINT on every trial of its 8 x 8 grid (on 24 of them the
#: Connector regression, which uses LINT's latents, saw too little of the state space and its flow lost two
#: attractors), and the Connector's conditional mean averages four regressions (n_regressions): one regression
#: on 1,000 sampled rows is noisy enough that the quick Connector's flow had 2 stable fixed points instead of 4
#: for seed 1, and 4 with the average.
BOX = np.array([[-2.6, 2.6], [-2.6, 2.6]])


class _Progress:
    """Numbered progress lines on stderr, with the time each step took."""

    def __init__(self, n_steps, enabled):
        self.n_steps, self.enabled, self.done = n_steps, enabled, 0
        self.started = self.step_started = time.perf_counter()
        self.timings = {}

    def __call__(self, name):
        now = time.perf_counter()
        if self.done:
            self.timings[self.current] = now - self.step_started
        self.done += 1
        self.current, self.step_started = name, now
        if callable(self.enabled):
            self.enabled(f"[{self.done}/{self.n_steps}] {name} ({now - self.started:.0f} s so far)")
        elif self.enabled:
            print(f"[{self.done}/{self.n_steps}] {name} ({now - self.started:.0f} s so far)", file=sys.stderr,
                  flush=True)

    def finish(self):
        self.timings[self.current] = time.perf_counter() - self.step_started
        return self.timings


def _fixed_points(velocity, n_starts, seed):
    points = find_fixed_points(velocity, BOX, n_starts=n_starts, random_state=seed)
    return [{"kappa": p.position.tolist(), "stability": p.stability} for p in points]


def _n_stable(points):
    return sum(point["stability"].startswith("stable") for point in points)


def _cell_types(rows, k_max, seed):
    """Cell types by the default rule (held-out completed log-likelihood), with the other rules' k beside it."""
    found = find_cell_types(rows, k_range=range(1, k_max + 1), method="gmm", random_state=seed)
    scores = {key: np.asarray(value).tolist() for key, value in found.scores.items()}
    return found, {"k": int(found.n_types), "criterion": found.criterion,
                   "k_by_log_likelihood": choose_k(found.scores, "log_likelihood"),
                   "k_by_silhouette": choose_k(found.scores, "silhouette"), "scores": scores}


def run_connector_pipeline(out="report", *, quick=False, seed=0, progress=True, callback=None):
    """Run the section 6.1 experiment on the quadstable network and write a report folder.

    Parameters
    ----------
    out : str
        Report folder (created if missing).
    quick : bool, default=False
        The small version (N = 400, an 8 x 8 grid, a few epochs): under two
        minutes on two cores, for the tests; its numbers are not the paper's.
    seed : int, default=0
    progress : bool or callable, default=True
        Numbered progress lines on stderr; a callable prints them instead.
    callback : callable, optional
        Given to each LINT and Connector fit (``callback(estimator, epoch,
        losses)`` after each epoch).

    Returns
    -------
    dict
        Everything written to ``connector.json``.
    """
    import os

    from .inference import dissimilarity
    from .inference.connector import Connector
    from .inference.lint import LINT
    from .latents import align_latents, transform_network

    settings = SETTINGS["quick" if quick else "full"]
    os.makedirs(out, exist_ok=True)
    step = _Progress(9, progress)
    report = {"settings": dict(settings, quick=quick, seed=seed)}

    step("simulate the quadstable network")
    truth = synthetic_network("quadstable", settings["n_neurons"], random_state=seed)
    kappa0 = latent_grid(settings["grid"], 2.4)
    data = simulate(truth.network, settings["n_steps"], dt=0.1 * truth.network.tau, kappa0=kappa0,
                    record_units="all")
    rates, truth_kappa = data.rates, data.kappa
    trials = np.random.default_rng(seed).permutation(len(kappa0))[: settings["lint_trials"]]

    step(f"fit LINT (rank 2) to {len(trials)} trials of {settings['n_neurons']} neurons")
    lint = LINT(rank=2, dt=0.1, n_epochs=settings["lint_epochs"], random_state=seed,
                callback=callback).fit(rates[trials])
    alignment = align_latents(lint.latents_, truth_kappa[trials])
    lint_network = transform_network(lint.network_, alignment.A)
    report["lint"] = {"epochs_run": int(lint.n_epochs_), "best_epoch": int(lint.best_epoch_),
                      "latent_alignment_r2": float(alignment.r2)}

    step("fit Connector to the LINT network and latents")
    # The paper applies Connector to "the LINT-inferred latents and loadings": the regression for
    # E[n | m] uses LINT's latents on the data. Re-simulating the LINT network from a box of initial
    # latents instead (Connector.fit without kappa) also regresses on its flow far from the data, which
    # the fit never constrained: nbar then came out 2x further from the truth's E[n | m] (rms 0.79
    # against 0.39 on the full run) and the Connector samples lost their four clusters.
    lint_kappa = alignment.transform(lint.latents_)
    connector = Connector(n_epochs=settings["connector_epochs"], hidden=settings["hidden"],
                          n_layers=settings["n_layers"], n_regressions=settings["n_regressions"],
                          random_state=seed, callback=callback).fit(lint_network, lint_kappa)

    step(f"sample a network of {settings['sample_neurons']} neurons from Connector")
    sampled, sampled_rows = connector.sample(settings["sample_neurons"], seed, return_rows=True)
    report["connector"] = {"sample_neurons": settings["sample_neurons"], "ridge_scaling": connector.ridge_scaling,
                           "ridge_constant": connector.ridge_constant_, "ridge_lambda": connector.ridge_lambda_}

    step("flow fields and fixed points of ground truth, LINT and Connector")
    flows = {
        "ground truth": latent_flow(truth.distribution),
        "LINT": latent_flow(lint_network),
        "Connector": connector.latent_flow(n_samples=settings["flow_samples"], random_state=seed),
    }
    fixed = {name: _fixed_points(flow, settings["fixed_point_starts"], seed) for name, flow in flows.items()}
    report["fixed_points"] = fixed
    report["n_stable_fixed_points"] = {name: _n_stable(points) for name, points in fixed.items()}
    _flow_figure(flows, fixed, os.path.join(out, "connector_flow_fields.png"))

    step("cell types of the LINT loadings and of Connector samples")
    layout = connector.layout_
    lint_rows = np.hstack([lint_network.m, lint_network.n])
    mn = slice(layout.m.start, layout.n.stop)  # the columns [m, n] of a row
    connector_rows = sampled_rows[: settings["cell_type_samples"]][:, mn]
    _, lint_types = _cell_types(lint_rows, settings["k_max"], seed)
    connector_found, connector_types = _cell_types(connector_rows, settings["k_max"], seed)
    report["cell_types"] = {"LINT": lint_types, "Connector": connector_types}
    _cell_type_figure(report["cell_types"], os.path.join(out, "cell_types.png"))

    step("silence each Connector cell type")
    labels = connector_found.model.predict(sampled_rows[:, mn])
    silenced = {}
    for k in range(connector_found.n_types):
        flow = perturbed_flow(sampled, Perturbation.silence(cell_types=[k]), labels=labels)
        points = _fixed_points(flow, settings["fixed_point_starts"], seed)
        silenced[str(k)] = {"fraction_of_neurons": float(np.mean(labels == k)), "fixed_points": points,
                            "n_stable": _n_stable(points)}
    report["silencing"] = silenced

    step("dissimilarity of the four synthetic networks: ground truth against Connector fits")
    names = list(SYNTHETIC_NETWORKS)
    fits = {}
    for name in names:
        network = synthetic_network(name, settings["n_neurons"], random_state=seed)
        fits[name] = (network.distribution,
                      Connector(n_epochs=settings["dissimilarity_epochs"], hidden=settings["hidden"],
                                n_layers=settings["n_layers"], random_state=seed,
                                callback=callback).fit(network.network))
    matrix = np.array([[dissimilarity(fits[a][0], fits[b][1], n_samples=settings["dissimilarity_samples"],
                                      random_state=seed) for b in names] for a in names])
    report["dissimilarity"] = {"rows_ground_truth": names, "columns_connector_fit": names,
                               "matrix": matrix.tolist(),
                               "diagonal_is_row_minimum": [bool(np.argmin(row) == i) for i, row in enumerate(matrix)]}

    step("write the report")
    report["seconds"] = step.finish()
    write_json_atomic(os.path.join(out, "connector.json"), report)
    write_text_atomic(os.path.join(out, "connector.md"), _summary(report))
    return report


def _flow_figure(flows, fixed, path):
    from matplotlib.figure import Figure

    from .plotting import plot_flow_field

    figure = Figure(figsize=(5 * len(flows), 4.6))
    for index, (name, flow) in enumerate(flows.items()):
        ax = figure.add_subplot(1, len(flows), index + 1)
        plot_flow_field(flow, BOX, ax=ax, resolution=25, colorbar=False, title=name,
                        fixed_points=None)
        for point in fixed[name]:
            stable = point["stability"].startswith("stable")
            ax.plot(*point["kappa"], "o", color="k", mfc="k" if stable else "w", ms=7)
    figure.tight_layout()
    save_figure_atomic(figure, path)


def _cell_type_figure(cell_types, path):
    from matplotlib.figure import Figure

    labels = {"completed_log_likelihood": "held-out completed log-likelihood per sample",
              "log_likelihood": "held-out log-likelihood per sample", "silhouette": "silhouette"}
    figure = Figure(figsize=(13.5, 3.6))
    for index, (key, label) in enumerate(labels.items()):
        ax = figure.add_subplot(1, len(labels), index + 1)
        for name, found in cell_types.items():
            ax.plot(found["scores"]["k"], found["scores"][key], "o-", label=name)
        ax.set_xlabel("k (clusters)")
        ax.set_ylabel(label)
        ax.legend()
    figure.tight_layout()
    save_figure_atomic(figure, path)


def _summary(report):
    settings = report["settings"]
    lines = [
        "# Connector on the quadstable network (paper section 6.1)",
        "",
        f"{'Quick run (small sizes, few epochs: not the paper numbers).' if settings['quick'] else 'Full run.'} "
        f"N = {settings['n_neurons']}, {settings['grid']}x{settings['grid']} grid of initial latents, "
        f"{settings['n_steps']} steps; LINT on {settings['lint_trials']} trials ({settings['lint_epochs']} epochs); "
        f"Connector {settings['connector_epochs']} epochs; sampled network N = {settings['sample_neurons']}.",
        "",
        f"- LINT latents aligned to the ground truth: R^2 = {report['lint']['latent_alignment_r2']:.4f}",
        f"- Connector's conditional-mean ridge: {report['connector'].get('ridge_scaling', 'paper')} scaling, "
        f"constant {report['connector'].get('ridge_constant')}, lambda = {report['connector'].get('ridge_lambda')}",
        "- Stable fixed points: " + ", ".join(f"{name} {count}" for name, count
                                             in report["n_stable_fixed_points"].items()) + " (ground truth: 4)",
        "- Cell types (k by held-out GMM completed log-likelihood, the default; by held-out log-likelihood "
        "(one-standard-error rule); by silhouette): " + ", ".join(
            f"{name} {found['k']}; {found['k_by_log_likelihood']}; {found['k_by_silhouette']}"
            for name, found in report["cell_types"].items()),
        "- Silencing each Connector cell type leaves stable fixed points: " + ", ".join(
            f"type {k} ({entry['fraction_of_neurons']:.0%} of neurons): {entry['n_stable']}"
            for k, entry in report["silencing"].items()),
        "",
        "Dissimilarity D(ground truth (rows), Connector fit (columns)):",
        "",
        "| | " + " | ".join(report["dissimilarity"]["columns_connector_fit"]) + " |",
        "|---" * (1 + len(report["dissimilarity"]["columns_connector_fit"])) + "|",
    ]
    for name, row in zip(report["dissimilarity"]["rows_ground_truth"], report["dissimilarity"]["matrix"]):
        lines.append(f"| {name} | " + " | ".join(f"{value:.3f}" for value in row) + " |")
    lines += ["", "Seconds per step: " + ", ".join(f"{name}: {seconds:.1f}"
                                                  for name, seconds in report["seconds"].items()), ""]
    return "\n".join(lines)
