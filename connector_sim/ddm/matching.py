"""Drift-diffusion matching: a low-rank RNN whose latent dynamics follow a given SDE.

Given dz = f(z) ds + G dW_s in R^d (SDE time s, constant G), fit a
:class:`~connector_sim.LowRankRNN` of rank R >= d,

    tau dx/dt = -x + m n^T phi(x) / N + I u + b,

whose latent subspace carries z. Three maps tie the two together:

- the embedding: kappa = (z - c) / L in the first d latent coordinates
  (c the centre and L the scale of the sampled states; the R - d other
  coordinates are zero on the embedded manifold and relax to it);
- the time scale T: SDE time s = t / T (t network time, in the unit of tau),
  so one SDE time unit lasts T network time units;
- the noise: input loadings I = m Q (Q = the first d columns of the R x R
  identity) inside span(m), and input noise S = sqrt(tau / T) G / L
  (``simulate(network, ..., input_noise=S)``).

With I = m Q, x = m (kappa + Q v) + b, and the effective latent
kappa_eff = kappa + Q v obeys exactly, at finite N (see
:mod:`connector_sim.input_noise`)::

    tau dkappa_eff = F(kappa_eff) dt + sqrt(tau) Q S dW_t,
    F(kappa) = -kappa + n^T phi(m kappa + b) / N,

so z = c + L Q^T kappa_eff follows dz = (T / tau) L Q^T F(kappa(z)) ds
+ G dW_s: the SDE exactly when the network's latent velocity matches

    F_target(kappa) = (tau / (T L)) Q f(c + L Q^T kappa) - (1 - Q Q^T) kappa.

The drift is fitted by regression of F on F_target over sampled latent
points (as :class:`~connector_sim.inference.VelocityMatching` does: a
closed-form start for n, then Adam on m, n, b with LINT's training loop and
early stopping); the diffusion needs no training.

Large networks from the loading distribution. A network of N_s rows drawn
i.i.d. from the fitted rows (:meth:`DriftDiffusionMatching.sample_network`)
has, in expectation, the fitted network's latent velocity, with a variance
over draws of spread(kappa) / N_s, spread = ``mean_i |n_i|^2 phi_i^2 - |F + kappa|^2``.
A plain regression makes the rows cancel each other (``|n_i|`` ~ 100 for the
double well), so that even N_s = 1e5 errs by ~50%. With ``sample_size=N_s``
the fit minimises the expected squared error of such a resample,
``|F - F_target|^2 + spread / N_s``, instead of the first term alone (a
per-neuron ridge in the closed form, the same term in the Adam loss):
the fitted N-neuron network is then a little less exact, and every network
of N_s or more rows sampled from it is about as good. A deterministic input u adds Q u / tau to
dkappa_eff / dt, i.e. the force (T / tau) L u to dz / ds.

Diffusion. Only constant diffusion matrices G are realised (exactly): the
input noise adds the same covariance G G^T everywhere. A state-dependent
G(z) is refused with an error: in tau dx = (-x + m n^T phi(x) / N + I u + b) dt
every noise source (private or through I) enters additively, so the latent
noise covariance cannot depend on the state; G(z) would need noise whose
gain depends on the state (multiplicative noise), which the model does not
have. Every system of :func:`connector_sim.ddm.benchmark_systems` (OU,
double well, multi-well, Van der Pol, Lorenz, Rossler) has a constant G.
"""

import math
import time

import numpy as np

from .._validation import check_int, check_nonnegative_scalar, check_positive_scalar, check_random_state
from ..activations import apply_activation as _activation
from ..network import LowRankRNN

SAMPLINGS = ("trajectories", "box")
_OWNER = "DriftDiffusionMatching"


class LatentEmbedding:
    """The linear map between SDE states z (R^d) and network latents kappa (R^R).

    kappa = Q (z - center) / scale, z = center + scale Q^T kappa, with Q the
    first d columns of the R x R identity; SDE time s = t / time_scale.

    Attributes
    ----------
    center : ndarray of shape (d,)
    scale : float
        SDE units per latent unit (L).
    rank, dim : int
    time_scale : float
        Network time units per SDE time unit (T).
    tau : float

    Examples
    --------
    >>> import numpy as np
    >>> embedding = LatentEmbedding(np.array([1.0, 0.0]), scale=2.0, rank=3, time_scale=5.0, tau=1.0)
    >>> embedding.to_latent(np.array([3.0, 2.0]))  # (z - center) / scale, padded to rank 3
    array([1., 1., 0.])
    >>> embedding.to_state(np.array([1.0, 1.0, 0.0]))
    array([3., 2.])
    """

    def __init__(self, center, scale, rank, time_scale, tau):
        self.center = np.asarray(center, dtype=np.float64)
        self.scale = float(scale)
        self.dim = len(self.center)
        self.rank = int(rank)
        self.time_scale = float(time_scale)
        self.tau = float(tau)

    @property
    def loadings(self):
        """Q, shape (rank, dim): latent directions of the SDE coordinates."""
        return np.eye(self.rank, self.dim)

    def to_latent(self, z):
        """kappa (..., rank) of states z (..., dim)."""
        z = np.asarray(z, dtype=np.float64)
        return ((z - self.center) / self.scale) @ self.loadings.T

    def to_state(self, kappa):
        """z (..., dim) of latents kappa (..., rank) (the SDE coordinates only)."""
        return self.center + self.scale * np.asarray(kappa, dtype=np.float64)[..., : self.dim]

    def drift_to_latent(self, f):
        """dkappa/dt per unit of tau of an SDE drift f (..., dim): (tau / (T L)) Q f."""
        return (self.tau / (self.time_scale * self.scale)) * np.asarray(f, dtype=np.float64) @ self.loadings.T

    def velocity_to_drift(self, velocity):
        """The SDE drift (..., dim) of a latent velocity per unit of tau (..., rank)."""
        return (self.time_scale * self.scale / self.tau) * np.asarray(velocity, dtype=np.float64)[..., : self.dim]

    def input_noise(self, G):
        """S = sqrt(tau / T) G / L: the input noise that realises diffusion G."""
        return math.sqrt(self.tau / self.time_scale) * np.asarray(G, dtype=np.float64) / self.scale

    def force_to_input(self, force):
        """The input u (..., dim) that adds ``force`` (SDE units per SDE time) to the drift: tau force / (T L)."""
        return self.tau * np.asarray(force, dtype=np.float64) / (self.time_scale * self.scale)

    def __repr__(self):
        return (f"LatentEmbedding(dim={self.dim}, rank={self.rank}, scale={self.scale:.4g}, "
                f"time_scale={self.time_scale:.4g}, tau={self.tau})")


def check_sde(sde, owner=_OWNER):
    """(dim, constant G (d, d)) of an SDE, with clear errors for what cannot be realised."""
    for attribute in ("dim", "drift", "noise_covariance"):
        if not hasattr(sde, attribute):
            raise TypeError(
                f"{owner}.fit needs a connector_sim.ddm.SDE (with dim, drift and noise_covariance). "
                f"Got {type(sde).__name__}, which has no {attribute!r}."
            )
    d = check_int(sde.dim, "sde.dim", minimum=1, owner=owner)
    G = getattr(sde, "constant_diffusion", None)
    if G is None:
        raise ValueError(
            f"{owner} realises constant diffusion matrices only (white noise through input loadings inside "
            f"span(m) adds the same covariance at every state; the network has no state-dependent noise gain). This "
            f"SDE ({getattr(sde, 'name', 'unnamed')}) has a state-dependent diffusion G(z). Use a constant G "
            "(e.g. its value at a typical state)."
        )
    G = np.asarray(G, dtype=np.float64)
    if G.shape != (d, d) or not np.all(np.isfinite(G)):
        raise ValueError(f"The SDE's diffusion matrix must be finite with shape ({d}, {d}). Got shape {G.shape}.")
    cov = G @ G.T
    if np.linalg.eigvalsh(0.5 * (cov + cov.T)).min() < -1e-10 * max(1.0, np.abs(cov).max()):
        raise ValueError("The SDE's noise covariance G G^T is not positive semidefinite.")
    return d, G


def sde_drift(sde, z):
    """f(z) as a finite float64 array of z's shape (clear errors otherwise)."""
    f = np.asarray(sde.drift(z), dtype=np.float64)
    if f.shape != z.shape:
        raise ValueError(f"The SDE's drift must return an array of shape {z.shape}. Got shape {f.shape}.")
    if not np.all(np.isfinite(f)):
        bad = int((~np.isfinite(f)).any(axis=-1).sum())
        raise ValueError(
            f"The SDE's drift returned non-finite values at {bad} of {len(z)} sampled states. Give a drift that "
            "is finite on the sampled region (or a smaller box / shorter sampling trajectories)."
        )
    return f


class DriftDiffusionMatching:
    """Fit a low-rank RNN whose latent dynamics follow an SDE dz = f(z) ds + G dW.

    See the module docstring for the embedding, the time scale and the noise.
    The fit regresses the network's exact finite-N latent velocity
    F(kappa) = -kappa + n^T phi(m kappa + b) / N on the embedded drift over
    sampled states:

    - ``sampling="trajectories"``: states of Euler-Maruyama trajectories of
      the SDE (``n_trajectories`` from z0 ~ N(0, I), ``burn_in`` then
      ``sampling_time`` SDE time units at step ``sampling_dt``), jittered by
      ``sample_jitter`` times their per-coordinate standard deviation;
    - ``sampling="box"``: uniform in ``box = (low, high)`` (default: the
      0.5-99.5 percentile range of such trajectories, widened by 10%).

    A second, independent draw of ``n_samples // 4`` states gives the
    held-out relative drift error ``drift_error_`` = ``|f_net - f| / |f|`` (root
    mean squares over the held-out states, in SDE units).

    Parameters
    ----------
    rank : int, optional
        R >= d. Default d.
    n_neurons : int, default=500
    sample_size : int or None, default=100_000
        Size of the networks to be sampled from the fitted rows, whose
        expected error the fit minimises (see the module docstring); None
        fits the N-neuron network alone.
    tau : float, default=1.0
    time_scale : float or "auto", default="auto"
        T, network time units per SDE time unit. "auto" makes the rms target
        latent speed ``|F_target|`` equal to the rms latent radius ``|kappa|`` over
        the training states (the drift as strong as the leak -kappa).
    latent_scale : float, optional
        L, SDE units per latent unit. Default: half the largest standard
        deviation of the sampled states over their coordinates (latents of
        standard deviation ~2, where tanh units of unit weights are
        nonlinear).
    sampling : {"trajectories", "box"}, default="trajectories"
    box : (low, high) of array-like of shape (d,), optional
    n_samples : int, default=8192
    n_trajectories : int, default=16
    sampling_time, burn_in, sampling_dt : float, default=50.0, 5.0, 0.01
    sample_jitter : float, default=0.1
    activation : {"tanh", "relu", "identity"}, default="tanh"
    weight_scale, bias_scale : float, default=1.0, 3.0
        m starts from N(0, weight_scale^2), b from N(0, bias_scale^2).
    ridge : float, default=1e-6
        Ridge of the closed-form start, relative to the mean of phi^2.
    n_epochs, batch_size, learning_rate, weight_decay, max_grad_norm,
    validation_fraction, patience, tol : default 100, 256, 1e-2, 0.0, 1.0, 0.1, 20, 1e-4
        Adam and early stopping, as in :class:`~connector_sim.inference.LINT`
        (weight_decay multiplies ``(|m|^2 + |n|^2) / N``). The closed-form start
        is already close; Adam refines it, and the
        best validation epoch is kept.
    device : str, default="auto"
        CUDA when available, else the CPU.
    dtype : {"float32", "float64"}, default="float32"
        Training precision.
    n_threads : int or None, default=1
        torch and BLAS threads during fit.
    verbose : int, default=0
        Print the losses every ``verbose`` epochs.
    callback : callable, optional
        ``callback(estimator, epoch, {"train_loss", "val_loss"})``; True stops
        (Ctrl-C also stops and keeps nothing: fit again).
    random_state : None, int or numpy.random.Generator

    Attributes
    ----------
    network_ : LowRankRNN
        N neurons, rank R, d inputs with I = m Q, tau, the activation.
    embedding_ : LatentEmbedding
    noise_ : ndarray of shape (d, d)
        The ``input_noise`` to pass to :func:`connector_sim.simulate`.
    time_scale_, latent_scale_ : float
    history_ : dict of lists
        The training curve (epoch, train_loss, val_loss, time), losses in
        squared latent velocity per tau.
    drift_error_ : float
        Held-out relative drift error of ``network_``.
    sampled_drift_error_ : float
        Expected held-out relative drift error of a network of
        ``sample_size`` rows resampled from ``network_`` (NaN without
        ``sample_size``).
    train_drift_error_ : float
        The same on the training states.
    initial_drift_error_ : float
        Held-out error of ``network_`` after the closed-form start, before Adam.
    samples_ : ndarray of shape (n_samples, d)
        The training states (SDE units).
    box_ : (low, high) or None
        The sampling box (``sampling="box"``).
    best_epoch_, n_epochs_ : int
        The epoch whose parameters were kept, and the epochs run.
    training_time_ : float
        Seconds spent in sampling and fitting.
    device_ : torch.device

    Raises
    ------
    ValueError
        From :meth:`fit`: a parameter out of range or unknown (checked there,
        as in scikit-learn), ``rank`` < d, or a ``box`` of the wrong shape.
    TypeError
        From :meth:`fit`: ``sde`` is not an SDE, or a parameter of the wrong
        type.

    Examples
    --------
    >>> from connector_sim.ddm import double_well
    >>> matching = DriftDiffusionMatching(n_neurons=50, sample_size=None, n_samples=512, n_trajectories=4,
    ...                                   sampling_time=10.0, n_epochs=5, random_state=0, device="cpu")
    >>> matching.fit(double_well()).network_  # one latent, one input (the noise channel)
    LowRankRNN(n_neurons=50, rank=1, n_inputs=1, tau=1.0, activation='tanh', dtype=float64)
    >>> bool(matching.drift_error_ < 0.05)
    True
    """

    def __init__(self, rank=None, *, n_neurons=500, sample_size=100_000, tau=1.0, time_scale="auto", latent_scale=None,
                 sampling="trajectories", box=None, n_samples=8192, n_trajectories=16, sampling_time=50.0,
                 burn_in=5.0, sampling_dt=0.01, sample_jitter=0.1, activation="tanh", weight_scale=1.0, bias_scale=3.0,
                 ridge=1e-6,
                 n_epochs=100, batch_size=256, learning_rate=1e-2, weight_decay=0.0, max_grad_norm=1.0,
                 validation_fraction=0.1, patience=20, tol=1e-4, device="auto", dtype="float32", n_threads=1,
                 verbose=0, callback=None, random_state=None):
        self.rank = rank
        self.n_neurons = n_neurons
        self.sample_size = sample_size
        self.tau = tau
        self.time_scale = time_scale
        self.latent_scale = latent_scale
        self.sampling = sampling
        self.box = box
        self.n_samples = n_samples
        self.n_trajectories = n_trajectories
        self.sampling_time = sampling_time
        self.burn_in = burn_in
        self.sampling_dt = sampling_dt
        self.sample_jitter = sample_jitter
        self.activation = activation
        self.weight_scale = weight_scale
        self.bias_scale = bias_scale
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

    # ------------------------------------------------------------- checks
    def _check_params(self, d):
        owner = _OWNER
        rank = d if self.rank is None else check_int(self.rank, "rank", minimum=1, owner=owner)
        if rank < d:
            raise ValueError(
                f"The 'rank' parameter of {owner} must be >= the SDE's dimension d = {d} (the latent subspace "
                f"must hold z). Got {rank} instead."
            )
        check_int(self.n_neurons, "n_neurons", minimum=2, owner=owner)
        if self.sample_size is not None:
            check_int(self.sample_size, "sample_size", minimum=1, owner=owner)
        if self.activation not in ("tanh", "relu", "identity"):
            raise ValueError(f"The 'activation' parameter of {owner} must be 'tanh', 'relu' or 'identity'. "
                             f"Got {self.activation!r} instead.")
        check_positive_scalar(self.weight_scale, "weight_scale", owner=owner)
        check_nonnegative_scalar(self.bias_scale, "bias_scale", owner=owner)
        check_nonnegative_scalar(self.ridge, "ridge", owner=owner)
        check_int(self.n_epochs, "n_epochs", minimum=0, owner=owner)
        check_int(self.batch_size, "batch_size", minimum=1, owner=owner)
        check_positive_scalar(self.learning_rate, "learning_rate", owner=owner)
        check_nonnegative_scalar(self.weight_decay, "weight_decay", owner=owner)
        if self.max_grad_norm is not None:
            check_positive_scalar(self.max_grad_norm, "max_grad_norm", owner=owner)
        if not (isinstance(self.validation_fraction, (int, float)) and 0 <= self.validation_fraction < 1):
            raise ValueError(f"The 'validation_fraction' parameter of {owner} must be in [0, 1). "
                             f"Got {self.validation_fraction!r} instead.")
        if self.patience is not None:
            check_int(self.patience, "patience", minimum=1, owner=owner)
        check_nonnegative_scalar(self.tol, "tol", owner=owner)
        check_int(self.verbose, "verbose", minimum=0, owner=owner)
        if self.n_threads is not None:
            check_int(self.n_threads, "n_threads", minimum=1, owner=owner)
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"The 'callback' parameter of {owner} must be callable or None. Got {self.callback!r}.")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"The 'dtype' parameter of {owner} must be 'float32' or 'float64'. Got {self.dtype!r}.")
        check_positive_scalar(self.tau, "tau", owner=owner)
        if not (isinstance(self.time_scale, str) and self.time_scale == "auto"):
            check_positive_scalar(self.time_scale, "time_scale", owner=owner)
        if self.latent_scale is not None:
            check_positive_scalar(self.latent_scale, "latent_scale", owner=owner)
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"The 'sampling' parameter of {owner} must be one of {list(SAMPLINGS)}. "
                             f"Got {self.sampling!r} instead.")
        check_int(self.n_samples, "n_samples", minimum=16, owner=owner)
        check_int(self.n_trajectories, "n_trajectories", minimum=1, owner=owner)
        check_positive_scalar(self.sampling_time, "sampling_time", owner=owner)
        check_nonnegative_scalar(self.burn_in, "burn_in", owner=owner)
        check_positive_scalar(self.sampling_dt, "sampling_dt", owner=owner)
        if self.sampling_dt >= self.sampling_time:
            raise ValueError(f"sampling_dt = {self.sampling_dt} must be smaller than sampling_time = "
                             f"{self.sampling_time}.")
        check_nonnegative_scalar(self.sample_jitter, "sample_jitter", owner=owner)
        box = None
        if self.box is not None:
            try:
                low, high = (np.asarray(edge, dtype=np.float64) for edge in self.box)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"The 'box' parameter of {owner} must be (low, high) with arrays of shape "
                                 f"({d},). Got {self.box!r} instead.") from exc
            low, high = np.broadcast_to(low, (d,)).copy(), np.broadcast_to(high, (d,)).copy()
            if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
                raise ValueError(f"The 'box' parameter of {owner} needs finite low < high in every coordinate. "
                                 f"Got low={low}, high={high}.")
            box = (low, high)
        return rank, box

    # ------------------------------------------------------------ sampling
    def _trajectory_states(self, sde, rng):
        from .sde import euler_maruyama

        dt = self.sampling_dt
        n_burn = int(round(self.burn_in / dt))
        n_keep = max(1, int(round(self.sampling_time / dt)))
        z0 = rng.standard_normal((self.n_trajectories, sde.dim))
        record_every = max(1, (n_burn + n_keep) * self.n_trajectories // (4 * self.n_samples))
        paths = euler_maruyama(sde, z0, n_burn + n_keep, dt, seed=int(rng.integers(2**62)),
                               record_every=record_every)
        states = paths[:, n_burn // record_every:].reshape(-1, sde.dim)
        if not np.all(np.isfinite(states)):
            raise ValueError(
                f"Euler-Maruyama trajectories of the SDE diverged at sampling_dt = {dt}. Lower sampling_dt, or use "
                "sampling='box' with an explicit box."
            )
        return states

    def _draw(self, sde, states, box, count, rng):
        if self.sampling == "box":
            low, high = box
            return low + (high - low) * rng.random((count, sde.dim))
        picked = states[rng.integers(0, len(states), size=count)]
        return picked + self.sample_jitter * states.std(axis=0) * rng.standard_normal(picked.shape)

    # ---------------------------------------------------------------- fit
    def fit(self, sde):
        """Fit the network to ``sde`` (a :class:`connector_sim.ddm.SDE` with constant diffusion).

        Returns
        -------
        self
        """
        d, G = check_sde(sde)
        rank, box = self._check_params(d)
        started = time.perf_counter()
        rng = check_random_state(self.random_state)
        states = None
        if self.sampling == "trajectories" or box is None:
            states = self._trajectory_states(sde, rng)
        if self.sampling == "box" and box is None:
            low, high = np.percentile(states, [0.5, 99.5], axis=0)
            margin = 0.1 * (high - low) + 1e-12
            box = (low - margin, high + margin)
        z_train = self._draw(sde, states, box, self.n_samples, rng)
        z_test = self._draw(sde, states, box, max(16, self.n_samples // 4), rng)
        f_train, f_test = sde_drift(sde, z_train), sde_drift(sde, z_test)

        center = z_train.mean(axis=0)
        scale = (0.5 * float(z_train.std(axis=0).max()) if self.latent_scale is None else float(self.latent_scale))
        if not scale > 0:
            raise ValueError("The sampled states do not vary (zero spread); give latent_scale or a box.")
        kappa_train = np.zeros((len(z_train), rank))
        kappa_train[:, :d] = (z_train - center) / scale
        if self.time_scale == "auto":
            speed = math.sqrt(float((f_train**2).sum(axis=1).mean())) / scale
            radius = math.sqrt(float((kappa_train**2).sum(axis=1).mean()))
            time_scale = self.tau * speed / max(radius, 1e-12)
            if not (math.isfinite(time_scale) and time_scale > 0):
                raise ValueError("time_scale='auto' needs a drift that is not zero on the sampled states; "
                                 "give time_scale explicitly.")
        else:
            time_scale = float(self.time_scale)
        embedding = LatentEmbedding(center, scale, rank, time_scale, self.tau)
        kappa_train = embedding.to_latent(z_train)
        if rank > d:
            # The extra latent coordinates must relax to the embedded manifold: train off it too.
            kappa_train[:, d:] = 0.5 * rng.standard_normal((len(z_train), rank - d)) * kappa_train[:, :d].std()
        target = embedding.drift_to_latent(f_train)
        target[:, d:] = -kappa_train[:, d:]

        from ..inference.flows import torch_threads

        with torch_threads(self.n_threads):
            trained = self._train(kappa_train, target, rank, rng)
        m, n, b = trained
        self.network_ = LowRankRNN(m, n, m @ embedding.loadings, b, tau=self.tau, activation=self.activation)
        self.embedding_ = embedding
        self.noise_ = embedding.input_noise(G)
        self.time_scale_, self.latent_scale_ = time_scale, scale
        self.samples_ = z_train
        self.box_ = box
        self.n_features_in_ = d
        self.drift_error_ = self._relative_error(z_test, f_test)
        self.train_drift_error_ = self._relative_error(z_train, f_train)
        self.initial_drift_error_ = self._relative_error(z_test, f_test, self._initial_network)
        self.sampled_drift_error_ = self._sampled_error(z_test, f_test)
        del self._initial_network
        self.training_time_ = time.perf_counter() - started
        self._sde = sde
        return self

    def _relative_error(self, z, f, network=None):
        error = self.latent_drift(z, network) - f
        return math.sqrt(float((error**2).sum()) / max(float((f**2).sum()), 1e-300))

    def _sampled_error(self, z, f):
        """Expected relative drift error of a network of ``sample_size`` rows resampled i.i.d. from the fitted ones."""
        if self.sample_size is None:
            return math.nan
        net = self.network_
        kappa = self.embedding_.to_latent(z)
        phi = _activation(self.activation, kappa @ net.m.T + net.b)
        mean = phi @ net.n / net.n_neurons
        spread = (phi**2 @ (net.n**2).sum(axis=1)) / net.n_neurons - (mean**2).sum(axis=1)
        variance = self.embedding_.velocity_to_drift(np.ones((1, net.rank)))[0, 0] ** 2 * spread.sum()
        error = self.latent_drift(z) - f
        total = float((error**2).sum()) + float(variance) / self.sample_size
        return math.sqrt(total / max(float((f**2).sum()), 1e-300))

    def _closed_form_n(self, kappa, target, m, b):
        """n minimising the expected squared error of a network of ``sample_size`` rows resampled from these.

        With Phi[p, i] = phi(m_i kappa_p + b_i), g = target + kappa and a = n / N,
        the expected error of an i.i.d. resample of size N_s is
        |Phi a - g|^2 + (N / N_s) a^T diag(Phi^T Phi) a - |Phi a|^2 / N_s (summed
        over points), minimised by
        ((1 - 1 / N_s) Phi^T Phi + (N / N_s) diag(Phi^T Phi) + lambda) a = Phi^T g,
        lambda the (relative) ridge.
        """
        N = m.shape[0]
        Phi = _activation(self.activation, kappa @ m.T + b)
        gram = Phi.T @ Phi
        lhs = gram.copy()
        if self.sample_size is not None:
            lhs *= 1 - 1 / self.sample_size
            lhs[np.diag_indices(N)] += (N / self.sample_size) * np.diag(gram)
        lhs[np.diag_indices(N)] += self.ridge * max(np.trace(gram) / N, 1e-12) + 1e-12
        return N * np.linalg.solve(lhs, Phi.T @ (target + kappa))

    def _train(self, kappa, target, rank, rng):
        """(m, n, b) fitted by the closed-form start and Adam (LINT's training loop)."""
        from ..inference.flows import resolve_device
        from ..inference.lint import DTYPES, split_trials, torch, torch_activation, train_loop

        N = self.n_neurons
        device = resolve_device(self.device)
        dtype = DTYPES[self.dtype]
        m = self.weight_scale * rng.standard_normal((N, rank))
        b = self.bias_scale * rng.standard_normal(N)
        n = self._closed_form_n(kappa, target, m, b)
        self._initial_network = LowRankRNN(m, n, None, b, tau=self.tau, activation=self.activation)
        train, val = split_trials(len(kappa), self.validation_fraction, rng, _OWNER)

        def tensor(a):
            return torch.tensor(np.asarray(a, dtype=np.float64), dtype=dtype, device=device)

        params = {"m": tensor(m), "n": tensor(n), "b": tensor(b)}
        for value in params.values():
            value.requires_grad_(True)
        points, goal = tensor(kappa), tensor(target)
        phi_of = torch_activation(self.activation)
        train_t, val_t = torch.as_tensor(train, device=device), torch.as_tensor(val, device=device)
        inverse_size = 0.0 if self.sample_size is None else 1.0 / self.sample_size

        def expected_error(index):
            # |F_N - target|^2 plus the variance of an i.i.d. resample of sample_size rows.
            phi = phi_of(points[index] @ params["m"].T + params["b"])
            mean = phi @ params["n"] / N
            error = ((mean - points[index] - goal[index]) ** 2).sum(-1).mean()
            if not inverse_size:
                return error
            spread = (phi**2 @ (params["n"] ** 2).sum(1)) / N - (mean**2).sum(-1)
            return error + inverse_size * spread.mean()

        def batch_loss(positions):
            loss = expected_error(train_t[torch.as_tensor(positions, device=device)])
            penalty = sum((params[name] ** 2).sum() for name in ("m", "n")) / N
            return loss + self.weight_decay * penalty, loss.detach()

        def evaluate(split):
            return expected_error(train_t if split == "train" else val_t).item()

        history, best_epoch, epochs = train_loop(self, params, batch_loss, evaluate, len(train), len(val) > 0, rng,
                                                 _OWNER)
        self.history_, self.best_epoch_, self.n_epochs_, self.device_ = history, best_epoch, epochs, device
        return tuple(params[name].detach().cpu().numpy().astype(np.float64) for name in ("m", "n", "b"))

    # ----------------------------------------------------------- results
    def _check_fitted(self):
        if not hasattr(self, "network_"):
            raise ValueError(f"This {_OWNER} instance is not fitted yet. Call 'fit' first.")

    def latent_drift(self, z, network=None):
        """The drift the network realises at states z, in SDE units: f_net(z), shape z.shape.

        f_net(z) = (T L / tau) Q^T F(kappa(z)), F(kappa) = -kappa + n^T phi(m kappa + b) / N
        the exact latent velocity of ``network`` (default ``network_``; a
        sampled bigger network works too) on the embedded manifold.
        """
        self._check_fitted()
        d = self.n_features_in_
        z = np.asarray(z, dtype=np.float64)
        if z.shape[-1:] != (d,) or not np.all(np.isfinite(z)):
            raise ValueError(f"z must be finite with shape (..., {d}). Got shape {z.shape}.")
        network = self.network_ if network is None else network
        kappa = self.embedding_.to_latent(z).reshape(-1, network.rank)
        m, n, b = (np.asarray(a, dtype=np.float64) for a in (network.m, network.n, network.b))
        velocity = np.empty_like(kappa)
        chunk = max(1, (1 << 22) // network.n_neurons)  # bounded (points x neurons) temporaries
        for start in range(0, len(kappa), chunk):
            k = kappa[start: start + chunk]
            velocity[start: start + chunk] = -k + _activation(network.activation, k @ m.T + b) @ n / network.n_neurons
        return self.embedding_.velocity_to_drift(velocity).reshape(z.shape)

    def loading_distribution(self):
        """The empirical distribution of the fitted rows (m, n, I, b): :class:`connector_sim.Empirical`.

        A network of any size sampled from it (:meth:`sample_network`) has,
        in the mean field, exactly the fitted network's latent velocity (the
        expectation over resampled rows is the average over the N fitted
        rows), and keeps I = m Q row by row, so the same ``noise_`` applies.
        """
        self._check_fitted()
        from ..distributions import Empirical

        return Empirical.from_network(self.network_)

    def sample_network(self, n_neurons, random_state=None, dtype=np.float64, *, method="iid"):
        """A :class:`LowRankRNN` of ``n_neurons`` rows drawn from :meth:`loading_distribution`.

        Parameters
        ----------
        n_neurons : int
        random_state : None, int or numpy.random.Generator
        dtype : float32 or float64
        method : {"iid", "stratified"}, default="iid"
            "iid" draws rows independently (its drift deviates from the
            fitted one by ~ spread / sqrt(n_neurons), see ``sampled_drift_error_``);
            "stratified" takes every fitted row ``n_neurons // N`` times and
            the remainder without replacement, so that the drift equals the
            fitted network's exactly when N divides ``n_neurons``.
        """
        self._check_fitted()
        from .._validation import check_random_state as _rng

        if method == "iid":
            return self.loading_distribution().sample(n_neurons, random_state=random_state, dtype=dtype,
                                                      tau=self.tau, activation=self.activation)
        if method != "stratified":
            raise ValueError(f"method must be 'iid' or 'stratified'. Got {method!r}.")
        n_neurons = check_int(n_neurons, "n_neurons", minimum=1, owner=f"{_OWNER}.sample_network")
        rows = self.network_.rows()
        N = len(rows)
        index = np.concatenate([np.repeat(np.arange(N), n_neurons // N),
                                _rng(random_state).choice(N, n_neurons % N, replace=False)])
        R, D = self.network_.rank, self.network_.n_inputs
        picked = rows[index]
        return LowRankRNN(picked[:, :R], picked[:, R:2 * R], picked[:, 2 * R:2 * R + D], picked[:, -1], tau=self.tau,
                          activation=self.activation, dtype=dtype)

    def simulate(self, duration, *, dt=None, z0=None, n_trials=1, seed=None, network=None, inputs=None,
                 backend="auto", n_threads=1, progress=None):
        """Simulate the network for ``duration`` SDE time units, with the noise that realises G.

        Parameters
        ----------
        duration : float
            SDE time; the network runs ``round(duration * T / dt)`` Euler steps.
        dt : float, optional
            Network time step (unit of tau). Default tau / 10.
        z0 : array-like of shape (d,) or (n_trials, d), optional
            Initial states (SDE units); default the embedding centre.
        n_trials : int, default=1
        seed : int, optional
            Key of the input noise.
        network : LowRankRNN, optional
            Default ``network_``; e.g. :meth:`sample_network` (N = 1e5).
        inputs : array-like of shape (T, d) or (n_trials, T, d), optional
            Extra deterministic inputs u (see :meth:`LatentEmbedding.force_to_input`).
        backend, n_threads, progress
            As in :func:`connector_sim.simulate`.

        Returns
        -------
        SimulationResult
            Its latent states in SDE units are :meth:`latent_trajectories` (result),
            its times in SDE units ``result.time / time_scale_``.
        """
        self._check_fitted()
        from ..simulate import simulate

        network = self.network_ if network is None else network
        check_positive_scalar(duration, "duration", owner=f"{_OWNER}.simulate")
        dt = self.tau / 10 if dt is None else check_positive_scalar(dt, "dt", owner=f"{_OWNER}.simulate")
        n_steps = max(1, int(round(duration * self.time_scale_ / dt)))
        if z0 is None:
            z0 = self.embedding_.center
        kappa0 = self.embedding_.to_latent(np.asarray(z0, dtype=np.float64))
        batched = kappa0.ndim == 2
        return simulate(network, None if inputs is not None else n_steps, dt=dt, inputs=inputs, kappa0=kappa0,
                        n_trials=None if batched or (inputs is not None and np.ndim(inputs) == 3) else n_trials,
                        seed=seed, input_noise=self.noise_, backend=backend, n_threads=n_threads,
                        progress=progress)

    def latent_trajectories(self, result):
        """States z in SDE units, shape (n_trials, n_times, d), of a simulation of the fitted network.

        z = c + L Q^T (kappa + Q v): the effective latent includes the filtered
        (noisy) input, which lies in span(m) because I = m Q.
        """
        self._check_fitted()
        kappa = result.kappa + result.v @ self.embedding_.loadings.T
        return self.embedding_.to_state(kappa)

    def __repr__(self):
        return (f"{_OWNER}(rank={self.rank}, n_neurons={self.n_neurons}, tau={self.tau}, "
                f"time_scale={self.time_scale!r}, sampling={self.sampling!r})")
