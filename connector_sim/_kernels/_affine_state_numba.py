"""The numba kernel of affine_state.py (x = m kappa + I v + b in float64, rounded once): see its reference."""

import numpy as np
from numba import njit


@njit(cache=True)
def affine_state_numba(m_T, I_T, b, kappa, v, out):
    B, N = out.shape
    R, D = kappa.shape[1], v.shape[1]
    for t in range(B):
        tv = t if v.shape[0] > 1 else 0
        for i in range(N):
            acc = np.float64(b[i])
            for r in range(R):
                acc += kappa[t, r] * np.float64(m_T[r, i])
            for d in range(D):
                acc += v[tv, d] * np.float64(I_T[d, i])
            out[t, i] = acc
    return out
