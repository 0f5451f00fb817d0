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

Measured (AMD EPYC with AVX-512, 2 vCPUs shared with other engineers' jobs,
load average 11-13 during every run, so the two processes of P = 2 compete
with about ten others for two cores: compare CPU times, not wall times;
float32, R = 2, D = 0, one trial, one thread per process)::

    N    P  path        CPU s/step/process  wall s/step  reduction (wall)  peak RSS/process
    1e7  1  latent      0.0081              0.037        0.06 ms           0.34 GB
    1e7  1  full+noise  0.015               0.075                          0.34 GB
    1e7  2  latent      0.0047-0.0054       0.023        0.065 ms          0.21 GB
    1e7  2  full+noise  0.0086-0.0091       0.043                          0.21 GB
    1e8  1  latent      0.119               0.56         0.18 ms           2.81 GB
    1e8  1  full+noise  0.190               0.87                           2.81 GB
    1e8  2  latent      0.056-0.076         0.25-0.44    5 ms              1.44 GB
    1e8  2  full+noise  0.086-0.123         0.60                           1.44 GB

(``--steps 20`` at 1e7, ``--steps 10`` at 1e8; two runs at N = 1e8, P = 2,
the second beside a documentation build: ranges. The reduction's wall time
at P = 2 is mostly waiting for the other, descheduled process. Sampling the
slices: 14 s at 1e7 on one process, 8.8 s on each of two; 129 s and 79 s at
1e8.) The work per process halves from P = 1 to P = 2: the split is exact
and the reduction is a fraction of a millisecond of work; wall time does not
halve on this overloaded machine. Peak memory is about 28 bytes per neuron:
16 for m and n, 4 for x, 4 for the latent path's final state, and the
sampling temporaries (about 0.1 GB), plus the interpreter and MPI (0.1 GB).

Cost model for P = 100 machines (one process per core, c cores per machine
would divide each number by c). Per step and process:

- compute: N / P neurons at about 1.0 ns (latent) and 1.7 ns (full path
  with noise) per neuron and step on one core (the CPU times above at
  P = 1), so at N = 1e10, P = 100: 1e8 neurons per process, 0.1 s (latent)
  and 0.17-0.19 s (full) per step;
- the reduction: each process sums its N / (4096 P) block sums exactly
  (vectorised error-free extraction: 0.18 ms for the 24,000 blocks of 1e8
  neurons, one trial), then one allgather of P x (B R) expansions of 2-3
  float64 each: with a latency alpha per message (1-5 us on InfiniBand,
  20-50 us on Ethernet) and log2(P) = 7 rounds of a recursive-doubling
  allgather, 7 alpha + P B R 24 bytes / bandwidth = 0.01-0.4 ms, plus
  pickling and summing P B R small lists in Python (about 0.2 ms for
  P = 100, B = 1). Communication is below 1 % of the step whenever
  N / P >= 1e6; with B trials the extraction grows as B R N / (4096 P)
  (2 s for B = 400 at N / P = 1e8, against 20-40 s of compute) and the
  message as P B R.
- stragglers: every step waits for the slowest process, so the processes
  must hold equal slices (they do, to one block) on equally loaded cores.

What fits: a process needs (2 R + D + 1) itemsize bytes per neuron for the
loadings, plus B itemsize bytes per neuron for x (full path) or for the
final state (latent path), plus about 0.3 GB. float32, R = 2, D = 0, B = 1:
about 24-28 bytes per neuron with temporaries (28 measured). A 24 GB machine
with about 20 GB usable holds about 7e8 neurons, so N = 1e10 needs about 15
such machines, and P = 100 machines hold N = 7e10 (float64: half of each;
B trials add 4 B bytes per neuron).
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
