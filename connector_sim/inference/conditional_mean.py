"""The conditional mean of n given (m, I, b) by ridge regression (theory section 3, step 4). NumPy only.

The latent recursion (theory eq. 3) of a network of N neurons,
kappa_{t+1} = (1 - alpha) kappa_t + (alpha / N) Nm^T phi(x_t), is linear in
the left factors Nm. With the T time points stacked (all trials),

    Delta = (N / alpha) (kappa_{t+1} - (1 - alpha) kappa_t)          (T x R)
    Phi[t, i] = phi(m_i^T kappa_t + I_i^T v_t + b_i)                  (T x N)

the ridge estimate of Nm for N neurons with rows (m_i, I_i, b_i) is::

    Nm_hat = argmin |Delta - Phi Nm|^2 + lambda |Nm|^2
           = Phi^T W,      W = (Phi Phi^T + lambda I_T)^{-1} Delta    (dual form)

so row i is nbar(m_i, I_i, b_i) = sum_t W_t phi(m_i^T kappa_t + I_i^T v_t + b_i):
a closed-form function of (m, I, b) that :class:`ConditionalMean` evaluates
for new samples. For large N it approximates E[n | m, I, b] (paper,
appendix G.1).

lambda scales with the number N of regression rows (theory section 3, step 4,
"How lambda scales with the rows"). Divided by N^2 the objective is::

    sum_t |g_t - (1/N) sum_i phi_ti n_i|^2 + (lambda / N) (1/N) sum_i |n_i|^2

with g_t the latent increments: a data term and a penalty on the row average
of ``|n|^2`` weighted by lambda / N. With ``ridge_scaling="linear"`` (default),
lambda = c N: the weight c stays fixed, the empirical Gram matrix
(1/N) Phi Phi^T converges to its mean-field value at rate 1/sqrt(N), and
nbar converges to the regularised mean-field regression
phi(m)^T (K + c I_T)^{-1} g, K_ts = E[phi_t phi_s], with an error that falls
with N; as c -> 0 that limit is the projection of E[n | m, I, b] on the
features phi(m^T kappa_t + ...), all the dynamics determine. c is chosen by
the held-out latent-velocity error over trials (:func:`ridge_cv_scores`;
``ridge_constant="cv"``, the default). ``ridge_scaling="paper"`` is the
Connector paper's Bayesian reading (prior rows n ~ N(0, I / lambda_p), unit
noise on the latent increments): lambda = lambda_p N^2 / alpha^2, with
lambda_p = 1e-4, alpha = 0.1 and N = 1,000 in the paper. Its weight
lambda / N = lambda_p N / alpha^2 grows with N, so nbar shrinks towards 0 as
more rows are used (on the limit-cycle network the error of nbar grew from
0.17 at 1,000 rows to 0.75 at 32,000, see ``benchmarks/ridge_consistency.py``).
An absolute ``ridge`` (lambda itself) overrides both.

With lambda = c N the rows enter only through (1/N) Phi Phi^T, a Monte Carlo
estimate of K whose error the ridge amplifies by 1/c: rows at quasi-random
(Sobol) points of the marginal give a far less noisy nbar than independent
draws (:class:`~connector_sim.inference.Connector`'s ``regression_sampling``).

Numerically both forms are computed scaled by 1/N, in float64:

- dual (N > T): W = (G + (lambda / N) I_T)^{-1} Delta / N with
  G = Phi Phi^T / N accumulated over chunks of neurons (N = 1e6 fits);
- primal (N <= T): Nm_hat = (Phi^T Phi + lambda I_N)^{-1} Phi^T Delta, then
  W = (Delta - Phi Nm_hat) / lambda, which follows from
  (Phi Phi^T + lambda I) W = Delta and Nm_hat = Phi^T W.

Maximum entropy (theory section 3, step 2): given the conditional covariance Sigma,
p(n | m, I, b) = N(nbar(m, I, b), Sigma); :func:`conditional_covariance`
turns a scalar, a diagonal or a full matrix into Sigma.
"""

import math
import numbers

import numpy as np

from .._validation import check_array, check_int, check_positive_scalar, check_random_state
from ..activations import BUILTIN_ACTIVATIONS, apply_activation

#: Elements of one (time points x neurons) block of Phi (32 MB in float64).
_BLOCK_ELEMENTS = 1 << 22


def _check_builtin_activation(activation):
    if not isinstance(activation, str) or activation not in BUILTIN_ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(BUILTIN_ACTIVATIONS)} for the conditional mean. "
                         f"Got {activation!r}.")
    return activation


def _as_2d(value, name, n_rows, n_cols):
    """A (n_rows, n_cols) float64 array; None means zeros (only when n_cols is 0 or the value is optional)."""
    if value is None:
        return np.zeros((n_rows, n_cols))
    value = np.asarray(value)
    if value.ndim == 1 and n_cols == 1:
        value = value[:, None]
    return check_array(value, name, ndim=2, dtype=np.float64, shape=(n_rows, n_cols))


def regression_data(kappa, alpha=0.1, *, inputs=None, v=None, v0=None):
    """Latent points, filtered inputs and increments of trajectories, for the ridge regression.

    ::

        points_t     = kappa_t                                    t = 0 .. T-1
        increments_t = (kappa_{t+1} - (1 - alpha) kappa_t) / alpha
                     = (1/N) sum_i n_i phi(m_i^T kappa_t + I_i^T v_t + b_i)
        v_{t+1}      = (1 - alpha) v_t + alpha u_t                (from inputs u)

    so that Delta = N * increments (theory section 3, step 4).

    Parameters
    ----------
    kappa : array-like of shape (n_trials, T + 1, R) or (T + 1, R)
        Latent trajectories (noise-free latents of the fitted network).
        At least two time points (one step).
    alpha : float, default=0.1
        dt / tau of the trajectories.
    inputs : array-like of shape (n_trials, T, D) or (T, D), optional
        Raw inputs u_t (as given to :func:`connector_sim.simulate`).
    v : array-like of shape (n_trials, T + 1, D) or (T + 1, D), optional
        Already filtered inputs (``SimulationResult.v``); exclusive with
        ``inputs``.
    v0 : array-like of shape (D,) or (n_trials, D), optional
        Filtered input at t = 0 when ``inputs`` are given. Default zero.

    Returns
    -------
    points : ndarray of shape (n_trials * T, R)
    v_points : ndarray of shape (n_trials * T, D)
    increments : ndarray of shape (n_trials * T, R)
    """
    alpha = check_positive_scalar(alpha, "alpha", owner="regression_data")
    if alpha > 1:
        raise ValueError(f"alpha = dt / tau must be in (0, 1]. Got {alpha!r}.")
    kappa = np.asarray(kappa)
    if kappa.ndim == 2:
        kappa = kappa[None]
    if kappa.ndim != 3:
        raise ValueError(f"kappa must have shape (n_trials, n_times, R) or (n_times, R). Got shape {kappa.shape}.")
    kappa = check_array(kappa, "kappa", ndim=3, dtype=np.float64)
    n_trials, n_times, rank = kappa.shape
    if n_times < 2:
        raise ValueError(f"kappa must hold at least two time points per trial (one step) to give latent "
                         f"increments. Got {n_times} time point(s), shape {kappa.shape}.")
    if rank < 1 or n_trials < 1:
        raise ValueError(f"kappa must have at least one trial and rank >= 1. Got shape {kappa.shape}.")
    T = n_times - 1
    if inputs is not None and v is not None:
        raise ValueError("Give either inputs (raw u_t) or v (filtered inputs), not both.")
    if inputs is not None:
        inputs = np.asarray(inputs)
        if inputs.ndim == 2:
            inputs = inputs[None]
        if inputs.ndim != 3 or inputs.shape[1] != T or inputs.shape[0] not in (1, n_trials):
            raise ValueError(f"inputs must have shape ({n_trials}, {T}, D) or ({T}, D): one input per step of "
                             f"kappa (shape {kappa.shape}). Got shape {np.shape(inputs)}.")
        inputs = check_array(inputs, "inputs", ndim=3, dtype=np.float64)
        D = inputs.shape[2]
        v_t = np.zeros((n_trials, D)) if v0 is None else np.broadcast_to(
            check_array(np.atleast_2d(v0), "v0", ndim=2, dtype=np.float64, shape=(None, D)), (n_trials, D)).copy()
        filtered = np.empty((n_trials, T, D))
        u = np.broadcast_to(inputs, (n_trials, T, D))
        for t in range(T):
            filtered[:, t] = v_t
            v_t = (1 - alpha) * v_t + alpha * u[:, t]
    elif v is not None:
        v = np.asarray(v)
        if v.ndim == 2:
            v = v[None]
        if v.ndim != 3 or v.shape[1] not in (T, T + 1) or v.shape[0] not in (1, n_trials):
            raise ValueError(f"v must have shape ({n_trials}, {T + 1}, D) or ({T + 1}, D), the filtered input at "
                             f"each time point of kappa (shape {kappa.shape}). Got shape {np.shape(v)}.")
        v = check_array(v, "v", ndim=3, dtype=np.float64)
        filtered = np.broadcast_to(v[:, :T], (n_trials, T, v.shape[2]))
    else:
        filtered = np.zeros((n_trials, T, 0))
    points = kappa[:, :-1].reshape(-1, rank)
    increments = ((kappa[:, 1:] - (1 - alpha) * kappa[:, :-1]) / alpha).reshape(-1, rank)
    return points, np.ascontiguousarray(filtered).reshape(n_trials * T, filtered.shape[2]), increments


def _phi_block(activation, m, I, b, points, v_points):
    """Phi[t, i] = phi(m_i^T kappa_t + I_i^T v_t + b_i) for a block of neurons, float64 (T, n)."""
    z = points @ m.T + b
    if I.shape[1]:
        z += v_points @ I.T
    return apply_activation(activation, z)


class ConditionalMean:
    """The closed-form conditional mean nbar(m, I, b) = sum_t W_t phi(m^T kappa_t + I^T v_t + b).

    Built by :func:`fit_conditional_mean`; evaluating it needs no training
    data and no torch.

    Parameters
    ----------
    points : ndarray of shape (T, R)
        Latent points kappa_t.
    v_points : ndarray of shape (T, D)
        Filtered inputs v_t.
    weights : ndarray of shape (T, R)
        W.
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}, default="tanh"

    Attributes
    ----------
    ridge_lambda : float or None
        lambda of the regression (set by :func:`fit_conditional_mean`).
    ridge_scaling : {"linear", "paper", "fixed"} or None
        "fixed" when an absolute ``ridge`` was given.
    ridge_constant : float or None
        c of lambda = c N ("linear"), lambda_p ("paper"), None ("fixed").
    cv_constants, cv_scores : ndarray or None
        The candidate c and their held-out latent-velocity errors
        (:func:`ridge_cv_scores`) when c was cross-validated.

    Raises
    ------
    ValueError
        If the arrays do not match in T and R, or ``activation`` is not a
        built-in one; when called, if ``m`` (or ``I``, ``b``) do not have the
        fitted rank (number of inputs).

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian, simulate
    >>> from connector_sim.inference.conditional_mean import regression_data
    >>> network = Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 5.0]], rank=1).sample(300, random_state=0)
    >>> kappa = simulate(network, 100, kappa0=[[0.1], [-0.1], [2.0], [-2.0]]).kappa
    >>> points, v_points, increments = regression_data(kappa, alpha=0.1)
    >>> nbar = fit_conditional_mean(network.m, points, increments)
    >>> estimate = nbar(network.m)  # E[n | m] = 2 m for this Gaussian
    >>> estimate.shape, bool(np.corrcoef(estimate[:, 0], 2 * network.m[:, 0])[0, 1] > 0.9)
    ((300, 1), True)
    """

    def __init__(self, points, v_points, weights, activation="tanh"):
        self.points = check_array(points, "points", ndim=2, dtype=np.float64)
        T, R = self.points.shape
        self.v_points = check_array(v_points, "v_points", ndim=2, dtype=np.float64, shape=(T, None))
        self.weights = check_array(weights, "weights", ndim=2, dtype=np.float64, shape=(T, R))
        self.activation = _check_builtin_activation(activation)
        # How lambda was chosen, set by fit_conditional_mean (None when built otherwise).
        self.ridge_lambda = self.ridge_scaling = self.ridge_constant = None
        self.cv_constants = self.cv_scores = None

    @property
    def rank(self):
        return self.points.shape[1]

    @property
    def n_inputs(self):
        return self.v_points.shape[1]

    @property
    def n_time_points(self):
        return self.points.shape[0]

    def __call__(self, m, I=None, b=None):
        """nbar for rows (m_i, I_i, b_i), evaluated in chunks of neurons.

        Parameters
        ----------
        m : array-like of shape (N, R)
        I : array-like of shape (N, D), optional (zero-width when D = 0)
        b : array-like of shape (N,), optional (zero)

        Returns
        -------
        ndarray of shape (N, R)
            nbar_i = sum_t W_t phi(m_i^T kappa_t + I_i^T v_t + b_i).
        """
        m = np.asarray(m)
        if m.ndim != 2 or m.shape[1] != self.rank:
            raise ValueError(f"m must have shape (N, {self.rank}). Got shape {m.shape}.")
        m = check_array(m, "m", ndim=2, dtype=np.float64)
        N = len(m)
        I = _as_2d(I, "I", N, self.n_inputs)
        b = np.zeros(N) if b is None else check_array(b, "b", ndim=1, dtype=np.float64, shape=(N,))
        out = np.empty((N, self.rank))
        chunk = max(1, _BLOCK_ELEMENTS // self.n_time_points)
        for first in range(0, N, chunk):
            block = slice(first, first + chunk)
            phi = _phi_block(self.activation, m[block], I[block], b[block], self.points, self.v_points)
            out[block] = phi.T @ self.weights
        return out

    def from_rows(self, mIb):
        """nbar for stacked rows [m, I, b] of shape (N, R + D + 1)."""
        mIb = np.asarray(mIb)
        R, D = self.rank, self.n_inputs
        if mIb.ndim != 2 or mIb.shape[1] != R + D + 1:
            raise ValueError(f"mIb must have shape (N, {R + D + 1}) = [m (R={R}), I (D={D}), b]. "
                             f"Got shape {mIb.shape}.")
        return self(mIb[:, :R], mIb[:, R:R + D], mIb[:, R + D])


#: Scalings of the ridge coefficient with the number N of regression rows (see :func:`ridge_lambda`).
RIDGE_SCALINGS = ("linear", "paper")

#: Constants c of lambda = c N searched by cross-validation (``ridge_constant="cv"``): 1e-4 .. 10, half decades.
#: The top, c = 10, gives the paper's lambda at its own setting (lambda_p = 1e-4, N = 1,000, alpha = 0.1): the
#: default never weighs the prior more than the paper does there. (Up to 100, the quick demo's cross-validation
#: picked 100 and its Connector kept 2 of the 4 attractors.)
RIDGE_CONSTANTS = tuple(float(10.0 ** (k / 2)) for k in range(-8, 3))

_DEFAULT_FOLDS = 5


def _check_ridge_scaling(ridge_scaling, owner):
    if not isinstance(ridge_scaling, str) or ridge_scaling not in RIDGE_SCALINGS:
        raise ValueError(f"The 'ridge_scaling' parameter of {owner} must be one of {list(RIDGE_SCALINGS)} "
                         f"('linear': lambda = ridge_constant * N, consistent as N grows; 'paper': lambda = "
                         f"lambda_prior * N^2 / alpha^2). Got {ridge_scaling!r} instead.")
    return ridge_scaling


def _check_ridge_constant(ridge_constant, owner, allow_cv=True):
    """A finite number > 0, or "cv" (when allowed)."""
    if allow_cv and isinstance(ridge_constant, str) and ridge_constant == "cv":
        return ridge_constant
    if isinstance(ridge_constant, numbers.Real) and not isinstance(ridge_constant, bool) \
            and math.isfinite(ridge_constant) and ridge_constant > 0:
        return float(ridge_constant)
    choices = " or 'cv' (chosen by cross-validation)" if allow_cv else ""
    error = ValueError if isinstance(ridge_constant, (str, numbers.Real)) else TypeError
    raise error(f"The 'ridge_constant' parameter of {owner} must be a finite number > 0{choices}: c of "
                f"lambda = c N. Got {ridge_constant!r} instead.")


def _check_constants(constants, owner):
    constants = np.asarray(constants, dtype=np.float64) if not isinstance(constants, str) else None
    if constants is None or constants.ndim != 1 or len(constants) < 1 or not np.all(np.isfinite(constants)) \
            or np.any(constants <= 0):
        raise ValueError(f"The 'constants' parameter of {owner} must be a non-empty 1-D sequence of finite "
                         f"numbers > 0 (the candidate c of lambda = c N). Got {constants!r} instead.")
    return constants


def ridge_lambda(n_rows, alpha, lambda_prior=1e-4, ridge=None, *, ridge_scaling="linear", ridge_constant=0.1):
    """The ridge coefficient lambda for N = ``n_rows`` regression rows (theory section 3, step 4).

    ``ridge`` if given; else ``ridge_constant * N`` (``ridge_scaling="linear"``,
    consistent as N grows) or ``lambda_prior * N^2 / alpha^2``
    (``ridge_scaling="paper"``).

    Raises
    ------
    ValueError
        For an unknown ``ridge_scaling``, a constant that is not a finite number
        > 0, or a paper-form lambda that overflows.

    Examples
    --------
    >>> ridge_lambda(1000, 0.1, ridge_constant=0.1)
    100.0
    >>> ridge_lambda(1000, 0.1, ridge_scaling="paper")  # 1e-4 * 1000^2 / 0.1^2
    10000.0
    """
    owner = "the conditional mean"
    ridge_scaling = _check_ridge_scaling(ridge_scaling, owner)
    if ridge is not None:
        return check_positive_scalar(ridge, "ridge", owner=owner)
    if ridge_scaling == "linear":
        constant = _check_ridge_constant(ridge_constant, owner, allow_cv=False)
        return float(constant * np.float64(n_rows))
    lambda_prior = check_positive_scalar(lambda_prior, "lambda_prior", owner=owner)
    # (N / alpha)^2 in float64: alpha**2 underflows to 0 (a ZeroDivisionError) for alpha < 1e-162.
    with np.errstate(over="ignore", divide="ignore"):
        lam = float(lambda_prior * np.square(np.float64(n_rows) / np.float64(alpha)))
    if not np.isfinite(lam):
        raise ValueError(f"The ridge coefficient lambda_prior N^2 / alpha^2 overflows for N = {n_rows}, alpha = "
                         f"{alpha!r}, lambda_prior = {lambda_prior!r}. alpha is dt / tau of the trajectories "
                         "(0.1 is usual); give it, or set ridge= explicitly.")
    return lam


def _cholesky(matrix, lam):
    """scipy's Cholesky factor of the regularised normal matrix, or a clear error when it is not positive definite."""
    from scipy.linalg import cho_factor

    try:
        return cho_factor(matrix, lower=True)
    except np.linalg.LinAlgError as exc:  # scipy.linalg.LinAlgError is numpy's
        raise ValueError(f"The ridge regression of the conditional mean is numerically singular (lambda = {lam:.3g} is "
                         "too small for its normal matrix). Raise ridge_constant (or lambda_prior with "
                         "ridge_scaling='paper') or give a larger ridge=.") from exc


def _check_regression(m, points, increments, I, b, v_points, activation):
    """The validated arrays of a regression: m (N, R), points and increments (T, R), I (N, D), b (N,), v_points."""
    activation = _check_builtin_activation(activation)
    points = np.asarray(points)
    if points.ndim != 2:
        raise ValueError(f"points must have shape (T, R). Got shape {points.shape}.")
    points = check_array(points, "points", ndim=2, dtype=np.float64)
    T, R = points.shape
    if T < 1:
        raise ValueError("points must hold at least one latent time point. Got none.")
    increments = check_array(increments, "increments", ndim=2, dtype=np.float64, shape=(T, R))
    m = np.asarray(m)
    if m.ndim != 2 or m.shape[1] != R:
        raise ValueError(f"m must have shape (N, {R}): the latents have rank {R}. Got shape {m.shape}.")
    m = check_array(m, "m", ndim=2, dtype=np.float64)
    N = len(m)
    if N < 1:
        raise ValueError("m must hold at least one row. Got none.")
    if v_points is None:
        v_points = np.zeros((T, 0 if I is None else np.shape(I)[1]))
        if v_points.shape[1]:
            raise ValueError("I has inputs (D > 0) but v_points was not given: pass the filtered inputs.")
    v_points = check_array(v_points, "v_points", ndim=2, dtype=np.float64, shape=(T, None))
    D = v_points.shape[1]
    I = _as_2d(I, "I", N, D)
    b = np.zeros(N) if b is None else check_array(b, "b", ndim=1, dtype=np.float64, shape=(N,))
    return m, points, increments, I, b, v_points, activation


def _folds(groups, n_points, n_folds, random_state):
    """(train, test) index arrays over the points: k-fold over the groups (trials), or time blocks of one group."""
    from .cross_validation import kfold_trials

    n_folds = check_int(n_folds, "n_folds", minimum=2, owner="ridge_cv_scores")
    if groups is None:
        groups = np.zeros(n_points, np.int64)
    groups = np.asarray(groups)
    if groups.shape != (n_points,):
        raise ValueError(f"groups must have shape ({n_points},): one trial label per time point. Got shape "
                         f"{groups.shape}.")
    labels, index = np.unique(groups, return_inverse=True)
    if len(labels) == 1:
        # One trial: contiguous blocks of time points stand in for trials.
        if n_points < n_folds:
            raise ValueError(f"Cross-validating the ridge constant needs at least n_folds = {n_folds} time points. "
                             f"Got {n_points}: give ridge_constant a number instead.")
        index = np.arange(n_points) * n_folds // n_points
        labels = np.arange(n_folds)
    splits = kfold_trials(len(labels), min(n_folds, len(labels)), random_state=random_state)
    return [(np.flatnonzero(np.isin(index, train)), np.flatnonzero(np.isin(index, test))) for train, test in splits]


def _gram(activation, m, I, b, points, v_points):
    """Phi Phi^T (T x T) over the rows (m, I, b), accumulated over chunks of rows."""
    T = len(points)
    gram = np.zeros((T, T))
    chunk = max(1, _BLOCK_ELEMENTS // T)
    for first in range(0, len(m), chunk):
        block = slice(first, first + chunk)
        phi = _phi_block(activation, m[block], I[block], b[block], points, v_points)
        gram += phi @ phi.T
    return gram


def _held_out_errors(fit_rows, eval_rows, points, v_points, increments, folds, constants, activation, fit_gram=None):
    """(n_folds, n_constants) held-out squared errors: nbar fitted on ``fit_rows``, the velocity from ``eval_rows``.

    ``fit_gram``: Phi Phi^T of ``fit_rows`` when the caller has it already (dual form only).
    """
    N, n_eval = len(fit_rows[0]), len(eval_rows[0])
    T = len(points)
    eval_gram = _gram(activation, *eval_rows, points, v_points) / n_eval
    dual = N > T
    if dual:
        if fit_gram is None:
            fit_gram = _gram(activation, *fit_rows, points, v_points)
    else:
        phi_all = _phi_block(activation, *fit_rows, points, v_points)  # (T, N), N <= T
    errors = np.zeros((len(folds), len(constants)))
    for k, (train, test) in enumerate(folds):
        g = increments[train]
        if dual:
            # W(c) = (K + c N I)^{-1} N g = U (S / N + c)^{-1} U^T g.
            values, vectors = np.linalg.eigh(fit_gram[np.ix_(train, train)] / N)
            projected = vectors.T @ g
        else:
            # n(c) = (Phi^T Phi + c N I)^{-1} Phi^T N g and W(c) = (N g - Phi n(c)) / (c N)
            #      = (g - P (S / N + c)^{-1} h) / c with Phi^T Phi = V S V^T, P = Phi V, h = V^T Phi^T g / N.
            phi = phi_all[train]
            values, vectors = np.linalg.eigh(phi.T @ phi / N)
            mixing = phi @ vectors
            projected = mixing.T @ g / N
        values = np.clip(values, 0.0, None)
        cross = eval_gram[np.ix_(test, train)]  # predicted_t = (1/N') sum_j phi_tj nbar_j = cross @ W
        for j, constant in enumerate(constants):
            if dual:
                weights = vectors @ (projected / (values + constant)[:, None])
            else:
                weights = (g - mixing @ (projected / (values + constant)[:, None])) / constant
            errors[k, j] = np.mean((cross @ weights - increments[test]) ** 2)
    return errors


def ridge_cv_scores(m, points, increments, *, groups=None, I=None, b=None, v_points=None, m_eval=None, I_eval=None,
                    b_eval=None, activation="tanh", constants=RIDGE_CONSTANTS, n_folds=_DEFAULT_FOLDS,
                    random_state=0):
    """Held-out latent-velocity error of the ridge conditional mean for each c of lambda = c N.

    For each fold (k-fold over trials, :func:`~connector_sim.inference.kfold_trials`),
    nbar is fitted on the rows ``m`` at the training trials' time points, and
    the held-out increments are predicted by the mean field of *other* rows
    (``m_eval``: what a network sampled from the fit would do)::

        predicted_t = (1/N') sum_j nbar(m'_j, I'_j, b'_j) phi(m'_j^T kappa_t + I'_j^T v_t + b'_j)
        score(c)    = mean over folds of the mean over held-out t and r of (predicted - increments)^2

    the squared error of the latent velocity (theory eq. 3) in units of
    1 / tau^2. Evaluating on the fitting rows themselves would not see the
    overfitting a small c allows: with N free n_i the regression reproduces
    the increments at those rows (held-out trials included) while nbar is
    wild between them. Without ``m_eval`` the rows are split in two halves
    (even and odd indices), each fitted with lambda = c N / 2 and evaluated
    on the other, the two errors averaged. One eigendecomposition per fold
    serves every c.

    Parameters
    ----------
    m, points, increments, I, b, v_points, activation
        As in :func:`fit_conditional_mean`.
    groups : array-like of shape (T,), optional
        Trial label of each time point; folds never split a trial. Default (or
        a single label): ``n_folds`` contiguous blocks of time points.
    m_eval, I_eval, b_eval : array-like, optional
        Fresh rows (e.g. another draw of the marginal) for the prediction.
    constants : sequence of float, default=RIDGE_CONSTANTS
        The candidate c (> 0); default 1e-4 .. 10 in half decades.
    n_folds : int, default=5
        At most the number of trials (fewer trials: one fold per trial).
    random_state : None, int or numpy.random.Generator, default=0
        Shuffles the trials into folds.

    Returns
    -------
    scores : ndarray of shape (len(constants),)
        Mean held-out squared error per constant; the smallest is the choice.

    Raises
    ------
    ValueError
        As :func:`fit_conditional_mean`, or for bad ``groups`` / ``constants``
        / evaluation rows, or fewer than two rows to split.
    """
    return _ridge_cv_scores(m, points, increments, groups, I, b, v_points, m_eval, I_eval, b_eval, activation,
                            constants, n_folds, random_state)


def _ridge_cv_scores(m, points, increments, groups, I, b, v_points, m_eval, I_eval, b_eval, activation, constants,
                     n_folds, random_state, fit_gram=None):
    """:func:`ridge_cv_scores`; ``fit_gram`` is Phi Phi^T of the rows ``m`` when the caller has computed it."""
    m, points, increments, I, b, v_points, activation = _check_regression(m, points, increments, I, b, v_points,
                                                                          activation)
    constants = _check_constants(constants, "ridge_cv_scores")
    folds = _folds(groups, len(points), n_folds, random_state)
    if m_eval is None:
        if len(m) < 2:
            raise ValueError(f"ridge_cv_scores needs at least two rows to split into fitting and evaluation halves, "
                             f"or m_eval. Got {len(m)}.")
        halves = [(m[k::2], I[k::2], b[k::2]) for k in (0, 1)]
        return np.mean([_held_out_errors(halves[k], halves[1 - k], points, v_points, increments, folds, constants,
                                         activation) for k in (0, 1)], axis=(0, 1))
    m_eval, _, _, I_eval, b_eval, _, _ = _check_regression(m_eval, points, increments, I_eval, b_eval, v_points,
                                                           activation)
    return _held_out_errors((m, I, b), (m_eval, I_eval, b_eval), points, v_points, increments, folds, constants,
                            activation, fit_gram=fit_gram).mean(axis=0)


def fit_conditional_mean(m, points, increments, *, I=None, b=None, v_points=None, alpha=0.1, lambda_prior=1e-4,
                         ridge=None, ridge_scaling="linear", ridge_constant="cv", groups=None, m_eval=None,
                         I_eval=None, b_eval=None, activation="tanh", form="auto", return_n=False, random_state=0):
    """Ridge regression of the left factors on the latent increments; returns nbar as a function.

    ::

        W = (Phi Phi^T + lambda I_T)^{-1} Delta,   Delta = N * increments
        nbar(m, I, b) = sum_t W_t phi(m^T kappa_t + I^T v_t + b)
        lambda = c N                  (ridge_scaling="linear", default)
               = lambda_p N^2 / alpha^2 (ridge_scaling="paper")
               = ``ridge``            (when given)

    With lambda = c N the error of nbar falls as N grows (theory section 3,
    step 4); c is chosen by cross-validation over trials by default.

    Parameters
    ----------
    m : array-like of shape (N, R)
        Sampled right factors (e.g. from the marginal CNF), N rows; quasi-random
        ones (:func:`~connector_sim.inference.connector.sobol_normal` through the
        CNF) make nbar far less noisy than independent draws.
    points : array-like of shape (T, R)
        Latent points kappa_t (from :func:`regression_data`).
    increments : array-like of shape (T, R)
        (kappa_{t+1} - (1 - alpha) kappa_t) / alpha at those points.
    I : array-like of shape (N, D), optional
    b : array-like of shape (N,), optional
    v_points : array-like of shape (T, D), optional
        Filtered inputs at the points (required when D > 0).
    alpha : float, default=0.1
        Used in the paper form lambda = lambda_p N^2 / alpha^2.
    lambda_prior : float, default=1e-4
        lambda_p of the paper form (paper: 1e-4).
    ridge : float, optional
        lambda itself, overriding the scaling.
    ridge_scaling : {"linear", "paper"}, default="linear"
        How lambda scales with the rows: c N (consistent) or the paper's
        lambda_p N^2 / alpha^2 (shrinks nbar more as N grows).
    ridge_constant : float or "cv", default="cv"
        c of the linear scaling; "cv" picks it from
        :data:`RIDGE_CONSTANTS` by :func:`ridge_cv_scores`.
    groups : array-like of shape (T,), optional
        Trial label of each point, for the cross-validation (default:
        contiguous blocks of points).
    m_eval, I_eval, b_eval : array-like, optional
        Fresh rows on which the cross-validation evaluates the held-out
        velocity (default: the rows split in halves), see :func:`ridge_cv_scores`.
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}, default="tanh"
    form : {"auto", "dual", "primal"}, default="auto"
        "auto": dual when N > T, else primal. Both give the same W.
    return_n : bool, default=False
        Also return Nm_hat = Phi^T W, the estimated left factors of the N rows.
    random_state : None, int or numpy.random.Generator, default=0
        Shuffles the trials into cross-validation folds.

    Returns
    -------
    ConditionalMean
        With the choice in ``ridge_lambda``, ``ridge_scaling``,
        ``ridge_constant`` and, when cross-validated, ``cv_constants`` and
        ``cv_scores``.
    n_hat : ndarray of shape (N, R), only if ``return_n``

    Raises
    ------
    ValueError
        If ``points`` / ``increments`` are not of shape (T, R) with T >= 1, ``m``
        is not (N, R) with N >= 1, inputs come without ``v_points``, an array
        does not match the others, ``activation`` / ``form`` / ``ridge_scaling``
        is unknown, or a constant is not a finite number > 0.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian, simulate
    >>> from connector_sim.inference.conditional_mean import regression_data
    >>> network = Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 5.0]], rank=1).sample(300, random_state=0)
    >>> kappa = simulate(network, 100, kappa0=[[0.1], [-0.1], [2.0], [-2.0]]).kappa
    >>> points, v_points, increments = regression_data(kappa, alpha=0.1)
    >>> nbar = fit_conditional_mean(network.m, points, increments, groups=np.repeat(np.arange(4), 100))
    >>> estimate = nbar(network.m)  # E[n | m] = 2 m for this Gaussian
    >>> estimate.shape, bool(np.corrcoef(estimate[:, 0], 2 * network.m[:, 0])[0, 1] > 0.9)
    ((300, 1), True)
    >>> bool(nbar.ridge_constant in nbar.cv_constants), nbar.ridge_lambda == nbar.ridge_constant * 300
    (True, True)
    """
    from scipy.linalg import cho_solve

    m, points, increments, I, b, v_points, activation = _check_regression(m, points, increments, I, b, v_points,
                                                                          activation)
    T, R = points.shape
    N = len(m)
    alpha = check_positive_scalar(alpha, "alpha", owner="fit_conditional_mean")
    ridge_scaling = _check_ridge_scaling(ridge_scaling, "fit_conditional_mean")
    if form not in ("auto", "dual", "primal"):
        raise ValueError(f"form must be 'auto', 'dual' or 'primal'. Got {form!r}.")
    if form == "auto":
        form = "dual" if N > T else "primal"
    cv_constants = cv_scores = gram = None
    constant = _check_ridge_constant(ridge_constant, "fit_conditional_mean")  # checked whatever the scaling
    if ridge is None and ridge_scaling == "linear":
        if constant == "cv":
            cv_constants = np.asarray(RIDGE_CONSTANTS)
            if form == "dual":  # one Gram matrix for the CV and the fit
                gram = _gram(activation, m, I, b, points, v_points)
            cv_scores = _ridge_cv_scores(m, points, increments, groups, I, b, v_points, m_eval, I_eval, b_eval,
                                         activation, RIDGE_CONSTANTS, _DEFAULT_FOLDS, random_state,
                                         fit_gram=gram if m_eval is not None else None)
            constant = float(cv_constants[np.argmin(cv_scores)])
    lam = ridge_lambda(N, alpha, lambda_prior, ridge, ridge_scaling=ridge_scaling,
                       ridge_constant=0.1 if constant == "cv" else constant)

    delta = N * increments
    if form == "dual":
        if gram is None:
            gram = _gram(activation, m, I, b, points, v_points)
        gram[np.diag_indices(T)] += lam
        weights = cho_solve(_cholesky(gram, lam), delta)
        n_hat = None
    else:
        phi = _phi_block(activation, m, I, b, points, v_points)  # (T, N), N <= T
        normal = phi.T @ phi
        normal[np.diag_indices(N)] += lam
        n_hat = cho_solve(_cholesky(normal, lam), phi.T @ delta)
        weights = (delta - phi @ n_hat) / lam
    model = ConditionalMean(points, v_points, weights, activation)
    model.ridge_lambda = lam
    model.ridge_scaling = "fixed" if ridge is not None else ridge_scaling
    model.ridge_constant = constant if ridge is None and ridge_scaling == "linear" else (
        None if ridge is not None else float(lambda_prior))
    model.cv_constants, model.cv_scores = cv_constants, cv_scores
    if not return_n:
        return model
    if n_hat is None:
        n_hat = model(m, I, b)
    return model, n_hat


# ---------------------------------------------------------------------- maximum entropy


def conditional_covariance(sigma, rank):
    """The conditional covariance Sigma of n given (m, I, b), as an (R, R) matrix.

    Parameters
    ----------
    sigma : float, array-like of shape (R,) or (R, R)
        A scalar s gives s I (isotropic variance s); a vector the diagonal;
        a matrix is used as is (symmetric positive semi-definite).
    rank : int

    Returns
    -------
    cov : ndarray of shape (R, R)
    factor : ndarray of shape (R, R)
        L with L L^T = cov (works for singular covariances).
    """
    if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
        value = float(sigma)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"A scalar conditional variance must be finite and >= 0. Got {sigma!r}.")
        cov = value * np.eye(rank)
    else:
        array = np.asarray(sigma)
        if array.ndim == 1:
            diagonal = check_array(array, "n_covariance", ndim=1, dtype=np.float64, shape=(rank,))
            if np.any(diagonal < 0):
                raise ValueError(f"A diagonal conditional covariance must be >= 0. Got {diagonal}.")
            cov = np.diag(diagonal)
        elif array.ndim == 2:
            cov = check_array(array, "n_covariance", ndim=2, dtype=np.float64, shape=(rank, rank))
            if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
                raise ValueError(f"The conditional covariance must be symmetric. Got max |C - C^T| = "
                                 f"{np.max(np.abs(cov - cov.T)):.3g}.")
            cov = 0.5 * (cov + cov.T)
        else:
            raise ValueError(f"The conditional covariance must be a scalar, a vector of shape ({rank},) or a "
                             f"matrix of shape ({rank}, {rank}). Got shape {array.shape}.")
    values, vectors = np.linalg.eigh(cov)
    if values.min() < -1e-10 * max(1.0, float(np.abs(values).max())):
        raise ValueError(f"The conditional covariance must be positive semi-definite. Got smallest eigenvalue "
                         f"{values.min():.3g}.")
    return cov, vectors * np.sqrt(np.clip(values, 0.0, None))


def sample_conditional(nbar, factor, random_state=None):
    """n = nbar + L xi, xi ~ N(0, I): draws from the maximum-entropy N(nbar, L L^T).

    Parameters
    ----------
    nbar : ndarray of shape (N, R)
    factor : ndarray of shape (R, R)
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    ndarray of shape (N, R)
    """
    rng = check_random_state(random_state)
    return nbar + rng.standard_normal(nbar.shape) @ factor.T


def gaussian_log_prob(n, nbar, cov):
    """log N(n; nbar, cov) per row; requires a non-singular cov.

    ::

        log p = -1/2 (n - nbar)^T cov^{-1} (n - nbar) - 1/2 log det(2 pi cov)
    """
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0 or not np.isfinite(logdet) or np.linalg.cond(cov) > 1e12:
        raise ValueError("log_prob needs a non-singular conditional covariance of n; the density of n given "
                         "(m, I, b) is degenerate for this one. Use a positive definite n_covariance.")
    diff = n - nbar
    solved = np.linalg.solve(cov, diff.T).T
    R = cov.shape[0]
    return -0.5 * np.sum(diff * solved, axis=1) - 0.5 * (R * math.log(2 * math.pi) + logdet)


__all__ = ["RIDGE_CONSTANTS", "RIDGE_SCALINGS", "ConditionalMean", "conditional_covariance", "fit_conditional_mean",
           "gaussian_log_prob", "regression_data", "ridge_cv_scores", "ridge_lambda", "sample_conditional"]
