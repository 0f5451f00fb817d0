"""Drift-diffusion matching: SDEs, benchmark systems and decompositions of their dynamics.

``connector_sim.ddm`` describes stochastic differential equations
dz = f(z) dt + G(z) dW (:class:`SDE`), simulates them (:func:`euler_maruyama`,
the reference that network realisations are compared with), provides a
library of benchmark systems with what is known about them exactly
(:func:`benchmark_systems`), and decomposes dynamics into reversible and
irreversible parts. Importing it does not import torch.
"""

from .decomposition import (
    ConnectivityDecomposition,
    HelmholtzHodge,
    Irreversibility,
    connectivity_decomposition,
    cycling_rate,
    entropy_production,
    entropy_production_from_paths,
    helmholtz_hodge,
    irreversibility_from_trajectories,
    make_grid,
    stationary_density,
)
from .plotting import plot_helmholtz_hodge, plot_probability_current, plot_stationary_density, plot_trajectories
from .sde import (
    SDE,
    array_namespace,
    euler_maruyama,
    largest_lyapunov_exponent,
    limit_cycle_period,
    rk4_trajectory,
    stack_last,
)
from .systems import benchmark_systems, double_well, lorenz, multi_well, ornstein_uhlenbeck, rossler, van_der_pol

__all__ = [
    "ConnectivityDecomposition",
    "HelmholtzHodge",
    "Irreversibility",
    "SDE",
    "array_namespace",
    "benchmark_systems",
    "connectivity_decomposition",
    "cycling_rate",
    "double_well",
    "entropy_production",
    "entropy_production_from_paths",
    "euler_maruyama",
    "helmholtz_hodge",
    "irreversibility_from_trajectories",
    "largest_lyapunov_exponent",
    "limit_cycle_period",
    "lorenz",
    "make_grid",
    "multi_well",
    "ornstein_uhlenbeck",
    "plot_helmholtz_hodge",
    "plot_probability_current",
    "plot_stationary_density",
    "plot_trajectories",
    "rk4_trajectory",
    "rossler",
    "stack_last",
    "stationary_density",
    "van_der_pol",
]
