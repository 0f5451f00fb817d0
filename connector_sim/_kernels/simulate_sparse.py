"""Sparse low-rank RNN time loop: the NumPy reference and the backend registry.

Every backend implements ``full_path`` with the arguments of
:func:`full_path_reference` (plus ``n_threads``); the NumPy function below is
the specification. Per Euler step t, for trials b::

    rates  = phi(x_t), clamped in the window          # (B, N), dtype
    y      = (rates[:, :, None] * n[None]).astype(dtype)            # (B, N, R)
    s[b, i, r] = sum over the columns j of row i of float64(y[b, j, r])
    h      = (weight * sum_r m[i, r] s[b, i, r]).astype(dtype)      # float64 sum
    krec   = rates @ n / N                             # float64
    kappa  = (1 - alpha) kappa + alpha gain krec        # float64
    x      = x + alpha ((h + u_t @ I + b) - x) [+ noise_scale xi_t]
    xi_t[b, i] = counter_rng.standard_normal(seed, trial_offset + b, step_offset + t, N)[i]

(the same noise, clamping and recording conventions as the dense full path,
``simulate_dense.full_path_reference``). The mask arrives as
:class:`MaskArgs`: CSR arrays (mode "csr"), or the keys from which the
compiled kernels regenerate each row's columns (modes "fixed" and
"bernoulli", ``sparse_mask.py``); the reference expands implicit masks to CSR
with the specification.
"""

from collections import namedtuple

import numpy as np

from . import aligned, counter_rng, read_only, sparse_mask
from .simulate_dense import _no_threads, _phi

#: How the kernels read the mask: stored CSR (Bernoulli masks), stored tiles
#: (fixed masks, ``sparse_mask.to_tile_offsets``), or regenerated rows.
MASK_MODES = {"csr": 0, "fixed": 1, "bernoulli": 2, "tiled": 3}

#: The mask as the kernels take it. ``mode`` is a key of MASK_MODES; ``key``
#: is sparse_mask.mask_key(seed) (uint64 as a Python int); ``strata`` the
#: (C + 1,) int64 strata of a fixed mask ("fixed", "tiled"), else empty;
#: ``log_q`` the float of "bernoulli"; ``indptr`` (N + 1,) int64 and
#: ``indices`` (nnz,) int32 for "csr", ``indices`` (N C,) uint16 or uint32
#: offsets in tile order for "tiled" (else empty).
MaskArgs = namedtuple("MaskArgs", "mode n_neurons seed key strata log_q indptr indices")


def mask_args(mask):
    """The :class:`MaskArgs` of a :class:`connector_sim.SparseMask`."""
    # Read-only in every mode (stored masks are), so that numba compiles one specialization.
    empty64, empty32 = read_only(np.zeros(0, np.int64), np.zeros(0, np.int32))
    key = int(sparse_mask.mask_key(mask.seed))
    if mask.representation == "stored" and mask.kind == "fixed" and mask.per == "row":
        return MaskArgs("tiled", mask.n_neurons, mask.seed, key, read_only(mask.strata()), 0.0, empty64,
                        read_only(mask.tile_offsets()))
    if mask.representation == "stored":
        indptr, indices = read_only(*mask.csr())
        return MaskArgs("csr", mask.n_neurons, mask.seed, key, empty64, 0.0, indptr, indices)
    if mask.kind == "fixed":
        return MaskArgs("fixed", mask.n_neurons, mask.seed, key, read_only(mask.strata()), 0.0, empty64, empty32)
    return MaskArgs("bernoulli", mask.n_neurons, mask.seed, key, empty64, float(mask.log_q), empty64, empty32)


def expand_to_csr(mask):
    """(indptr, indices) of a :class:`MaskArgs`, by the specification for implicit modes."""
    if mask.mode == "csr":
        return mask.indptr, mask.indices
    if mask.mode == "tiled":
        C = len(mask.strata) - 1
        indptr = np.arange(mask.n_neurons + 1, dtype=np.int64) * C
        return indptr, sparse_mask.from_tile_offsets(mask.indices, mask.n_neurons, C)
    if mask.mode == "fixed":
        C = len(mask.strata) - 1
        return sparse_mask.csr_reference(mask.seed, mask.n_neurons, n_connections=C)
    return sparse_mask.csr_reference(mask.seed, mask.n_neurons, log_q=mask.log_q)


def gather_reference(indptr, indices, y):
    """s[b, i, r] = sum over the columns j of row i of float64(y[b, j, r])."""
    B, N, R = y.shape
    rows = np.repeat(np.arange(N), np.diff(indptr))
    s = np.zeros((B, N, R))
    for trial in range(B):
        np.add.at(s[trial], rows, y[trial, indices].astype(np.float64))
    return s


def full_path_reference(mask, m_T, n_T, I_T, b, activation, weight, gain, x, u, alpha, noise_scale, seed,
                        trial_offset, record_idx, kappa, kappa_out, record_out, clamp=(None, None, 0, 0),
                        step_offset=0):
    """Reference time loop; updates ``x`` and ``kappa`` in place and fills the outputs.

    Parameters
    ----------
    mask : MaskArgs
    m_T, n_T : ndarray of shape (R, N)
    I_T : ndarray of shape (D, N)
    b : ndarray of shape (N,)
    activation : str or numba function
    weight : float
        w of P_ij = w X_ij m_i . n_j.
    gain : float
        Mean-field gain of the latent: kappa follows gain n^T phi(x) / N.
    x : ndarray of shape (B, N), state at t = 0, overwritten with the final state
    u : ndarray of shape (1 or B, T, D)
    alpha, noise_scale : float
    seed, trial_offset : int
        Noise keys, as in the dense kernels.
    record_idx : ndarray of shape (K,), int64
    kappa : ndarray of shape (B, R), float64 (overwritten with kappa_T)
    kappa_out : ndarray of shape (B, T + 1, R), float64
    record_out : ndarray of shape (B, T + 1, K)
    clamp : tuple (clamp_mask, clamp_value, clamp_start, clamp_stop), as in the dense kernels
    step_offset : int, default=0
        Step t draws the noise of counter_rng step ``step_offset + t``, as in the dense kernels.
    """
    dtype = x.dtype.type
    N = x.shape[1]
    indptr, indices = expand_to_csr(mask)
    m64 = m_T.astype(np.float64)
    n64 = n_T.astype(np.float64)
    kappa_out[:, 0] = kappa
    record_out[:, 0] = x[:, record_idx]
    for t in range(u.shape[1]):
        rates = _phi(activation, x, t, clamp)
        y = (rates[:, :, None] * n_T.T[None]).astype(dtype)
        s = gather_reference(indptr, indices, y)
        h = (weight * np.einsum("bir,ri->bi", s, m64)).astype(dtype)
        krec = rates.astype(np.float64) @ n64.T / N
        kappa[:] = (1 - alpha) * kappa + alpha * gain * krec
        x += dtype(alpha) * ((h + u[:, t] @ I_T + b) - x)
        if noise_scale:
            for trial in range(x.shape[0]):
                xi = counter_rng.standard_normal(seed, trial_offset + trial, step_offset + t, N)
                x[trial] += (noise_scale * xi).astype(dtype)
        kappa_out[:, t + 1] = kappa
        record_out[:, t + 1] = x[:, record_idx]


def matvec_reference(mask, m_T, n_T, weight, v):
    """P v for P_ij = weight X_ij m_i . n_j in float64; v real of shape (N,) or (N, k).

    (P v)_i = weight sum_r m[i, r] sum over the columns j of row i of n[j, r] v_j.
    """
    indptr, indices = expand_to_csr(mask)
    v = np.asarray(v, np.float64)
    v2 = v.reshape(v.shape[0], -1)
    m64, n64 = m_T.astype(np.float64), n_T.astype(np.float64)
    out = np.zeros(v2.shape)
    for r in range(m64.shape[0]):
        s = gather_reference(indptr, indices, (n64[r][:, None] * v2)[None])[0]
        out += weight * m64[r][:, None] * s
    return out.reshape(v.shape)


def _numba_kernels():
    from ._simulate_sparse_numba import full_path_numba, matvec_numba

    return full_path_numba, matvec_numba


def _cpp_kernels():
    from .._ext import _simulate_sparse_cpp as ext
    from ..activations import activation_code
    from .simulate_dense import _cpp_clamp_arrays

    def full_path_cpp(mask, m_T, n_T, I_T, b, activation, weight, gain, x, u, alpha, noise_scale, seed,
                      trial_offset, record_idx, kappa, kappa_out, record_out, clamp=(None, None, 0, 0),
                      step_offset=0, n_threads=1):
        m_T, n_T, I_T, b, u = aligned(m_T, n_T, I_T, b, u)
        return ext.full_path(MASK_MODES[mask.mode], mask.key, mask.strata, float(mask.log_q), mask.indptr,
                             mask.indices, m_T, n_T, I_T, b, activation_code(activation), float(weight),
                             float(gain), x, u, float(alpha), float(noise_scale),
                             int(seed) & 0xFFFFFFFFFFFFFFFF, int(trial_offset),
                             np.ascontiguousarray(record_idx, np.int64), kappa, kappa_out, record_out,
                             *_cpp_clamp_arrays(clamp, x.dtype), int(n_threads), step_offset=int(step_offset))

    def matvec_cpp(mask, m_T, n_T, weight, v, n_threads=1):
        v = np.ascontiguousarray(v, np.float64)
        out = np.empty_like(v)
        ext.matvec(MASK_MODES[mask.mode], mask.key, mask.strata, float(mask.log_q), mask.indptr, mask.indices,
                   np.ascontiguousarray(m_T, np.float64), np.ascontiguousarray(n_T, np.float64), float(weight),
                   v.reshape(v.shape[0], -1), out.reshape(v.shape[0], -1), int(n_threads))
        return out

    return full_path_cpp, matvec_cpp


def kernels(backend):
    """The (full_path, matvec) pair of a backend ("numpy", "numba" or "cpp").

    ``full_path`` takes the arguments of :func:`full_path_reference`,
    ``matvec`` those of :func:`matvec_reference` (real v), both plus ``n_threads``.
    """
    if backend == "numpy":
        return _no_threads(full_path_reference), _no_threads(matvec_reference)
    if backend == "numba":
        return _numba_kernels()
    if backend == "cpp":
        return _cpp_kernels()
    raise ValueError(f"Unknown backend {backend!r}. Expected one of 'numpy', 'numba', 'cpp'.")
