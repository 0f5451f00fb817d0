"""How the ridge conditional mean behaves as the regression uses more rows (theory section 3, step 4).

    python benchmarks/ridge_consistency.py                   # error of nbar against E[n | m] vs rows
    python benchmarks/ridge_consistency.py --connector       # + full Connector fits: ring radius, cycle period
    python benchmarks/ridge_consistency.py --connector-only --samplings sobol random  # Sobol vs random rows

Part 1. The Gaussian limit-cycle network (E[n | m] = A m) with
``--truth-neurons`` neurons (default 5000; its trajectories carry the
finite-N noise of a real fit) or its exact mean field (``--mean-field``);
``--time-points`` (default 2000, Connector's max_time_points) of its
trajectories; rows m drawn from the true marginal N(0, I). For 1,000 ..
32,000 rows, the mean squared error of nbar on 5,000 fresh m against A m
(E|A m|^2 = 6.4), for

- ``paper``: lambda = 1e-4 N^2 / alpha^2 (the Connector paper's form),
- ``linear cv``: lambda = c N, c cross-validated (the default; the network's
  own rows evaluate the held-out velocity, as Connector does),
- ``linear c=0.1``: lambda = 0.1 N,
- ``fixed 100``: lambda = 100 whatever N.

Measured (AMD EPYC, 2 shared vCPUs at load ~10; ``--rows 1000 2000 8000 32000 --seeds 2``)::

       rows   paper   linear cv   linear c=0.1   fixed 100   cv c (median)
       1000   0.167     0.118        0.086         0.086       2.1
       2000   0.177     0.098        0.060         0.061       1.6
       8000   0.256     0.069        0.048         0.045       0.66
      32000   0.753     0.070        0.048         0.048       0.66

Part 1 draws its rows independently (``regression_sampling="random"``);
Connector's default Sobol rows take most of the rows' noise out of nbar
(theory section 3, step 4).

Part 2 (``--connector``). Full Connector fits at the defaults (the default
marginal CNF, 4 x 128 trained 1,000 epochs; ``--epochs E`` uses a 3 x 64 CNF
trained E epochs instead; regression at its defaults: 1,000 rows, one
regression, 2,000 time points, c cross-validated; ``--samplings sobol
random`` compares the rows) to the ring and limit-cycle networks of
N = 5000, seeds 0-2. Each line gives the ring radius (mean over 64
directions of the radial-nullcline radius) or limit-cycle period relative
to the ground truth's mean field, of: the fitted network itself (its own
finite size, which the Connector learns as part of its dynamics) | the
learned distribution's mean field (the marginal at 2^16 Sobol base points,
n = nbar: the sampled networks as N grows) | one network of 20,000 neurons
sampled from the fit (which scatters by about 8% sqrt(1000 / N) around the
distribution's ring radius).

Measured (AMD EPYC, 2 shared vCPUs at load 4-8; ``--connector-only
--samplings sobol random``; 43-66 s CPU per fit, 19 min in all)::

      ring radius   sobol seed 0: -0.04% | +0.06% | -1.48%   (c 0.1, fit 66 s)
      ring radius   sobol seed 1: +2.20% | +2.13% | +0.53%   (c 0.1, fit 57 s)
      ring radius   sobol seed 2: +0.04% | +0.04% | -1.51%   (c 0.1, fit 56 s)
      ring radius  random seed 0: -0.04% | -0.31% | -1.59%   (c 10, fit 50 s)
      ring radius  random seed 1: +2.20% | +1.32% | +0.14%   (c 10, fit 52 s)
      ring radius  random seed 2: +0.04% | -3.34% | -4.52%   (c 1, fit 46 s)
     cycle period   sobol seed 0: -1.52% | -1.51% | -1.45%   (c 1, fit 43 s)
     cycle period   sobol seed 1: +1.30% | +1.36% | +1.49%   (c 3.16, fit 44 s)
     cycle period   sobol seed 2: +0.26% | +0.29% | +0.33%   (c 0.1, fit 46 s)
     cycle period  random seed 0: -1.52% | -1.36% | -1.31%   (c 10, fit 50 s)
     cycle period  random seed 1: +1.30% | +1.79% | +1.97%   (c 10, fit 56 s)
     cycle period  random seed 2: +0.26% | +0.68% | +0.80%   (c 3.16, fit 47 s)

With Sobol rows (the default) the learned distribution is within 0.1% of the
fitted network on every seed: what is left against the ground truth is the
fitted network's own finite size (ring seed 1: +2.2%). With random rows the
cross-validation picks c = 1-10 and the ring radius of seed 2 misses by 3.3%
(4.5% for its 20,000-neuron sample). Before Sobol rows (a 3 x 64 CNF trained
200 epochs, random rows): ring -1.6%, +0.3%, -4.6%; cycle -1.3%, +1.9%, +0.8%
(20,000-neuron samples).
"""

import argparse
import time

import numpy as np
from scipy.optimize import brentq

from connector_sim import find_limit_cycle, latent_flow
from connector_sim.inference.conditional_mean import fit_conditional_mean, regression_data
from connector_sim.inference.connector import sobol_normal
from connector_sim.mean_field import mean_field_trajectory
from connector_sim.synthetic import GAUSSIAN_OVERLAPS, gaussian_network_distribution, latent_grid, synthetic_network


def regression_problem(truth_neurons, mean_field, time_points):
    if mean_field:
        kappa = mean_field_trajectory(gaussian_network_distribution("limit_cycle"), latent_grid(20, 2.4), 100)
        rows = None
    else:
        truth = synthetic_network("limit_cycle", n_neurons=truth_neurons)
        kappa, rows = truth.trajectories, truth.network.m
    points, _, increments = regression_data(kappa, 0.1)
    groups = np.arange(len(points)) // (kappa.shape[1] - 1)
    keep = np.sort(np.random.default_rng(0).choice(len(points), time_points, replace=False))
    return points[keep], increments[keep], groups[keep], rows


def error_vs_rows(args):
    points, increments, groups, rows = regression_problem(args.truth_neurons, args.mean_field, args.time_points)
    m_test = np.random.default_rng(99).standard_normal((5000, 2))
    truth = m_test @ GAUSSIAN_OVERLAPS["limit_cycle"].T
    forms = {"paper": dict(ridge_scaling="paper"), "linear cv": dict(groups=groups, m_eval=rows),
             "linear c=0.1": dict(ridge_constant=0.1), "fixed 100": dict(ridge=100.0)}
    source = "mean field" if args.mean_field else f"N = {args.truth_neurons} network"
    print(f"error of nbar against E[n | m] = A m (limit cycle, {source}, {args.time_points} time points; "
          f"E|A m|^2 = 6.4), mean over seeds 0-{args.seeds - 1}")
    print(f"{'rows':>7} " + " ".join(f"{name:>14}" for name in forms) + f" {'cv c':>8} {'seconds':>8}")
    for n_rows in args.rows:
        errors = {name: [] for name in forms}
        chosen = []
        started = time.process_time()
        for seed in range(args.seeds):
            m = np.random.default_rng(seed).standard_normal((n_rows, 2))
            for name, options in forms.items():
                model = fit_conditional_mean(m, points, increments, **options)
                errors[name].append(np.mean((model(m_test) - truth) ** 2))
                if name == "linear cv":
                    chosen.append(model.ridge_constant)
        print(f"{n_rows:>7} " + " ".join(f"{np.mean(errors[name]):>14.4f}" for name in forms)
              + f" {np.median(chosen):>8.3g} {time.process_time() - started:>8.1f}", flush=True)


def radial_radius(velocity, n_angles=64):
    radii = [brentq(lambda r, e=np.array([np.cos(a), np.sin(a)]): velocity(r * e) @ e, 0.3, 2.0)
             for a in np.linspace(0, 2 * np.pi, n_angles, endpoint=False)]
    return float(np.mean(radii))


def learned_mean_field(connector, n_points=1 << 16):
    """The learned distribution's mean field: the marginal at scrambled Sobol base points, n = nbar (theory eq. 4)."""
    marginal = connector.marginal_
    rows = marginal.sample(n_points, x0=sobol_normal(n_points, int(marginal.free_.sum()), random_state=5))
    m, b = rows[:, :2], rows[:, 2]
    weighted_n = connector.conditional_mean(rows) / n_points
    return lambda kappa: -kappa + np.tanh(m @ kappa + b) @ weighted_n


def connector_fits(args):
    from connector_sim.inference import Connector

    settings = {} if args.epochs is None else dict(n_epochs=args.epochs, hidden=64, n_layers=3, batch_size=256,
                                                    learning_rate=2e-3)
    cnf = "default CNF (4 x 128, 1,000 epochs)" if args.epochs is None else f"3 x 64 CNF, {args.epochs} epochs"
    print(f"\nfull Connector fits ({cnf}; regression at its defaults unless stated), N = 5000 truth; error "
          "against the truth's mean field of: the fitted network itself | the learned distribution's mean field "
          "(2^16 Sobol rows, n = nbar) | one sampled network of 20,000 neurons")
    for name in ("ring", "limit_cycle"):
        true_flow = latent_flow(gaussian_network_distribution(name))

        def measure(flow, name=name):
            return radial_radius(flow) if name == "ring" else find_limit_cycle(flow, [1.0, 0.0]).period

        reference = measure(true_flow)
        quantity = "ring radius" if name == "ring" else "cycle period"
        for scaling in args.scalings:
            for sampling in args.samplings:
                for seed in range(args.seeds):
                    truth = synthetic_network(name, n_neurons=5000, random_state=seed)
                    started = time.process_time()
                    connector = Connector(ridge_scaling=scaling, regression_sampling=sampling, random_state=seed,
                                          device="cpu", **settings).fit(truth.network, truth.trajectories)
                    seconds = time.process_time() - started
                    values = [measure(latent_flow(truth.network)), measure(learned_mean_field(connector)),
                              measure(latent_flow(connector.sample(20_000, random_state=1)))]
                    print(f"{quantity:>13} {scaling:>7} {sampling:>7} seed {seed}: "
                          + " | ".join(f"{100 * (value / reference - 1):+.2f}%" for value in values)
                          + f"   (c {connector.ridge_constant_:.3g}, lambda {connector.ridge_lambda_:.3g}, "
                          f"fit {seconds:.0f} s CPU)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 2000, 4000, 8000, 16000, 32000])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--truth-neurons", type=int, default=5000)
    parser.add_argument("--mean-field", action="store_true", help="regress on the exact mean-field trajectories")
    parser.add_argument("--time-points", type=int, default=2000)
    parser.add_argument("--connector", action="store_true", help="also run the full Connector fits")
    parser.add_argument("--connector-only", action="store_true")
    parser.add_argument("--scalings", nargs="+", default=["linear"], choices=["linear", "paper"])
    parser.add_argument("--samplings", nargs="+", default=["sobol"], choices=["sobol", "random"],
                        help="Connector's regression_sampling")
    parser.add_argument("--epochs", type=int, default=None,
                        help="a 3 x 64 CNF trained this many epochs instead of the default CNF")
    args = parser.parse_args()
    if not args.connector_only:
        error_vs_rows(args)
    if args.connector or args.connector_only:
        connector_fits(args)


if __name__ == "__main__":
    main()
