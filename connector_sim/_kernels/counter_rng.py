"""Counter-based random numbers keyed by (seed, trial, step, unit).

This module is the specification that every backend implements (the C++
header ``cpp/include/connector_sim/counter_rng.hpp``, the Cython module
``connector_sim._ext._counter_rng`` and the numba kernels): the same key gives
the same 64 random bits everywhere, whatever the number of threads. The
normals computed from the bits are not bitwise the same across backends: each
uses its own log, cos and sin (NumPy's here, libm's in Cython, vectorised
polynomials in the numba and C++ kernels), and they agree to 1e-14 in float64
and, for the C++ float32 kernels, 2e-6 (tests/kernels/test_counter_rng.py
checks both bounds over a million draws).

The generator is SplitMix64's output function applied to a Weyl sequence::

    mix64(z) = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9
               z ^= z >> 27; z *= 0x94D049BB133111EB
               z ^= z >> 31
    step_key(seed, trial, step) = mix64(mix64(seed + GOLDEN * (trial + 1))
                                        + GOLDEN * (step + 1))
    pair_bits(key, p)           = mix64(key + GOLDEN * (p + 1))

All arithmetic is modulo 2**64. A 64-bit draw is split into two 32-bit halves,
``u1 = (hi + 0.5) / 2**32`` and ``u2 = (lo + 0.5) / 2**32`` (both in (0, 1)),
and Box-Muller turns it into two independent standard normals::

    r = sqrt(-2 log u1),   (r cos(2 pi u2), r sin(2 pi u2))

Pairing. Units are grouped in blocks of ``PAIR_BLOCK = 128`` consecutive
units; unit i sits at position k = i % 128 of block i // 128. The 64 pairs of
a block are the positions (k, k + 64), and pair p = (i // 128) * 64 + k % 64
takes the draw ``pair_bits(key, p)``; unit i gets the cosine output if
k < 64 and the sine output if k >= 64. A last, partial block uses the pairs of
the positions it has (a unit whose partner would lie beyond N still gets its
value). Why: one hash, one log and one square root serve two units, which
halves the cost of the noise in the simulators (the dense kernel's chunks
are exactly one pair block, so a SIMD loop over the 64 pair positions writes
two contiguous halves, cosines then sines, without interleaving).

The largest value it can produce is ``sqrt(-2 log(2**-33))`` = 6.76
standard deviations.
"""

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_TO_MINUS_32 = 2.0**-32

#: Units per pair block: position k < PAIR_HALF takes the cosine of pair k,
#: position k + PAIR_HALF the sine of the same pair.
PAIR_BLOCK = 128
PAIR_HALF = PAIR_BLOCK // 2

#: The float32 kernels' sine, sin(y) ~= y P(y**2) for |y| <= pi / 2, with the
#: coefficients of P in ascending powers (float32 values; the C++ copy is
#: SIN_F32 in simd_math.hpp, which reduces both cos(2 pi v) and sin(2 pi v) to
#: it). A minimax fit of sin(y) - y by y**3 Q(y**2), Q of degree 3, on
#: [0, pi / 2] (Lawson's iteratively reweighted least squares), then rounded to
#: float32: error below 2e-8 in exact arithmetic, under float32's half ulp of 1
#: (6e-8); the Taylor polynomial of the same degree errs by 3.5e-6.
SIN_F32 = (1.0, -0.16666656732559204, 0.008333017118275166, -0.0001980661618290469, 2.600056177470833e-06)


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


def pair_index(units):
    """The pair p = (i // 128) * 64 + i % 64 whose draw unit i uses."""
    units = np.asarray(units, dtype=np.int64)
    return (units // PAIR_BLOCK) * PAIR_HALF + units % PAIR_HALF


def uses_sine(units):
    """Whether unit i takes the sine output of its pair (position i % 128 >= 64)."""
    return np.asarray(units, dtype=np.int64) % PAIR_BLOCK >= PAIR_HALF


def pair_bits(key, n_pairs):
    """The 64 random bits of pairs 0 .. n_pairs - 1 under one step key."""
    pairs = np.arange(1, n_pairs + 1, dtype=np.uint64)
    return mix64(np.uint64(key) + GOLDEN * pairs)


def unit_bits(key, n_units):
    """The 64 random bits that units 0 .. n_units - 1 draw from: those of their pair."""
    pairs = pair_index(np.arange(n_units)).astype(np.uint64)
    return mix64(np.uint64(key) + GOLDEN * (pairs + np.uint64(1)))


def bits_to_normals(bits):
    """Box-Muller on the two 32-bit halves of each 64-bit draw (float64).

    Returns
    -------
    cosine, sine : ndarray, float64
        ``sqrt(-2 log u1) cos(2 pi u2)`` and ``sqrt(-2 log u1) sin(2 pi u2)``.
    """
    hi = (bits >> np.uint64(32)).astype(np.float64)
    lo = (bits & np.uint64(0xFFFFFFFF)).astype(np.float64)
    u1 = (hi + 0.5) * _TWO_TO_MINUS_32
    u2 = (lo + 0.5) * _TWO_TO_MINUS_32
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    return radius * np.cos(angle), radius * np.sin(angle)


def standard_normal(seed, trial, step, n_units):
    """Standard normals of units 0 .. n_units - 1 at one (seed, trial, step).

    ``xi[i] = cosine[p]`` if ``i % 128 < 64`` else ``sine[p]``, with
    ``p = (i // 128) * 64 + i % 64`` and ``cosine, sine =
    bits_to_normals(pair_bits(step_key(seed, trial, step), ...))``.

    Returns
    -------
    xi : ndarray of shape (n_units,), float64
    """
    n_blocks = -(-n_units // PAIR_BLOCK)
    cosine, sine = bits_to_normals(pair_bits(step_key(seed, trial, step), n_blocks * PAIR_HALF))
    # Block j is [cosine[64 j : 64 j + 64], sine[64 j : 64 j + 64]]; the last one is cut at n_units.
    blocks = np.stack([cosine.reshape(n_blocks, PAIR_HALF), sine.reshape(n_blocks, PAIR_HALF)], axis=1)
    return blocks.reshape(-1)[:n_units]
