"""Benchmarks of drift-diffusion matching (connector_sim.ddm): training, and simulating with input noise.

- ``TimeDriftDiffusionFit``: one ``DriftDiffusionMatching.fit`` (sampling the
  SDE, the closed-form start, ``EPOCHS`` Adam epochs) per system, on the CPU
  (CUDA when ``device="auto"`` finds it: the fit takes ``device="auto"``).
- ``TrackDriftError``: the held-out relative drift error of those fits, and the
  expected one of a 1e5-row resample, so that a faster fit that fits worse
  shows in the same table.
- ``TimeSimulateInputNoise``: ``STEPS`` steps of a trained double-well network
  resampled to N rows, 16 trials, latent path, with and without the input
  noise that realises the diffusion (the noise costs a draw per trial, step
  and input channel, not per neuron).
- ``TrackInputNoiseError``: largest |kappa - kappa_reference| of a backend
  against the NumPy reference with input noise.
"""

import time
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a backend not built shows as skipped (n/a)
    import connector_sim
from connector_sim import simulate

SYSTEMS = ["double_well", "cycling", "lorenz"]
EPOCHS = 10
STEPS = 200
N_TRIALS = 16
SEED = 0


def make_sde(name):
    from connector_sim.ddm.pipeline import make_sde as preset

    return preset(name)


def fit(name, n_epochs=EPOCHS):
    from connector_sim.ddm import DriftDiffusionMatching

    return DriftDiffusionMatching(n_neurons=500, n_epochs=n_epochs, n_samples=4096, random_state=SEED,
                                  n_threads=1).fit(make_sde(name))


def require_backend(backend):
    if backend not in connector_sim.available_backends():
        raise NotImplementedError(f"backend {backend!r} is not built here")


class TimeDriftDiffusionFit:
    """One fit: 500 neurons, 4096 samples, ``EPOCHS`` epochs (wall time: torch uses its own threads)."""

    params = (SYSTEMS,)
    param_names = ["system"]
    timeout = 300
    number = 1
    repeat = 3

    def setup(self, system):
        try:
            import torch  # noqa: F401
        except ImportError as error:
            raise NotImplementedError("torch is not installed") from error
        fit("double_well", n_epochs=0)  # imports and first-call costs outside the timing

    def time_fit(self, system):
        fit(system)


class TrackDriftError:
    """Held-out relative drift errors of the fits above: the fitted rows, and a 1e5-row resample (expected)."""

    params = (SYSTEMS, ["fitted", "resampled_1e5"])
    param_names = ["system", "network"]
    unit = "relative error"
    timeout = 300

    def setup_cache(self):
        try:
            import torch  # noqa: F401
        except ImportError:
            return None
        errors = {}
        for system in SYSTEMS:
            estimator = fit(system)
            errors[system] = {"fitted": estimator.drift_error_, "resampled_1e5": estimator.sampled_drift_error_}
        return errors

    def track_drift_error(self, errors, system, network):
        if errors is None:
            raise NotImplementedError("torch is not installed")
        return errors[system][network]


class TimeSimulateInputNoise:
    """``STEPS`` steps of a resampled double-well network, 16 trials, latent path, float32."""

    params = (["cpp", "numba"], [10_000, 100_000], ["none", "input"])
    param_names = ["backend", "n_neurons", "noise"]
    timer = time.process_time
    timeout = 300

    def setup_cache(self):
        try:
            estimator = fit("double_well", n_epochs=0)
        except ImportError:
            return None
        return estimator.network_.rows(), estimator.noise_, estimator.time_scale_

    def setup(self, cache, backend, n_neurons, noise):
        require_backend(backend)
        if cache is None:
            raise NotImplementedError("torch is not installed")
        rows, input_noise, time_scale = cache
        network = connector_sim.Empirical(rows, rank=1, n_inputs=1, bias=True).sample(n_neurons, SEED,
                                                                                        dtype=np.float32)
        options = dict(dt=0.05 * time_scale, n_trials=N_TRIALS, seed=SEED, path="latent", backend=backend,
                       input_noise=input_noise if noise == "input" else None)
        self.run = lambda: simulate(network, STEPS, **options)
        self.run()  # numba compiles or loads its cache outside the timing

    def time_steps(self, cache, backend, n_neurons, noise):
        self.run()


class TrackInputNoiseError:
    """Largest |kappa - kappa_reference| with input noise (N = 1e4, 50 steps, both paths), float64."""

    params = (["cpp", "numba"], ["full", "latent"])
    param_names = ["backend", "path"]
    unit = "max abs error"

    def setup(self, backend, path):
        require_backend(backend)
        rng = np.random.default_rng(SEED)
        network = connector_sim.LowRankRNN(rng.standard_normal((10_000, 2)), 2 * rng.standard_normal((10_000, 2)),
                                           rng.standard_normal((10_000, 2)), 0.1 * rng.standard_normal(10_000))
        options = dict(n_steps=50, kappa0=(1.0, -0.5), seed=SEED, input_noise=[[0.7, 0.0], [0.3, 0.4]],
                       n_trials=2, path=path)
        self.kappa = simulate(network, backend=backend, **options).kappa
        self.reference = simulate(network, backend="numpy", **options).kappa

    def track_kappa_error(self, backend, path):
        return float(np.max(np.abs(self.kappa - self.reference)))
