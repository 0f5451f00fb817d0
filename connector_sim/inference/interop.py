"""Checkpoints of the official Connector code, read into a :class:`~connector_sim.inference.Connector`.

The official code (``train.py`` of the Connector paper) saves
``lint/<dataset>/connector/model_fold_<k>_seed_<s>_id_<i>.pth``: a dict with
``model_state_dict``, ``args`` (its command-line options: ``latent_dim`` R,
``hidden_dim``, ``scale``, ``bias``, ``alpha``, ``activation``,
``regularizer``, ``nsamples`` ...) and loss histories. The state dict holds
two velocity MLPs, each four hidden layers of ``hidden_dim`` with Swish
(x sigmoid(x), i.e. SiLU) and a linear output:

- ``mbd_model.{0,2,4,6,8}``: v(x, t) on ``[x, t]`` for rows x = [m, B, d]
  (m: R right factors, B: D input loadings, d: a bias when ``bias``), raw
  time t in [0, 1] as the last input, no standardisation of x;
- ``n_model.{0,2,4,6,8}``: v(y, c, t) on ``[y, c, t]`` with c = [m, B, d]
  and n = ``scale`` y.

Both sample from x_0 ~ N(0, I) at t = 0 to t = 1 with torchdiffeq's midpoint
rule of step 0.05 (``step_size=0.05``: 20 steps, whatever the 10-point time
grid it is also given). The MLPs have the layer layout of
:class:`~connector_sim.inference.flows.VelocityMLP`, so they load into
:class:`~connector_sim.inference.flows.FlowMatchingCNF` flows with mean 0 and
scale 1 (``scale`` for n), 20 midpoint steps. A missing bias column becomes
a constant zero coordinate of the marginal (and a zero-weight input of the
conditional MLP), since this package's rows always include b.
"""

import numpy as np

from .._validation import check_int
from ..activations import BUILTIN_ACTIVATIONS
from ..distributions import RowLayout
from ..interop import load_torch_tensors
from .connector import Connector
from .flows import FlowMatchingCNF, torch

#: The official sampler: torchdiffeq's midpoint rule with step_size=0.05 on [0, 1].
OFFICIAL_SOLVER, OFFICIAL_N_STEPS = "midpoint", 20

_WHAT = ("a checkpoint of the official Connector code (a dict with 'model_state_dict' holding 'mbd_model.*' and "
         "'n_model.*' tensors, and 'args')")


class SampledConditionalMean:
    """E[n | m, I, b] estimated by averaging ``n_draws`` samples of a conditional flow per row.

    The official checkpoint holds p(n | m, I, b) as a flow, not its mean in
    closed form; this estimates the mean (its Monte Carlo error falls like
    1 / sqrt(n_draws)). The same rows and ``random_state`` give the same
    estimate. In :func:`~connector_sim.inference.dissimilarity` between two
    such Connectors the error adds about 2 tr(Sigma) / n_draws to the
    conditional-mean term (Sigma: the covariance of n given (m, I, b)).
    """

    def __init__(self, conditional, n_draws=32, random_state=0):
        self.conditional = conditional
        self.n_draws = check_int(n_draws, "n_draws", minimum=1, owner="SampledConditionalMean")
        self.random_state = random_state

    def from_rows(self, mIb):
        mIb = np.asarray(mIb, dtype=np.float64)
        repeated = np.repeat(mIb, self.n_draws, axis=0)
        draws = self.conditional.sample(condition=repeated, random_state=self.random_state)
        return draws.reshape(len(mIb), self.n_draws, -1).mean(axis=1)


class OfficialConnector(Connector):
    """A :class:`Connector` read from an official checkpoint (see :func:`load_official_checkpoint`).

    Sampling, :meth:`log_prob`, :func:`~connector_sim.inference.dissimilarity`
    and :meth:`latent_flow` work as for a fitted Connector; the conditional
    p(n | m, I, b) is the checkpoint's flow (``conditional="cnf"``), and
    ``conditional_mean`` averages draws of it (:class:`SampledConditionalMean`).
    :meth:`latent_flow` averages n phi(m^T kappa + ...) over sampled rows
    (n drawn, not its mean: the same expectation without one flow solve per
    draw of the mean). The checkpoint is its file: :meth:`save` is not
    supported.

    Attributes
    ----------
    checkpoint_args_ : dict
        The official ``args`` of the checkpoint.
    """

    def latent_flow(self, v=None, *, n_samples=100_000, random_state=0, **options):
        """The mean-field flow dkappa/dt = -kappa + E[n phi(m^T kappa + I^T v + b)] over sampled rows."""
        from ..mean_field import latent_flow

        source = self.empirical(n_samples, random_state)
        options.setdefault("activation", self.activation_)
        return latent_flow(source, v, **options)

    def save(self, path):
        raise NotImplementedError("A Connector read from an official checkpoint is saved as that checkpoint: read it "
                                  "again with load_official_checkpoint. Connector.save writes Connectors fitted here.")

    def __repr__(self):
        return (f"OfficialConnector(rank={self.layout_.rank}, n_inputs={self.layout_.n_inputs}, "
                f"hidden={self.checkpoint_args_.get('hidden_dim')}, fitted on {self.n_rows_} rows)")


def _mlp_state(state, prefix, path):
    """The Linear layers of one official MLP: {index: (weight, bias)}, checked to be consecutive even indices."""
    layers = {}
    for key, value in state.items():
        if not key.startswith(prefix + "."):
            continue
        parts = key[len(prefix) + 1:].split(".")
        if len(parts) != 2 or not parts[0].isdigit() or parts[1] not in ("weight", "bias"):
            raise ValueError(f"{path!r} has the unexpected key {key!r} in 'model_state_dict'; {_WHAT}.")
        if not isinstance(value, torch.Tensor) or value.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{path!r}: {key!r} is not a floating-point tensor; {_WHAT}.")
        layers.setdefault(int(parts[0]), {})[parts[1]] = value
    indices = sorted(layers)
    if not indices or indices != list(range(0, 2 * len(indices), 2)) or len(indices) < 2:
        raise ValueError(f"{path!r} has no MLP '{prefix}' of Linear layers at indices 0, 2, 4, ... (found "
                         f"{[prefix + '.' + str(i) for i in indices]}); {_WHAT}.")
    for index in indices:
        if set(layers[index]) != {"weight", "bias"}:
            raise ValueError(f"{path!r}: layer '{prefix}.{index}' needs a weight and a bias; {_WHAT}.")
    weights = [layers[i]["weight"] for i in indices]
    for i, (w, index) in enumerate(zip(weights, indices)):
        b = layers[index]["bias"]
        if w.ndim != 2 or b.shape != (w.shape[0],) or (i and w.shape[1] != weights[i - 1].shape[0]):
            raise ValueError(f"{path!r}: the layers of '{prefix}' do not chain (layer {index}: weight "
                             f"{tuple(w.shape)}, bias {tuple(b.shape)}); {_WHAT}.")
    hidden = {tuple(w.shape) for w in weights[1:-1]}
    if len(hidden) > 1 or (weights[1:-1] and weights[1].shape[0] != weights[0].shape[0]):
        raise ValueError(f"{path!r}: the hidden layers of '{prefix}' differ in width; {_WHAT}.")
    return [(layers[i]["weight"].float(), layers[i]["bias"].float()) for i in indices]


def _flow(layers, dim, condition_dim, scale, free, mean, n_steps, solver, device, insert_zero_column=None):
    """A fitted FlowMatchingCNF whose VelocityMLP holds the official layers."""
    tensors = {"mean": torch.as_tensor(mean, dtype=torch.float64),
               "scale": torch.as_tensor(scale, dtype=torch.float64),
               "free": torch.as_tensor(free),
               "condition_mean": torch.zeros(condition_dim, dtype=torch.float64),
               "condition_scale": torch.ones(condition_dim, dtype=torch.float64)}
    for position, (weight, bias) in enumerate(layers):
        if position == 0 and insert_zero_column is not None:
            # The official MLP has no input for a bias that is always zero: a zero weight column is the same map.
            weight = torch.cat([weight[:, :insert_zero_column], torch.zeros(weight.shape[0], 1),
                                weight[:, insert_zero_column:]], dim=1)
        tensors[f"model.net.{2 * position}.weight"] = weight
        tensors[f"model.net.{2 * position}.bias"] = bias
    defaults = FlowMatchingCNF()
    config = {name: getattr(defaults, name) for name in FlowMatchingCNF._PARAMS}
    config.update(hidden=int(layers[0][0].shape[0]), n_layers=len(layers) - 1, n_steps=n_steps, solver=solver,
                  dim=dim, condition_dim=condition_dim, has_model=True, history={})
    return FlowMatchingCNF.from_state(config, tensors, device=device)


def load_official_checkpoint(path, *, device="auto", n_steps=OFFICIAL_N_STEPS, solver=OFFICIAL_SOLVER,
                             n_mean_draws=32, tau=1.0):
    """Read an official Connector checkpoint (``model_fold_*_seed_*_id_*.pth``) into a Connector.

    Weights are read with ``torch.load(weights_only=True)`` onto the CPU
    (no pickled code runs) and moved to ``device``.

    Parameters
    ----------
    path : str or os.PathLike
    device : {"auto", "cpu", "cuda"}, default="auto"
        "auto": CUDA when available, else the CPU.
    n_steps : int, default=20
        Fixed ODE steps of sampling and densities (the official sampler: 20
        midpoint steps of 0.05).
    solver : {"midpoint", "euler", "rk4"}, default="midpoint"
    n_mean_draws : int, default=32
        Draws of n per row averaged by ``conditional_mean`` (dissimilarities).
    tau : float, default=1.0
        Time constant of sampled networks (the official dynamics use tau = 1
        and dt = ``args["alpha"]``).

    Returns
    -------
    OfficialConnector
        A :class:`Connector` (``conditional="cnf"``) with ``layout_``
        (R, D, bias), ``alpha_`` (the checkpoint's alpha), ``activation_``
        and ``checkpoint_args_``.

    Raises
    ------
    ValueError
        When the file is not readable with ``weights_only=True``, or its
        keys or shapes are not those of an official checkpoint (the message
        says which).

    Examples
    --------
    >>> connector = load_official_checkpoint("model_fold_1_seed_1_id_0.pth")  # doctest: +SKIP
    >>> network = connector.sample(10_000, random_state=0)  # doctest: +SKIP
    """
    path = str(path)
    checkpoint = load_torch_tensors(path, _WHAT)
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint or "args" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        hint = (" It looks like a LINT network: read it with connector_sim.interop.load_lint_network."
                if isinstance(checkpoint, dict) and {"m", "n", "wi"} <= set(checkpoint) else "")
        raise ValueError(f"{path!r} is not {_WHAT}. Found {found}.{hint}")
    state, args = checkpoint["model_state_dict"], checkpoint["args"]
    if not isinstance(state, dict) or not isinstance(args, dict):
        raise ValueError(f"{path!r}: 'model_state_dict' and 'args' must be dicts; {_WHAT}.")
    unknown = [key for key in state if not key.startswith(("mbd_model.", "n_model."))]
    if unknown:
        raise ValueError(f"{path!r} has unexpected keys {unknown[:5]} in 'model_state_dict'; {_WHAT}.")
    marginal_layers = _mlp_state(state, "mbd_model", path)
    conditional_layers = _mlp_state(state, "n_model", path)
    try:
        rank = int(args["latent_dim"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path!r}: 'args' has no integer 'latent_dim' (the rank R); {_WHAT}.") from None
    bias = bool(args.get("bias", False))
    scale = float(args.get("scale", 1.0))
    alpha = float(args.get("alpha", 0.1))
    activation = args.get("activation", "tanh")
    if activation not in BUILTIN_ACTIVATIONS:
        raise ValueError(f"{path!r} was trained with activation {activation!r}; this version of connector_sim "
                         f"supports {list(BUILTIN_ACTIVATIONS)}.")
    mbd_dim = marginal_layers[-1][0].shape[0]
    if marginal_layers[0][0].shape[1] != mbd_dim + 1:
        raise ValueError(f"{path!r}: 'mbd_model.0.weight' has {marginal_layers[0][0].shape[1]} inputs; expected "
                         f"{mbd_dim + 1} ([m, B, d] of dimension {mbd_dim}, then t); {_WHAT}.")
    n_inputs = mbd_dim - rank - int(bias)
    if n_inputs < 0:
        raise ValueError(f"{path!r}: 'mbd_model' models {mbd_dim} coordinates, fewer than R = {rank} plus a bias "
                         f"({bias}); {_WHAT}.")
    if conditional_layers[-1][0].shape[0] != rank or conditional_layers[0][0].shape[1] != rank + mbd_dim + 1:
        raise ValueError(f"{path!r}: 'n_model' maps {conditional_layers[0][0].shape[1]} inputs to "
                         f"{conditional_layers[-1][0].shape[0]} outputs; expected R + {mbd_dim} + 1 = "
                         f"{rank + mbd_dim + 1} ([n, m, B, d], t) to R = {rank}; {_WHAT}.")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"{path!r}: args['scale'] must be a positive number. Got {scale!r}.")

    layout = RowLayout(rank, n_inputs, bias=True)
    dim = rank + n_inputs + 1
    free = np.ones(dim, bool)
    free[-1] = bias  # without a bias column, b is the constant 0
    marginal = _flow(marginal_layers, dim, 0, np.ones(dim), free, np.zeros(dim), n_steps, solver, device)
    conditional = _flow(conditional_layers, rank, dim, np.full(rank, scale), np.ones(rank, bool), np.zeros(rank),
                        n_steps, solver, device, insert_zero_column=None if bias else rank + dim - 1)
    connector = OfficialConnector(conditional="cnf", ridge_scaling="paper",
                                  lambda_prior=float(args.get("regularizer", 1e-4)),
                                  n_regression_samples=int(args.get("nsamples", 1000)),
                                  regression_sampling="random",
                                  hidden=int(marginal_layers[0][0].shape[0]), n_layers=len(marginal_layers) - 1,
                                  n_epochs=int(args.get("mbd_training_epochs", 1000)),
                                  batch_size=int(args.get("batch_size", 64)), learning_rate=float(args.get("lr", 1e-3)),
                                  weight_decay=float(args.get("weight_decay", 1e-5)), n_steps=n_steps, solver=solver,
                                  device=device)
    connector.layout_ = layout
    connector.alpha_, connector.tau_, connector.activation_ = alpha, float(tau), activation
    # Rows of the fitted network: the official obs_dim (-1 there means "all neurons", which the file does not say).
    connector.n_rows_ = int(args.get("obs_dim", -1))
    connector.marginal_, connector.conditional_ = marginal, conditional
    connector.conditional_mean_ = SampledConditionalMean(conditional, n_mean_draws)
    connector.n_covariance_ = None
    connector.checkpoint_args_ = dict(args)
    return connector


__all__ = ["OFFICIAL_N_STEPS", "OFFICIAL_SOLVER", "OfficialConnector", "SampledConditionalMean",
           "load_official_checkpoint"]
