"""Dynamic compression side by side: PCA, PCA + a linear dynamical system, LINT and DCF on the same data.

:func:`compare_compression` fits each method on the training trials of a
:class:`~connector_sim.compression_data.CompressionDataset` at the same latent
dimension and scores it on held-out trials:

- ``r2_affine``: R^2 of the ground-truth latents from the method's latents
  after the best affine map (:func:`connector_sim.latents.align_latents`);
- ``r2_signed``: the same after a signed permutation only (each true
  dimension matched to one learned dimension, with a sign, a positive
  scale and an offset: :func:`signed_permutation_alignment`), the test of
  "unique up to sign flips";
- ``forecast_nmse``: k-step forecast error in data space,
  ``sum |x_{t+k} - xhat_{t+k}|^2 / sum |x_{t+k} - mean x|^2``, from x_t alone (0 is perfect; 1
  is no better than predicting the mean);
- ``dimension_picked``: the dimension the method would choose itself (PCA:
  held-out probabilistic-PCA log-likelihood; DCF: what
  ``n_components="auto"`` picks from its nested-dropout spectrum; LINT has
  no criterion);
- ``seed_agreement``: mean R^2 between the held-out latents of seed 0 and
  of each other seed after a signed permutation (PCA and PCA + LDS are
  deterministic: 1 by construction, fitted once);
- ``fit_seconds``: median wall time of one fit.

:func:`comparison_markdown` and :func:`write_comparison` write the table.

The methods as run here: PCA (no dynamics: its forecast holds the latent
still); PCA + LDS (:class:`LinearDynamicsCompression`); LINT at rank k with
alpha = dt / tau = 0.1 per bin, an identity readout when every ``|x| < 1`` (rates
of a tanh network) and a learned per-unit gain and offset otherwise, its
latents and forecasts the network's rollout from each trial's (or window's)
first frame; DCF fitted with ``n_components=k``.

The baselines (:class:`PCACompression`, :class:`LinearDynamicsCompression`)
are NumPy; LINT and DCF import torch when they are fitted.
"""

import json
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from .._files import json_safe, write_atomic
from .._validation import check_array, check_int, check_positive_scalar
from ..latents import align_latents, r2_score

METHODS = ("pca", "pca_lds", "lint", "dcf")
METHOD_LABELS = {"pca": "PCA", "pca_lds": "PCA + LDS", "lint": "LINT", "dcf": "DCF"}


# --------------------------------------------------------------------------- helpers


def _valid_mask(n_trials, n_times, lengths):
    if lengths is None:
        return np.ones((n_trials, n_times), bool)
    return np.arange(n_times)[None, :] < np.asarray(lengths)[:, None]


def _check_data(X, lengths, owner, n_features=None):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 3:
        raise ValueError(f"X of {owner} must have shape (n_trials, n_times, n_features). Got shape {X.shape}.")
    if n_features is not None and X.shape[2] != n_features:
        raise ValueError(f"X must have {n_features} features, as in fit. Got {X.shape[2]}.")
    mask = _valid_mask(X.shape[0], X.shape[1], lengths)
    check_array(X[mask], "X (valid bins)", ndim=2)
    return X, mask


# --------------------------------------------------------------------------- alignment


class SignedPermutation:
    """Result of :func:`signed_permutation_alignment`.

    ``reference[..., i] ~= scale[i] * signs[i] * Z[..., permutation[i]] + offset[i]``
    (``permutation[i] = -1`` when reference dimension i has no partner).

    Attributes
    ----------
    permutation : ndarray of int of shape (d_ref,)
    signs, scale, offset : ndarray of shape (d_ref,)
    r2 : float
        Variance-weighted R^2 (pooled over reference dimensions).
    r2_per_dim : ndarray of shape (d_ref,)
    """

    def __init__(self, permutation, signs, scale, offset, r2, r2_per_dim):
        self.permutation, self.signs, self.scale, self.offset = permutation, signs, scale, offset
        self.r2, self.r2_per_dim = r2, r2_per_dim

    def transform(self, Z):
        """Z (..., k) mapped onto the reference axes, shape (..., d_ref)."""
        Z = np.asarray(Z, dtype=np.float64)
        picked = np.where(self.permutation >= 0, self.permutation, 0)
        return np.where(self.permutation >= 0, Z[..., picked] * (self.signs * self.scale), 0.0) + self.offset

    def __repr__(self):
        return (f"SignedPermutation(permutation={self.permutation.tolist()}, signs={self.signs.tolist()}, "
                f"r2={self.r2:.4f})")


def signed_permutation_alignment(Z, reference, *, scale=True):
    """Align latents to a reference by a signed permutation of their axes (no rotation, no mixing).

    Each reference dimension i is matched to a distinct learned dimension
    j = pi(i), and ``reference_i ~= a_i Z_j + c_i``. With ``scale=True`` a_i
    is the least-squares slope (its sign is the flip; a learned latent's
    unit is arbitrary), with ``scale=False`` a_i = +-1. The matching
    maximises the pooled R^2, sum_i var_i R^2_ij (Hungarian algorithm on
    var_i corr_ij^2, exact). Reference dimensions beyond the number of
    learned ones get no partner (R^2 = 0).

    Parameters
    ----------
    Z : array-like of shape (n_samples, k) or (n_trials, n_times, k)
    reference : array-like of the same leading shape, last axis d_ref
    scale : bool, default=True

    Returns
    -------
    SignedPermutation
    """
    Z = np.asarray(Z, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if Z.ndim < 2 or reference.shape[:-1] != Z.shape[:-1]:
        raise ValueError(f"Z and reference must hold the same samples, shapes (..., k) and (..., d). Got {Z.shape} and "
                         f"{reference.shape}.")
    z = check_array(Z.reshape(-1, Z.shape[-1]), "Z", ndim=2)
    y = check_array(reference.reshape(-1, reference.shape[-1]), "reference", ndim=2)
    if len(z) < 2:
        raise ValueError(f"Aligning needs at least 2 samples. Got {len(z)}.")
    zc, yc = z - z.mean(axis=0), y - y.mean(axis=0)
    z_var, y_var = (zc ** 2).sum(axis=0), (yc ** 2).sum(axis=0)
    cross = yc.T @ zc  # (d_ref, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(z_var > 0, cross / np.where(z_var > 0, z_var, 1.0), 0.0)
    if scale:
        explained = slope * cross  # var_i corr_ij^2, unnormalised
    else:
        # a = sign(cross): residual y_var - 2 |cross| + z_var, so explained = 2 |cross| - z_var.
        explained = 2 * np.abs(cross) - z_var[None, :]
    rows, cols = linear_sum_assignment(-explained)
    d_ref = y.shape[1]
    permutation = np.full(d_ref, -1)
    permutation[rows] = cols
    signs = np.ones(d_ref)
    gains = np.zeros(d_ref)
    for i, j in zip(rows, cols):
        signs[i] = 1.0 if cross[i, j] >= 0 else -1.0
        gains[i] = abs(slope[i, j]) if scale else 1.0
    offset = y.mean(axis=0) - np.array([signs[i] * gains[i] * z[:, permutation[i]].mean() if permutation[i] >= 0
                                        else 0.0 for i in range(d_ref)])
    result = SignedPermutation(permutation, signs, gains, offset, 0.0, None)
    aligned = result.transform(z)
    result.r2 = r2_score(y, aligned)
    result.r2_per_dim = r2_score(y, aligned, multioutput="raw_values")
    return result


# --------------------------------------------------------------------------- baselines


class PCACompression:
    """PCA of the valid bins, with the dimension picked by held-out probabilistic-PCA likelihood.

    The training trials are split (``validation_fraction`` of them held
    out); for each k <= k_max the probabilistic PCA model of the other
    trials (top-k eigenvalues lambda_i, isotropic noise sigma_k^2 = the mean
    of the remaining eigenvalues) scores the held-out bins::

        log p(x) = -1/2 [D log 2 pi + sum_{i<=k} log lambda_i + (D - k) log sigma_k^2
                         + sum_{i<=k} p_i^2 / lambda_i + (|x - mu|^2 - sum_{i<=k} p_i^2) / sigma_k^2]

    with p_i = u_i^T (x - mu). ``n_components="auto"`` takes the k of the
    highest mean held-out log-likelihood; the final components come from all
    trials. PCA has no dynamics: :meth:`generate` holds the latent still
    (a persistence forecast).

    Parameters
    ----------
    n_components : "auto" or int, default="auto"
    k_max : int, default=10
    validation_fraction : float, default=0.2
    variance_threshold : float, default=0.9
        For ``n_components_variance_`` (reported, not used).
    random_state : int, default=0
        The held-out split.

    Attributes
    ----------
    mean_ : ndarray of shape (D,)
    components_ : ndarray of shape (``n_components_``, D)
    explained_variance_ratio_ : ndarray of shape (k_max,)
    heldout_log_likelihood_ : ndarray of shape (k_max,)
        Mean per bin, for k = 1 .. k_max.
    ``n_components_`` : int
    dimension_picked_ : int
        The held-out criterion's k (whatever ``n_components`` says).
    n_components_variance_ : int
        Smallest k explaining ``variance_threshold`` of the variance.
    """

    def __init__(self, n_components="auto", *, k_max=10, validation_fraction=0.2, variance_threshold=0.9,
                 random_state=0):
        self.n_components = n_components
        self.k_max = k_max
        self.validation_fraction = validation_fraction
        self.variance_threshold = variance_threshold
        self.random_state = random_state

    def _check_params(self, n_features):
        owner = type(self).__name__
        k_max = check_int(self.k_max, "k_max", minimum=1, maximum=n_features, owner=owner)
        if self.n_components != "auto":
            check_int(self.n_components, "n_components", minimum=1, maximum=k_max, owner=owner)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"The 'validation_fraction' parameter of {owner} must be in (0, 1). Got "
                             f"{self.validation_fraction!r} instead.")
        return k_max

    @staticmethod
    def _eigen(samples):
        """Mean, covariance eigenvalues (descending, length D) and eigenvectors (rows) of (n, D) samples."""
        mean = samples.mean(axis=0)
        centred = samples - mean
        n, D = centred.shape
        if n > D:
            # The D x D covariance is cheaper to diagonalise than the n x D samples (5x at n = 3600, D = 1000).
            values, vectors = np.linalg.eigh(centred.T @ centred / n)
            return mean, np.maximum(values[::-1], 0.0), vectors[:, ::-1].T
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        eigenvalues = np.zeros(D)
        eigenvalues[: len(s)] = s ** 2 / n
        return mean, eigenvalues, vt

    @staticmethod
    def _ppca_log_likelihood(mean, eigenvalues, vt, heldout, k_max):
        D = len(eigenvalues)
        x = heldout - mean
        p2 = (x @ vt[:k_max].T) ** 2  # (n, k_max)
        total = (x ** 2).sum(axis=1)
        floor = 1e-12 * max(eigenvalues.mean(), 1e-300)
        scores = np.empty(k_max)
        for k in range(1, k_max + 1):
            top = np.maximum(eigenvalues[:k], floor)
            sigma2 = max(eigenvalues[k:].sum() / (D - k), floor) if k < D else floor
            captured = p2[:, :k]
            log_p = -0.5 * (D * np.log(2 * np.pi) + np.log(top).sum() + (D - k) * np.log(sigma2)
                            + (captured / top).sum(axis=1) + (total - captured.sum(axis=1)) / sigma2)
            scores[k - 1] = log_p.mean()
        return scores

    def fit(self, X, lengths=None):
        """Fit on X (n_trials, n_times, D) over the valid bins; returns self."""
        X, mask = _check_data(X, lengths, type(self).__name__)
        k_max = self._check_params(X.shape[2])
        n_trials = X.shape[0]
        rng = np.random.default_rng(self.random_state)
        n_val = min(max(1, int(round(self.validation_fraction * n_trials))), n_trials - 1) if n_trials > 1 else 0
        order = rng.permutation(n_trials)
        if n_val:
            val, train = order[:n_val], order[n_val:]
            mean, eigenvalues, vt = self._eigen(X[train][mask[train]])
            self.heldout_log_likelihood_ = self._ppca_log_likelihood(mean, eigenvalues, vt, X[val][mask[val]], k_max)
            self.dimension_picked_ = int(np.argmax(self.heldout_log_likelihood_) + 1)
        else:  # one trial: no held-out criterion
            self.heldout_log_likelihood_ = np.full(k_max, np.nan)
            self.dimension_picked_ = k_max
        self.mean_, eigenvalues, vt = self._eigen(X[mask])
        ratio = eigenvalues / max(eigenvalues.sum(), 1e-300)
        self.explained_variance_ratio_ = ratio[:k_max]
        self.n_components_variance_ = int(min(np.searchsorted(np.cumsum(ratio), self.variance_threshold) + 1,
                                              len(ratio)))
        self.n_components_ = self.dimension_picked_ if self.n_components == "auto" else int(self.n_components)
        self.components_ = vt[: self.n_components_]
        self.n_features_in_ = X.shape[2]
        return self

    def _check_fitted(self):
        if not hasattr(self, "components_"):
            raise ValueError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first.")

    def transform(self, X, lengths=None):
        """Latents (n_trials, n_times, ``n_components_``), NaN past each trial's length."""
        self._check_fitted()
        X, mask = _check_data(X, lengths, type(self).__name__, self.n_features_in_)
        Z = (X - self.mean_) @ self.components_.T
        return np.where(mask[..., None], Z, np.nan)

    def inverse_transform(self, Z):
        """Data-space points (..., D) of latents (..., ``n_components_``)."""
        self._check_fitted()
        return np.asarray(Z, dtype=np.float64) @ self.components_ + self.mean_

    def _encode(self, x):
        return (np.asarray(x, dtype=np.float64) - self.mean_) @ self.components_.T

    def _step(self, z):
        return z

    def generate(self, n_steps, z0=None, x0=None):
        """Forecast (Z, Xhat) of shapes (n, n_steps + 1, k) and (n, n_steps + 1, D) from z0 or x0 (n, D)."""
        self._check_fitted()
        if (z0 is None) == (x0 is None):
            raise ValueError("Give exactly one of z0 (n, k) and x0 (n, D).")
        z = self._encode(x0) if z0 is None else np.asarray(z0, dtype=np.float64)
        path = [z]
        for _ in range(check_int(n_steps, "n_steps", minimum=0, owner=type(self).__name__)):
            path.append(self._step(path[-1]))
        Z = np.stack(path, axis=1)
        return Z, self.inverse_transform(Z)


class LinearDynamicsCompression(PCACompression):
    """PCA followed by a linear dynamical system fitted by least squares on the PCA latents.

    ::

        z_{t+lag} = A z_t + c,   (A, c) = argmin sum_{k, t} |z_{k, t+lag} - A z_{k, t} - c|^2

    over the pairs of valid bins of each trial. :meth:`generate` iterates
    the map (one step = ``lag`` bins); :meth:`velocity` is (A - I) z + c per
    step. Parameters as :class:`PCACompression`, plus ``lag``.

    Attributes
    ----------
    A_ : ndarray of shape (k, k)
    c_ : ndarray of shape (k,)
    """

    def __init__(self, n_components="auto", *, k_max=10, lag=1, validation_fraction=0.2, variance_threshold=0.9,
                 random_state=0):
        super().__init__(n_components, k_max=k_max, validation_fraction=validation_fraction,
                         variance_threshold=variance_threshold, random_state=random_state)
        self.lag = lag

    def fit(self, X, lengths=None):
        lag = check_int(self.lag, "lag", minimum=1, owner=type(self).__name__)
        super().fit(X, lengths)
        Z = self.transform(X, lengths)
        if Z.shape[1] <= lag:
            raise ValueError(f"{type(self).__name__} needs trials longer than lag = {lag} bins. Got {Z.shape[1]}.")
        now, later = Z[:, :-lag].reshape(-1, Z.shape[2]), Z[:, lag:].reshape(-1, Z.shape[2])
        keep = np.all(np.isfinite(now), axis=1) & np.all(np.isfinite(later), axis=1)
        design = np.hstack([now[keep], np.ones((keep.sum(), 1))])
        coef = np.linalg.lstsq(design, later[keep], rcond=None)[0]
        self.A_, self.c_ = coef[:-1].T, coef[-1]
        return self

    def _step(self, z):
        return z @ self.A_.T + self.c_

    def velocity(self, z):
        """(A - I) z + c: the latent change per step of ``lag`` bins."""
        z = np.asarray(z, dtype=np.float64)
        return self._step(z) - z


# --------------------------------------------------------------------------- the methods, as the comparison runs them


class _Method:
    """fit / latents / forecast of one method, at a given dimension and seed."""

    deterministic = False

    def __init__(self, k, seed, options):
        self.k, self.seed, self.options = k, seed, options

    def dimension_picked(self):
        return None


class _PCA(_Method):
    deterministic = True
    estimator_class = PCACompression

    def fit(self, X, lengths, dt):
        opts = {"k_max": self.options["k_max"]}
        if self.estimator_class is LinearDynamicsCompression:
            opts["lag"] = self.options["lag"]
        self.model = self.estimator_class(self.k, random_state=self.seed, **opts).fit(X, lengths)
        return self

    def latents(self, X, lengths):
        return self.model.transform(X, lengths)

    def forecast(self, x0, horizon):
        lag = getattr(self.model, "lag", 1)
        return self.model.generate(horizon // lag, x0=x0)[1][:, -1]

    def dimension_picked(self):
        return self.model.dimension_picked_


class _PCALDS(_PCA):
    estimator_class = LinearDynamicsCompression


class _LINT(_Method):
    def fit(self, X, lengths, dt):
        from .lint import LINT

        # Rates of a tanh network lie in (-1, 1) and are its units' phi(x); other data get a learned
        # per-neuron gain and offset.
        readout = "identity" if np.nanmax(np.abs(X)) < 1 else "affine"
        params = dict(n_epochs=30, dt=0.1, tau=1.0, readout=readout, random_state=self.seed)
        params.update(self.options.get("lint_params") or {})
        self.model = LINT(rank=self.k, **params).fit(X, None, lengths)
        return self

    def latents(self, X, lengths):
        return self.model.transform(X, None, lengths)

    def forecast(self, x0, horizon):
        # LINT reads only the first frame of a trial (to invert it into kappa_0), then runs the network.
        window = np.repeat(x0[:, None, :], horizon + 1, axis=1)
        return self.model.predict(window)[:, -1]


class _DCF(_Method):
    def fit(self, X, lengths, dt):
        from . import DynamicCompressionFlow

        params = dict(k_max=self.options.get("k_max", 8), k_target=self.k, lag=self.options.get("lag", 1),
                      random_state=self.seed)
        params.update(self.options.get("dcf_params") or {})
        params["n_components"] = self.k  # the comparison's dimension; the choice "auto" would make is read below
        self.model = DynamicCompressionFlow(**params).fit(X, lengths)
        return self

    def latents(self, X, lengths):
        return self.model.transform(X, lengths)

    def forecast(self, x0, horizon):
        return self.model.generate(horizon // self.model.lag, x0=x0)[1][:, -1]

    def dimension_picked(self):
        # n_components="auto": the last coordinate whose share of the nested-dropout spectrum reaches the
        # threshold (the spectrum is computed the same way whatever n_components is).
        kept = np.flatnonzero(np.asarray(self.model.dimension_importance_) >= self.model.importance_threshold)
        return int(kept[-1] + 1) if len(kept) else 1


_ADAPTERS = {"pca": _PCA, "pca_lds": _PCALDS, "lint": _LINT, "dcf": _DCF}


# --------------------------------------------------------------------------- the comparison


def forecast_windows(X, lengths, horizon, n_starts=8):
    """(x_t, x_{t+horizon}) pairs from up to ``n_starts`` evenly spaced start bins of each trial.

    Returns
    -------
    x0, target : ndarray of shape (n_pairs, D)
    """
    x0, target = [], []
    for k in range(X.shape[0]):
        length = X.shape[1] if lengths is None else int(lengths[k])
        if length <= horizon:
            continue
        starts = np.unique(np.linspace(0, length - 1 - horizon, n_starts).round().astype(int))
        x0.append(X[k, starts])
        target.append(X[k, starts + horizon])
    if not x0:
        raise ValueError(f"No held-out trial is longer than the forecast horizon ({horizon} bins). Lower horizon.")
    return np.concatenate(x0), np.concatenate(target)


def forecast_nmse(target, prediction):
    """``sum |target - prediction|^2 / sum |target - mean(target)|^2`` (pooled over samples and features)."""
    target, prediction = np.asarray(target, np.float64), np.asarray(prediction, np.float64)
    total = ((target - target.mean(axis=0)) ** 2).sum()
    return float(((target - prediction) ** 2).sum() / total) if total > 0 else float("nan")


def compare_compression(data, *, latent_dim=None, methods=METHODS, n_seeds=5, horizon=10, k_max=8, lag=1,
                        test_fraction=0.25, lint_params=None, dcf_params=None, random_state=0, progress=None,
                        return_models=False):
    """Fit every method on the same training trials at the same dimension; score them on held-out trials.

    Parameters
    ----------
    data : CompressionDataset
    latent_dim : int, optional
        The dimension every method uses; default the ground truth's
        (required when the latents are unknown).
    methods : sequence of {"pca", "pca_lds", "lint", "dcf"}
    n_seeds : int, default=5
        Fits per stochastic method (seeds random_state .. random_state + n_seeds - 1).
    horizon : int, default=10
        Forecast horizon, in bins (a multiple of ``lag``).
    k_max, lag : int
        DCF's (and PCA's criterion's) largest dimension; the dynamics lag.
    test_fraction : float, default=0.25
        Trials held out for scoring.
    lint_params, dcf_params : dict, optional
        Extra estimator parameters (epochs, widths, device, ...).
    random_state : int, default=0
    progress : callable, optional
        Called with a message before each fit.
    return_models : bool, default=False
        Also return the fitted estimators.

    Returns
    -------
    rows : list of dict
        One row per method: dataset, method, latent_dim, dimension_picked,
        r2_affine, r2_affine_std, r2_signed, r2_signed_std, forecast_nmse,
        forecast_nmse_std, seed_agreement, fit_seconds, n_seeds, horizon,
        n_features, n_train, n_test (NaN where undefined).
    models : dict of str to list, only with ``return_models``
        Method -> its fitted estimators, one per seed (fitted on the
        training trials, ``train_trials`` holds their indices).
    """
    owner = "compare_compression"
    latent_dim = data.latent_dim if latent_dim is None else check_int(latent_dim, "latent_dim", minimum=1,
                                                                       owner=owner)
    if latent_dim is None:
        raise ValueError("The data have no ground-truth latents: give latent_dim (the dimension every method uses).")
    unknown = [m for m in methods if m not in _ADAPTERS]
    if unknown:
        raise ValueError(f"The 'methods' parameter of {owner} must name methods of {list(METHODS)}. Got {unknown}.")
    n_seeds = check_int(n_seeds, "n_seeds", minimum=1, owner=owner)
    horizon = check_int(horizon, "horizon", minimum=1, owner=owner)
    lag = check_int(lag, "lag", minimum=1, owner=owner)
    k_max = check_int(k_max, "k_max", minimum=latent_dim, maximum=data.n_features, owner=owner)
    if horizon % lag:
        raise ValueError(f"The 'horizon' parameter of {owner} must be a multiple of lag = {lag}. Got {horizon}.")
    check_positive_scalar(test_fraction, "test_fraction", owner=owner)
    if data.n_trials < 2 or test_fraction >= 1:
        raise ValueError(f"{owner} holds out test_fraction={test_fraction} of the trials: it needs at least 2 trials "
                         f"and a fraction below 1. Got {data.n_trials} trials.")
    rng = np.random.default_rng(random_state)
    order = rng.permutation(data.n_trials)
    n_test = min(max(1, int(round(test_fraction * data.n_trials))), data.n_trials - 1)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    X_train, len_train = data.X[train], data.lengths[train]
    X_test, len_test = data.X[test], data.lengths[test]
    mask_test = _valid_mask(len(test), data.n_times, len_test)
    truth = None if data.latents is None else data.latents[test]
    x0, target = forecast_windows(X_test, len_test, horizon)
    options = {"k_max": k_max, "lag": lag, "lint_params": lint_params, "dcf_params": dcf_params}
    rows, models = [], {"train_trials": train, "test_trials": test}
    for method in methods:
        adapter = _ADAPTERS[method]
        seeds = [random_state] if adapter.deterministic else [random_state + s for s in range(n_seeds)]
        r2_affine, r2_signed, errors, seconds, latents, picked = [], [], [], [], [], None
        for seed in seeds:
            if progress is not None:
                progress(f"{data.name}: fit {METHOD_LABELS[method]} (k = {latent_dim}, seed {seed})")
            started = time.perf_counter()
            fitted = adapter(latent_dim, seed, options).fit(X_train, len_train, data.dt)
            seconds.append(time.perf_counter() - started)
            models.setdefault(method, []).append(fitted.model)
            Z = fitted.latents(X_test, len_test)
            latents.append(Z[mask_test])
            if truth is not None:
                r2_affine.append(align_latents(latents[-1], truth[mask_test], affine=True).r2)
                r2_signed.append(signed_permutation_alignment(latents[-1], truth[mask_test]).r2)
            errors.append(forecast_nmse(target, fitted.forecast(x0, horizon)))
            if picked is None:
                picked = fitted.dimension_picked()
        if adapter.deterministic:
            agreement = 1.0
        elif len(latents) > 1:
            agreement = float(np.mean([signed_permutation_alignment(Z, latents[0]).r2 for Z in latents[1:]]))
        else:
            agreement = float("nan")
        rows.append({
            "dataset": data.name, "method": METHOD_LABELS[method], "latent_dim": latent_dim,
            "dimension_picked": picked,
            "r2_affine": _mean(r2_affine), "r2_affine_std": _std(r2_affine),
            "r2_signed": _mean(r2_signed), "r2_signed_std": _std(r2_signed),
            "forecast_nmse": _mean(errors), "forecast_nmse_std": _std(errors),
            "seed_agreement": agreement, "fit_seconds": float(np.median(seconds)), "n_seeds": len(seeds),
            "horizon": horizon, "n_features": data.n_features, "n_train": len(train), "n_test": len(test),
        })
    return (rows, models) if return_models else rows


def _mean(values):
    return float(np.mean(values)) if values else float("nan")


def _std(values):
    return float(np.std(values)) if len(values) > 1 else float("nan")


# --------------------------------------------------------------------------- writing the table

#: (column, header, format) of the Markdown table.
COLUMNS = (
    ("dataset", "data", "{}"), ("method", "method", "{}"), ("n_features", "D", "{}"), ("latent_dim", "k", "{}"),
    ("dimension_picked", "k picked", "{}"), ("r2_affine", "R² affine", "{:.3f}"),
    ("r2_signed", "R² signed perm.", "{:.3f}"), ("forecast_nmse", "forecast NMSE", "{:.3f}"),
    ("seed_agreement", "seed agreement", "{:.3f}"), ("fit_seconds", "fit s", "{:.1f}"), ("n_seeds", "seeds", "{}"),
)


def _cell(value, fmt, std=None):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    text = fmt.format(value)
    if std is not None and isinstance(std, float) and np.isfinite(std):
        text += " ± " + fmt.format(std)
    return text


def comparison_markdown(rows, *, title=None):
    """The comparison table (rows of :func:`compare_compression`) as Markdown, with a legend."""
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(header for _, header, _ in COLUMNS) + " |",
              "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_cell(row.get(key), fmt, row.get(key + "_std")) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    horizon = rows[0]["horizon"] if rows else "k"
    lines += ["", f"R² of the held-out ground-truth latents after the best affine map / after a signed permutation "
              "(per-dimension sign, scale and offset, no mixing); forecast NMSE: error of x_{t+"
              f"{horizon}" "} predicted from x_t alone, relative to the variance (1 = predicting the mean); seed "
              "agreement: R² between seeds' latents after a signed permutation (PCA is deterministic); mean ± std "
              "over seeds; fit s: median seconds per fit.", ""]
    return "\n".join(lines)


def write_comparison(rows, prefix, *, title=None):
    """Write ``<prefix>.md`` (the table) and ``<prefix>.json`` (the rows) atomically; return the two paths."""
    write_atomic(prefix + ".md", comparison_markdown(rows, title=title).encode())
    write_atomic(prefix + ".json", json.dumps(json_safe(rows), indent=2).encode())
    return prefix + ".md", prefix + ".json"
