"""Overhead of connector_sim.parallel per task: serial, a local process pool, a local Dask cluster.

Timed: a sweep of 100 no-op tasks (``abs`` of an int, so the time is the
scheduler's), wall clock (the work runs in other processes):

- ``serial``: the loop in this process;
- ``processes:2``: a spawn pool of 2 processes, made and shut down by the sweep
  (its start-up is part of every sweep that asks for "processes");
- ``dask``: a Client of a LocalCluster of 2 single-threaded worker processes
  made in ``setup`` (how an existing cluster is used; "dask" without an
  address adds the cluster's start-up, a few seconds, per sweep).

``track_task_bytes`` is what :func:`connector_sim.perturbation_study` sends,
pickled as a scheduler sends it, for a network of N = 100,000 neurons: per task
(a seed and a perturbation index) and once to each worker (the study's shared
context), for each kind of source: a distribution and seeds, the path of a
network file (the workers read it), a network in memory (its arrays go to each
worker). Only the last grows with N. The side-by-side script is
``benchmarks/sweep_overhead.py`` (per task and per sweep).
"""

import logging
import os
import pickle
import tempfile
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


class _Measured(Exception):
    pass


def track_task_bytes(source, sent):
    """Bytes perturbation_study sends for N = 100,000: per task, or once per worker (shared context)."""
    import connector_sim.perturbations as module
    from connector_sim.data import save_network
    from connector_sim.synthetic import quadstable_mixture, quadstable_network

    n_neurons = 100_000
    sizes = {}

    def measured(function, tasks, *, shared, **options):  # records, then stops the study before any run
        sizes["per task"] = max(len(pickle.dumps(task)) for task in tasks)
        sizes["per worker"] = len(pickle.dumps(shared))
        raise _Measured

    options = {"n_neurons": n_neurons} if source == "distribution" else {}
    with tempfile.TemporaryDirectory() as folder:
        if source == "distribution":
            study_source = quadstable_mixture()
        else:
            network, labels = quadstable_network(n_neurons, random_state=0)
            study_source = network
            options["labels"] = labels
            if source == "network file":
                study_source = os.path.join(folder, "network.npz")
                save_network(study_source, network, labels=labels)
                del options["labels"]  # read from the file
        real, module.run_tasks = module.run_tasks, measured
        try:
            module.perturbation_study(study_source, [module.Perturbation(name="control"),
                                                     module.Perturbation.silence(cell_types=1)],
                                      [[0.5, 0.5]], seeds=[0, 1], n_steps=10, **options)
        except _Measured:
            pass
        finally:
            module.run_tasks = real
    return sizes[sent]


track_task_bytes.params = [["distribution", "network file", "network in memory"], ["per task", "per worker"]]
track_task_bytes.param_names = ["source", "sent"]
track_task_bytes.unit = "bytes"
