"""Benchmarks of the regime classifier of sparse low-rank networks (connector_sim/sparse_dynamics.py).

One timed call is :func:`connector_sim.sparse_dynamics.simulated_regime` at one
point of the phase diagram: sample a rank-one network with C = 100 connections
per row (P_ij = X_ij m_i n_j), simulate 4 initial conditions for 300 + 100
Euler steps on the sparse kernels of ``simulate`` (one thread) and classify the
activity. CPU time (``time.process_time``) is timed: on this shared machine it
is far steadier than wall time. The points sit well inside each regime of the
theory (Herbert & Ostojic Fig. 5), and ``track_agrees_with_theory`` reports
whether the simulated regime is the predicted one, so a speed-up that breaks
the dynamics shows in the same table.
"""

import time
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a backend not built shows as skipped (n/a)
    import connector_sim
from connector_sim import sparse_dynamics
from connector_sim._backends import extension_built

BACKENDS = ["cpp", "numba"]
N_CONNECTIONS = 100
#: (sigma^2, sigma_mn) well inside each regime: (lambda_1, R) ~ (0.2, 0.7), (6, 1.1), (0.2, 3).
POINTS = {"decaying": (0.07, 0.002), "structured": (0.07, 0.06), "chaotic": (0.3, 0.002)}


def require_backend(backend):
    """asv's skip idiom: NotImplementedError in setup marks the benchmark skipped."""
    if backend not in connector_sim.available_backends():
        raise NotImplementedError(f"backend {backend!r} is not built here")
    if backend == "cpp" and not extension_built("_simulate_sparse_cpp"):
        raise NotImplementedError("the sparse C++ module is not built here")


class TimeSimulatedRegime:
    """simulated_regime at one point (N neurons, C = 100, 4 initial conditions, 400 steps)."""

    params = (BACKENDS, list(POINTS), [4000, 20000])
    param_names = ["backend", "regime", "n_neurons"]
    timer = time.process_time
    timeout = 300

    def setup(self, backend, regime, n_neurons):
        require_backend(backend)
        # numba compiles (or loads its cache) outside the timed call.
        sparse_dynamics.simulated_regime(0.07, 0.002, n_neurons=200, n_connections=20, backend=backend,
                                         n_discard=2, n_window=2)
        self.variance, self.covariance = POINTS[regime]

    def time_simulated_regime(self, backend, regime, n_neurons):
        sparse_dynamics.simulated_regime(self.variance, self.covariance, n_neurons=n_neurons,
                                         n_connections=N_CONNECTIONS, backend=backend)

    def track_agrees_with_theory(self, backend, regime, n_neurons):
        result = sparse_dynamics.simulated_regime(self.variance, self.covariance, n_neurons=n_neurons,
                                                  n_connections=N_CONNECTIONS, backend=backend)
        return float(result.regime == result.predicted == regime)

    track_agrees_with_theory.unit = "1 if simulated == predicted"
