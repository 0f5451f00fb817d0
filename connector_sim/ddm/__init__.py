"""Drift-diffusion matching: SDEs, benchmark systems and decompositions of their dynamics.

``connector_sim.ddm`` describes stochastic differential equations
dz = f(z) dt + G(z) dW (:class:`SDE`), simulates them (:func:`euler_maruyama`,
the reference that network realisations are compared with), provides a
library of benchmark systems with what is known about them exactly
(:func:`benchmark_systems`), and decomposes dynamics into reversible and
irreversible parts. Importing it does not import torch.
"""

from .compare import DynamicsComparison, compare_dynamics
from .matching import DriftDiffusionMatching, LatentEmbedding
from .memories import associative_memory, dwell_times, episodic_memory, sequence_statistics, well_labels
from .sde import SDE, array_namespace, euler_maruyama, largest_lyapunov_exponent, rk4_trajectory, stack_last
from .systems import benchmark_systems, double_well, lorenz, multi_well, ornstein_uhlenbeck, rossler, van_der_pol

__all__ = [
    "DriftDiffusionMatching",
    "DynamicsComparison",
    "LatentEmbedding",
    "compare_dynamics",
    "SDE",
    "associative_memory",
    "dwell_times",
    "episodic_memory",
    "sequence_statistics",
    "well_labels",
    "array_namespace",
    "benchmark_systems",
    "double_well",
    "euler_maruyama",
    "largest_lyapunov_exponent",
    "lorenz",
    "multi_well",
    "ornstein_uhlenbeck",
    "rk4_trajectory",
    "rossler",
    "stack_last",
    "van_der_pol",
]
