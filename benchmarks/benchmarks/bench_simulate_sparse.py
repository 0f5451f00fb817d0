"""Benchmarks of the sparse simulation kernels (connector_sim/_kernels/simulate_sparse.py).

Every timed call advances ``STEPS`` Euler steps of a rank-one network with C
connections per row, float32 or float64, one thread, on arrays built in
``setup``: divide by ``STEPS`` for the time per step. CPU time
(``time.process_time``) is timed: on this shared machine it is far steadier
than wall time. The comparison with scipy's CSR product is
``benchmarks/compare_sparse.py``.
"""

import time
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a backend not built shows as skipped (n/a)
    import connector_sim
from connector_sim import rank_one_gaussian, simulate, sparsify
from connector_sim._backends import extension_built
from connector_sim._kernels import simulate_sparse

BACKENDS = ["cpp", "numba", "numpy"]
STEPS = 5
N_CONNECTIONS = 200
ALPHA = 0.1
SEED = 0


def require_backend(backend):
    """asv's skip idiom: NotImplementedError in setup marks the benchmark skipped."""
    if backend not in connector_sim.available_backends():
        raise NotImplementedError(f"backend {backend!r} is not built here")
    if backend == "cpp" and not extension_built("_simulate_sparse_cpp"):
        raise NotImplementedError("the sparse C++ module is not built here")


def sample_network(n_neurons, dtype, representation):
    """Rank one, sigma^2 = 1, sigma_mn = 0.5, C = 200 connections per row, w = 1 / N."""
    dense = rank_one_gaussian(n_neurons, 1.0, 0.5, random_state=SEED, dtype=dtype)
    return sparsify(dense, n_connections=N_CONNECTIONS, seed=SEED + 1, representation=representation)


def kernel_call(backend, network, n_trials):
    full_path, _ = simulate_sparse.kernels(backend)
    B, N = n_trials, network.n_neurons
    dtype = network.dtype
    x = np.random.default_rng(SEED).standard_normal((B, N)).astype(dtype)
    u = np.zeros((1, STEPS, 0), dtype)
    kappa = np.zeros((B, 1))
    kappa_out = np.empty((B, STEPS + 1, 1))
    record_out = np.empty((B, STEPS + 1, 0), dtype)
    args = (network.mask._kernel_args(), network.m_T, network.n_T, network.I_T, network.b, "tanh", network.weight,
            network.gain, x, u, ALPHA, 0.0, SEED, 0, np.zeros(0, np.int64), kappa, kappa_out, record_out)
    return lambda: full_path(*args)


class TimeSimulateSparseKernel:
    """``STEPS`` steps of the sparse kernel, stored or implicit mask, one thread."""

    params = (BACKENDS, ["float32", "float64"], ["stored", "implicit"], [1, 4], [100_000, 1_000_000])
    param_names = ["backend", "dtype", "mask", "n_trials", "n_neurons"]
    timer = time.process_time
    timeout = 300

    def setup(self, backend, dtype, mask, n_trials, n_neurons):
        require_backend(backend)
        if backend == "numpy" and (n_neurons > 100_000 or n_trials > 1):
            raise NotImplementedError("the NumPy reference (np.add.at) is timed at N = 1e5, one trial only")
        self.run = kernel_call(backend, sample_network(n_neurons, dtype, mask), n_trials)
        self.run()  # numba compiles (or loads its cache); every backend touches its pages

    def time_steps(self, backend, dtype, mask, n_trials, n_neurons):
        self.run()


class PeakMemSimulateSparseImplicit:
    """Peak RSS of ``simulate`` on an implicit mask, float32, N = 1e6, C = 200 (target < 2 GB)."""

    params = (["cpp", "numba"],)
    param_names = ["backend"]
    timeout = 300

    def setup(self, backend):
        require_backend(backend)
        self.network = sample_network(1_000_000, "float32", "implicit")
        simulate(sample_network(1000, "float32", "implicit"), n_steps=2, backend=backend, seed=SEED)

    def peakmem_simulate_implicit(self, backend):
        simulate(self.network, n_steps=STEPS, backend=backend, seed=SEED, kappa0=[1.0], noise_std=0.1)


class TrackSparseKappaError:
    """Largest |kappa - kappa_reference| over 20 noisy steps at N = 2000, against the NumPy reference."""

    params = (["cpp", "numba"], ["float32", "float64"], ["stored", "implicit"])
    param_names = ["backend", "dtype", "mask"]
    unit = "max abs error"

    def setup(self, backend, dtype, mask):
        require_backend(backend)
        network = sample_network(2000, dtype, mask)
        options = dict(n_steps=20, kappa0=[1.0], noise_std=0.3, seed=SEED, record_units=[0, 1])
        self.kappa = simulate(network, backend=backend, **options).kappa
        self.reference = simulate(network, backend="numpy", **options).kappa

    def track_kappa_error(self, backend, dtype, mask):
        return float(np.max(np.abs(self.kappa - self.reference)))
