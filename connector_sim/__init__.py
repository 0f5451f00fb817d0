"""connector_sim: simulate, analyse and infer connectivity distributions of low-rank RNNs.

The public API is what ``__all__`` lists. Importing the package does not import
torch, numba or the compiled modules; they load when first used.
"""

from ._backends import available_backends, warn_missing_extensions
from ._memory import TooLargeError
from .cell_types import CellTypes, choose_k, find_cell_types, mixture_from_labels
from .distributions import Empirical, Gaussian, GaussianMixture, RowLayout
from .fixed_points import (
    Dynamics,
    FixedPoint,
    LimitCycle,
    Ring,
    classify_dynamics,
    detect_limit_cycle,
    find_fixed_points,
    find_limit_cycle,
    find_ring,
)
from .mean_field import latent_flow, latent_velocity, mean_field_trajectory, normalized_difference
from .network import LowRankRNN
from .noise import private_noise
from .perturbations import Perturbation, PerturbationTable, perturbation_study, perturbed_flow
from .plotting import plot_flow_field, plot_loadings, plot_psth, psth
from .simulate import NonFiniteStateWarning, SimulationResult, simulate
from .sparse import LowRankPlusRandomRNN, SparseLowRankRNN, SparseMask, rank_one_gaussian, sparsify
from .sparse import ExcitatoryInhibitory
from .fixed_points import find_approximate_ring, network_jacobian
from .synthetic import SyntheticNetwork, synthetic_network

__version__ = "0.1.0"

__all__ = [
    "CellTypes",
    "Dynamics",
    "Empirical",
    "ExcitatoryInhibitory",
    "FixedPoint",
    "Gaussian",
    "GaussianMixture",
    "LimitCycle",
    "LowRankPlusRandomRNN",
    "LowRankRNN",
    "NonFiniteStateWarning",
    "Perturbation",
    "PerturbationTable",
    "Ring",
    "RowLayout",
    "SimulationResult",
    "SparseLowRankRNN",
    "SparseMask",
    "SyntheticNetwork",
    "TooLargeError",
    "available_backends",
    "choose_k",
    "classify_dynamics",
    "detect_limit_cycle",
    "find_approximate_ring",
    "find_cell_types",
    "find_fixed_points",
    "find_limit_cycle",
    "find_ring",
    "latent_flow",
    "latent_velocity",
    "mean_field_trajectory",
    "mixture_from_labels",
    "network_jacobian",
    "normalized_difference",
    "perturbation_study",
    "perturbed_flow",
    "plot_flow_field",
    "plot_loadings",
    "plot_psth",
    "private_noise",
    "psth",
    "rank_one_gaussian",
    "simulate",
    "sparsify",
    "synthetic_network",
]

warn_missing_extensions()
