"""Dynamic compression flows: low-dimensional dynamics of high-dimensional recordings by flow matching.

A dynamic compression flow (DCF) learns, from trials of D-dimensional data
x_t, a k-dimensional latent z_t that keeps the temporal structure, with three
networks trained together by flow matching:

- an encoder (the coupling) mu_psi: x -> z in R^{k_max};
- a compressive / generative flow u_phi(y, tau) on the data coordinates that
  carries the compressed point (tau = 0) to the data point (tau = 1);
- a latent dynamics field v_theta(z) that moves the latent forward in time.

Coordinates. The data are centred and rotated onto their principal axes,
``y = L^T (x - b) / s`` with b the mean, L (D x q) the top q eigenvectors of
the covariance (eigenvalues lambda_1 >= ... >= lambda_q) and s = sqrt(lambda_1),
so y keeps the geometry of x (a rotation and one global scale); the flow
works on the q = min(D, max_flow_dim) leading coordinates, the variance
outside them is left out of the model (``residual_variance_``).

Coupling (the compressed point of x, in data coordinates)::

    x0 = b + L Lambda^{1/2} [mu_psi(x) * m_k ; 0]      i.e.  y0_j = d_j mu_j(x) m_kj  (j <= k_max), 0 beyond
    mu_psi(x) = Lambda_k^{-1/2} L_k^T (x - b) + h_psi(y)            (whitened PCA scores + a learned correction)

with d_j = sqrt(lambda_j / lambda_1), m_k = (1, ..., 1, 0, ..., 0) the
nested-dropout mask keeping the first k coordinates, and h_psi an MLP whose
last layer starts at zero (so training starts from PCA).

Losses, per pair of frames (x_t, x_{t+lag}) of a trial, with k drawn per
sample from a geometric law of mean ``k_target`` truncated to [1, k_max]
(P(k) proportional to p (1 - p)^(k - 1), p = 1 / k_target)::

    compressive flow:  y_tau = (1 - tau) y0 + tau y,  tau ~ U(0, 1)
                       L_u = E |u_phi(y_tau, tau | m_k) - (y - y0)|^2 / V
    dynamics flow:     z = mu(x_t) * m_k,  z' = mu(x_{t+lag}) * m_k,  z_s = (1 - s) z + s z',  s ~ U(0, 1)
                       L_v = E |v_theta(z_s | m_k) * m_k - (z' - z)|^2 / V_dyn
    encoder alignment: L_a = E |y - y0|^2 / V
    objective = w_u L_u + w_v L_v + w_a L_a     (loss_weights = (w_u, w_v, w_a))

Both fields are told the mask m_k (an extra input): a code whose second
coordinate is 0 because it was dropped and one whose second coordinate
happens to be 0 call for different velocities, and a field that could not
tell them apart averages the two (on the Van der Pol example this left
spurious fixed points in the latent field).

``V = E |y - mean y|^2`` (the total variance in the flow's coordinates) and
``V_dyn = E |w_{t+lag} - w_t|^2`` (w the whitened scores of the first k_max
components) make each term 1 for a model that explains nothing, so the
weights compare like with like. The compressive and alignment terms use both
frames of each pair. The dynamics field is autonomous: along the straight
path from z_t to z_{t+lag} its flow-matching target is the increment over one
lag, so v_theta is the latent velocity per lag (one lag = one time unit of
:meth:`DynamicCompressionFlow.velocity` and
:meth:`DynamicCompressionFlow.generate`). Averaged over s, the regression
target at z is E_s[Delta(z - s Delta)] ~ Delta - (1/2) (D Delta) Delta
(Delta the one-lag increment), which is the second-order expansion of the
field whose time-1 flow map is the data's one-lag map, when the density of
the data varies slowly along a chord. Keep the lag short against the
dynamics' time scales all the same (see ``lag``).

Training has two stages, both with Adam on minibatches of pairs, early
stopping on held-out trials and a cosine learning-rate schedule
(``connector_sim.inference.lint.train_loop``): (1) all three networks on the
objective above; (2) after the number of coordinates is chosen (below), the
dynamics field alone, on the frozen encoder, with the mask fixed at the
chosen k (in stage 1 only the share P(k) of the samples trains that field).

Why the latent is well defined (unique up to sign flips). A generic
autoencoder's latent is defined only up to an invertible map. Here three
things pin it down:

1. The linear part of the coupling comes from the data alone: b, L and
   Lambda are the mean and principal axes of the training frames, and each
   axis's sign is fixed by a convention (its largest-magnitude loading is
   positive), so the same data give the same frame on every run.
2. Nested dropout orders the coordinates: z_1 alone must reconstruct the data
   as well as possible through the alignment term, then (z_1, z_2), and so
   on, so the coordinates cannot be rotated into each other without a loss
   (unlike a rotation of PCA scores, which PCA itself forbids only through the
   ordering of distinct eigenvalues).
3. The alignment term is the transport cost ``|x - x0|^2`` of the straight
   flow paths: among the codes from which the flow can decode the data and
   whose dynamics the field can predict, the one closest to the whitened
   principal scores wins. With the exact principal scores as code the
   in-subspace part of each path y_tau is constant, so paths cross (and the
   flow loss stays above its floor) only where the k-dimensional projection
   folds the data manifold onto itself; the learned correction h_psi moves
   the code away from PCA only as far as unfolding the manifold (and making
   the dynamics predictable) needs.

What remains is a sign flip per coordinate, fixed by the sign convention of
1. (a user comparing with another run or method aligns by sign flips), and
caveats: when two leading eigenvalues of the data are equal (an isotropic
ring) the principal axes, and so the latent, are defined only up to a
rotation within them; and a correction h_psi learned on finite data varies a
little from seed to seed.

Number of dimensions. After training, the held-out reconstruction error of
the data from the first k latent coordinates, ``R(k) = E |y - Phi_k(y0_k)|^2 / V``
(Phi_k: the compressive flow solved from tau = 0 to 1), is evaluated for
k = 1 ... k_max, with R(0) = 1 (predicting the mean). The nested-dropout
spectrum is ``dimension_importance_[j - 1] = max(R(j - 1) - R(j), 0) / (1 - min_k R(k))``
(the share of the explainable error that coordinate j removes) and
``n_components="auto"`` keeps the coordinates up to the last one whose share
is at least ``importance_threshold``.

Solvers. ``"euler"`` and ``"midpoint"`` take ``n_solver_steps`` fixed steps
per unit time (per lag for the dynamics, over tau in [0, 1] for the
compressive flow); ``"dopri5"`` is the adaptive Dormand-Prince 5(4) pair with
error control (:func:`dopri5`), batched in torch.

torch is imported when this module is imported; ``import connector_sim``
does not import it.
"""

import math
import numbers
import types

import numpy as np

from .._validation import check_array, check_int, check_positive_scalar, check_random_state
from ..data import TrialData, as_trial_data
from .flows import VelocityMLP, _ode_step, load_bundle, resolve_device, save_bundle, torch_threads
from .lint import check_choice, check_training_params, split_trials, torch, train_loop

_OWNER = "DynamicCompressionFlow"

#: ODE solvers of the estimator.
SOLVERS = ("dopri5", "midpoint", "euler")

#: Frames per torch call when encoding, decoding and scoring.
_CHUNK = 16_384

#: The validation loss and the spectrum use at most this many pairs / frames (fixed draws).
_MAX_EVAL = 4096

#: The latent field is the network's inside the box of the training codes enlarged by this
#: fraction of its width per side, and pulls back towards the box outside it.
_BOX_MARGIN = 0.1

#: Eigenvalues below this fraction of the largest are floored there when whitening.
_EIG_FLOOR = 1e-8


# ---------------------------------------------------------------------- solvers

# Dormand-Prince 5(4) tableau (Dormand & Prince, 1980): nodes, stages, 5th-order weights, 4th-order weights.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def dopri5(derivative, y0, times, *, rtol=1e-5, atol=1e-6, max_steps=100_000):
    """Solve dy/dt = f(t, y) with the adaptive Dormand-Prince 5(4) method, for a batch of rows at once.

    One step from (t, y) with step h::

        k_i = f(t + c_i h, y + h sum_{j<i} a_ij k_j),  i = 1..7
        y5 = y + h sum_i b5_i k_i   (the solution, 5th order; k_7 = f(t + h, y5) is the next k_1)
        err = h sum_i (b5_i - b4_i) k_i

    The step is accepted when the error norm, the root mean square over all
    rows and coordinates of ``err / (atol + rtol max(|y|, |y5|))``, is <= 1 (as in
    common ODE libraries; a norm of the worst row let one stiff row set the
    step of the whole batch); the
    next step is h * min(5, max(0.2, 0.9 err^(-1/5))). Steps end exactly on
    every requested time (no interpolation). All rows share one step size.

    Parameters
    ----------
    derivative : callable
        ``derivative(t, y)`` with t a float and y a tensor of shape (n, dim).
    y0 : torch.Tensor of shape (n, dim)
    times : sequence of float
        Increasing (or decreasing) output times; ``times[0]`` is the time of y0.
    rtol, atol : float
    max_steps : int
        Raise RuntimeError beyond this many attempted steps.

    Returns
    -------
    torch.Tensor of shape (len(times), n, dim)
    """
    times = [float(t) for t in times]
    out = [y0]
    y, t = y0, times[0]
    direction = 1.0 if len(times) < 2 or times[-1] >= times[0] else -1.0
    k1 = derivative(t, y)
    h = _initial_step(y, k1, rtol, atol) * direction
    span = abs(times[-1] - times[0]) if len(times) > 1 else 0.0
    if span > 0:
        h = direction * min(abs(h), span)
    steps = 0
    for target in times[1:]:
        while direction * (target - t) > 1e-12 * max(1.0, abs(target)):
            if steps >= max_steps:
                raise RuntimeError(f"dopri5 took more than {max_steps} steps; the ODE is stiff or blows up. "
                                   "Use solver='midpoint' or loosen rtol / atol.")
            steps += 1
            truncated = direction * (t + h - target) >= 0  # this step lands on the output time
            step = target - t if truncated else h
            stages = [k1]
            for i in range(1, 7):
                increment = sum(a * k for a, k in zip(_DP_A[i], stages) if a != 0.0)
                stages.append(derivative(t + _DP_C[i] * step, y + step * increment))
            y_new = y + step * sum(b * k for b, k in zip(_DP_B5, stages) if b != 0.0)
            error = step * sum((b5 - b4) * k for b5, b4, k in zip(_DP_B5, _DP_B4, stages))
            scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
            norm = float(((error / scale) ** 2).mean().sqrt()) if error.numel() else 0.0
            if not math.isfinite(norm):
                raise FloatingPointError("dopri5: the solution became non-finite. The field blows up here.")
            factor = min(5.0, max(0.2, 0.9 * (norm + 1e-16) ** -0.2))
            if norm <= 1.0:
                t = target if truncated else t + step
                y, k1 = y_new, stages[6]
                if not truncated:  # a shortened step says nothing new about the step size
                    h = step * factor
            else:
                h = step * factor
        out.append(y)
    return torch.stack(out)


def _initial_step(y, f0, rtol, atol):
    """A first step (Hairer, Norsett & Wanner, II.4): 0.01 |y| / |f|, in the tolerance's norm."""
    scale = atol + rtol * y.abs()
    d0 = float(((y / scale) ** 2).mean().sqrt()) if y.numel() else 0.0
    d1 = float(((f0 / scale) ** 2).mean().sqrt()) if y.numel() else 0.0
    return 1e-3 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1


def _solve(derivative, y0, times, solver, n_steps, rtol, atol):
    """States at ``times`` (len(times), n, dim): dopri5, or ``n_steps`` fixed steps per unit time."""
    if solver == "dopri5":
        return dopri5(derivative, y0, times, rtol=rtol, atol=atol)
    out, y = [y0], y0
    for start, stop in zip(times[:-1], times[1:]):
        n = max(1, int(math.ceil(abs(stop - start) * n_steps - 1e-9)))
        h = (stop - start) / n
        for i in range(n):
            (y,) = _ode_step(lambda state, t: (derivative(t, state[0]),), (y,), start + i * h, h, solver)
        out.append(y)
    return torch.stack(out)


# ---------------------------------------------------------------------- networks

def _mlp(n_in, n_out, width, depth):
    """``depth`` hidden SiLU layers of ``width`` and a linear output."""
    layers, size = [], n_in
    for _ in range(depth):
        layers += [torch.nn.Linear(size, width), torch.nn.SiLU()]
        size = width
    layers.append(torch.nn.Linear(size, n_out))
    return torch.nn.Sequential(*layers)


def _geometric_probabilities(k_target, k_max):
    """P(k), k = 1..k_max: a geometric law of mean k_target (p = 1 / k_target) truncated to k <= k_max."""
    p = 1.0 / k_target
    k = np.arange(1, k_max + 1)
    probabilities = p * (1 - p) ** (k - 1)
    return probabilities / probabilities.sum()


def _principal_axes(frames, q):
    """Mean, top-q eigenvalues and eigenvectors (D, q) of the frames' covariance, signs fixed.

    Each eigenvector's largest-magnitude entry is made positive (ties: the
    first), so the axes are a function of the data alone.
    """
    mean = frames.mean(axis=0)
    centred = frames - mean
    n, D = centred.shape
    if D <= 2048 or D <= n:
        covariance = centred.T @ centred / max(n - 1, 1)
        values, vectors = np.linalg.eigh(covariance)
        values, vectors = values[::-1][:q], vectors[:, ::-1][:, :q]
    else:  # n < D: the eigenvectors of the n x n Gram matrix give those of the covariance
        gram = centred @ centred.T / max(n - 1, 1)
        values, left = np.linalg.eigh(gram)
        values, left = values[::-1][:q], left[:, ::-1][:, :q]
        vectors = centred.T @ left
        vectors /= np.maximum(np.linalg.norm(vectors, axis=0), 1e-300)
    values = np.maximum(values, 0.0)
    pivot = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[pivot, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return mean, values, vectors * signs


# ---------------------------------------------------------------------- estimator

class DynamicCompressionFlow:
    """Dynamic compression flow: a low-dimensional latent with its dynamics, learned by flow matching.

    scikit-learn style: the constructor stores the settings, :meth:`fit`
    learns and returns ``self``, learned attributes end in ``_``. The model,
    its losses and why its latent is unique up to sign flips are described
    in the module docstring (``connector_sim.inference.compression``).

    Parameters
    ----------
    k_max : int, default=8
        Latent coordinates the encoder produces (<= the data dimension D).
    k_target : float, default=2
        Mean of the nested-dropout law of the number of coordinates kept
        (a geometric law truncated to [1, k_max]); 1 <= k_target <= k_max.
    lag : int, default=1
        Dynamics pairs are (x_t, x_{t+lag}); one lag is one time unit of
        :meth:`velocity` and :meth:`generate`. Keep it short against the
        time scales of the dynamics: the field is fitted to the chords
        x_{t+lag} - x_t, and on the Van der Pol example a lag of 2 bins (1/60
        of the period) already biased the period by up to 20%.
    compression_width, dynamics_width : int, default=256, 512
        Hidden widths of the encoder correction and compressive flow, and of
        the dynamics field.
    depth : int, default=4
        Hidden layers of each network.
    loss_weights : tuple of 3 floats, default=(1.0, 1.0, 1.0)
        Weights of the compressive-flow, dynamics-flow and encoder-alignment
        losses (each normalised to 1 for a model that explains nothing).
    n_epochs : int, default=200
        Passes over the training pairs.
    batch_size : int, default=256
        Pairs per Adam step.
    learning_rate : float, default=1e-3
    max_grad_norm : float or None, default=1.0
        Gradient-norm clipping.
    validation_fraction : float in [0, 1), default=0.2
        Trials held out for early stopping and for choosing the dimension (0:
        the training trials are used for both).
    patience : int or None, default=None
        Stop when the validation loss has not improved (by a relative ``tol``)
        for this many epochs. The state of the best epoch is kept.
    tol : float, default=0.0
    n_components : "auto" or int, default="auto"
        Latent coordinates returned by :meth:`transform`; "auto" picks them
        from the nested-dropout spectrum on held-out trials (see the module
        docstring).
    importance_threshold : float in (0, 1), default=0.05
        Smallest share of the explainable reconstruction error a coordinate
        must remove to be kept by ``n_components="auto"``.
    max_flow_dim : int, default=128
        The compressive flow models the q = min(D, max_flow_dim, frames - 1)
        leading principal coordinates of the data.
    solver : {"dopri5", "midpoint", "euler"}, default="dopri5"
        ODE solver of :meth:`inverse_transform`, :meth:`generate` and the
        spectrum.
    n_solver_steps : int, default=10
        Fixed steps per unit time of "midpoint" and "euler".
    rtol, atol : float, default=1e-5, 1e-5
        Tolerances of "dopri5".
    cosine : bool, default=True
        Anneal the learning rate to 0 along a cosine over ``n_epochs``. The
        dynamics field needs it: on an embedded Van der Pol oscillator
        (period 117 bins, lag 1, 800 Adam steps) the period of the learned
        field came out within 1% of the data's for three seeds with the
        schedule and 8-13% off for two of three without it (the weights keep
        the noise of the last constant-rate steps).
    n_dynamics_epochs : int or None, default=None
        Epochs of the second stage, which refits the dynamics field of the
        chosen ``n_components_`` coordinates on the frozen encoder (None: as
        many as ``n_epochs``; 0: none). In the joint stage only the share
        P(k = ``n_components_``) of the samples trains that field; on the Van der
        Pol example the field's period was 20-30% off without this stage.
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
        "auto" trains on CUDA when available.
    n_threads : int or None, default=1
        torch and BLAS threads while fitting and predicting (see
        ``flows.torch_threads``); None leaves them as they are.
    random_state : None, int or numpy.random.Generator
        Seeds the weights, the validation split and the training draws.
    verbose : bool or int, default=False
        Print the losses: True every n_epochs / 10 epochs, an int k every k epochs.
    callback : callable, optional
        ``callback(estimator, epoch, {"train_loss": ..., "val_loss": ...})``
        after every epoch (epoch 0: before training); returning True stops.

    Attributes
    ----------
    ``n_components_`` : int
        Latent dimension returned by :meth:`transform` (chosen or given).
    dimension_importance_ : ndarray of shape (k_max,)
        The nested-dropout spectrum: share of the explainable held-out
        reconstruction error removed by each coordinate (sums to <= 1).
    reconstruction_error_ : ndarray of shape (k_max + 1,)
        R(k), the held-out reconstruction error from the first k coordinates
        relative to the total variance (R(0) = 1).
    history_ : dict
        "epoch", "train_loss", "val_loss", "time" (per epoch, epoch 0 before
        training), "flow_loss", "dynamics_loss", "alignment_loss" (training
        means per epoch, from epoch 1), "best_epoch", "interrupted" (Ctrl-C
        stops training and keeps the best state).
    n_features_in_ : int
        D.
    mean_ : ndarray of shape (D,)
    components_ : ndarray of shape (q, D)
        Principal axes (rows), signs fixed.
    explained_variance_ : ndarray of shape (q,)
    residual_variance_ : float
        Variance of the data outside the q modelled coordinates (not modelled).
    train_trials_, validation_trials_ : ndarray of int
    device_ : torch.device
    """

    def __init__(self, k_max=8, k_target=2, lag=1, *, compression_width=256, dynamics_width=512, depth=4,
                 loss_weights=(1.0, 1.0, 1.0), n_epochs=200, batch_size=256, learning_rate=1e-3, max_grad_norm=1.0,
                 validation_fraction=0.2, patience=None, tol=0.0, n_components="auto", importance_threshold=0.05,
                 max_flow_dim=128, solver="dopri5", n_solver_steps=10, rtol=1e-5, atol=1e-5, cosine=True,
                 n_dynamics_epochs=None, device="auto", n_threads=1, random_state=None, verbose=False, callback=None):
        self.k_max = k_max
        self.k_target = k_target
        self.lag = lag
        self.compression_width = compression_width
        self.dynamics_width = dynamics_width
        self.depth = depth
        self.loss_weights = loss_weights
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_grad_norm = max_grad_norm
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.tol = tol
        self.n_components = n_components
        self.importance_threshold = importance_threshold
        self.max_flow_dim = max_flow_dim
        self.solver = solver
        self.n_solver_steps = n_solver_steps
        self.rtol = rtol
        self.atol = atol
        self.cosine = cosine
        self.n_dynamics_epochs = n_dynamics_epochs
        self.device = device
        self.n_threads = n_threads
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback

    # ------------------------------------------------------------------ checks

    def _training_settings(self):
        """The settings train_loop reads, with verbose resolved to an int (check_training_params checks them)."""
        verbose = self.verbose
        if isinstance(verbose, bool):
            verbose = max(1, self.n_epochs // 10) if (verbose and isinstance(self.n_epochs, int)) else 0
        callback = self.callback
        settings = types.SimpleNamespace(
            n_epochs=self.n_epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, weight_decay=0.0,
            max_grad_norm=self.max_grad_norm, validation_fraction=self.validation_fraction, patience=self.patience,
            tol=self.tol, verbose=verbose, n_threads=self.n_threads, callback=callback, cosine=self.cosine,
        )
        check_training_params(settings, _OWNER)
        if callback is not None:
            settings.callback = lambda _, epoch, losses: callback(self, epoch, losses)
        return settings

    def _check_params(self):
        owner = _OWNER
        k_max = check_int(self.k_max, "k_max", minimum=1, owner=owner)
        if isinstance(self.k_target, bool) or not isinstance(self.k_target, numbers.Real):
            raise TypeError(f"The 'k_target' parameter of {owner} must be a number in [1, k_max]. "
                            f"Got {self.k_target!r} instead.")
        if not (1 <= self.k_target <= k_max):
            raise ValueError(f"The 'k_target' parameter of {owner} must be in [1, k_max] = [1, {k_max}] (the mean "
                             f"number of latent coordinates kept by nested dropout). Got {self.k_target!r} instead; "
                             "lower k_target or raise k_max.")
        check_int(self.lag, "lag", minimum=1, owner=owner)
        for name in ("compression_width", "dynamics_width", "depth"):
            check_int(getattr(self, name), name, minimum=1, owner=owner)
        weights = np.asarray(self.loss_weights, dtype=object)
        if weights.shape != (3,) or not all(isinstance(w, numbers.Real) and not isinstance(w, bool)
                                            and math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"The 'loss_weights' parameter of {owner} must be 3 finite numbers >= 0 (compressive "
                             f"flow, dynamics flow, encoder alignment). Got {self.loss_weights!r} instead.")
        if weights[0] == 0 and weights[2] == 0:
            raise ValueError(f"The 'loss_weights' parameter of {owner} needs a positive compressive-flow or "
                             f"alignment weight: without both the encoder is not tied to the data. Got "
                             f"{self.loss_weights!r}.")
        if not (isinstance(self.n_components, str) and self.n_components == "auto"):
            check_int(self.n_components, "n_components", minimum=1, maximum=k_max, owner=owner)
        threshold = self.importance_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 < threshold < 1:
            raise ValueError(f"The 'importance_threshold' parameter of {owner} must be a number in (0, 1). "
                             f"Got {threshold!r} instead.")
        check_int(self.max_flow_dim, "max_flow_dim", minimum=1, owner=owner)
        check_choice(self.solver, "solver", SOLVERS, owner)
        check_int(self.n_solver_steps, "n_solver_steps", minimum=1, owner=owner)
        check_positive_scalar(self.rtol, "rtol", owner=owner)
        check_positive_scalar(self.atol, "atol", owner=owner)
        if self.n_dynamics_epochs is not None:
            check_int(self.n_dynamics_epochs, "n_dynamics_epochs", minimum=0, owner=owner)
        if not isinstance(self.cosine, bool):
            raise TypeError(f"The 'cosine' parameter of {owner} must be a bool. Got {self.cosine!r} instead.")
        if not (isinstance(self.verbose, (bool, int, np.integer)) and self.verbose >= 0):
            raise TypeError(f"The 'verbose' parameter of {owner} must be a bool or an int >= 0. "
                            f"Got {self.verbose!r} instead.")
        settings = self._training_settings()
        return resolve_device(self.device), settings

    def _check_fitted(self):
        if not hasattr(self, "n_components_"):
            raise RuntimeError(f"This {_OWNER} is not fitted yet. Call fit(X) first.")

    def _data(self, X, lengths, fitting=False):
        """TrialData from an array (n_trials, T, D), a list of (L_k, D) arrays or a TrialData."""
        if isinstance(X, TrialData):
            if lengths is not None:
                raise ValueError("Give lengths with an array, not with a TrialData (it has its own lengths).")
            X, lengths = X.spikes, X.lengths
        elif not isinstance(X, (list, tuple)):
            array = np.asarray(X)
            if array.dtype != object and not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
                raise TypeError(f"X must be a real numeric array of shape (n_trials, n_times, n_features). "
                                f"Got dtype {array.dtype}.")
            if array.dtype != object and array.ndim != 3:
                raise ValueError(f"X must be 3-D (n_trials, n_times, n_features) or a list of (n_times, "
                                 f"n_features) arrays, one per trial. Got an array of shape {array.shape}"
                                 f"{'; for one trial use X[None]' if array.ndim == 2 else ''}.")
        data = as_trial_data(X, lengths=lengths)
        if not fitting and data.n_neurons != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features, as in fit. Got {data.n_neurons}.")
        return data

    # ------------------------------------------------------------------ model pieces

    def _coordinates(self, frames):
        """y = L^T (x - b) / s for frames (n, D) -> (n, q), float64."""
        return (frames - self.mean_) @ self.components_.T / self.scale_

    def _encode(self, y):
        """mu(y) (n, k_max): whitened principal scores plus the learned correction."""
        return y[:, : self._k_max] / self._whiten + self.encoder_(y)

    def _compressed(self, z):
        """y0 (n, q) of codes z (n, k_max) (already masked)."""
        y0 = z.new_zeros((z.shape[0], self._q))
        y0[:, : self._k_max] = z * self._whiten
        return y0

    def _decode(self, y0, masks, solver=None):
        """Solve the compressive flow dy/dtau = u(y, tau | m) from tau = 0 (y0) to 1."""
        solver = self.solver if solver is None else solver

        def derivative(tau, y):
            return self.flow_(y, tau, masks)

        return _solve(derivative, y0, [0.0, 1.0], solver, self.n_solver_steps, self.rtol, self.atol)[-1]

    # ------------------------------------------------------------------ training

    def fit(self, X, lengths=None):
        """Learn the encoder, the compressive flow and the latent dynamics from trials.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_times, D), list of (L_k, D) arrays, or TrialData
            Each trial needs at least lag + 2 time bins (padded length).
        lengths : array-like of int of shape (n_trials,), optional
            Valid bins per trial (ragged trials); bins beyond are ignored.

        Returns
        -------
        self
        """
        device, settings = self._check_params()
        data = self._data(X, lengths, fitting=True)
        owner = _OWNER
        D = data.n_neurons
        if self.k_max > D:
            raise ValueError(f"The 'k_max' parameter of {owner} must be <= the data dimension D = {D}. "
                             f"Got {self.k_max} instead.")
        if data.n_times < 2 + self.lag:
            raise ValueError(f"{owner} needs trials of at least lag + 2 = {2 + self.lag} time bins (pairs "
                             f"(x_t, x_(t+lag)) for the dynamics). Got n_times = {data.n_times}; lower lag or give "
                             "longer trials.")
        with torch_threads(self.n_threads):
            return self._fit(data, device, settings)

    def _pairs(self, data, trials):
        """(trial, t) of every pair (x_t, x_{t+lag}) inside the valid bins of ``trials``."""
        rows = [(k, t) for k in trials for t in range(int(data.lengths[k]) - self.lag)]
        return np.array(rows, dtype=np.int64).reshape(-1, 2)

    def _fit(self, data, device, settings):
        owner = _OWNER
        rng = check_random_state(self.random_state)
        torch.manual_seed(int(rng.integers(0, 2**62)))
        train, val = split_trials(data.n_trials, self.validation_fraction, rng, owner)
        train_pairs = self._pairs(data, train)
        val_pairs = self._pairs(data, val)
        if len(train_pairs) == 0:
            raise ValueError(f"{owner}: the training trials hold no pair of bins lag = {self.lag} apart. Give "
                             f"longer trials (lengths >= lag + 1) or lower lag.")
        mask = data.mask()
        frames = data.spikes[train][mask[train]]
        D = data.n_neurons
        q = min(D, self.max_flow_dim, len(frames) - 1)
        if q < self.k_max:
            raise ValueError(f"{owner} models q = min(D, max_flow_dim, n_frames - 1) = {q} coordinates, fewer than "
                             f"k_max = {self.k_max}. Give more frames, raise max_flow_dim or lower k_max.")
        mean, values, vectors = _principal_axes(frames, q)
        if values[0] <= 0:
            raise ValueError(f"{owner}: the training data are constant; there is nothing to compress.")
        total_variance = float(((frames - mean) ** 2).sum(axis=1).mean())
        self.n_features_in_ = D
        self.mean_, self.components_, self.explained_variance_ = mean, vectors.T.copy(), values
        self.scale_ = math.sqrt(values[0])
        self.residual_variance_ = max(total_variance - float(values.sum()), 0.0)
        self._k_max, self._q = self.k_max, q
        self.device_ = device
        whiten = np.sqrt(np.maximum(values[: self.k_max], _EIG_FLOOR * values[0]) / values[0])
        self._whiten = torch.tensor(whiten, dtype=torch.float32, device=device)

        # Networks.
        self.encoder_ = _mlp(q, self.k_max, self.compression_width, self.depth).to(device)
        with torch.no_grad():
            self.encoder_[-1].weight.zero_()
            self.encoder_[-1].bias.zero_()
        self.flow_ = VelocityMLP(q, self.k_max, hidden=self.compression_width, n_layers=self.depth).to(device)
        self.dynamics_ = _mlp(2 * self.k_max, self.k_max, self.dynamics_width, self.depth).to(device)

        # Data in the flow's coordinates, all trials (padding stays, it is never indexed).
        Y = self._coordinates(data.spikes.reshape(-1, D)).reshape(data.n_trials, data.n_times, q)
        Y = torch.tensor(Y, dtype=torch.float32, device=device)
        scores = Y[..., : self.k_max] / self._whiten
        valid = Y[torch.as_tensor(mask, device=device)]
        variance = float(((valid - valid.mean(0)) ** 2).sum(1).mean())
        k_tr, t_tr = torch.as_tensor(train_pairs[:, 0]), torch.as_tensor(train_pairs[:, 1])
        increments = scores[k_tr, t_tr + self.lag] - scores[k_tr, t_tr]
        dynamics_scale = max(float((increments**2).sum(1).mean()), 1e-12)
        start = scores[k_tr, t_tr]  # the codes at the start of training: the box of the latent field
        low, high = start.min(0).values, start.max(0).values
        self._box_low, self._box_high = low - _BOX_MARGIN * (high - low), high + _BOX_MARGIN * (high - low)
        self._variance, self._dynamics_scale = variance, dynamics_scale
        probabilities = _geometric_probabilities(self.k_target, self.k_max)
        self._k_probabilities = probabilities
        weights = [float(w) for w in self.loss_weights]
        components = {"flow_loss": [], "dynamics_loss": [], "alignment_loss": []}
        running = {name: 0.0 for name in components}
        running["count"] = 0

        def draws(n, generator):
            k = generator.choice(np.arange(1, self.k_max + 1), size=n, p=probabilities)
            masks = (np.arange(self.k_max)[None, :] < k[:, None]).astype(np.float32)
            tau = generator.random((2 * n, 1)).astype(np.float32)
            s = generator.random((n, 1)).astype(np.float32)
            return tuple(torch.as_tensor(a, device=device) for a in (masks, tau, s))

        def losses(pairs, drawn):
            k_idx = torch.as_tensor(pairs[:, 0], device=device)
            t_idx = torch.as_tensor(pairs[:, 1], device=device)
            masks, tau, s = drawn
            y_a, y_b = Y[k_idx, t_idx], Y[k_idx, t_idx + self.lag]
            y = torch.cat([y_a, y_b])
            z = self._encode(y)
            n = len(pairs)
            both = torch.cat([masks, masks])
            y0 = self._compressed(z * both)
            y_tau = (1 - tau) * y0 + tau * y
            flow = ((self.flow_(y_tau, tau, both) - (y - y0)) ** 2).sum(1).mean() / variance
            align = ((y - y0) ** 2).sum(1).mean() / variance
            z_a, z_b = z[:n] * masks, z[n:] * masks
            z_s = (1 - s) * z_a + s * z_b
            dyn = (((self._dynamics(z_s, masks) - (z_b - z_a)) ** 2).sum(1).mean()) / dynamics_scale
            total = weights[0] * flow + weights[1] * dyn + weights[2] * align
            return total, (flow, dyn, align)

        fixed = np.random.default_rng(0)
        eval_sets = {}
        for split, pairs in (("train", train_pairs), ("val", val_pairs)):
            if len(pairs):
                chosen = pairs
                if len(pairs) > _MAX_EVAL:
                    chosen = pairs[np.sort(fixed.choice(len(pairs), _MAX_EVAL, replace=False))]
                eval_sets[split] = (chosen, draws(len(chosen), fixed))

        def batch_loss(positions):
            pairs = train_pairs[positions]
            total, parts = losses(pairs, draws(len(pairs), rng))
            for name, part in zip(("flow_loss", "dynamics_loss", "alignment_loss"), parts):
                running[name] += float(part.detach()) * len(pairs)
            running["count"] += len(pairs)
            return total, total.detach()

        def evaluate(split):
            if running["count"]:
                for name in components:
                    components[name].append(running[name] / running["count"])
                    running[name] = 0.0
                running["count"] = 0
            pairs, drawn = eval_sets[split]
            return float(losses(pairs, drawn)[0])

        parameters = {f"encoder.{k}": v for k, v in self.encoder_.named_parameters()}
        parameters.update({f"flow.{k}": v for k, v in self.flow_.named_parameters()})
        parameters.update({f"dynamics.{k}": v for k, v in self.dynamics_.named_parameters()})
        for module in (self.encoder_, self.flow_, self.dynamics_):
            module.train()
        history, best_epoch, epochs = train_loop(settings, parameters, batch_loss, evaluate, len(train_pairs),
                                                 len(val_pairs) > 0, rng, owner)
        if running["count"]:  # the last epoch, when training stopped before its evaluation
            for name in components:
                components[name].append(running[name] / running["count"])
        for module in (self.encoder_, self.flow_, self.dynamics_):
            module.eval()
        history.update(components)
        history["best_epoch"] = best_epoch
        self.history_ = history
        self.n_epochs_ = epochs
        self.train_trials_, self.validation_trials_ = train, val
        self._velocity64 = None

        # The nested-dropout spectrum on held-out frames (training frames without validation trials).
        held_out = val if len(val) else train
        held_mask = np.zeros_like(mask)
        held_mask[held_out] = mask[held_out]
        where = np.argwhere(held_mask)
        if len(where) > _MAX_EVAL:
            where = where[np.sort(fixed.choice(len(where), _MAX_EVAL, replace=False))]
        held_frames = Y[torch.as_tensor(where[:, 0], device=device), torch.as_tensor(where[:, 1], device=device)]
        self.reconstruction_error_ = self._reconstruction_errors(held_frames)
        errors = self.reconstruction_error_
        explainable = max(errors[0] - errors.min(), 1e-12)
        self.dimension_importance_ = np.maximum(errors[:-1] - errors[1:], 0.0) / explainable
        if isinstance(self.n_components, str):
            kept = np.flatnonzero(self.dimension_importance_ >= self.importance_threshold)
            self.n_components_ = int(kept[-1] + 1) if len(kept) else 1
        else:
            self.n_components_ = int(self.n_components)
        self._refit_dynamics(Y, train_pairs, val_pairs, settings, rng)
        return self

    def _refit_dynamics(self, Y, train_pairs, val_pairs, settings, rng):
        """Second stage: the dynamics field of the first ``n_components_`` coordinates, on the frozen encoder.

        Same flow-matching loss as L_v with the mask fixed at ``n_components_``
        (every sample trains the field that :meth:`velocity` returns, instead
        of the share P(k = ``n_components_``) of them), ``n_dynamics_epochs``
        epochs with the same optimiser settings, starting from the jointly
        trained weights.
        """
        epochs = self.n_epochs if self.n_dynamics_epochs is None else self.n_dynamics_epochs
        device = self.device_
        with torch.no_grad():
            codes = {}
            for split, pairs in (("train", train_pairs), ("val", val_pairs)):
                if len(pairs) == 0:
                    continue
                k_idx = torch.as_tensor(pairs[:, 0], device=device)
                t_idx = torch.as_tensor(pairs[:, 1], device=device)
                masks = self._masks(len(pairs))
                codes[split] = (self._encode(Y[k_idx, t_idx]) * masks, self._encode(Y[k_idx, t_idx + self.lag]) * masks,
                                masks)
        low, high = codes["train"][0].min(0).values, codes["train"][0].max(0).values
        self._box_low = low - _BOX_MARGIN * (high - low)
        self._box_high = high + _BOX_MARGIN * (high - low)
        if epochs == 0:
            return
        fixed = np.random.default_rng(1)
        fixed_s = {split: torch.as_tensor(fixed.random((len(c[0]), 1)).astype(np.float32), device=device)
                   for split, c in codes.items()}
        scale = self._dynamics_scale

        def loss(split, rows, s):
            z_a, z_b, masks = (c[rows] for c in codes[split])
            z_s = (1 - s) * z_a + s * z_b
            return ((self._dynamics(z_s, masks) - (z_b - z_a)) ** 2).sum(1).mean() / scale

        def batch_loss(positions):
            rows = torch.as_tensor(positions, device=device)
            s = torch.as_tensor(rng.random((len(positions), 1)).astype(np.float32), device=device)
            value = loss("train", rows, s)
            return value, value.detach()

        def evaluate(split):
            n = len(codes[split][0])
            rows = torch.arange(min(n, _MAX_EVAL), device=device)
            return float(loss(split, rows, fixed_s[split][rows]))

        stage = types.SimpleNamespace(**vars(settings))
        stage.n_epochs = epochs
        parameters = dict(self.dynamics_.named_parameters())
        self.dynamics_.train()
        history, best_epoch, _ = train_loop(stage, parameters, batch_loss, evaluate, len(train_pairs),
                                            "val" in codes, rng, _OWNER + " (dynamics)")
        self.dynamics_.eval()
        self.history_["dynamics_refit"] = {"epoch": history["epoch"], "train_loss": history["train_loss"],
                                           "val_loss": history["val_loss"], "best_epoch": best_epoch}
        self.history_["interrupted"] = self.history_["interrupted"] or history["interrupted"]

    def _reconstruction_errors(self, y):
        """R(k) = E |y - Phi(y0_k)|^2 / V for k = 0..k_max (R(0) = 1), on frames y (n, q) (tensor)."""
        errors = [1.0]
        with torch.no_grad():
            z = self._encode(y)
            for k in range(1, self._k_max + 1):
                masks = (torch.arange(self._k_max, device=y.device) < k).to(y.dtype)
                masks = masks.expand(len(z), -1)
                decoded = self._decode(self._compressed(z * masks), masks)
                errors.append(float(((y - decoded) ** 2).sum(1).mean()) / self._variance)
        return np.array(errors)

    # ------------------------------------------------------------------ inference

    def _frames_to_latents(self, frames):
        """Latents (n, ``n_components_``) of data frames (n, D), float64."""
        out = np.empty((len(frames), self.n_components_))
        with torch.no_grad(), torch_threads(self.n_threads):
            for first in range(0, len(frames), _CHUNK):
                y = torch.tensor(self._coordinates(frames[first: first + _CHUNK]), dtype=torch.float32,
                                 device=self.device_)
                out[first: first + _CHUNK] = self._encode(y)[:, : self.n_components_].double().cpu().numpy()
        return out

    def transform(self, X, lengths=None):
        """Latents z_t = mu(x_t) (the first ``n_components_`` coordinates).

        Parameters
        ----------
        X : array-like of shape (n_trials, n_times, D), list of (L_k, D) arrays, or TrialData
        lengths : array-like of int, optional

        Returns
        -------
        ndarray of shape (n_trials, n_times, ``n_components_``)
            NaN at bins beyond each trial's length.
        """
        self._check_fitted()
        data = self._data(X, lengths)
        mask = data.mask()
        out = np.full((data.n_trials, data.n_times, self.n_components_), np.nan)
        out[mask] = self._frames_to_latents(data.spikes[mask])
        return out

    def _check_latents(self, Z, name="Z"):
        Z = check_array(Z, name, ndim=np.ndim(Z), dtype=np.float64)
        if Z.ndim == 0 or Z.shape[-1] != self.n_components_:
            raise ValueError(f"{name} must have shape (..., {self.n_components_}) (n_components_ latent "
                             f"coordinates). Got shape {Z.shape}.")
        return Z

    def _padded(self, z):
        """Latents (n, ``n_components_``) as float32 codes (n, k_max) on the device, later coordinates 0."""
        full = np.zeros((len(z), self._k_max), dtype=np.float32)
        full[:, : self.n_components_] = z
        return torch.as_tensor(full, device=self.device_)

    def inverse_transform(self, Z):
        """Data points decoded from latents: the compressive flow solved from x0(z) at tau = 0 to tau = 1.

        Parameters
        ----------
        Z : array-like of shape (..., ``n_components_``)

        Returns
        -------
        ndarray of shape (..., D)
            ``mean_ + scale * y @ components_``; the data's variance outside
            the q modelled coordinates is not reproduced.
        """
        self._check_fitted()
        Z = self._check_latents(Z)
        flat = Z.reshape(-1, self.n_components_)
        out = np.empty((len(flat), self.n_features_in_))
        with torch.no_grad(), torch_threads(self.n_threads):
            for first in range(0, len(flat), _CHUNK):
                codes = self._padded(flat[first: first + _CHUNK])
                y = self._decode(self._compressed(codes), self._masks(len(codes)))
                out[first: first + _CHUNK] = self.mean_ + self.scale_ * y.double().cpu().numpy() @ self.components_
        return out.reshape(Z.shape[:-1] + (self.n_features_in_,))

    def _masks(self, n, k=None, device=None, dtype=torch.float32):
        """Nested-dropout masks (n, k_max) keeping the first k (default ``n_components_``) coordinates."""
        k = self.n_components_ if k is None else k
        device = self.device_ if device is None else device
        return (torch.arange(self._k_max, device=device) < k).to(dtype).expand(n, -1)

    def _dynamics(self, z, masks, network=None):
        """v(z * m | m) * m: the dynamics field of the first k coordinates (m their mask).

        Outside the box of the training codes (enlarged by ``_BOX_MARGIN`` of
        its width per side) the field is the network's at the nearest box
        point plus a pull back into the box at rate 1 per lag:
        v(z) = f(clip(z)) - (z - clip(z)). Inside, it is the network's field.
        """
        network = self.dynamics_ if network is None else network
        low, high = self._box_low.to(z), self._box_high.to(z)
        inside = torch.minimum(torch.maximum(z, low), high)
        return (network(torch.cat([inside * masks, masks], dim=1)) - (z - inside)) * masks

    def _velocity_tensor(self, z):
        """v(z) on codes (n, k_max), masked to the first ``n_components_``."""
        return self._dynamics(z, self._masks(len(z), device=z.device, dtype=z.dtype))

    def velocity(self, z):
        """The latent flow field dz/dt per lag, v(z), on the first ``n_components_`` coordinates.

        Inside the box of the training latents (enlarged by 10% of its width
        per side) this is the learned field. Outside, where there were no
        data, it is the field at the nearest point of the box plus a pull
        back into the box at rate 1 per lag, v(z) = f(clip(z)) - (z - clip(z)),
        so that forecasts cannot run off to infinity (an MLP extrapolates
        linearly, and on the Van der Pol example one trajectory in three
        diverged without the pull).

        Evaluated in float64 (a double copy of the dynamics network) so that
        finite-difference Jacobians and root finders
        (:func:`connector_sim.find_fixed_points`,
        :func:`connector_sim.find_limit_cycle`, ``plot_flow_field``) see a
        smooth field.

        Parameters
        ----------
        z : array-like of shape (..., ``n_components_``)

        Returns
        -------
        ndarray of shape (..., ``n_components_``)
        """
        self._check_fitted()
        z = self._check_latents(z, "z")
        if self._velocity64 is None:
            import copy

            self._velocity64 = copy.deepcopy(self.dynamics_).to("cpu").double().eval()
        flat = z.reshape(-1, self.n_components_)
        full = np.zeros((len(flat), self._k_max))
        full[:, : self.n_components_] = flat
        with torch.no_grad(), torch_threads(self.n_threads):
            full = torch.as_tensor(full)
            masks = self._masks(len(full), device="cpu", dtype=torch.float64)
            out = self._dynamics(full, masks, self._velocity64).numpy()[:, : self.n_components_]
        return out.reshape(z.shape)

    def generate(self, n_steps, z0=None, x0=None):
        """Forecast trajectories: dz/dt = v(z) from z0 (or from mu(x0)), decoded to data space.

        Parameters
        ----------
        n_steps : int
            Number of lags to forecast (one step = ``lag`` data time bins).
        z0 : array-like of shape (n, ``n_components_``) or (``n_components_``,), optional
        x0 : array-like of shape (n, D) or (D,), optional
            Give exactly one of z0 and x0.

        Returns
        -------
        Z : ndarray of shape (n, n_steps + 1, ``n_components_``)
        X : ndarray of shape (n, n_steps + 1, D)
        """
        self._check_fitted()
        n_steps = check_int(n_steps, "n_steps", minimum=0, owner=f"{_OWNER}.generate")
        if (z0 is None) == (x0 is None):
            raise ValueError("Give exactly one of z0 (latent starts) and x0 (data starts).")
        if x0 is not None:
            x0 = check_array(x0, "x0", ndim=np.ndim(x0), dtype=np.float64)
            if x0.ndim not in (1, 2) or x0.shape[-1] != self.n_features_in_:
                raise ValueError(f"x0 must have shape (n, {self.n_features_in_}) or ({self.n_features_in_},). "
                                 f"Got shape {x0.shape}.")
            z0 = self._frames_to_latents(np.atleast_2d(x0))
        else:
            z0 = self._check_latents(z0, "z0")
            if z0.ndim not in (1, 2):
                raise ValueError(f"z0 must have shape (n, {self.n_components_}) or ({self.n_components_},). "
                                 f"Got shape {z0.shape}.")
            z0 = np.atleast_2d(z0)
        with torch.no_grad(), torch_threads(self.n_threads):
            start = self._padded(z0)
            path = _solve(lambda t, z: self._velocity_tensor(z), start, list(range(n_steps + 1)), self.solver,
                          self.n_solver_steps, self.rtol, self.atol)
            Z = path.permute(1, 0, 2)[..., : self.n_components_].double().cpu().numpy()
        return Z, self.inverse_transform(Z)

    def score(self, X, lengths=None):
        """Mean loss on the pairs of X (lower is better): the training objective with fixed draws.

        The weighted sum w_u L_u + w_v L_v + w_a L_a of the module docstring,
        with the nested-dropout law, tau and s drawn from a fixed seed (0), so
        scores of one model on different data, or of models fitted to the
        same data, are comparable. Each term is 1 for a model that explains
        nothing.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_times, D), list of (L_k, D) arrays, or TrialData
        lengths : array-like of int, optional

        Returns
        -------
        float
        """
        self._check_fitted()
        data = self._data(X, lengths)
        pairs = self._pairs(data, np.arange(data.n_trials))
        if len(pairs) == 0:
            raise ValueError(f"score needs trials with at least lag + 1 = {self.lag + 1} bins. Got none.")
        generator = np.random.default_rng(0)
        k = generator.choice(np.arange(1, self._k_max + 1), size=len(pairs), p=self._k_probabilities)
        masks = torch.as_tensor((np.arange(self._k_max)[None, :] < k[:, None]).astype(np.float32),
                                device=self.device_)
        tau = torch.as_tensor(generator.random((2 * len(pairs), 1)).astype(np.float32), device=self.device_)
        s = torch.as_tensor(generator.random((len(pairs), 1)).astype(np.float32), device=self.device_)
        weights = [float(w) for w in self.loss_weights]
        totals = np.zeros(3)
        with torch.no_grad(), torch_threads(self.n_threads):
            for first in range(0, len(pairs), _CHUNK):
                chunk = slice(first, first + _CHUNK)
                block = pairs[chunk]
                x_a = data.spikes[block[:, 0], block[:, 1]]
                x_b = data.spikes[block[:, 0], block[:, 1] + self.lag]
                y = torch.tensor(self._coordinates(np.vstack([x_a, x_b])), dtype=torch.float32, device=self.device_)
                n = len(block)
                m = masks[chunk]
                t2 = torch.cat([tau[first: first + n], tau[len(pairs) + first: len(pairs) + first + n]])
                z = self._encode(y)
                y0 = self._compressed(z * torch.cat([m, m]))
                y_tau = (1 - t2) * y0 + t2 * y
                totals[0] += float(((self.flow_(y_tau, t2, torch.cat([m, m])) - (y - y0)) ** 2).sum(1).sum()) / 2
                totals[2] += float(((y - y0) ** 2).sum(1).sum()) / 2
                z_a, z_b = z[:n] * m, z[n:] * m
                z_s = (1 - s[chunk]) * z_a + s[chunk] * z_b
                totals[1] += float(((self._dynamics(z_s, m) - (z_b - z_a)) ** 2).sum(1).sum())
        totals /= len(pairs)
        terms = totals / np.array([self._variance, self._dynamics_scale, self._variance])
        return float(np.dot(weights, terms))

    # ------------------------------------------------------------------ persistence

    _PARAMS = ("k_max", "k_target", "lag", "compression_width", "dynamics_width", "depth", "loss_weights", "n_epochs",
               "batch_size", "learning_rate", "max_grad_norm", "validation_fraction", "patience", "tol",
               "n_components", "importance_threshold", "max_flow_dim", "solver", "n_solver_steps", "rtol", "atol",
               "cosine", "n_dynamics_epochs", "n_threads", "verbose")

    def save(self, path):
        """Write the fitted model to the folder ``path`` (config.json + weights.pt), atomically; no pickle.

        ``random_state`` (when a Generator), ``device`` and ``callback`` are not saved.
        """
        self._check_fitted()
        config = {name: getattr(self, name) for name in self._PARAMS}
        config["loss_weights"] = [float(w) for w in self.loss_weights]
        state = {
            "n_components": self.n_components_, "n_features_in": self.n_features_in_, "q": self._q,
            "scale": self.scale_, "residual_variance": self.residual_variance_, "variance": self._variance,
            "dynamics_scale": self._dynamics_scale, "history": self.history_, "n_epochs_run": self.n_epochs_,
            "random_state": self.random_state if isinstance(self.random_state, (int, np.integer)) else None,
        }
        tensors = {
            "mean": torch.as_tensor(self.mean_), "components": torch.as_tensor(self.components_),
            "explained_variance": torch.as_tensor(self.explained_variance_),
            "dimension_importance": torch.as_tensor(self.dimension_importance_),
            "reconstruction_error": torch.as_tensor(self.reconstruction_error_),
            "whiten": self._whiten, "box_low": self._box_low, "box_high": self._box_high,
            "k_probabilities": torch.as_tensor(self._k_probabilities),
            "train_trials": torch.as_tensor(self.train_trials_),
            "validation_trials": torch.as_tensor(self.validation_trials_),
        }
        for prefix, module in (("encoder", self.encoder_), ("flow", self.flow_), ("dynamics", self.dynamics_)):
            tensors.update({f"{prefix}.{k}": v.detach().cpu() for k, v in module.state_dict().items()})
        save_bundle(path, {"kind": _OWNER, "params": config, "state": state}, tensors)

    @classmethod
    def load(cls, path, device="auto"):
        """Read a model written by :meth:`save` (weights with ``torch.load(weights_only=True)``)."""
        config, tensors = load_bundle(path, _OWNER)
        params = dict(config["params"])
        params["loss_weights"] = tuple(params["loss_weights"])
        state = config["state"]
        model = cls(**params, device=device, random_state=state.get("random_state"))
        device = resolve_device(device)
        model.device_ = device
        model.n_components_ = int(state["n_components"])
        model.n_features_in_ = int(state["n_features_in"])
        model._q, model._k_max = int(state["q"]), int(params["k_max"])
        model.scale_ = float(state["scale"])
        model.residual_variance_ = float(state["residual_variance"])
        model._variance, model._dynamics_scale = float(state["variance"]), float(state["dynamics_scale"])
        model.history_ = dict(state["history"])
        model.n_epochs_ = int(state["n_epochs_run"])
        as_numpy = lambda name: tensors[name].numpy().astype(np.float64)  # noqa: E731
        model.mean_, model.components_ = as_numpy("mean"), as_numpy("components")
        model.explained_variance_ = as_numpy("explained_variance")
        model.dimension_importance_ = as_numpy("dimension_importance")
        model.reconstruction_error_ = as_numpy("reconstruction_error")
        model._k_probabilities = as_numpy("k_probabilities")
        model.train_trials_ = tensors["train_trials"].numpy().astype(np.int64)
        model.validation_trials_ = tensors["validation_trials"].numpy().astype(np.int64)
        model._whiten = tensors["whiten"].to(device=device, dtype=torch.float32)
        model._box_low = tensors["box_low"].to(device=device, dtype=torch.float32)
        model._box_high = tensors["box_high"].to(device=device, dtype=torch.float32)
        model.encoder_ = _mlp(model._q, model._k_max, int(params["compression_width"]), int(params["depth"]))
        model.flow_ = VelocityMLP(model._q, model._k_max, hidden=int(params["compression_width"]),
                                  n_layers=int(params["depth"]))
        model.dynamics_ = _mlp(2 * model._k_max, model._k_max, int(params["dynamics_width"]), int(params["depth"]))
        for prefix in ("encoder", "flow", "dynamics"):
            module = getattr(model, f"{prefix}_")
            module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
            setattr(model, f"{prefix}_", module.to(device).eval())
        model._velocity64 = None
        return model

    def __repr__(self):
        return (f"{_OWNER}(k_max={self.k_max}, k_target={self.k_target}, lag={self.lag}, "
                f"n_components={self.n_components!r})")


__all__ = ["DynamicCompressionFlow", "SOLVERS", "dopri5"]
