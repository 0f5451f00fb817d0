"""Benchmarks of the flow-field kernels of a sampled network (connector_sim/_kernels/flow_field.py).

Every timed call evaluates out[p] = n^T phi(m kappa_p + b) / N at the G = 900
points of a 30 x 30 latent grid (G x N evaluations of tanh), single-threaded,
on arrays built in ``setup``. CPU time (``time.process_time``) is timed: on
this shared machine it is far steadier than wall time.
"""

import time
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a backend not built shows as skipped (n/a)
    import connector_sim  # noqa: F401
from connector_sim import Gaussian
from connector_sim._kernels import flow_field
from connector_sim.synthetic import latent_grid

BACKENDS = ["cpp", "numba", "numpy"]
DTYPES = ["float32", "float64"]
RANK = 2
SEED = 0


def sample_network(n_neurons, dtype):
    """Rank 2, one input, with bias; overlap cov(m_r, n_r) = 1.6 so tanh works away from zero.

    Rows are [m1, m2, n1, n2, I, b].
    """
    cov = np.diag([1.0, 1.0, 4.0, 4.0, 1.0, 0.25])
    cov[0, 2] = cov[2, 0] = cov[1, 3] = cov[3, 1] = 1.6
    distribution = Gaussian(np.zeros(6), cov, rank=RANK, n_inputs=1, bias=True)
    return distribution.sample(n_neurons, SEED, dtype=dtype)


def require_backend(backend):
    """asv's skip idiom: NotImplementedError in setup marks the benchmark skipped."""
    if backend not in flow_field.available_backends():
        raise NotImplementedError(f"flow-field backend {backend!r} is not built here")
    try:
        flow_field.kernel(backend)
    except ImportError as error:
        raise NotImplementedError(f"backend {backend!r} does not import: {error}") from error


def grid_call(backend, network, activation="tanh"):
    """A function evaluating the flow at the 900 grid points (input v = 0.5 everywhere)."""
    kernel = flow_field.kernel(backend)
    kappa = latent_grid(30, 2.0)
    v = np.full((len(kappa), 1), 0.5)
    out = np.empty((len(kappa), RANK))
    loadings = (network.m_T, network.n_T, network.I_T, network.b)

    def run():
        kernel(*loadings, activation, kappa, v, out, n_threads=1)
        return out

    return run


class TimeFlowField:
    """One evaluation of the 900-point grid (one thread)."""

    params = (BACKENDS, DTYPES, [10_000, 100_000])
    param_names = ["backend", "dtype", "n_neurons"]
    timer = time.process_time
    timeout = 300

    def setup(self, backend, dtype, n_neurons):
        require_backend(backend)
        self.run = grid_call(backend, sample_network(n_neurons, dtype))
        # Warm-up outside the timed method: numba compiles (or loads its cache) on the first call.
        self.run()

    def time_grid(self, backend, dtype, n_neurons):
        self.run()


class TrackFlowFieldError:
    """Largest |out - reference| over the grid, N = 1e4, against the NumPy reference.

    The reference computes z and tanh in float64; the compiled kernels in the
    dtype of the loadings (float32: tanh within 3.5e-7 of np.tanh, z rounded to
    float32), with float64 sums.
    """

    params = (BACKENDS, DTYPES)
    param_names = ["backend", "dtype"]
    unit = "max abs error"

    def setup(self, backend, dtype):
        require_backend(backend)
        network = sample_network(10_000, dtype)
        self.out = grid_call(backend, network)().copy()
        self.reference = grid_call("numpy", network)().copy()

    def track_flow_error(self, backend, dtype):
        return float(np.max(np.abs(self.out - self.reference)))
