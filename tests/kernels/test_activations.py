"""The built-in activations of every backend, elementwise, against float64 references.

The NumPy reference (``activations.apply_activation``) is the specification;
the numba and C++ kernels inline their own vectorisable softplus and sigmoid
(an exp by range reduction and a polynomial, and for softplus a log1p), so
they are checked here point by point over the whole float range, including
inf and NaN.
"""

import functools

import numpy as np
import pytest

from connector_sim.activations import BUILTIN_ACTIVATIONS, activation_code, apply_activation
from backend_support import require_backend

#: Largest error allowed, relative to max(1, |phi|): float64 kernels compute
#: exp and log1p to ~1 ulp (measured 2.2e-16); float32 C++ runs a float exp
#: and log (measured 1.3e-7), numba rounds a float64 result once (6e-8).
TOLERANCE = {np.float32: 2.5e-7, np.float64: 5e-16}

POINTS = np.concatenate([np.linspace(-800.0, 800.0, 20_001), np.linspace(-40.0, 40.0, 40_001),
                         np.geomspace(1e-30, 1.0, 301), -np.geomspace(1e-30, 1.0, 301), [0.0, -0.0]])


def exact(name, x):
    """float64 softplus and sigmoid by other formulas than the reference's."""
    x = x.astype(np.float64)
    if name == "softplus":
        return np.where(x > 30, x + np.exp(-np.maximum(x, 30)), np.log1p(np.exp(np.minimum(x, 30))))
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def compiled(backend, name, x):
    if backend == "cpp":
        from connector_sim._ext import _flow_field_cpp

        out = np.zeros_like(x)
        _flow_field_cpp.activation_repeated(x, out, activation_code(name), 1)
        return out
    values = x.copy()
    numba_apply()(activation_code(name), values)
    return values


@functools.lru_cache(maxsize=1)
def numba_apply():
    """values[:] = phi(values) by the numba kernels' inlined built-in activations (compiled once)."""
    import numba

    from connector_sim._kernels._simulate_dense_numba import _apply_phi

    @numba.njit
    def apply(code, values):
        _apply_phi(code, values)

    return apply


def assert_within(got, want, tolerance):
    error = np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(want))
    assert error.max() <= tolerance, f"error {error.max():.3g} at x = {POINTS[np.argmax(error)]}"


def test_codes_follow_the_names():
    assert BUILTIN_ACTIVATIONS[3:] == ("softplus", "sigmoid")
    assert [activation_code(name) for name in BUILTIN_ACTIVATIONS] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", ["softplus", "sigmoid"])
def test_reference_is_exact_and_keeps_dtype(name):
    for dtype in (np.float32, np.float64):
        x = POINTS.astype(dtype)
        got = apply_activation(name, x)
        assert got.dtype == dtype
        assert_within(got, exact(name, x), TOLERANCE[dtype] if dtype is np.float32 else 3e-16)
    # sigmoid(-x) = 1 - sigmoid(x); softplus(x) - softplus(-x) = x; sigmoid keeps its relative precision below 0.
    x = np.linspace(-30, 30, 601)
    if name == "sigmoid":
        np.testing.assert_allclose(apply_activation(name, -x), 1 - apply_activation(name, x), rtol=0, atol=2e-16)
        assert apply_activation(name, np.array([-700.0]))[0] == pytest.approx(np.exp(-700.0), rel=1e-14)
    else:
        np.testing.assert_allclose(apply_activation(name, x) - apply_activation(name, -x), x, rtol=0, atol=1e-14)


@pytest.mark.parametrize("backend", ["numba", "cpp"])
@pytest.mark.parametrize("name", ["softplus", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_activations_match_reference(backend, name, dtype):
    require_backend(backend)
    x = POINTS.astype(dtype)
    got = compiled(backend, name, x)
    assert got.dtype == dtype
    assert_within(got, apply_activation(name, x.astype(np.float64)), TOLERANCE[dtype])
    special = compiled(backend, name, np.array([np.nan, np.inf, -np.inf], dtype))
    assert np.isnan(special[0])
    assert special[1] == (np.inf if name == "softplus" else 1.0)
    assert 0.0 <= special[2] < 1e-30  # the kernels floor exp(-|x|) at exp(-708) (exp(-87) in float32)
