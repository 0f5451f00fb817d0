# cython: cdivision=True
"""Counter-based random numbers keyed by (seed, trial, step, unit): compiled twin.

Implements ``connector_sim/_kernels/counter_rng.py`` (the specification) bit
for bit, pairing included (units i and i + 64 of a block of 128 share one
draw: the cosine and the sine output of Box-Muller); the normals use libm's
log, cos, sin and sqrt, so they agree with the NumPy reference to within a few
ulp. Integer keys are Python ints wrapped to 64 bits as the reference wraps
them (``int(value) & (2**64 - 1)``).
"""

from libc.math cimport M_PI, cos, log, sin, sqrt
from libc.stdint cimport uint64_t

import numpy as np

cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL
cdef uint64_t MIX1 = 0xBF58476D1CE4E5B9ULL
cdef uint64_t MIX2 = 0x94D049BB133111EBULL
cdef double TWO_TO_MINUS_32 = 2.0 ** -32
cdef object U64_MASK = 0xFFFFFFFFFFFFFFFF
# Units per pair block (counter_rng.PAIR_BLOCK) and pairs per block (indices are >= 0,
# so C division, cdivision=True above, is floor division).
cdef enum:
    PAIR_BLOCK = 128
    PAIR_HALF = 64


cdef inline uint64_t _mix64(uint64_t z) noexcept nogil:
    # z ^= z >> 30; z *= MIX1; z ^= z >> 27; z *= MIX2; z ^= z >> 31  (mod 2**64)
    z = (z ^ (z >> 30)) * MIX1
    z = (z ^ (z >> 27)) * MIX2
    return z ^ (z >> 31)


cdef inline uint64_t _step_key(uint64_t seed, uint64_t trial, uint64_t step) noexcept nogil:
    # mix64(mix64(seed + GOLDEN (trial + 1)) + GOLDEN (step + 1))
    return _mix64(_mix64(seed + GOLDEN * (trial + 1)) + GOLDEN * (step + 1))


cdef inline void _fill_normals(uint64_t key, double[::1] out) noexcept nogil:
    # Pair p = (i // 128) * 64 + i % 64 draws bits = mix64(key + GOLDEN (p + 1)); with
    # u1, u2 = (hi + 0.5) 2**-32, (lo + 0.5) 2**-32 and r = sqrt(-2 log u1), unit i gets
    # r cos(2 pi u2) if i % 128 < 64 else r sin(2 pi u2). Units beyond the end are skipped.
    cdef Py_ssize_t n = out.shape[0]
    cdef Py_ssize_t block, start, k
    cdef uint64_t bits, pair
    cdef double u1, angle, radius
    for block in range((n + PAIR_BLOCK - 1) // PAIR_BLOCK):
        start = block * PAIR_BLOCK
        for k in range(min(<Py_ssize_t>PAIR_HALF, n - start)):
            pair = <uint64_t>(block * PAIR_HALF + k)
            bits = _mix64(key + GOLDEN * (pair + 1))
            u1 = (<double>(bits >> 32) + 0.5) * TWO_TO_MINUS_32
            angle = 2.0 * M_PI * ((<double>(bits & 0xFFFFFFFFULL) + 0.5) * TWO_TO_MINUS_32)
            radius = sqrt(-2.0 * log(u1))
            out[start + k] = radius * cos(angle)
            if start + k + PAIR_HALF < n:
                out[start + k + PAIR_HALF] = radius * sin(angle)


cdef uint64_t _as_u64(value) except? 0:
    return <uint64_t>(int(value) & U64_MASK)


def step_key(seed, trial, step):
    """The 64-bit key of one (seed, trial, step), as a Python int.

    Parameters
    ----------
    seed, trial, step : int
        Wrapped to 64 bits.

    Returns
    -------
    int
        ``mix64(mix64(seed + GOLDEN (trial + 1)) + GOLDEN (step + 1))``.
    """
    return _step_key(_as_u64(seed), _as_u64(trial), _as_u64(step))


def pair_bits(key, Py_ssize_t n_pairs):
    """The 64 random bits of pairs 0 .. n_pairs - 1 under one step key.

    Returns
    -------
    bits : ndarray of shape (n_pairs,), uint64
        ``mix64(key + GOLDEN (p + 1))``.
    """
    cdef uint64_t k = _as_u64(key)
    bits = np.empty(n_pairs, dtype=np.uint64)
    cdef uint64_t[::1] view = bits
    cdef Py_ssize_t p
    with nogil:
        for p in range(n_pairs):
            view[p] = _mix64(k + GOLDEN * <uint64_t>(p + 1))
    return bits


def unit_bits(key, Py_ssize_t n_units):
    """The 64 random bits that units 0 .. n_units - 1 draw from: those of their pair.

    Returns
    -------
    bits : ndarray of shape (n_units,), uint64
        ``mix64(key + GOLDEN (p + 1))`` with ``p = (i // 128) * 64 + i % 64``.
    """
    cdef uint64_t k = _as_u64(key)
    bits = np.empty(n_units, dtype=np.uint64)
    cdef uint64_t[::1] view = bits
    cdef Py_ssize_t i
    with nogil:
        for i in range(n_units):
            view[i] = _mix64(k + GOLDEN * <uint64_t>((i // PAIR_BLOCK) * PAIR_HALF + i % PAIR_HALF + 1))
    return bits


def standard_normal(seed, trial, step, Py_ssize_t n_units, out=None):
    """Standard normals of units 0 .. n_units - 1 at one (seed, trial, step).

    Parameters
    ----------
    seed, trial, step : int
    n_units : int
    out : ndarray of shape (n_units,), float64, C-contiguous, optional
        Filled and returned if given.

    Returns
    -------
    xi : ndarray of shape (n_units,), float64
    """
    if out is None:
        out = np.empty(n_units, dtype=np.float64)
    cdef double[::1] view = out
    if view.shape[0] != n_units:
        raise ValueError(f"out must have shape ({n_units},). Got shape {np.shape(out)}.")
    cdef uint64_t key = _step_key(_as_u64(seed), _as_u64(trial), _as_u64(step))
    with nogil:
        _fill_normals(key, view)
    return out


def noise_block(seed, trial_offset, Py_ssize_t n_trials, step_start, Py_ssize_t n_steps,
                Py_ssize_t n_units, out=None):
    """The standard normals xi the simulator adds, for a block of trials and steps.

    ``xi[b, t] = standard_normal(seed, trial_offset + b, step_start + t, n_units)``.

    Parameters
    ----------
    seed, trial_offset, step_start : int
    n_trials, n_steps, n_units : int
    out : ndarray of shape (n_trials, n_steps, n_units), float64, C-contiguous, optional
        Filled and returned if given.

    Returns
    -------
    xi : ndarray of shape (n_trials, n_steps, n_units), float64
    """
    if out is None:
        out = np.empty((n_trials, n_steps, n_units), dtype=np.float64)
    cdef double[:, :, ::1] view = out
    if (view.shape[0], view.shape[1], view.shape[2]) != (n_trials, n_steps, n_units):
        raise ValueError(
            f"out must have shape ({n_trials}, {n_steps}, {n_units}). Got shape {np.shape(out)}."
        )
    cdef uint64_t seed_u = _as_u64(seed)
    cdef uint64_t trial0 = _as_u64(trial_offset)
    cdef uint64_t step0 = _as_u64(step_start)
    cdef Py_ssize_t b, t
    with nogil:
        for b in range(n_trials):
            for t in range(n_steps):
                _fill_normals(_step_key(seed_u, trial0 + <uint64_t>b, step0 + <uint64_t>t), view[b, t])
    return out
