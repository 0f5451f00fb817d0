"""Private noise of the simulator (placeholder until the Cython-backed version lands)."""

import numpy as np

from ._kernels import counter_rng


def private_noise(seed, n_steps, n_units, n_trials=1, trial_offset=0, step_start=0):
    out = np.empty((n_trials, n_steps, n_units))
    for b in range(n_trials):
        for t in range(n_steps):
            out[b, t] = counter_rng.standard_normal(seed, trial_offset + b, step_start + t, n_units)
    return out
