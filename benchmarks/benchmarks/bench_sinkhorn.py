"""Benchmarks of the Sinkhorn divergence (connector_sim/inference/distances.py).

Two different 2-D clouds of n points (x ~ N(0, I); y ~ (N(1, 0.5^2), N(0, 1.5^2))), blur 0.05. Timed: the
converged default (``method="newton"``, tol=1e-5) and GeomLoss's solver at scaling 0.9 (the earlier
default); ``track_`` reports each one's relative error against the default at tol=1e-10, so a faster solver
that is less accurate shows in the same table. CPU, one thread, CPU time.
"""

import time

import numpy as np


def _clouds(n):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 2)), np.c_[rng.standard_normal(n) * 0.5 + 1.0, rng.standard_normal(n) * 1.5]


METHODS = {"newton": {}, "geomloss-0.9": {"method": "geomloss", "scaling": 0.9}}


class TimeSinkhorn:
    params = [[200, 1000], list(METHODS)]
    param_names = ["n", "method"]
    timer = time.process_time
    timeout = 600

    def setup(self, n, method):
        self.x, self.y = _clouds(n)

    def time_sinkhorn_divergence(self, n, method):
        from connector_sim.inference import sinkhorn_divergence

        sinkhorn_divergence(self.x, self.y, **METHODS[method])


class TrackSinkhornError:
    params = [[200], list(METHODS)]
    param_names = ["n", "method"]
    unit = "relative error"
    timeout = 600

    def setup(self, n, method):
        from connector_sim.inference import sinkhorn_divergence

        self.x, self.y = _clouds(n)
        self.reference = sinkhorn_divergence(self.x, self.y, tol=1e-10, max_iter=500)

    def track_relative_error(self, n, method):
        from connector_sim.inference import sinkhorn_divergence

        return abs(sinkhorn_divergence(self.x, self.y, **METHODS[method]) - self.reference) / self.reference
