"""Inference of connectivity distributions (Connector, theory sections 3-4).

This subpackage needs torch (and geomloss for :func:`dissimilarity`).
Importing it imports neither: each public name loads its module on first
access, so ``import connector_sim.inference`` stays light and a missing
optional dependency is reported by the function that needs it.
"""

import importlib

#: How to install what this subpackage needs; part of the ImportError raised when torch or geomloss is missing.
INSTALL_HINT = ('Install the inference extra: pip install "connector-sim[inference]" '
                "(or pip install torch==2.13.0 geomloss).")


def missing_dependency(package):
    """The ImportError for a missing optional dependency (``torch`` or ``geomloss``), with how to install it."""
    return ImportError(f"connector_sim.inference needs {package}, which is not installed here. {INSTALL_HINT}",
                       name=package)


#: Public name -> submodule that defines it.
_LAZY = {
    # flows.py: flow-matching continuous normalizing flows
    "FlowMatchingCNF": "flows",
    "VelocityMLP": "flows",
    "ModelFileError": "flows",
    # compression.py: dynamic compression flows (low-dimensional dynamics by flow matching)
    "DynamicCompressionFlow": "compression",
    # conditional_mean.py: ridge regression for E[n | m, I, b] (NumPy only)
    "ConditionalMean": "conditional_mean",
    "fit_conditional_mean": "conditional_mean",
    "ridge_cv_scores": "conditional_mean",
    # connector.py: the estimator
    "Connector": "connector",
    # cross_validation.py: k-fold cross-validation over trials
    "cross_validate": "cross_validation",
    "kfold_trials": "cross_validation",
    # distances.py: comparing connectivity distributions (not named after its function, so that
    # ``connector_sim.inference.dissimilarity`` is always the function, never a submodule)
    "dissimilarity": "distances",
    "effective_connectivity_dissimilarity": "distances",
    "paired_effective_connectivity_dissimilarity": "distances",
    "sinkhorn_divergence": "distances",
    "SinkhornConvergenceWarning": "distances",
    # lint.py: fitting a low-rank RNN to rates by BPTT
    "LINT": "lint",
    # velocity_matching.py: distilling a latent flow into a low-rank RNN
    "VelocityMatching": "velocity_matching",
    "velocity_samples": "velocity_matching",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
