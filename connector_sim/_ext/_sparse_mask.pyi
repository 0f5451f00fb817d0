"""Stub of the compiled sparse-mask assembly (src/cython/_sparse_mask.pyx)."""

import numpy as np
import numpy.typing as npt

def fixed_indices(
    seed: int, n_neurons: int, n_connections: int, lo: npt.NDArray[np.int64]
) -> npt.NDArray[np.int32]: ...
def fixed_tile_offsets(
    seed: int,
    n_neurons: int,
    n_connections: int,
    lo: npt.NDArray[np.int64],
    tile_rows: int,
    out: npt.NDArray[np.uint16] | npt.NDArray[np.uint32],
) -> None: ...
def bernoulli_csr(
    seed: int, n_neurons: int, log_q: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]: ...
