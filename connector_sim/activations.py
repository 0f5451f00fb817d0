"""Activation functions phi of the low-rank RNN.

The built-in activations:

- ``"tanh"``: tanh(x);
- ``"relu"``: max(x, 0);
- ``"identity"``: x;
- ``"softplus"``: log(1 + exp(x)) (a smooth relu; phi' = sigmoid);
- ``"sigmoid"``: 1 / (1 + exp(-x)) = (1 + tanh(x / 2)) / 2 (rates in (0, 1)).

Built-in activations are named by a string and run on every backend. A
user-supplied activation is a scalar function compiled by ``numba.njit``; it
runs on the numba backend only, which the simulator picks for it.
"""

import numpy as np

#: Names of the built-in activations, in the order the compiled kernels number them.
BUILTIN_ACTIVATIONS = ("tanh", "relu", "identity", "softplus", "sigmoid")


def activation_code(name):
    """The integer the compiled kernels use for a built-in activation."""
    return BUILTIN_ACTIVATIONS.index(name)


def apply_activation(activation, x):
    """phi(x) elementwise, in the dtype of ``x`` (NumPy reference)."""
    if activation == "tanh":
        return np.tanh(x)
    if activation == "relu":
        return np.maximum(x, x.dtype.type(0))
    if activation == "identity":
        return x.copy()
    if activation == "softplus":
        return np.logaddexp(x, x.dtype.type(0))
    if activation == "sigmoid":
        # exp(-|x|) never overflows; e / (1 + e) below 0 keeps the relative precision.
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    return _apply_user_activation(activation, x)


def _apply_user_activation(function, x):
    out = np.empty_like(x)
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    for i in range(flat_in.size):
        flat_out[i] = function(flat_in[i])
    return out


def check_activation(activation):
    """Return a built-in name or a numba-compiled scalar function, else raise."""
    if isinstance(activation, str):
        if activation not in BUILTIN_ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {activation!r}. Expected one of {list(BUILTIN_ACTIVATIONS)}, "
                "or a scalar function compiled with numba.njit."
            )
        return activation
    if _is_numba_function(activation):
        return activation
    if callable(activation):
        raise TypeError(
            "A user-supplied activation must be a scalar function compiled with numba.njit "
            f"(for example `phi = numba.njit(lambda x: x / (1 + abs(x)))`). Got {activation!r}, "
            "which is a plain Python callable: wrap it with numba.njit."
        )
    raise TypeError(
        f"activation must be one of {list(BUILTIN_ACTIVATIONS)} or a numba.njit function. Got {activation!r}."
    )


def _is_numba_function(obj):
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:
        return False
    return isinstance(obj, CPUDispatcher)


def activation_name(activation):
    """A printable name of an activation (for reports and repr)."""
    return activation if isinstance(activation, str) else getattr(activation, "__name__", repr(activation))
