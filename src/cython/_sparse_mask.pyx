"""Counter-based sparse masks assembled as CSR or tiles: compiled twin of the specification.

Implements ``connector_sim/_kernels/sparse_mask.py`` (the NumPy reference)
column for column: the "fixed" scheme (exactly C per row, one column per
stratum) and the "bernoulli" scheme (geometric gaps). Integer keys are Python
ints wrapped to 64 bits as the reference wraps them.
"""

from libc.math cimport floor, log
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t

import numpy as np

cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL
cdef uint64_t MIX1 = 0xBF58476D1CE4E5B9ULL
cdef uint64_t MIX2 = 0x94D049BB133111EBULL
cdef uint64_t MASK_SALT = 0x6D61736B5F726F77ULL
cdef double TWO_TO_MINUS_53 = 2.0 ** -53
cdef object U64_MASK = 0xFFFFFFFFFFFFFFFF


cdef inline uint64_t _mix64(uint64_t z) noexcept nogil:
    # z ^= z >> 30; z *= MIX1; z ^= z >> 27; z *= MIX2; z ^= z >> 31  (mod 2**64)
    z = (z ^ (z >> 30)) * MIX1
    z = (z ^ (z >> 27)) * MIX2
    return z ^ (z >> 31)


cdef inline uint64_t _row_key(uint64_t key, int64_t row) noexcept nogil:
    # row_key = mix64(mask_key + GOLDEN (row + 1))
    return _mix64(key + GOLDEN * <uint64_t>(row + 1))


cdef inline uint64_t _stratum_offset(uint64_t row, int64_t k, uint64_t width, uint64_t* bits) noexcept nogil:
    # floor(u_k width / 2**32), u_k the high half of draw(k // 2) = mix64(row_key + GOLDEN (k // 2 + 1))
    # for even k (drawn now, kept in bits), its low half for odd k; column k = lo_k + this offset
    if k % 2 == 0:
        bits[0] = _mix64(row + GOLDEN * <uint64_t>(k // 2 + 1))
        return ((bits[0] >> 32) * width) >> 32
    return ((bits[0] & 0xFFFFFFFFULL) * width) >> 32


cdef uint64_t _mask_key(seed) except? 0:
    # mask_key = mix64(seed ^ MASK_SALT)
    return _mix64(<uint64_t>(int(seed) & U64_MASK) ^ MASK_SALT)


cdef inline int64_t _bernoulli_row(uint64_t key, int64_t N, double log_q, int32_t* out) noexcept nogil:
    # position = -1; for k = 0, 1, ...: G = floor(log(U_k) / log_q);
    # stop if G >= N - 1 - position; position += 1 + G; emit position.
    # Writes the columns if out is not NULL; returns their number.
    cdef int64_t position = -1
    cdef int64_t count = 0
    cdef uint64_t k = 0
    cdef uint64_t bits
    cdef double gap
    while True:
        k += 1
        bits = _mix64(key + GOLDEN * k)
        gap = floor(log((<double>(bits >> 11) + 0.5) * TWO_TO_MINUS_53) / log_q)
        if gap >= <double>(N - 1 - position):
            return count
        position += 1 + <int64_t>gap
        if out != NULL:
            out[count] = <int32_t>position
        count += 1


def fixed_indices(seed, int64_t n_neurons, int64_t n_connections, const int64_t[::1] lo):
    """Column indices of the "fixed" scheme, row after row.

    Parameters
    ----------
    seed : int
    n_neurons, n_connections : int
        N and C (1 <= C <= N < 2**31).
    lo : ndarray of shape (C + 1,), int64
        The strata ``sparse_mask.strata(N, C)``.

    Returns
    -------
    indices : ndarray of shape (N * C,), int32
        Row i's sorted columns at ``indices[i * C : (i + 1) * C]``.
    """
    if lo.shape[0] != n_connections + 1:
        raise ValueError(f"lo must have shape ({n_connections + 1},). Got ({lo.shape[0]},).")
    cdef uint64_t key = _mask_key(seed)
    indices = np.empty(n_neurons * n_connections, np.int32)
    cdef int32_t[::1] out = indices
    cdef int64_t i, k, C = n_connections
    cdef uint64_t row, bits = 0
    with nogil:
        for i in range(n_neurons):
            row = _row_key(key, i)
            bits = 0
            for k in range(C):
                out[i * C + k] = <int32_t>(lo[k] + <int64_t>_stratum_offset(row, k, <uint64_t>(lo[k + 1] - lo[k]), &bits))
    return indices


ctypedef fused offset_t:
    uint16_t
    uint32_t


def fixed_tile_offsets(seed, int64_t n_neurons, int64_t n_connections, const int64_t[::1] lo, int64_t tile_rows,
                       offset_t[::1] out):
    """The "fixed" scheme as a stored mask keeps it: offsets within the strata, in tiles.

    Fills ``out`` (N C values, uint16 or uint32) with
    ``sparse_mask.to_tile_offsets`` of the columns, ``TILE_ROWS = tile_rows``:
    column k of row t T + r of tile t (n_t rows) is
    ``lo[k] + out[t T C + k n_t + r]``.
    """
    if lo.shape[0] != n_connections + 1:
        raise ValueError(f"lo must have shape ({n_connections + 1},). Got ({lo.shape[0]},).")
    if tile_rows < 1:
        raise ValueError(f"tile_rows must be >= 1. Got {tile_rows}.")
    if out.shape[0] != n_neurons * n_connections:
        raise ValueError(f"out must have shape ({n_neurons * n_connections},). Got ({out.shape[0]},).")
    cdef uint64_t key = _mask_key(seed)
    cdef int64_t i, k, C = n_connections, first, tile_start, tile_size
    cdef uint64_t row, bits = 0
    with nogil:
        for i in range(n_neurons):
            tile_start = i - i % tile_rows
            tile_size = min(tile_rows, n_neurons - tile_start)
            first = tile_start * C + (i - tile_start)
            row = _row_key(key, i)
            for k in range(C):
                out[first + k * tile_size] = <offset_t>_stratum_offset(row, k, <uint64_t>(lo[k + 1] - lo[k]), &bits)


def bernoulli_csr(seed, int64_t n_neurons, double log_q):
    """CSR arrays of the "bernoulli" scheme.

    Parameters
    ----------
    seed : int
    n_neurons : int
    log_q : float
        log1p(-p) for connection probability p (-inf for p = 1).

    Returns
    -------
    indptr : ndarray of shape (N + 1,), int64
    indices : ndarray of shape (nnz,), int32
    """
    cdef uint64_t key = _mask_key(seed)
    indptr = np.empty(n_neurons + 1, np.int64)
    cdef int64_t[::1] ptr = indptr
    cdef int64_t i
    ptr[0] = 0
    # Two passes: count, then fill (the draws are cheap next to an
    # over-allocated or re-grown index array).
    with nogil:
        for i in range(n_neurons):
            ptr[i + 1] = ptr[i] + _bernoulli_row(_row_key(key, i), n_neurons, log_q, NULL)
    indices = np.empty(ptr[n_neurons], np.int32)
    cdef int32_t[::1] out = indices
    cdef int32_t* base = &out[0] if out.shape[0] else NULL
    if base != NULL:
        with nogil:
            for i in range(n_neurons):
                _bernoulli_row(_row_key(key, i), n_neurons, log_q, base + ptr[i])
    return indptr, indices
