"""Stub of the compiled fused CNF training step (src/pybind/_cnf_train_cpp.cpp)."""

import numpy as np
import numpy.typing as npt

class CnfTrainStep:
    def __init__(
        self,
        weights: npt.NDArray[np.float32],
        gradient: npt.NDArray[np.float32],
        exp_avg: npt.NDArray[np.float32],
        exp_avg_sq: npt.NDArray[np.float32],
        averaged: npt.NDArray[np.float32] | None,
        *,
        dim: int,
        condition_dim: int,
        hidden: int,
        n_layers: int,
        max_rows: int,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
    ) -> None: ...
    def step(
        self,
        x0: npt.NDArray[np.float32],
        x1: npt.NDArray[np.float32],
        t: npt.NDArray[np.float32],
        condition: npt.NDArray[np.float32] | None,
        lr: float,
        step: int,
        ema_decay: float,
    ) -> float: ...
    @property
    def n_parameters(self) -> int: ...
    @property
    def max_rows(self) -> int: ...

def matmul(
    a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], out: npt.NDArray[np.float32], n_repeats: int = 1
) -> None: ...
def kernel_isa() -> str: ...
def cpu_isa() -> str: ...
def set_kernel_isa(isa: str) -> None: ...
