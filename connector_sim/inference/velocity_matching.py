"""Velocity matching: distil a latent vector field into a low-rank RNN, without BPTT.

The Connector paper's route for the rat recordings (its Appendix G.4.1,
theory section 3, step 1): given latent points kappa (and filtered inputs v) and
the target velocity there, fit the loadings so that the network's latent
velocity matches it::

    F(kappa, v) = -kappa + n^T phi(m kappa + I v + b) / N      (dkappa/dt, per unit of tau)
    L = mean_p |F(kappa_p, v_p) - target_p|^2 + weight_decay (|m|^2 + |n|^2 + |I|^2) / N

Every sample is one evaluation of F, so there is no backpropagation through
time. The loading m from latents to neurons may be given (fixed, as in the
paper, where it came from FINDR) or learned; n, b (and I) are learned. For
a fixed (m, I, b), n solves a ridge regression in closed form,

    (target + kappa) = Phi n / N,   Phi[p, i] = phi(m_i^T kappa_p + I_i^T v_p + b_i),

which is the initialisation; Adam then refines all learned loadings
together (with m and b free the units are adaptive features; with n alone,
the paper found the flow out of reach).
"""

import math

import numpy as np

from .._validation import check_array, check_int, check_nonnegative_scalar, check_positive_scalar, check_random_state
from ..network import LowRankRNN
from .lint import (
    ACTIVATIONS,
    DTYPES,
    check_choice,
    check_training_params,
    resolve_device,
    split_trials,
    torch,
    torch_activation,
    torch_threads,
    train_loop,
)


def velocity_samples(trajectories, dt, *, tau=1.0, inputs=None):
    """Latent points and velocities from trajectories of the discrete latent recursion.

    For kappa_{t+1} = kappa_t + alpha F(kappa_t, v_t) (alpha = dt / tau, theory
    eq. 3) the velocity is exactly

        F(kappa_t, v_t) = (kappa_{t+1} - kappa_t) / alpha.

    Parameters
    ----------
    trajectories : array-like of shape (n_trials, n_times, R)
    dt : float
    tau : float, default=1.0
    inputs : array-like of shape (n_trials, n_times, D), optional
        u_t; the filtered inputs v_t (v_0 = 0) are returned with the points.

    Returns
    -------
    kappa : ndarray of shape (n_trials * (n_times - 1), R)
    velocity : ndarray of the same shape
    v : ndarray of shape (n_trials * (n_times - 1), D) or None

    Raises
    ------
    ValueError
        If ``trajectories`` is not of shape (n_trials, n_times, R) with
        n_times >= 2, ``inputs`` do not match it, or ``dt`` / ``tau`` is not
        positive.
    TypeError
        If ``dt`` or ``tau`` is not a number.

    Examples
    --------
    >>> import numpy as np
    >>> trajectory = np.arange(1.0, 6.0).reshape(1, 5, 1)  # kappa_t = 1, 2, ..., 5
    >>> points, velocities, v = velocity_samples(trajectory, dt=0.1)
    >>> points[:, 0], velocities[:, 0], v
    (array([1., 2., 3., 4.]), array([10., 10., 10., 10.]), None)
    """
    from ..latents import filtered_inputs

    trajectories = check_array(trajectories, "trajectories", ndim=3, dtype=np.float64)
    alpha = check_positive_scalar(dt, "dt", owner="velocity_samples") / check_positive_scalar(
        tau, "tau", owner="velocity_samples")
    n_trials, n_times, rank = trajectories.shape
    if n_times < 2:
        raise ValueError(f"trajectories need at least 2 time points. Got shape {trajectories.shape}.")
    kappa = trajectories[:, :-1].reshape(-1, rank)
    velocity = ((trajectories[:, 1:] - trajectories[:, :-1]) / alpha).reshape(-1, rank)
    if inputs is None:
        return kappa, velocity, None
    inputs = check_array(inputs, "inputs", ndim=3, dtype=np.float64, shape=(n_trials, n_times, None))
    v = filtered_inputs(inputs, alpha)[:, :-1].reshape(-1, inputs.shape[2])
    return kappa, velocity, v


class VelocityMatching:
    """Fit an lrRNN whose latent velocity matches a target field (no BPTT).

    Minimises, over samples p::

        mean_p |-kappa_p + n^T phi(m kappa_p + I v_p + b) / N - target_p|^2
        + weight_decay (|m|^2 + |n|^2 + |I|^2) / N

    by Adam with gradient clipping and early stopping on held-out samples.
    m is ``m`` when given (fixed unless ``fit_m=True``) and otherwise drawn
    from N(0, 1) and learned; b starts from N(0, bias_scale^2) (spread
    thresholds, so that phi(m kappa + b) spans many functions of kappa) and
    I from N(0, 1); n starts at the ridge-regression solution for these
    (see the module docstring).

    Parameters
    ----------
    n_neurons : int, optional
        N. Required when ``m`` is not given.
    m : array-like of shape (N, R), optional
        Loadings from latents to neurons.
    fit_m : bool, optional
        Learn m. Default: False when ``m`` is given, else True.
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}, default="tanh"
    tau : float, default=1.0
        Time constant of the returned network (the velocity is per unit of tau).
    fit_inputs, fit_bias : bool, default=True
    bias_scale : float, default=1.0
    ridge : float, default=1e-6
        Ridge penalty of the initial regression for n, relative to the mean
        of phi^2.
    n_epochs : int, default=1000
    batch_size : int, default=256
        Samples per Adam step.
    learning_rate : float, default=1e-2
    weight_decay : float, default=0.0
    max_grad_norm : float or None, default=1.0
    validation_fraction : float in [0, 1), default=0.1
        Fraction of the samples held out for early stopping.
    patience : int or None, default=100
    tol : float, default=1e-4
    device : str, default="auto"
    dtype : {"float32", "float64"}, default="float32"
    n_threads : int or None, default=1
        torch intra-op and NumPy BLAS threads during fit (see :class:`~connector_sim.inference.LINT`).
    verbose : int, default=0
    callback : callable, optional
        ``callback(estimator, epoch, {"train_loss", "val_loss"})``; True stops.
    random_state : None, int or numpy.random.Generator

    Attributes
    ----------
    network_ : LowRankRNN
    history_ : dict of lists
    best_epoch_, n_epochs_ : int
    relative_error_ : float
        ``|F - target| / |target|`` over all samples (Frobenius norms).
    initial_relative_error_ : float
        The same after the closed-form initialisation.
    rank_, n_inputs_ : int
    device_ : torch.device

    Raises
    ------
    ValueError
        From :meth:`fit`: a parameter out of range or unknown, latent points and
        velocities of different shapes, ``m`` of the wrong shape, or neither
        ``n_neurons`` nor ``m`` given.
    TypeError
        From :meth:`fit`: a parameter of the wrong type.

    Examples
    --------
    >>> import numpy as np
    >>> kappa = np.linspace(-2, 2, 50)[:, None]
    >>> fitted = VelocityMatching(n_neurons=50, n_epochs=20, random_state=0).fit(
    ...     kappa, lambda k: np.tanh(2 * k) - k)
    >>> fitted.network_.n_neurons, bool(fitted.relative_error_ < 0.05)
    (50, True)
    """

    def __init__(self, n_neurons=None, *, m=None, fit_m=None, activation="tanh", tau=1.0, fit_inputs=True,
                 fit_bias=True, bias_scale=1.0, ridge=1e-6, n_epochs=1000, batch_size=256, learning_rate=1e-2,
                 weight_decay=0.0, max_grad_norm=1.0, validation_fraction=0.1, patience=100, tol=1e-4,
                 device="auto", dtype="float32", n_threads=1, verbose=0, callback=None, random_state=None):
        self.n_neurons = n_neurons
        self.m = m
        self.fit_m = fit_m
        self.activation = activation
        self.tau = tau
        self.fit_inputs = fit_inputs
        self.fit_bias = fit_bias
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

    def _check_params(self, rank):
        owner = type(self).__name__
        check_choice(self.activation, "activation", ACTIVATIONS, owner)
        check_choice(self.dtype, "dtype", tuple(DTYPES), owner)
        check_positive_scalar(self.tau, "tau", owner=owner)
        check_nonnegative_scalar(self.bias_scale, "bias_scale", owner=owner)
        check_nonnegative_scalar(self.ridge, "ridge", owner=owner)
        check_training_params(self, owner)
        if self.m is None:
            if self.n_neurons is None:
                raise ValueError(f"{owner} needs n_neurons (the size of the network to fit) or the loadings m.")
            N = check_int(self.n_neurons, "n_neurons", minimum=1, owner=owner)
            m = None
        else:
            m = check_array(self.m, "m", ndim=2, dtype=np.float64)
            N = m.shape[0]
            if m.shape[1] != rank:
                raise ValueError(f"m must have one column per latent: shape ({N}, {rank}). Got shape {m.shape}.")
            if self.n_neurons is not None and self.n_neurons != N:
                raise ValueError(f"n_neurons = {self.n_neurons} disagrees with m, which has {N} rows.")
        fit_m = (m is None) if self.fit_m is None else self.fit_m
        if not isinstance(fit_m, bool):
            raise TypeError(f"The 'fit_m' parameter of {owner} must be a bool or None. Got {self.fit_m!r} instead.")
        return N, m, fit_m

    def _targets(self, kappa, velocity, v):
        kappa = np.asarray(kappa)
        if kappa.ndim != 2:
            raise ValueError(f"kappa must have shape (n_samples, R). Got shape {kappa.shape}.")
        kappa = check_array(kappa, "kappa", ndim=2, dtype=np.float64)
        P, R = kappa.shape
        if v is not None:
            v = check_array(v, "v", ndim=2, dtype=np.float64, shape=(P, None))
            if v.shape[1] == 0:
                v = None
        if callable(velocity):
            target = velocity(kappa) if v is None else velocity(kappa, v)
            target = np.asarray(target)
            if target.shape != kappa.shape:
                raise ValueError(
                    f"The velocity field must return an array of shape {kappa.shape} (one velocity per point). "
                    f"Got shape {target.shape}."
                )
            target = check_array(target, "velocity field output", ndim=2, dtype=np.float64)
        else:
            target = check_array(velocity, "velocity", ndim=2, dtype=np.float64, shape=(P, R))
        if P < 2:
            raise ValueError(f"VelocityMatching needs at least 2 samples. Got {P}.")
        return kappa, target, v

    def fit(self, kappa, velocity, v=None):
        """Fit the loadings to the target velocities.

        Parameters
        ----------
        kappa : array-like of shape (n_samples, R)
            Latent points.
        velocity : array-like of shape (n_samples, R), or callable
            dkappa/dt at the points (per unit of tau), or a function
            ``velocity(kappa)`` (``velocity(kappa, v)`` with inputs) giving it.
            :func:`velocity_samples` turns latent trajectories into samples.
        v : array-like of shape (n_samples, D), optional
            Filtered inputs at the points.

        Returns
        -------
        self
        """
        kappa, target, v = self._targets(kappa, velocity, v)
        N, m_given, fit_m = self._check_params(kappa.shape[1])
        with torch_threads(self.n_threads):
            return self._fit(kappa, target, v, N, m_given, fit_m)

    def _fit(self, kappa, target, v, N, m_given, fit_m):
        P, R = kappa.shape
        owner = type(self).__name__
        rng = check_random_state(self.random_state)
        device = resolve_device(self.device)
        dtype = DTYPES[self.dtype]
        D = 0 if v is None else v.shape[1]
        fit_inputs = self.fit_inputs and D > 0
        m = rng.standard_normal((N, R)) if m_given is None else m_given
        b = self.bias_scale * rng.standard_normal(N) if self.fit_bias else np.zeros(N)
        I = rng.standard_normal((N, D)) if fit_inputs else np.zeros((N, D))
        n = self._ridge_n(kappa, target, v, m, I, b)
        train, val = split_trials(P, self.validation_fraction, rng, owner)

        def tensor(a):
            return torch.tensor(np.asarray(a, dtype=np.float64), dtype=dtype, device=device)

        params = {"n": tensor(n)}
        fixed = {}
        (params if fit_m else fixed)["m"] = tensor(m)
        (params if self.fit_bias else fixed)["b"] = tensor(b)
        (params if fit_inputs else fixed)["I"] = tensor(I)
        for value in params.values():
            value.requires_grad_(True)
        p = {**fixed, **params}
        points, goal = tensor(kappa), tensor(target)
        inputs = None if v is None else tensor(v)
        phi = torch_activation(self.activation)
        train_t, val_t = torch.as_tensor(train, device=device), torch.as_tensor(val, device=device)

        def velocity_of(index):
            z = points[index] @ p["m"].T + p["b"]
            if inputs is not None:
                z = z + inputs[index] @ p["I"].T
            return -points[index] + phi(z) @ p["n"] / N

        def data_loss(index):
            return ((velocity_of(index) - goal[index]) ** 2).sum(-1).mean()

        def batch_loss(positions):
            loss = data_loss(train_t[torch.as_tensor(positions, device=device)])
            penalty = sum((p[name] ** 2).sum() for name in ("m", "n", "I") if name in params) / N
            return loss + self.weight_decay * penalty, loss.detach()

        def evaluate(split):
            return data_loss(train_t if split == "train" else val_t).item()

        norm = math.sqrt(float((target**2).sum()))
        everything = torch.arange(P, device=device)
        with torch.no_grad():
            self.initial_relative_error_ = math.sqrt(float(((velocity_of(everything) - goal) ** 2).sum())) / norm
        history, best_epoch, epochs = train_loop(self, params, batch_loss, evaluate, len(train), len(val) > 0,
                                                 rng, owner)
        with torch.no_grad():
            self.relative_error_ = math.sqrt(float(((velocity_of(everything) - goal) ** 2).sum())) / norm
        # Fixed loadings are returned as given (float64), not through the training dtype.
        host = {"m": m, "b": b, "I": I}
        host.update({name: value.detach().cpu().numpy().astype(np.float64) for name, value in params.items()})
        self.network_ = LowRankRNN(host["m"], host["n"], host["I"], host["b"], tau=self.tau,
                                   activation=self.activation)
        self.history_, self.best_epoch_, self.n_epochs_ = history, best_epoch, epochs
        self.rank_, self.n_inputs_, self.device_ = R, D, device
        return self

    def _ridge_n(self, kappa, target, v, m, I, b):
        """n = N (Phi^T Phi + lambda)^{-1} Phi^T (target + kappa), the closed-form fit for fixed m, I, b."""
        from ..activations import apply_activation

        N = m.shape[0]
        z = kappa @ m.T + b + (0.0 if v is None else v @ I.T)
        Phi = apply_activation(self.activation, z)
        gram = Phi.T @ Phi
        penalty = self.ridge * max(np.trace(gram) / N, 1e-12) + 1e-12
        return N * np.linalg.solve(gram + penalty * np.eye(N), Phi.T @ (target + kappa))

    def predict(self, kappa, v=None):
        """The fitted network's latent velocity at ``kappa`` (and ``v``), shape (n_samples, R).

        ::

            F(kappa, v) = -kappa + n^T phi(m kappa + I v + b) / N
        """
        if not hasattr(self, "network_"):
            raise ValueError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first.")
        from ..activations import apply_activation

        kappa = check_array(kappa, "kappa", ndim=2, dtype=np.float64, shape=(None, self.rank_))
        net = self.network_
        z = kappa @ net.m.T + net.b
        if self.n_inputs_:
            if v is None:
                raise ValueError(f"The network has {self.n_inputs_} input(s): give v of shape ({len(kappa)}, "
                                 f"{self.n_inputs_}).")
            z = z + check_array(v, "v", ndim=2, dtype=np.float64, shape=(len(kappa), self.n_inputs_)) @ net.I.T
        return -kappa + apply_activation(net.activation, z) @ net.n / net.n_neurons
