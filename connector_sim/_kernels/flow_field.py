"""Flow field of a sampled low-rank RNN at many latent points: the NumPy reference.

``flow_field`` evaluates the recurrent term of the latent velocity (theory eq. 3-4)
at P latent points, for a network of N neurons::

    z[p, i]   = m_i^T kappa_p + I_i^T v_p + b_i      # never stored whole
    out[p, :] = sum_i n_i phi(z[p, i]) / N            # float64 sums

so that ``dkappa/dt = -kappa + out`` is the flow of the sampled network, and
its N -> infinity limit is the mean field E_p[n phi(z)]. Compiled kernels with
the same arguments (plus ``n_threads``) register in :func:`kernel` under their
backend names: "numba" (``_flow_field_numba.py``) and "cpp"
(``cpp/include/connector_sim/flow_field.hpp`` through ``_ext._flow_field_cpp``).
They compute z and phi(z) in the dtype of the loadings (the reference in
float64) and sum over neurons in float64.

Arrays are C-contiguous; loadings neuron-contiguous (``m_T`` is (R, N)).
"""

import numpy as np

from ..activations import apply_activation

#: Neurons per reduction block: each block is summed into a float64 partial and
#: the partials are added in block order, so the result does not depend on how
#: the points are chunked (or, for a compiled kernel, on the thread count).
BLOCK_SIZE = 1 << 16

#: Largest (points x neurons) temporary the reference builds, in elements
#: (32 MB of float64): memory stays bounded for any N and any number of points.
_TEMPORARY_ELEMENTS = 1 << 22


def flow_field_reference(m_T, n_T, I_T, b, activation, kappa_points, v, out):
    """Fill ``out`` with n^T phi(m kappa + I v + b) / N at each latent point.

    Parameters
    ----------
    m_T, n_T : ndarray of shape (R, N)
    I_T : ndarray of shape (D, N)
    b : ndarray of shape (N,)
    activation : str or numba function
        phi, applied elementwise.
    kappa_points : ndarray of shape (P, R), float64
        Latent points kappa_p.
    v : ndarray of shape (P, D), float64
        Filtered input at each point.
    out : ndarray of shape (P, R), float64
        Overwritten with the recurrent term at each point.
    """
    n_neurons = m_T.shape[1]
    n_points = kappa_points.shape[0]
    chunk = max(1, _TEMPORARY_ELEMENTS // min(n_neurons, BLOCK_SIZE))
    for start in range(0, n_points, chunk):
        points = slice(start, min(start + chunk, n_points))
        total = np.zeros((points.stop - points.start, m_T.shape[0]))
        for first in range(0, n_neurons, BLOCK_SIZE):
            block = slice(first, min(first + BLOCK_SIZE, n_neurons))
            z = (kappa_points[points] @ m_T[:, block].astype(np.float64)
                 + v[points] @ I_T[:, block].astype(np.float64)
                 + b[block].astype(np.float64))
            total += apply_activation(activation, z) @ n_T[:, block].T.astype(np.float64)
        out[points] = total / n_neurons


#: Largest error of the compiled float32 activations (absolute for tanh,
#: relative to 1 + |z| for softplus and sigmoid; relu and identity are exact).
FLOAT32_ACTIVATION_ERROR = {"tanh": 3.5e-7, "softplus": 3e-7, "sigmoid": 3e-7, "relu": 0.0, "identity": 0.0}


def float32_error_bound(m_T, n_T, I_T, b, activation, kappa_points, v):
    """Bound on |float32 flow - float64 flow| of the same loadings, at each point: (P, R).

    The float32 kernel (compiled backends) rounds the loadings, kappa_p and
    v_p to float32 (C + 1 roundings, C = R + D), forms z_i with C
    multiply-adds (2 (C + 1) roundings), all within eps / 2 of
    S_i = |b_i| + |I_i|.|v_p| + |m_i|.|kappa_p|; with |phi'| <= 1 the rate errs
    by at most 2 (C + 1) eps S_i plus the activation's own float32 error
    (:data:`FLOAT32_ACTIVATION_ERROR`). Each product with n_i (n rounded
    once) is summed in float32 over at most 32 terms per lane
    (flow_field.hpp) before float64 takes over: 17 eps of |n_i| (1 + S_i),
    as |phi(z_i)| <= 1 + S_i for the built-in activations. The float64 flow
    and the float64 sums add at most 1e-13 of mean_i |n_i| (1 + S_i). So::

        bound[p] = mean_i |n_i| (2 (C + 1) eps S_i + e_phi + (17 eps + 1e-13) (1 + S_i))

    It does not grow with N (the sums over neurons are float64).
    """
    m, n, I, b = (np.abs(np.asarray(a, np.float64)) for a in (m_T, n_T, I_T, b))
    eps = float(np.finfo(np.float32).eps)
    C = m.shape[0] + I.shape[0]
    size = b + np.abs(kappa_points) @ m + np.abs(v) @ I  # (P, N)
    error = FLOAT32_ACTIVATION_ERROR[activation]
    activation_error = error * (1.0 + size) if activation in ("softplus", "sigmoid") else error
    per_unit = 2 * (C + 1) * eps * size + activation_error + (17 * eps + 1e-13) * (1.0 + size)
    return per_unit @ n.T / m.shape[1]


#: Backends of the flow field in order of preference for ``backend="auto"``
#: (fastest first; measured in benchmarks/compare_flow_field.py).
BACKENDS = ("cpp", "numba", "numpy")


def available_backends():
    """The flow-field backends usable here, fastest first ("numpy" always)."""
    from .._backends import _numba_importable, extension_built

    built = {"cpp": extension_built("_flow_field_cpp"), "numba": _numba_importable(), "numpy": True}
    return [name for name in BACKENDS if built[name]]


def choose_backend(backend, activation):
    """The backend that evaluates the flow with ``activation``: "auto" resolved, others checked.

    "auto" is the fastest available backend that runs the activation: a
    user-supplied (numba) activation runs on "numba", or on the slow NumPy
    reference where numba is missing.
    """
    available = available_backends()
    builtin = isinstance(activation, str)
    if backend == "auto":
        if builtin:
            return available[0]
        return "numba" if "numba" in available else "numpy"
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}. Expected 'auto' or one of {list(BACKENDS)}.")
    if backend not in available:
        raise ValueError(
            f"The {backend!r} flow-field backend is not available here. Available: {available}. "
            "Use backend='auto' to pick the fastest one."
        )
    if not builtin and backend == "cpp":
        raise ValueError(
            "A user-supplied (numba) activation runs on the 'numba' and 'numpy' backends only; got "
            "backend='cpp'. Use backend='numba' or 'auto'."
        )
    return backend


def _no_threads(function):
    def call(*args, n_threads=1):
        return function(*args)

    call.__name__ = function.__name__
    return call


def _cpp_kernel():
    from .._ext import _flow_field_cpp as ext
    from . import aligned
    from ..activations import activation_code

    def flow_field_cpp(m_T, n_T, I_T, b, activation, kappa_points, v, out, n_threads=1):
        m_T, n_T, I_T, b, kappa_points, v = aligned(m_T, n_T, I_T, b, kappa_points, v)
        ext.flow_field(m_T, n_T, I_T, b, activation_code(activation), kappa_points, v, out, int(n_threads))

    return flow_field_cpp


def kernel(backend):
    """The flow-field function of a backend.

    It takes the arguments of :func:`flow_field_reference` plus ``n_threads``
    (which never changes the result); ``backend`` is one of "numpy", "numba",
    "cpp", or "auto" for the fastest available one (see :func:`choose_backend`).
    """
    if backend == "auto":
        backend = available_backends()[0]
    if backend == "numpy":
        return _no_threads(flow_field_reference)
    if backend == "numba":
        from ._flow_field_numba import flow_field_numba

        return flow_field_numba
    if backend == "cpp":
        return _cpp_kernel()
    raise ValueError(f"There is no {backend!r} flow-field kernel. Expected one of 'auto', {', '.join(map(repr, BACKENDS))}.")
