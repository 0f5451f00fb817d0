"""Benchmarks of the public paths against their kernels (issue 17: dtype, short calls, auto choices).

Side by side, with ratios, in ``benchmarks/compare_public_paths.py``. CPU time
(``time.process_time``) except for thread counts, which need wall time.
"""

import os
import time
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a backend not built shows as skipped (n/a)
    import connector_sim as cs
from connector_sim._backends import available_backends, extension_built
from connector_sim.synthetic import latent_grid


def _flow_network(n_neurons):
    cov = np.diag([1.0, 1.0, 4.0, 4.0])
    cov[0, 2] = cov[2, 0] = cov[1, 3] = cov[3, 1] = 1.6
    return cs.Gaussian(np.zeros(4), cov, rank=2).sample(n_neurons, 0, dtype=np.float32)


class TimeLatentVelocityFloat32Network:
    """latent_velocity of a float32 network on 900 points (N = 1e5), against chunked float32 NumPy."""

    params = (["public float64 (default)", "public float32", "numpy chunked float32"],)
    param_names = ["case"]
    timer = time.process_time

    def setup(self, case):
        self.network = _flow_network(100_000)
        self.grid = latent_grid(30, 2.0)
        self.m, self.n = np.ascontiguousarray(self.network.m), np.ascontiguousarray(self.network.n)
        self.kappa32 = self.grid.astype(np.float32)
        self.time_grid(case)  # warm-up

    def time_grid(self, case):
        if case == "public float64 (default)":
            cs.latent_velocity(self.network, self.grid)
        elif case == "public float32":
            cs.latent_velocity(self.network, self.grid, dtype=np.float32)
        else:
            for start in range(0, len(self.kappa32), 64):
                z = self.kappa32[start:start + 64] @ self.m.T
                np.tanh(z, out=z)
                z @ self.n / len(self.m)


class TrackSimulateMsPerStep:
    """CPU ms per step of simulate's full path (float32, noise, 1 thread) in calls of 16 and of 200 steps."""

    params = ([16, 200], [1_000_000, 10_000_000])
    param_names = ["steps_per_call", "n_neurons"]
    unit = "ms"

    def setup(self, steps, n_neurons):
        rng = np.random.default_rng(0)
        self.network = cs.LowRankRNN(rng.standard_normal((n_neurons, 2), np.float32),
                                     rng.standard_normal((n_neurons, 2), np.float32), dtype=np.float32)
        self.options = dict(kappa0=[0.5, -0.5], noise_std=0.5, seed=1, path="full", n_threads=1)
        cs.simulate(self.network, 2, **self.options)

    def track_ms_per_step(self, steps, n_neurons):
        samples = []
        for _ in range(max(1, 400 // steps) if n_neurons < 10_000_000 else 1):
            start = time.process_time()
            cs.simulate(self.network, steps, **self.options)
            samples.append(1e3 * (time.process_time() - start) / steps)
        return float(np.median(samples))


class TimeSparseAutoBackend:
    """10 steps of a rank-one sparse network (N = 1e5, C = 200, float32, noise): auto and each backend."""

    params = (["auto", "cpp", "numba"], ["stored", "implicit"])
    param_names = ["backend", "representation"]
    timer = time.process_time

    def setup(self, backend, representation):
        if backend != "auto" and (backend not in available_backends()
                                  or (backend == "cpp" and not extension_built("_simulate_sparse_cpp"))):
            raise NotImplementedError(f"backend {backend!r} is not built here")
        dense = cs.rank_one_gaussian(100_000, 1.0, 0.5, random_state=0, dtype=np.float32)
        self.network = cs.sparsify(dense, n_connections=200, seed=1, representation=representation)
        self.time_steps(backend, representation)

    def time_steps(self, backend, representation):
        cs.simulate(self.network, 10, kappa0=[1.0], noise_std=0.1, seed=0, backend=backend, n_threads=1)


class TimeThreads:
    """Wall time of 20 full-path steps at N = 1e6 float32 with 1, 2 and "auto" threads (under the current load)."""

    params = ([1, 2, "auto"],)
    param_names = ["n_threads"]
    timer = time.perf_counter

    def setup(self, n_threads):
        if n_threads == 2 and len(os.sched_getaffinity(0)) < 2:
            raise NotImplementedError("one core")
        rng = np.random.default_rng(0)
        self.network = cs.LowRankRNN(rng.standard_normal((1_000_000, 2), np.float32),
                                     rng.standard_normal((1_000_000, 2), np.float32), dtype=np.float32)
        self.time_steps(n_threads)

    def time_steps(self, n_threads):
        cs.simulate(self.network, 20, kappa0=[0.5, -0.5], noise_std=0.5, seed=1, path="full", n_threads=n_threads)
