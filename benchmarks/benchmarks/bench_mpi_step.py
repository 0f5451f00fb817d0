"""Benchmarks of the distributed simulation (connector_sim.distributed) on one MPI process.

asv runs each benchmark in a process of its own, so these time the MPI step on
``MPI.COMM_SELF`` (one rank: the compiled one-step kernels, the exact
reduction and the Python loop around them, but no network). The multi-process
numbers (P = 1, 2, N = 1e7-1e8) and the cost model for P = 100 are in
``benchmarks/mpi_step.py``, run under ``mpiexec -n P``. Skipped without mpi4py
(``pip install "connector_sim[mpi]"``) or without the cpp backend.
"""

import importlib.util
import time

import numpy as np

import connector_sim
from connector_sim.distributions import Gaussian

STEPS = 10
COV = np.diag([1.0, 1.0, 4.0, 4.0]) + 0.8 * (np.eye(4, k=2) + np.eye(4, k=-2))  # rows (m1, m2, n1, n2)


def _require_mpi():
    """asv's skip idiom: NotImplementedError in setup marks the benchmark skipped."""
    if importlib.util.find_spec("mpi4py") is None:
        raise NotImplementedError('mpi4py is not installed (pip install "connector_sim[mpi]")')
    if "cpp" not in connector_sim.available_backends():
        raise NotImplementedError("the cpp backend is not built here")
    from mpi4py import MPI

    return MPI


class TimeMPIStep:
    """``STEPS`` steps of simulate_distributed (float32, rank 2, one trial) on one process."""

    params = ([1_000_000], ["latent", "full+noise"])
    param_names = ["n_neurons", "path"]
    timer = time.process_time
    timeout = 120

    def setup(self, n_neurons, path):
        MPI = _require_mpi()
        from connector_sim.distributed import DistributedNetwork, simulate_distributed

        network = DistributedNetwork.from_distribution(Gaussian(np.zeros(4), COV, rank=2), n_neurons, seed=0,
                                                       comm=MPI.COMM_SELF, dtype=np.float32)
        noisy = path == "full+noise"
        kwargs = dict(kappa0=[1.0, -0.5], path="full" if noisy else "latent", noise_std=0.5 if noisy else 0.0, seed=0)
        self.run = lambda: simulate_distributed(network, STEPS, **kwargs)
        self.run()  # warm-up: pages touched once

    def time_steps(self, n_neurons, path):
        self.run()


class TimeExactReduction:
    """One exact reduction of the block sums of a slice of n_neurons (one trial, R = 2), on one process."""

    params = [10_000_000, 100_000_000]
    param_names = ["n_neurons_per_process"]
    timer = time.process_time

    def setup(self, n_neurons):
        MPI = _require_mpi()
        from connector_sim.distributed import exact_sum

        partial = np.random.default_rng(0).standard_normal((-(-n_neurons // 4096), 1, 2))
        self.run = lambda: exact_sum(partial, MPI.COMM_SELF)

    def time_reduction(self, n_neurons):
        self.run()
