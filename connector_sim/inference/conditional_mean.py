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

lambda comes from the Bayesian reading of theory section 3, step 4 (prior rows
n ~ N(0, I / lambda_p), unit observation noise on the latent increments):
lambda = lambda_p N^2 / alpha^2; the paper uses lambda_p = 1e-4, alpha = 0.1
and N = 1,000 sampled rows. Note that with lambda_p fixed, lambda / N grows
with N, so the prior dominates for very large N: an absolute ``ridge``
(lambda itself) can be given instead.

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

from .._validation import check_array, check_positive_scalar, check_random_state
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


def ridge_lambda(n_rows, alpha, lambda_prior=1e-4, ridge=None):
    """The ridge coefficient lambda: ``ridge`` if given, else lambda_p N^2 / alpha^2 (theory section 3, step 4)."""
    if ridge is not None:
        return check_positive_scalar(ridge, "ridge", owner="the conditional mean")
    lambda_prior = check_positive_scalar(lambda_prior, "lambda_prior", owner="the conditional mean")
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
                         "too small for its normal matrix). Raise lambda_prior (1e-4 is usual) or give a larger "
                         "ridge=.") from exc


def fit_conditional_mean(m, points, increments, *, I=None, b=None, v_points=None, alpha=0.1, lambda_prior=1e-4,
                         ridge=None, activation="tanh", form="auto", return_n=False):
    """Ridge regression of the left factors on the latent increments; returns nbar as a function.

    ::

        W = (Phi Phi^T + lambda I_T)^{-1} Delta,   Delta = N * increments
        nbar(m, I, b) = sum_t W_t phi(m^T kappa_t + I^T v_t + b)
        lambda = lambda_p N^2 / alpha^2   (or ``ridge``)

    Parameters
    ----------
    m : array-like of shape (N, R)
        Sampled right factors (e.g. from the marginal CNF), N rows.
    points : array-like of shape (T, R)
        Latent points kappa_t (from :func:`regression_data`).
    increments : array-like of shape (T, R)
        (kappa_{t+1} - (1 - alpha) kappa_t) / alpha at those points.
    I : array-like of shape (N, D), optional
    b : array-like of shape (N,), optional
    v_points : array-like of shape (T, D), optional
        Filtered inputs at the points (required when D > 0).
    alpha : float, default=0.1
        Used in lambda = lambda_p N^2 / alpha^2.
    lambda_prior : float, default=1e-4
        lambda_p, the prior precision of the rows of Nm (paper: 1e-4).
    ridge : float, optional
        lambda itself, overriding ``lambda_prior``.
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}, default="tanh"
    form : {"auto", "dual", "primal"}, default="auto"
        "auto": dual when N > T, else primal. Both give the same W.
    return_n : bool, default=False
        Also return Nm_hat = Phi^T W, the estimated left factors of the N rows.

    Returns
    -------
    ConditionalMean
    n_hat : ndarray of shape (N, R), only if ``return_n``

    Raises
    ------
    ValueError
        If ``points`` / ``increments`` are not of shape (T, R) with T >= 1, ``m``
        is not (N, R) with N >= 1, inputs come without ``v_points``, an array
        does not match the others, or ``activation`` / ``form`` is unknown.

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
    from scipy.linalg import cho_factor, cho_solve

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
    alpha = check_positive_scalar(alpha, "alpha", owner="fit_conditional_mean")
    lam = ridge_lambda(N, alpha, lambda_prior, ridge)
    if form not in ("auto", "dual", "primal"):
        raise ValueError(f"form must be 'auto', 'dual' or 'primal'. Got {form!r}.")
    if form == "auto":
        form = "dual" if N > T else "primal"

    delta = N * increments
    chunk = max(1, _BLOCK_ELEMENTS // T)
    if form == "dual":
        gram = np.zeros((T, T))
        for first in range(0, N, chunk):
            block = slice(first, first + chunk)
            phi = _phi_block(activation, m[block], I[block], b[block], points, v_points)
            gram += phi @ phi.T
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


__all__ = ["ConditionalMean", "conditional_covariance", "fit_conditional_mean", "gaussian_log_prob",
           "regression_data", "ridge_lambda", "sample_conditional"]
