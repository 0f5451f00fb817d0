"""Fast activation approximations shared by the compiled kernels (specification).

float32 tanh: a rational function fitted for this project (weighted least
squares, Lawson reweighting, on [0, 9]; tanh(x) rounds to 1 in float32 for
|x| > 9)::

    tanh(x) ~= x P(s) / Q(s),  s = x^2,  x clamped to [-9, 9]

with the coefficients below (ascending powers of s). Evaluated in float32 its
largest absolute error over the real line is 3.5e-7 (measured on 4e6 points
in [-12, 12] against float64 ``np.tanh``), and its relative error for
|x| < 1 is 2.3e-7: about 3 float32 ulps at 1. C++ (``simd_math.hpp``) and
numba use exactly these constants.

float64 tanh: ``1 - 2 / (exp(2 |x|) + 1)`` with the sign restored and an exp
by Cody-Waite range reduction and a degree-12 Taylor polynomial; absolute
error below 1e-15 (stated and tested in ``tests/kernels``).
"""

import numpy as np

TANH_F32_CLAMP = 9.0
TANH_F32_P = (1.0, 0.13380268798061937, 0.0034946994348717814, 2.0595083954388026e-05,
              1.3336644121529628e-08)
TANH_F32_Q = (1.0, 0.4671358624021135, 0.02587357033918656, 0.0003284206711100211,
              7.768884004494183e-07)


def tanh_f32_reference(x):
    """The float32 rational tanh, evaluated in float32 by Horner's rule."""
    x = np.asarray(x, dtype=np.float32)
    clamp = np.float32(TANH_F32_CLAMP)
    xc = np.clip(x, -clamp, clamp)
    s = xc * xc
    p = np.zeros_like(s)
    q = np.zeros_like(s)
    for coefficient in TANH_F32_P[::-1]:
        p = p * s + np.float32(coefficient)
    for coefficient in TANH_F32_Q[::-1]:
        q = q * s + np.float32(coefficient)
    return xc * p / q
