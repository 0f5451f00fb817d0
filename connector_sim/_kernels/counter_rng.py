"""Counter-based random numbers keyed by (seed, trial, step, unit).

This module is the specification that every backend implements identically
(the C++ header ``cpp/include/connector_sim/counter_rng.hpp``, the Cython module
``connector_sim._ext._counter_rng`` and the numba kernels): the same key gives
the same 64 random bits everywhere, whatever the number of threads.

The generator is SplitMix64's output function applied to a Weyl sequence::

    mix64(z) = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9
               z ^= z >> 27; z *= 0x94D049BB133111EB
               z ^= z >> 31
    step_key(seed, trial, step) = mix64(mix64(seed + GOLDEN * (trial + 1))
                                        + GOLDEN * (step + 1))
    bits(key, unit)             = mix64(key + GOLDEN * (unit + 1))

All arithmetic is modulo 2**64. A 64-bit draw is split into two 32-bit halves,
``u1 = (hi + 0.5) / 2**32`` and ``u2 = (lo + 0.5) / 2**32`` (both in (0, 1)),
and one standard normal follows by Box-Muller,
``sqrt(-2 log u1) * cos(2 pi u2)``. The largest value it can produce is
``sqrt(2 * 32 * log 2) + ...`` = 6.66 standard deviations.
"""

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_TO_MINUS_32 = 2.0**-32


def mix64(z):
    """SplitMix64's output function on an array (or scalar) of uint64."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _as_u64(value):
    # Python ints wrap to 64 bits the way C++ ``uint64_t(int64_t)`` does.
    return np.uint64(int(value) & 0xFFFFFFFFFFFFFFFF)


def step_key(seed, trial, step):
    """The 64-bit key of one (seed, trial, step): one per trial and time step."""
    with np.errstate(over="ignore"):
        s = _as_u64(seed)
        k = mix64(np.array([s + GOLDEN * _as_u64(trial + 1)], dtype=np.uint64))
        k = mix64(k + GOLDEN * _as_u64(step + 1))
    return np.uint64(k[0])


def unit_bits(key, n_units):
    """The 64 random bits of units 0 .. n_units - 1 under one step key."""
    units = np.arange(1, n_units + 1, dtype=np.uint64)
    return mix64(np.uint64(key) + GOLDEN * units)


def bits_to_normal(bits):
    """Box-Muller on the two 32-bit halves of each 64-bit draw (float64)."""
    hi = (bits >> np.uint64(32)).astype(np.float64)
    lo = (bits & np.uint64(0xFFFFFFFF)).astype(np.float64)
    u1 = (hi + 0.5) * _TWO_TO_MINUS_32
    u2 = (lo + 0.5) * _TWO_TO_MINUS_32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def standard_normal(seed, trial, step, n_units):
    """Standard normals of units 0 .. n_units - 1 at one (seed, trial, step).

    Returns
    -------
    xi : ndarray of shape (n_units,), float64
    """
    return bits_to_normal(unit_bits(step_key(seed, trial, step), n_units))
