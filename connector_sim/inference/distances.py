"""Comparing connectivity distributions (theory section 4).

:func:`dissimilarity` is the paper's measure for two distributions of any
network sizes::

    D(p, q) = S_eps(p(m, I, b), q(m, I, b)) + E_{(m, I, b)}[ |nbar_p(m, I, b) - nbar_q(m, I, b)|^2 ]

S_eps is the debiased Sinkhorn divergence (cost ``|x - y|^2 / 2``, blur 0.05,
converged to a relative tolerance of 1e-5 by :func:`sinkhorn_divergence`)
between samples of the two (m, I, b) marginals; the second term
compares the conditional means of n, the only part of p(n | m, I, b) the
dynamics determine (theory section 3, step 2).

:func:`effective_connectivity_dissimilarity` is the baseline of Valente et
al. (2022) as the Connector paper's Figure 4 uses it: it compares the
distributions of the entries of the two effective connectivities (sorted
entries), so neurons need not correspond and a network against a permuted
copy of itself gives 0. :func:`paired_effective_connectivity_dissimilarity`
compares them entry by entry, for networks whose neurons correspond one to
one.

torch (and geomloss for ``method="geomloss"``) is imported when
:func:`dissimilarity` or :func:`sinkhorn_divergence` runs.
"""

import math
import warnings

import numpy as np

from .._memory import check_allocation
from .._validation import check_int, check_n_threads, check_positive_scalar, check_random_state
from ..distributions import Gaussian, GaussianMixture, RowLayout
from ..network import LowRankRNN

_OWNER = "dissimilarity"


def _layout_of(source, name):
    layout = getattr(source, "layout", None)
    if not isinstance(layout, RowLayout) or not hasattr(source, "sample_rows"):
        raise TypeError(
            f"{name} must be a connectivity distribution with a conditional mean of n: a fitted Connector, a "
            f"Gaussian or a GaussianMixture (or an object with layout, sample_rows and conditional_mean). Got "
            f"{type(source).__name__}. For a sampled network or Empirical rows, fit a Connector to it, or build a "
            "GaussianMixture with connector_sim.mixture_from_labels."
        )
    if not isinstance(source, (Gaussian, GaussianMixture)) and not callable(getattr(source, "conditional_mean", None)):
        raise TypeError(f"{name} ({type(source).__name__}) has no conditional_mean(mIb) method: the second term of "
                        "the dissimilarity needs E[n | m, I, b].")
    return layout


def _mIb(rows, layout):
    """Rows [m, n, I, b] -> [m, I, b] with b = 0 when the layout has no bias."""
    b = rows[:, layout.b] if layout.bias else np.zeros((len(rows), 1))
    return np.hstack([rows[:, layout.m], rows[:, layout.I], b])


def _gaussian_conditional_mean(mean, cov, layout, mIb):
    """E[n | m, I, b] of one Gaussian over rows (pseudo-inverse for singular covariances)."""
    coords = layout.mIb
    x = mIb if layout.bias else mIb[:, :-1]
    s_xx = cov[np.ix_(coords, coords)]
    s_nx = cov[layout.n][:, coords]
    gain = s_nx @ np.linalg.pinv(s_xx, hermitian=True)
    return mean[layout.n] + (x - mean[coords]) @ gain.T


def _log_gaussian(x, mean, cov):
    """log N(x; mean, cov) on the support of a possibly singular cov (pseudo-determinant)."""
    values, vectors = np.linalg.eigh(cov)
    keep = values > 1e-12 * max(1.0, float(values.max()))
    projected = (x - mean) @ vectors[:, keep]
    return (-0.5 * np.sum(projected**2 / values[keep], axis=1)
            - 0.5 * (keep.sum() * math.log(2 * math.pi) + np.log(values[keep]).sum()))


def conditional_mean_of(source, mIb):
    """E[n | m, I, b] of a distribution at rows [m, I, b] (b last, zero when the layout has none).

    Gaussian: mu_n + S_n,x S_x,x^+ (x - mu_x); mixture: the same per component,
    weighted by the posterior p(k | x); otherwise ``source.conditional_mean``.

    Returns
    -------
    ndarray of shape (n_rows, R)
    """
    layout = _layout_of(source, "source")
    if isinstance(source, Gaussian):
        return _gaussian_conditional_mean(source.mean, source.cov, layout, mIb)
    if isinstance(source, GaussianMixture):
        coords = layout.mIb
        x = mIb if layout.bias else mIb[:, :-1]
        log_resp = np.stack([np.log(w) + _log_gaussian(x, mu[coords], cov[np.ix_(coords, coords)])
                             if w > 0 else np.full(len(x), -np.inf)
                             for w, mu, cov in zip(source.weights, source.means, source.covs)], axis=1)
        log_resp -= log_resp.max(axis=1, keepdims=True)
        resp = np.exp(log_resp)
        resp /= resp.sum(axis=1, keepdims=True)
        means = np.stack([_gaussian_conditional_mean(mu, cov, layout, mIb)
                          for mu, cov in zip(source.means, source.covs)], axis=1)
        return np.einsum("nk,nkr->nr", resp, means)
    return np.asarray(source.conditional_mean(mIb if layout.bias else mIb[:, :-1]), dtype=np.float64)


class SinkhornConvergenceWarning(RuntimeWarning):
    """The Sinkhorn divergence did not reach its tolerance within ``max_iter`` iterations."""


#: The solvers of :func:`sinkhorn_divergence`.
SINKHORN_METHODS = ("newton", "geomloss")

#: Annealing of the "newton" method: the epsilon-scaling ratio per stage and the averaged Sinkhorn steps per stage.
#: They only give the final solve a good start; the tolerance is met (or reported missed) by the final solve.
_ANNEAL_SCALING = 0.5
_ANNEAL_STEPS = 5


def _sq_cost(x, y):
    """|x_i - y_j|^2 / 2, computed from differences (no cancellation, unlike |x|^2 + |y|^2 - 2 x.y)."""
    return 0.5 * ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def _softmin(torch, cost, log_w, h, eps):
    """-eps log sum_j w_j exp((h_j - cost_ij) / eps), for each row i."""
    return -eps * torch.logsumexp(log_w[None, :] + (h[None, :] - cost) / eps, dim=1)


def _semi_dual(torch, cost, log_a, log_b, g, eps):
    """The semi-dual F(g) = <a, f(g)> + <b, g> (f the soft c-transform of g), f(g) and the plan pi (rows sum to a)."""
    f = _softmin(torch, cost, log_b, g, eps)
    value = float(log_a.exp() @ f + log_b.exp() @ g)
    plan = torch.exp(log_a[:, None] + log_b[None, :] + (f[:, None] + g[None, :] - cost) / eps)
    return value, f, plan


def _dual_gap_bound(plan, log_b, g, cost_range):
    """An upper bound of OT_eps - F(g), and the column-marginal residual r = b - pi^T 1 (the gradient of F).

    F is concave, so OT_eps - F(g) <= <r, g* - g> <= |r|_1 osc(g* - g) / 2 (r sums to 0), and the optimal
    g* is a soft c-transform, so osc(g*) <= max(cost) - min(cost).
    """
    residual = log_b.exp() - plan.sum(0)
    return float(residual.abs().sum()) * (float(g.max() - g.min()) + cost_range) / 2, residual


def _newton_step(torch, cost, log_a, log_b, g, eps, value, plan, residual, damping):
    """One damped Newton ascent step on the semi-dual; a plain Sinkhorn step when Newton makes no progress.

    The Hessian of F is -(diag(pi^T 1) - pi^T diag(1/a) pi) / eps, singular along constant g (the
    gradient is orthogonal to it): a rank-one term fixes that direction, and a Levenberg-Marquardt term
    ``damping * diag(b)``, lowered after full steps and raised after failures, keeps the step safe far
    from the optimum.
    """
    k = len(g)
    a, b = log_a.exp(), log_b.exp()
    hessian = torch.diag(plan.sum(0) + damping[0] * b) - (plan / a[:, None]).T @ plan + 1.0 / k**2
    factor, info = torch.linalg.cholesky_ex(hessian)
    if int(info) == 0:
        direction = eps * torch.cholesky_solve(residual[:, None], factor)[:, 0]
        slope = float(residual @ direction)
        step = 1.0
        for _ in range(2):  # Armijo backtracking (a halved step, then a Sinkhorn step)
            candidate = g + step * direction
            new_value, f, new_plan = _semi_dual(torch, cost, log_a, log_b, candidate, eps)
            if new_value >= value + 1e-4 * step * slope:
                if step == 1.0:
                    damping[0] = max(damping[0] / 10, 1e-12)
                return candidate, new_value, new_plan
            step *= 0.5
    damping[0] = min(damping[0] * 10, 1.0)
    # A Sinkhorn step (soft c-transform of the current f) never decreases the dual.
    candidate = _softmin(torch, cost.T, log_a, _softmin(torch, cost, log_b, g, eps), eps)
    new_value, _, new_plan = _semi_dual(torch, cost, log_a, log_b, candidate, eps)
    return candidate, new_value, new_plan


def _sinkhorn_newton(torch, x, y, blur, scaling, tol, max_iter):
    """Debiased Sinkhorn divergence to a relative tolerance; returns (value, converged, bound)."""
    cost_xy, cost_xx, cost_yy = _sq_cost(x, y), _sq_cost(x, x), _sq_cost(y, y)
    log_a = torch.full((len(x),), -math.log(len(x)), dtype=torch.float64)
    log_b = torch.full((len(y),), -math.log(len(y)), dtype=torch.float64)
    both = torch.cat([x, y])
    diameter = float((both.max(0).values - both.min(0).values).norm())
    eps, final = max(diameter, blur) ** 2, blur**2
    zeros_x, zeros_y = torch.zeros(len(x), dtype=torch.float64), torch.zeros(len(y), dtype=torch.float64)
    f, g = _softmin(torch, cost_xy, log_b, zeros_y, eps), _softmin(torch, cost_xy.T, log_a, zeros_x, eps)
    f_aa, g_bb = _softmin(torch, cost_xx, log_a, zeros_x, eps), _softmin(torch, cost_yy, log_b, zeros_y, eps)
    # Epsilon annealing with symmetric (averaged) updates, as GeomLoss does: a start for the final solve.
    while eps > final:
        eps = max(eps * scaling**2, final)
        for _ in range(_ANNEAL_STEPS):
            f, g = (0.5 * (f + _softmin(torch, cost_xy, log_b, g, eps)),
                    0.5 * (g + _softmin(torch, cost_xy.T, log_a, f, eps)))
            f_aa = 0.5 * (f_aa + _softmin(torch, cost_xx, log_a, f_aa, eps))
            g_bb = 0.5 * (g_bb + _softmin(torch, cost_yy, log_b, g_bb, eps))
    ranges = [float(c.max() - c.min()) for c in (cost_xy, cost_xx, cost_yy)]
    value_ab, _, plan_ab = _semi_dual(torch, cost_xy, log_a, log_b, g, eps)
    value_aa, _, plan_aa = _semi_dual(torch, cost_xx, log_a, log_a, f_aa, eps)
    value_bb, _, plan_bb = _semi_dual(torch, cost_yy, log_b, log_b, g_bb, eps)
    damping = [1e-1]
    # The plan's entries carry the float64 rounding of (f + g - C) / eps, so the bound cannot fall below
    # about 2^-52 max(C)^2 / eps (with a safety factor): where blur is tiny against the data this floor,
    # not tol, decides (measured bound 3e-4 at blur 1e-6 for clouds of diameter 5; floor 1e-9 at blur 0.05).
    floor = 64 * 2.0**-52 * max(ranges) ** 2 / final
    for _ in range(max_iter + 1):
        # Each dual value is a lower bound of its OT_eps; S = OT_ab - OT_aa / 2 - OT_bb / 2.
        value = value_ab - value_aa / 2 - value_bb / 2
        target = max(tol * max(abs(value), final), floor)
        gap_ab, residual = _dual_gap_bound(plan_ab, log_b, g, ranges[0])
        gap_aa, _ = _dual_gap_bound(plan_aa, log_a, f_aa, ranges[1])
        gap_bb, _ = _dual_gap_bound(plan_bb, log_b, g_bb, ranges[2])
        bound = gap_ab + gap_aa / 2 + gap_bb / 2
        if bound <= target:
            return value, True, bound
        # The self-terms converge fast under the averaged update f <- (f + T f) / 2; the cross term has a
        # slow linear tail under Sinkhorn's alternating updates, so it takes Newton steps.
        if gap_aa > target / 2:
            f_aa = 0.5 * (f_aa + _softmin(torch, cost_xx, log_a, f_aa, eps))
            value_aa, _, plan_aa = _semi_dual(torch, cost_xx, log_a, log_a, f_aa, eps)
        if gap_bb > target / 2:
            g_bb = 0.5 * (g_bb + _softmin(torch, cost_yy, log_b, g_bb, eps))
            value_bb, _, plan_bb = _semi_dual(torch, cost_yy, log_b, log_b, g_bb, eps)
        if gap_ab > target / 2:
            g, value_ab, plan_ab = _newton_step(torch, cost_xy, log_a, log_b, g, eps, value_ab, plan_ab, residual,
                                                damping)
    return value, False, bound


def sinkhorn_divergence(x, y, *, blur=0.05, scaling=None, n_threads=1, method="newton", tol=1e-5, max_iter=200):
    """Debiased Sinkhorn divergence between two point clouds (p = 2), converged to a stated tolerance.

    ::

        S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2,
        cost(x, y) = |x - y|^2 / 2,  eps = blur^2,  uniform weights

    (so S_eps ~ W_2^2 / 2 for small blur; the definition of GeomLoss's
    ``SamplesLoss("sinkhorn", p=2, debias=True)``). Values below 0
    (rounding, for identical clouds) are returned as 0.

    The default ``method="newton"`` (theory section 4) anneals epsilon from
    the clouds' squared diameter down to blur^2 (ratio ``scaling`` squared
    per stage, 5 averaged Sinkhorn steps each), then at the final epsilon
    solves the self-terms OT(a, a), OT(b, b) by averaged Sinkhorn updates
    and the cross term OT(a, b) by damped Newton steps on its concave
    semi-dual, until the bound on the error of the value (the marginal
    violation times the potentials' oscillation, a bound of each dual
    gap) is at most ``tol * max(S, blur^2)``. The returned value is then
    within that of the exact debiased divergence of the two samples, up
    to float64 rounding: the bound cannot go below about 1e-14 max(C)^2 /
    blur^2 (C the cost matrix), which exceeds ``tol`` only for a blur far
    below the data's scale (about 1e-4 of its diameter); there that floor
    is the stopping point. Each Newton step solves a
    k x k system (k = len(y)): on two different 2-D clouds at blur 0.05 a
    call took 0.09 s CPU at 200 points and 3.4 s at 1,000 (one core; GeomLoss
    at scaling 0.9: 0.04 s and 1.0 s), its error against a tol=1e-10
    solve 4e-10 and 2e-10 (the bound is conservative).

    ``method="geomloss"`` runs GeomLoss's tensorized solver with its
    epsilon-scaling (``scaling``, default 0.9): it stops after the
    annealing, so on two different clouds it is off: on two 2-D Gaussian
    clouds at blur 0.05, by 0.13% (200 points) and 0.05% (1,000 points) at
    scaling 0.9, and by 3.4% and 1.3% at GeomLoss's own default 0.5; 0.8%
    on 60 points at blur 0.1 with scaling 0.9. Differences that are pure
    translations come out right because the errors of the three terms
    cancel. Use it to reproduce
    GeomLoss numbers or this function's behaviour before the converged
    default.

    Parameters
    ----------
    x : array-like of shape (n, d)
    y : array-like of shape (k, d)
    blur : float in [1e-6, 1e6], default=0.05
    scaling : float in (0, 0.99] or None, default=None
        Epsilon-scaling ratio; None: 0.5 for "newton" (where it only sets
        the annealing that starts the final solve) and 0.9 for "geomloss".
    n_threads : int or None, default=1
        torch CPU threads during the solve (None: torch's setting).
    method : {"newton", "geomloss"}, default="newton"
    tol : float in (0, 0.1], default=1e-5
        Relative tolerance of the "newton" value (ignored by "geomloss");
        below the rounding floor above, the floor decides.
    max_iter : int >= 1, default=200
        Iterations of the final solve of "newton" (a Newton step each).
        When the tolerance is not met within them, the best value is
        returned with a :class:`SinkhornConvergenceWarning`.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For point clouds of different dimensions, non-finite values, or
        ``blur``, ``scaling``, ``tol``, ``max_iter`` or ``method`` out of range.
    ImportError
        If torch (or, for "geomloss", geomloss) is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((100, 2))
    >>> round(sinkhorn_divergence(x, x + [1.0, 0.0]), 6)  # a translation by s costs |s|^2 / 2
    0.5
    """
    from .flows import torch, torch_threads  # a clear ImportError when torch is missing

    owner = "sinkhorn_divergence"
    if method not in SINKHORN_METHODS:
        raise ValueError(f"The 'method' parameter of {owner} must be one of {SINKHORN_METHODS}. Got {method!r} "
                         "instead.")
    n_threads = check_n_threads(n_threads, owner, allow_none=True)
    if scaling is None:
        scaling = _ANNEAL_SCALING if method == "newton" else 0.9
    blur, scaling = _check_sinkhorn_params(blur, scaling, owner)
    tol, max_iter = _check_tolerance(tol, max_iter, owner)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) == 0 or len(y) == 0:
        raise ValueError(f"x and y must be non-empty point clouds of shape (n, d) and (k, d) with the same d. "
                         f"Got shapes {x.shape} and {y.shape}.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must contain only finite values.")
    # The tensorized solvers keep the three cost matrices, the plans and (newton) a k x k Hessian in memory.
    check_allocation(8 * 8 * (len(x) + len(y)) ** 2, f"sinkhorn_divergence of {len(x)} and {len(y)} points",
                     "Use fewer samples (n_samples of dissimilarity).")
    both = np.vstack([x, y])
    # GeomLoss takes the log of the clouds' diameter for its epsilon schedule,
    # which is 0 for clouds that are one and the same point: give it at least blur.
    diameter = max(float(np.linalg.norm(both.max(axis=0) - both.min(axis=0))), blur)
    if method == "newton":
        if x.shape == y.shape and np.array_equal(x, y):
            return 0.0  # S_eps(a, a) = 0 by definition
        with torch_threads(n_threads):
            value, converged, bound = _sinkhorn_newton(torch, torch.as_tensor(x), torch.as_tensor(y), blur, scaling,
                                                       tol, max_iter)
        if not converged and math.isfinite(value):
            warnings.warn(f"sinkhorn_divergence did not reach tol={tol:g} within max_iter={max_iter}: the error "
                          f"bound is {bound:.3g} for a value of {value:.6g}. Raise max_iter or tol.",
                          SinkhornConvergenceWarning, stacklevel=2)
    else:
        try:
            from geomloss import SamplesLoss
        except ImportError as exc:
            from . import missing_dependency

            raise missing_dependency("geomloss") from exc
        loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, debias=True, backend="tensorized",
                           diameter=diameter)
        with torch_threads(n_threads):
            value = float(loss(torch.as_tensor(x), torch.as_tensor(y)))
    if not math.isfinite(value):
        raise ValueError(f"The Sinkhorn divergence came out {value} with blur={blur!r} for point clouds of diameter "
                         f"{diameter:.3g}: give a blur closer to the scale of the data (default 0.05).")
    return max(value, 0.0)


#: The blur range in which GeomLoss's log-domain Sinkhorn solver stays accurate in float64 (eps = blur^2 must
#: neither underflow nor swamp the cost: blur = 1e-160 gave NaN, blur = 1e20 gave 0 for clouds at distance 0.9)
#: and takes a bounded number of epsilon-scaling steps, log(diameter / blur) / log(1 / scaling).
BLUR_RANGE = (1e-6, 1e6)

#: The largest epsilon-scaling ratio: closer to 1 the number of Sinkhorn steps grows without bound.
MAX_SCALING = 0.99


def _check_sinkhorn_params(blur, scaling, owner):
    blur = check_positive_scalar(blur, "blur", owner=owner)
    if not BLUR_RANGE[0] <= blur <= BLUR_RANGE[1]:
        raise ValueError(f"The 'blur' parameter of {owner} must be in [{BLUR_RANGE[0]:g}, {BLUR_RANGE[1]:g}] (the "
                         f"length scale of the Sinkhorn divergence; 0.05 by default), where the solver is accurate. "
                         f"Got {blur!r} instead.")
    scaling = check_positive_scalar(scaling, "scaling", owner=owner)
    if scaling > MAX_SCALING:
        raise ValueError(f"The 'scaling' parameter of {owner} must be in (0, {MAX_SCALING}]: the number of Sinkhorn "
                         f"steps grows like 1 / log(1 / scaling). Got {scaling!r} instead.")
    return blur, scaling


def _check_tolerance(tol, max_iter, owner):
    tol = check_positive_scalar(tol, "tol", owner=owner)
    if tol > 0.1:
        raise ValueError(f"The 'tol' parameter of {owner} must be in (0, 0.1] (a relative tolerance of the "
                         f"Sinkhorn divergence; 1e-5 by default). Got {tol!r} instead.")
    max_iter = check_int(max_iter, "max_iter", minimum=1, owner=owner)
    return tol, max_iter


def dissimilarity(p, q, *, n_samples=1000, random_state=0, blur=0.05, scaling=None, n_threads=1, method="newton",
                  tol=1e-5, max_iter=200, return_terms=False):
    """Dissimilarity of two connectivity distributions (theory section 4, paper eq. 11).

    ::

        D(p, q) = S_eps(p(m, I, b), q(m, I, b)) + E_x[ |nbar_p(x) - nbar_q(x)|^2 ]

    Both terms are Monte Carlo estimates from ``n_samples`` rows of each
    distribution (paper: 1,000). The expectation of the second term is over
    the pooled samples of both, x ~ (p + q) / 2 (the paper leaves it
    implicit; pooling makes D symmetric). A distribution without a bias
    column compares as b = 0.

    Parameters
    ----------
    p, q : Connector, Gaussian, GaussianMixture
        Or any object with ``layout``, ``sample_rows(n, random_state)`` and
        ``conditional_mean(mIb)``. They must share the rank R and the
        number of inputs D.
    n_samples : int, default=1000
    random_state : None, int or numpy.random.Generator, default=0
    blur : float in [1e-6, 1e6], default=0.05
    scaling, n_threads, method, tol, max_iter
        See :func:`sinkhorn_divergence`: by default its Sinkhorn term is
        converged to a relative tolerance of 1e-5 (``method="geomloss",
        scaling=0.9`` gives the earlier, unconverged values).
    return_terms : bool, default=False
        Also return ``{"sinkhorn": ..., "conditional_mean": ...}``.

    Returns
    -------
    float, or (float, dict) with ``return_terms``

    Raises
    ------
    TypeError
        If ``p`` or ``q`` is not a distribution with ``layout``, ``sample_rows``
        and ``conditional_mean``, or ``n_samples`` / ``n_threads`` is not an int.
    ValueError
        If ``p`` and ``q`` differ in rank or number of inputs, or ``blur``,
        ``scaling``, ``tol``, ``max_iter``, ``method``, ``n_samples`` or ``n_threads``
        is out of range.
    ImportError
        If torch or geomloss is not installed.

    Examples
    --------
    >>> from connector_sim import Gaussian
    >>> p = Gaussian([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]], rank=1)
    >>> q = Gaussian([0.0, 0.0], [[1.0, 0.9], [0.9, 1.0]], rank=1)  # another overlap of m and n
    >>> dissimilarity(p, p, n_samples=200) < 0.05 < dissimilarity(p, q, n_samples=200)
    True
    """
    layout_p, layout_q = _layout_of(p, "p"), _layout_of(q, "q")
    if (layout_p.rank, layout_p.n_inputs) != (layout_q.rank, layout_q.n_inputs):
        raise ValueError(f"p and q must have the same rank and number of inputs. Got (R, D) = "
                         f"({layout_p.rank}, {layout_p.n_inputs}) and ({layout_q.rank}, {layout_q.n_inputs}).")
    n_samples = check_int(n_samples, "n_samples", minimum=1, owner=_OWNER)
    n_threads = check_n_threads(n_threads, _OWNER, allow_none=True)
    if method not in SINKHORN_METHODS:  # all checks before any sampling
        raise ValueError(f"The 'method' parameter of {_OWNER} must be one of {SINKHORN_METHODS}. Got {method!r} "
                         "instead.")
    _check_sinkhorn_params(blur, 0.5 if scaling is None else scaling, _OWNER)
    _check_tolerance(tol, max_iter, _OWNER)
    rng = check_random_state(random_state)
    rows_p, _ = p.sample_rows(n_samples, rng)
    rows_q, _ = q.sample_rows(n_samples, rng)
    x_p, x_q = _mIb(rows_p, layout_p), _mIb(rows_q, layout_q)
    sinkhorn = sinkhorn_divergence(x_p, x_q, blur=blur, scaling=scaling, n_threads=n_threads, method=method,
                                   tol=tol, max_iter=max_iter)
    pooled = np.vstack([x_p, x_q])
    difference = conditional_mean_of(p, pooled) - conditional_mean_of(q, pooled)
    mean_term = float(np.mean(np.sum(difference**2, axis=1)))
    total = sinkhorn + mean_term
    if return_terms:
        return total, {"sinkhorn": sinkhorn, "conditional_mean": mean_term}
    return total


def _projected_left_factors(network):
    """Nm_P: the left factors projected on span(M, I) (columns in R^N)."""
    basis = np.hstack([network.m, network.I]).astype(np.float64)
    q, r = np.linalg.qr(basis)
    # Drop directions of a rank-deficient [M, I].
    keep = np.abs(np.diag(r)) > 1e-12 * max(1.0, float(np.abs(np.diag(r)).max()))
    q = q[:, keep]
    return q @ (q.T @ network.n.astype(np.float64))


def _check_networks_and_metric(a, b, metric):
    for name, network in (("a", a), ("b", b)):
        if not isinstance(network, LowRankRNN):
            raise TypeError(f"{name} must be a LowRankRNN. Got {type(network).__name__}.")
    if metric not in ("correlation", "mse"):
        raise ValueError(f"metric must be 'correlation' or 'mse'. Got {metric!r}.")


def _sorted_effective_connectivity(network, neurons):
    """The sorted entries of J_eff = M Nm_P^T / N restricted to ``neurons`` (rows and columns)."""
    N = network.n_neurons
    projected = _projected_left_factors(network)
    m = network.m.astype(np.float64)
    if neurons is not None:
        m, projected = m[neurons], projected[neurons]
    return np.sort((m @ projected.T).ravel() / N)


def _quantiles(sorted_values, size):
    """``sorted_values`` at the quantile levels (k + 1/2) / size, k < size (the values themselves at equal size)."""
    if sorted_values.size == size:
        return sorted_values
    positions = (np.arange(size) + 0.5) * (sorted_values.size / size) - 0.5
    return np.interp(positions, np.arange(sorted_values.size), sorted_values)


def effective_connectivity_dissimilarity(a, b, *, metric="correlation", n_neurons=None, random_state=None):
    """The baseline of Valente et al. (2022) on unpaired neurons: compare the distributions of J_eff entries.

    ::

        J_eff = M Nm_P^T / N,   Nm_P = projection of Nm on span(M, I)
        q_a, q_b = the sorted entries of J_eff(a) and J_eff(b)
        correlation: 1 - corr(q_a, q_b)
        mse:         mean of (q_a - q_b)^2  (the squared 2-Wasserstein distance
                     between the two distributions of entries)

    As in the Connector paper's Figure 4 (``1 - corrcoef(sort(J1.flat),
    sort(J2.flat))``), the entries are sorted before they are compared, so
    the result does not depend on how either network orders its neurons: a
    network against a permuted copy of itself gives 0. Networks of different
    sizes are compared at the quantile levels (k + 1/2) / K of the smaller
    number of entries K (linear interpolation in the larger). The 1/N scale
    of J_eff matters only to ``metric="mse"``.

    The entries are formed explicitly (N^2 per network); for large networks
    give ``n_neurons`` to compare the J_eff restricted to a random subset of
    that many neurons of each.

    Parameters
    ----------
    a, b : LowRankRNN
    metric : {"correlation", "mse"}, default="correlation"
    n_neurons : int, optional
        Neurons drawn (without replacement) from each network; default all.
    random_state : int, numpy.random.Generator or None
        Draws the subsets when ``n_neurons`` is given.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``a`` or ``b`` is not a LowRankRNN.
    ValueError
        For an unknown metric, or a correlation of entries without variance.
    TooLargeError
        If the N^2 entries would not fit in memory (give ``n_neurons``).

    See Also
    --------
    paired_effective_connectivity_dissimilarity : entry by entry, for corresponding neurons.
    dissimilarity : the Connector paper's measure.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import LowRankRNN
    >>> rng = np.random.default_rng(0)
    >>> a = LowRankRNN(rng.standard_normal((100, 1)), rng.standard_normal((100, 1)))
    >>> order = rng.permutation(100)
    >>> shuffled = LowRankRNN(a.m[order], a.n[order])
    >>> round(effective_connectivity_dissimilarity(a, shuffled), 12)
    0.0
    """
    _check_networks_and_metric(a, b, metric)
    rng = check_random_state(random_state)
    subsets = []
    for network in (a, b):
        if n_neurons is None:
            subsets.append(None)
            continue
        check_int(n_neurons, "n_neurons", minimum=2, owner="effective_connectivity_dissimilarity")
        count = min(int(n_neurons), network.n_neurons)
        subsets.append(np.sort(rng.choice(network.n_neurons, count, replace=False)))
    sizes = [network.n_neurons if subset is None else len(subset) for network, subset in zip((a, b), subsets)]
    check_allocation(
        8.0 * 2 * (sizes[0] ** 2 + sizes[1] ** 2),
        f"The effective-connectivity baseline of networks of {sizes[0]} and {sizes[1]} neurons: a dense N x N "
        "matrix per network",
        "Give n_neurons (e.g. n_neurons=2000) to compare the J_eff of random subsets of neurons.",
    )
    qa = _sorted_effective_connectivity(a, subsets[0])
    qb = _sorted_effective_connectivity(b, subsets[1])
    size = min(qa.size, qb.size)
    qa, qb = _quantiles(qa, size), _quantiles(qb, size)
    if metric == "mse":
        return float(np.mean((qa - qb) ** 2))
    if qa[0] == qa[-1] or qb[0] == qb[-1]:
        raise ValueError("The correlation of effective connectivities is undefined: one network's J_eff has no "
                         "variance (all entries equal). Use metric='mse'.")
    return float(1.0 - np.corrcoef(qa, qb)[0, 1])


def paired_effective_connectivity_dissimilarity(a, b, *, metric="correlation"):
    """The baseline of Valente et al. (2022) on paired neurons: compare effective connectivities entry by entry.

    ::

        J_eff = M Nm_P^T / N,   Nm_P = projection of Nm on span(M, I)
        correlation: 1 - corr(vec J_eff(a), vec J_eff(b))
        mse:         mean over the N^2 entries of (J_eff(a) - J_eff(b))^2

    computed from the factors in O(N R^2) (no N x N matrix). It needs
    one-to-one neurons (same N, same order): a network against a permuted
    copy of itself is far from 0 here. :func:`effective_connectivity_dissimilarity`
    (sorted entries, as the Connector paper's Figure 4) and
    :func:`dissimilarity` do not pair neurons.

    Parameters
    ----------
    a, b : LowRankRNN
    metric : {"correlation", "mse"}, default="correlation"

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``a`` or ``b`` is not a LowRankRNN.
    ValueError
        If ``metric`` is not "correlation" or "mse", or the networks differ in
        N (unpaired neurons: use :func:`effective_connectivity_dissimilarity`).

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian, LowRankRNN
    >>> network = Gaussian([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]], rank=1).sample(200, random_state=0)
    >>> order = np.random.default_rng(1).permutation(200)
    >>> permuted = LowRankRNN(network.m[order], network.n[order])  # the same network, neurons relabelled
    >>> paired_effective_connectivity_dissimilarity(network, network)
    0.0
    >>> round(paired_effective_connectivity_dissimilarity(network, permuted), 2)  # pairing fails
    1.0
    """
    _check_networks_and_metric(a, b, metric)
    if a.n_neurons != b.n_neurons:
        raise ValueError(f"The paired effective-connectivity baseline compares neuron by neuron: a and b must have "
                         f"the same number of neurons. Got {a.n_neurons} and {b.n_neurons}; use "
                         "effective_connectivity_dissimilarity() or dissimilarity() for networks of different sizes.")
    N = a.n_neurons
    ma, mb = a.m.astype(np.float64), b.m.astype(np.float64)
    pa, pb = _projected_left_factors(a), _projected_left_factors(b)

    def inner(m1, p1, m2, p2):
        # <m1 p1^T, m2 p2^T>_F / N^2 = sum((m1^T m2) * (p1^T p2)) / N^2, then / N^2 more for the mean.
        return float(np.sum((m1.T @ m2) * (p1.T @ p2))) / N**4

    def mean(m1, p1):
        return float(m1.sum(axis=0) @ p1.sum(axis=0)) / N**3

    if metric == "mse":
        return inner(ma, pa, ma, pa) + inner(mb, pb, mb, pb) - 2 * inner(ma, pa, mb, pb)
    mean_a, mean_b = mean(ma, pa), mean(mb, pb)
    var_a = inner(ma, pa, ma, pa) - mean_a**2
    var_b = inner(mb, pb, mb, pb) - mean_b**2
    if var_a <= 0 or var_b <= 0:
        raise ValueError("The correlation of effective connectivities is undefined: one network's J_eff has no "
                         "variance (all entries equal). Use metric='mse'.")
    covariance = inner(ma, pa, mb, pb) - mean_a * mean_b
    return 1.0 - covariance / math.sqrt(var_a * var_b)


__all__ = ["SinkhornConvergenceWarning", "conditional_mean_of", "dissimilarity", "effective_connectivity_dissimilarity",
           "paired_effective_connectivity_dissimilarity", "sinkhorn_divergence"]
