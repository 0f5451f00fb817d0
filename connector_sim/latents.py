"""Latents of a fitted low-rank RNN, their identifiability and their alignment (theory section 3, step 2).

Without private noise, a low-rank RNN started on x_0 = m kappa_0 + I v_0 + b
stays on (theory eq. 2-3)::

    x_t = m kappa_t + I v_t + b,    kappa_t = (m^T m)^{-1} m^T (x_t - I v_t - b)

The latents are identifiable only up to an invertible linear map A: the
network with ``m' = m A^{-1}`` (row-wise m'_i = A^{-T} m_i), ``n' = n A^T``
(n'_i = A n_i), I and b unchanged has exactly the same potentials x_t, and its
latents are kappa'_t = A kappa_t. This holds when the latents span the
latent space and no linear combination of them is constant in time (the
identifiability conditions of the Connector paper, section 3); otherwise
some direction of kappa, and the matching column of m, is not determined
by the data and :func:`check_identifiability` warns.

Pure NumPy: importing this module does not import torch.
"""

import warnings
from dataclasses import dataclass

import numpy as np

from ._validation import check_array, check_positive_scalar
from .network import LowRankRNN


class IdentifiabilityWarning(UserWarning):
    """The latents do not satisfy the identifiability conditions."""


def _as_samples(kappa, name):
    """Stack (..., R) latents into (n_samples, R), float64, finite."""
    kappa = np.asarray(kappa)
    if kappa.ndim < 2:
        raise ValueError(
            f"{name} must have shape (n_samples, R) or (n_trials, n_times, R). Got shape {kappa.shape}."
        )
    kappa = check_array(kappa, name, ndim=kappa.ndim, dtype=np.float64)
    return kappa.reshape(-1, kappa.shape[-1])


def loadings(network):
    """The loadings of a network as float64 arrays.

    Parameters
    ----------
    network : LowRankRNN

    Returns
    -------
    dict
        ``m`` (N, R), ``n`` (N, R), ``I`` (N, D) and ``b`` (N,), copies in float64.

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.sparse import rank_one_gaussian
    >>> network = rank_one_gaussian(100, 1.0, 0.5, random_state=0)
    >>> params = loadings(network)
    >>> sorted(params), params["m"].shape, params["I"].shape
    (['I', 'b', 'm', 'n'], (100, 1), (100, 0))
    """
    if not isinstance(network, LowRankRNN):
        raise TypeError(f"network must be a LowRankRNN. Got {type(network).__name__}.")
    return {
        "m": network.m.astype(np.float64),
        "n": network.n.astype(np.float64),
        "I": network.I.astype(np.float64),
        "b": network.b.astype(np.float64),
    }


def filtered_inputs(inputs, alpha, v0=None):
    """Low-pass filtered inputs v_t of theory eq. 3.

    ::

        v_0 = v0 (default 0),   v_{t+1} = (1 - alpha) v_t + alpha u_t

    Parameters
    ----------
    inputs : array-like of shape (n_trials, n_times, D)
        u_t, aligned with the frames: u_t acts on x_{t+1}.
    alpha : float
        dt / tau.
    v0 : array-like of shape (D,) or (n_trials, D), optional

    Returns
    -------
    ndarray of shape (n_trials, n_times, D)
        v_t for t = 0 .. n_times - 1 (the same frames as the inputs).

    Raises
    ------
    ValueError
        If ``inputs`` is not of shape (n_trials, T, D), ``alpha`` is not
        positive, or ``v0`` has the wrong shape.
    TypeError
        If ``alpha`` is not a number.

    Examples
    --------
    >>> import numpy as np
    >>> filtered_inputs(np.ones((2, 3, 1)), alpha=0.5)[0, :, 0]
    array([0.  , 0.5 , 0.75])
    """
    inputs = check_array(inputs, "inputs", ndim=3, dtype=np.float64)
    alpha = check_positive_scalar(alpha, "alpha", owner="filtered_inputs")
    n_trials, n_times, n_inputs = inputs.shape
    v = np.empty_like(inputs)
    if n_times == 0:
        return v
    if v0 is None:
        v[:, 0] = 0.0
    else:
        v0 = np.asarray(v0, dtype=np.float64)
        if v0.shape not in ((n_inputs,), (n_trials, n_inputs)):
            raise ValueError(f"v0 must have shape ({n_inputs},) or ({n_trials}, {n_inputs}). Got shape {v0.shape}.")
        v[:, 0] = v0
    for t in range(n_times - 1):
        v[:, t + 1] = (1 - alpha) * v[:, t] + alpha * inputs[:, t]
    return v


def project_latents(network, potentials, v=None):
    """Latents of potentials x by least squares on the columns of m.

    ::

        kappa_t = argmin_k |x_t - I v_t - b - m k|^2 = (m^T m)^{-1} m^T (x_t - I v_t - b)

    Exact when x_t lies on the latent subspace (noise-free network started
    on it); otherwise the least-squares latents of the part of x in span(m).

    Parameters
    ----------
    network : LowRankRNN
    potentials : array-like of shape (..., N)
    v : array-like of shape (..., D), optional
        Filtered inputs at the same frames (see :func:`filtered_inputs`).
        Required when the network has inputs.

    Returns
    -------
    ndarray of shape (..., R)

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN.
    ValueError
        If ``potentials`` do not end in N, or ``v`` does not match them.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.sparse import rank_one_gaussian
    >>> network = rank_one_gaussian(100, 1.0, 0.5, random_state=0)
    >>> project_latents(network, 2.0 * network.m[:, 0])
    array([2.])
    """
    params = loadings(network)
    x = np.asarray(potentials)
    if x.ndim < 1 or x.shape[-1] != network.n_neurons:
        raise ValueError(
            f"potentials must have shape (..., {network.n_neurons}) (one value per neuron). Got shape {x.shape}."
        )
    x = check_array(x, "potentials", ndim=x.ndim, dtype=np.float64) - params["b"]
    if network.n_inputs:
        if v is None:
            raise ValueError(
                f"The network has {network.n_inputs} input(s): give the filtered inputs v of shape "
                f"{x.shape[:-1] + (network.n_inputs,)} (connector_sim.latents.filtered_inputs)."
            )
        v = check_array(v, "v", ndim=x.ndim, dtype=np.float64, shape=x.shape[:-1] + (network.n_inputs,))
        x = x - v @ params["I"].T
    flat = x.reshape(-1, network.n_neurons)
    kappa = np.linalg.lstsq(params["m"], flat.T, rcond=None)[0].T
    return kappa.reshape(x.shape[:-1] + (network.rank,))


@dataclass
class Identifiability:
    """Result of :func:`check_identifiability`.

    Attributes
    ----------
    spans : bool
        The latent samples span R^R: the uncentred (n_samples x R) matrix
        has rank R (relative singular-value threshold ``tol``).
    varies : bool
        No linear combination c^T kappa_t is constant over the samples: the
        centred matrix has rank R.
    singular_values : ndarray of shape (R,)
        Of the uncentred matrix, largest first.
    centred_singular_values : ndarray of shape (R,)
        Of the centred matrix, largest first.
    constant_directions : ndarray of shape (R, k)
        Unit vectors c with c^T kappa_t (nearly) constant; k = 0 when ``varies``.
    """

    spans: bool
    varies: bool
    singular_values: np.ndarray
    centred_singular_values: np.ndarray
    constant_directions: np.ndarray

    @property
    def identifiable(self):
        return self.spans and self.varies


def check_identifiability(kappa, *, tol=1e-6, warn=True):
    """Check the identifiability conditions on latent samples.

    The latents are identifiable up to an invertible linear map when
    (i) they span the latent space, rank [kappa_1 ... kappa_T] = R, and
    (ii) no combination is constant in time: c^T kappa_t = const for all t
    only for c = 0, i.e. rank [kappa_1 - kbar ... kappa_T - kbar] = R.
    Numerically, a singular value below ``tol`` times the largest counts as
    zero. (ii) implies (i).

    Parameters
    ----------
    kappa : array-like of shape (n_samples, R) or (n_trials, n_times, R)
    tol : float, default=1e-6
        Relative singular-value threshold.
    warn : bool, default=True
        Emit an :class:`IdentifiabilityWarning` when a condition fails.

    Returns
    -------
    Identifiability

    Raises
    ------
    ValueError
        If ``kappa`` has the wrong shape or fewer than 2 samples, or ``tol`` is
        not positive.

    Examples
    --------
    >>> import numpy as np
    >>> result = check_identifiability(np.random.default_rng(0).normal(size=(50, 2)))
    >>> result.spans, result.varies
    (True, True)
    >>> check_identifiability(np.ones((10, 2)), warn=False).varies  # constant latents
    False
    """
    samples = _as_samples(kappa, "kappa")
    tol = check_positive_scalar(tol, "tol", owner="check_identifiability")
    rank = samples.shape[1]
    if samples.shape[0] < 2:
        raise ValueError(f"kappa must hold at least 2 samples to check identifiability. Got {samples.shape[0]}.")
    singular = np.linalg.svd(samples, compute_uv=False)
    _, centred_singular, vt = np.linalg.svd(samples - samples.mean(axis=0), full_matrices=True)
    centred_singular = np.concatenate([centred_singular, np.zeros(rank - len(centred_singular))])
    scale = max(singular[0], np.finfo(float).tiny)
    spans = bool(np.all(singular > tol * scale))
    flat = centred_singular <= tol * scale
    varies = not flat.any()
    result = Identifiability(spans, varies, singular, centred_singular, vt[flat].T)
    if warn and not spans:
        warnings.warn(
            f"The latents do not span the {rank}-dimensional latent space (singular values {singular}): "
            "some column of m is not determined by the data. Use a lower rank or more varied trials "
            "(other initial conditions or inputs).",
            IdentifiabilityWarning,
            stacklevel=2,
        )
    elif warn and not varies:
        warnings.warn(
            f"{int(flat.sum())} linear combination(s) of the latents are constant in time (directions "
            f"{vt[flat].tolist()}): along them the latents trade off with the bias b, and the latents are "
            "not identifiable up to a linear map. Use more varied trials or a lower rank.",
            IdentifiabilityWarning,
            stacklevel=2,
        )
    return result


def r2_score(target, prediction, *, multioutput="variance_weighted"):
    """Coefficient of determination of ``prediction`` for ``target``.

    ::

        R^2 = 1 - sum (y - yhat)^2 / sum (y - ybar)^2

    with ybar the mean of each output over the samples.

    Parameters
    ----------
    target, prediction : array-like of shape (..., n_outputs)
        Leading axes are stacked into samples.
    multioutput : {"variance_weighted", "raw_values"}, default="variance_weighted"
        "variance_weighted" pools the sums over outputs (one number);
        "raw_values" gives one R^2 per output.

    Returns
    -------
    float or ndarray of shape (n_outputs,)

    Raises
    ------
    ValueError
        If ``target`` and ``prediction`` differ in shape or are not of shape
        (n_samples, R) or (n_trials, n_times, R), or ``multioutput`` is unknown.

    Examples
    --------
    >>> import numpy as np
    >>> r2_score(np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [2.0], [4.0]]))
    0.5
    """
    y = _as_samples(target, "target")
    yhat = _as_samples(prediction, "prediction")
    if y.shape != yhat.shape:
        raise ValueError(f"target and prediction must have the same shape. Got {y.shape} and {yhat.shape}.")
    residual = ((y - yhat) ** 2).sum(axis=0)
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    if multioutput == "raw_values":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, 1.0 - residual / np.where(total > 0, total, 1.0),
                            np.where(residual == 0, 1.0, -np.inf))
    if multioutput != "variance_weighted":
        raise ValueError(f"multioutput must be 'variance_weighted' or 'raw_values'. Got {multioutput!r}.")
    if total.sum() == 0:
        return 1.0 if residual.sum() == 0 else -np.inf
    return float(1.0 - residual.sum() / total.sum())


@dataclass
class Alignment:
    """Least-squares map from fitted latents to reference latents.

    ``kappa_ref ~= kappa_fit @ A.T + offset`` (offset 0 for a linear alignment).

    Attributes
    ----------
    A : ndarray of shape (R_ref, R_fit)
    offset : ndarray of shape (R_ref,)
    r2 : float
        Variance-weighted R^2 of the aligned latents for the reference.
    r2_per_dim : ndarray of shape (R_ref,)
    affine : bool
    """

    A: np.ndarray
    offset: np.ndarray
    r2: float
    r2_per_dim: np.ndarray
    affine: bool

    def transform(self, kappa):
        """Aligned latents ``kappa @ A.T + offset``, shape (..., R_ref)."""
        kappa = np.asarray(kappa, dtype=np.float64)
        if kappa.shape[-1] != self.A.shape[1]:
            raise ValueError(f"kappa must have shape (..., {self.A.shape[1]}). Got shape {kappa.shape}.")
        return kappa @ self.A.T + self.offset

    def transform_network(self, network, *, absorb_offset=False):
        """The network whose latents are the aligned ones (see :func:`transform_network`)."""
        return transform_network(network, self.A, offset=self.offset if absorb_offset else None)


def align_latents(kappa_fit, kappa_ref, *, affine=False):
    """Align fitted latents to reference latents by least squares.

    Linear: ``A = argmin_A sum_t |kappa_ref_t - A kappa_fit_t|^2``.
    Affine: ``(A, c) = argmin sum_t |kappa_ref_t - A kappa_fit_t - c|^2``.

    Offset handling. A low-rank RNN's latents are identified up to a linear
    map only: x_t = m kappa_t + I v_t + b pins their origin through b, and a
    shift kappa + c is not a symmetry of the dynamics (it would need a
    constant drive alpha c in the latent recursion). The affine fit is for
    comparing latents with a reference whose origin is arbitrary (a state
    space model's, or a network with another bias); its offset is reported
    and applied by :meth:`Alignment.transform`, while
    :meth:`Alignment.transform_network` applies A only unless asked to
    absorb the offset into the bias (see :func:`transform_network`).

    Parameters
    ----------
    kappa_fit : array-like of shape (n_samples, R_fit) or (n_trials, n_times, R_fit)
    kappa_ref : array-like of the same leading shape, last axis R_ref
    affine : bool, default=False

    Returns
    -------
    Alignment

    Raises
    ------
    ValueError
        If the latents have the wrong shape or different numbers of samples.

    Examples
    --------
    >>> import numpy as np
    >>> kappa = np.random.default_rng(0).normal(size=(50, 2))
    >>> A = np.array([[2.0, 0.0], [1.0, 1.0]])
    >>> alignment = align_latents(kappa @ np.linalg.inv(A).T, kappa)
    >>> alignment.A.round(6) + 0.0, round(alignment.r2, 6)
    (array([[2., 0.],
           [1., 1.]]), 1.0)
    """
    fit = _as_samples(kappa_fit, "kappa_fit")
    ref = _as_samples(kappa_ref, "kappa_ref")
    if fit.shape[0] != ref.shape[0]:
        raise ValueError(
            f"kappa_fit and kappa_ref must hold the same samples. Got {fit.shape[0]} and {ref.shape[0]} "
            "samples (after stacking the leading axes)."
        )
    design = np.hstack([fit, np.ones((len(fit), 1))]) if affine else fit
    if len(fit) < design.shape[1]:
        raise ValueError(
            f"Aligning needs at least {design.shape[1]} samples for {fit.shape[1]} latent(s)"
            f"{' and an offset' if affine else ''}. Got {len(fit)}."
        )
    coef = np.linalg.lstsq(design, ref, rcond=None)[0]
    A = coef[: fit.shape[1]].T
    offset = coef[fit.shape[1]] if affine else np.zeros(ref.shape[1])
    aligned = fit @ A.T + offset
    return Alignment(A, offset, r2_score(ref, aligned), r2_score(ref, aligned, multioutput="raw_values"), affine)


def transform_loadings(m, n, A):
    """Loadings of the network whose latents are ``A kappa``.

    ::

        m'_i = A^{-T} m_i   (m' = m A^{-1}),    n'_i = A n_i   (n' = n A^T)

    so that m' n'^T = m n^T (same connectivity) and m' (A kappa) = m kappa.

    Parameters
    ----------
    m, n : array-like of shape (N, R)
    A : array-like of shape (R, R), invertible

    Returns
    -------
    m_new, n_new : ndarray of shape (N, R)

    Raises
    ------
    ValueError
        If ``m`` and ``n`` differ in shape, or ``A`` is not an invertible
        (R, R) matrix.

    Examples
    --------
    >>> import numpy as np
    >>> m, n = np.ones((3, 1)), np.full((3, 1), 4.0)
    >>> new_m, new_n = transform_loadings(m, n, [[2.0]])
    >>> new_m[:, 0], new_n[:, 0]  # m n^T unchanged
    (array([0.5, 0.5, 0.5]), array([8., 8., 8.]))
    """
    m = check_array(m, "m", ndim=2, dtype=np.float64)
    n = check_array(n, "n", ndim=2, dtype=np.float64, shape=m.shape)
    A = _check_invertible(A, m.shape[1])
    return np.linalg.solve(A.T, m.T).T, n @ A.T


def _check_invertible(A, rank):
    A = check_array(A, "A", ndim=2, dtype=np.float64, shape=(rank, rank))
    condition = np.linalg.cond(A)
    if not np.isfinite(condition) or condition > 1e12:
        raise ValueError(
            f"A must be an invertible {rank} x {rank} matrix. Got one with condition number {condition:.3g}: "
            "the latents it maps to lose dimensions (align to a reference of the same rank that the "
            "fitted latents span)."
        )
    return A


def transform_network(network, A, *, offset=None):
    """The same network written in the latents ``kappa' = A kappa``.

    With ``offset=None``: m' = m A^{-1}, n' = n A^T, I and b unchanged. The
    connectivity m' n'^T / N is unchanged, so the potentials x_t are
    identical, and the latents are kappa'_t = A kappa_t.

    With an ``offset`` c (from an affine :func:`align_latents`), the bias
    becomes b' = b - m' c so that x_t = m' (A kappa_t + c) + I v_t + b'
    writes the same potentials around the shifted latents. The bias also
    drives the dynamics, so this network is *not* equivalent to the original
    one unless m' c = 0; use it to compare loadings, not to simulate.

    Parameters
    ----------
    network : LowRankRNN
    A : array-like of shape (R, R), invertible
    offset : array-like of shape (R,), optional

    Returns
    -------
    LowRankRNN
        Same tau, activation and dtype.

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN.
    ValueError
        If ``A`` is not an invertible (R, R) matrix or ``offset`` not of shape
        (R,).

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.sparse import rank_one_gaussian
    >>> network = rank_one_gaussian(100, 1.0, 0.5, random_state=0)
    >>> transformed = transform_network(network, [[2.0]])
    >>> np.allclose(transformed.m, network.m / 2), np.allclose(transformed.n, 2 * network.n)
    (True, True)
    """
    params = loadings(network)
    m_new, n_new = transform_loadings(params["m"], params["n"], A)
    b_new = params["b"]
    if offset is not None:
        offset = check_array(offset, "offset", ndim=1, dtype=np.float64, shape=(network.rank,))
        b_new = b_new - m_new @ offset
    return LowRankRNN(m_new, n_new, params["I"], b_new, tau=network.tau, activation=network.activation,
                      dtype=network.dtype)
