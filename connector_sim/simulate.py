"""Simulate a low-rank RNN by forward Euler (theory section 1).

    x_{t+1} = x_t + alpha (-x_t + m n^T phi(x_t) / N + I u_t + b)
              + sqrt(alpha) sigma xi_t,        alpha = dt / tau
"""

import math
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _backends
from ._kernels import simulate_dense
from ._kernels.affine_state import affine_state
from ._memory import aligned_empty, available_memory, check_allocation
from ._threads import resolve_n_threads
from ._validation import (
    check_array,
    check_dtype,
    check_int,
    check_n_threads,
    check_nonnegative_scalar,
    check_positive_scalar,
    check_seed,
)
from .activations import apply_activation
from .input_noise import check_input_noise, noisy_inputs
from .network import LowRankRNN
from .sparse import SparseLowRankRNN

PATHS = ("auto", "full", "latent")
ON_NONFINITE = ("warn", "raise")


class NonFiniteStateWarning(RuntimeWarning):
    """The simulated state stopped being finite (the dynamics diverged).

    Emitted once per :func:`simulate` call by every backend, naming the first
    time step (and trial) at which the latents, or on the full path the
    potentials, held inf or NaN. ``simulate(..., on_nonfinite="raise")``
    raises ``FloatingPointError`` with the same message instead.
    """


@dataclass
class SimulationResult:
    """What :func:`simulate` recorded.

    Attributes
    ----------
    kappa : ndarray of shape (n_trials, n_steps + 1, rank), float64
        Latents: x_t = m kappa_t + I v_t + b + (1 - alpha)^t xperp + noise
        part (theory eq. 2-3); row 0 is the initial state.
    v : ndarray of shape (n_trials or 1, n_steps + 1, n_inputs), float64
        Low-pass filtered inputs, v_{t+1} = (1 - alpha) v_t + alpha u_t.
    time : ndarray of shape (n_steps + 1,)
        t * dt.
    units : ndarray of shape (n_recorded,) or None
        Indices of the recorded units.
    potentials : ndarray of shape (n_trials, n_steps + 1, n_recorded) or None
        x of the recorded units, in the simulation dtype.
    path : {"full", "latent"}
    backend : str
    dtype : numpy.dtype
    seed : int
        Key of the private noise (see :func:`connector_sim.private_noise`).
    alpha : float
    wall_time : float
        Seconds spent in the kernel.
    n_threads : int
        Threads the kernels ran on (``n_threads="auto"`` resolved).

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import LowRankRNN, simulate
    >>> network = LowRankRNN(np.ones((4, 1)), np.full((4, 1), 2.0))
    >>> result = simulate(network, 10, kappa0=[[0.1], [-0.1]], record_units=[0])
    >>> result.kappa.shape, result.potentials.shape, float(result.time[-1])  # (n_trials, T + 1, R), units
    ((2, 11, 1), (2, 11, 1), 1.0)
    """

    kappa: np.ndarray
    v: np.ndarray
    time: np.ndarray
    units: np.ndarray
    potentials: np.ndarray
    path: str
    backend: str
    dtype: np.dtype
    seed: int
    alpha: float
    wall_time: float
    network: LowRankRNN = field(repr=False)
    _final_state: object = field(repr=False)
    _clamp: tuple = field(repr=False)
    n_threads: int = 1

    @property
    def n_trials(self):
        return self.kappa.shape[0]

    @property
    def rates(self):
        """phi(potentials) of the recorded units (clamped units at their clamp values)."""
        if self.potentials is None:
            return None
        rates = apply_activation(self.network.activation, self.potentials)
        mask, value, start, stop = self._clamp
        if mask is not None:
            clamped = mask[self.units]
            window = slice(start, min(stop, rates.shape[1]))
            rates[:, window, clamped] = value[self.units][clamped]
        return rates

    @property
    def final_state(self):
        """x at the last step, shape (n_trials, n_neurons) (built on first access on the latent path)."""
        if callable(self._final_state):
            B, N = self.kappa.shape[0], self.network.n_neurons
            R, D = self.network.rank, self.network.n_inputs
            check_allocation(
                B * N * (np.dtype(self.dtype).itemsize + 8 * 2) + 8 * N * (R + D + 1),
                f"final_state ({B} trial(s) x {N} neurons, rebuilt from the latents)",
                "Read the potentials of fewer units: simulate with record_units=[...] (result.potentials[:, -1]), "
                "or with fewer trials.",
            )
            with np.errstate(over="ignore", invalid="ignore"):
                state = self._final_state()
            if not np.all(np.isfinite(state)):
                warnings.warn(NonFiniteStateWarning(
                    f"final_state is not finite: m kappa + I v + b at the last step overflows {np.dtype(self.dtype)} "
                    "(or the run diverged). Simulate in float64, with smaller loadings, or with a smaller dt."),
                    stacklevel=2)
            self._final_state = state
        return self._final_state


def _batch_size(named_arrays, n_trials):
    """The common trial count of the batched arguments (leading axis)."""
    sizes = {name: array.shape[0] for name, array in named_arrays if array is not None}
    if n_trials is not None:
        sizes["n_trials"] = n_trials
    distinct = set(sizes.values())
    if len(distinct) > 1:
        listed = ", ".join(f"{name}: {size}" for name, size in sizes.items())
        raise ValueError(
            f"The batched arguments disagree on the number of trials ({listed}). "
            "Give every batched argument the same leading size, or leave it unbatched to share it across trials."
        )
    return distinct.pop() if distinct else 1


def _leading(array, batched_ndim):
    """(array with a trial axis, whether it was batched)."""
    if array is None:
        return None, False
    if array.ndim == batched_ndim:
        return array, True
    return array[None], False


def _available_memory():
    """The memory available (``connector_sim._memory.available_memory``)."""
    return available_memory()


def _record_indices(record_units, n_neurons, name="record_units"):
    if record_units is None:
        return np.zeros(0, np.int64)
    if isinstance(record_units, str):
        if record_units != "all":
            raise ValueError(f"{name} must be None, 'all' or an array of unit indices. Got {record_units!r}.")
        return np.arange(n_neurons, dtype=np.int64)
    try:
        units = np.asarray(record_units)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise ValueError(f"{name} must be None, 'all' or a 1-D array of unit indices. Got {record_units!r}.") from exc
    if units.ndim == 1 and units.size == 0:
        return np.zeros(0, np.int64)  # an empty list records (or clamps) nothing
    if units.ndim != 1 or not (np.issubdtype(units.dtype, np.integer) or units.dtype == bool):
        raise ValueError(
            f"{name} must be a 1-D array of integer unit indices (or a boolean mask of length {n_neurons}). "
            f"Got an array of dtype {units.dtype} and shape {units.shape}."
        )
    if units.dtype == bool:
        if units.shape[0] != n_neurons:
            raise ValueError(f"A boolean {name} mask must have length {n_neurons}. Got {units.shape[0]}.")
        return np.flatnonzero(units).astype(np.int64)
    if units.size and (units.min() < 0 or units.max() >= n_neurons):
        raise ValueError(
            f"{name} must be indices in [0, {n_neurons - 1}]. Got values in [{units.min()}, {units.max()}]."
        )
    return units.astype(np.int64)


def _check_memory(n_trials, n_times, n_units, dtype, max_record_bytes):
    """Refuse a recording larger than ``max_record_bytes`` (default half the available memory)."""
    if max_record_bytes is not None:
        max_record_bytes = check_nonnegative_scalar(max_record_bytes, "max_record_bytes")
    needed = int(n_trials) * int(n_times) * int(n_units) * np.dtype(dtype).itemsize
    limit = max_record_bytes if max_record_bytes is not None else available_memory() // 2
    check_allocation(
        needed, f"Recording {n_units} units over {n_times} time points and {n_trials} trial(s)",
        "The latents kappa are always recorded; record fewer units (record_units=[...]), fewer steps or "
        "fewer trials instead.",
        available=limit,
        limit_text="the max_record_bytes given" if max_record_bytes is not None else "half the available memory",
    )


def _check_simulation_memory(B, Bv, T, N, R, D, n_units, dtype, path, has_x0, has_inputs, backend="cpp"):
    """Refuse, before any work, a simulation whose arrays would not fit in memory.

    Counts what :func:`simulate` allocates at once: kappa (B, T + 1, R), the
    filtered inputs v (Bv, T + 1, D) and the inputs, the recorded potentials,
    the time axis and, on the full path, the state x (B, N) (on the latent
    path with x0, the part xperp of x0 outside span(m) and its float64
    temporaries). The NumPy reference also builds (B, N) temporaries at
    every step, which the compiled kernels do block by block.
    """
    B, Bv, T, N, R, D, n_units = (int(value) for value in (B, Bv, T, N, R, D, n_units))
    itemsize = np.dtype(dtype).itemsize
    n_times = T + 1
    needed = 8 * (B * n_times * R + Bv * n_times * D + n_times * 2) + itemsize * B * n_times * n_units
    if not has_inputs:
        needed += 8 * Bv * T * D
    if path == "full":
        needed += itemsize * B * N  # x (its initial value is formed block by block, no float64 copy)
    elif has_x0:
        needed += (itemsize + 3 * 8) * B * N  # xperp and the least-squares temporaries
    if backend == "numpy":
        needed += 3 * 8 * B * N  # the reference's whole-state temporaries (z or x, phi, n^T phi)
    check_allocation(
        needed, f"Simulating {B} trial(s) of {T} steps (N = {N}, R = {R}, D = {D}, {path} path)",
        "Use fewer trials (n_trials, or a smaller batch of x0 / kappa0 / inputs), fewer steps (n_steps), "
        "or split the simulation into several calls.",
    )


def _choose_backend(backend, activation, sparse=False):
    available = _backends.available_backends()
    if sparse and not _backends.extension_built("_simulate_sparse_cpp"):
        available = [name for name in available if name != "cpp"]
    builtin = isinstance(activation, str)
    if backend == "auto":
        if not builtin:
            if "numba" not in available:
                raise ValueError("A user-supplied activation needs the numba backend, which is not installed.")
            return "numba"
        return available[0]
    if backend not in _backends.BACKEND_PREFERENCE:
        raise ValueError(f"Unknown backend {backend!r}. Expected 'auto' or one of {list(_backends.BACKEND_PREFERENCE)}.")
    if backend not in available:
        raise ValueError(f"The {backend!r} backend is not available here. Available backends: {available}.")
    if not builtin and backend != "numba":
        raise ValueError(
            f"A user-supplied (numba) activation runs on the numba backend only; got backend={backend!r}. "
            "Use backend='numba' or 'auto'."
        )
    return backend


def _check_clamp(clamp, n_neurons, n_steps, dtype):
    """(mask, values, start, stop) from a perturbation spec (see :func:`simulate`)."""
    if clamp is None:
        return None, None, 0, 0
    if not isinstance(clamp, dict) or "units" not in clamp:
        raise TypeError(
            "clamp must be a dict like {'units': indices or mask, 'value': 0.0, 'start': 0, 'stop': None}. "
            f"Got {clamp!r}."
        )
    unknown = set(clamp) - {"units", "value", "start", "stop"}
    if unknown:
        raise ValueError(f"Unknown clamp keys {sorted(unknown)}. Expected 'units', 'value', 'start', 'stop'.")
    units = _record_indices(clamp["units"], n_neurons, "clamp['units']")
    mask = np.zeros(n_neurons, bool)
    mask[units] = True
    value = clamp.get("value", 0.0)
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(
            f"clamp['value'] must be a number or one number per clamped unit ({len(units)}). Got {value!r}."
        )
    value = _as_array(value, "clamp['value']")
    value = check_array(value, "clamp['value']", ndim=value.ndim, dtype=np.float64)
    values = np.zeros(n_neurons, dtype)
    if value.ndim == 0:
        values[units] = value
    elif value.shape == (len(units),):
        values[units] = value
    else:
        raise ValueError(
            f"clamp['value'] must be a scalar or one value per clamped unit ({len(units)}). Got shape {value.shape}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("clamp['value'] must be finite.")
    start = check_int(clamp.get("start", 0), "clamp['start']", minimum=0)
    stop = clamp.get("stop")
    stop = n_steps + 1 if stop is None else check_int(stop, "clamp['stop']", minimum=start)
    return mask, values, start, stop


def _inputs_and_steps(inputs, n_steps, D, owner):
    """Validated inputs ((T, D) or (n_trials, T, D), float64, or None) and the number of steps T they fix."""
    if inputs is not None:
        inputs = _as_array(inputs, "inputs")
        if inputs.ndim not in (2, 3):
            raise ValueError(
                f"inputs must have shape (T, D) or (n_trials, T, D) with D = {D}. Got shape {inputs.shape}."
            )
        inputs = check_array(inputs, "inputs", ndim=inputs.ndim, dtype=np.float64,
                             shape=(None,) * (inputs.ndim - 1) + (D,))
        T = inputs.shape[-2]
        if T == 0:
            raise ValueError(
                f"inputs must have at least one time step (shape (T, D) or (n_trials, T, D) with T >= 1). "
                f"Got shape {inputs.shape}. Give inputs of length n_steps, or omit them and give n_steps."
            )
        if n_steps is not None and check_int(n_steps, "n_steps", minimum=1, owner=owner) != T:
            raise ValueError(f"n_steps = {n_steps} disagrees with inputs, which have {T} time steps.")
        return inputs, T
    if n_steps is None:
        raise ValueError("Give n_steps (or inputs, whose length sets it).")
    return None, check_int(n_steps, "n_steps", minimum=1, owner=owner)


def _as_array(value, name):
    """``np.asarray(value)``, with a clear error for ragged nested lists and other non-arrays."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{name} must be an array of numbers (a regular, non-ragged nested list or an ndarray). "
            f"Could not convert the given {type(value).__name__}: {exc}"
        ) from exc


def _optional_state(value, name, size, keep_float32=False):
    """An optional initial state of shape (size,) or (n_trials, size), as float64.

    With ``keep_float32``, a float32 array stays float32 (no float64 copy of
    a float32 x0 of size N: the full path reads it block by block).
    """
    if value is None:
        return None
    value = _as_array(value, name)
    if value.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape ({size},) or (n_trials, {size}). Got shape {value.shape}.")
    dtype = np.float32 if keep_float32 and value.dtype == np.float32 else np.float64
    return check_array(value, name, ndim=value.ndim, dtype=dtype, shape=(None,) * (value.ndim - 1) + (size,))


def simulate(network, n_steps=None, *, dt=None, inputs=None, x0=None, kappa0=None, v0=None,
             n_trials=None, noise_std=0.0, seed=None, record_units=None, clamp=None,
             path="auto", backend="auto", n_threads="auto", max_record_bytes=None, input_noise=None,
             on_nonfinite="warn", progress=None, comm=None):
    """Simulate a :class:`LowRankRNN` or :class:`SparseLowRankRNN` by forward Euler.

    ::

        x_{t+1} = x_t + alpha (-x_t + m n^T phi(x_t) / N + I u_t + b) + sqrt(alpha) sigma xi_t

    with alpha = dt / tau. Several trials (initial conditions and/or input
    sequences) run in one pass, sharing each read of the loadings.

    Without private noise the state stays on x_t = m kappa_t + I v_t + b
    + (1 - alpha)^t xperp (theory eq. 2-3), and the *latent path* advances only
    kappa: O(N R) work per step and no per-neuron state. It is exact, chosen
    automatically, and can be forced either way with ``path``.

    Parameters
    ----------
    network : LowRankRNN or SparseLowRankRNN
        A sparse network (P_ij = w X_ij m_i . n_j) always takes the full
        path; its kappa is the mean-field latent, low-pass filtered
        ``gain * n^T phi(x) / N`` (see :class:`SparseLowRankRNN`), equal to
        the dense one when s = 0.
    n_steps : int, optional
        Number of Euler steps T. Taken from ``inputs`` when they are given.
    dt : float, optional
        Time step, in the unit of ``network.tau``. Default ``tau / 10``
        (alpha = 0.1, the Connector paper's value).
    inputs : array-like of shape (T, D) or (n_trials, T, D), optional
        u_t. Shared by all trials when 2-D. Zero when omitted.
    x0 : array-like of shape (N,) or (n_trials, N), optional
        Initial potentials. Its part outside span(m, I) is carried exactly.
    kappa0 : array-like of shape (R,) or (n_trials, R), optional
        Initial latents (x_0 = m kappa0 + I v0 + b). Default zero. Not with ``x0``.
    v0 : array-like of shape (D,) or (n_trials, D), optional
        Initial filtered input. Default zero.
    n_trials : int, optional
        Number of trials when no argument is batched (e.g. noise seeds).
    noise_std : float, default=0
        sigma of the private noise; each step adds sqrt(alpha) * sigma * xi.
    seed : int, optional
        Key of the counter-based noise generator: trial b, step t, unit i
        get the same xi whatever the thread count, the other trials and the
        chunking (bitwise, for one backend and dtype); backends agree to
        1e-14 in float64 and 2e-6 in float32 (see
        :func:`connector_sim.private_noise`). Drawn at random when None (and
        stored in the result).
    record_units : None, "all", array of int or bool mask, optional
        Units whose potentials are recorded at every step. "all" records the
        full (T + 1) x N state, if it fits in memory.
    clamp : dict, optional
        Perturbation: ``{"units": indices or mask, "value": 0.0 (scalar or per
        unit), "start": 0, "stop": None}`` replaces phi(x_i) by the value at
        steps start <= t < stop (value 0 silences).
    path : {"auto", "full", "latent"}, default="auto"
        "auto" takes the latent path when there is no private noise.
    backend : {"auto", "cpp", "numba", "numpy"}, default="auto"
        "numpy" is the reference; "auto" takes the fastest built one for
        the case (``connector_sim._backends.auto_backend``: "cpp", except
        "numba" for a sparse network with a fixed number of connections per
        row and one trial of rank one, where it measured faster).
    n_threads : "auto" or int, default="auto"
        Threads of the compiled kernels: an int in [1, MAX_THREADS] (four per
        CPU, at least 64), or "auto": more than one only where it pays, that
        is when each thread gets at least 1e4 neuron-updates per step
        (n_trials x N) and cores are free (CPUs in the affinity mask minus
        the load average; one thread on a busy machine, and inside a task
        of a parallel sweep), see ``connector_sim._threads``. Results do not depend on it; the count
        used is ``result.n_threads``.
    max_record_bytes : int or float, optional
        Largest recording allowed, in bytes; default half the available
        memory. Every other array is checked against the memory available
        before any work (see ``connector_sim._memory``); a refusal raises
        ``connector_sim.TooLargeError`` (a MemoryError and a ValueError).
    input_noise : float, array-like of shape (D,) or (D, D), optional
        White noise through the input loadings: each step adds
        sqrt(alpha) I S eta_t, eta_t ~ N(0, I_D) keyed by (seed, trial, step,
        input channel) on a stream apart from the private noise (scalar:
        S = sigma I_D; vector: diagonal S). Exact on the latent path (the
        recorded ``v`` carries it); see :mod:`connector_sim.input_noise`.
    on_nonfinite : {"warn", "raise"}, default="warn"
        What to do when the dynamics diverge (the state holds inf or NaN):
        "warn" emits one :class:`NonFiniteStateWarning` naming the first time
        step and trial where the latents kappa (or, on the full path, the
        potentials x, checked every few steps) stopped being
        finite, and returns the result; "raise" raises ``FloatingPointError``
        with that message as soon as it is found. Every backend reports
        divergence this way.
    progress : None, bool or callable, optional
        Long runs advance in chunks of steps (about a fifth of a second of
        work each; results do not depend on the chunking), returning to
        Python in between, so Ctrl-C (KeyboardInterrupt) stops them within
        about a second. After each chunk a callable is called as
        ``progress(steps_done, n_steps)``; True prints a line to stderr.
    comm : mpi4py.MPI.Intracomm, optional
        Run one network on the processes of an MPI communicator (e.g.
        ``MPI.COMM_WORLD`` under ``mpirun -n P``), each holding a slice of
        the neurons: :func:`connector_sim.distributed.simulate_distributed`
        (``network`` a :class:`~connector_sim.distributed.DistributedNetwork`,
        or a LowRankRNN that every rank holds and slices). Needs mpi4py
        (``pip install "connector_sim[mpi]"``).

    Returns
    -------
    SimulationResult

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN or SparseLowRankRNN, or an int
        option (``n_steps``, ``n_trials``, ``seed``, ``n_threads``) is not an int.
    ValueError
        If an array has the wrong shape, both ``x0`` and ``kappa0`` are given,
        neither ``n_steps`` nor ``inputs`` is given, or an option is unknown or
        out of range (``path``, ``backend``, ``on_nonfinite``, ``clamp``, ...).
    TooLargeError
        If the recording or the working arrays would not fit in memory (or
        ``max_record_bytes``).
    FloatingPointError
        With ``on_nonfinite="raise"``, when the state stops being finite.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import LowRankRNN
    >>> network = LowRankRNN(np.ones((4, 1)), np.full((4, 1), 2.0))  # kappa' = -kappa + 2 tanh(kappa)
    >>> result = simulate(network, 50, kappa0=[0.1])
    >>> result.kappa.shape  # (n_trials, n_steps + 1, rank)
    (1, 51, 1)
    >>> round(float(result.kappa[0, -1, 0]), 4)  # on its way to the fixed point 1.915
    1.7425
    """
    if comm is not None or type(network).__name__ == "DistributedNetwork":
        from . import distributed

        if comm is not None:
            comm = distributed._check_comm(comm, "simulate")  # mpi4py installed, an intracommunicator
            if isinstance(network, distributed.DistributedNetwork) and comm != network.comm:
                raise ValueError("comm differs from the communicator the DistributedNetwork was built on. Leave "
                                 "comm out (the network's is used) or build the network on this one.")
        if not isinstance(network, distributed.DistributedNetwork):
            if not isinstance(network, LowRankRNN):
                raise TypeError(f"With comm, network must be a DistributedNetwork or a dense LowRankRNN. Got "
                                f"{type(network).__name__}.")
            network = distributed.DistributedNetwork.from_network(network, comm)
        if x0 is not None or max_record_bytes is not None or input_noise is not None:
            raise ValueError("The distributed simulation (comm=...) takes kappa0 rather than x0, and no "
                             "max_record_bytes or input_noise.")
        return distributed.simulate_distributed(
            network, n_steps, dt=dt, inputs=inputs, kappa0=kappa0, v0=v0, n_trials=n_trials, noise_std=noise_std,
            seed=seed, record_units=record_units, clamp=clamp, path=path, backend=backend, n_threads=n_threads,
            on_nonfinite=on_nonfinite, progress=progress)
    sparse = isinstance(network, SparseLowRankRNN)
    if not (sparse or isinstance(network, LowRankRNN)):
        raise TypeError(f"network must be a LowRankRNN or a SparseLowRankRNN. Got {type(network).__name__}.")
    N, R, D = network.n_neurons, network.rank, network.n_inputs
    dtype = network.dtype
    tau = network.tau
    dt = tau / 10 if dt is None else check_positive_scalar(dt, "dt", owner="simulate")
    alpha = dt / tau
    if alpha > 1:
        warnings.warn(
            f"dt = {dt} is larger than tau = {tau} (alpha = dt / tau = {alpha:.3g} > 1): forward Euler "
            "overshoots and is unstable for alpha > 2. Use dt <= tau (alpha = 0.1 is usual).",
            RuntimeWarning,
            stacklevel=2,
        )
    noise_std = check_nonnegative_scalar(noise_std, "noise_std", owner="simulate")
    n_threads = check_n_threads(n_threads, "simulate", allow_auto=True)
    if path not in PATHS:
        raise ValueError(f"path must be one of {list(PATHS)}. Got {path!r}.")
    if not isinstance(on_nonfinite, str) or on_nonfinite not in ON_NONFINITE:
        raise ValueError(
            f"The 'on_nonfinite' parameter of simulate must be one of {list(ON_NONFINITE)}. "
            f"Got {on_nonfinite!r} instead."
        )
    report_progress = _progress_function(progress)
    if path == "latent" and noise_std > 0:
        raise ValueError(
            "path='latent' needs noise_std = 0: private noise pushes x off the latent subspace. "
            "Use path='full' or 'auto'."
        )
    if sparse and path == "latent":
        raise ValueError(
            "path='latent' is exact for dense low-rank networks only: a sparse network's state leaves "
            "span(m, I). Use path='full' or 'auto'."
        )
    requested_backend, backend = backend, _choose_backend(backend, network.activation, sparse)
    if n_trials is not None:
        n_trials = check_int(n_trials, "n_trials", minimum=1, owner="simulate")
    seed = check_seed(seed, "simulate")

    inputs, T = _inputs_and_steps(inputs, n_steps, D, "simulate")
    input_noise = check_input_noise(input_noise, D)
    if x0 is not None and kappa0 is not None:
        raise ValueError("Give either x0 or kappa0 (x0 = m kappa0 + I v0 + b), not both.")
    x0 = _optional_state(x0, "x0", N, keep_float32=True)
    kappa0 = _optional_state(kappa0, "kappa0", R)
    v0 = _optional_state(v0, "v0", D)
    x0, x0_batched = _leading(x0, 2)
    kappa0, kappa0_batched = _leading(kappa0, 2)
    v0, v0_batched = _leading(v0, 2)
    inputs, inputs_batched = _leading(inputs, 3)
    B = _batch_size(
        [("x0", x0 if x0_batched else None), ("kappa0", kappa0 if kappa0_batched else None),
         ("v0", v0 if v0_batched else None), ("inputs", inputs if inputs_batched else None)],
        n_trials,
    )
    clamp = _check_clamp(clamp, N, T, dtype)
    units = _record_indices(record_units, N)
    _check_memory(B, T + 1, len(units), dtype, max_record_bytes)
    n_threads = resolve_n_threads(n_threads, B * N)
    if sparse and requested_backend == "auto" and isinstance(network.activation, str):
        # Per case (the table in connector_sim._backends): numba for one gathered value per connection.
        available = _backends.available_backends()
        if not _backends.extension_built("_simulate_sparse_cpp"):
            available = [name for name in available if name != "cpp"]
        backend = _backends.auto_backend(available, sparse_kind=network.mask.kind, gathered=B * R)
    if path == "auto":
        path = "full" if (noise_std > 0 or sparse) else "latent"
    noisy = input_noise is not None
    _check_simulation_memory(B, B if (inputs_batched or v0_batched or noisy) else 1, T, N, R, D, len(units), dtype,
                             path, x0 is not None, inputs is not None and not noisy, backend)
    if noisy:
        inputs, inputs_batched = noisy_inputs(inputs, input_noise, seed, B, T, alpha), True

    # Filtered inputs v_t (float64, shared across trials unless something is batched).
    Bv = B if (inputs_batched or v0_batched) else 1
    u = np.zeros((Bv, T, D)) if inputs is None else np.broadcast_to(inputs, (Bv, T, D))
    v = np.empty((Bv, T + 1, D))
    v[:, 0] = 0.0 if v0 is None else np.broadcast_to(v0, (Bv, D))
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging filter (alpha > 2) is reported below
        for t in range(T if D else 0):  # nothing to filter without inputs
            v[:, t + 1] = (1 - alpha) * v[:, t] + alpha * u[:, t]

    # Initial latents, and the part of x0 outside span(m) (carried exactly).
    # base = I v0 + b is (Bv, N) float64: built only where it is needed, so the
    # latent path from kappa0 allocates nothing of size N.
    def initial_base():
        return v[:, 0] @ network.I.T.astype(np.float64) + network.b.astype(np.float64)

    if x0 is not None and path == "full":
        kappa_init = _projected_latents(network, np.broadcast_to(x0, (B, N)), v[:, 0])  # no (B, N) temporaries
        xperp = None
    elif x0 is not None:
        base = initial_base()
        m64 = network.m.astype(np.float64)
        residual = np.broadcast_to(x0, (B, N)) - base
        kappa_init = np.linalg.lstsq(m64, residual.T, rcond=None)[0].T
        xperp = residual - kappa_init @ m64.T
    else:
        kappa_init = np.broadcast_to(np.zeros((1, R)) if kappa0 is None else kappa0, (B, R)).copy()
        xperp = None
    kappa_init = np.ascontiguousarray(kappa_init, dtype=np.float64)

    full_path, latent_path = simulate_dense.kernels(backend)
    kappa_out = np.empty((B, T + 1, R))
    connections = network.mask.expected_nnz / N if sparse else 0.0
    steps_per_chunk = _chunk_steps(T, B, N, R, D, path, noise_std > 0, connections, n_threads)
    if B > 1 and len(units) and path == "full":
        # A chunk's recording goes through a buffer of B (steps + 1) K values (_window): at most 64 MB.
        steps_per_chunk = max(1, min(steps_per_chunk, (64 << 20) // (B * len(units) * dtype.itemsize) - 1))
    chunks = _step_chunks(T, steps_per_chunk)
    watch = _FiniteWatch(on_nonfinite, dt, alpha)
    started = time.perf_counter()
    if path == "full":
        x = aligned_empty((B, N), dtype)  # on a cache line, like the network's arrays the step streams with it
        if x0 is not None:
            x[:] = x0
        else:
            _affine_state(network, kappa_init, v[:, 0], x)  # m kappa0 + I v0 + b, block by block
        u_kernel = np.ascontiguousarray(
            np.zeros((1, T, D)) if inputs is None else inputs, dtype=dtype)
        record_out = np.empty((B, T + 1, len(units)), dtype)
        noise_scale = math.sqrt(alpha) * noise_std
        loadings = (network.m_T, network.n_T, network.I_T, network.b, network.activation)
        if sparse:
            from ._kernels import simulate_sparse

            sparse_kernel, mask_args = simulate_sparse.kernels(backend)[0], network.mask._kernel_args()
        for t0, t1 in chunks:
            # Steps t0 .. t1 - 1, carrying x and kappa; noise keyed by the global step.
            kappa_chunk, record_chunk = _window(kappa_out, t0, t1), _window(record_out, t0, t1)
            u_chunk = np.ascontiguousarray(u_kernel[:, t0:t1])
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                if sparse:
                    sparse_kernel(mask_args, *loadings, network.weight, network.gain, x, u_chunk, alpha, noise_scale,
                                  seed, 0, units, kappa_init, kappa_chunk, record_chunk, _shift_clamp(clamp, t0),
                                  step_offset=t0, n_threads=n_threads)
                else:
                    full_path(*loadings, x, u_chunk, alpha, noise_scale, seed, 0, units, kappa_init, kappa_chunk,
                              record_chunk, _shift_clamp(clamp, t0), step_offset=t0, n_threads=n_threads)
            _store(kappa_out, kappa_chunk, t0, t1)
            _store(record_out, record_chunk, t0, t1)
            watch.check(kappa_chunk, t0, t1, state=x if (t1 - t0 >= STATE_CHECK_STEPS or t1 == T) else None)
            report_progress(t1, T)
        final_state = x
        potentials = record_out if len(units) else None
    else:
        xperp_kernel = np.zeros((0, N), dtype) if xperp is None else np.ascontiguousarray(xperp, dtype=dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # |1 - alpha| > 1 diverges: reported by the watch
            decay = (1 - alpha) ** np.arange(T + 1, dtype=np.float64)
        for t0, t1 in chunks:
            kappa_chunk = _window(kappa_out, t0, t1)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                latent_path(network.m_T, network.n_T, network.I_T, network.b, network.activation,
                            np.ascontiguousarray(v[:, t0:t1 + 1]), xperp_kernel, decay[t0:t1 + 1], alpha,
                            kappa_init, kappa_chunk, _shift_clamp(clamp, t0), n_threads=n_threads)
            _store(kappa_out, kappa_chunk, t0, t1)
            watch.check(kappa_chunk, t0, t1)
            report_progress(t1, T)
        reconstruct = _latent_potentials(network, kappa_out, v, xperp_kernel, decay)
        potentials = reconstruct(units) if len(units) else None
        final_state = lambda: reconstruct(np.arange(N), steps=slice(T, T + 1))[:, 0]  # noqa: E731
    watch.warn_if_diverged()
    wall_time = time.perf_counter() - started
    return SimulationResult(
        kappa=kappa_out, v=v, time=dt * np.arange(T + 1), units=units if len(units) else None,
        potentials=potentials, path=path, backend=backend, dtype=dtype, seed=seed, alpha=alpha,
        wall_time=wall_time, network=network, _final_state=final_state, _clamp=clamp, n_threads=n_threads,
    )


#: Neurons per block of _projected_latents' float64 arithmetic: the temporaries
#: stay in cache, whatever N.
INITIAL_STATE_BLOCK = 1 << 14


def _affine_state(network, kappa, v, out):
    """Fill ``out`` (B, N), in its dtype, with m kappa + I v + b: formed in float64, rounded once.

    kappa is (B, R) and v (B or 1, D), float64; no float64 array of size N
    is built (``_kernels/affine_state.py``: one compiled pass).
    """
    return affine_state(network.m_T, network.I_T, network.b, kappa, v, out)


def _projected_latents(network, x0, v):
    """kappa (B, R) minimising |m kappa - (x0 - I v - b)|, from sums over blocks of neurons.

    The normal equations m^T m kappa = m^T (x0 - I v - b) are accumulated in
    float64 block by block (R x R and R x B sums, no array of size N) and
    solved by least squares (the minimum-norm solution when m is rank
    deficient, as ``lstsq`` on the whole m gives). Used on the full path,
    where x0 itself is the state and only its latents are needed.
    """
    N, R = network.n_neurons, network.rank
    B = x0.shape[0]
    gram = np.zeros((R, R))
    projection = np.zeros((R, B))
    block = max(1, INITIAL_STATE_BLOCK // max(1, B))
    for start in range(0, N, block):
        units = slice(start, min(start + block, N))
        m = network.m_T[:, units].astype(np.float64)  # (R, n)
        residual = (x0[:, units].astype(np.float64) - v @ network.I_T[:, units].astype(np.float64)
                    - network.b[units].astype(np.float64))  # (B, n)
        gram += m @ m.T
        projection += m @ residual.T
    if R == 0:
        return np.zeros((B, 0))
    return np.linalg.lstsq(gram, projection, rcond=None)[0].T


def _latent_potentials(network, kappa, v, xperp, decay):
    """A function giving x = m kappa + I v + b + decay xperp for chosen units and steps."""

    def reconstruct(units, steps=slice(None)):
        k = kappa[:, steps]
        B, n_times = k.shape[:2]
        out = np.empty((B, n_times, len(units)), network.dtype)
        m = network.m[units].astype(np.float64)
        I = network.I[units].astype(np.float64)
        b = network.b[units].astype(np.float64)
        chunk = max(1, (1 << 22) // max(1, len(units)))  # bounded float64 temporaries
        # A diverged run (already reported by NonFiniteStateWarning) gives inf and NaN here, silently.
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, n_times, chunk):
                window = slice(start, min(start + chunk, n_times))
                x = k[:, window] @ m.T + v[:, steps][:, window] @ I.T + b
                if len(xperp):
                    x = x + decay[steps][window][None, :, None] * xperp[:, units][:, None, :]
                out[:, window] = x
        return out

    return reconstruct


# --- chunks of steps, divergence and progress --------------------------------------------

#: Work of one chunk of steps, per thread, in the units of _chunk_steps: about
#: 0.2 s of the cpp kernels (measured 3.3e9 units per second on one core of a
#: loaded AMD EPYC at N = 1e6, all paths; numba 1.7-2.2e9, NumPy several times fewer).
CHUNK_WORK = 6e8


def _chunk_steps(n_steps, B, N, R, D, path, noisy, connections, n_threads):
    """Steps per kernel call: about CHUNK_WORK units of work per thread, at least one step.

    A latent step costs B N (2 R + D + 2) units (the affine drive, the rates
    and their n-weighted sums), a full-path step twice that (the state is read
    and written), the noise 6 more per unit and a sparse network R per
    connection. The dense full path sums n^T phi(x) again at the start of
    each call (about a quarter of a step), so its chunks hold 4 steps unless
    4 steps would take more than 4 chunks' work (then fewer, down to 1).
    """
    per_unit = (2 * R + D + 2) * (2 if path == "full" else 1) + (6 if noisy else 0) + connections * R
    per_step = max(B * N * per_unit, 1.0)
    budget = CHUNK_WORK * n_threads
    steps = int(budget // per_step)
    if path == "full" and connections == 0.0:
        steps = max(steps, min(4, int(4 * budget // per_step)))
    return max(1, min(n_steps, steps))


def _step_chunks(n_steps, chunk):
    """[(t0, t1), ...]: consecutive step ranges covering 0 .. n_steps."""
    return [(t0, min(t0 + chunk, n_steps)) for t0 in range(0, n_steps, chunk)]


def _window(array, t0, t1):
    """array[:, t0 : t1 + 1] for a kernel: the view if C-contiguous, else a buffer (see _store)."""
    view = array[:, t0:t1 + 1]
    return view if view.flags.c_contiguous else np.empty(view.shape, array.dtype)


def _store(array, window, t0, t1):
    """Copy a kernel's buffer into array[:, t0 : t1 + 1] (nothing to do for a view)."""
    if not np.shares_memory(window, array):
        array[:, t0:t1 + 1] = window


def _shift_clamp(clamp, t0):
    """The clamp window of a kernel call whose local step 0 is global step t0."""
    mask, value, start, stop = clamp
    return clamp if mask is None else (mask, value, start - t0, stop - t0)


def _progress_function(progress):
    if progress is None or progress is False:
        return lambda done, total: None
    if progress is True:
        return lambda done, total: print(f"[simulate] {done}/{total} steps", file=sys.stderr, flush=True)
    if callable(progress):
        return progress
    raise TypeError(
        f"The 'progress' parameter of simulate must be None, a bool or a callable progress(steps_done, n_steps). "
        f"Got {progress!r} instead."
    )


def _first_nonfinite_row(state):
    """Index of the first row of ``state`` (trials, units) holding inf or NaN, or None.

    A sum per row is non-finite whenever the row holds inf or NaN, and needs
    no temporary of the state's size (1 ms per million float32 values); only
    such rows (or rows whose sum overflowed) are scanned elementwise.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        sums = state.sum(axis=1)
    for row in np.flatnonzero(~np.isfinite(sums)):
        if not np.isfinite(state[row]).all():
            return int(row)
    return None


#: The state x is checked for inf and NaN after chunks of at least this many steps (and at the end).
STATE_CHECK_STEPS = 8


class _FiniteWatch:
    """Finds the first non-finite state of a run, chunk by chunk, and reports it once."""

    def __init__(self, on_nonfinite, dt, alpha):
        self.on_nonfinite, self.dt, self.alpha = on_nonfinite, dt, alpha
        self.message = None

    def check(self, kappa_chunk, t0, t1, state=None):
        """kappa_chunk holds steps t0 .. t1 (B, t1 - t0 + 1, R); state is x at step t1 (full path).

        x is scanned (a pass over B N values) only after chunks of at least
        STATE_CHECK_STEPS steps, and by the caller after the last one, so the
        scans cost at most a few percent of the run; kappa after every chunk.
        """
        if self.message is not None:
            return
        finite = np.isfinite(kappa_chunk).all(axis=2)  # (B, steps)
        if not finite.all():
            step = int(np.flatnonzero(~finite.all(axis=0))[0])
            trial = int(np.flatnonzero(~finite[:, step])[0])
            where = f"the latents kappa of trial {trial} are not finite from time step {t0 + step}"
            where += f" (t = {(t0 + step) * self.dt:.6g})"
        elif state is not None and (trial := _first_nonfinite_row(state)) is not None:
            where = (f"the potentials x of trial {trial} are not finite at time step {t1} (t = {t1 * self.dt:.6g}; "
                     "x is checked every few steps), although the latents kappa stayed finite")
        else:
            return
        self.message = (
            f"The simulated state stopped being finite: {where}. Forward Euler diverged. Use a smaller dt "
            f"(alpha = dt / tau = {self.alpha:.3g}; alpha <= 0.1 is usual), a bounded activation such as 'tanh', "
            "or smaller loadings, inputs, noise or initial state. simulate(..., on_nonfinite='raise') makes this "
            "an error."
        )
        if self.on_nonfinite == "raise":
            raise FloatingPointError(self.message)

    def warn_if_diverged(self):
        if self.message is not None:
            warnings.warn(self.message, NonFiniteStateWarning, stacklevel=3)
