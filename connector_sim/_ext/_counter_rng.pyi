"""Stub of the compiled counter-based generator (src/cython/_counter_rng.pyx)."""

import numpy as np
import numpy.typing as npt

def step_key(seed: int, trial: int, step: int) -> int: ...
def pair_bits(key: int, n_pairs: int) -> npt.NDArray[np.uint64]: ...
def unit_bits(key: int, n_units: int) -> npt.NDArray[np.uint64]: ...
def standard_normal(
    seed: int, trial: int, step: int, n_units: int, out: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.float64]: ...
def noise_block(
    seed: int,
    trial_offset: int,
    n_trials: int,
    step_start: int,
    n_steps: int,
    n_units: int,
    out: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]: ...
