"""Flow field of a sampled low-rank RNN at many latent points: the NumPy reference.

``flow_field`` evaluates the recurrent term of the latent velocity (SPEC eq. 3-4)
at P latent points, for a network of N neurons::

    z[p, i]   = m_i^T kappa_p + I_i^T v_p + b_i      # never stored whole
    out[p, :] = sum_i n_i phi(z[p, i]) / N            # float64 sums

so that ``dkappa/dt = -kappa + out`` is the flow of the sampled network, and
its N -> infinity limit is the mean field E_p[n phi(z)]. A compiled kernel with
the same arguments registers in :func:`kernel` under its backend name.

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


def kernel(backend):
    """The flow-field function of a backend (same arguments as the reference).

    Only the NumPy reference exists so far; compiled kernels are added here.
    """
    if backend == "numpy":
        return flow_field_reference
    raise ValueError(f"There is no {backend!r} flow-field kernel. Available: ['numpy'].")
