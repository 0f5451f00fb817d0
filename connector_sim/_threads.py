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
so does a small network. An explicit int is used as given.
"""

import math
import os

#: Neuron-updates (trials x neurons of one step) per thread below which a
#: further thread does not pay: below ~2e5 the per-step barrier (a few
#: microseconds, more when a thread wakes late) costs more than the split saves.
MIN_WORK_PER_THREAD = 200_000


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


def auto_threads(work):
    """Threads for a step of ``work`` neuron-updates: see the module docstring."""
    by_work = int(work // MIN_WORK_PER_THREAD)
    return max(1, min(math.floor(free_cores()), available_cores(), by_work))


def resolve_n_threads(n_threads, work):
    """``n_threads`` (already checked) as an int: "auto" resolved for a step of ``work`` neuron-updates."""
    return auto_threads(work) if n_threads == "auto" else n_threads
