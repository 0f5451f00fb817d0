"""Per-task and per-sweep overhead of connector_sim.parallel: serial vs a local process pool vs local Dask.

A sweep of n no-op tasks (``abs`` of an int: the cost is the scheduler's alone) is
timed for n = 20 and n = 400; per task = (t400 - t20) / 380, per sweep (start-up,
shut-down) = t20 - 20 x per task. Wall-clock time (the work happens in other
processes), median of ``--repeat`` interleaved repeats. Schedulers:

- serial;
- "processes:2": a spawn pool of 2 processes made and shut down by each sweep;
- Dask, existing cluster: a Client of a LocalCluster of 2 single-threaded worker
  processes made once (how a cluster by address is used);
- "dask:2": a LocalCluster made and closed by each sweep (``--with-startup``).

Also printed: the bytes each perturbation_study task sends for a network of N
neurons sampled on the worker (a distribution and a seed) against the network itself.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/sweep_overhead.py [--repeat 3] [--with-startup]
"""

import argparse
import logging
import pickle
import statistics
import time


def sweep_seconds(scheduler, n_tasks):
    from connector_sim.parallel import run_tasks

    started = time.perf_counter()
    run_tasks(abs, range(-n_tasks, 0), scheduler=scheduler)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--with-startup", action="store_true", help="also time 'dask:2' (a cluster per sweep)")
    arguments = parser.parse_args()

    import distributed
    import numpy as np

    from connector_sim.synthetic import quadstable_mixture

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    schedulers = {"serial": "serial", "processes:2": "processes:2", "dask (existing 2-worker cluster)": client}
    if arguments.with_startup:
        schedulers["dask:2 (cluster per sweep)"] = "dask:2"
    times = {(name, n): [] for name in schedulers for n in (20, 400)}
    try:
        for _ in range(arguments.repeat):  # interleaved
            for name, scheduler in schedulers.items():
                for n in (20, 400):
                    times[name, n].append(sweep_seconds(scheduler, n))
    finally:
        client.close()
        cluster.close()
    print(f"{'scheduler':36s} {'per task':>12s} {'per sweep':>12s}   (medians of {arguments.repeat}, wall clock)")
    for name in schedulers:
        t20, t400 = (statistics.median(times[name, n]) for n in (20, 400))
        per_task = (t400 - t20) / 380
        print(f"{name:36s} {per_task * 1e6:9.1f} us {max(t20 - 20 * per_task, 0) * 1e3:9.0f} ms")

    mixture = quadstable_mixture()
    task = (0, 1)  # (seed, perturbation index): what each task of perturbation_study sends
    context = pickle.dumps(mixture)  # sent once per worker, with the study's settings
    for n_neurons in (10**5, 10**7):
        network_bytes = 4 * n_neurons * (2 * mixture.layout.rank) + 8 * n_neurons  # float32 m, n; labels
        print(f"N = {n_neurons:.0e}: per task {len(pickle.dumps(task))} B, per worker ~{len(context)} B "
              f"(the mixture), against {network_bytes / 1e6:.0f} MB for the sampled network itself")
    del np


if __name__ == "__main__":
    main()
