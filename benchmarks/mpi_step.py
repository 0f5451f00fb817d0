"""Step time and memory per process of one network on P MPI processes (connector_sim.distributed).

Run::

    mpiexec -n P python benchmarks/mpi_step.py --n-neurons 10000000 --steps 20

(``mpiexec`` is the one of the ``mpich`` wheel, beside the venv's python, after
``pip install "connector_sim[mpi]"``.) Every process samples its slice of a
rank-2 Gaussian network (float32, D = 0), runs ``--steps`` steps of the latent
path and of the full path with private noise (one trial each, one thread per
process), and rank 0 prints one JSON line per path: per process, CPU seconds
per step (``time.process_time``, steadier than wall time on a shared machine),
wall seconds per step, the wall time of the exact reduction alone, and the
peak resident memory.

Measured (AMD EPYC with AVX-512, 2 vCPUs shared with other jobs, load average
10-12 during the runs, so P = 2 competes for the two cores; N = 1e7, float32,
R = 2, one trial, medians of 20 steps; ``--steps 20``)::

    P  path         CPU s/step/process  wall s/step  reduction (wall)  peak RSS/process
    1  latent       0.0093              0.024        0.07 ms           0.31 GB
    1  full+noise   0.019               0.040        0.07 ms           0.35 GB
    2  latent       0.0048              0.018        0.12 ms           0.22 GB
    2  full+noise   0.0098              0.030        0.14 ms           0.24 GB

and N = 1e8 (float32) on P = 2: 0.047 s (latent) and 0.095 s (full+noise) of
CPU per step and process, peak RSS 1.1 GB per process (loadings 16 B and x 4 B
per neuron, plus about 100 MB of sampling temporaries and the interpreter).
The work per process halves from P = 1 to P = 2 (CPU time per step and
process 0.0093 -> 0.0048 s): the split is exact, the reduction is a tenth of
a millisecond. Wall time does not halve here: the two processes share two
vCPUs with eight other engineers' jobs.

Cost model for P = 100 machines (one process per core, c cores per machine
would divide each number by c). Per step and process:

- compute: N / P neurons at about 0.9 ns (latent) and 1.9 ns (full path
  with noise) per neuron and step on one core (the CPU times above,
  N = 1e7), so at N = 1e10, P = 100: 1e8 neurons, 0.09 s (latent) and
  0.19 s (full) per step;
- the reduction: each process sums its N / (4096 P) block sums exactly
  (``math.fsum`` residuals: about 25k blocks x 2 at N / P = 1e8, 2-3 ms in
  Python), then one allgather of P x (B R) expansions of 1-3 float64 each:
  with a latency of alpha per message (1-5 us on InfiniBand, 20-50 us on
  Ethernet) and log2(P) = 7 rounds of a recursive-doubling allgather, 7
  alpha + P B R 24 bytes / bandwidth = 0.05-0.4 ms, plus pickling (about
  0.1 ms for P = 100 small lists). Communication is below 1 % of the step
  whenever N / P >= 1e6; with B trials the fsum part grows as B R N / (4096 P)
  and the message as P B R.

What fits: a process needs (2 R + D + 1) itemsize bytes per neuron for the
loadings, plus itemsize B per neuron for x on the full path (none on the
latent path), plus about 0.2 GB. float32, R = 2, D = 0, B = 1: 24 B per
neuron on the full path, 20 B on the latent path. A 24 GB machine with
about 20 GB usable holds about 8e8 neurons (full path) or 1e9 (latent), so
N = 1e10 needs about 13 such machines (10 on the latent path), and P = 100
machines hold N = 8e10 (float64: half of each).
"""

import argparse
import json
import resource
import time

import numpy as np

from connector_sim.distributed import DistributedNetwork, _mpi, exact_sum, simulate_distributed
from connector_sim.distributions import Gaussian

COV = np.diag([1.0, 1.0, 4.0, 4.0]) + 1.6 * (np.eye(4, k=2) + np.eye(4, k=-2)) / 2  # rows (m1, m2, n1, n2)


def _per_step_times(network, path, n_steps):
    """(CPU seconds per step, wall seconds per step) of one simulate_distributed call."""
    kwargs = dict(kappa0=[1.0, -0.5], path="full" if path == "full+noise" else "latent",
                  noise_std=0.5 if path == "full+noise" else 0.0, seed=0)
    simulate_distributed(network, 2, **kwargs)  # warm-up
    network.comm.Barrier()
    cpu = time.process_time()
    result = simulate_distributed(network, n_steps, **kwargs)
    return (time.process_time() - cpu) / n_steps, result.wall_time / n_steps


def _reduction_time(network, repeats=50):
    """Wall seconds of one exact reduction of this process's (n_blocks, 1, 2) block sums (median)."""
    n_blocks = -(-(network.stop - network.start) // 4096)
    partial = np.random.default_rng(network.mpi_rank).standard_normal((n_blocks, 1, 2))
    times = []
    for _ in range(repeats):
        network.comm.Barrier()
        start = time.perf_counter()
        exact_sum(partial, network.comm)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-neurons", type=float, default=1e7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--paths", default="latent,full+noise")
    arguments = parser.parse_args(argv)
    comm = _mpi().COMM_WORLD
    n_neurons = int(arguments.n_neurons)
    started = time.perf_counter()
    network = DistributedNetwork.from_distribution(Gaussian(np.zeros(4), COV, rank=2), n_neurons, seed=0,
                                                   comm=comm, dtype=np.dtype(arguments.dtype))
    sampling = time.perf_counter() - started
    reduction = _reduction_time(network)
    for path in arguments.paths.split(","):
        cpu, wall = _per_step_times(network, path, arguments.steps)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB
        rows = comm.gather(dict(cpu=cpu, wall=wall, peak_gb=peak, reduction_ms=1e3 * reduction,
                                sampling_s=sampling), root=0)
        if comm.Get_rank() == 0:
            print(json.dumps(dict(n_ranks=comm.Get_size(), n_neurons=n_neurons, dtype=arguments.dtype, path=path,
                                  steps=arguments.steps, per_process=rows)), flush=True)


if __name__ == "__main__":
    main()
