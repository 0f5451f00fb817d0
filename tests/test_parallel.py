"""Sweeps on processes and on Dask give the serial tables bit for bit, survive a killed worker, and fail clearly.

One module-scoped LocalCluster of 2 single-threaded worker processes serves the Dask tests (startup: a few
seconds). "Bit for bit" is checked on the raw bytes of the tables (NaN included), since every task's result
depends on its own description and seeds alone and the results are put back in task order.
"""

import contextlib
import io
import logging
import os
import pickle
import socket
import sys
import time

import numpy as np
import pytest

from connector_sim import Perturbation, perturbation_study
from connector_sim import sparse_dynamics as sd
from connector_sim.cell_types import find_cell_types
from connector_sim.cli import main
from connector_sim.data import save_arrays, save_network
from connector_sim.parallel import NetworkFile, SweepInterrupted, check_scheduler, fit_over_seeds, run_tasks
from connector_sim.synthetic import quadstable_mixture, quadstable_network

distributed = pytest.importorskip("distributed", reason="the Dask tests need dask[distributed] (the 'dask' extra)")

STARTS = np.array([[0.6, 0.4], [-0.5, 0.7], [0.3, -0.8]])
BOX = np.array([[-2.0, 2.0], [-2.0, 2.0]])
FIXED_POINTS = {"n_starts": 12}


@pytest.fixture(scope="module")
def client():
    import dask

    with dask.config.set({"distributed.logging.distributed": "error", "distributed.admin.tick.limit": "1h"}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


def same_table(a, b):
    """Equal rows, bit for bit (NaN included), and the same fixed points."""
    assert a.columns == b.columns and len(a) == len(b)
    assert a.to_records().tobytes() == b.to_records().tobytes()
    assert list(a.fixed_points) == list(b.fixed_points)
    for key in a.fixed_points:
        assert [p.position.tobytes() for p in a.fixed_points[key]] == [p.position.tobytes() for p in
                                                                         b.fixed_points[key]]


def study(source, scheduler, perturbations=None, **options):
    perturbations = perturbations or [Perturbation(name="control"), Perturbation.silence(cell_types=1),
                                      Perturbation.silence(fraction=0.3, start=20, stop=40)]
    return perturbation_study(source, perturbations, STARTS, n_steps=60, box=BOX,
                              fixed_point_options=FIXED_POINTS, scheduler=scheduler, **options)


# ------------------------------------------------------------------ the scheduler argument


@pytest.mark.parametrize("value, parsed", [
    (None, ("serial", None)), ("serial", ("serial", None)), ("processes", ("processes", None)),
    ("processes:3", ("processes", 3)), ("dask", ("dask", None)), ("dask:2", ("dask", 2)),
    ("dask://node1:8786", ("address", "tcp://node1:8786")), ("tcp://10.0.0.2:8786", ("address", "tcp://10.0.0.2:8786")),
])
def test_scheduler_values_are_parsed(value, parsed):
    assert check_scheduler(value) == parsed


@pytest.mark.parametrize("value", ["gpu", "processes:0", "processes:two", "dask:-1", "dask://", "node1:8786",
                                   "http://node1:8786", "dask:// x"])
def test_bad_scheduler_values_are_refused_before_any_work(value):
    calls = []
    with pytest.raises(ValueError, match=r"'scheduler' parameter of perturbation_study must be None, 'serial'"):
        perturbation_study(quadstable_mixture(), [Perturbation()], STARTS, n_neurons=50, scheduler=value,
                           progress=lambda *args: calls.append(args))
    with pytest.raises(TypeError, match="must be None, a str or a dask.distributed.Client. Got int"):
        run_tasks(abs, [1], scheduler=4)
    assert calls == []


def test_importing_the_package_imports_no_dask():
    import subprocess

    code = ("import sys, connector_sim, connector_sim.parallel, connector_sim.perturbations; "
            "print('dask' in sys.modules, 'distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_missing_dask_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ImportError, match=r"needs the dask and distributed packages.*pip install 'connector-sim\[dask\]'"):
        run_tasks(abs, [1, -2], scheduler="dask")
    assert run_tasks(abs, [1, -2], scheduler="serial") == [1, 2]  # nothing else needs it
    network, labels = quadstable_network(200, random_state=0)
    from connector_sim.data import save_network

    save_network(tmp_path / "net.npz", network, labels=labels)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["perturb", tmp_path / "net.npz", "--silence", "0", "--out", tmp_path / "p", "--scheduler",
                       "dask", "--quiet"])
    assert status == 2 and "pip install 'connector-sim[dask]'" in err.getvalue()
    assert not (tmp_path / "p.csv").exists()


def test_a_bad_address_fails_quickly_and_says_what_to_start():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(ConnectionError, match=rf"could not reach a Dask scheduler at tcp://127.0.0.1:{port} within "
                                              r"1 s.*dask scheduler"):
        run_tasks(abs, [1], scheduler=f"dask://127.0.0.1:{port}", connect_timeout=1.0)
    assert time.perf_counter() - started < 10  # the timeout, not a hang


def test_cli_refuses_a_bad_scheduler(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["perturb", tmp_path / "none.npz", "--silence", "0", "--out", tmp_path / "p",
                       "--scheduler", "cluster", "--quiet"])
    assert status == 2 and "--scheduler takes serial, processes[:N], dask[:N]" in err.getvalue()


# ------------------------------------------------------------------ same tables


def test_cli_perturb_of_a_network_file_on_dask_writes_the_serial_table(client, monkeypatch, tmp_path):
    import connector_sim.perturbations as module

    network, labels = quadstable_network(300, random_state=0)
    save_network(tmp_path / "net.npz", network, labels=labels)
    sources = []
    real = module.perturbation_study
    monkeypatch.setattr(module, "perturbation_study", lambda source, *a, **k: sources.append(source) or real(
        source, *a, **k))
    for name, extra in (("serial", []), ("dask", ["--scheduler", client.scheduler.address])):
        with contextlib.redirect_stdout(io.StringIO()):
            status = main(["perturb", tmp_path / "net.npz", "--silence", "1", "--grid", "2", "--n-steps", "60",
                           "--out", tmp_path / name, "--quiet", *extra])
        assert status == 0
    assert sources == [str(tmp_path / "net.npz")] * 2  # the workers read the file: its path is sent
    serial = (tmp_path / "serial.csv").read_text()
    assert len(serial.splitlines()) == 1 + 2 * 4 and serial == (tmp_path / "dask.csv").read_text()


def test_perturbation_study_on_processes_and_dask_equals_the_serial_table(client):
    # Distribution source: each task ships the mixture and a seed; the worker samples the network.
    serial = study(quadstable_mixture(), None, n_neurons=300, seeds=[0, 1])
    assert len(serial) == 2 * 3 * 3 and len({row["kappa_end_0"] for row in serial.rows}) > 1
    same_table(study(quadstable_mixture(), client, n_neurons=300, seeds=[0, 1]), serial)
    # The same cluster by its address, as a remote one is used.
    same_table(study(quadstable_mixture(), client.scheduler.address, n_neurons=300, seeds=[0, 1]), serial)
    same_table(study(quadstable_mixture(), "processes:2", n_neurons=300, seeds=[0, 1]), serial)
    # Network source (sent once to each worker), noisy runs keyed by the seeds.
    network, labels = quadstable_network(300, random_state=1)
    serial = study(network, None, labels=labels, seeds=[3, 4], noise_std=0.3, keep_trajectories=True)
    on_dask = study(network, client, labels=labels, seeds=[3, 4], noise_std=0.3, keep_trajectories=True)
    same_table(on_dask, serial)
    assert all(on_dask.trajectories[key].tobytes() == serial.trajectories[key].tobytes() for key in serial.trajectories)


# ------------------------------------------------------------------ a network saved to a file


def test_a_saved_network_path_gives_the_in_memory_table_on_every_scheduler(client, tmp_path):
    network, labels = quadstable_network(300, random_state=2)
    path = tmp_path / "net.npz"
    save_network(path, network, labels=labels)  # the file's labels give the cell types
    options = dict(seeds=[3], noise_std=0.3, keep_trajectories=True)
    serial = study(network, None, labels=labels, **options)
    for source, scheduler in ((path, None), (str(path), "processes:2"), (path, client)):
        table = study(source, scheduler, **options)
        same_table(table, serial)
        assert all(table.trajectories[key].tobytes() == serial.trajectories[key].tobytes()
                   for key in serial.trajectories)
    # The labels given override the file's (here: the cell types relabelled 3 - k).
    relabelled = [Perturbation(name="control"), Perturbation.silence(cell_types=2)]
    same_table(study(path, client, relabelled, labels=3 - labels, seeds=[3]),
               study(network, None, [Perturbation(name="control"), Perturbation.silence(cell_types=1, name="silence "
                                                                                        "cell type 2")],
                     labels=labels, seeds=[3]))


def shipped_bytes(monkeypatch, run):
    """Bytes perturbation_study hands to run_tasks: (per task, once per worker), pickled as a scheduler sends them."""
    import connector_sim.perturbations as module

    sizes = []

    def measured(function, tasks, *, shared, **options):
        sizes.append((max(len(pickle.dumps(task)) for task in tasks), len(pickle.dumps(shared))))
        return run_tasks(function, tasks, shared=shared, **options)

    monkeypatch.setattr(module, "run_tasks", measured)
    run()
    monkeypatch.undo()
    return sizes[0]


def test_a_path_source_ships_the_path_not_the_arrays_whatever_n(monkeypatch, tmp_path):
    sizes = {}
    for n in (200, 20_000):
        network, labels = quadstable_network(n, random_state=0)
        save_network(tmp_path / f"n{n:05d}.npz", network, labels=labels)  # paths of the same length
        sizes["file", n] = shipped_bytes(monkeypatch, lambda: study(tmp_path / f"n{n:05d}.npz", None,
                                                                     [Perturbation.silence(cell_types=1)]))
        sizes["memory", n] = shipped_bytes(monkeypatch, lambda: study(network, None, [Perturbation.silence(
            cell_types=1)], labels=labels))
    # A task is (seed, perturbation index); what goes once to each worker does not grow with N for a file
    # (path, checksum, perturbations, initial conditions, options: under 4 kB), while the network in memory
    # is 2 x 2 x 8 bytes of loadings plus 8 of labels per neuron.
    assert sizes["file", 200] == sizes["file", 20_000] and sizes["file", 200][0] < 32
    assert sizes["file", 200][1] < 4000 + len(str(tmp_path))
    assert sizes["memory", 20_000][1] - sizes["memory", 200][1] > 40 * (20_000 - 200)


def test_a_changed_network_file_is_never_served_stale(client, tmp_path):
    path = tmp_path / "net.npz"
    first, labels = quadstable_network(300, random_state=0)
    second, _ = quadstable_network(300, random_state=1)
    save_network(path, first, labels=labels)
    same_table(study(path, client), study(first, None, labels=labels))  # the workers now hold the first
    save_network(path, second, labels=labels)  # replaced (atomic write: a new file under the same name)
    same_table(study(path, client), study(second, None, labels=labels))
    # Rewritten in place with the same size and modification time: the checksum still tells.
    described = NetworkFile(path)
    assert described.load()[0].m.tobytes() == second.m.tobytes()
    before = os.stat(path)
    save_network(tmp_path / "first.npz", first, labels=labels)
    contents = (tmp_path / "first.npz").read_bytes()
    assert len(contents) == before.st_size
    with open(path, "r+b") as stream:
        stream.write(contents)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert NetworkFile(path).load()[0].m.tobytes() == first.m.tobytes()
    # A task described before the change refuses the new contents rather than mix two networks.
    with pytest.raises(ValueError, match="is not the file the sweep started with"):
        described.load()
    NetworkFile.forget()


def test_a_missing_or_unreadable_network_file_fails_before_any_work(client, tmp_path):
    calls = []
    save_arrays(tmp_path / "other.npz", x=np.zeros(3))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    cases = [(tmp_path / "missing.npz", FileNotFoundError, r"missing.npz', which is not an existing file"),
             (tmp_path / "other.npz", ValueError, r"lacks the key\(s\) \['m', 'n', 'tau', 'activation'\]"),
             (tmp_path / "broken.npz", ValueError, "is not a readable .npz archive of a low-rank network"),
             (tmp_path, FileNotFoundError, "which is not an existing file")]
    for source, error, message in cases:
        with pytest.raises(error, match=message):
            study(source, client, progress=lambda *args: calls.append(args))
    with pytest.raises(FileNotFoundError, match=r"The path 'none.npz'|given the path 'none.npz'"):
        sd.input_driven_sweep("none.npz", n_connections=[5], scheduler=client)
    assert calls == [] and not client.futures


def test_input_driven_sweep_from_a_saved_network_equals_the_in_memory_one(client, tmp_path):
    dense = sd.exact_rank_one(300, 0.02, 0.0, random_state=0, n_inputs=1, input_overlap=0.1)
    save_network(tmp_path / "dense.npz", dense)
    serial = sd.input_driven_sweep(dense, n_connections=[300, 5], n_steps=40)
    parallel = sd.input_driven_sweep(tmp_path / "dense.npz", n_connections=[300, 5], n_steps=40, scheduler=client)
    for name in ("kappa_r", "kappa_latent", "kappa_theory", "participation_ratio", "kappa_scale"):
        assert getattr(serial, name).tobytes() == getattr(parallel, name).tobytes(), name


def test_regime_diagram_on_dask_equals_the_serial_one(client):
    options = dict(n_neurons=400, n_connections=40, n_initial=2, n_discard=60, n_window=30)
    serial = sd.simulated_regime_diagram([0.01, 0.3], [0.0, 0.2], **options)
    parallel = sd.simulated_regime_diagram([0.01, 0.3], [0.0, 0.2], scheduler=client, **options)
    # decaying, chaotic, structured, and one point left out (|sigma_mn| >= sigma^2)
    assert serial.simulated.tolist() == [["decaying", "chaotic"], ["", "structured"]]
    assert parallel.simulated.tolist() == serial.simulated.tolist()
    for a, b in zip(sum(serial.results, []), sum(parallel.results, [])):
        assert (a is None) == (b is None)
        if a is not None:
            assert repr(a) == repr(b)  # every measured number, printed in full
    with pytest.raises(ValueError, match="'random_state' parameter of simulated_regime_diagram must be an int"):
        sd.simulated_regime_diagram([0.01], [0.0], random_state=np.random.default_rng(0), scheduler=client, **options)


def test_the_other_sweeps_on_dask_equal_their_serial_runs(client):
    dense = sd.exact_rank_one(300, 0.02, 0.0, random_state=0, n_inputs=1, input_overlap=0.1)
    serial = sd.input_driven_sweep(dense, n_connections=[300, 30, 5], n_steps=40)
    parallel = sd.input_driven_sweep(dense, n_connections=[300, 30, 5], n_steps=40, scheduler=client)
    for name in ("kappa_r", "kappa_latent", "kappa_theory", "participation_ratio", "kappa_scale"):
        assert getattr(serial, name).tobytes() == getattr(parallel, name).tobytes(), name
    options = dict(threshold=0.1, n_trials=20, n_steps=20, task_options={"variance": 0.05, "covariance": 0.03})
    serial = sd.psychometric_curves(300, [20, 40], [-0.2, 0.1, 0.4], **options)
    parallel = sd.psychometric_curves(300, [20, 40], [-0.2, 0.1, 0.4], scheduler=client, **options)
    assert [c.readout.tobytes() for c in serial] == [c.readout.tobytes() for c in parallel]
    samples = np.vstack([np.random.default_rng(0).normal(centre, 0.4, size=(40, 2)) for centre in (-2, 0, 2)])
    serial = find_cell_types(samples, k_range=range(1, 5), n_folds=3)
    parallel = find_cell_types(samples, k_range=range(1, 5), n_folds=3, scheduler=client)
    assert parallel.n_types == serial.n_types == 3 and parallel.labels.tolist() == serial.labels.tolist()
    for name, values in serial.scores.items():
        assert np.asarray(values).tobytes() == np.asarray(parallel.scores[name]).tobytes(), name


def test_the_dmf_phase_diagram_on_dask_equals_its_serial_run(client):
    from connector_sim.dmf import simulated_phase_diagram

    options = dict(n_neurons=200, lines=False, n_initial=2, n_discard=60, n_window=30)
    calls = []
    serial = simulated_phase_diagram([0.5, 2.5], [0.5, 2.5], **options)
    parallel = simulated_phase_diagram([0.5, 2.5], [0.5, 2.5], scheduler=client,
                                       progress=lambda done, total: calls.append((done, total)), **options)
    assert parallel.simulated.tolist() == serial.simulated.tolist()
    assert parallel.predicted.tolist() == serial.predicted.tolist()
    assert sorted(calls) == [(k, 4) for k in range(1, 5)]
    with pytest.raises(ValueError, match="must be an int"):
        simulated_phase_diagram([0.5], [0.5], random_state=np.random.default_rng(0), scheduler=client, **options)


def test_a_local_cluster_made_for_the_call_is_closed_after_it(client):
    import multiprocessing

    def dask_workers():
        return sorted(child.pid for child in multiprocessing.active_children() if "Dask" in child.name)

    before = dask_workers()  # the module's cluster
    calls = []
    assert run_tasks(abs, [-1, 2, -3], scheduler="dask:1", progress=lambda *args: calls.append(args)) == [1, 2, 3]
    assert sorted(call[0] for call in calls) == [1, 2, 3] and all(call[1] == 3 for call in calls)
    assert dask_workers() == before


class _Ridge:
    """A tiny estimator with a random_state: ridge regression on a random subsample (for fit_over_seeds)."""

    def __init__(self, alpha=1.0, random_state=None):
        self.alpha, self.random_state = alpha, random_state

    def fit(self, X, y):
        rows = np.random.default_rng(self.random_state).choice(len(X), len(X) // 2, replace=False)
        A = X[rows]
        self.coef_ = np.linalg.solve(A.T @ A + self.alpha * np.eye(X.shape[1]), A.T @ y[rows])
        return self


def test_fit_over_seeds_fits_one_copy_per_seed_on_any_scheduler(client):
    X = np.random.default_rng(1).normal(size=(60, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1 * np.random.default_rng(2).normal(size=60)
    template = _Ridge(alpha=0.1)
    serial = fit_over_seeds(template, X, y, seeds=[0, 1, 2])
    parallel = fit_over_seeds(template, X, y, seeds=[0, 1, 2], scheduler=client)
    assert [f.random_state for f in parallel] == [0, 1, 2] and not hasattr(template, "coef_")
    assert [f.coef_.tobytes() for f in serial] == [f.coef_.tobytes() for f in parallel]
    assert serial[0].coef_.tobytes() != serial[1].coef_.tobytes()  # the seeds matter
    np.testing.assert_allclose(serial[0].coef_, [1.0, -2.0, 0.5], atol=0.1)  # noise 0.1, 30 rows


# ------------------------------------------------------------------ progress, Ctrl-C, a killed worker


def test_ctrl_c_cancels_the_unfinished_tasks_and_returns_the_finished_rows(client):
    def interrupt(done, total, description):
        raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match=r"interrupted after 3 of 18 runs"):
        partial = study(quadstable_mixture(), client, n_neurons=300, seeds=[0, 1], progress=interrupt)
    assert partial.interrupted and len(partial) == 3
    deadline = time.monotonic() + 10
    while client.futures and time.monotonic() < deadline:  # cancelled and released
        time.sleep(0.05)
    assert not client.futures
    with pytest.raises(SweepInterrupted) as caught:
        run_tasks(abs, [1, -2, 3], progress=interrupt)
    assert caught.value.results == {0: 1} and caught.value.total == 3
    # A local pool: the queued tasks are cancelled and its processes stopped, not waited for.
    import multiprocessing

    before = set(multiprocessing.active_children())  # e.g. a worker another test's sweep left to exit on its own
    started = time.perf_counter()
    with pytest.raises(SweepInterrupted) as caught:
        run_tasks(time.sleep, [0.0] + [5.0] * 5, scheduler="processes:2", progress=interrupt)
    assert caught.value.results == {0: None} and time.perf_counter() - started < 5 + 10  # not 5 x 5 s

    def new_children():
        return [child for child in multiprocessing.active_children()
                if "Dask" not in child.name and child not in before]

    deadline = time.monotonic() + 2  # reaped within moments, well before a 5 s task could finish
    while new_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not new_children()


class KillWorkerOnce(Perturbation):
    """Silences cell type 2, but first kills the worker process running it, the first time only."""

    def __init__(self, marker, **options):
        super().__init__(cell_types=[2], **options)
        self.marker, self.home = str(marker), os.getpid()

    def unit_values(self, n_neurons, labels=None):
        if os.getpid() != self.home and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)  # the worker dies mid-sweep, as on a lost machine
        return super().unit_values(n_neurons, labels)


def test_a_worker_killed_mid_sweep_costs_only_its_tasks_and_the_table_is_the_same(client, tmp_path):
    perturbations = [Perturbation(name="control"), KillWorkerOnce(tmp_path / "killed", name="silence 2"),
                     Perturbation.silence(cell_types=1)]
    serial = study(quadstable_mixture(), None, perturbations, n_neurons=300, seeds=[0, 1])  # here: no kill
    pids = set(client.run(os.getpid).values())
    parallel = study(quadstable_mixture(), client, perturbations, n_neurons=300, seeds=[0, 1])
    assert (tmp_path / "killed").exists()  # a worker did die
    same_table(parallel, serial)
    client.wait_for_workers(2, timeout=30)  # the nanny restarted it
    assert len(set(client.run(os.getpid).values()) - pids) == 1


def _auto_threads_of_a_big_step(task):
    from connector_sim._threads import auto_threads

    return auto_threads(10**9)


def test_auto_threads_is_one_thread_in_a_dask_task_and_a_pool_task(client):
    # The workers already fill the cores: "auto" must not add threads of its own inside them.
    assert run_tasks(_auto_threads_of_a_big_step, [0, 1], scheduler=client) == [1, 1]
    assert run_tasks(_auto_threads_of_a_big_step, [0, 1], scheduler="processes:2") == [1, 1]
