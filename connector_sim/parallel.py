"""Where a sweep runs: serially, on local processes, or on a Dask cluster.

Every sweep of the package is a list of independent tasks, and every one of
them takes the same ``scheduler=`` argument, served by :func:`run_tasks`:

=============================  ==================================================
``scheduler``                  runs the tasks
=============================  ==================================================
``None`` or ``"serial"``       one after the other in this process (the default)
``"processes"``                on a local pool of processes
                               (``concurrent.futures``, one per CPU;
                               ``"processes:4"``: four)
``"dask"``                     on a ``dask.distributed.LocalCluster`` created for
                               the call and closed after it (``"dask:4"``: four
                               single-threaded worker processes)
``"dask://host:8786"``         on a running Dask scheduler (``"tcp://..."`` and
                               ``"tls://..."`` addresses are taken as they are)
a ``distributed.Client``       on that client's cluster (left open)
=============================  ==================================================

The sweeps that take it: :func:`connector_sim.perturbation_study`,
:func:`connector_sim.sparse_dynamics.simulated_regime_diagram`,
:func:`~connector_sim.sparse_dynamics.input_driven_sweep`,
:func:`~connector_sim.sparse_dynamics.psychometric_curves`,
:func:`connector_sim.find_cell_types` (one task per cluster count k) and
:func:`fit_over_seeds` (LINT, Connector or any estimator with a
``random_state``, one fit per seed).

Same numbers everywhere. A task is a compact description of one piece of
work (distribution parameters and a seed, a grid point, a cluster count, a
path to a network saved by :func:`connector_sim.data.save_network`), never
the arrays it makes: the worker rebuilds the network, so a sweep over a
network of 1e7 neurons sampled from a distribution moves a few hundred bytes
per task. :func:`~connector_sim.perturbation_study` and
:func:`~connector_sim.sparse_dynamics.input_driven_sweep` take such a path as
their network: it travels as a :class:`NetworkFile` (the path and a checksum)
and each worker process reads the file once. Each task's randomness is keyed by its own seeds (the sampling
seed, the counter-based private noise keyed by (seed, trial, step, unit),
the fixed-point search's ``random_state``), never by a generator shared
between tasks, and the results are put back in task order: the tables are
those of the serial run, bit for bit, whatever the scheduler, the number of
workers and the order in which the tasks finish (on one kind of CPU, with
the same backend; see the README on the compiled kernels). An object that
several tasks need (a network built in memory, the samples to cluster) goes
to each worker once (``shared=``; Dask: ``scatter(broadcast=True)``), not
with every task.

Progress: ``progress(done, total, description)`` is called as tasks finish,
in any scheduler (the command line draws a tqdm bar from it); with Dask the
dashboard link is printed on stderr when ``progress`` is given. Ctrl-C
cancels the tasks not yet finished (Dask: ``client.cancel``; processes:
the pool is shut down) and closes a cluster made for the call; the sweeps
return what finished, flagged as interrupted, where they did so serially.
Fault tolerance (Dask): a worker that dies costs only the tasks it was
running; the scheduler runs them again elsewhere (up to
``distributed.scheduler.allowed-failures`` times, 3 by default), and a task
that raises is retried ``retries`` times; since a task's result depends on
its description alone, the final table is the same. A local process pool
has no such recovery: a killed process stops the sweep with
``BrokenProcessPool``.

Adding a sweep (as ``dmf.simulated_phase_diagram`` does, one task per grid point): write
a module-level function ``task(description)`` (or ``task(description,
shared)``) that returns the result of one point from its description alone,
and call ``run_tasks(task, descriptions, scheduler=scheduler,
progress=progress)``; the results come back in the order of
``descriptions``.

Dask is an optional dependency (``pip install 'connector-sim[dask]'``);
importing this module does not import it.
"""

import contextlib
import copy
import hashlib
import os
import sys
import threading

from ._threads import one_thread_per_task

__all__ = ["NetworkFile", "SweepInterrupted", "check_scheduler", "fit_over_seeds", "require_dask", "run_tasks",
           "session"]

#: How to install the Dask extra, in the errors that need it.
DASK_INSTALL = "pip install 'connector-sim[dask]'  (or: pip install 'dask[distributed]')"


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_tasks`: the unfinished tasks were cancelled.

    Attributes
    ----------
    results : dict of int to object
        The results of the tasks that finished, by task index.
    total : int
        The number of tasks.
    """

    def __init__(self, results, total):
        super().__init__(f"interrupted after {len(results)} of {total} tasks")
        self.results = results
        self.total = total


def _scheduler_error(scheduler, owner):
    return ValueError(
        f"The 'scheduler' parameter of {owner} must be None, 'serial', 'processes' (or 'processes:N'), 'dask' (or "
        f"'dask:N'), a Dask scheduler address such as 'dask://host:8786' or 'tcp://host:8786', or a "
        f"dask.distributed.Client. Got {scheduler!r} instead."
    )


def _count(text, scheduler, owner):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text:
        raise _scheduler_error(scheduler, owner)
    return value


def _is_client(scheduler):
    module = type(scheduler).__module__ or ""
    return module.split(".")[0] == "distributed" and hasattr(scheduler, "submit") and hasattr(scheduler, "scatter")


def check_scheduler(scheduler, owner="run_tasks"):
    """Parse the ``scheduler`` argument of a sweep, without starting anything.

    Returns
    -------
    (kind, value) : tuple
        ``("serial", None)``, ``("processes", n_workers or None)``,
        ``("dask", n_workers or None)`` (a LocalCluster), ``("address", "tcp://...")``
        or ``("client", client)``.

    Raises
    ------
    ValueError, TypeError
        For anything else, saying what is accepted.
    """
    if scheduler is None:
        return ("serial", None)
    if _is_client(scheduler):
        return ("client", scheduler)
    if not isinstance(scheduler, str):
        raise TypeError(
            f"The 'scheduler' parameter of {owner} must be None, a str or a dask.distributed.Client. "
            f"Got {type(scheduler).__name__} instead."
        )
    text = scheduler.strip()
    lower = text.lower()
    if lower == "serial":
        return ("serial", None)
    for kind in ("processes", "dask"):
        if lower == kind:
            return (kind, None)
        if lower.startswith(kind + ":") and not lower.startswith("dask://"):
            return (kind, _count(text[len(kind) + 1:], scheduler, owner))
    if "://" in text:
        protocol, _, where = text.partition("://")
        if not where or where.startswith(":") or " " in where:
            raise _scheduler_error(scheduler, owner)
        if protocol.lower() == "dask":
            return ("address", "tcp://" + where)
        if protocol.lower() in ("tcp", "tls", "ucx", "ws", "wss", "inproc"):
            return ("address", text)
    raise _scheduler_error(scheduler, owner)


def require_dask(owner="run_tasks"):
    """Import and return ``distributed``, or raise an ImportError that says how to install it."""
    return _import_distributed(owner)


def _import_distributed(owner):
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"{owner} on Dask needs the dask and distributed packages, which are not installed: "
                          f"{DASK_INSTALL}. ({exc})") from exc
    return distributed


def _report(progress, done, total, description):
    if progress:
        progress(done, total, description)


def _print_progress(done, total, description):
    print(f"[sweep] {done}/{total} tasks: {description}", file=sys.stderr, flush=True)


def _check_progress(progress, owner):
    if progress is True:
        return _print_progress
    if progress is None or progress is False:
        return None
    if not callable(progress):
        raise TypeError(f"The 'progress' parameter of {owner} must be None, a bool or a callable "
                        f"progress(done, total, description). Got {progress!r} instead.")
    return progress


# Set in each worker process of the local pool by its initializer.
_WORKER_SHARED = None
_NO_SHARED = object()


def _set_worker_shared(shared):
    global _WORKER_SHARED
    _WORKER_SHARED = shared


def _call(function, task, shared=_NO_SHARED):
    return function(task) if shared is _NO_SHARED else function(task, shared)


def _call_in_worker(function, task, shared=_NO_SHARED):
    """A task on a Dask worker: ``n_threads="auto"`` means one thread there (the workers fill the cores)."""
    with one_thread_per_task():
        return _call(function, task, shared)


def _call_with_worker_shared(function, task, has_shared):
    with one_thread_per_task():
        return function(task, _WORKER_SHARED) if has_shared else function(task)


def run_tasks(function, tasks, *, scheduler=None, shared=_NO_SHARED, progress=None, describe=None, retries=1,
              connect_timeout=10.0, owner="run_tasks"):
    """``[function(task) for task in tasks]`` on the chosen scheduler, results in task order.

    Parameters
    ----------
    function : callable
        A module-level function (workers import it by name): ``function(task)``,
        or ``function(task, shared)`` when ``shared`` is given. Its result
        must depend on ``task`` (and ``shared``) alone.
    tasks : sequence
        Compact, picklable task descriptions.
    scheduler : None, str or dask.distributed.Client, default=None
        Where to run; see the module docstring.
    shared : object, optional
        One object all tasks need, sent once to each worker (not with each
        task).
    progress : None, bool or callable, default=None
        ``progress(done, total, description)`` after each finished task
        (True: a line on stderr). With Dask, also the dashboard link on stderr.
    describe : callable, optional
        ``describe(task)``: the description given to ``progress`` (default
        ``"task i"``).
    retries : int, default=1
        Dask: times a task that raised is run again before its error is
        raised here. (A task lost with its worker is rescheduled by Dask
        itself, whatever this is.)
    connect_timeout : float, default=10
        Seconds to reach a Dask scheduler given by address.
    owner : str
        The sweep's name, in error messages.

    Returns
    -------
    list
        One result per task, in the order of ``tasks``.

    Raises
    ------
    SweepInterrupted
        On Ctrl-C (a KeyboardInterrupt), with the finished results.
    ImportError
        If Dask is asked for and not installed (the message has the pip command).
    ConnectionError
        If no Dask scheduler answers at the address within ``connect_timeout``.

    Examples
    --------
    >>> run_tasks(abs, [-1, 2, -3])
    [1, 2, 3]
    >>> run_tasks(divmod, [7, 9], shared=4)  # divmod(task, shared)
    [(1, 3), (2, 1)]
    """
    kind, value = check_scheduler(scheduler, owner)
    progress = _check_progress(progress, owner)
    tasks = list(tasks)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"The 'retries' parameter of {owner} must be an int >= 0. Got {retries!r} instead.")
    describe = describe or (lambda task: None)
    if kind == "serial" or not tasks:
        return _run_serial(function, tasks, shared, progress, describe)
    if kind == "processes":
        return _run_processes(function, tasks, shared, progress, describe, value)
    return _run_dask(function, tasks, shared, progress, describe, kind, value, retries, connect_timeout, owner)


def _label(describe, task, index):
    text = describe(task)
    return f"task {index}" if text is None else text


def _run_serial(function, tasks, shared, progress, describe):
    results = {}
    try:
        for index, task in enumerate(tasks):
            results[index] = _call(function, task, shared)
            _report(progress, len(results), len(tasks), _label(describe, task, index))
    except KeyboardInterrupt as exc:
        raise SweepInterrupted(results, len(tasks)) from exc
    return [results[index] for index in range(len(tasks))]


def _run_processes(function, tasks, shared, progress, describe, n_workers):
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    n_workers = min(n_workers or os.cpu_count() or 1, len(tasks))
    has_shared = shared is not _NO_SHARED
    # spawn: a forked child of a process whose OpenMP or numba threads have run can hang.
    executor = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_set_worker_shared, initargs=(shared if has_shared else None,))
    results = {}
    try:
        pending = {executor.submit(_call_with_worker_shared, function, task, has_shared): index
                   for index, task in enumerate(tasks)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                results[index] = future.result()
                _report(progress, len(results), len(tasks), _label(describe, tasks[index], index))
    except KeyboardInterrupt as exc:
        _stop_pool(executor)
        raise SweepInterrupted(results, len(tasks)) from exc
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return [results[index] for index in range(len(tasks))]


def _stop_pool(executor):
    """Stop a process pool now: cancel what is queued, terminate the workers (a plain shutdown can hang after Ctrl-C)."""
    terminate = getattr(executor, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    executor.shutdown(wait=False, cancel_futures=True)
    # The pool may still be starting a worker: take those too.
    processes += [process for process in (getattr(executor, "_processes", None) or {}).values()
                  if process not in processes]
    for process in processes:
        process.terminate()
    # The pool's own thread sees the workers die and reaps them: let it finish first. Two threads
    # waiting on one child can leave it reaped but not yet marked as exited (still "active").
    if manager is not None:
        manager.join(10)
    for process in processes:
        process.join(5)
        if process.is_alive():  # SIGTERM not handled in time (e.g. a worker still importing on a loaded machine)
            process.kill()
            process.join(5)


def _dask_client(kind, value, connect_timeout, owner, progress):
    """(client, cluster or None, owned): the client to submit to, and whether we close it."""
    distributed = _import_distributed(owner)
    if kind == "client":
        return value, None, False
    if kind == "dask":
        # ":0": a free port (None would still take 8787, in use by any other local cluster).
        cluster = distributed.LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
        try:
            return distributed.Client(cluster), cluster, True
        except BaseException:
            cluster.close()
            raise
    try:
        client = distributed.Client(value, timeout=f"{float(connect_timeout)}s")
    except OSError as exc:  # timeouts and refused connections
        raise ConnectionError(
            f"{owner} could not reach a Dask scheduler at {value} within {float(connect_timeout):g} s ({exc}). "
            "Start one with `dask scheduler` (it prints its address, tcp://HOST:8786 by default), workers with "
            "`dask worker tcp://HOST:8786`, and check the host name, port and firewall."
        ) from None
    return client, None, True


def _run_dask(function, tasks, shared, progress, describe, kind, value, retries, connect_timeout, owner):
    import uuid

    client, cluster, owned = _dask_client(kind, value, connect_timeout, owner, progress)
    results = {}
    futures, extra = [], ()
    try:
        if progress and "dashboard" in client.scheduler_info().get("services", {}):
            print(f"[{owner}] Dask dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)
        if shared is not _NO_SHARED:
            # In a list: scatter would split a tuple or dict into one future per item.
            extra = (client.scatter([shared], broadcast=True, hash=False)[0],)
        token = uuid.uuid4().hex[:12]
        name = getattr(function, "__name__", "task")
        futures = [client.submit(_call_in_worker, function, task, *extra, key=f"{owner}-{name}-{token}-{index}",
                                 retries=retries, pure=False) for index, task in enumerate(tasks)]
        index_of = {future.key: index for index, future in enumerate(futures)}
        distributed = sys.modules["distributed"]
        # with_results: results fetched in batches as they finish (future.result() is a round trip each).
        for future, result in distributed.as_completed(futures, with_results=True):
            index = index_of[future.key]
            results[index] = result
            _report(progress, len(results), len(tasks), _label(describe, tasks[index], index))
    except KeyboardInterrupt as exc:
        client.cancel(futures)
        raise SweepInterrupted(results, len(tasks)) from exc
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        for future in [*futures, *extra]:  # finished or cancelled: the cluster may forget them
            future.release()
        del futures, extra
        if owned:
            client.close()
            if cluster is not None:
                cluster.close()
    return [results[index] for index in range(len(tasks))]


@contextlib.contextmanager
def session(scheduler=None, *, connect_timeout=10.0, owner="session"):
    """One cluster for several sweeps: ``with session("dask") as where: sweep(..., scheduler=where)``.

    For "dask" (a LocalCluster) and an address, connects once and yields a
    Client, closed (with the cluster it made) on leaving the block; any
    other value is checked and yielded as it is.

    Examples
    --------
    >>> with session("serial") as where:
    ...     run_tasks(abs, [-1, 2], scheduler=where)
    [1, 2]
    """
    kind, value = check_scheduler(scheduler, owner)
    if kind not in ("dask", "address"):
        yield scheduler
        return
    client, cluster, _ = _dask_client(kind, value, connect_timeout, owner, None)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ---------------------------------------------------------------- networks saved to a file


# Per process: the networks last loaded from files, keyed by (path, device, inode, size, mtime): a worker
# loads a file once for all the tasks of a sweep, and a file replaced or edited since is read again.
_FILE_CACHE = {}
_FILE_CACHE_SIZE = 2
_FILE_CACHE_LOCK = threading.Lock()


def _file_key(path):
    info = os.stat(path)
    return (path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _file_digest(path):
    """BLAKE2b (16 bytes) of the file's contents, read in 4 MiB blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class NetworkFile:
    """A network saved by :func:`connector_sim.data.save_network`, as the tasks of a sweep carry it.

    The description is the file's absolute path and a checksum of its
    contents (a few hundred bytes, whatever N); :meth:`load` reads the
    network where the task runs. Each process keeps the networks it last
    loaded (two at most), keyed by path, inode, size and modification time,
    so a worker reads the file once for all the tasks of a sweep, and a file
    rewritten since is read again. The checksum makes every load the file the
    sweep was started with: a worker that finds other contents (the file was
    changed during the sweep, or this machine has another copy under that
    path) raises instead of mixing two networks in one table. On a cluster
    the path must name the same file on every machine (a shared file system,
    or the same copy on each).

    Parameters
    ----------
    path : str or os.PathLike
        An ``.npz`` written by ``save_network`` (extra arrays such as
        ``labels`` come back from :meth:`load`).
    owner : str
        The sweep's name, in error messages.

    Attributes
    ----------
    path : str
        Absolute path.
    digest : str
        BLAKE2b checksum of the file's bytes when described.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an existing file.
    TypeError
        If ``path`` is not a str or os.PathLike.

    Examples
    --------
    >>> import os, tempfile
    >>> from connector_sim.data import save_network
    >>> from connector_sim.sparse import rank_one_gaussian
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "network.npz")
    >>> save_network(path, rank_one_gaussian(20, 1.0, 0.5, random_state=0))
    >>> network, extra = NetworkFile(path).load()
    >>> network.n_neurons, extra
    (20, {})
    >>> NetworkFile.forget(path)
    >>> folder.cleanup()
    """

    def __init__(self, path, *, owner="NetworkFile"):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"The 'path' parameter of {owner} must be a str or os.PathLike (a network .npz). "
                            f"Got {type(path).__name__} instead.")
        text = os.fspath(path)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        self.path = os.path.abspath(text)
        self.owner = owner
        if not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"{owner} was given the path {text!r}, which is not an existing file. A network given by its path "
                "must be an .npz written by connector_sim.data.save_network (or `connector-sim fit --network-out`)."
            )
        try:
            self.digest = _file_digest(self.path)
        except OSError as exc:
            raise ValueError(f"{owner} cannot read the network file {self.path!r} ({exc}).") from exc

    def __repr__(self):
        return f"NetworkFile({self.path!r})"

    def __eq__(self, other):
        return isinstance(other, NetworkFile) and (self.path, self.digest) == (other.path, other.digest)

    def __hash__(self):
        return hash((self.path, self.digest))

    def load(self):
        """``(network, extra)`` as :func:`connector_sim.data.load_network` returns them, from this process's cache.

        Raises
        ------
        FileNotFoundError
            If the file is gone.
        ValueError
            If the file is not a readable network, or its contents are not
            those it had when described (its checksum differs).
        """
        try:
            key = _file_key(self.path)
        except FileNotFoundError:
            raise FileNotFoundError(f"The network file {self.path!r} of {self.owner} does not exist on this "
                                    "machine (any more). On a cluster every worker must see it under that "
                                    "path (a shared file system).") from None
        with _FILE_CACHE_LOCK:  # held while reading: the other threads of a worker wait for the same file
            entry = _FILE_CACHE.get(key)
            if entry is None or entry[0] != self.digest:
                entry = _FILE_CACHE[key] = (self.digest, self._read(key))
                while len(_FILE_CACHE) > _FILE_CACHE_SIZE:
                    del _FILE_CACHE[next(iter(_FILE_CACHE))]
            return entry[1]

    def _read(self, key):
        """The network and extra arrays of the file, if its contents still have the checksum."""
        from .data import load_network

        if _file_digest(self.path) == self.digest:
            loaded = load_network(self.path, return_extra=True)
            if _file_key(self.path) == key:  # not replaced while it was read
                return loaded
        raise ValueError(
            f"The network file {self.path!r} of {self.owner} is not the file the sweep started with: its "
            "contents changed since (or this machine holds another copy under that path). A sweep's tables "
            "come from one network: write a changed network to a new file and start the sweep again."
        )

    @staticmethod
    def forget(path=None):
        """Drop the networks loaded from ``path`` (all of them: None) from this process's cache."""
        target = None if path is None else os.path.abspath(os.fspath(path))
        with _FILE_CACHE_LOCK:
            for key in [key for key in _FILE_CACHE if target is None or key[0] == target]:
                del _FILE_CACHE[key]


# ---------------------------------------------------------------- fits over seeds


def _fit_task(task, shared):
    template, seed, n_threads = task
    data, fit_options = shared
    estimator = copy.deepcopy(template)
    estimator.random_state = seed
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    if torch is not None and n_threads is not None:
        torch.set_num_threads(n_threads)
    try:
        return estimator.fit(*data, **fit_options)
    finally:
        if threads is not None:
            sys.modules["torch"].set_num_threads(threads)


def fit_over_seeds(estimator, *data, seeds, scheduler=None, progress=None, n_threads=1, fit_options=None):
    """Fit copies of an estimator, one per seed, on the same data: the spread of a fit over its randomness.

    Each fit is ``copy.deepcopy(estimator)`` with ``random_state = seed``,
    then ``.fit(*data, **fit_options)``: LINT, VelocityMatching, Connector,
    FlowMatchingCNF, DynamicCompressionFlow, or any estimator that keeps its
    randomness in ``random_state``. The data go to each worker once.

    Parameters
    ----------
    estimator : estimator
        The unfitted template (its ``callback``, if any, must be picklable to
        run on processes or Dask).
    *data
        The arguments of ``fit``.
    seeds : sequence of int
    scheduler : None, str or dask.distributed.Client, default=None
        Where to run (module docstring).
    progress : None, bool or callable, default=None
        ``progress(done, total, "seed S")`` as fits finish.
    n_threads : int or None, default=1
        torch threads during each fit (restored after). The fits are the
        same bit for bit on every scheduler only with the same thread count
        (reductions split across threads round differently); None leaves the
        setting alone.
    fit_options : dict, optional
        Keyword arguments of ``fit``.

    Returns
    -------
    list
        The fitted estimators, in the order of ``seeds``.
    """
    seeds = list(seeds) if not isinstance(seeds, int) else [seeds]
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise TypeError(f"The 'seeds' parameter of fit_over_seeds must be a non-empty sequence of int. "
                        f"Got {seeds!r} instead.")
    if not hasattr(estimator, "fit") or not hasattr(estimator, "random_state"):
        raise TypeError(f"The 'estimator' parameter of fit_over_seeds must have fit() and a random_state attribute. "
                        f"Got {type(estimator).__name__} instead.")
    tasks = [(estimator, int(seed), n_threads) for seed in seeds]
    return run_tasks(_fit_task, tasks, scheduler=scheduler, shared=(data, dict(fit_options or {})),
                     progress=progress, describe=lambda task: f"seed {task[1]}", owner="fit_over_seeds")
