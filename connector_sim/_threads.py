"""``n_threads="auto"``: more than one thread only where it pays and cores are free.

The compiled time loops split each step's neurons among the threads and meet
at a barrier once per step. A second thread pays only when

- a step holds enough work that the split saves more than the barrier costs
  (:data:`MIN_WORK_PER_THREAD` neuron-updates per thread and step, measured
  in ``benchmarks/compare_public_paths.py``), and
- the cores are free: a thread that the operating system deschedules holds
  every other thread at the barrier, so on a busy machine two threads ran
  2-4x slower than one.

The rule (:func:`auto_threads`)::

    cores   = CPUs this process may run on (os.sched_getaffinity)
    free    = cores - (1-minute load average - 1)   # the caller's own thread counts as free
    threads = min(floor(free), cores, work // MIN_WORK_PER_THREAD), at least 1

so a machine whose load average reaches its core count gets one thread, and
so does a small network. Inside a task of a parallel sweep
(:mod:`connector_sim.parallel`, on a process pool or Dask) "auto" is one
thread: the sweep's workers already fill the cores, and the load average
(a one-minute mean) sees them too late. An explicit int is used as given.

Measured (``benchmarks/compare_public_paths.py --blocks crossover``, float32,
rank 2, wall time per step, 2 vCPUs of an AVX-512 AMD EPYC at load 0.9): two
threads against one ran at 1.0x for N = 1e3-2e3, 1.2x for N = 5e3-1e4, and
1.4-1.9x from N = 2e4 to 4e5, on both the full and the latent path.
"""

import contextlib
import math
import os
import threading

#: Neuron-updates (trials x neurons of one step) per thread below which a
#: further thread does not pay enough: on an idle machine a second thread
#: broke even at 2e3 neurons and gave 1.2x at 5e3-1e4 and 1.4x or more from
#: 2e4 (module docstring); the threshold keeps a factor two of margin for the
#: barrier's jitter on a shared machine.
MIN_WORK_PER_THREAD = 10_000

#: The same for a sparse matrix-vector product of ``leading_eigenvalues``
#: (connections per thread): every ARPACK product starts and joins its threads,
#: and at 1e6 connections two threads measured 0.7-1.5x of one, so it keeps the
#: earlier, conservative 2e5.
MIN_CONNECTIONS_PER_THREAD = 200_000

_sweep_task = threading.local()


@contextlib.contextmanager
def one_thread_per_task():
    """Within the block, ``n_threads="auto"`` resolves to one thread (in this thread only)."""
    previous = getattr(_sweep_task, "active", False)
    _sweep_task.active = True
    try:
        yield
    finally:
        _sweep_task.active = previous


def available_cores():
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def free_cores():
    """Cores not busy with other work: affinity minus the 1-minute load average, plus the caller's own.

    The load average counts the runnable threads of every process, this one's
    calling thread included (it is running); so ``cores - (load - 1)``,
    never more than ``cores`` nor less than 0. Where the OS has no load
    average, one core (never oversubscribe when in doubt).
    """
    cores = available_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 1.0
    return float(min(cores, max(0.0, cores - max(0.0, load - 1.0))))


def auto_threads(work, min_work_per_thread=MIN_WORK_PER_THREAD):
    """Threads for a step of ``work`` neuron-updates: see the module docstring."""
    if getattr(_sweep_task, "active", False):
        return 1
    by_work = int(work // min_work_per_thread)
    return max(1, min(math.floor(free_cores()), available_cores(), by_work))


def resolve_n_threads(n_threads, work, min_work_per_thread=MIN_WORK_PER_THREAD):
    """``n_threads`` (already checked) as an int: "auto" resolved for a step of ``work`` neuron-updates."""
    return auto_threads(work, min_work_per_thread) if n_threads == "auto" else n_threads
