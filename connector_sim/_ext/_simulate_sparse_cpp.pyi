"""Stub of the compiled sparse kernels (src/pybind/_simulate_sparse_cpp.cpp)."""

import numpy as np
import numpy.typing as npt

TILE_ROWS: int

def full_path(
    mode: int,
    key: int,
    strata: npt.NDArray[np.int64],
    log_q: float,
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int32],
    m_T: npt.NDArray[np.floating],
    n_T: npt.NDArray[np.floating],
    I_T: npt.NDArray[np.floating],
    b: npt.NDArray[np.floating],
    activation: int,
    weight: float,
    gain: float,
    x: npt.NDArray[np.floating],
    u: npt.NDArray[np.floating],
    alpha: float,
    noise_scale: float,
    seed: int,
    trial_offset: int,
    record_idx: npt.NDArray[np.int64],
    kappa: npt.NDArray[np.float64],
    kappa_out: npt.NDArray[np.float64],
    record_out: npt.NDArray[np.floating],
    clamp_mask: npt.NDArray[np.uint8],
    clamp_value: npt.NDArray[np.floating],
    clamp_start: int,
    clamp_stop: int,
    n_threads: int,
    step_offset: int = 0,
) -> int: ...
def matvec(
    mode: int,
    key: int,
    strata: npt.NDArray[np.int64],
    log_q: float,
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int32],
    m_T: npt.NDArray[np.float64],
    n_T: npt.NDArray[np.float64],
    weight: float,
    v: npt.NDArray[np.float64],
    out: npt.NDArray[np.float64],
    n_threads: int,
) -> None: ...
