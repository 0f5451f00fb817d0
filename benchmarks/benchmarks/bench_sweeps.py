"""Overhead of connector_sim.parallel per task: serial, a local process pool, a local Dask cluster.

Timed: a sweep of 100 no-op tasks (``abs`` of an int, so the time is the
scheduler's), wall clock (the work runs in other processes):

- ``serial``: the loop in this process;
- ``processes:2``: a spawn pool of 2 processes, made and shut down by the sweep
  (its start-up is part of every sweep that asks for "processes");
- ``dask``: a Client of a LocalCluster of 2 single-threaded worker processes
  made in ``setup`` (how an existing cluster is used; "dask" without an
  address adds the cluster's start-up, a few seconds, per sweep).

``track_task_bytes`` is what one task of :func:`connector_sim.perturbation_study`
sends (a seed and a perturbation index), whatever N. The side-by-side script is
``benchmarks/sweep_overhead.py`` (per task and per sweep).
"""

import logging
import pickle
import time

N_TASKS = 100


class TimeSweepOverhead:
    params = [["serial", "processes:2", "dask"]]
    param_names = ["scheduler"]
    timer = time.perf_counter
    timeout = 300
    number = 1
    repeat = 3

    def setup(self, scheduler):
        self.cluster = self.client = None
        self.scheduler = scheduler
        if scheduler == "dask":
            import distributed

            self.cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                    dashboard_address=":0", silence_logs=logging.ERROR)
            self.scheduler = self.client = distributed.Client(self.cluster)

    def teardown(self, scheduler):
        if self.client is not None:
            self.client.close()
            self.cluster.close()

    def time_noop_tasks(self, scheduler):
        from connector_sim.parallel import run_tasks

        run_tasks(abs, range(-N_TASKS, 0), scheduler=self.scheduler)


def track_task_bytes():
    """Bytes of one perturbation_study task (seed, perturbation index) for any N."""
    return len(pickle.dumps((0, 1)))


track_task_bytes.unit = "bytes"
