"""numba kernel of the flow field of a sampled low-rank RNN (the "numba" backend).

Same arguments and results as :func:`.flow_field.flow_field_reference` (the
specification), plus ``n_threads``. This module imports numba and is imported
only when the numba backend is used.

Layout, as in the C++ kernel::

    for each group of POINT_BLOCK points, in parallel:
        for each block of BLOCK_SIZE neurons (its loadings stay in cache):
            for each point p of the group:
                z     = b + I v_p + m kappa_p              # dtype of the loadings
                rates = phi(z)
                total[p] += n^T rates                      # float64, per block
    out[p] = total[p] / N

A point's result depends only on its own kappa_p and v_p, so it does not
change with the number of threads. Built-in activations use the vectorisable
tanh of the dense kernels; a user ``numba.njit`` activation is compiled into
the same loop (without disk cache, as in ``_simulate_dense_numba``).
"""

import numpy as np
from numba import njit, prange

from . import read_only
from ._simulate_dense_numba import _KERNEL, _affine, _apply_phi, _clamp_dot_n, _kernel_and_activation, _threads

#: Neurons per reduction block (the C++ kernel's block size too).
BLOCK_SIZE = 4096
#: Points evaluated against one block of neurons while it is in cache.
POINT_BLOCK = 8


def _flow_field(m_T, n_T, I_T, b, activation, kappa, v, out):
    R, N = m_T.shape
    D = I_T.shape[0]
    P = kappa.shape[0]
    dtype = m_T.dtype
    n_groups = (P + POINT_BLOCK - 1) // POINT_BLOCK
    no_mask = np.zeros(0, np.bool_)
    no_value = np.zeros(0, dtype)
    for group in prange(n_groups):
        first = group * POINT_BLOCK
        count = min(POINT_BLOCK, P - first)
        z = np.empty(min(N, BLOCK_SIZE), dtype)
        coef_kappa = np.empty((count, R), dtype)
        coef_v = np.empty((count, D), dtype)
        partial = np.empty(R)
        total = np.zeros((count, R))
        # kappa_p and v_p cast to the dtype of the loadings, as the C++ kernel does
        for p in range(count):
            for r in range(R):
                coef_kappa[p, r] = kappa[first + p, r]
            for d in range(D):
                coef_v[p, d] = v[first + p, d]
        for lo in range(0, N, BLOCK_SIZE):
            rates = z[:min(BLOCK_SIZE, N - lo)]
            for p in range(count):
                # z = b + I v_p + m kappa_p over the block
                _affine(rates, lo, b, I_T, coef_v[p], m_T, coef_kappa[p])
                _apply_phi(activation, rates)
                # partial[r] = n[r, block] @ phi(z)   (float64)
                _clamp_dot_n(rates, lo, 0, n_T, no_mask, no_value, 0, 0, partial)
                for r in range(R):
                    total[p, r] += partial[r]
        for p in range(count):
            for r in range(R):
                out[first + p, r] = total[p, r] / N


# Built-in activations (an int code): compiled once, cached on disk; a user
# activation: one specialisation per function, in memory only.
_flow_field_builtin = njit(cache=True, **_KERNEL)(_flow_field)
_flow_field_user = njit(**_KERNEL)(_flow_field)


def flow_field_numba(m_T, n_T, I_T, b, activation, kappa_points, v, out, n_threads=1):
    """Flow field; arguments and results as :func:`.flow_field.flow_field_reference`.

    ``activation`` is a built-in name or a scalar ``numba.njit`` function;
    ``n_threads`` (capped at numba's thread pool) does not change the results.
    """
    m_T, n_T, I_T, b = read_only(m_T, n_T, I_T, b)  # one numba specialization (networks' arrays are read-only)
    kernel, phi = _kernel_and_activation(_flow_field_builtin, _flow_field_user, activation)
    with _threads(n_threads):
        kernel(m_T, n_T, I_T, b, phi, kappa_points, v, out)
