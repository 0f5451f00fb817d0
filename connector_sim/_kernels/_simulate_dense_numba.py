"""numba kernels of the dense low-rank RNN time loops (the "numba" backend).

Same arguments and results as the NumPy reference in ``simulate_dense.py``
(the specification), plus ``n_threads``. This module imports numba and is
imported only when the numba backend is used.

Layout of one step (full path)::

    for each block of BLOCK_SIZE neurons, in parallel:
        for each trial:
            drive = b + I u_t + m krec                      # dtype
            x     = x + alpha (drive - x) [+ noise_scale xi_t]
            rates = phi(x)   (clamped at step t + 1)
            partial[block, trial] = n^T rates               # float64
    krec = sum(partial over blocks, in block order) / N

so each step reads the loadings once for all trials and x once, and the
partial sums do not depend on the number of threads. The latent path has
the same structure with z = m kappa + I v_t + b + decay_t xperp in place of x.

Built-in activations are selected by an integer code in kernels compiled
once and cached on disk; a user ``numba.njit`` activation is passed to the
same kernels compiled without disk cache (numba specialises them per
function and keeps them for the session).
"""

import contextlib
import math

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..activations import activation_code
from . import read_only
from .counter_rng import _MIX1, _MIX2, GOLDEN, PAIR_BLOCK, PAIR_HALF
from .fast_math import TANH_F32_CLAMP, TANH_F32_P, TANH_F32_Q
from .simulate_dense import BLOCK_SIZE

_TANH = activation_code("tanh")
_RELU = activation_code("relu")

#: Element-wise helpers may contract a * b + c into an FMA but never
#: reassociate: the range reduction of the float64 exp relies on its order.
_ELEMENTWISE = dict(fastmath={"contract", "nsz"}, error_model="numpy", cache=True)
#: The kernels: full fast-math (float64 block sums are vectorised), no
#: division checks (they would stop vectorisation).
_KERNEL = dict(fastmath=True, error_model="numpy", parallel=True)

_U64_MASK = 0xFFFFFFFFFFFFFFFF
_SHIFT27 = np.uint64(27)
_SHIFT30 = np.uint64(30)
_SHIFT31 = np.uint64(31)
_SHIFT32 = np.uint64(32)
_SHIFT52 = np.uint64(52)
_LOW32 = np.uint64(0xFFFFFFFF)
_ONE_U64 = np.uint64(1)
_PAIR_BLOCK = PAIR_BLOCK
_PAIR_HALF = PAIR_HALF

# Bit tricks in place of int <-> float64 conversions, which AVX2 lacks for
# 64-bit integers: OR-ing an integer below 2**52 into the mantissa of 2**52
# and subtracting 2**52 converts it exactly; adding 1.5 * 2**52 to a float
# rounds it to an integer held in the low mantissa bits.
_TWO_52 = 2.0**52
_TWO_52_BITS = np.uint64(0x4330000000000000)
_ROUND_MAGIC = 1.5 * 2.0**52
_MANTISSA = np.uint64((1 << 52) - 1)
_EXPONENT_ONE = np.uint64(1023 << 52)

_F32_CLAMP = np.float32(TANH_F32_CLAMP)
_P0, _P1, _P2, _P3, _P4 = (np.float32(c) for c in TANH_F32_P)
_Q0, _Q1, _Q2, _Q3, _Q4 = (np.float32(c) for c in TANH_F32_Q)

# ln 2 split so that k * _LN2_HI is exact for |k| < 2**20 (Cody-Waite).
_INV_LN2 = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# tanh(20) rounds to 1 in float64, and exp(40) is far from overflow.
_TANH_F64_CLAMP = 20.0
# exp(r) = sum_j r^j / j!, j <= 12: truncation 2e-16 relative for |r| <= ln2 / 2.
_E12, _E11, _E10, _E9, _E8, _E7, _E6, _E5, _E4, _E3, _E2, _E1, _E0 = (
    1.0 / math.factorial(j) for j in range(12, -1, -1))
# log f = 2 atanh(s) = sum_k 2 s^(2k+1) / (2k+1), s = (f-1)/(f+1), |s| < 0.172, k <= 11.
_A11, _A10, _A9, _A8, _A7, _A6, _A5, _A4, _A3, _A2, _A1, _A0 = (
    2.0 / (2 * k + 1) for k in range(11, -1, -1))
_SQRT2 = math.sqrt(2.0)
# pi / 2 as a double-double; cos and sin of |theta| <= pi / 4 by Taylor
# series to theta^16 and theta^17 (truncation below 1e-17).
_PIO2_HI = 1.5707963267948966
_PIO2_LO = 6.123233995736766e-17
_C8, _C7, _C6, _C5, _C4, _C3, _C2, _C1, _C0 = (
    (-1.0) ** k / math.factorial(2 * k) for k in range(8, -1, -1))
_S8, _S7, _S6, _S5, _S4, _S3, _S2, _S1, _S0 = (
    (-1.0) ** k / math.factorial(2 * k + 1) for k in range(8, -1, -1))


# --- float64 <-> integer bit helpers ----------------------------------------------


@njit(**_ELEMENTWISE)
def _u64_to_f64(value):
    """float64(value), exact for value < 2**52."""
    return np.uint64(value | _TWO_52_BITS).view(np.float64) - _TWO_52


# --- activations -------------------------------------------------------------


@njit(**_ELEMENTWISE)
def _tanh_f32(x):
    # fast_math.tanh_f32_reference: xc P(xc^2) / Q(xc^2), xc = clip(x, -9, 9)
    xc = _F32_CLAMP if x > _F32_CLAMP else x
    xc = -_F32_CLAMP if xc < -_F32_CLAMP else xc
    s = xc * xc
    p = (((_P4 * s + _P3) * s + _P2) * s + _P1) * s + _P0
    q = (((_Q4 * s + _Q3) * s + _Q2) * s + _Q1) * s + _Q0
    return xc * p / q


@njit(**_ELEMENTWISE)
def _exp_small(y):
    """exp(y) for 0 <= y <= 40: 2**k exp(r), y = k ln2 + r, exp(r) by its Taylor polynomial."""
    shifted = y * _INV_LN2 + _ROUND_MAGIC
    k = shifted - _ROUND_MAGIC
    r = (y - k * _LN2_HI) - k * _LN2_LO
    p = ((((((((((((_E12 * r + _E11) * r + _E10) * r + _E9) * r + _E8) * r + _E7) * r + _E6) * r + _E5)
                * r + _E4) * r + _E3) * r + _E2) * r + _E1) * r + _E0)
    # The low bits of ``shifted`` hold k; move k + 1023 into the exponent field.
    two_to_k = np.int64((np.float64(shifted).view(np.int64) + 1023) << 52).view(np.float64)
    return p * two_to_k


@njit(**_ELEMENTWISE)
def _tanh_f64(x):
    # tanh(x) = sign(x) (1 - 2 / (exp(2 |x|) + 1)); absolute error < 1e-15
    a = abs(x)
    a = _TANH_F64_CLAMP if a > _TANH_F64_CLAMP else a
    return math.copysign(1.0 - 2.0 / (_exp_small(2.0 * a) + 1.0), x)


def _apply_phi(activation, values):
    """values[:] = phi(values), in jitted code only (see the overload below)."""
    raise NotImplementedError("_apply_phi is only callable from numba-compiled code")


@overload(_apply_phi, jit_options=dict(fastmath=True, error_model="numpy"))
def _apply_phi_overload(activation, values):
    if isinstance(activation, types.Integer):
        tanh = _tanh_f32 if values.dtype == types.float32 else _tanh_f64
        zero = np.float32(0.0) if values.dtype == types.float32 else 0.0

        def builtin(activation, values):
            if activation == _TANH:
                for i in range(values.size):
                    values[i] = tanh(values[i])
            elif activation == _RELU:
                for i in range(values.size):
                    values[i] = values[i] if values[i] > zero else zero
            # "identity" leaves the values as they are.

        return builtin

    def user(activation, values):
        for i in range(values.size):
            values[i] = activation(values[i])

    return user


# --- counter-based noise (counter_rng.py) ------------------------------------


@njit(**_ELEMENTWISE)
def _mix64(z):
    z = (z ^ (z >> _SHIFT30)) * _MIX1
    z = (z ^ (z >> _SHIFT27)) * _MIX2
    return z ^ (z >> _SHIFT31)


@njit(**_ELEMENTWISE)
def _step_key(seed, trial, step):
    # mix64(mix64(seed + GOLDEN (trial + 1)) + GOLDEN (step + 1)), all uint64
    k = _mix64(seed + GOLDEN * (trial + _ONE_U64))
    return _mix64(k + GOLDEN * (np.uint64(step) + _ONE_U64))


@njit(**_ELEMENTWISE)
def _log_uniform(hi):
    """log((hi + 0.5) 2**-32) for an integer 0 <= hi < 2**32 (error ~2 ulp)."""
    w = _u64_to_f64(hi) + 0.5
    bits = np.float64(w).view(np.uint64)
    # w = 2**e f with f in [1, 2), then f in [sqrt(1/2), sqrt(2)); e counts the 2**-32 too.
    e = _u64_to_f64(bits >> _SHIFT52) - (1023.0 + 32.0)
    f = np.uint64((bits & _MANTISSA) | _EXPONENT_ONE).view(np.float64)
    large = f > _SQRT2
    f = 0.5 * f if large else f
    e = e + 1.0 if large else e
    s = (f - 1.0) / (f + 1.0)
    z = s * s
    p = (((((((((((_A11 * z + _A10) * z + _A9) * z + _A8) * z + _A7) * z + _A6) * z + _A5) * z + _A4) * z
            + _A3) * z + _A2) * z + _A1) * z + _A0)
    return e * _LN2_HI + (e * _LN2_LO + s * p)


@njit(**_ELEMENTWISE)
def _sincos_two_pi_uniform(lo):
    """cos and sin of 2 pi (lo + 0.5) 2**-32 for an integer 0 <= lo < 2**32 (error ~1e-16)."""
    quarters = (_u64_to_f64(lo) + 0.5) * 2.0**-30  # 4 u2 in (0, 4)
    q = np.floor(quarters + 0.5)
    w = quarters - q  # in [-1/2, 1/2], exact
    theta = w * _PIO2_HI + w * _PIO2_LO
    z = theta * theta
    c = ((((((((_C8 * z + _C7) * z + _C6) * z + _C5) * z + _C4) * z + _C3) * z + _C2) * z + _C1) * z + _C0)
    s = theta * ((((((((_S8 * z + _S7) * z + _S6) * z + _S5) * z + _S4) * z + _S3) * z + _S2) * z + _S1) * z
                 + _S0)
    # cos and sin of theta + q pi / 2, q in {0, 1, 2, 3, 4}
    cosine = -s if q == 1.0 else c
    cosine = -c if q == 2.0 else cosine
    cosine = s if q == 3.0 else cosine
    sine = c if q == 1.0 else s
    sine = -s if q == 2.0 else sine
    sine = -c if q == 3.0 else sine
    return cosine, sine


@njit(**_ELEMENTWISE)
def _fill_noise(key, lo, scale, out):
    """out[i] = scale * xi of unit lo + i under a step key (counter_rng.standard_normal).

    Unit i of pair block i // 128, position k = i % 128, takes Box-Muller's
    cosine (k < 64) or sine (k >= 64) of the draw mix64(key + GOLDEN (p + 1)),
    p = (i // 128) * 64 + k % 64; one pass over the 64 pairs of each block the
    range touches writes both of its halves. Uses the vectorisable log and
    cos/sin above (libm's are scalar calls, 4x slower here); xi agrees with
    the reference to 3e-15.
    """
    n = out.size
    for block in range(lo // _PAIR_BLOCK, (lo + n + _PAIR_BLOCK - 1) // _PAIR_BLOCK):
        base = block * _PAIR_BLOCK - lo  # index in out of the block's first unit
        counter = key + GOLDEN * (np.uint64(block * _PAIR_HALF) + _ONE_U64)
        if base >= 0 and base + _PAIR_BLOCK <= n:
            # Whole block: out[base + k] = cosine of pair k, out[base + 64 + k] = its sine.
            first = out[base:base + _PAIR_HALF]
            second = out[base + _PAIR_HALF:base + _PAIR_BLOCK]
            for k in range(_PAIR_HALF):
                bits = _mix64(counter + GOLDEN * np.uint64(k))
                radius = math.sqrt(-2.0 * _log_uniform(bits >> _SHIFT32))
                cosine, sine = _sincos_two_pi_uniform(bits & _LOW32)
                first[k] = scale * (radius * cosine)
                second[k] = scale * (radius * sine)
        else:
            # A block cut by either end of the range: the units it has.
            for k in range(_PAIR_HALF):
                i0 = base + k
                i1 = i0 + _PAIR_HALF
                keep0 = 0 <= i0 < n
                keep1 = 0 <= i1 < n
                if keep0 or keep1:
                    bits = _mix64(counter + GOLDEN * np.uint64(k))
                    radius = math.sqrt(-2.0 * _log_uniform(bits >> _SHIFT32))
                    cosine, sine = _sincos_two_pi_uniform(bits & _LOW32)
                    if keep0:
                        out[i0] = scale * (radius * cosine)
                    if keep1:
                        out[i1] = scale * (radius * sine)


# --- block passes --------------------------------------------------------------


@njit(fastmath=True, error_model="numpy", cache=True)
def _affine(out, lo, b, I_T, inputs, m_T, latents):
    """out = b + I^T inputs + m^T latents over neurons lo .. lo + out.size (dtype)."""
    # Rows are sliced before the loops: indexing with lo + i would make numba
    # handle negative indices, which stops vectorisation.
    # Explicit loops throughout: numba's slice assignment is several times slower.
    n = out.size
    b_block = b[lo:lo + n]
    for i in range(n):
        out[i] = b_block[i]
    for d in range(I_T.shape[0]):
        c = inputs[d]
        row = I_T[d, lo:lo + n]
        for i in range(n):
            out[i] += c * row[i]
    for r in range(m_T.shape[0]):
        c = latents[r]
        row = m_T[r, lo:lo + n]
        for i in range(n):
            out[i] += c * row[i]


@njit(fastmath=True, error_model="numpy", cache=True)
def _clamp_dot_n(rates, lo, t, n_T, clamp_mask, clamp_value, clamp_start, clamp_stop, out):
    """Clamp rates at step t; out[r] = sum_i rates[i] n_T[r, lo + i] (float64)."""
    n = rates.size
    if clamp_mask.size and clamp_start <= t < clamp_stop:
        mask = clamp_mask[lo:lo + n]
        value = clamp_value[lo:lo + n]
        for i in range(n):
            if mask[i]:
                rates[i] = value[i]
    for r in range(n_T.shape[0]):
        row = n_T[r, lo:lo + n]
        total = 0.0
        for i in range(n):
            total += np.float64(rates[i]) * np.float64(row[i])
        out[r] = total


@njit(fastmath=True, error_model="numpy", cache=True)
def _advance(state, drive, alpha, noise):
    """x_{t+1} = x_t + alpha (drive - x_t) [+ noise if not empty], in ``state``; drive = x_{t+1}."""
    if noise.size:
        for i in range(state.size):
            advanced = state[i] + alpha * (drive[i] - state[i])
            advanced += noise[i]
            state[i] = advanced
            drive[i] = advanced
    else:
        for i in range(state.size):
            advanced = state[i] + alpha * (drive[i] - state[i])
            state[i] = advanced
            drive[i] = advanced


@njit(fastmath=True, error_model="numpy", cache=True)
def _sum_blocks(partial, N, out):
    """out[b, r] = sum over blocks (in block order) of partial[block, b, r], / N."""
    out[:] = 0.0
    for block in range(partial.shape[0]):
        out += partial[block]
    out /= N


# --- time loops ----------------------------------------------------------------


def _full_path(m_T, n_T, I_T, b, activation, x, u, alpha, alpha_x, noise_scale, seed, trial_offset, step_offset,
               record_idx, kappa, kappa_out, record_out, clamp_mask, clamp_value, clamp_start, clamp_stop):
    R, N = m_T.shape
    B = x.shape[0]
    T = u.shape[1]
    n_blocks = (N + BLOCK_SIZE - 1) // BLOCK_SIZE
    partial = np.empty((n_blocks, B, R))
    krec = np.empty((B, R))
    krec_x = np.empty((B, R), x.dtype)
    keys = np.empty(B, np.uint64)
    # Pass s advances x_{s-1} to x_s (if s > 0) and sums n^T phi(x_s) by
    # block for the next pass: x and the loadings are read once per step.
    for s in range(T + 1):
        t = s - 1
        if s > 0:
            _sum_blocks(partial, N, krec)
            for trial in range(B):
                for r in range(R):
                    # kappa_{t+1} = (1 - alpha) kappa_t + alpha krec_t (float64)
                    kappa[trial, r] = (1 - alpha) * kappa[trial, r] + alpha * krec[trial, r]
                    krec_x[trial, r] = krec[trial, r]
                keys[trial] = _step_key(seed, trial_offset + np.uint64(trial), step_offset + t)
        kappa_out[:, s] = kappa

        for block in prange(n_blocks):
            lo = block * BLOCK_SIZE
            hi = min(lo + BLOCK_SIZE, N)
            rates = np.empty(hi - lo, x.dtype)
            noise = np.empty(hi - lo if noise_scale != 0.0 else 0, x.dtype)
            for trial in range(B):
                state = x[trial, lo:hi]
                if s > 0:
                    # drive = m krec_t + I u_t + b
                    _affine(rates, lo, b, I_T, u[0 if u.shape[0] == 1 else trial, t], m_T, krec_x[trial])
                    # x_{t+1} = x_t + alpha (drive - x_t) + noise_scale xi_t (no noise: empty)
                    _fill_noise(keys[trial], lo, noise_scale, noise)
                    _advance(state, rates, alpha_x, noise)
                else:
                    for i in range(hi - lo):
                        rates[i] = state[i]
                if s < T:
                    _apply_phi(activation, rates)
                    _clamp_dot_n(rates, lo, s, n_T, clamp_mask, clamp_value, clamp_start, clamp_stop,
                                 partial[block, trial])

        for trial in range(B):
            for k in range(record_idx.size):
                record_out[trial, s, k] = x[trial, record_idx[k]]


def _latent_path(m_T, n_T, I_T, b, activation, v, xperp, decay, alpha, kappa, kappa_out,
                 clamp_mask, clamp_value, clamp_start, clamp_stop):
    R, N = m_T.shape
    D = I_T.shape[0]
    B = kappa.shape[0]
    n_blocks = (N + BLOCK_SIZE - 1) // BLOCK_SIZE
    partial = np.empty((n_blocks, B, R))
    krec = np.empty((B, R))
    kappa_x = np.empty((B, R), m_T.dtype)
    v_x = np.empty((v.shape[0], D), m_T.dtype)
    decay_x = np.empty(1, m_T.dtype)
    kappa_out[:, 0] = kappa
    for t in range(v.shape[1] - 1):
        # Cast to the dtype of the loadings, as the reference does.
        for trial in range(B):
            for r in range(R):
                kappa_x[trial, r] = kappa[trial, r]
        for row in range(v.shape[0]):
            for d in range(D):
                v_x[row, d] = v[row, t, d]
        decay_x[0] = decay[t]

        for block in prange(n_blocks):
            lo = block * BLOCK_SIZE
            hi = min(lo + BLOCK_SIZE, N)
            z = np.empty(hi - lo, m_T.dtype)
            for trial in range(B):
                # z = m kappa_t + I v_t + b + decay_t xperp
                _affine(z, lo, b, I_T, v_x[0 if v.shape[0] == 1 else trial], m_T, kappa_x[trial])
                if xperp.shape[0]:
                    xperp_block = xperp[trial, lo:hi]
                    for i in range(hi - lo):
                        z[i] += decay_x[0] * xperp_block[i]
                _apply_phi(activation, z)
                _clamp_dot_n(z, lo, t, n_T, clamp_mask, clamp_value, clamp_start, clamp_stop, partial[block, trial])

        # kappa_{t+1} = (1 - alpha) kappa_t + alpha n^T phi(z_t) / N (float64)
        _sum_blocks(partial, N, krec)
        for trial in range(B):
            for r in range(R):
                kappa[trial, r] = (1 - alpha) * kappa[trial, r] + alpha * krec[trial, r]
        kappa_out[:, t + 1] = kappa


# Built-in activations (an int code): compiled once, cached on disk. A user
# activation (a numba dispatcher): numba compiles one specialisation per
# function, kept in memory only (a dispatcher in the signature defeats the
# disk cache, which would grow at every session).
_full_path_builtin = njit(cache=True, **_KERNEL)(_full_path)
_latent_path_builtin = njit(cache=True, **_KERNEL)(_latent_path)
_full_path_user = njit(**_KERNEL)(_full_path)
_latent_path_user = njit(**_KERNEL)(_latent_path)


# --- Python entry points ---------------------------------------------------------


@contextlib.contextmanager
def _threads(n_threads):
    # numba cannot exceed the pool it started with (NUMBA_NUM_THREADS); results
    # do not depend on the count, so a larger request is capped silently.
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _clamp_arrays(clamp, dtype):
    mask, value, start, stop = clamp
    if mask is None:
        return np.zeros(0, np.bool_), np.zeros(0, dtype), 0, 0
    return np.ascontiguousarray(mask, np.bool_), np.ascontiguousarray(value, dtype), int(start), int(stop)


def _kernel_and_activation(builtin_kernel, user_kernel, activation):
    if isinstance(activation, str):
        return builtin_kernel, activation_code(activation)
    return user_kernel, activation


def full_path_numba(m_T, n_T, I_T, b, activation, x, u, alpha, noise_scale, seed, trial_offset,
                    record_idx, kappa, kappa_out, record_out, clamp=(None, None, 0, 0), step_offset=0, n_threads=1):
    """Full-state loop; arguments and results as :func:`.simulate_dense.full_path_reference`.

    ``activation`` is a built-in name or a scalar ``numba.njit`` function;
    ``n_threads`` (capped at numba's thread pool) does not change the results.
    """
    m_T, n_T, I_T, b = read_only(m_T, n_T, I_T, b)  # one numba specialization (networks' arrays are read-only)
    kernel, phi = _kernel_and_activation(_full_path_builtin, _full_path_user, activation)
    with _threads(n_threads):
        kernel(m_T, n_T, I_T, b, phi, x, u, float(alpha), x.dtype.type(alpha), float(noise_scale),
               np.uint64(int(seed) & _U64_MASK), np.uint64(int(trial_offset) & _U64_MASK), np.int64(step_offset),
               np.ascontiguousarray(record_idx, np.int64), kappa, kappa_out, record_out,
               *_clamp_arrays(clamp, x.dtype))


def latent_path_numba(m_T, n_T, I_T, b, activation, v, xperp, decay, alpha, kappa, kappa_out,
                      clamp=(None, None, 0, 0), n_threads=1):
    """Latent loop; arguments and results as :func:`.simulate_dense.latent_path_reference`.

    ``activation`` and ``n_threads`` as in :func:`full_path_numba`.
    """
    m_T, n_T, I_T, b = read_only(m_T, n_T, I_T, b)  # one numba specialization (networks' arrays are read-only)
    kernel, phi = _kernel_and_activation(_latent_path_builtin, _latent_path_user, activation)
    with _threads(n_threads):
        kernel(m_T, n_T, I_T, b, phi, v, xperp, decay, float(alpha), kappa, kappa_out,
               *_clamp_arrays(clamp, m_T.dtype))
