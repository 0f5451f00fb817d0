"""connector_sim: simulate, analyse and infer connectivity distributions of low-rank RNNs.

The public API is what ``__all__`` lists. Importing the package does not import
torch, numba or the compiled modules; they load when first used.
"""

from ._backends import available_backends, warn_missing_extensions
from .distributions import Empirical, Gaussian, GaussianMixture, RowLayout
from .network import LowRankRNN
from .noise import private_noise
from .simulate import SimulationResult, simulate

__version__ = "0.1.0"

__all__ = [
    "Empirical",
    "Gaussian",
    "GaussianMixture",
    "LowRankRNN",
    "RowLayout",
    "SimulationResult",
    "available_backends",
    "private_noise",
    "simulate",
]

warn_missing_extensions()
