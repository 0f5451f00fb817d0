"""Benchmarks of the dynamic mean field of low-rank plus random networks (connector_sim/dmf.py).

Timed: the stationary solutions with their stability (every branch of a rank-one
network), the chaotic solutions (homogeneous and structured), the bulk line gB at
one structure, and one double Gaussian average of the chaotic equations, each with
the accurate rule (order 24, the solvers' default) and, for the average, the
plain Gauss-Hermite rule. Points: structure 3 along the means of m and n, g = 0.8
(static structured), g = 2.5 (structured chaos). CPU time (``time.process_time``):
steadier than wall time on a shared machine.
"""

import time

import numpy as np

from connector_sim import dmf
from connector_sim.mean_field import double_gaussian_average


class TimeSolvers:
    """The DMF solvers at one point each."""

    timer = time.process_time

    def setup(self):
        self.static = dmf.DMF(dmf.rank_one_structure(3.0), 0.8)
        self.chaotic = dmf.DMF(dmf.rank_one_structure(3.0), 2.5)

    def time_stationary_solutions(self):
        dmf.stationary_solutions(self.static)

    def time_chaotic_solutions(self):
        dmf.chaotic_solutions(self.chaotic)

    def time_bulk_line(self):
        dmf.critical_lines([3.0], g_max=4.0, tol=1e-3, chaotic_line=False)

    def track_structured_chaos_kappa(self):
        """kappa of the structured chaotic state (0.591): a speed-up must not move it."""
        return float(max(c.kappa[0] for c in dmf.chaotic_solutions(self.chaotic)))


class TimeDoubleAverage:
    """int Dz [int Dx Phi]^2 at 100 points (mu, s_static, s_fluctuating)."""

    timer = time.process_time
    params = [("accurate", 24), ("accurate", 64), ("hermite", 32)]
    param_names = ["rule_order"]

    def setup(self, rule_order):
        rng = np.random.default_rng(0)
        self.mu = rng.uniform(-1, 1, 100)
        self.s_static = rng.uniform(0.1, 2.0, 100)
        self.s_fluctuating = rng.uniform(0.2, 1.5, 100)

    def time_double_average(self, rule_order):
        rule, order = rule_order
        double_gaussian_average("tanh", "Phi", self.mu, self.s_static, self.s_fluctuating, rule=rule, order=order)
