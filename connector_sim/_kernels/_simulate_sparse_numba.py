"""numba kernels of the sparse low-rank RNN (the "numba" backend).

Same arguments and results as the NumPy reference in ``simulate_sparse.py``
(the specification), plus ``n_threads``. One Euler step is two parallel
passes::

    pass A, blocks of neurons:  y[j, b R + r] = n[j, r] phi(x[b, j])   (dtype)
                                partial[block, b, r] = sum_j float64(n phi)
    pass B, blocks of rows:     s = sum over row i's columns j of y[j]   (float64)
                                x[b, i] += alpha ((w m_i . s_b + I_i u_t + b_i) - x[b, i]) + noise

Fixed masks (C per row, stored in tiles or implicit) are summed as the C++
kernel sums them: tile by tile (``sparse_mask.TILE_ROWS`` rows), stratum by
stratum, each row's sum in k order, so that the gathers of a stratum stay
within N / C rows of y. Bernoulli masks are summed row by row: the k-th
connection of a row goes to accumulator lane k % 4 and the lanes are added as
(l0 + l1) + (l2 + l3). Either way the order does not depend on the mask's
representation, so a stored and an implicit mask give bitwise identical runs.
Columns of an implicit mask are regenerated from the counter hash
(``sparse_mask.py``).
"""

import numpy as np
from numba import njit, prange

from ._simulate_dense_numba import (
    _ONE_U64,
    _SHIFT32,
    _apply_phi,
    _clamp_arrays,
    _fill_noise,
    _kernel_and_activation,
    _mix64,
    _step_key,
    _sum_blocks,
    _threads,
)
from . import read_only
from .counter_rng import GOLDEN
from .simulate_dense import BLOCK_SIZE
from .simulate_sparse import MASK_MODES
from .sparse_mask import TILE_ROWS

_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT11 = np.uint64(11)
_TWO_TO_MINUS_53 = 2.0**-53
_LANES = 4
_CSR, _FIXED, _BERNOULLI, _TILED = (MASK_MODES["csr"], MASK_MODES["fixed"], MASK_MODES["bernoulli"],
                                    MASK_MODES["tiled"])
_U64_MASK = 0xFFFFFFFFFFFFFFFF

_OPTIONS = dict(fastmath=True, error_model="numpy", cache=True)
#: The gathered sums: no reassociation, so that every specialisation (int32
#: CSR columns, int64 regenerated ones) adds in the same order.
_IN_ORDER = dict(fastmath={"nnan", "ninf", "nsz", "arcp", "contract"}, error_model="numpy", cache=True)


@njit(**_IN_ORDER)
def _add(acc, y, column, k, W):
    # acc[k % 4] += float64(y[column])
    base = (k & 3) * W
    for w in range(W):
        acc[base + w] += np.float64(y[column, w])


@njit(**_IN_ORDER)
def _sum_columns(columns, y, acc, out):
    """out[w] = sum_k float64(y[columns[k], w]), connection k in lane k % 4."""
    W = out.size
    n = columns.size
    if W == 1:
        # Four scalar lanes (registers), the common single-trial rank-one case.
        l0 = l1 = l2 = l3 = 0.0
        k = 0
        while k + 4 <= n:
            l0 += np.float64(y[columns[k], 0])
            l1 += np.float64(y[columns[k + 1], 0])
            l2 += np.float64(y[columns[k + 2], 0])
            l3 += np.float64(y[columns[k + 3], 0])
            k += 4
        if k < n:
            l0 += np.float64(y[columns[k], 0])
        if k + 1 < n:
            l1 += np.float64(y[columns[k + 1], 0])
        if k + 2 < n:
            l2 += np.float64(y[columns[k + 2], 0])
        out[0] = (l0 + l1) + (l2 + l3)
        return
    acc[:] = 0.0
    for k in range(n):
        _add(acc, y, columns[k], k, W)
    for w in range(W):
        out[w] = (acc[w] + acc[W + w]) + (acc[2 * W + w] + acc[3 * W + w])


@njit(**_OPTIONS)
def _fixed_columns(key, lo, width, row, columns):
    """columns[k] = column k of ``row`` under the "fixed" scheme."""
    row_key = _mix64(key + GOLDEN * (np.uint64(row) + _ONE_U64))
    for k in range(width.size):
        # u_k: high half of draw(k // 2) for even k, low half for odd k
        bits = _mix64(row_key + GOLDEN * (np.uint64(k >> 1) + _ONE_U64))
        u = bits >> _SHIFT32 if (k & 1) == 0 else bits & _LOW32
        columns[k] = np.int64(lo[k] + ((u * width[k]) >> _SHIFT32))


@njit(**_IN_ORDER)
def _gather_stratum_pair(first, second, offsets0, offsets1, pair, sums):
    """sums[r, w] = (sums[r, w] + float64(first[offsets0[r], w])) + float64(second[offsets1[r], w]).

    ``first`` and ``second`` are y from the first rows of strata k and k + 1;
    without a pair (k = C - 1) only ``first`` is added. Two strata per pass
    over the sums halve their loads and stores.
    """
    n, W = sums.shape
    if W == 1 and pair:
        # flat arrays for the single-trial rank-one case
        flat, first_flat, second_flat = sums[:, 0], first[:, 0], second[:, 0]
        for r in range(n):
            flat[r] = (flat[r] + np.float64(first_flat[offsets0[r]])) + np.float64(second_flat[offsets1[r]])
    elif pair:
        for r in range(n):
            for w in range(W):
                sums[r, w] = (sums[r, w] + np.float64(first[offsets0[r], w])) + np.float64(second[offsets1[r], w])
    else:
        for r in range(n):
            for w in range(W):
                sums[r, w] += np.float64(first[offsets0[r], w])


@njit(**_IN_ORDER)
def _tile_sums(mode, key, lo, width, indices, i0, n, y, sums):
    """sums[r, w] = sum over k in order of float64(y[column k of row i0 + r, w]), r < n.

    The rows of one tile of a fixed mask (C = ``width.size`` per row),
    stratum pair by stratum pair: column k is lo[k] plus the offset of the
    stored tiles ("tiled", ``sparse_mask.to_tile_offsets``) or of the hash
    ("fixed"; draw k // 2 gives stratum k its high half, k + 1 its low half).
    """
    C = width.size
    sums[:] = 0.0
    if mode == _TILED:
        for k in range(0, C, 2):
            pair = k + 1 < C
            base = i0 * C + k * n
            offsets0 = indices[base:base + n]
            offsets1 = indices[base + n:base + 2 * n] if pair else offsets0
            first = y[np.int64(lo[k]):]
            second = y[np.int64(lo[k + 1]):] if pair else first
            _gather_stratum_pair(first, second, offsets0, offsets1, pair, sums)
        return
    row_keys = np.empty(n, np.uint64)
    for r in range(n):
        row_keys[r] = _mix64(key + GOLDEN * (np.uint64(i0 + r) + _ONE_U64))
    # The offsets of a stratum pair for all the rows first (a loop that LLVM
    # vectorises), then the gathers as for the stored tiles.
    offsets0 = np.empty(n, np.uint32)
    offsets1 = np.empty(n, np.uint32)
    for k in range(0, C, 2):
        pair = k + 1 < C
        counter = GOLDEN * (np.uint64(k >> 1) + _ONE_U64)
        width0 = width[k]
        width1 = width[k + 1] if pair else width[k]
        for r in range(n):
            bits = _mix64(row_keys[r] + counter)
            offsets0[r] = np.uint32(((bits >> _SHIFT32) * width0) >> _SHIFT32)
            offsets1[r] = np.uint32(((bits & _LOW32) * width1) >> _SHIFT32)
        first = y[np.int64(lo[k]):]
        second = y[np.int64(lo[k + 1]):] if pair else first
        _gather_stratum_pair(first, second, offsets0, offsets1, pair, sums)


@njit(**_OPTIONS)
def _gather_row(mode, key, lo, width, log_q, indptr, indices, N, row, y, acc, columns, out):
    """out[w] = sum over the columns j of ``row`` of float64(y[j, w]) (lanes k % 4).

    ``columns`` is a scratch array of C int64 for the "fixed" and "tiled" modes, N for "bernoulli".
    """
    if mode == _CSR:
        _sum_columns(indices[indptr[row]:indptr[row + 1]], y, acc, out)
    elif mode == _FIXED:
        _fixed_columns(key, lo, width, row, columns)
        _sum_columns(columns, y, acc, out)
    elif mode == _TILED:
        # column k of the row: lo[k] + the offset at i0 C + k n + (row - i0) of its tile (i0, n rows)
        C = width.size
        i0 = row - row % TILE_ROWS
        n = min(TILE_ROWS, N - i0)
        for k in range(C):
            columns[k] = np.int64(lo[k]) + np.int64(indices[i0 * C + k * n + row - i0])
        _sum_columns(columns, y, acc, out)
    else:
        # Bernoulli rows have no fixed length: ``columns`` holds N int64 here.
        row_key = _mix64(key + GOLDEN * (np.uint64(row) + _ONE_U64))
        position = -1
        k = 0
        while True:
            bits = _mix64(row_key + GOLDEN * (np.uint64(k) + _ONE_U64))
            gap = np.floor(np.log((np.float64(bits >> _SHIFT11) + 0.5) * _TWO_TO_MINUS_53) / log_q)
            if gap >= N - 1 - position:
                break
            position += 1 + np.int64(gap)
            columns[k] = position
            k += 1
        _sum_columns(columns[:k], y, acc, out)


def _full_path(mode, key, lo, width, log_q, indptr, indices, m_T, n_T, I_T, b, activation, weight, gain, x, u,
               alpha, alpha_x, noise_scale, seed, trial_offset, step_offset, record_idx, kappa, kappa_out,
               record_out, clamp_mask, clamp_value, clamp_start, clamp_stop):
    R, N = m_T.shape
    D = I_T.shape[0]
    B = x.shape[0]
    W = B * R
    T = u.shape[1]
    n_blocks = (N + BLOCK_SIZE - 1) // BLOCK_SIZE
    y = np.empty((N, W), x.dtype)
    partial = np.empty((n_blocks, B, R))
    krec = np.empty((B, R))
    keys = np.empty(B, np.uint64)
    kappa_out[:, 0] = kappa
    for trial in range(B):
        for k in range(record_idx.size):
            record_out[trial, 0, k] = x[trial, record_idx[k]]
    for t in range(T):
        clamped = clamp_mask.size > 0 and clamp_start <= t < clamp_stop
        # Pass A: y = n phi(x_t) (clamped), and the block sums of n^T phi(x_t).
        for block in prange(n_blocks):
            start = block * BLOCK_SIZE
            stop = min(start + BLOCK_SIZE, N)
            rates = np.empty(stop - start, x.dtype)
            for trial in range(B):
                state = x[trial, start:stop]
                for i in range(stop - start):
                    rates[i] = state[i]
                _apply_phi(activation, rates)
                if clamped:
                    for i in range(stop - start):
                        if clamp_mask[start + i]:
                            rates[i] = clamp_value[start + i]
                for r in range(R):
                    n_row = n_T[r, start:stop]
                    total = 0.0
                    column = trial * R + r
                    for i in range(stop - start):
                        y[start + i, column] = rates[i] * n_row[i]
                        total += np.float64(rates[i]) * np.float64(n_row[i])
                    partial[block, trial, r] = total
        # kappa_{t+1} = (1 - alpha) kappa_t + alpha gain n^T phi(x_t) / N
        _sum_blocks(partial, N, krec)
        for trial in range(B):
            for r in range(R):
                kappa[trial, r] = (1 - alpha) * kappa[trial, r] + alpha * gain * krec[trial, r]
            keys[trial] = _step_key(seed, trial_offset + np.uint64(trial), step_offset + t)
        kappa_out[:, t + 1] = kappa
        # Pass B: x_{t+1} from the gathered sums, in tiles (fixed masks) or blocks of rows.
        tiled = mode == _TILED or mode == _FIXED
        part_rows = TILE_ROWS if tiled else BLOCK_SIZE
        for part in prange((N + part_rows - 1) // part_rows):
            start = part * part_rows
            stop = min(start + part_rows, N)
            sums = np.empty((stop - start, W))
            if tiled:
                _tile_sums(mode, key, lo, width, indices, start, stop - start, y, sums)
            else:
                acc = np.empty(_LANES * W)
                columns = np.empty(N if mode == _BERNOULLI else 0, np.int64)
                for i in range(start, stop):
                    _gather_row(mode, key, lo, width, log_q, indptr, indices, N, i, y, acc, columns, sums[i - start])
            drive = np.empty(B, x.dtype)
            inputs = np.empty(B, x.dtype)
            # noise[trial] = noise_scale * counter_rng.standard_normal(seed, trial_offset + trial, t, N)[start:stop]
            # (start is a multiple of BLOCK_SIZE or TILE_ROWS, so the part is made of whole pair blocks)
            noise = np.zeros((B, stop - start if noise_scale != 0.0 else 0), x.dtype)
            for trial in range(B):
                _fill_noise(keys[trial], start, noise_scale, noise[trial])
            for i in range(start, stop):
                s = sums[i - start]
                for trial in range(B):
                    # h = weight * sum_r m[i, r] s[b, r] (float64), then in dtype
                    h = 0.0
                    for r in range(R):
                        h += np.float64(m_T[r, i]) * s[trial * R + r]
                    drive[trial] = weight * h
                    inputs[trial] = 0.0
                    u_bt = u[0 if u.shape[0] == 1 else trial, t]
                    for d in range(D):
                        inputs[trial] += u_bt[d] * I_T[d, i]
                    xi = x[trial, i]
                    advanced = xi + alpha_x * ((drive[trial] + inputs[trial] + b[i]) - xi)
                    if noise_scale != 0.0:
                        advanced += noise[trial, i - start]
                    x[trial, i] = advanced
        for trial in range(B):
            for k in range(record_idx.size):
                record_out[trial, t + 1, k] = x[trial, record_idx[k]]


# The time loop adds in source order too (_IN_ORDER: no reassociation): with
# reassociation LLVM's choices (how a reduction is split into vector lanes,
# how (drive + inputs + b) - x is regrouped) may differ between the
# specialisations for stored and implicit masks, and between a specialisation
# compiled in this process and one loaded from numba's cache, which broke
# their bitwise equality depending on the cache's state.
_full_path_builtin = njit(parallel=True, **_IN_ORDER)(_full_path)
_full_path_user = njit(parallel=True, fastmath=_IN_ORDER["fastmath"], error_model="numpy")(_full_path)


@njit(parallel=True, **_OPTIONS)
def _matvec(mode, key, lo, width, log_q, indptr, indices, m_T, n_T, weight, v, out):
    # out[i, c] = weight sum_r m[i, r] sum over row i's columns j of n[j, r] v[j, c]
    R, N = m_T.shape
    K = v.shape[1]
    W = R * K
    y = np.empty((N, W))
    for j in prange(N):
        for r in range(R):
            for c in range(K):
                y[j, r * K + c] = n_T[r, j] * v[j, c]
    n_blocks = (N + BLOCK_SIZE - 1) // BLOCK_SIZE
    for block in prange(n_blocks):
        acc = np.empty(_LANES * W)
        s = np.empty(W)
        columns = np.empty(width.size if mode == _FIXED or mode == _TILED else (N if mode == _BERNOULLI else 0),
                           np.int64)
        for i in range(block * BLOCK_SIZE, min((block + 1) * BLOCK_SIZE, N)):
            _gather_row(mode, key, lo, width, log_q, indptr, indices, N, i, y, acc, columns, s)
            for c in range(K):
                total = 0.0
                for r in range(R):
                    total += m_T[r, i] * s[r * K + c]
                out[i, c] = weight * total


def _mask_arrays(mask):
    fixed = mask.mode in ("fixed", "tiled")
    lo = np.ascontiguousarray(mask.strata[:-1], np.uint64) if fixed else np.zeros(0, np.uint64)
    width = np.diff(mask.strata).astype(np.uint64) if fixed else np.zeros(0, np.uint64)
    return (MASK_MODES[mask.mode], np.uint64(mask.key), lo, width, float(mask.log_q), *read_only(mask.indptr, mask.indices))


def full_path_numba(mask, m_T, n_T, I_T, b, activation, weight, gain, x, u, alpha, noise_scale, seed,
                    trial_offset, record_idx, kappa, kappa_out, record_out, clamp=(None, None, 0, 0), step_offset=0,
                    n_threads=1):
    """Sparse time loop; arguments and results as :func:`.simulate_sparse.full_path_reference`."""
    m_T, n_T, I_T, b = read_only(m_T, n_T, I_T, b)  # one numba specialization (networks' arrays are read-only)
    kernel, phi = _kernel_and_activation(_full_path_builtin, _full_path_user, activation)
    with _threads(n_threads):
        kernel(*_mask_arrays(mask), m_T, n_T, I_T, b, phi, float(weight), float(gain), x, u, float(alpha),
               x.dtype.type(alpha), float(noise_scale), np.uint64(int(seed) & _U64_MASK),
               np.uint64(int(trial_offset) & _U64_MASK), np.int64(step_offset),
               np.ascontiguousarray(record_idx, np.int64), kappa,
               kappa_out, record_out, *_clamp_arrays(clamp, x.dtype))


def matvec_numba(mask, m_T, n_T, weight, v, n_threads=1):
    """P v in float64; arguments as :func:`.simulate_sparse.matvec_reference`."""
    v = np.asarray(v, np.float64)
    v2 = np.ascontiguousarray(v.reshape(v.shape[0], -1))
    out = np.empty_like(v2)
    with _threads(n_threads):
        _matvec(*_mask_arrays(mask), *read_only(np.ascontiguousarray(m_T, np.float64), np.ascontiguousarray(n_T, np.float64)),
                float(weight), v2, out)
    return out.reshape(v.shape)
