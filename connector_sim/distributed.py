"""One dense low-rank network on many processes (MPI, through mpi4py).

Each of the P processes (ranks) of an MPI communicator holds a contiguous
slice of the N neurons, whole blocks of ``BLOCK_SIZE`` = 4096 neurons (the
reduction blocks of the simulation kernels), as evenly as possible. Nothing
of size N is ever built on one rank, so a network of N = 1e9-1e10 neurons
fits on enough machines (see the README, "One network on many machines").

- Sampling (:func:`sample_slice`, :meth:`DistributedNetwork.from_distribution`):
  the row of neuron i is computed from counter-based standard normals keyed
  by (seed, coordinate, i) (the generator of the private noise, on streams
  of its own), so a slice does not depend on the others: the network is the
  same for any P, and the single-process network ``sample_slice(distribution,
  N, seed)`` equals the concatenation of the slices bit for bit. It is not
  the network ``distribution.sample(N, random_state=seed)`` gives (that one
  draws from a sequential ``numpy.random.Generator``).
- Simulation (:func:`simulate_distributed`, or ``simulate(..., comm=comm)``):
  every step each rank computes the block sums of n^T phi(x) of its slice
  with the compiled kernel (``_kernels/distributed_step.py``), and the ranks
  combine them into krec = n^T phi(x) / N. x, the private noise (keyed by the
  global unit index, as on one process), clamps and recorded units are local
  to the rank that holds the unit; kappa is the same on every rank.

Reduction and exactness. The block sums are combined *exactly*: each rank
sums its blocks exactly into an expansion of a few float64 numbers per
(trial, r) (error-free extraction, vectorised: about 1 ms for the 24,000
blocks of 1e8 neurons), one ``allgather`` collects these (P times 2-3 B R
numbers), and krec is the correctly rounded sum (``math.fsum``) of all block
sums, divided by N. The result does not depend on how the blocks are split among
ranks: **a run is bitwise the same for every P** (P = 1 included: the
distributed code on one process), and across repeated runs. It is not
bitwise the single-process :func:`connector_sim.simulate`, which adds the
block sums one after the other: the two differ by the rounding of that sum
(relative 1e-16 per step for float64 sums of N / 4096 blocks), which the
dynamics then carry (tests: within 1e-10 over 50 non-chaotic steps).
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ._kernels import counter_rng, distributed_step
from ._kernels.simulate_dense import BLOCK_SIZE
from ._memory import aligned_copy, check_allocation
from ._validation import (
    check_dtype,
    check_int,
    check_n_threads,
    check_nonnegative_scalar,
    check_positive_scalar,
    check_seed,
)
from .activations import apply_activation
from .distributions import Empirical, Gaussian, GaussianMixture, _network_from_row_chunks
from .network import LowRankRNN

__all__ = ["DistributedNetwork", "DistributedSimulationResult", "exact_sum", "sample_slice", "simulate_distributed",
           "slice_bounds"]

#: The pip command that installs what this module needs.
INSTALL_HINT = 'pip install "connector_sim[mpi]"  (or: pip install mpi4py mpich)'

#: Neurons per sampling chunk (bounded float64 temporaries).
_SAMPLE_CHUNK = 1 << 18


def _mpi():
    """mpi4py's MPI module, or an ImportError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            f"The distributed simulation needs mpi4py and an MPI library, which are not installed: {exc}. "
            f"Install them with: {INSTALL_HINT}."
        ) from exc
    return MPI


def _check_comm(comm, owner):
    """COMM_WORLD for None; an mpi4py intracommunicator, or a TypeError."""
    MPI = _mpi()
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise TypeError(
            f"The 'comm' parameter of {owner} must be an mpi4py intracommunicator such as MPI.COMM_WORLD. "
            f"Got {comm!r} instead."
        )
    return comm


def slice_bounds(n_neurons, n_ranks, rank):
    """(start, stop): the neurons rank ``rank`` of ``n_ranks`` holds.

    The ceil(N / 4096) blocks of ``BLOCK_SIZE`` neurons are split into
    ``n_ranks`` contiguous runs of as equal lengths as possible; rank r holds
    blocks ``r nb // P`` to ``(r + 1) nb // P``.

    Raises
    ------
    ValueError
        If there are more ranks than blocks (every rank needs at least one).

    Examples
    --------
    >>> slice_bounds(10_000, 2, 0), slice_bounds(10_000, 2, 1)
    ((0, 4096), (4096, 10000))
    """
    n_neurons = check_int(n_neurons, "n_neurons", minimum=1, owner="slice_bounds")
    n_ranks = check_int(n_ranks, "n_ranks", minimum=1, owner="slice_bounds")
    rank = check_int(rank, "rank", minimum=0, owner="slice_bounds")
    n_blocks = -(-n_neurons // BLOCK_SIZE)
    if n_ranks > n_blocks:
        raise ValueError(
            f"{n_ranks} MPI processes are too many for a network of {n_neurons} neurons: each process holds whole "
            f"blocks of {BLOCK_SIZE} neurons, and there are {n_blocks}. Run at most {n_blocks} processes "
            f"(mpirun -n {n_blocks}), or simulate a larger network."
        )
    if rank >= n_ranks:
        raise ValueError(f"rank must be < n_ranks = {n_ranks}. Got {rank}.")
    first, last = rank * n_blocks // n_ranks, (rank + 1) * n_blocks // n_ranks
    return first * BLOCK_SIZE, min(last * BLOCK_SIZE, n_neurons)


# --------------------------------------------------------------------------- sampling

#: Counter-based streams of the sampler: the standard normal of coordinate j of
#: neuron i is the draw of (seed, trial SAMPLE_TRIAL - j, step 0, unit i), the
#: uniform that picks its component or row is the draw of trial SAMPLE_TRIAL + 1.
#: These trials (near 2**64) are not used by the simulations' noise.
SAMPLE_TRIAL = (1 << 64) - 2


def _normals(seed, stream, start, count):
    return distributed_step.unit_normals(seed, stream, 0, start, count)


def _uniforms(seed, start, count):
    """Uniforms in [0, 1) of units start .. start + count - 1: the top 53 bits of each unit's own draw."""
    key = counter_rng.step_key(seed, SAMPLE_TRIAL + 1, 0)
    units = np.arange(start, start + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = counter_rng.mix64(key + counter_rng.GOLDEN * (units + np.uint64(1)))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _sample_rows(distribution, seed, start, count):
    """(rows (count, dim) float64, labels) of neurons start .. start + count - 1."""
    dim = distribution.layout.dim
    if isinstance(distribution, Empirical):
        index = np.minimum((_uniforms(seed, start, count) * len(distribution.rows)).astype(np.int64),
                           len(distribution.rows) - 1)
        return distribution.rows[index], index
    z = [_normals(seed, SAMPLE_TRIAL - j, start, count) for j in range(dim)]
    if isinstance(distribution, Gaussian):
        labels = np.zeros(count, np.int64)
        means, factors = distribution.mean[None], distribution._factor[None]
    else:
        cumulative = np.cumsum(distribution.weights)[:-1]
        labels = np.searchsorted(cumulative, _uniforms(seed, start, count), side="right").astype(np.int64)
        means, factors = distribution.means, distribution._factors
    rows = np.empty((count, dim))
    for k in range(dim):
        # row[k] = mean[k] + sum_j factor[k, j] z_j, the terms added in j order (elementwise: the
        # same bits for a neuron whatever slice or chunk it is computed in).
        value = means[labels, k].copy()
        for j in range(dim):
            value += factors[labels, k, j] * z[j]
        rows[:, k] = value
    return rows, labels


def sample_slice(distribution, n_neurons, seed, start=0, stop=None, *, dtype=np.float64, tau=1.0,
                 activation="tanh", return_labels=False):
    """Neurons ``start`` .. ``stop - 1`` of the counter-based network of ``n_neurons`` neurons.

    Neuron i's row is ``mean + factor z_i`` (of its mixture component, picked
    by a uniform u_i; :class:`Empirical` resamples row ``floor(u_i n_rows)``)
    with z_i and u_i counter-based draws keyed by (seed, i), so any slice is
    computed on its own and equals the same neurons of the whole network, bit
    for bit.

    Parameters
    ----------
    distribution : Gaussian, GaussianMixture or Empirical
    n_neurons : int
        N, the size of the whole network (checks the slice).
    seed : int
    start, stop : int, default 0 and N
    dtype, tau, activation
        Passed to :class:`LowRankRNN`.
    return_labels : bool, default=False
        Also return the component (or source row) of each neuron.

    Returns
    -------
    network : LowRankRNN with stop - start neurons
    labels : ndarray of shape (stop - start,), only if ``return_labels``

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian
    >>> g = Gaussian(np.zeros(2), np.eye(2), rank=1)
    >>> whole = sample_slice(g, 10, seed=3)
    >>> bool(np.array_equal(sample_slice(g, 10, 3, 4, 10).m, whole.m[4:]))
    True
    """
    if not isinstance(distribution, (Gaussian, GaussianMixture, Empirical)):
        raise TypeError(
            "The 'distribution' parameter of sample_slice must be a Gaussian, GaussianMixture or Empirical. "
            f"Got {type(distribution).__name__} instead."
        )
    n_neurons = check_int(n_neurons, "n_neurons", minimum=1, owner="sample_slice")
    seed = check_seed(seed, "sample_slice")
    stop = n_neurons if stop is None else stop
    start = check_int(start, "start", minimum=0, owner="sample_slice")
    stop = check_int(stop, "stop", minimum=start + 1, owner="sample_slice")
    if stop > n_neurons:
        raise ValueError(f"stop must be <= n_neurons = {n_neurons}. Got {stop}.")
    dtype = check_dtype(dtype)
    layout = distribution.layout
    count = stop - start
    check_allocation(
        count * ((2 * layout.rank + layout.n_inputs + 1) * dtype.itemsize + 8)
        + 4 * 8 * min(count, _SAMPLE_CHUNK) * layout.dim,
        f"Sampling {count} neurons (sample_slice, dtype {dtype})",
        "Sample a smaller slice: run on more MPI processes, or use dtype=np.float32.",
    )
    drawn = [start]  # the next neuron's index: the chunks are drawn in order

    def draw_chunk(size):
        rows = _sample_rows(distribution, seed, drawn[0], size)
        drawn[0] += size
        return rows

    network, labels = _network_from_row_chunks(layout, count, draw_chunk, dtype, tau, activation, chunk=_SAMPLE_CHUNK)
    return (network, labels) if return_labels else network


# --------------------------------------------------------------------------- the network


class DistributedNetwork:
    """A dense :class:`LowRankRNN` of N neurons split across the ranks of an MPI communicator.

    Build it on every rank with :meth:`from_distribution` (each rank samples
    its own slice) or :meth:`from_network` (each rank keeps its slice of a
    network every rank holds). Rank r holds neurons ``start`` .. ``stop - 1``
    (:func:`slice_bounds`) as ``local``, a :class:`LowRankRNN`.

    Parameters
    ----------
    local : LowRankRNN
        This rank's slice.
    n_neurons : int
        N, the size of the whole network.
    comm : mpi4py.MPI.Intracomm, optional
        Default ``MPI.COMM_WORLD``.
    labels : ndarray, optional
        This slice's cell types.

    Attributes
    ----------
    local, n_neurons, comm, start, stop, labels
    mpi_rank, n_ranks : int
        This process's rank in ``comm`` and the number of processes.
    rank, n_inputs, tau, activation, dtype
        Those of the whole network (R, D, ...; equal on every rank).

    Raises
    ------
    ImportError
        If mpi4py is missing (with the pip command).
    TypeError
        If ``comm`` is not an mpi4py intracommunicator, or ``local`` not a LowRankRNN.
    ValueError
        If there are more ranks than blocks of 4096 neurons, or ``local`` is
        not the size of this rank's slice.
    """

    def __init__(self, local, n_neurons, comm=None, labels=None):
        comm = _check_comm(comm, "DistributedNetwork")
        if not isinstance(local, LowRankRNN):
            raise TypeError(f"The 'local' parameter of DistributedNetwork must be a LowRankRNN. Got "
                            f"{type(local).__name__} instead.")
        self.n_neurons = check_int(n_neurons, "n_neurons", minimum=1, owner="DistributedNetwork")
        self.comm, self.mpi_rank, self.n_ranks = comm, comm.Get_rank(), comm.Get_size()
        self.start, self.stop = slice_bounds(self.n_neurons, self.n_ranks, self.mpi_rank)
        if local.n_neurons != self.stop - self.start:
            raise ValueError(f"Rank {self.mpi_rank} holds neurons {self.start}..{self.stop - 1} "
                             f"({self.stop - self.start}), but its local network has {local.n_neurons}. Build it "
                             "with DistributedNetwork.from_distribution or from_network.")
        self.local, self.labels = local, labels

    @classmethod
    def from_distribution(cls, distribution, n_neurons, seed, comm=None, *, dtype=np.float64, tau=1.0,
                          activation="tanh"):
        """Each rank samples its slice with :func:`sample_slice` (the same network for any P)."""
        comm = _check_comm(comm, "DistributedNetwork.from_distribution")
        start, stop = slice_bounds(n_neurons, comm.Get_size(), comm.Get_rank())
        local, labels = sample_slice(distribution, n_neurons, seed, start, stop, dtype=dtype, tau=tau,
                                     activation=activation, return_labels=True)
        return cls(local, n_neurons, comm, labels)

    @classmethod
    def from_network(cls, network, comm=None, labels=None):
        """Each rank keeps its slice of ``network`` (which every rank holds, e.g. loaded from a file)."""
        comm = _check_comm(comm, "DistributedNetwork.from_network")
        if not isinstance(network, LowRankRNN):
            raise TypeError(f"The 'network' parameter of DistributedNetwork.from_network must be a LowRankRNN. "
                            f"Got {type(network).__name__} instead.")
        start, stop = slice_bounds(network.n_neurons, comm.Get_size(), comm.Get_rank())
        local = LowRankRNN._adopt(*(aligned_copy(a[..., start:stop]) for a in (network.m_T, network.n_T, network.I_T,
                                                                          network.b)),
                                  tau=network.tau, activation=network.activation, dtype=network.dtype)
        return cls(local, network.n_neurons, comm, None if labels is None else np.asarray(labels)[start:stop])

    rank = property(lambda self: self.local.rank, doc="R, the rank of the connectivity.")
    n_inputs = property(lambda self: self.local.n_inputs, doc="D.")
    tau = property(lambda self: self.local.tau)
    activation = property(lambda self: self.local.activation)
    dtype = property(lambda self: self.local.dtype)

    def __repr__(self):
        return (f"DistributedNetwork(n_neurons={self.n_neurons}, rank={self.local.rank}, n_inputs="
                f"{self.local.n_inputs}, slice {self.start}..{self.stop - 1} on MPI rank {self.mpi_rank} of "
                f"{self.n_ranks})")


# --------------------------------------------------------------------------- exact reduction


def _expansion(values):
    """Float64 terms whose exact sum is the exact sum of ``values`` (math.fsum and its residuals)."""
    terms = [float(v) for v in values]
    out = []
    try:
        for _ in range(64):  # the exact sum of doubles spans < 2100 bits: at most 40 terms
            s = math.fsum(terms)
            if s == 0.0:
                return out
            out.append(s)
            terms.append(-s)
    except OverflowError:  # the sum overflows float64: it is +-inf (the run diverged)
        with np.errstate(over="ignore", invalid="ignore"):
            return [float(np.sum(values))]
    return out


#: Rounds of exact extraction in _local_expansions before the math.fsum fallback.
_EXTRACTION_ROUNDS = 8


def _local_expansions(partial):
    """Per column of partial (n_blocks, ...), float64 terms whose exact sum is the column's exact sum.

    Error-free extraction, vectorised over the columns: with M the largest
    |p_i| of a column (M < 2**e) and sigma = 2**(e + ceil(log2 n) + 1),
    q_i = (sigma + p_i) - sigma is p_i rounded to a multiple of 2**-53 sigma
    and r_i = p_i - q_i is exact; the q_i sum exactly in any order (each
    partial sum is a multiple of 2**-53 sigma below sigma in magnitude), so
    T = sum(q) is exact, and the rounds repeat on the residuals r until they
    are all zero (two or three rounds for block sums of similar size). Columns
    that are not finite give their plain sum; residuals left after
    _EXTRACTION_ROUNDS rounds, or near overflow or underflow, go to an exact
    math.fsum expansion.
    """
    rows = partial.reshape(partial.shape[0], -1).T.copy()  # (columns, blocks), a contiguous copy: sums along rows
    n_columns, n_blocks = rows.shape
    out = [[] for _ in range(n_columns)]
    finite = np.isfinite(rows).all(axis=1)
    for j in np.flatnonzero(~finite):
        with np.errstate(over="ignore", invalid="ignore"):
            out[j].append(float(rows[j].sum()))
    residual = rows
    residual[~finite] = 0.0
    headroom = math.ceil(math.log2(max(n_blocks, 1))) + 1
    for _ in range(_EXTRACTION_ROUNDS):
        biggest = np.abs(residual).max(axis=1) if n_blocks else np.zeros(n_columns)
        active = biggest > 0
        if not active.any():
            return out
        exponent = np.frexp(biggest)[1] + headroom
        # sigma must be finite, and its grid 2**-53 sigma a normal number's: otherwise fsum below
        fallback = active & ((exponent > 1023) | (exponent < -1021 + 53))
        for j in np.flatnonzero(fallback):
            out[j].extend(_expansion(residual[j]))
            residual[j] = 0.0
        active &= ~fallback
        sigma = np.ldexp(1.0, np.where(active, exponent, 0))[:, None]
        q = (sigma + residual) - sigma
        q[~active] = 0.0
        totals = q.sum(axis=1)
        residual -= q
        for j in np.flatnonzero(active & (totals != 0.0)):
            out[j].append(float(totals[j]))
    for j in np.flatnonzero((residual != 0.0).any(axis=1)):
        out[j].extend(_expansion(residual[j]))
    return out


def _combine(all_expansions, shape):
    """The correctly rounded sums of every rank's expansions, column by column."""
    n_columns = len(all_expansions[0])
    total = np.empty(n_columns)
    for j in range(n_columns):
        terms = [t for rank_terms in all_expansions for t in rank_terms[j]]
        try:
            total[j] = math.fsum(terms)
        except (OverflowError, ValueError):  # inf - inf, or an overflow: the run diverged
            with np.errstate(over="ignore", invalid="ignore"):
                total[j] = float(np.sum(terms))
    return total.reshape(shape)


def exact_sum(partial, comm):
    """The sum over all ranks and blocks of ``partial`` (n_blocks, ...), correctly rounded, on every rank.

    Does not depend on how the blocks are split among the ranks.
    """
    return _combine(comm.allgather(_local_expansions(partial)), partial.shape[1:])


# --------------------------------------------------------------------------- simulation


@dataclass
class DistributedSimulationResult:
    """What :func:`simulate_distributed` recorded (the same on every rank, but ``final_state``).

    Attributes
    ----------
    kappa : ndarray of shape (n_trials, n_steps + 1, rank), float64
    v : ndarray of shape (n_trials or 1, n_steps + 1, n_inputs), float64
    time : ndarray of shape (n_steps + 1,)
    units : ndarray of shape (K,) or None
        Global indices of the recorded units.
    potentials : ndarray of shape (n_trials, n_steps + 1, K) or None
    rates : ndarray or None
        phi(potentials), clamped units at their clamp values.
    final_state : ndarray of shape (n_trials, stop - start)
        x at the last step of this rank's slice (full path), or rebuilt from
        the latents (latent path).
    path, backend, dtype, seed, alpha, wall_time, n_ranks
    """

    kappa: np.ndarray
    v: np.ndarray
    time: np.ndarray
    units: np.ndarray
    potentials: np.ndarray
    rates: np.ndarray
    path: str
    backend: str
    dtype: np.dtype
    seed: int
    alpha: float
    wall_time: float
    n_ranks: int
    final_state: np.ndarray = field(repr=False)

    @property
    def n_trials(self):
        return self.kappa.shape[0]


def _local_clamp(clamp, network, n_steps):
    """(mask, value, start, stop) over this rank's slice from a clamp spec in global unit indices."""
    from .simulate import _as_array, _check_clamp, _record_indices

    if clamp is None:
        return None, None, 0, 0
    if not isinstance(clamp, dict) or "units" not in clamp:
        return _check_clamp(clamp, 1, n_steps, network.dtype)  # raises its TypeError
    units = _record_indices(clamp["units"], network.n_neurons, "clamp['units']")
    value = clamp.get("value", 0.0)
    mine = (units >= network.start) & (units < network.stop)
    local = dict(clamp, units=units[mine] - network.start)
    if not isinstance(value, (str, bytes)) and value is not None and _as_array(value, "clamp['value']").ndim == 1:
        value = _as_array(value, "clamp['value']")
        if value.shape != (len(units),):
            raise ValueError(f"clamp['value'] must be a scalar or one value per clamped unit ({len(units)}). "
                             f"Got shape {value.shape}.")
        local["value"] = value[mine]
    return _check_clamp(local, network.stop - network.start, n_steps, network.dtype)


def simulate_distributed(network, n_steps=None, *, dt=None, inputs=None, kappa0=None, v0=None, n_trials=None,
                         noise_std=0.0, seed=None, record_units=None, clamp=None, path="auto", backend="auto",
                         n_threads=1, on_nonfinite="warn", progress=None):
    """Simulate a :class:`DistributedNetwork` by forward Euler, each rank stepping its slice.

    The model, the arguments and the results are those of
    :func:`connector_sim.simulate` (called with ``comm=`` it calls this),
    with the unit indices of ``record_units`` and ``clamp`` global. Call it
    on every rank with the same arguments. Every step: each rank computes the
    block sums of its slice with the compiled kernel, the ranks combine them
    exactly (one allgather of a few B R numbers per rank), and every rank
    advances kappa the same way; on the full path each rank then updates its
    x, with private noise keyed by the global unit index.

    Exactness: bitwise the same for any number of ranks (see the module
    docstring); equal to :func:`connector_sim.simulate` up to the rounding of
    its sequential sum of block partials.

    Not supported here: ``x0`` (give ``kappa0``), sparse networks, the numba
    backend and user activations ("auto" takes "cpp", or "numpy" if the
    extensions are not built).

    Returns
    -------
    DistributedSimulationResult
        The same on every rank (recorded potentials are gathered), except
        ``final_state``, this rank's slice.
    """
    from ._backends import extension_built
    from .simulate import (
        ON_NONFINITE,
        PATHS,
        _batch_size,
        _check_memory,
        _FiniteWatch,
        _inputs_and_steps,
        _leading,
        _optional_state,
        _progress_function,
        _record_indices,
    )

    if not isinstance(network, DistributedNetwork):
        raise TypeError(f"The 'network' parameter of simulate_distributed must be a DistributedNetwork. Got "
                        f"{type(network).__name__} instead.")
    comm, local = network.comm, network.local
    N, R, D = network.n_neurons, local.rank, local.n_inputs
    dtype = local.dtype
    tau = local.tau
    dt = 0.1 * tau if dt is None else check_positive_scalar(dt, "dt", owner="simulate_distributed")
    alpha = dt / tau
    noise_std = check_nonnegative_scalar(noise_std, "noise_std", owner="simulate_distributed")
    n_threads = check_n_threads(n_threads, "simulate_distributed", allow_auto=True)
    if n_threads == "auto":
        # MPI's usual layout is one process per core: each rank runs its slice on one thread. (The load-based
        # rule of the one-process path would see the other ranks' load only a minute late.)
        n_threads = 1
    if path not in PATHS:
        raise ValueError(f"path must be one of {list(PATHS)}. Got {path!r}.")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"The 'on_nonfinite' parameter of simulate_distributed must be one of {list(ON_NONFINITE)}."
                         f" Got {on_nonfinite!r} instead.")
    if path == "latent" and noise_std > 0:
        raise ValueError("path='latent' needs noise_std = 0: private noise pushes x off the latent subspace. "
                         "Use path='full' or 'auto'.")
    if not isinstance(local.activation, str):
        raise ValueError("The distributed simulation runs built-in activations only (a user numba activation "
                         "needs the numba backend, which it does not use).")
    if backend == "auto":
        backend = "cpp" if extension_built("_simulate_dense_cpp") else "numpy"
    if backend not in ("cpp", "numpy"):
        raise ValueError(f"The distributed simulation runs on the 'cpp' or 'numpy' backend. Got backend={backend!r}.")
    if backend == "cpp" and not extension_built("_simulate_dense_cpp"):
        raise ValueError("The 'cpp' backend is not built here. Use backend='numpy' or 'auto'.")
    if n_trials is not None:
        n_trials = check_int(n_trials, "n_trials", minimum=1, owner="simulate_distributed")
    if seed is None:
        seed = comm.bcast(check_seed(None, "simulate_distributed"), root=0)  # one seed for all ranks
    seed = check_seed(seed, "simulate_distributed")
    report = _progress_function(progress) if network.mpi_rank == 0 else (lambda done, total: None)

    inputs, T = _inputs_and_steps(inputs, n_steps, D, "simulate_distributed")
    kappa0 = _optional_state(kappa0, "kappa0", R)
    v0 = _optional_state(v0, "v0", D)
    kappa0, kappa0_batched = _leading(kappa0, 2)
    v0, v0_batched = _leading(v0, 2)
    inputs, inputs_batched = _leading(inputs, 3)
    B = _batch_size([("kappa0", kappa0 if kappa0_batched else None), ("v0", v0 if v0_batched else None),
                     ("inputs", inputs if inputs_batched else None)], n_trials)
    clamp = _local_clamp(clamp, network, T)
    units = _record_indices(record_units, N)
    _check_memory(B, T + 1, len(units), dtype, None)
    if path == "auto":
        path = "full" if noise_std > 0 else "latent"
    n_local = network.stop - network.start
    # kappa, and x (full path) or the final state (latent path) of the slice
    check_allocation(8 * B * (T + 1) * R + dtype.itemsize * B * n_local,
                     f"Simulating {B} trial(s) of {T} steps on a slice of {n_local} neurons ({path} path)",
                     "Use fewer trials or steps, or more MPI processes.")

    Bv = B if (inputs_batched or v0_batched) else 1
    u = np.zeros((Bv, T, D)) if inputs is None else np.broadcast_to(inputs, (Bv, T, D))
    v = np.empty((Bv, T + 1, D))
    v[:, 0] = 0.0 if v0 is None else np.broadcast_to(v0, (Bv, D))
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T if D else 0):
            v[:, t + 1] = (1 - alpha) * v[:, t] + alpha * u[:, t]
    kappa = np.broadcast_to(np.zeros((1, R)) if kappa0 is None else kappa0, (B, R)).astype(np.float64)

    local_units = units[(units >= network.start) & (units < network.stop)] - network.start
    full_step, latent_step = distributed_step.kernels(backend)
    n_blocks = -(-n_local // BLOCK_SIZE)
    partial = np.empty((n_blocks, B, R))
    kappa_out = np.empty((B, T + 1, R))
    kappa_out[:, 0] = kappa
    record_out = np.empty((B, T + 1, len(local_units)), dtype)
    watch = _FiniteWatch(on_nonfinite, dt, alpha)
    m_T, n_T, I_T, b = local.m_T, local.n_T, local.I_T, local.b
    last_report = time.perf_counter()
    started = last_report

    def advance(t):
        # kappa_{t+1} = (1 - alpha) kappa_t + alpha krec_t, krec_t = (exact sum of the block sums) / N
        nonlocal kappa
        with np.errstate(over="ignore", invalid="ignore"):
            krec = exact_sum(partial, comm) / float(N)
            kappa = (1.0 - alpha) * kappa + alpha * krec
        kappa_out[:, t + 1] = kappa
        return krec

    def tick(t):
        nonlocal last_report
        if time.perf_counter() - last_report > 1.0 or t + 1 == T:
            report(t + 1, T)
            last_report = time.perf_counter()

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if path == "full":
            # x_0 = m kappa_0 + I v_0 + b, term by term (elementwise: the same bits on any slice), in chunks
            x = np.empty((B, n_local), dtype)
            for lo in range(0, n_local, _SAMPLE_CHUNK):
                cols = slice(lo, min(lo + _SAMPLE_CHUNK, n_local))
                x64 = np.broadcast_to(b[cols].astype(np.float64), (B, cols.stop - lo)).copy()
                for r in range(R):
                    x64 += kappa[:, r, None] * m_T[r, cols].astype(np.float64)
                for d in range(D):
                    x64 += np.broadcast_to(v[:, 0, d, None], (B, 1)) * I_T[d, cols].astype(np.float64)
                x[:, cols] = x64
            record_out[:, 0] = x[:, local_units]
            u_kernel = np.zeros((1, T, D), dtype) if inputs is None else np.ascontiguousarray(inputs, dtype)
            noise_scale = math.sqrt(alpha) * noise_std
            row = np.empty((B, len(local_units)), dtype)
            full_step(m_T, n_T, I_T, b, local.activation, x, u_kernel[:, 0], alpha, noise_scale, seed, 0, 0,
                      network.start, None, local_units, row, clamp, partial, n_threads=n_threads)
            for t in range(T):
                krec = advance(t)
                full_step(m_T, n_T, I_T, b, local.activation, x, u_kernel[:, t], alpha, noise_scale, seed, 0, t,
                          network.start, krec, local_units, row, clamp, partial, n_threads=n_threads)
                record_out[:, t + 1] = row
                tick(t)
            final_state = x
        else:
            v_kernel = np.broadcast_to(v, (B, T + 1, D))
            for t in range(T):
                latent_step(m_T, n_T, I_T, b, local.activation, kappa, np.ascontiguousarray(v_kernel[:, t]), t,
                            clamp, partial, n_threads=n_threads)
                advance(t)
                tick(t)
            def rebuild(cols, steps):
                # x = b + sum_r kappa_r m_r + sum_d v_d I_d, term by term (the same bits on any slice)
                k, vs = kappa_out[:, steps], v[:, steps]
                b_cols = b[cols].astype(np.float64)
                out = np.broadcast_to(b_cols, k.shape[:2] + b_cols.shape).copy()
                for r in range(R):
                    out += k[:, :, r, None] * m_T[r, cols].astype(np.float64)
                for d in range(D):
                    out += vs[:, :, d, None] * I_T[d, cols].astype(np.float64)
                return out.astype(dtype)

            record_out[:] = rebuild(local_units, slice(None))
            final_state = np.empty((B, n_local), dtype)
            for lo in range(0, n_local, _SAMPLE_CHUNK):  # bounded float64 temporaries
                cols = slice(lo, min(lo + _SAMPLE_CHUNK, n_local))
                final_state[:, cols] = rebuild(cols, slice(T, T + 1))[:, 0]
    watch.check(kappa_out, 0, T)
    watch.warn_if_diverged()
    wall_time = time.perf_counter() - started

    potentials = rates = None
    if len(units):
        # Each rank's recorded units, rank after rank; `where` puts them back in the order of `units`.
        where = np.concatenate([np.flatnonzero((units >= lo) & (units < hi)) for lo, hi in
                                (slice_bounds(N, network.n_ranks, r) for r in range(network.n_ranks))])
        local_rates = apply_activation(local.activation, record_out)
        mask, value, start, stop = clamp
        if mask is not None:
            clamped = mask[local_units]
            local_rates[:, start:min(stop, T + 1), clamped] = value[local_units][clamped]
        potentials = np.empty((B, T + 1, len(units)), dtype)
        rates = np.empty((B, T + 1, len(units)), local_rates.dtype)
        potentials[:, :, where] = np.concatenate(comm.allgather(record_out), axis=2)
        rates[:, :, where] = np.concatenate(comm.allgather(local_rates), axis=2)
    return DistributedSimulationResult(
        kappa=kappa_out, v=v, time=dt * np.arange(T + 1), units=units if len(units) else None,
        potentials=potentials, rates=rates, path=path, backend=backend, dtype=dtype, seed=seed, alpha=alpha,
        wall_time=wall_time, n_ranks=network.n_ranks, final_state=final_state,
    )
