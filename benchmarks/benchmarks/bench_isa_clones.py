"""The C++ kernels' instruction-set clones ("avx512", "avx2", "default"), one thread, CPU time.

Each benchmark forces one clone (``connector_sim._backends.set_kernel_isa``)
and is skipped where the CPU lacks it; benchmarks/compare.py isa prints the
same cases with their fraction of the measured limits.
"""

import time
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a module not built shows as skipped (n/a)
    import connector_sim  # noqa: F401
from connector_sim import Gaussian
from connector_sim._backends import KERNEL_ISAS, cpu_isa, extension_built, set_kernel_isa
from connector_sim._kernels import flow_field, simulate_dense
from connector_sim.synthetic import latent_grid

RANK = 2
STEPS = 20
ALPHA = 0.1
NO_CLAMP = (None, None, 0, 0)


def use_isa(isa):
    """asv's skip idiom (NotImplementedError in setup) for a clone the CPU or the build lacks."""
    if not extension_built("_simulate_dense_cpp") or not extension_built("_flow_field_cpp"):
        raise NotImplementedError("the C++ modules are not built here")
    if KERNEL_ISAS.index(isa) < KERNEL_ISAS.index(cpu_isa()):
        raise NotImplementedError(f"this CPU lacks the {isa} clone")
    set_kernel_isa(isa)


def sample_network(n_neurons, dtype, n_inputs=1):
    cov = np.diag([1.0, 1.0, 4.0, 4.0] + [1.0] * n_inputs)
    cov[0, 2] = cov[2, 0] = cov[1, 3] = cov[3, 1] = 1.6
    return Gaussian(np.zeros(4 + n_inputs), cov, rank=RANK, n_inputs=n_inputs).sample(n_neurons, 0, dtype=dtype)


class TimeDenseLatentStepClones:
    """STEPS latent steps at N = 1e6 (B trials): the tanh-bound path that AVX-512 widens."""

    params = (list(KERNEL_ISAS), ["float32", "float64"], [1, 8])
    param_names = ["isa", "dtype", "n_trials"]
    timer = time.process_time
    timeout = 300

    def setup(self, isa, dtype, n_trials):
        use_isa(isa)
        network = sample_network(1_000_000, dtype)
        _, latent_path = simulate_dense.kernels("cpp")
        loadings = (network.m_T, network.n_T, network.I_T, network.b, network.activation)
        kappa = np.array([1.0, -0.5]) + 0.1 * np.arange(n_trials)[:, None]
        kappa_out = np.empty((n_trials, STEPS + 1, RANK))
        v = np.full((n_trials, STEPS + 1, 1), 0.5)
        decay = (1 - ALPHA) ** np.arange(STEPS + 1, dtype=np.float64)
        no_xperp = np.zeros((0, network.n_neurons), dtype)
        self.run = lambda: latent_path(*loadings, v, no_xperp, decay, ALPHA, kappa, kappa_out, NO_CLAMP)
        self.run()

    def time_latent_steps(self, isa, dtype, n_trials):
        self.run()

    def teardown(self, isa, dtype, n_trials):
        set_kernel_isa(cpu_isa())


class TimeFlowFieldClones:
    """The flow field at the 900 points of a 30 x 30 grid, N = 1e5."""

    params = (list(KERNEL_ISAS), ["float32", "float64"])
    param_names = ["isa", "dtype"]
    timer = time.process_time
    timeout = 300

    def setup(self, isa, dtype):
        use_isa(isa)
        network = sample_network(100_000, dtype, n_inputs=0)
        kernel = flow_field.kernel("cpp")
        kappa = latent_grid(30, 2.0)
        v = np.zeros((len(kappa), 0))
        out = np.empty((len(kappa), RANK))
        loadings = (network.m_T, network.n_T, network.I_T, network.b)
        self.run = lambda: kernel(*loadings, "tanh", kappa, v, out)
        self.run()

    def time_grid(self, isa, dtype):
        self.run()

    def teardown(self, isa, dtype):
        set_kernel_isa(cpu_isa())


class TimeTanhClones:
    """The kernels' SIMD tanh alone: 2^24 evaluations on 4096 values in L1."""

    params = (list(KERNEL_ISAS), ["float32", "float64"])
    param_names = ["isa", "dtype"]
    timer = time.process_time

    def setup(self, isa, dtype):
        use_isa(isa)
        from connector_sim._ext import _flow_field_cpp

        self.x = np.linspace(-3.0, 3.0, 4096, dtype=dtype)
        self.acc = np.zeros_like(self.x)
        self.tanh_repeated = _flow_field_cpp.tanh_repeated

    def time_tanh(self, isa, dtype):
        self.tanh_repeated(self.x, self.acc, 4096)

    def teardown(self, isa, dtype):
        set_kernel_isa(cpu_isa())
