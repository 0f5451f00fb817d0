"""Sparse low-rank networks (theory section 5; Herbert & Ostojic).

A sparse low-rank network keeps a random subset of the connections of a
low-rank one::

    P_ij = w X_ij m_i . n_j,     w = 1 / N ("1/N", the theory's scaling)  or  w = 1 ("1", high-sparsity scaling)

with the mask X either Bernoulli(1 - s) per entry or exactly C nonzeros per
row (s = 1 - C / N). The recurrent input of neuron i is then::

    sum_j P_ij phi(x_j) = w m_i . (sum over the columns j of row i of n_j phi(x_j))

so a simulation gathers R numbers per connection and never forms a weight.
The mask is counter-based (``_kernels/sparse_mask.py``): it is stored (CSR
with int32 column indices for Bernoulli masks; for fixed ones, offsets within
the strata in the tile order of the compiled kernels, 2 bytes per connection
when N <= 65536 C) or regenerated inside the kernels from (seed, row, k) at no
memory cost; both give the same network.
"""

import math
import numbers

import numpy as np

from . import _backends
from ._kernels import sparse_mask as _spec
from ._memory import check_allocation
from ._validation import check_int, check_seed
from .network import LowRankRNN

REPRESENTATIONS = ("implicit", "stored")
SCALINGS = ("1/N", "1")
#: Dense matrices (connectivity(), dense random parts) are refused above this many bytes.
_DENSE_LIMIT_FRACTION = 0.5


def _available_memory():
    from ._memory import available_memory

    return available_memory()


def _check_dense_fits(n_neurons, what, itemsize=8, copies=1, fix=None):
    """Raise before allocating a dense N x N array that would not fit in memory.

    ``fix`` replaces the default advice (use the sparse network with an implicit mask).
    """
    needed = copies * itemsize * float(n_neurons) ** 2
    limit = _DENSE_LIMIT_FRACTION * _available_memory()
    advice = fix if fix is not None else "the sparse network with an implicit mask, which needs no N x N storage."
    check_allocation(
        needed, f"{what}: a dense {n_neurons} x {n_neurons} matrix",
        f"Use a smaller network (N <= {int(math.sqrt(limit / (copies * itemsize)))} here), or {advice}",
        available=limit, limit_text="half the available memory",
    )


def _forwarded(name):
    """A property reading ``self.dense.<name>``; assigning it says where to change it instead."""

    def get(self):
        return getattr(self.dense, name)

    def refuse(self, value):
        owner = type(self).__name__
        raise AttributeError(
            f"{owner}.{name} is the {name!r} of its low-rank part and cannot be assigned here. "
            f"Assign it on the low-rank part (network.dense.{name} = ..., validated there; the low-rank "
            f"part may be shared with other networks), or build a new {owner} from a new LowRankRNN."
        )

    return property(get, refuse, doc=f"``dense.{name}`` (read-only here).")


def _read_only(name, doc=None):
    """A property reading ``self._<name>`` that cannot be assigned."""

    def get(self):
        return getattr(self, "_" + name)

    def refuse(self, value):
        owner = type(self).__name__
        raise AttributeError(
            f"The {name!r} attribute of {owner} cannot be assigned after construction (the kernels rely on "
            f"it matching the rest of the object). Build a new {owner} instead."
        )

    return property(get, refuse, doc=doc)


def _read_only_array(array):
    if array is not None:
        array.flags.writeable = False
    return array


class _DenseLoadings:
    """The loadings and settings of the low-rank network ``self.dense`` that a wrapper builds on.

    They are read here and assigned on ``self.dense`` (a :class:`LowRankRNN`,
    which validates every assignment).
    """

    m_T = _forwarded("m_T")
    n_T = _forwarded("n_T")
    I_T = _forwarded("I_T")
    b = _forwarded("b")
    m = _forwarded("m")
    n = _forwarded("n")
    I = _forwarded("I")  # noqa: E741
    tau = _forwarded("tau")
    activation = _forwarded("activation")
    dtype = _forwarded("dtype")
    n_neurons = _forwarded("n_neurons")
    rank = _forwarded("rank")
    n_inputs = _forwarded("n_inputs")


class SparseMask:
    """A random connectivity mask X (N x N), counter-based.

    Give exactly one of ``n_connections`` (exactly C nonzeros per row, or per
    column with ``per="column"``) and ``sparsity`` (X_ij ~ Bernoulli(1 - s)
    independently). Row i holds the presynaptic neurons j of neuron i
    (X_ij = 1), sorted.

    Parameters
    ----------
    n_neurons : int
        N, 1 <= N < 2**31.
    n_connections : int, optional
        C, 1 <= C <= N: each row has exactly C distinct columns, one drawn
        uniformly in each of the C strata [floor(k N / C), floor((k + 1) N / C))
        (see ``connector_sim/_kernels/sparse_mask.py``); P(X_ij = 1) = C / N.
    sparsity : float, optional
        s in [0, 1): each X_ij is 1 with probability 1 - s, independently.
    seed : int, optional
        Key of the mask; drawn at random when None (and stored).
    representation : {"implicit", "stored"}, optional
        "stored" holds the columns: CSR arrays for a Bernoulli mask (int32,
        4 bytes per connection); for a fixed mask, offsets within the strata
        in the tile order the compiled kernels read fastest
        (:meth:`tile_offsets`: 2 bytes per connection when N <= 65536 C, else
        4; :meth:`csr` converts). "implicit" holds nothing and regenerates
        the columns when needed. Default "implicit", and "stored" for
        ``per="column"`` (which has no implicit form).
    per : {"row", "column"}, default="row"
        For ``n_connections``: exactly C connections per row (each neuron
        receives C inputs, the default) or per column (each neuron projects
        to C others, as Herbert & Ostojic's sparse networks). The column mask
        is the transpose of the row mask of the same seed; its rows hold
        about C connections each (Binomial-like, mean C). The spectral theory
        (theory section 5) is the same for both: it uses only the mean and
        variance of X_ij. A column mask is stored as CSR (int32, 4 bytes per
        connection): the compiled kernels regenerate rows, not columns, so
        ``representation="implicit"`` is refused.

    Attributes
    ----------
    kind : {"fixed", "bernoulli"}
    per : {"row", "column"}
        Along which the "fixed" count holds ("row" for Bernoulli masks).
    density : float
        1 - s = C / N or P(X_ij = 1).

    All attributes are read-only (the kernels rely on them agreeing with
    each other), and so are the stored columns; build a new mask to change
    them.

    Raises
    ------
    TypeError
        If ``n_neurons``, ``n_connections`` or ``seed`` is not an int, or
        ``sparsity`` is not a number.
    ValueError
        If not exactly one of ``n_connections`` and ``sparsity`` is given, or
        one of them, ``n_neurons`` or ``representation`` is out of range.

    Examples
    --------
    >>> mask = SparseMask(100, n_connections=10, seed=0)
    >>> mask.kind, mask.density, mask.columns(0).shape
    ('fixed', 0.1, (10,))
    >>> SparseMask(1000, sparsity=0.9, seed=0).kind
    'bernoulli'
    >>> column = SparseMask(100, n_connections=10, seed=0, per="column")
    >>> column.representation, bool((column.to_dense().sum(axis=0) == 10).all())
    ('stored', True)
    """

    n_neurons = _read_only("n_neurons", "N.")
    kind = _read_only("kind", '"fixed" or "bernoulli".')
    n_connections = _read_only("n_connections", 'C of a "fixed" mask (None for "bernoulli").')
    density = _read_only("density", "1 - s.")
    seed = _read_only("seed", "Key of the mask.")
    representation = _read_only("representation", '"implicit" or "stored".')
    per = _read_only("per", '"row" or "column": along which a "fixed" mask has exactly C connections.')

    def __init__(self, n_neurons, *, n_connections=None, sparsity=None, seed=None, representation=None, per="row"):
        owner = "SparseMask"
        if per not in ("row", "column"):
            raise ValueError(f"The 'per' parameter of {owner} must be 'row' or 'column' (exactly C connections per "
                             f"row or per column). Got {per!r} instead.")
        if per == "column" and n_connections is None:
            raise ValueError(f"The 'per' parameter of {owner} applies to n_connections (exactly C per row or "
                             "column); a Bernoulli mask (sparsity) is the same by rows and by columns. "
                             "Leave per='row'.")
        if representation is None:
            representation = "stored" if per == "column" else "implicit"
        if per == "column" and representation == "implicit":
            raise ValueError(
                f"A SparseMask with per='column' cannot be implicit: the compiled kernels regenerate a mask row "
                "by row, and a column count would need every row. Use representation='stored' (CSR, 4 bytes per "
                "connection), or per='row' (exactly C inputs per neuron), which can be implicit.")
        self._per = per
        self._n_neurons = check_int(n_neurons, "n_neurons", minimum=1, maximum=_spec.MAX_NEURONS, owner=owner)
        if (n_connections is None) == (sparsity is None):
            raise ValueError(
                "Give exactly one of n_connections (exactly C connections per row) and sparsity (each "
                f"connection kept with probability 1 - s). Got n_connections={n_connections!r}, "
                f"sparsity={sparsity!r}."
            )
        if n_connections is not None:
            if isinstance(n_connections, bool) or not isinstance(n_connections, numbers.Integral):
                raise TypeError(
                    f"The 'n_connections' parameter of {owner} must be an int in [1, n_neurons = "
                    f"{self.n_neurons}]. Got {n_connections!r} instead."
                )
            if not 1 <= n_connections <= self.n_neurons:
                raise ValueError(
                    f"The 'n_connections' parameter of {owner} must be an int in [1, n_neurons = "
                    f"{self.n_neurons}] (C connections per row out of N neurons). Got {n_connections} instead."
                )
            self._kind = "fixed"
            self._n_connections = int(n_connections)
            self._density = self.n_connections / self.n_neurons
        else:
            if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
                raise TypeError(f"The 'sparsity' parameter of {owner} must be a number in [0, 1). Got {sparsity!r}.")
            if not 0.0 <= sparsity < 1.0:
                raise ValueError(
                    f"The 'sparsity' parameter of {owner} must be a number in [0, 1) (the fraction of "
                    f"connections removed; s = 1 would remove all). Got {sparsity} instead."
                )
            self._kind = "bernoulli"
            self._n_connections = None
            self._density = 1.0 - float(sparsity)
        if representation not in REPRESENTATIONS:
            raise ValueError(
                f"The 'representation' parameter of {owner} must be one of {list(REPRESENTATIONS)}. "
                f"Got {representation!r} instead."
            )
        self._seed = check_seed(seed, owner)
        self._representation = representation
        self._csr = None  # stored Bernoulli masks: (indptr, indices)
        self._tiles = None  # stored fixed masks: offsets in tile order (sparse_mask.to_tile_offsets)
        # Stored columns are read-only: the kernels trust them to be in range.
        if representation == "stored" and self.kind == "fixed" and per == "row":
            self._tiles = _read_only_array(self._build_tile_offsets())
        elif representation == "stored":
            self._csr = tuple(_read_only_array(part) for part in self._build_csr())

    # --- description -----------------------------------------------------------

    @property
    def sparsity(self):
        """s = 1 - density."""
        return 1.0 - self.density

    @property
    def log_q(self):
        """log1p(-p) of the Bernoulli scheme (-inf when p = 1); None for "fixed"."""
        if self.kind != "bernoulli":
            return None
        return -math.inf if self.density == 1.0 else math.log1p(-self.density)

    @property
    def expected_nnz(self):
        """Expected number of connections, N * N * density (exact for "fixed")."""
        return self.n_neurons * self.n_connections if self.kind == "fixed" else self.n_neurons**2 * self.density

    @property
    def nnz(self):
        """Number of connections (builds the mask if implicit and Bernoulli)."""
        if self.kind == "fixed":
            return self.n_neurons * self.n_connections
        return int(self.csr()[0][-1])

    @property
    def nbytes(self):
        """Bytes held by the mask (0 when implicit)."""
        if self._tiles is not None:
            return self._tiles.nbytes
        return 0 if self._csr is None else self._csr[0].nbytes + self._csr[1].nbytes

    def strata(self):
        """lo_k = floor(k N / C), k = 0 .. C, of the "fixed" scheme (int64; per="column": of its transpose)."""
        if self.kind != "fixed":
            raise ValueError("strata() exists for masks with a fixed number of connections per row only.")
        return _spec.strata(self.n_neurons, self.n_connections)

    # --- rows and CSR ----------------------------------------------------------------

    def _check_storage(self, itemsize=4):
        needed = itemsize * self.expected_nnz * (1 + 1e-3) + 8 * (self.n_neurons + 1)
        check_allocation(
            needed, f"Storing this mask ({itemsize} bytes per connection, {self.expected_nnz:.3g} connections)",
            "Use representation='implicit', which regenerates the columns and needs no storage.",
            available=_DENSE_LIMIT_FRACTION * _available_memory(), limit_text="half the available memory",
        )

    def _build_tile_offsets(self):
        N, C = self.n_neurons, self.n_connections
        dtype = _spec.offset_dtype(N, C)
        self._check_storage(dtype.itemsize)
        if not _backends.extension_built("_sparse_mask"):
            return _spec.to_tile_offsets(_spec.csr_reference(self.seed, N, n_connections=C)[1], N, C)
        offsets = np.empty(N * C, dtype)
        _backends.load_extension("_sparse_mask").fixed_tile_offsets(self.seed, N, C, self.strata(), _spec.TILE_ROWS,
                                                                    offsets)
        return offsets

    def _build_csr(self):
        N = self.n_neurons
        if self.kind == "fixed" and self.per == "column":
            # The transpose of the row mask of the same seed: row i of X holds the j whose row-mask row j has i.
            self._check_storage()
            indptr, indices = self._row_mask()._build_csr()
            rows = np.repeat(np.arange(N, dtype=np.int32), np.diff(indptr))
            order = np.argsort(indices, kind="stable")  # by column of the row mask, rows ascending within it
            transposed_indptr = np.zeros(N + 1, np.int64)
            np.cumsum(np.bincount(indices, minlength=N), out=transposed_indptr[1:])
            return transposed_indptr, rows[order]
        if self.kind == "fixed":
            indptr = np.arange(N + 1, dtype=np.int64) * self.n_connections
            if self._tiles is not None:
                return indptr, _spec.from_tile_offsets(self._tiles, N, self.n_connections)
            self._check_storage()
            if _backends.extension_built("_sparse_mask"):
                return indptr, _backends.load_extension("_sparse_mask").fixed_indices(
                    self.seed, N, self.n_connections, self.strata())
            return _spec.csr_reference(self.seed, N, n_connections=self.n_connections)
        self._check_storage()
        if _backends.extension_built("_sparse_mask"):
            return _backends.load_extension("_sparse_mask").bernoulli_csr(self.seed, N, self.log_q)
        return _spec.csr_reference(self.seed, N, log_q=self.log_q)

    def csr(self):
        """(indptr, indices): int64 (N + 1,) and int32 (nnz,).

        Kept for stored Bernoulli masks; built now (not kept) for implicit
        masks and for stored fixed masks, which keep their columns in tile
        order (:meth:`tile_offsets`).
        """
        return self._csr if self._csr is not None else self._build_csr()

    def tile_offsets(self):
        """A fixed mask as the compiled kernels read it: offsets within the strata, in tiles.

        Tile t holds the rows [t T, min(N, (t + 1) T)), n_t of them, T =
        ``connector_sim._kernels.sparse_mask.TILE_ROWS``; column k of row
        t T + r is ``strata()[k] + tile_offsets()[t T C + k n_t + r]``
        (uint16 when N <= 65536 C, else uint32). Kept when stored, built now
        otherwise.
        """
        if self.kind != "fixed" or self.per != "row":
            raise ValueError("tile_offsets() exists for masks with a fixed number of connections per row only.")
        return self._tiles if self._tiles is not None else self._build_tile_offsets()

    def columns(self, row):
        """The sorted columns j with X_ij = 1 of one row i (int64)."""
        row = check_int(row, "row", minimum=0, maximum=self.n_neurons - 1, owner="SparseMask.columns")
        if self._csr is not None:
            indptr, indices = self._csr
            return indices[indptr[row]:indptr[row + 1]].astype(np.int64)
        if self._tiles is not None:
            i0 = row - row % _spec.TILE_ROWS
            n = min(_spec.TILE_ROWS, self.n_neurons - i0)
            start = i0 * self.n_connections + (row - i0)
            return self.strata()[:-1] + self._tiles[start:start + n * self.n_connections:n]
        if self.kind == "fixed" and self.per == "column":
            indptr, indices = self.csr()
            return indices[indptr[row]:indptr[row + 1]].astype(np.int64)
        if self.kind == "fixed":
            return _spec.fixed_columns(self.seed, self.n_neurons, self.n_connections, [row])[0]
        return _spec.bernoulli_row(self.seed, self.n_neurons, self.log_q, row)

    def degrees(self):
        """Number of connections of every row, shape (N,)."""
        if self.kind == "fixed" and self.per == "row":
            return np.full(self.n_neurons, self.n_connections, np.int64)
        return np.diff(self.csr()[0])

    def stored(self):
        """The same mask with its columns stored."""
        if self.representation == "stored":
            return self
        return self._copy("stored")

    def implicit(self):
        """The same mask, regenerated on demand (no storage)."""
        if self.representation == "implicit":
            return self
        return self._copy("implicit")

    def _row_mask(self):
        """The per-row mask of the same seed (the transpose of a per="column" mask), implicit."""
        return SparseMask(self.n_neurons, n_connections=self.n_connections, seed=self.seed)

    def _copy(self, representation):
        if self.kind == "fixed":
            return SparseMask(self.n_neurons, n_connections=self.n_connections, seed=self.seed,
                              representation=representation, per=self.per)
        return SparseMask(self.n_neurons, sparsity=self.sparsity, seed=self.seed, representation=representation)

    def to_dense(self):
        """X as a dense (N, N) bool array; only for small N."""
        _check_dense_fits(self.n_neurons, "SparseMask.to_dense()", itemsize=1)
        indptr, indices = self.csr()
        dense = np.zeros((self.n_neurons, self.n_neurons), bool)
        rows = np.repeat(np.arange(self.n_neurons), np.diff(indptr))
        dense[rows, indices] = True
        return dense

    def _kernel_args(self):
        """The mask as the sparse kernels take it (``_kernels.simulate_sparse.MaskArgs``)."""
        from ._kernels.simulate_sparse import mask_args

        return mask_args(self)

    def __repr__(self):
        size = f"n_connections={self.n_connections}" if self.kind == "fixed" else f"sparsity={self.sparsity:.6g}"
        per = ", per='column'" if self.per == "column" else ""
        return (f"SparseMask(n_neurons={self.n_neurons}, {size}, seed={self.seed}, "
                f"representation={self.representation!r}{per})")


class SparseLowRankRNN(_DenseLoadings):
    """A low-rank RNN whose connections are kept by a random mask.

    ::

        tau dx/dt = -x + P phi(x) + I u(t) + b,   P_ij = w X_ij m_i . n_j

    with w = 1 / N (``scaling="1/N"``, theory section 5) or w = 1
    (``scaling="1"``, the high-sparsity scaling with C fixed). For s = 0 and
    w = 1 / N it is the dense :class:`LowRankRNN`.

    Parameters
    ----------
    network : LowRankRNN
        The loadings m, n, I, b, tau, activation and dtype.
    mask : SparseMask
        X; its n_neurons must equal network.n_neurons.
    scaling : {"1/N", "1"}, default="1/N"

    Attributes
    ----------
    weight : float
        w.
    gain : float
        w N (1 - s): the mean-field recurrent gain. For i.i.d. rows,
        sum_j P_ij phi(x_j) ~= gain m_i . (n^T phi(x) / N) (Herbert & Ostojic
        eq. 26), so the latent kappa of a simulation is the low-pass
        filtered gain * n^T phi(x) / N, and x ~= m kappa + I v + b.

    Assigning ``dense``, ``mask`` or ``scaling`` validates the new value as
    the constructor does; the loadings (m, n, I, b, tau, activation) are read
    here and assigned on ``network.dense`` (a validated :class:`LowRankRNN`).

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN or ``mask`` not a SparseMask.
    ValueError
        If the mask's N differs from the network's, or ``scaling`` is not
        "1/N" or "1".

    Examples
    --------
    >>> network = rank_one_gaussian(200, 1.0, 0.5, random_state=0)
    >>> sparse = SparseLowRankRNN(network, SparseMask(200, n_connections=20, seed=1))
    >>> sparse.gain, sparse.weight
    (0.1, 0.005)
    """

    def __init__(self, network, mask, *, scaling="1/N"):
        if not isinstance(network, LowRankRNN):
            raise TypeError(f"network must be a LowRankRNN. Got {type(network).__name__}.")
        if not isinstance(mask, SparseMask):
            raise TypeError(f"mask must be a SparseMask. Got {type(mask).__name__}.")
        if mask.n_neurons != network.n_neurons:
            raise ValueError(
                f"The mask is for {mask.n_neurons} neurons but the network has {network.n_neurons}. "
                "Build the mask with SparseMask(network.n_neurons, ...)."
            )
        if scaling not in SCALINGS:
            raise ValueError(
                f"The 'scaling' parameter of SparseLowRankRNN must be '1/N' (P_ij = X_ij m_i n_j / N) or '1' "
                f"(P_ij = X_ij m_i n_j, high-sparsity scaling). Got {scaling!r} instead."
            )
        self._dense = network
        self._mask = mask
        self._scaling = scaling

    # Assigning dense, mask or scaling validates the new value as the constructor does.

    @property
    def dense(self):
        """The low-rank part (a :class:`LowRankRNN`): m, n, I, b, tau, activation, dtype."""
        return self._dense

    @dense.setter
    def dense(self, network):
        if not isinstance(network, LowRankRNN):
            raise TypeError(f"The 'dense' attribute of SparseLowRankRNN must be a LowRankRNN. Got "
                            f"{type(network).__name__}.")
        if network.n_neurons != self._mask.n_neurons:
            raise ValueError(
                f"The 'dense' attribute of SparseLowRankRNN must have the mask's {self._mask.n_neurons} neurons. "
                f"Got a network of {network.n_neurons}. Build a new SparseLowRankRNN (or sparsify) instead.")
        self._dense = network

    @property
    def mask(self):
        """The connectivity mask X (a :class:`SparseMask`)."""
        return self._mask

    @mask.setter
    def mask(self, mask):
        if not isinstance(mask, SparseMask):
            raise TypeError(f"The 'mask' attribute of SparseLowRankRNN must be a SparseMask. Got {type(mask).__name__}.")
        if mask.n_neurons != self._dense.n_neurons:
            raise ValueError(
                f"The 'mask' attribute of SparseLowRankRNN must be for the network's {self._dense.n_neurons} "
                f"neurons. Got a mask for {mask.n_neurons}. Build it with SparseMask(network.n_neurons, ...).")
        self._mask = mask

    @property
    def scaling(self):
        """w: "1/N" or "1"."""
        return self._scaling

    @scaling.setter
    def scaling(self, scaling):
        if scaling not in SCALINGS:
            raise ValueError(f"The 'scaling' attribute of SparseLowRankRNN must be '1/N' or '1'. Got {scaling!r}.")
        self._scaling = scaling

    @property
    def weight(self):
        return 1.0 / self.n_neurons if self.scaling == "1/N" else 1.0

    @property
    def gain(self):
        return self.weight * self.n_neurons * self.mask.density

    @property
    def sparsity(self):
        return self.mask.sparsity

    @property
    def nbytes(self):
        """Bytes held by the loadings and the mask (0 for an implicit mask)."""
        return self.dense.nbytes + self.mask.nbytes

    def astype(self, dtype):
        """A copy with the loadings in ``dtype`` (same mask)."""
        return SparseLowRankRNN(self.dense.astype(dtype), self.mask, scaling=self.scaling)

    def with_representation(self, representation):
        """The same network with its mask "stored" or "implicit"."""
        if representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {list(REPRESENTATIONS)}. Got {representation!r}.")
        mask = self.mask.stored() if representation == "stored" else self.mask.implicit()
        return SparseLowRankRNN(self.dense, mask, scaling=self.scaling)

    def connectivity(self):
        """The dense N x N matrix P (float64); only where it fits in memory."""
        _check_dense_fits(self.n_neurons, "connectivity()")
        low_rank = self.m.astype(np.float64) @ self.n.T.astype(np.float64)
        low_rank *= self.weight
        low_rank[~self.mask.to_dense()] = 0.0
        return low_rank

    def to_scipy(self, dtype=None):
        """P as a ``scipy.sparse.csr_matrix`` with stored weights (dtype of the loadings by default)."""
        import scipy.sparse

        dtype = self.dtype if dtype is None else np.dtype(dtype)
        indptr, indices = self.mask.csr()
        data = np.empty(len(indices), dtype)
        m64, n64 = self.m.astype(np.float64), self.n.astype(np.float64)
        step = max(1, (1 << 22) // max(1, int(self.mask.expected_nnz // self.n_neurons)))
        for start in range(0, self.n_neurons, step):
            stop = min(start + step, self.n_neurons)
            window = slice(indptr[start], indptr[stop])
            rows = np.repeat(np.arange(start, stop), np.diff(indptr[start:stop + 1]))
            data[window] = self.weight * np.einsum("kr,kr->k", m64[rows], n64[indices[window]])
        return scipy.sparse.csr_matrix((data, indices, indptr), shape=(self.n_neurons, self.n_neurons))

    def __repr__(self):
        return f"SparseLowRankRNN({self.dense!r}, {self.mask!r}, scaling={self.scaling!r})"


def sparsify(network, *, n_connections=None, sparsity=None, seed=None, representation=None,
             scaling="1/N", per="row"):
    """Keep a random subset of the connections of a low-rank network.

    ::

        P_ij = w X_ij m_i . n_j,   X_ij ~ Bernoulli(1 - s)  or  exactly C per row

    Parameters
    ----------
    network : LowRankRNN
    n_connections : int, optional
        C in [1, N]: exactly C connections per row (s = 1 - C / N), or per
        column with ``per="column"``.
    sparsity : float, optional
        s in [0, 1): each connection removed with probability s.
    seed : int, optional
        Key of the mask.
    representation : {"implicit", "stored"}, optional
        Default "implicit" ("stored" for ``per="column"``), see :class:`SparseMask`.
    scaling : {"1/N", "1"}, default="1/N"
        w = 1 / N (theory section 5) or w = 1 (high-sparsity scaling).
    per : {"row", "column"}, default="row"
        Exactly C inputs per neuron ("row") or C outputs per neuron
        ("column", Herbert & Ostojic), see :class:`SparseMask`.

    Returns
    -------
    SparseLowRankRNN

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN (or an option has the wrong type,
        see :class:`SparseMask`).
    ValueError
        If not exactly one of ``n_connections`` and ``sparsity`` is given, or
        an option is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian, sparsify
    >>> dense = Gaussian(np.zeros(2), [[1.0, 0.5], [0.5, 1.0]], rank=1).sample(1000, 0)
    >>> sparse = sparsify(dense, n_connections=100, seed=1)
    >>> sparse.mask.columns(0).shape, sparse.gain
    ((100,), 0.1)
    """
    if not isinstance(network, LowRankRNN):
        raise TypeError(f"network must be a LowRankRNN. Got {type(network).__name__}.")
    mask = SparseMask(network.n_neurons, n_connections=n_connections, sparsity=sparsity, seed=seed,
                      representation=representation, per=per)
    return SparseLowRankRNN(network, mask, scaling=scaling)


def rank_one_gaussian(n_neurons, variance, covariance, *, random_state=None, n_inputs=0, input_overlap=0.0,
                      dtype=np.float64, tau=1.0, activation="tanh"):
    """A rank-one network with Gaussian (m_i, n_i) (Herbert & Ostojic eq. 4).

    m_i, n_i ~ N(0, sigma^2) with cov(m_i, n_i) = sigma_mn; with ``n_inputs = 1``
    an input loading I_i ~ N(0, 1) with cov(n_i, I_i) = sigma_nI and
    independent of m_i.

    Parameters
    ----------
    n_neurons : int
    variance : float
        sigma^2 > 0.
    covariance : float
        sigma_mn, ``|sigma_mn| <= sigma^2``.
    random_state : None, int or numpy.random.Generator
    n_inputs : {0, 1}, default=0
    input_overlap : float, default=0
        sigma_nI (needs n_inputs = 1).
    dtype, tau, activation
        As in :class:`LowRankRNN`.

    Returns
    -------
    LowRankRNN

    Raises
    ------
    TypeError
        If ``n_neurons`` or ``n_inputs`` is not an int, or ``variance`` not a
        number.
    ValueError
        If ``variance`` <= 0, ``covariance`` is not a number with
        ``|covariance| <= variance`` (no such Gaussian),
        ``n_inputs`` is not 0 or 1, or ``input_overlap`` is given without an
        input or is too large for a valid covariance.

    Examples
    --------
    >>> import numpy as np
    >>> network = rank_one_gaussian(200, 1.0, 0.5, random_state=0)
    >>> network.m.shape, round(float(np.mean(network.m[:, 0] * network.n[:, 0])), 1)
    ((200, 1), 0.5)
    """
    from ._validation import check_positive_scalar
    from .distributions import Gaussian

    variance = check_positive_scalar(variance, "variance", owner="rank_one_gaussian")
    if isinstance(covariance, bool) or not isinstance(covariance, numbers.Real) or abs(covariance) > variance:
        raise ValueError(
            f"The 'covariance' parameter of rank_one_gaussian must be a number with |sigma_mn| <= sigma^2 = "
            f"{variance}. Got {covariance!r} instead."
        )
    n_inputs = check_int(n_inputs, "n_inputs", minimum=0, maximum=1, owner="rank_one_gaussian")
    cov = np.array([[variance, covariance], [covariance, variance]], dtype=np.float64)
    if n_inputs:
        cov = np.pad(cov, ((0, 1), (0, 1)))
        cov[2, 2] = 1.0
        cov[1, 2] = cov[2, 1] = input_overlap
    elif input_overlap:
        raise ValueError("input_overlap needs n_inputs=1.")
    try:
        distribution = Gaussian(np.zeros(len(cov)), cov, rank=1, n_inputs=n_inputs)
    except ValueError as error:
        raise ValueError(
            f"The covariance of (m, n, I) is not positive semi-definite: sigma^2 = {variance}, sigma_mn = "
            f"{covariance}, sigma_nI = {input_overlap} (need sigma_mn^2 + sigma^2 sigma_nI^2 <= sigma^4)."
        ) from error
    return distribution.sample(n_neurons, random_state, dtype=dtype, tau=tau, activation=activation)


class ExcitatoryInhibitory:
    """An excitatory/inhibitory random part (Rajan & Abbott 2006) for :class:`LowRankPlusRandomRNN`.

    The first ``round(f N)`` columns (presynaptic neurons) are excitatory, the
    rest inhibitory; the entries of chi in a column of population c are
    independent Gaussians::

        chi_ij = (mu_c + sigma_c xi_ij) / sqrt(N),   xi_ij ~ N(0, 1),   c = E or I

    and the random part is g chi. With ``balanced=True`` (the default) every
    row of chi is then shifted to sum to zero exactly, chi <- chi (I - 1 1^T / N),
    as Rajan & Abbott do. Spectrum (theory section 5; :func:`~connector_sim.spectra.predicted_ei_radius`,
    :func:`~connector_sim.spectra.predicted_ei_outlier`):

    - bulk: a disk of radius r = g sqrt(f sigma_E^2 + (1 - f) sigma_I^2) (the
      circular law with a column-variance profile; not uniform in the disk
      when sigma_E != sigma_I);
    - balanced row sums: 1 is an eigenvector with eigenvalue 0 and the other
      eigenvalues are those of the fluctuations alone, whatever the means: no
      mean outlier;
    - unbalanced (``balanced=False``): the mean matrix g 1 mu^T / sqrt(N) adds
      an outlier at g sqrt(N) (f mu_E + (1 - f) mu_I), which is 0 when the
      means balance; even then a few eigenvalues leave the disk unless the
      row sums are set to zero (Rajan & Abbott).

    With f = 1, mu_E = 0, sigma_E = 1 it is the Gaussian chi of the default.

    Sparse (``n_connections=C``, fixed in-degree): every row keeps exactly C
    entries (a per-row :class:`SparseMask`, density d = C / N), scaled by
    1 / sqrt(C) instead of 1 / sqrt(N); balanced row sums shift the kept
    entries only. The mask's spread of the means adds to the variance:
    r = g sqrt(f (sigma_E^2 + (1 - d) mu_E^2) + (1 - f) (sigma_I^2 + (1 - d) mu_I^2)),
    and the unbalanced mean outlier is g sqrt(C) (f mu_E + (1 - f) mu_I).

    Parameters
    ----------
    fraction : float in (0, 1], default=0.8
        f, the excitatory fraction of the columns.
    mean_e, mean_i : float, default=1.0 and -4.0
        mu_E and mu_I (balanced: 0.8 * 1 + 0.2 * (-4) = 0).
    variance_e, variance_i : float, default=1.0
        sigma_E^2 and sigma_I^2.
    balanced : bool, default=True
        Set every row sum of chi to zero.
    n_connections : int, optional
        C: keep exactly C entries per row (sparse E/I with fixed in-degree).

    Raises
    ------
    TypeError
        If a parameter is not a number (``balanced`` not a bool).
    ValueError
        If ``fraction`` is not in (0, 1], a variance is negative or a value
        is not finite.

    Examples
    --------
    >>> spec = ExcitatoryInhibitory(fraction=0.8, mean_e=1.0, mean_i=-4.0)
    >>> spec.n_excitatory(1000), spec.mean_outlier(1000)
    (800, 0.0)
    """

    def __init__(self, fraction=0.8, *, mean_e=1.0, mean_i=-4.0, variance_e=1.0, variance_i=1.0, balanced=True,
                 n_connections=None):
        from ._validation import check_nonnegative_scalar, check_positive_scalar

        owner = "ExcitatoryInhibitory"
        self.fraction = check_positive_scalar(fraction, "fraction", owner=owner)
        if self.fraction > 1.0:
            raise ValueError(f"The 'fraction' parameter of {owner} must be in (0, 1] (the excitatory fraction f). "
                             f"Got {fraction!r} instead.")
        for name, value in (("mean_e", mean_e), ("mean_i", mean_i)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"The {name!r} parameter of {owner} must be a number. Got {value!r} instead.")
            if not math.isfinite(value):
                raise ValueError(f"The {name!r} parameter of {owner} must be finite. Got {value!r} instead.")
        self.mean_e, self.mean_i = float(mean_e), float(mean_i)
        self.variance_e = check_nonnegative_scalar(variance_e, "variance_e", owner=owner)
        self.variance_i = check_nonnegative_scalar(variance_i, "variance_i", owner=owner)
        if not isinstance(balanced, (bool, np.bool_)):
            raise TypeError(f"The 'balanced' parameter of {owner} must be True or False. Got {balanced!r} instead.")
        self.balanced = bool(balanced)
        if n_connections is not None:
            n_connections = check_int(n_connections, "n_connections", minimum=1, owner=owner)
        self.n_connections = n_connections

    def _connections(self, n_neurons):
        if self.n_connections is not None and self.n_connections > n_neurons:
            raise ValueError(f"The 'n_connections' parameter of ExcitatoryInhibitory must be at most N = "
                             f"{n_neurons}. Got {self.n_connections} instead.")
        return n_neurons if self.n_connections is None else self.n_connections

    def n_excitatory(self, n_neurons):
        """N_E = round(f N): columns 0 .. N_E - 1 are excitatory."""
        return int(round(self.fraction * n_neurons))

    def column_means(self, n_neurons):
        """mu_c of every column, shape (N,)."""
        means = np.full(n_neurons, self.mean_i)
        means[:self.n_excitatory(n_neurons)] = self.mean_e
        return means

    def column_variances(self, n_neurons):
        """sigma_c^2 of every column, shape (N,)."""
        variances = np.full(n_neurons, self.variance_i)
        variances[:self.n_excitatory(n_neurons)] = self.variance_e
        return variances

    def expected_entries(self, n_neurons):
        """E[chi_ij] of every column j, shape (N,): mu_c / sqrt(N), or mu_c sqrt(C) / N when sparse (unbalanced)."""
        return self.column_means(n_neurons) * math.sqrt(self._connections(n_neurons)) / n_neurons

    def effective_variances(self, n_neurons):
        """N Var(chi_ij) of every column j, shape (N,): sigma_c^2 + (1 - C / N) mu_c^2."""
        density = self._connections(n_neurons) / n_neurons
        return self.column_variances(n_neurons) + (1.0 - density) * self.column_means(n_neurons) ** 2

    def mean_outlier(self, n_neurons, g=1.0):
        """g sqrt(C) (f_N mu_E + (1 - f_N) mu_I), f_N = N_E / N, C = N when dense; 0 when balanced."""
        if self.balanced:
            return 0.0
        return float(g * np.sum(self.expected_entries(n_neurons)))

    def sample(self, n_neurons, rng, dtype=np.float64):
        """chi (N x N, dtype), drawn from ``rng`` (a numpy Generator)."""
        dtype = np.dtype(dtype)
        C = self._connections(n_neurons)
        chi = rng.standard_normal((n_neurons, n_neurons), dtype=dtype)
        chi *= np.sqrt(self.column_variances(n_neurons)).astype(dtype)[None, :]
        chi += self.column_means(n_neurons).astype(dtype)[None, :]
        if self.n_connections is None:
            if self.balanced:
                chi -= chi.mean(axis=1, dtype=np.float64, keepdims=True).astype(dtype)
        else:
            kept = SparseMask(n_neurons, n_connections=C, seed=int(rng.integers(2**63))).to_dense()
            chi[~kept] = 0
            if self.balanced:
                chi -= np.where(kept, chi.sum(axis=1, dtype=np.float64, keepdims=True) / C, 0.0).astype(dtype)
        chi *= dtype.type(1.0 / math.sqrt(C))
        return chi

    def __repr__(self):
        sparse = "" if self.n_connections is None else f", n_connections={self.n_connections}"
        return (f"ExcitatoryInhibitory(fraction={self.fraction:.6g}, mean_e={self.mean_e:.6g}, "
                f"mean_i={self.mean_i:.6g}, variance_e={self.variance_e:.6g}, variance_i={self.variance_i:.6g}, "
                f"balanced={self.balanced}{sparse})")


class LowRankPlusRandomRNN(_DenseLoadings):
    """A dense low-rank network plus a random full-rank part (the comparison model).

    ::

        tau dx/dt = -x + J phi(x) + I u(t) + b,   J = m n^T / N + g chi,   chi_ij ~ N(0, 1 / N)

(or an excitatory/inhibitory chi, ``random=ExcitatoryInhibitory(...)``)

    (Mastrogiuseppe & Ostojic 2018; Herbert & Ostojic Fig. 4, top row). Its
    spectrum has the outliers of m n^T / N (for rank one, n^T m / N ->
    sigma_mn) and a disk of radius g (circular law): the same two components
    as a sparse low-rank network, whose bulk plays the role of g chi. The
    N x N random part is stored (in the dtype of the loadings), so this model
    is meant for N up to a few thousand; construction refuses, before any
    allocation, an N whose matrix would not fit in half the available memory.

    Parameters
    ----------
    network : LowRankRNN
        The low-rank part m, n and the inputs I, biases b, tau, activation, dtype.
    g : float
        Strength g >= 0 of the random part.
    seed : int, optional
        Seed of chi (``numpy.random.default_rng(seed)``); drawn at random when None (and stored).
    random : "gaussian" or ExcitatoryInhibitory, default="gaussian"
        How chi is drawn: i.i.d. N(0, 1 / N), or an excitatory/inhibitory
        matrix (:class:`ExcitatoryInhibitory`, Rajan & Abbott 2006), by
        default with balanced row sums.

    Attributes
    ----------
    random_part : ndarray of shape (N, N)
        g chi, in the dtype of the loadings.
    gain : float
        1: the latent kappa of a simulation is the low-pass filtered n^T phi(x) / N.

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN, ``g`` not a number or ``seed`` not
        an int.
    ValueError
        If ``g`` < 0.
    TooLargeError
        If the N x N random part would not fit in memory.

    Examples
    --------
    >>> network = rank_one_gaussian(200, 1.0, 0.5, random_state=0)
    >>> LowRankPlusRandomRNN(network, 0.5, seed=0).connectivity().shape
    (200, 200)
    >>> ei = LowRankPlusRandomRNN(network, 0.5, seed=0, random=ExcitatoryInhibitory(0.8))
    >>> bool(abs(ei.random_part.sum(axis=1)).max() < 1e-12)  # balanced row sums
    True
    """

    def __init__(self, network, g, *, seed=None, random="gaussian"):
        from ._validation import check_nonnegative_scalar

        owner = "LowRankPlusRandomRNN"
        if not isinstance(network, LowRankRNN):
            raise TypeError(f"network must be a LowRankRNN (the low-rank part). Got {type(network).__name__}.")
        self._g = check_nonnegative_scalar(g, "g", owner=owner)
        self._seed = check_seed(seed, owner)
        self._dense = network
        N = network.n_neurons
        _check_dense_fits(
            N, f"{owner} (the random part g chi)", itemsize=network.dtype.itemsize,
            fix="a sparse network (sparsify(...), whose bulk plays the role of g chi) with an implicit mask, "
                "which needs no N x N storage.")
        if not (isinstance(random, ExcitatoryInhibitory) or (isinstance(random, str) and random == "gaussian")):
            raise ValueError(f"The 'random' parameter of {owner} must be 'gaussian' or an ExcitatoryInhibitory. "
                             f"Got {random!r} instead.")
        self._random = random
        rng = np.random.default_rng(self.seed)
        if random == "gaussian":
            chi = rng.standard_normal((N, N), dtype=network.dtype)
            chi *= network.dtype.type(self.g / math.sqrt(N))
        else:
            chi = random.sample(N, rng, network.dtype)
            chi *= network.dtype.type(self.g)
        chi.flags.writeable = False
        self._random_part = chi

    gain = property(lambda self: 1.0)
    random_part = _read_only("random_part", "g chi, shape (N, N), read-only.")
    g = _read_only("g", "Strength of the random part (fixed: it scales random_part).")
    seed = _read_only("seed", "Seed of chi.")
    random = _read_only("random", '"gaussian" or the ExcitatoryInhibitory that drew chi.')

    @property
    def dense(self):
        """The low-rank part (a :class:`LowRankRNN`); assigning it keeps N and the dtype of the random part."""
        return self._dense

    @dense.setter
    def dense(self, network):
        if not isinstance(network, LowRankRNN):
            raise TypeError(f"The 'dense' attribute of LowRankPlusRandomRNN must be a LowRankRNN. Got "
                            f"{type(network).__name__}.")
        if network.n_neurons != self.n_neurons or network.dtype != self._dense.dtype:
            raise ValueError(
                f"The 'dense' attribute of LowRankPlusRandomRNN must have {self.n_neurons} neurons and dtype "
                f"{self._dense.dtype} (those of the random part). Got {network.n_neurons} neurons, dtype "
                f"{network.dtype}. Build a new LowRankPlusRandomRNN instead.")
        self._dense = network

    @property
    def nbytes(self):
        """Bytes held by the loadings and the random part."""
        return self.dense.nbytes + self.random_part.nbytes

    def connectivity(self):
        """The dense N x N matrix J = m n^T / N + g chi (float64)."""
        _check_dense_fits(self.n_neurons, "connectivity()", copies=2)
        J = self.m.astype(np.float64) @ self.n.T.astype(np.float64)
        J /= self.n_neurons
        J += self.random_part
        return J

    def __repr__(self):
        random = "" if self.random == "gaussian" else f", random={self.random!r}"
        return f"LowRankPlusRandomRNN({self.dense!r}, g={self.g:.6g}, seed={self.seed}{random})"
