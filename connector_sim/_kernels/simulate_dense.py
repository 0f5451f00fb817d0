"""Dense low-rank RNN time loops: the NumPy reference and the numba kernels.

Every backend implements the same two kernels with the same arguments; the
NumPy functions below are the specification (SPEC section 1).

``full_path``: the state x (B, N) of B trials, one Euler step per time step::

    krec  = n^T phi(x) / N                       # (B, R), float64 sums
    kappa = (1 - alpha) kappa + alpha krec       # float64
    x     = x + alpha (-x + m krec + I u_t + b) + noise_scale xi_t
    xi_t[b, i] = counter_rng.standard_normal(seed, trial_offset + b, step_offset + t, N)[i]

``latent_path``: no private noise, so x_t = m kappa_t + I v_t + b
+ decay_t xperp (SPEC eq. 2) and only kappa (B, R) is carried::

    z     = m kappa + I v_t + b + decay_t xperp  # (B, N), never stored
    kappa = (1 - alpha) kappa + alpha n^T phi(z) / N

Silencing and clamping enter through ``clamp_mask`` and ``clamp_value``: at the
steps t with ``clamp_start <= t < clamp_stop`` and where the mask is true,
phi(x_i) is replaced by the clamp value (c_i = 0 silences).

Arrays are C-contiguous; loadings neuron-contiguous (``m_T`` is (R, N)).
kappa is float64; the neuron-wise arithmetic runs in the dtype of the
loadings; sums over neurons are float64.
"""

import math

import numpy as np

from ..activations import apply_activation
from . import aligned, counter_rng

#: Neurons per reduction block. The compiled kernels sum each block into its
#: own float64 partial and add the partials in block order, so results do not
#: depend on the number of threads. Shared with cpp/.../simulate_dense.hpp.
BLOCK_SIZE = 4096


def _phi(activation, x, t, clamp):
    rates = apply_activation(activation, x)
    clamp_mask, clamp_value, clamp_start, clamp_stop = clamp
    if clamp_mask is not None and clamp_start <= t < clamp_stop:
        rates = np.where(clamp_mask, clamp_value, rates)
    return rates


def full_path_reference(m_T, n_T, I_T, b, activation, x, u, alpha, noise_scale, seed,
                        trial_offset, record_idx, kappa, kappa_out, record_out,
                        clamp=(None, None, 0, 0), step_offset=0):
    """Reference full-state loop; updates ``x`` in place and fills the outputs.

    Parameters
    ----------
    m_T, n_T : ndarray of shape (R, N)
    I_T : ndarray of shape (D, N)
    b : ndarray of shape (N,)
    activation : str or numba function
    x : ndarray of shape (B, N), state at t = 0, overwritten with the final state
    u : ndarray of shape (1 or B, T, D), inputs (one row shared by all trials if 1)
    alpha, noise_scale : float
        dt / tau and sqrt(alpha) * sigma.
    seed, trial_offset : int
        Noise keys: trial b uses counter_rng trial ``trial_offset + b``.
    record_idx : ndarray of shape (K,), int64
    kappa : ndarray of shape (B, R), float64, kappa_0 (overwritten with kappa_T)
    kappa_out : ndarray of shape (B, T + 1, R), float64
    record_out : ndarray of shape (B, T + 1, K), potentials of the recorded units
    clamp : tuple (clamp_mask, clamp_value, clamp_start, clamp_stop)
        clamp_mask of shape (N,) bool (or None: no clamping), clamp_value of
        shape (N,) in the dtype of x, and the step window.
    step_offset : int, default=0
        Step t of this call draws the noise of counter_rng step
        ``step_offset + t``: a run split into calls over consecutive steps
        (carrying x and kappa, clamp window shifted) equals one call.
    """
    dtype = x.dtype.type
    N = x.shape[1]
    n64 = n_T.astype(np.float64)
    kappa_out[:, 0] = kappa
    record_out[:, 0] = x[:, record_idx]
    for t in range(u.shape[1]):
        rates = _phi(activation, x, t, clamp)
        krec = rates.astype(np.float64) @ n64.T / N
        kappa[:] = (1 - alpha) * kappa + alpha * krec
        drive = krec.astype(dtype) @ m_T + u[:, t] @ I_T + b
        x += dtype(alpha) * (drive - x)
        if noise_scale:
            for trial in range(x.shape[0]):
                xi = counter_rng.standard_normal(seed, trial_offset + trial, step_offset + t, N)
                x[trial] += (noise_scale * xi).astype(dtype)
        kappa_out[:, t + 1] = kappa
        record_out[:, t + 1] = x[:, record_idx]


def latent_path_reference(m_T, n_T, I_T, b, activation, v, xperp, decay, alpha, kappa,
                          kappa_out, clamp=(None, None, 0, 0)):
    """Reference latent loop: x is never stored.

    Parameters
    ----------
    m_T, n_T, I_T, b, activation
        As in :func:`full_path_reference`.
    v : ndarray of shape (1 or B, T + 1, D), float64, filtered inputs v_t
    xperp : ndarray of shape (B, N) or (0, N)
        Part of x_0 outside span(m, I) (none if it has no rows).
    decay : ndarray of shape (T + 1,), float64, (1 - alpha)**t
    alpha : float
    kappa : ndarray of shape (B, R), float64, kappa_0 (overwritten with kappa_T)
    kappa_out : ndarray of shape (B, T + 1, R), float64
    clamp : as in :func:`full_path_reference`
    """
    dtype = m_T.dtype.type
    N = m_T.shape[1]
    n64 = n_T.astype(np.float64)
    kappa_out[:, 0] = kappa
    for t in range(v.shape[1] - 1):
        z = kappa.astype(dtype) @ m_T + v[:, t].astype(dtype) @ I_T + b
        if len(xperp):
            z = z + dtype(decay[t]) * xperp
        rates = _phi(activation, z, t, clamp)
        kappa[:] = (1 - alpha) * kappa + alpha * (rates.astype(np.float64) @ n64.T / N)
        kappa_out[:, t + 1] = kappa


def _no_threads(function):
    def call(*args, n_threads=1, **kwargs):
        return function(*args, **kwargs)

    call.__name__ = function.__name__
    return call


def _cpp_clamp_arrays(clamp, dtype):
    mask, value, start, stop = clamp
    if mask is None:
        return np.zeros(0, np.uint8), np.zeros(0, dtype), 0, 0
    return np.ascontiguousarray(mask, np.uint8), np.ascontiguousarray(value, dtype), int(start), int(stop)


def _cpp_kernels():
    from .._ext import _simulate_dense_cpp as ext
    from ..activations import activation_code

    def full_path_cpp(m_T, n_T, I_T, b, activation, x, u, alpha, noise_scale, seed, trial_offset,
                      record_idx, kappa, kappa_out, record_out, clamp=(None, None, 0, 0), step_offset=0,
                      n_threads=1):
        m_T, n_T, I_T, b, u = aligned(m_T, n_T, I_T, b, u)
        ext.full_path(m_T, n_T, I_T, b, activation_code(activation), x, u, float(alpha),
                      float(noise_scale), int(seed) & 0xFFFFFFFFFFFFFFFF, int(trial_offset),
                      np.ascontiguousarray(record_idx, np.int64), kappa, kappa_out, record_out,
                      *_cpp_clamp_arrays(clamp, x.dtype), int(n_threads), step_offset=int(step_offset))

    def latent_path_cpp(m_T, n_T, I_T, b, activation, v, xperp, decay, alpha, kappa, kappa_out,
                        clamp=(None, None, 0, 0), n_threads=1):
        m_T, n_T, I_T, b, v, xperp, decay = aligned(m_T, n_T, I_T, b, v, xperp, decay)
        ext.latent_path(m_T, n_T, I_T, b, activation_code(activation), v, xperp, decay, float(alpha),
                        kappa, kappa_out, *_cpp_clamp_arrays(clamp, m_T.dtype), int(n_threads))

    return full_path_cpp, latent_path_cpp


def kernels(backend):
    """The (full_path, latent_path) pair of a backend.

    Both take the arguments of the reference functions plus ``n_threads``;
    ``backend`` is one of "numpy", "numba", "cpp" and must be available
    (see :func:`connector_sim.available_backends`).
    """
    if backend == "numpy":
        return _no_threads(full_path_reference), _no_threads(latent_path_reference)
    if backend == "numba":
        from ._simulate_dense_numba import full_path_numba, latent_path_numba

        return full_path_numba, latent_path_numba
    if backend == "cpp":
        return _cpp_kernels()
    raise ValueError(f"Unknown backend {backend!r}. Expected one of 'numpy', 'numba', 'cpp'.")
