"""LINT: fit a low-rank RNN to trial-structured rates by backpropagation through time.

Low-rank inference (Valente et al., 2022; theory section 3, step 1). One network
unit per recorded neuron; the network runs the discrete dynamics of theory
section 1 in its exact latent form (no private noise)::

    x_t        = m kappa_t + I v_t + b
    kappa_{t+1} = (1 - alpha) kappa_t + alpha n^T phi(x_t) / N
    v_{t+1}     = (1 - alpha) v_t + alpha u_t,      v_0 = 0,  alpha = dt / tau

which is the same as x_{t+1} = x_t + alpha (-x_t + m n^T phi(x_t) / N + I u_t + b)
for x_0 = m kappa_0 + b (a start on the latent subspace). The observed rates
are y_t = g * phi(x_t) + c, with g = 1, c = 0 for ``readout="identity"`` (the
data are the units' rates phi(x) themselves, e.g. rates of a tanh network or
data scaled into (-1, 1)) and a learned per-neuron gain g and offset c for
``readout="affine"`` (rates in any unit, e.g. spikes / s).

torch is imported when this module is imported; ``import connector_sim``
does not import it.
"""

import math
import numbers
import time
import warnings

import numpy as np

from .._validation import (
    check_int,
    check_n_threads,
    check_nonnegative_scalar,
    check_positive_scalar,
    check_random_state,
)
from ..activations import BUILTIN_ACTIVATIONS, apply_activation
from ..data import as_trial_data
from ..latents import check_identifiability, filtered_inputs
from ..network import LowRankRNN
from .flows import resolve_device, torch, torch_threads  # flows reports a missing torch clearly

ACTIVATIONS = BUILTIN_ACTIVATIONS
READOUTS = ("identity", "affine")
INITIAL_STATES = ("auto", "invert", "encoder", "shared", "zero")
INITS = ("rrr", "random")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Rates are clipped to +-(1 - RATE_CLIP) before atanh (a rate of exactly 1 has no potential).
RATE_CLIP = 1e-2


# resolve_device and torch_threads are shared with the CNFs (imported above).


def torch_activation(name):
    """phi as a torch function (the built-in activations only)."""
    if name == "tanh":
        return torch.tanh
    if name == "relu":
        return torch.relu
    if name == "identity":
        return lambda x: x
    if name == "softplus":
        return torch.nn.functional.softplus
    if name == "sigmoid":
        return torch.sigmoid
    raise ValueError(
        f"Fitting supports the activations {list(ACTIVATIONS)}. Got {name!r}; a numba activation has no "
        "torch gradient."
    )


def _inverse_activation(name, rates):
    """Potentials whose rates are ``rates``, the rates first clipped into the range of phi.

    tanh: atanh of rates clipped to +-(1 - RATE_CLIP); sigmoid (= (1 + tanh(x/2)) / 2):
    2 atanh(2 r - 1) with the same clip; softplus: log(expm1(r)) of rates clipped to
    >= RATE_CLIP; relu and identity: the rates.
    """
    if name == "tanh":
        return np.arctanh(np.clip(rates, -1 + RATE_CLIP, 1 - RATE_CLIP))
    if name == "sigmoid":
        return 2.0 * np.arctanh(np.clip(2.0 * rates - 1.0, -1 + RATE_CLIP, 1 - RATE_CLIP))
    if name == "softplus":
        clipped = np.maximum(rates, RATE_CLIP)
        # log(expm1(r)) = r + log(-expm1(-r)), without overflow for large r.
        return clipped + np.log(-np.expm1(-clipped))
    return rates.copy()


def _inverse_activation_torch(name, rates):
    """Torch version of :func:`_inverse_activation`."""
    if name == "tanh":
        return torch.atanh(rates.clamp(-1 + RATE_CLIP, 1 - RATE_CLIP))
    if name == "sigmoid":
        return 2.0 * torch.atanh((2.0 * rates - 1.0).clamp(-1 + RATE_CLIP, 1 - RATE_CLIP))
    if name == "softplus":
        clipped = rates.clamp(min=RATE_CLIP)
        return clipped + torch.log(-torch.expm1(-clipped))
    return rates


def _apply_activation(name, x):
    return apply_activation(name, x)


def check_choice(value, name, choices, owner):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"The {name!r} parameter of {owner} must be one of {list(choices)}. Got {value!r} instead.")
    return value


def check_fraction(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"The {name!r} parameter of {owner} must be a number in [0, 1). Got {value!r} instead.")
    return float(value)


def check_callback(callback, owner):
    if callback is not None and not callable(callback):
        raise TypeError(f"The 'callback' parameter of {owner} must be callable or None. Got {callback!r} instead.")
    return callback


def check_training_params(estimator, owner):
    """Check the training parameters LINT and VelocityMatching share (epochs, Adam, early stopping, flags)."""
    check_int(estimator.n_epochs, "n_epochs", minimum=0, owner=owner)
    check_int(estimator.batch_size, "batch_size", minimum=1, owner=owner)
    check_positive_scalar(estimator.learning_rate, "learning_rate", owner=owner)
    check_nonnegative_scalar(estimator.weight_decay, "weight_decay", owner=owner)
    if estimator.max_grad_norm is not None:
        check_positive_scalar(estimator.max_grad_norm, "max_grad_norm", owner=owner)
    check_fraction(estimator.validation_fraction, "validation_fraction", owner)
    if estimator.patience is not None:
        check_int(estimator.patience, "patience", minimum=1, owner=owner)
    check_nonnegative_scalar(estimator.tol, "tol", owner=owner)
    check_int(estimator.verbose, "verbose", minimum=0, owner=owner)
    check_n_threads(estimator.n_threads, owner, allow_none=True)
    check_callback(estimator.callback, owner)
    for flag in ("fit_inputs", "fit_bias"):
        if hasattr(estimator, flag) and not isinstance(getattr(estimator, flag), bool):
            raise TypeError(
                f"The {flag!r} parameter of {owner} must be a bool. Got {getattr(estimator, flag)!r} instead."
            )


def split_trials(n_trials, validation_fraction, rng, owner):
    """(train indices, validation indices), both sorted; at least one validation trial when the fraction > 0."""
    if validation_fraction == 0:
        return np.arange(n_trials), np.arange(0)
    if n_trials < 2:
        raise ValueError(
            f"{owner} holds out validation_fraction={validation_fraction} of the trials for early stopping, "
            f"which needs at least 2 trials. Got {n_trials}. Set validation_fraction=0 to train on all of them."
        )
    n_val = min(n_trials - 1, max(1, int(round(validation_fraction * n_trials))))
    order = rng.permutation(n_trials)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class TrainingInterrupted(RuntimeWarning):
    """Ctrl-C stopped a training loop: the estimator keeps the best state reached so far."""


def train_loop(estimator, parameters, batch_loss, evaluate, n_train, has_validation, rng, owner):
    """Adam with gradient clipping and early stopping on the validation loss; the best state is kept.

    ``batch_loss(indices)`` returns (objective with regularisation, data loss)
    for training samples ``indices``; ``evaluate(split)`` returns the data
    loss of "train" or "val" without gradients. Returns (history, best epoch,
    epochs run).

    Ctrl-C (KeyboardInterrupt) stops the training after the epochs done: the
    best state so far is kept, ``history["interrupted"]`` is True and a
    RuntimeWarning says so. An estimator with ``cosine = True`` anneals the
    learning rate to 0 along a cosine over ``n_epochs`` (stepped per epoch).
    """
    optimizer = torch.optim.Adam(list(parameters.values()), lr=estimator.learning_rate)
    # Optional cosine annealing of the learning rate to 0 over n_epochs (estimators with cosine=True).
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, estimator.n_epochs))
                if getattr(estimator, "cosine", False) else None)
    history = {"epoch": [], "train_loss": [], "val_loss": [], "time": [], "interrupted": False}
    started = time.perf_counter()

    def record(epoch, train_loss, val_loss):
        history["epoch"].append(epoch)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["time"].append(time.perf_counter() - started)
        if estimator.verbose and (epoch % estimator.verbose == 0):
            shown = "" if val_loss is None else f"  val_loss {val_loss:.6g}"
            print(f"[{owner}] epoch {epoch:5d}  train_loss {train_loss:.6g}{shown}", flush=True)
        if estimator.callback is not None:
            return bool(estimator.callback(estimator, epoch, {"train_loss": train_loss, "val_loss": val_loss}))
        return False

    def snapshot():
        return {name: value.detach().clone() for name, value in parameters.items()}

    with torch.no_grad():
        val0 = evaluate("val") if has_validation else None
        train0 = evaluate("train")
    best_loss = val0 if has_validation else train0
    best_state, best_epoch, since_best = snapshot(), 0, 0
    stop = record(0, train0, val0)
    epoch = 0
    batch_size = min(estimator.batch_size, n_train)
    try:
        while not stop and epoch < estimator.n_epochs:
            epoch += 1
            order = rng.permutation(n_train)
            total, count = 0.0, 0
            for start in range(0, n_train, batch_size):
                indices = order[start: start + batch_size]
                optimizer.zero_grad(set_to_none=True)
                objective, data_loss = batch_loss(indices)
                if not torch.isfinite(objective):
                    raise FloatingPointError(
                        f"{owner}: the loss became {objective.item()} at epoch {epoch}. Lower learning_rate or "
                        "max_grad_norm, or standardise the data."
                    )
                objective.backward()
                if estimator.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(list(parameters.values()), estimator.max_grad_norm)
                optimizer.step()
                total += data_loss.item() * len(indices)
                count += len(indices)
            train_loss = total / count
            if schedule is not None:
                schedule.step()
            with torch.no_grad():
                val_loss = evaluate("val") if has_validation else None
            monitored = val_loss if has_validation else train_loss
            if monitored < best_loss * (1 - estimator.tol) or (best_loss == 0 and monitored < best_loss):
                best_loss, best_state, best_epoch, since_best = monitored, snapshot(), epoch, 0
            else:
                since_best += 1
            stop = record(epoch, train_loss, val_loss)
            if estimator.patience is not None and since_best >= estimator.patience:
                break
    except KeyboardInterrupt:
        history["interrupted"] = True
        warnings.warn(f"{owner}: training interrupted at epoch {epoch}; keeping the best state so far "
                      f"(epoch {best_epoch}).", TrainingInterrupted, stacklevel=3)
    with torch.no_grad():
        for name, value in parameters.items():
            value.copy_(best_state[name])
    return history, best_epoch, epoch


class LINT:
    """Fit a low-rank RNN to rates by backpropagation through time (LINT).

    The network has one unit per recorded neuron and runs the discrete
    latent dynamics (theory eq. 2-3, alpha = dt / tau)::

        x_t = m kappa_t + I v_t + b,   kappa_{t+1} = (1 - alpha) kappa_t + alpha n^T phi(x_t) / N
        y_t = g * phi(x_t) + c         (g = 1, c = 0 for readout="identity")

    and minimises, over trials and valid bins t < lengths[k]::

        L = mean_{k,t,i} (y_{k,t,i} - rates_{k,t,i})^2 + weight_decay (|m|^2 + |n|^2 + |I|^2) / N

    by Adam on minibatches of trials, with gradient-norm clipping, and
    early stopping on held-out trials (the parameters of the best
    validation epoch are kept).

    Initialisation (``init="rrr"``, the default): the rates are mapped back
    to potentials z = phi^{-1}(rates) (tanh: atanh of the rates clipped to
    +-0.99; sigmoid: its logit, clipped alike; softplus: log(expm1(rates)),
    rates clipped to >= 0.01; relu and identity: the rates), then the one-step dynamics
    (z_{t+1} - (1 - alpha) z_t) / alpha = J phi(z_t) + I u_t + b is solved by
    ridge regression for a full-rank J, I and b, and J is reduced to rank R
    by reduced-rank regression: with V_R the top R eigenvectors of the
    covariance of the fitted recurrent drive, m = sqrt(N) V_R and
    n = sqrt(N) J^T V_R (so m n^T / N = V_R V_R^T J). The regression runs
    twice: on the raw potentials, and on potentials denoised onto their top
    R + D principal components (noise-free potentials lie on the affine
    subspace m kappa + I v + b, and the one-step differences amplify noise
    by 1 / alpha), with saturated tanh rates imputed from that subspace
    (``_low_rank_potentials``); the start whose rollout fits the training
    rates better is kept (``init_choice_``). On data from a low-rank network
    this starts next to a solution, where BPTT from random loadings first
    wanders through slow, saturated regimes; ``init="random"`` draws m, n
    from N(0, 1) and sets I, b to 0.

    Inputs that sum to a constant in every bin (e.g. one-hot context cues
    present throughout) make b and their loadings collinear: set
    ``fit_bias=False`` when the data have no bias, as for the paper's
    context-dependent decision network.

    Initial state x_0 = m kappa_0 + b (on the latent subspace), with
    ``initial_state``:

    - "invert": kappa_0 = (m^T m)^{-1} m^T (phi^{-1}(rates_0) - b), the
      least-squares latents of the first frame (tanh, identity, softplus,
      sigmoid; default for them, "auto");
    - "encoder": kappa_0 = E rates_0 + e, a learned linear map of the first
      frame (default for relu);
    - "shared": one learned kappa_0 for all trials; "zero": kappa_0 = 0.

    Parameters
    ----------
    rank : int, default=1
    dt, tau : float, default=0.1, 1.0
        Bin width and time constant in the same unit; alpha = dt / tau.
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}, default="tanh"
    readout : {"identity", "affine"}, default="identity"
    fit_inputs : bool, default=True
        Learn I when inputs are given (else I = 0).
    fit_bias : bool, default=True
        Learn b (else b = 0).
    initial_state : {"auto", "invert", "encoder", "shared", "zero"}, default="auto"
    init : {"rrr", "random"}, default="rrr"
    ridge : float, default=1e-3
        Ridge penalty of the initial regression, relative to the mean
        variance of the rates.
    n_epochs : int, default=500
    batch_size : int, default=32
        Trials per Adam step.
    learning_rate : float, default=1e-2
    weight_decay : float, default=0.0
        L2 penalty (see L above).
    max_grad_norm : float or None, default=1.0
        Gradient-norm clipping.
    validation_fraction : float in [0, 1), default=0.2
        Fraction of trials held out for early stopping (0: monitor the
        training loss).
    patience : int or None, default=30
        Epochs without improvement (by a relative ``tol``) before stopping.
    tol : float, default=1e-4
    device : str, default="auto"
        "auto" runs on CUDA when available, else on the CPU.
    dtype : {"float32", "float64"}, default="float32"
    n_threads : int or None, default=1
        torch intra-op and NumPy BLAS threads during fit and predict
        (restored afterwards; None leaves them as they are; see
        ``flows.torch_threads``). The recurrent loop is many small
        operations, for which more threads mostly add synchronisation: 30
        epochs of 12 trials x 30 bins x 200 neurons took 0.9 s with 1 thread
        and 68 s with 2 on a loaded 2-core machine, and the initialisation's
        SVDs were 10x slower with two BLAS threads. Raise it for large N.
    verbose : int, default=0
        Print the losses every ``verbose`` epochs (0: silent).
    callback : callable, optional
        ``callback(estimator, epoch, {"train_loss": ..., "val_loss": ...})``
        after every epoch (epoch 0: after the initialisation); returning
        True stops the training.
    random_state : None, int or numpy.random.Generator

    Attributes
    ----------
    network_ : LowRankRNN
        The fitted network (float64), tau and activation as given.
    latents_ : ndarray of shape (n_trials, n_times, rank)
        kappa_t of the training trials (validation trials included).
    kappa0_ : ndarray of shape (n_trials, rank)
    readout_gain_, readout_offset_ : ndarray of shape (n_neurons,)
    encoder_, encoder_offset_ : ndarray of shape (rank, n_neurons), (rank,)
        Only for initial_state="encoder".
    initial_latent_ : ndarray of shape (rank,)
        Only for initial_state="shared".
    alpha_ : float
    history_ : dict of lists
        "epoch", "train_loss" (mean minibatch loss; epoch 0: at the
        initialisation), "val_loss" (None without validation), "time";
        "interrupted" is True when Ctrl-C stopped the training (the best
        state so far is kept).
    best_epoch_, n_epochs_ : int
    train_trials_, validation_trials_ : ndarray of int
    device_ : torch.device
    initial_state_ : str
        The resolved initial-state mode.
    init_choice_ : {"raw", "denoised", "random"}
        The starting loadings kept.
    identifiability_ : connector_sim.latents.Identifiability
        :func:`~connector_sim.latents.check_identifiability` of ``latents_``
        over the valid bins (singular values below 1e-4 of the largest count
        as zero); fit warns (``IdentifiabilityWarning``) when the
        latents do not span the latent space or a combination of them is
        constant in time.
    n_features_in_, n_inputs_ : int

    Raises
    ------
    ValueError
        From :meth:`fit`: a parameter out of range or unknown (checked there, as
        in scikit-learn), ``rank`` larger than the number of neurons, invalid
        trial data (see :func:`connector_sim.data.as_trial_data`), or too few
        trials for ``validation_fraction``.
    TypeError
        From :meth:`fit`: a parameter of the wrong type (e.g. a float
        ``n_epochs``).

    Examples
    --------
    >>> from connector_sim import Gaussian, simulate
    >>> teacher = Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 5.0]], rank=1).sample(20, random_state=0)
    >>> rates = simulate(teacher, 30, kappa0=[[0.5], [-0.5], [1.0], [-1.0]], record_units="all").rates
    >>> lint = LINT(rank=1, n_epochs=5, random_state=0).fit(rates)  # a real fit needs more epochs
    >>> lint.network_
    LowRankRNN(n_neurons=20, rank=1, n_inputs=0, tau=1.0, activation='tanh', dtype=float64)
    >>> lint.latents_.shape  # (n_trials, n_times, rank)
    (4, 31, 1)
    """

    def __init__(self, rank=1, *, dt=0.1, tau=1.0, activation="tanh", readout="identity", fit_inputs=True,
                 fit_bias=True, initial_state="auto", init="rrr", ridge=1e-3, n_epochs=500, batch_size=32,
                 learning_rate=1e-2, weight_decay=0.0, max_grad_norm=1.0, validation_fraction=0.2, patience=30,
                 tol=1e-4, device="auto", dtype="float32", n_threads=1, verbose=0, callback=None,
                 random_state=None):
        self.rank = rank
        self.dt = dt
        self.tau = tau
        self.activation = activation
        self.readout = readout
        self.fit_inputs = fit_inputs
        self.fit_bias = fit_bias
        self.initial_state = initial_state
        self.init = init
        self.ridge = ridge
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.max_grad_norm = max_grad_norm
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.n_threads = n_threads
        self.verbose = verbose
        self.callback = callback
        self.random_state = random_state

    # ----------------------------------------------------------------- checks
    def _check_params(self):
        owner = type(self).__name__
        check_int(self.rank, "rank", minimum=1, owner=owner)
        check_positive_scalar(self.dt, "dt", owner=owner)
        check_positive_scalar(self.tau, "tau", owner=owner)
        check_choice(self.activation, "activation", ACTIVATIONS, owner)
        check_choice(self.readout, "readout", READOUTS, owner)
        check_choice(self.initial_state, "initial_state", INITIAL_STATES, owner)
        check_choice(self.init, "init", INITS, owner)
        check_choice(self.dtype, "dtype", tuple(DTYPES), owner)
        check_nonnegative_scalar(self.ridge, "ridge", owner=owner)
        check_training_params(self, owner)
        alpha = self.dt / self.tau
        if alpha > 1:
            raise ValueError(
                f"{owner} needs dt <= tau (alpha = dt / tau = {alpha:.3g} > 1 makes forward Euler overshoot). "
                f"Got dt={self.dt}, tau={self.tau}."
            )
        mode = self.initial_state
        if mode == "auto":
            mode = "encoder" if self.activation == "relu" else "invert"
        if mode == "invert" and self.activation == "relu":
            raise ValueError(
                "initial_state='invert' needs an invertible activation (tanh, identity, softplus or sigmoid); "
                "relu maps all negative potentials to 0. Use initial_state='encoder'."
            )
        return alpha, mode

    def _check_fitted(self):
        if not hasattr(self, "network_"):
            raise ValueError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first.")

    # ------------------------------------------------------------- modelling
    def _normalised_rates(self, rates, gain, offset):
        return _inverse_activation(self.activation, (rates - offset) / gain)

    def _initial_readout(self, rates, mask):
        n_neurons = rates.shape[2]
        if self.readout == "identity":
            return np.ones(n_neurons), np.zeros(n_neurons)
        valid = rates[mask]
        low, high = valid.min(axis=0), valid.max(axis=0)
        if self.activation == "tanh":
            # Data mapped into [-0.9, 0.9], inside the range of tanh.
            offset = 0.5 * (high + low)
            gain = np.maximum(0.5 * (high - low), 1e-6) / 0.9
        elif self.activation == "sigmoid":
            # Data mapped into [0.05, 0.95], inside the range of sigmoid.
            gain = np.maximum(high - low, 1e-6) / 0.9
            offset = low - 0.05 * gain
        elif self.activation in ("relu", "softplus"):
            offset = low
            gain = np.maximum(valid.std(axis=0), 1e-6)
        else:
            offset, gain = np.zeros(n_neurons), np.ones(n_neurons)
        return gain, offset

    def _low_rank_potentials(self, z, saturated, mask, dimension, floor=0.0, n_iterations=30):
        """Potentials denoised onto an affine subspace, with saturated entries filled in.

        Noise-free potentials lie on the (R + D)-dimensional affine subspace
        m kappa + I v + b, and the one-step differences of the regression
        amplify noise by 1 / alpha: project onto the top principal
        components. A tanh rate beyond +-(1 - RATE_CLIP) pins its potential
        only to |x| > floor = atanh(1 - RATE_CLIP) (sigmoid: twice that);
        those entries are imputed from the subspace (alternating projection,
        as in EM-PCA), kept beyond the clip level with the potential's sign.
        """
        valid = z[mask]
        unknown = saturated[mask]
        sign = np.sign(valid)
        for _ in range(n_iterations if unknown.any() else 1):
            centre = valid.mean(axis=0)
            _, _, vt = np.linalg.svd(valid - centre, full_matrices=False)
            basis = vt[: min(dimension, len(vt))].T
            fitted = centre + (valid - centre) @ basis @ basis.T
            if not unknown.any():
                break
            imputed = sign * np.maximum(sign * fitted, floor)
            change = np.abs(imputed[unknown] - valid[unknown]).max()
            valid[unknown] = imputed[unknown]
            if change < 1e-6:
                break
        return centre + (z - centre) @ basis @ basis.T

    def _rrr_init(self, z, u, mask, alpha):
        """m, n, I, b from ridge + reduced-rank regression of the one-step dynamics of the potentials z."""
        N = z.shape[2]
        R = self.rank
        n_inputs = u.shape[2] if (u is not None and self.fit_inputs) else 0
        pairs = mask[:, 1:]  # (z_t, z_{t+1}) both valid
        target = ((z[:, 1:] - (1 - alpha) * z[:, :-1]) / alpha)[pairs]
        regressors = [_apply_activation(self.activation, z[:, :-1])[pairs]]
        if n_inputs:
            regressors.append(u[:, :-1][pairs])
        if self.fit_bias:
            regressors.append(np.ones((len(target), 1)))
        design = np.hstack(regressors)
        if len(design) == 0:
            raise ValueError("The initial regression needs trials of at least 2 time bins. Got only 1-bin trials.")
        gram = design.T @ design
        penalty = np.zeros(design.shape[1])
        penalty[: N + n_inputs] = self.ridge * max(np.trace(gram[:N, :N]) / N, 1e-12) + 1e-10
        coef = np.linalg.solve(gram + np.diag(penalty), design.T @ target)
        J_T = coef[:N]  # target ~ phi(z) @ J^T
        with np.errstate(over="ignore", invalid="ignore"):  # checked right below
            drive_cov = J_T.T @ gram[:N, :N] @ J_T
        if not np.all(np.isfinite(drive_cov)):
            raise ValueError(
                f"The initial (reduced-rank) regression of {type(self).__name__} is not finite: the rate increments "
                f"divided by alpha = dt / tau = {self.dt / self.tau:.3g} overflow. Give dt and tau in the same unit "
                "(alpha = 0.1 is usual), or init='random'.")
        _, vectors = np.linalg.eigh(0.5 * (drive_cov + drive_cov.T))
        V = vectors[:, ::-1][:, :R]
        m = math.sqrt(N) * V
        n = math.sqrt(N) * J_T @ V
        I = coef[N: N + n_inputs].T if n_inputs else np.zeros((N, u.shape[2] if u is not None else 0))
        b = coef[-1] if self.fit_bias else np.zeros(N)
        return m, n, I, b

    def _initial_loadings(self, data, train, alpha, gain, offset, rng):
        """Candidate starting loadings {name: (m, n, I, b)} (see the class docstring)."""
        rates, u, mask = data.spikes[train], data.inputs, data.mask()[train]
        N, D = data.n_neurons, data.n_inputs
        if self.init == "random":
            return {"random": (rng.standard_normal((N, self.rank)), rng.standard_normal((N, self.rank)),
                               np.zeros((N, D)), np.zeros(N))}
        u = None if u is None else u[train]
        normalised = (rates - offset) / gain
        z = _inverse_activation(self.activation, normalised)
        if self.activation == "tanh":
            saturated, floor = np.abs(normalised) > 1 - RATE_CLIP, math.atanh(1 - RATE_CLIP)
        elif self.activation == "sigmoid":  # sigmoid(x) = (1 + tanh(x / 2)) / 2
            saturated, floor = np.abs(2 * normalised - 1) > 1 - RATE_CLIP, 2 * math.atanh(1 - RATE_CLIP)
        else:
            saturated, floor = np.zeros(z.shape, bool), 0.0
        dimension = self.rank + (D if self.fit_inputs else 0)
        denoised = self._low_rank_potentials(z.copy(), saturated, mask, dimension, floor)
        return {"raw": self._rrr_init(z, u, mask, alpha), "denoised": self._rrr_init(denoised, u, mask, alpha)}

    def _build(self, data, train, loadings, gain, offset, mode, device, dtype):
        """Parameters (torch leaves) and fixed tensors for starting loadings (m, n, I, b)."""
        rates = data.spikes
        N, D = data.n_neurons, data.n_inputs
        m, n, I, b = loadings
        if I.shape[1] != D:  # inputs given but not fitted
            I = np.zeros((N, D))
        as_tensor = lambda a: torch.tensor(np.asarray(a, dtype=np.float64), dtype=dtype, device=device)  # noqa: E731
        params = {"m": as_tensor(m), "n": as_tensor(n)}
        fixed = {}
        (params if (D and self.fit_inputs) else fixed)["I"] = as_tensor(I)
        (params if self.fit_bias else fixed)["b"] = as_tensor(b)
        (params if self.readout == "affine" else fixed)["gain"] = as_tensor(gain)
        (params if self.readout == "affine" else fixed)["offset"] = as_tensor(offset)
        if mode == "encoder":
            first = rates[train][:, 0]
            z0 = self._normalised_rates(first, gain, offset)
            kappa0 = np.linalg.lstsq(m, (z0 - b).T, rcond=None)[0].T
            design = np.hstack([first, np.ones((len(first), 1))])
            reg = np.full(N + 1, 1e-3 * max(np.mean(first**2), 1e-12) * len(first))
            reg[-1] = 0.0
            coef = np.linalg.solve(design.T @ design + np.diag(reg), design.T @ kappa0)
            params["encoder"] = as_tensor(coef[:N].T)
            params["encoder_offset"] = as_tensor(coef[N])
        elif mode == "shared":
            z0 = self._normalised_rates(rates[train][:, 0], gain, offset)
            params["initial_latent"] = as_tensor(np.linalg.lstsq(m, (z0 - b).T, rcond=None)[0].mean(axis=1))
        for value in params.values():
            value.requires_grad_(True)
        return params, fixed

    def _tensors(self, data, alpha, device, dtype):
        v = filtered_inputs(data.inputs, alpha) if data.inputs is not None else None
        return {
            "rates": torch.tensor(data.spikes, dtype=dtype, device=device),
            "mask": torch.tensor(data.mask(), dtype=dtype, device=device),
            "v": None if v is None else torch.tensor(v, dtype=dtype, device=device),
        }

    def _kappa0(self, p, first_rates, mode):
        """Initial latents (B, R) from the first frames (B, N)."""
        batch = first_rates.shape[0]
        if mode == "invert":
            normalised = (first_rates - p["offset"]) / p["gain"]
            normalised = _inverse_activation_torch(self.activation, normalised)
            m = p["m"]
            return torch.linalg.solve(m.T @ m, m.T @ (normalised - p["b"]).T).T
        if mode == "encoder":
            return first_rates @ p["encoder"].T + p["encoder_offset"]
        if mode == "shared":
            return p["initial_latent"].expand(batch, -1)
        return first_rates.new_zeros((batch, self.rank))

    def _rollout(self, p, kappa0, v, n_times, alpha):
        """Predicted rates (B, T, N) and latents (B, T, R) from kappa0 (B, R)."""
        phi = torch_activation(self.activation)
        m, n, b = p["m"], p["n"], p["b"]
        N = m.shape[0]
        drive = b if v is None else v @ p["I"].T + b  # (N,) or (B, T, N)
        kappa = kappa0
        rates, latents = [], []
        for t in range(n_times):
            x = kappa @ m.T + (drive if v is None else drive[:, t])
            r = phi(x)
            rates.append(r)
            latents.append(kappa)
            if t + 1 < n_times:
                kappa = (1 - alpha) * kappa + (alpha / N) * (r @ n)
        rates = torch.stack(rates, dim=1) * p["gain"] + p["offset"]
        return rates, torch.stack(latents, dim=1)

    # -------------------------------------------------------------- public API
    def fit(self, rates, inputs=None, lengths=None):
        """Fit the network to ``rates``.

        Parameters
        ----------
        rates : array-like of shape (n_trials, n_times, n_neurons), or list of (L_k, n_neurons) arrays
        inputs : array-like of shape (n_trials, n_times, D), or list, optional
            u_t on the same bins (u_t acts on frame t + 1).
        lengths : array-like of int of shape (n_trials,), optional
            Valid bins per trial (see :func:`connector_sim.data.as_trial_data`).

        Returns
        -------
        self
        """
        alpha, mode = self._check_params()
        with torch_threads(self.n_threads):
            return self._fit(rates, inputs, lengths, alpha, mode)

    def _fit(self, rates, inputs, lengths, alpha, mode):
        owner = type(self).__name__
        data = as_trial_data(rates, inputs, lengths)
        if self.rank > data.n_neurons:
            raise ValueError(f"The 'rank' parameter of {owner} must be at most the number of neurons, "
                             f"{data.n_neurons}: a rank-R network needs R <= N. Got {self.rank} instead.")
        rng = check_random_state(self.random_state)
        device = resolve_device(self.device)
        dtype = DTYPES[self.dtype]
        train, val = split_trials(data.n_trials, self.validation_fraction, rng, owner)
        tensors = self._tensors(data, alpha, device, dtype)
        N = data.n_neurons
        train_t = torch.as_tensor(train, device=device)
        val_t = torch.as_tensor(val, device=device)

        def data_loss_of(p, indices):
            y = tensors["rates"][indices]
            mask = tensors["mask"][indices]
            v = None if tensors["v"] is None else tensors["v"][indices]
            predicted, _ = self._rollout(p, self._kappa0(p, y[:, 0], mode), v, y.shape[1], alpha)
            return (((predicted - y) ** 2).sum(-1) * mask).sum() / (mask.sum() * N)

        gain, offset = self._initial_readout(data.spikes[train], data.mask()[train])
        # Each candidate start is scored by the loss of its rollout on the training trials.
        best = None
        for name, loadings in self._initial_loadings(data, train, alpha, gain, offset, rng).items():
            params, fixed = self._build(data, train, loadings, gain, offset, mode, device, dtype)
            p = {**fixed, **params}
            with torch.no_grad():
                loss = data_loss_of(p, train_t).item()
            loss = loss if math.isfinite(loss) else math.inf
            if best is None or loss < best[0]:
                best = (loss, name, params, fixed)
        _, self.init_choice_, params, fixed = best
        p = {**fixed, **params}

        def data_loss(indices):
            return data_loss_of(p, indices)

        def batch_loss(positions):
            loss = data_loss(train_t[torch.as_tensor(positions, device=device)])
            penalty = sum((p[name] ** 2).sum() for name in ("m", "n", "I") if name in params) / N
            return loss + self.weight_decay * penalty, loss.detach()

        def evaluate(split):
            return data_loss(train_t if split == "train" else val_t).item()

        history, best_epoch, epochs = train_loop(self, params, batch_loss, evaluate, len(train), len(val) > 0,
                                                 rng, owner)
        self.alpha_ = alpha
        self.initial_state_ = mode
        self.device_ = device
        self.train_trials_, self.validation_trials_ = train, val
        self.history_, self.best_epoch_, self.n_epochs_ = history, best_epoch, epochs
        self.n_features_in_, self.n_inputs_ = N, data.n_inputs
        self._parameters = {name: value.detach() for name, value in p.items()}
        host = {name: value.detach().cpu().numpy().astype(np.float64) for name, value in p.items()}
        I = host.get("I", np.zeros((N, data.n_inputs)))
        self.network_ = LowRankRNN(host["m"], host["n"], I, host["b"], tau=self.tau, activation=self.activation)
        self.readout_gain_, self.readout_offset_ = host["gain"], host["offset"]
        if mode == "encoder":
            self.encoder_, self.encoder_offset_ = host["encoder"], host["encoder_offset"]
        if mode == "shared":
            self.initial_latent_ = host["initial_latent"]
        self.latents_ = self._predict(data, latents=True)
        self.kappa0_ = self.latents_[:, 0].copy()
        # tol 1e-4: above the rounding that float32 rollouts leave in a constant latent (~1e-5).
        self.identifiability_ = check_identifiability(self.latents_[data.mask()], tol=1e-4, warn=True)
        return self

    def _predict(self, data, kappa0=None, latents=False):
        p = self._parameters
        device = self.device_
        dtype = p["m"].dtype
        tensors = self._tensors(data, self.alpha_, device, dtype)
        with torch.no_grad(), torch_threads(self.n_threads):
            if kappa0 is None:
                start = self._kappa0(p, tensors["rates"][:, 0], self.initial_state_)
            else:
                start = torch.tensor(kappa0, dtype=dtype, device=device)
            rates, kappa = self._rollout(p, start, tensors["v"], data.n_times, self.alpha_)
        out = kappa if latents else rates
        return out.cpu().numpy().astype(np.float64)

    def _data(self, rates, inputs, lengths):
        self._check_fitted()
        data = as_trial_data(rates, inputs, lengths)
        if data.n_neurons != self.n_features_in_:
            raise ValueError(f"rates must have {self.n_features_in_} neurons, as in fit. Got {data.n_neurons}.")
        if data.n_inputs != self.n_inputs_:
            raise ValueError(f"inputs must have {self.n_inputs_} channel(s), as in fit. Got {data.n_inputs}.")
        return data

    def _check_kappa0(self, kappa0, n_trials):
        if kappa0 is None:
            return None
        kappa0 = np.asarray(kappa0, dtype=np.float64)
        if kappa0.shape != (n_trials, self.rank) or not np.all(np.isfinite(kappa0)):
            raise ValueError(f"kappa0 must be finite with shape ({n_trials}, {self.rank}). Got shape {kappa0.shape}.")
        return kappa0

    def predict(self, rates, inputs=None, lengths=None, *, kappa0=None):
        """Rates the fitted network produces on these trials.

        Only the first frame of each trial is used, to set the initial state
        (unless ``kappa0`` is given); the rest is predicted by running the
        network on the inputs.

        Parameters
        ----------
        rates : array-like of shape (n_trials, n_times, n_neurons)
        inputs : array-like of shape (n_trials, n_times, D), optional
        lengths : array-like of int, optional
        kappa0 : array-like of shape (n_trials, rank), optional

        Returns
        -------
        ndarray of shape (n_trials, n_times, n_neurons)
            Predictions (also beyond each trial's length: the network runs on).
        """
        data = self._data(rates, inputs, lengths)
        return self._predict(data, self._check_kappa0(kappa0, data.n_trials))

    def transform(self, rates, inputs=None, lengths=None, *, kappa0=None):
        """Latents kappa_t of the fitted network on these trials, shape (n_trials, n_times, rank)."""
        data = self._data(rates, inputs, lengths)
        return self._predict(data, self._check_kappa0(kappa0, data.n_trials), latents=True)

    def score(self, rates, inputs=None, lengths=None):
        """R^2 of the predicted rates over the valid bins (pooled over neurons).

        ::

            R^2 = 1 - sum (y - yhat)^2 / sum (y - ybar_i)^2

        with ybar_i the mean rate of neuron i over the valid bins.
        """
        data = self._data(rates, inputs, lengths)
        predicted = self._predict(data)
        mask = data.mask()
        y, yhat = data.spikes[mask], predicted[mask]
        return float(1 - ((y - yhat) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum())

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, dt={self.dt}, tau={self.tau}, activation={self.activation!r})"

