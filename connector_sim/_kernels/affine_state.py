"""x = m kappa + I v + b for B trials, formed in float64 and rounded once into the state's dtype.

The initial state of ``simulate``'s full path (x0 from kappa0 and v0)::

    out[t, i] = dtype(b_i + sum_r kappa[t, r] m_T[r, i] + sum_d v[t', d] I_T[d, i])   # float64 sum

in that order (t' = t, or 0 when v has one row), with no float64 array of
size N: the NumPy reference (:func:`affine_state_reference`, the
specification) works block by block of neurons, the numba kernel
(``_affine_state_numba.py``, called by :func:`affine_state`; one pass over the loadings) element by element; they
agree bit for bit.
"""

import numpy as np

#: Neurons per block of the reference's float64 temporaries (they stay in cache).
BLOCK = 1 << 14


def affine_state_reference(m_T, I_T, b, kappa, v, out):
    """Fill ``out`` (B, N) with m kappa + I v + b; kappa (B, R) and v (B or 1, D) float64."""
    B, N = out.shape
    block = max(1, BLOCK // max(1, B))
    total, term = np.empty((B, block)), np.empty((B, block))  # reused: no allocation per block
    columns = [(kappa[:, r, None], m_T[r]) for r in range(kappa.shape[1])]
    columns += [(v[:, d, None], I_T[d]) for d in range(v.shape[1])]
    for start in range(0, N, block):
        stop = min(start + block, N)
        acc, tmp = total[:, :stop - start], term[:, :stop - start]
        acc[:] = b[start:stop]
        for coefficient, loading in columns:
            np.multiply(coefficient, loading[start:stop], out=tmp)
            acc += tmp
        out[:, start:stop] = acc
    return out


_KERNEL = []


#: States smaller than this (B N values) take the NumPy reference (under
#: 0.2 ms; small runs need not import numba); larger ones the numba pass, 2x
#: faster (12 against 28 ms at N = 1e7). The two agree bit for bit.
COMPILED_MIN_SIZE = 1 << 16


def affine_state(m_T, I_T, b, kappa, v, out):
    """:func:`affine_state_reference` in one compiled pass (numba) for large states, else the reference."""
    if out.size < COMPILED_MIN_SIZE:
        return affine_state_reference(m_T, I_T, b, kappa, v, out)
    if not _KERNEL:
        try:
            from ._affine_state_numba import affine_state_numba
        except ImportError:
            affine_state_numba = affine_state_reference
        _KERNEL.append(affine_state_numba)
    kappa = np.ascontiguousarray(kappa, np.float64)
    v = np.ascontiguousarray(v, np.float64)
    return _KERNEL[0](m_T, I_T, b, kappa, v, out)
