"""Run by tests/test_distributed.py under ``mpiexec -n P``: simulate one network, write rank 0's results.

Usage: python run_distributed.py OUT.npz [--dtype float32] [--backend cpp|numpy]
Writes kappa and potentials of a full-path run (noise, a clamp, an input,
recorded units on several ranks) and of a latent-path run, plus this rank's
slice bounds and loadings (OUT.rank<r>.npz for every rank).
"""

import sys

import numpy as np

from connector_sim.distributed import DistributedNetwork, simulate_distributed
from connector_sim.distributions import Gaussian

out = sys.argv[1]
dtype = np.float32 if "--dtype=float32" in sys.argv else np.float64
backend = "numpy" if "--backend=numpy" in sys.argv else "cpp"
N = 3 * 4096 + 1000  # four blocks, the last partial
cov = np.eye(5) + 0.6 * np.eye(5, k=2) + 0.6 * np.eye(5, k=-2)  # rows (m1, m2, n1, n2, I)
distribution = Gaussian(np.zeros(5), cov, rank=2, n_inputs=1)
network = DistributedNetwork.from_distribution(distribution, N, seed=11, dtype=dtype)
units = np.array([5, 4096 * 3 + 7, 4100, 0, 9000])
clamp = {"units": np.arange(4000, 4200), "value": 0.0, "start": 10, "stop": 30}
inputs = np.zeros((40, 1))
inputs[5:15] = 0.5
kappa0 = [[1.0, -0.5], [-0.3, 0.8]]
full = simulate_distributed(network, dt=0.1, inputs=inputs, kappa0=kappa0, noise_std=0.3, seed=4,
                            record_units=units, clamp=clamp, backend=backend)
latent = simulate_distributed(network, dt=0.1, inputs=inputs, kappa0=kappa0, record_units=units, clamp=clamp,
                              backend=backend)
local = network.local
np.savez(f"{out}.rank{network.mpi_rank}.npz", start=network.start, stop=network.stop, m=local.m, n=local.n,
         I=local.I, final_state=full.final_state)
if network.mpi_rank == 0:
    np.savez(out, kappa_full=full.kappa, potentials_full=full.potentials, rates_full=full.rates,
             kappa_latent=latent.kappa, potentials_latent=latent.potentials, rates_latent=latent.rates,
             n_ranks=network.n_ranks, units=full.units)
