"""Stub of the compiled flow-field kernel (src/pybind/_flow_field_cpp.cpp)."""

import numpy as np
import numpy.typing as npt

BLOCK_SIZE: int
POINT_BLOCK: int
CHUNK: int
LANES: int

def flow_field(
    m_T: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    n_T: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    I_T: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    b: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    activation: int,
    kappa: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    out: npt.NDArray[np.float64],
    n_threads: int = 1,
) -> None: ...
def tanh_repeated(
    x: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    out: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    n_repeats: int,
) -> None: ...
