"""Comparing connectivity distributions (theory section 4).

:func:`dissimilarity` is the paper's measure for two distributions of any
network sizes::

    D(p, q) = S_eps(p(m, I, b), q(m, I, b)) + E_{(m, I, b)}[ |nbar_p(m, I, b) - nbar_q(m, I, b)|^2 ]

S_eps is the debiased Sinkhorn divergence (GeomLoss, cost ``|x - y|^2 / 2``,
blur 0.05) between samples of the two (m, I, b) marginals; the second term
compares the conditional means of n, the only part of p(n | m, I, b) the
dynamics determine (theory section 3, step 2).

:func:`effective_connectivity_dissimilarity` is the baseline of Valente et
al. (2022) as the Connector paper's Figure 4 uses it: it compares the
distributions of the entries of the two effective connectivities (sorted
entries), so neurons need not correspond and a network against a permuted
copy of itself gives 0. :func:`paired_effective_connectivity_dissimilarity`
compares them entry by entry, for networks whose neurons correspond one to
one.

geomloss and torch are imported when :func:`dissimilarity` runs.
"""

import math

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


def sinkhorn_divergence(x, y, *, blur=0.05, scaling=0.9, n_threads=1):
    """Debiased Sinkhorn divergence between two point clouds (GeomLoss, p = 2).

    ::

        S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2,
        cost(x, y) = |x - y|^2 / 2,  eps = blur^2

    (so S_eps ~ W_2^2 / 2 for small blur). ``scaling`` is the epsilon-scaling
    ratio of GeomLoss's solver; its default 0.5 anneals coarsely enough to
    give slightly negative values on some inputs, so it is set explicitly.
    Values below 0 (rounding, for identical clouds) are returned as 0.

    Parameters
    ----------
    x : array-like of shape (n, d)
    y : array-like of shape (k, d)
    blur : float, default=0.05
    scaling : float in (0, 0.99], default=0.9
    n_threads : int or None, default=1
        torch CPU threads during the solve (None: torch's setting). On 1,000
        points of a 2-D mixture, one thread took 4.4 s and two 12.7 s on a
        busy 2-core machine.

    Returns
    -------
    float
    """
    from .flows import torch, torch_threads  # a clear ImportError when torch is missing

    try:
        from geomloss import SamplesLoss
    except ImportError as exc:
        from . import missing_dependency

        raise missing_dependency("geomloss") from exc

    n_threads = check_n_threads(n_threads, "sinkhorn_divergence", allow_none=True)
    blur, scaling = _check_sinkhorn_params(blur, scaling, "sinkhorn_divergence")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) == 0 or len(y) == 0:
        raise ValueError(f"x and y must be non-empty point clouds of shape (n, d) and (k, d) with the same d. "
                         f"Got shapes {x.shape} and {y.shape}.")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must contain only finite values.")
    # The tensorized Sinkhorn keeps the (n + k)^2 cost and kernel matrices (float64) in memory.
    check_allocation(8 * 4 * (len(x) + len(y)) ** 2, f"sinkhorn_divergence of {len(x)} and {len(y)} points",
                     "Use fewer samples (n_samples of dissimilarity).")
    # GeomLoss takes the log of the clouds' diameter for its epsilon schedule,
    # which is 0 for clouds that are one and the same point: give it at least blur.
    both = np.vstack([x, y])
    diameter = max(float(np.linalg.norm(both.max(axis=0) - both.min(axis=0))), blur)
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


def dissimilarity(p, q, *, n_samples=1000, random_state=0, blur=0.05, scaling=0.9, n_threads=1, return_terms=False):
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
    scaling, n_threads
        See :func:`sinkhorn_divergence`.
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
        ``scaling``, ``n_samples`` or ``n_threads`` is out of range.
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
    _check_sinkhorn_params(blur, scaling, _OWNER)  # before any sampling
    rng = check_random_state(random_state)
    rows_p, _ = p.sample_rows(n_samples, rng)
    rows_q, _ = q.sample_rows(n_samples, rng)
    x_p, x_q = _mIb(rows_p, layout_p), _mIb(rows_q, layout_q)
    sinkhorn = sinkhorn_divergence(x_p, x_q, blur=blur, scaling=scaling, n_threads=n_threads)
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


__all__ = ["conditional_mean_of", "dissimilarity", "effective_connectivity_dissimilarity",
           "paired_effective_connectivity_dissimilarity", "sinkhorn_divergence"]
