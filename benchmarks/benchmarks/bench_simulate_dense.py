"""Benchmarks of the dense simulation kernels (connector_sim/_kernels/simulate_dense.py).

Every timed call advances ``STEPS`` Euler steps of one kernel on arrays built in
``setup``: divide the reported time by ``STEPS`` for the time per step. The
kernels run single-threaded, so CPU time (``time.process_time``) is timed: on
this shared machine it is far steadier than wall time.
"""

import math
import time
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a backend not built shows as skipped (n/a)
    import connector_sim
from connector_sim import Gaussian, simulate
from connector_sim._kernels import simulate_dense

BACKENDS = ["cpp", "numba", "numpy"]
DTYPES = ["float32", "float64"]
PATHS = ["full", "latent", "full+noise"]
RANK = 2
N_INPUTS = 1
STEPS = 10
ALPHA = 0.1
NOISE_STD = 0.5
SEED = 0
KAPPA0 = (1.0, -0.5)
NO_CLAMP = (None, None, 0, 0)


def sample_network(n_neurons, dtype):
    """A rank-2, one-input Gaussian network with a non-trivial latent fixed point.

    Rows are [m1, m2, n1, n2, I]; the overlap cov(m_r, n_r) = 1.6 > 1 makes the
    origin unstable, so tanh works away from zero.
    """
    cov = np.diag([1.0, 1.0, 4.0, 4.0, 1.0])
    cov[0, 2] = cov[2, 0] = cov[1, 3] = cov[3, 1] = 1.6
    distribution = Gaussian(np.zeros(5), cov, rank=RANK, n_inputs=N_INPUTS)
    return distribution.sample(n_neurons, SEED, dtype=dtype)


def require_backend(backend):
    """asv's skip idiom: NotImplementedError in setup marks the benchmark skipped."""
    if backend not in connector_sim.available_backends():
        raise NotImplementedError(f"backend {backend!r} is not built here")
    try:
        simulate_dense.kernels(backend)
    except ImportError as error:
        raise NotImplementedError(f"backend {backend!r} does not import: {error}") from error


def reset_peak_rss():
    """Restart the peak-RSS count (Linux), so a peakmem_ benchmark does not see setup's temporaries."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def kernel_call(backend, network, n_trials, n_steps, path):
    """A function that runs ``n_steps`` steps of one kernel on arrays allocated here.

    Repeated calls continue the trajectory (the state and kappa are updated in place).
    """
    full_path, latent_path = simulate_dense.kernels(backend)
    dtype = network.dtype
    B, N = n_trials, network.n_neurons
    kappa0 = np.array(KAPPA0) + 0.1 * np.arange(B)[:, None]  # trials start apart
    kappa = kappa0.copy()
    kappa_out = np.empty((B, n_steps + 1, RANK))
    args = (network.m_T, network.n_T, network.I_T, network.b, network.activation)
    if path == "latent":
        v = np.full((1, n_steps + 1, N_INPUTS), 0.5)
        xperp = np.zeros((0, N), dtype)
        decay = (1 - ALPHA) ** np.arange(n_steps + 1, dtype=np.float64)
        return lambda: latent_path(*args, v, xperp, decay, ALPHA, kappa, kappa_out, NO_CLAMP)
    x = (kappa0 @ network.m_T.astype(np.float64)).astype(dtype)
    u = np.full((1, n_steps, N_INPUTS), 0.5, dtype)
    noise_scale = math.sqrt(ALPHA) * NOISE_STD if path == "full+noise" else 0.0
    record_idx = np.zeros(0, np.int64)
    record_out = np.empty((B, n_steps + 1, 0), dtype)
    return lambda: full_path(*args, x, u, ALPHA, noise_scale, SEED, 0, record_idx, kappa, kappa_out,
                             record_out, NO_CLAMP)


class TimeSimulateDenseKernel:
    """``STEPS`` steps of the full-state or latent kernel (no recording, one thread)."""

    params = (BACKENDS, DTYPES, [1, 8], [10_000, 100_000, 1_000_000], PATHS)
    param_names = ["backend", "dtype", "n_trials", "n_neurons", "path"]
    timer = time.process_time
    timeout = 120

    def setup(self, backend, dtype, n_trials, n_neurons, path):
        require_backend(backend)
        if backend == "numpy" and n_trials > 1:
            # The reference's batched runs would only repeat its B = 1 runs B times (0.2-1.3 s
            # per call at N = 1e6). Every other combination took under 2 s per call, except the
            # first C++ build's batched float64 noise run at N = 1e6 (2.6-3.8 s, over 50x its
            # memory and RNG bound): kept, as the case to watch.
            raise NotImplementedError("the NumPy reference is timed with one trial only")
        network = sample_network(n_neurons, dtype)
        self.run = kernel_call(backend, network, n_trials, STEPS, path)
        # Warm-up outside the timed method: numba compiles (or loads its cache) on the
        # first call, and every backend touches its pages once.
        self.run()

    def time_steps(self, backend, dtype, n_trials, n_neurons, path):
        self.run()


class PeakMemSimulateLatent:
    """Peak RSS of ``simulate`` on the latent path, float32, latents recorded.

    The count restarts at the end of setup, so the number is the process's
    resident memory entering the call (interpreter, libraries, loadings) plus
    what ``simulate`` allocates; sampling temporaries and JIT compilation do
    not show.
    """

    params = (BACKENDS, [1_000_000, 10_000_000])
    param_names = ["backend", "n_neurons"]
    timeout = 300

    def setup(self, backend, n_neurons):
        require_backend(backend)
        self.network = sample_network(n_neurons, "float32")
        simulate(sample_network(1000, "float32"), n_steps=2, path="latent", backend=backend, seed=SEED)
        reset_peak_rss()

    def peakmem_simulate_latent(self, backend, n_neurons):
        simulate(self.network, n_steps=STEPS, path="latent", backend=backend, seed=SEED, kappa0=KAPPA0)


class TrackKappaError:
    """Largest |kappa - kappa_reference| over a short run, against the NumPy reference.

    N = 1e4, 50 steps, from a nonzero kappa0 with a time-varying input; the
    reference runs in the same dtype, so this measures the backend's own
    deviation (summation order, fast tanh), not float32 rounding.
    """

    params = (BACKENDS, DTYPES, PATHS)
    param_names = ["backend", "dtype", "path"]
    unit = "max abs error"

    def setup(self, backend, dtype, path):
        require_backend(backend)
        network = sample_network(10_000, dtype)
        inputs = np.sin(np.linspace(0.0, 3.0, 50))[:, None]
        options = dict(inputs=inputs, kappa0=KAPPA0, seed=SEED,
                       path="latent" if path == "latent" else "full",
                       noise_std=NOISE_STD if path == "full+noise" else 0.0)
        self.kappa = simulate(network, backend=backend, **options).kappa
        self.reference = simulate(network, backend="numpy", **options).kappa

    def track_kappa_error(self, backend, dtype, path):
        return float(np.max(np.abs(self.kappa - self.reference)))
