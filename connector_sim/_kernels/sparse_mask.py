"""Counter-based sparse connectivity masks: the specification (NumPy reference).

A mask X (N x N, X_ij = 1 if neuron j projects to neuron i) is a function of
(seed, N, C) or (seed, N, p): row i's columns are regenerated from a hash of
(seed, i, k), so the same mask can be stored (CSR, int32 column indices) or
recomputed on the fly inside a simulation kernel without any memory. Every
backend (this module, the Cython module ``connector_sim._ext._sparse_mask``,
the numba and C++ kernels) produces the same columns in the same order.

Keys (all arithmetic modulo 2**64, ``mix64`` and ``GOLDEN`` from
``counter_rng``)::

    mask_key(seed)     = mix64(seed ^ MASK_SALT)
    row_key(seed, i)   = mix64(mask_key(seed) + GOLDEN (i + 1))
    draw(seed, i, k)   = mix64(row_key(seed, i) + GOLDEN (k + 1))

Exactly C per row ("fixed", stratified): [0, N) is cut into C strata
``lo_k = floor(k N / C)``, k = 0 .. C, and row i takes one column in each::

    u_k   = high 32 bits of draw(seed, i, k // 2) if k is even, else its low 32 bits
    col_k = lo_k + floor(u_k (lo_{k+1} - lo_k) / 2**32)

so the C columns of a row are distinct and sorted by construction, cost one
hash per two connections, and column j is present with probability
1 / (lo_{k+1} - lo_k) = C / N (exactly when C divides N; otherwise within a
factor (1 +- C / N)). Rows are independent. The entries of one row are
negatively correlated within a stratum, as they are for a uniform C-subset;
neither the mean nor the variance of X_ij, which is all the spectral theory
of theory section 5 uses, depends on the choice (checked in tests/test_sparse.py).

Bernoulli(p) per entry ("bernoulli"): the gaps between successive columns of
i.i.d. Bernoulli(p) trials are i.i.d. geometric, so::

    U_k   = (draw(seed, i, k) >> 11 + 0.5) 2**-53            in (0, 1)
    G_k   = floor(log(U_k) / log_q),  log_q = log1p(-p)     (float64)
    col_0 = G_0,  col_k = col_{k-1} + 1 + G_k,  stop at the first col_k >= N

which is exact Bernoulli(p) sampling (up to the 53-bit resolution of U). The
only floating-point step is ``log``: every backend calls the C library's (NumPy
falls back to it for float64 on CPUs without AVX-512); a backend whose log
differed by one ulp could move one column of one row in ~1e16 draws.
"""

import numpy as np

from .counter_rng import GOLDEN, mix64

#: Separates mask keys from the noise keys of counter_rng ("mask_row").
MASK_SALT = np.uint64(0x6D61736B5F726F77)
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO_TO_MINUS_53 = 2.0**-53

#: Largest N: column indices are stored as int32.
MAX_NEURONS = 2**31 - 1

#: Rows per tile of a stored "fixed" mask (the C++ kernels' SPARSE_TILE_ROWS).
TILE_ROWS = 16384


def _u64(value):
    return np.uint64(int(value) & 0xFFFFFFFFFFFFFFFF)


def mask_key(seed):
    """mix64(seed ^ MASK_SALT), the key shared by all rows of one mask."""
    return np.uint64(mix64(np.array([_u64(seed) ^ MASK_SALT], np.uint64))[0])


def row_keys(seed, rows):
    """row_key(seed, i) for an array of rows i (uint64)."""
    rows = np.asarray(rows, np.uint64)
    with np.errstate(over="ignore"):
        return mix64(mask_key(seed) + GOLDEN * (rows + np.uint64(1)))


def strata(n_neurons, n_connections):
    """lo_k = floor(k N / C) for k = 0 .. C (int64, lo_0 = 0, lo_C = N)."""
    k = np.arange(n_connections + 1, dtype=np.int64)
    return (k * np.int64(n_neurons)) // np.int64(n_connections)


def fixed_columns(seed, n_neurons, n_connections, rows):
    """Columns of ``rows`` under the "fixed" (exactly C per row) scheme.

    Returns
    -------
    columns : ndarray of shape (len(rows), C), int64
        Sorted within each row.
    """
    C = int(n_connections)
    lo = strata(n_neurons, C)
    width = (lo[1:] - lo[:-1]).astype(np.uint64)
    keys = row_keys(seed, rows)
    pairs = np.arange(1, (C + 1) // 2 + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = mix64(keys[:, None] + GOLDEN * pairs[None, :])  # (n_rows, ceil(C / 2))
    halves = np.stack([bits >> np.uint64(32), bits & _LOW32], axis=2).reshape(len(keys), -1)[:, :C]
    return lo[:-1][None, :] + ((halves * width[None, :]) >> np.uint64(32)).astype(np.int64)


def bernoulli_row(seed, n_neurons, log_q, row):
    """Columns of one row under the "bernoulli" scheme (sorted int64 array)."""
    key = row_keys(seed, [row])[0]
    N = int(n_neurons)
    columns = []
    position = -1
    # Gaps are drawn in batches of about the expected row length; only the
    # first ones up to column N - 1 are kept, exactly as the sequential loop.
    expected = N if log_q == -np.inf else int(min(N, N * -np.expm1(log_q))) + 16
    k = 0
    while True:
        draws = np.arange(k + 1, k + expected + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            bits = mix64(key + GOLDEN * draws)
        uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * _TWO_TO_MINUS_53
        with np.errstate(divide="ignore"):
            gaps = np.floor(np.log(uniform) / log_q)
        for gap in gaps:
            if gap >= N - 1 - position:
                return np.asarray(columns, dtype=np.int64)
            position += 1 + int(gap)
            columns.append(position)
        k += expected


def csr_reference(seed, n_neurons, *, n_connections=None, log_q=None):
    """The whole mask as CSR arrays (indptr int64 (N + 1,), indices int32 (nnz,)).

    Give ``n_connections`` (the "fixed" scheme) or ``log_q`` (the "bernoulli" one).
    """
    N = int(n_neurons)
    if n_connections is not None:
        C = int(n_connections)
        indptr = np.arange(N + 1, dtype=np.int64) * C
        indices = np.empty(N * C, np.int32)
        chunk = max(1, (1 << 20) // C)
        for start in range(0, N, chunk):
            rows = np.arange(start, min(start + chunk, N))
            indices[start * C:(start + len(rows)) * C] = fixed_columns(seed, N, C, rows).ravel()
        return indptr, indices
    rows = [bernoulli_row(seed, N, log_q, i) for i in range(N)]
    indptr = np.zeros(N + 1, np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.concatenate(rows).astype(np.int32) if N else np.zeros(0, np.int32)
    return indptr, indices


def tile_bounds(n_neurons):
    """(first row, number of rows) of every tile of ``TILE_ROWS`` rows."""
    return [(i0, min(TILE_ROWS, n_neurons - i0)) for i0 in range(0, n_neurons, TILE_ROWS)]


def offset_dtype(n_neurons, n_connections):
    """uint16 when every stratum is at most 2**16 wide (N <= 2**16 C), else uint32."""
    widest = -(-int(n_neurons) // int(n_connections))  # ceil(N / C) >= lo_{k+1} - lo_k
    return np.dtype(np.uint16) if widest <= 2**16 else np.dtype(np.uint32)


def to_tile_offsets(indices, n_neurons, n_connections):
    """How a stored "fixed" mask keeps its columns, given them row by row (N C,).

    Tile by tile, stratum by stratum, as offsets within the stratum: tile t
    holds the rows [t T, min(N, (t + 1) T)) (T = ``TILE_ROWS``), n_t of them,
    and column k of row t T + r is ``lo_k + offsets[t T C + k n_t + r]``. A
    stratum of a tile is then n_t consecutive offsets, which the compiled
    kernels read in order while their gathers stay within one stratum of y;
    the offsets take 2 bytes each when the strata are at most 2**16 wide
    (:func:`offset_dtype`).
    """
    C = int(n_connections)
    lo = strata(n_neurons, C)
    rows = np.asarray(indices, np.int64).reshape(n_neurons, C) - lo[None, :-1]
    offsets = np.empty(n_neurons * C, offset_dtype(n_neurons, C))
    for i0, n in tile_bounds(n_neurons):
        offsets[i0 * C:(i0 + n) * C] = rows[i0:i0 + n].T.ravel()
    return offsets


def from_tile_offsets(offsets, n_neurons, n_connections):
    """The inverse of :func:`to_tile_offsets`: the columns row by row, int32 (N C,)."""
    C = int(n_connections)
    lo = strata(n_neurons, C)
    indices = np.empty(n_neurons * C, np.int32)
    rows = indices.reshape(n_neurons, C)
    for i0, n in tile_bounds(n_neurons):
        rows[i0:i0 + n] = offsets[i0 * C:(i0 + n) * C].reshape(C, n).T + lo[None, :-1]
    return indices
