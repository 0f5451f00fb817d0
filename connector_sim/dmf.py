"""Dynamic mean field of low-rank plus random networks (theory section 8; Mastrogiuseppe & Ostojic 2018).

For J = g chi + m n^T / N (:class:`~connector_sim.sparse.LowRankPlusRandomRNN`),
chi_ij ~ N(0, 1 / N), rows (m_i, n_i, I_i, b_i) drawn from a
:class:`~connector_sim.Gaussian` (any rank, means and covariances), and a
constant input v along I, a unit's input is Gaussian over units and time::

    x_i(t) = m_i . kappa + I_i . v + b_i + eta_i(t)
    mu     = E[m] . kappa + E[I] . v + E[b]                 (population mean)
    S      = a^T Cov(m, I, b) a,  a = [kappa; v; 1]         (static low-rank variance)
    kappa  = E[n] <phi> + Cov(n, x) <phi'>,  Cov(n, x) = Cov(n, (m, I, b)) a   (Stein)

- stationary states: Delta_0 = g^2 <phi^2>(mu, Delta_0) + S;
- chaotic states: Delta_inf = g^2 int Dz [int Dx phi]^2 + S and the energy
  (Delta_0^2 - Delta_inf^2) / 2 = g^2 (<Phi^2> - int Dz [int Dx Phi]^2) + S (Delta_0 - Delta_inf),
  the averages over x = mu + sqrt(Delta_0 - Delta_inf) x + sqrt(Delta_inf) z;
- stability of a stationary state: the bulk radius g sqrt(<phi'^2>) and the
  outliers, eigenvalues of an (R + 1) x (R + 1) matrix (theory section 8),
  both against 1.

Public: :class:`DMF` (the model), :func:`stationary_solutions`,
:func:`chaotic_solutions`, :func:`stability`, :func:`critical_lines` (gB and
gC against structure), :func:`phase_diagram`, :func:`simulated_phase_diagram`,
:func:`plot_phase_diagram`, :func:`rank_one_structure`.
"""

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_array, check_int, check_nonnegative_scalar
from .distributions import Gaussian
from .mean_field import AVERAGE_RULES, _check_closed_form, _double_average, _single_average

#: Labels of the four regions of the phase diagram (theory section 8).
DMF_REGIMES = ("decaying", "structured", "structured chaotic", "homogeneous chaotic")

#: Default nodes per piece of the accurate rule in the solvers (1e-14 of order 64 on the tested range).
DMF_ORDER = 24


def _real(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"The {name!r} parameter of {owner} must be a finite real number. Got {value!r} instead.")
    return float(value)


@dataclass(frozen=True)
class StationarySolution:
    """A stationary solution of the mean field and its stability.

    Attributes
    ----------
    kappa : ndarray of shape (R,)
    mu : float
        Population mean of the inputs.
    delta0 : float
        Their variance over units (static low-rank part S plus g^2 <phi^2>).
    static_variance : float
        S, the part of delta0 from the spread of the loadings.
    branch : {"homogeneous", "structured"}
        kappa = 0 or not.
    outliers : ndarray, complex
        The outlier eigenvalues of J phi'(x) (outside the bulk).
    bulk_radius : float
        g sqrt(<phi'^2>).
    stable : bool
        All outliers and the bulk have real part / radius < 1.
    """

    kappa: np.ndarray
    mu: float
    delta0: float
    static_variance: float
    branch: str
    outliers: np.ndarray
    bulk_radius: float
    stable: bool


@dataclass(frozen=True)
class ChaoticSolution:
    """A chaotic solution of the dynamic mean field.

    Attributes
    ----------
    kappa : ndarray of shape (R,)
        Time-averaged latent (constant at N -> infinity).
    mu : float
    delta0 : float
        Total variance over units and time, Delta(0).
    delta_inf : float
        Long-lag autocovariance Delta(infinity): the static part (S plus the
        quenched random part); delta0 - delta_inf is the fluctuating variance.
    static_variance : float
        S.
    branch : {"homogeneous", "structured"}
    """

    kappa: np.ndarray
    mu: float
    delta0: float
    delta_inf: float
    static_variance: float
    branch: str


class DMF:
    """The mean-field model of J = g chi + m n^T / N with Gaussian rows.

    Parameters
    ----------
    distribution : Gaussian
        Rows [m, n, I, b] (:class:`~connector_sim.Gaussian`, any rank, inputs, bias).
    g : float
        Strength of the random part (>= 0).
    inputs : array-like of shape (D,), optional
        Constant input v along I (default 0).
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}, default="tanh"
    rule : {"accurate", "hermite"}, default="accurate"
        Quadrature of the Gaussian averages (:func:`connector_sim.mean_field.gaussian_average`).
    order : int, default=24
        Its nodes (per piece for "accurate": 1e-14 of the order-64 values on the tested range).

    Raises
    ------
    TypeError
        If ``distribution`` is not a Gaussian or ``g`` not a number.
    ValueError
        If ``g`` < 0, ``inputs`` has the wrong length, or ``activation`` /
        ``rule`` is unknown.

    Examples
    --------
    >>> model = DMF(rank_one_structure(2.0, kind="covariance", variance=3.0), g=0.5)
    >>> [round(float(s.kappa[0]), 3) for s in stationary_solutions(model)]
    [-0.745, 0.0, 0.745]
    """

    def __init__(self, distribution, g, *, inputs=None, activation="tanh", rule="accurate", order=DMF_ORDER):
        owner = "DMF"
        if not isinstance(distribution, Gaussian):
            raise TypeError(f"The 'distribution' parameter of {owner} must be a connector_sim.Gaussian over rows "
                            f"[m, n, I, b] (use rank_one_structure). Got {type(distribution).__name__} instead.")
        self.distribution = distribution
        self.g = check_nonnegative_scalar(g, "g", owner=owner)
        layout = distribution.layout
        D = layout.n_inputs
        self.inputs = np.zeros(D) if inputs is None else check_array(inputs, "inputs", ndim=1, dtype=np.float64,
                                                                       shape=(D,))
        _check_closed_form(activation)
        self.activation = activation
        if rule not in AVERAGE_RULES:
            raise ValueError(f"The 'rule' parameter of {owner} must be one of {list(AVERAGE_RULES)}. "
                             f"Got {rule!r} instead.")
        self.rule = rule
        self.order = check_int(order, "order", minimum=2, maximum=4096, owner=owner)
        mean, cov = distribution.mean, distribution.cov
        z = layout.mIb
        self.rank = layout.rank
        self._mean_z, self._cov_zz = mean[z], cov[np.ix_(z, z)]
        self._mean_n, self._cov_nz = mean[layout.n], cov[layout.n][:, z]
        self._mean_m, self._cov_mz = mean[layout.m], cov[layout.m][:, z]
        self._cov_nm = cov[layout.n, layout.m]

    def __repr__(self):
        return (f"DMF(rank={self.rank}, g={self.g:.6g}, activation={self.activation!r}, rule={self.rule!r}, "
                f"order={self.order})")

    # --- averages ---------------------------------------------------------------------------------

    def _coarse(self):
        """The same model with Gauss-Hermite of order 32 (to locate solutions before polishing them)."""
        if self.rule == "hermite":
            return self
        return DMF(self.distribution, self.g, inputs=self.inputs, activation=self.activation, rule="hermite",
                   order=32)

    def _avg(self, quantity, mu, delta, power=0):
        from .mean_field import AVERAGE_QUANTITIES

        mu, s = np.broadcast_arrays(np.asarray(mu, float), np.sqrt(np.maximum(np.asarray(delta, float), 0.0)))
        return _single_average(self.activation, AVERAGE_QUANTITIES[quantity], mu, s, power, self.rule, self.order)

    def _double(self, quantity, mu, delta_inf, delta0):
        from .mean_field import AVERAGE_QUANTITIES

        mu, di, d0 = np.broadcast_arrays(*(np.asarray(a, float) for a in (mu, delta_inf, delta0)))
        return _double_average(self.activation, AVERAGE_QUANTITIES[quantity], mu, np.sqrt(np.maximum(di, 0.0)),
                               np.sqrt(np.maximum(d0 - di, 0.0)), self.rule, self.order)

    def _a(self, kappa):
        kappa = np.atleast_2d(kappa)  # (P, R)
        parts = [kappa, np.broadcast_to(self.inputs, (len(kappa), len(self.inputs)))]
        if self.distribution.layout.bias:
            parts.append(np.ones((len(kappa), 1)))
        return np.hstack(parts)

    def moments(self, kappa):
        """(mu, S, Cov(n, x)) at latents ``kappa`` (shape (R,) or (P, R)): arrays over the P points."""
        a = self._a(np.asarray(kappa, float).reshape(-1, self.rank))
        mu = a @ self._mean_z
        S = np.einsum("pi,ij,pj->p", a, self._cov_zz, a)
        return mu, np.maximum(S, 0.0), a @ self._cov_nz.T

    def static_delta(self, kappa):
        """Delta_0 of the stationary state at latents kappa: the largest root of Delta = g^2 <phi^2> + S."""
        mu, S, _ = self.moments(kappa)
        return np.array([self._static_delta(m, s) for m, s in zip(mu, S)])

    def _static_delta(self, mu, S):
        g2 = self.g * self.g
        if g2 == 0.0:
            return S

        def h(delta):
            return g2 * float(self._avg("phi2", mu, delta)) + S - delta

        hi = S + g2 + 1.0
        while h(hi) > 0:
            hi = 2 * hi + 1.0
            if hi > 1e12:
                return float("nan")  # unbounded growth (e.g. relu with g > 1)
        # Largest root: scan down from hi for the first point with h >= 0, then bisect.
        grid = S + (hi - S) * np.geomspace(1.0, 1e-9, 60)
        values = g2 * self._avg("phi2", mu, grid) + S - grid
        above = np.flatnonzero(values >= 0)
        if not above.size:
            return S
        k = above[0]
        if k == 0:
            return float(grid[0])
        from scipy.optimize import brentq

        return brentq(h, grid[k], grid[k - 1], xtol=1e-14, rtol=1e-13)

    def recurrent(self, kappa, delta0):
        """E[n phi(x)] = E[n] <phi> + Cov(n, x) <phi'> at latents kappa (P, R) and total variances delta0 (P,)."""
        mu, _, cov_nx = self.moments(kappa)
        phi, dphi = self._avg("phi", mu, delta0), self._avg("dphi", mu, delta0)
        return phi[:, None] * self._mean_n[None] + cov_nx * dphi[:, None]


def rank_one_structure(structure, *, kind="mean", variance=1.0, input_overlaps=None):
    """Rank-one Gaussian rows whose outlier n^T m / N -> ``structure``.

    - ``kind="mean"``: E[m] = E[n] = sqrt(structure) (sign of structure on n),
      Var m = Var n = ``variance``, Cov(m, n) = 0 (Mastrogiuseppe & Ostojic
      Fig. 2: structure along the mean, M_m M_n).
    - ``kind="covariance"``: zero means, Var m = ``variance``, Cov(m, n) =
      structure, Var n = ``variance`` or, where that is not positive
      definite, just enough more (Var n does not enter the mean field: n
      appears linearly).

    Parameters
    ----------
    structure : float
    kind : {"mean", "covariance"}, default="mean"
    variance : float, default=1
    input_overlaps : tuple of two floats, optional
        (Cov(m, I), Cov(n, I)) of one unit-variance input I (inputs along m,
        along n, or orthogonal with (0, 0)); None: no input.

    Returns
    -------
    Gaussian

    Raises
    ------
    ValueError
        If ``kind`` is unknown, ``variance`` <= 0, or the input overlaps make the covariance indefinite.
    """
    owner = "rank_one_structure"
    structure = _real(structure, "structure", owner)
    variance = _real(variance, "variance", owner)
    if variance <= 0:
        raise ValueError(f"The 'variance' parameter of {owner} must be > 0. Got {variance} instead.")
    if kind == "mean":
        root = math.sqrt(abs(structure))
        mean, cov_mn = [root, math.copysign(root, structure)], 0.0
    elif kind == "covariance":
        mean, cov_mn = [0.0, 0.0], structure
    else:
        raise ValueError(f"The 'kind' parameter of {owner} must be 'mean' or 'covariance'. Got {kind!r} instead.")
    # Var n does not enter the mean field (n appears linearly): raised where needed for a valid covariance.
    c_mi, c_ni = (0.0, 0.0) if input_overlaps is None else (float(c) for c in input_overlaps)
    if variance - c_mi**2 <= 0:
        raise ValueError(f"The input overlaps of {owner} need Cov(m, I)^2 < Var m (a positive-definite covariance "
                         f"of m and a unit-variance I). Got Cov(m, I) = {c_mi}, Var m = {variance}.")
    schur = c_ni**2 + (cov_mn - c_mi * c_ni) ** 2 / (variance - c_mi**2)
    variance_n = max(variance, 1.01 * schur + 1e-12)
    cov = [[variance, cov_mn], [cov_mn, variance_n]]
    if input_overlaps is None:
        return Gaussian(mean, cov, rank=1)
    cov = [[variance, cov_mn, c_mi], [cov_mn, variance_n, c_ni], [c_mi, c_ni, 1.0]]
    return Gaussian(mean + [0.0], cov, rank=1, n_inputs=1)


# --- stationary solutions and their stability ------------------------------------------------------


def _stein_pair(model, mu, delta0, f, mean_y, mean_w, cov_yw, cov_yx, cov_wx):
    """E[y w f(x)] for jointly Gaussian (y, w, x), x ~ N(mu, delta0), from <f>, <(x - mu) f>, <(x - mu)^2 f>."""
    f0 = float(model._avg(f, mu, delta0))
    if delta0 <= 0:
        return (mean_y * mean_w + cov_yw) * f0
    f1, f2 = float(model._avg(f, mu, delta0, 1)), float(model._avg(f, mu, delta0, 2))
    by, bw = cov_yx / delta0, cov_wx / delta0
    return (mean_y * mean_w + cov_yw - cov_yx * cov_wx / delta0) * f0 + (mean_y * bw + mean_w * by) * f1 + by * bw * f2


def stability_matrix(model, kappa, delta0=None):
    """The (R + 1) x (R + 1) matrix whose eigenvalues outside the bulk are the outliers of J phi'(x*).

    At a stationary state x_i = m_i . kappa + I_i . v + b_i + eta_i, eta_i ~
    N(0, Delta_eta = Delta_0 - S) (theory section 8)::

        L = [[ E[n m^T phi'],        E[n eta phi'] ],
             [ E[m phi phi']^T / r2, E[eta phi phi'] / r2 ]],   r2 = <phi^2>

    From the eigenvector u = (lambda - g chi S)^-1 m c of J S: the random input
    to u splits into alpha eta_i (correlated with the fixed point's own random
    input) and an independent part that averages out against n. Without the
    random part (g = 0) L reduces to E[n m^T phi'] (the dense low-rank outliers).

    Returns
    -------
    ndarray of shape (R + 1, R + 1) (R x R when g = 0 or <phi^2> = 0)
    """
    kappa = np.asarray(kappa, float).reshape(model.rank)
    mu, S, cov_nx = (v[0] for v in model.moments(kappa))
    delta0 = float(model.static_delta(kappa)[0]) if delta0 is None else float(delta0)
    a = model._a(kappa)[0]
    cov_mx = model._cov_mz @ a
    R = model.rank
    A = np.empty((R, R))
    for r in range(R):
        for q in range(R):
            A[r, q] = _stein_pair(model, mu, delta0, "dphi", model._mean_n[r], model._mean_m[q], model._cov_nm[r, q],
                                  cov_nx[r], cov_mx[q])
    r2 = float(model._avg("phi2", mu, delta0))
    delta_eta = max(delta0 - S, 0.0)
    if model.g == 0.0 or r2 <= 1e-300:
        return A
    b = np.array([_stein_pair(model, mu, delta0, "dphi", model._mean_n[r], 0.0, 0.0, cov_nx[r], delta_eta)
                  for r in range(R)])
    phi_dphi0 = float(model._avg("phi_dphi", mu, delta0))
    phi_dphi1 = float(model._avg("phi_dphi", mu, delta0, 1)) if delta0 > 0 else 0.0
    c = model._mean_m * phi_dphi0 + (cov_mx / delta0 if delta0 > 0 else 0.0) * phi_dphi1
    e = (delta_eta / delta0 if delta0 > 0 else 0.0) * phi_dphi1
    top = np.hstack([A, b[:, None]])
    bottom = np.append(c / r2, e / r2)
    return np.vstack([top, bottom])


def stability(model, kappa, delta0=None):
    """(outliers, bulk_radius, stable) of the stationary state at ``kappa`` (theory section 8).

    bulk_radius = g sqrt(<phi'^2>) (circular law of g chi diag(phi')); the
    outliers are the eigenvalues of :func:`stability_matrix` with modulus
    above the bulk radius; stable if every outlier has real part < 1 and the
    bulk radius is < 1 (the eigenvalues of the linearised dynamics -1 + J phi'
    have negative real parts).
    """
    kappa = np.asarray(kappa, float).reshape(model.rank)
    mu, _, _ = model.moments(kappa)
    delta0 = float(model.static_delta(kappa)[0]) if delta0 is None else float(delta0)
    radius = model.g * math.sqrt(float(model._avg("dphi2", mu[0], delta0)))
    values = np.linalg.eigvals(stability_matrix(model, kappa, delta0))
    outliers = values[np.abs(values) > radius * (1 + 1e-9)]
    outliers = outliers[np.argsort(-outliers.real)].astype(complex)
    stable = bool(radius < 1.0 and np.all(outliers.real < 1.0))
    return outliers, radius, stable


def _fixed_points(function, rank, scale, starts=()):
    """Roots of function(kappa) = 0: a sign scan for rank one, root finding from starts otherwise."""
    from scipy.optimize import brentq, root

    found = []
    if rank == 1:
        limit = scale
        for _ in range(12):
            if function(np.array([limit]))[0] < 0 and function(np.array([-limit]))[0] > 0:
                break
            limit *= 2.0
        grid = np.linspace(-limit, limit, 81)
        values = np.array([function(np.array([k]))[0] for k in grid])
        for k in range(len(grid)):
            if values[k] == 0.0:
                found.append(np.array([grid[k]]))
            elif k + 1 < len(grid) and values[k] * values[k + 1] < 0:
                found.append(np.array([brentq(lambda x: function(np.array([x]))[0], grid[k], grid[k + 1],
                                              xtol=1e-13, rtol=1e-12)]))
    else:
        for start in starts:
            solution = root(function, np.asarray(start, float), method="hybr", options={"xtol": 1e-12})
            if solution.success and np.max(np.abs(function(solution.x))) < 1e-8:
                found.append(solution.x)
    unique = []
    for point in found:
        if not any(np.max(np.abs(point - other)) < 1e-6 * max(1.0, scale) for other in unique):
            unique.append(point)
    return sorted(unique, key=lambda p: tuple(p))


def _starts(model, scale):
    rng = np.random.default_rng(0)
    R = model.rank
    return [np.zeros(R)] + [scale * v for v in rng.standard_normal((8 * R, R))]


def _scale(model):
    """A latent scale: 1 + sum abs(E[n]) + the structure."""
    return 1.0 + float(np.abs(model._mean_n).sum()) + float(np.abs(model._cov_nm).sum()) + float(
        np.abs(np.outer(model._mean_n, model._mean_m)).sum())


def stationary_solutions(model):
    """Every stationary solution of the mean field (theory section 8), with its stability.

    kappa solves kappa = E[n] <phi>(mu, Delta_0) + Cov(n, x) <phi'>(mu, Delta_0)
    with Delta_0(kappa) the largest root of Delta_0 = g^2 <phi^2> + S: for rank
    one by a sign scan of the whole line (every branch: kappa = 0 and the
    symmetric pair +-kappa of odd phi), for higher rank by root finding from
    0 and 8 R random starts.

    Parameters
    ----------
    model : DMF

    Returns
    -------
    list of StationarySolution
        Sorted by kappa.
    """
    if not isinstance(model, DMF):
        raise TypeError(f"The 'model' parameter of stationary_solutions must be a DMF. Got {type(model).__name__}.")

    def residual(kappa):
        delta = model.static_delta(kappa)
        return model.recurrent(kappa, delta)[0] - kappa

    scale = _scale(model)
    out = []
    for kappa in _fixed_points(residual, model.rank, scale, _starts(model, scale)):
        delta0 = float(model.static_delta(kappa)[0])
        mu, S, _ = model.moments(kappa)
        outliers, radius, stable = stability(model, kappa, delta0)
        branch = "homogeneous" if np.max(np.abs(kappa)) < 1e-9 else "structured"
        out.append(StationarySolution(kappa=kappa, mu=float(mu[0]), delta0=delta0, static_variance=float(S[0]),
                                      branch=branch, outliers=outliers, bulk_radius=radius, stable=stable))
    return out


# --- chaotic solutions -----------------------------------------------------------------------------


def _chaotic_residual(model, mu, S, delta0, delta_inf):
    """(E1, E2 / (Delta_0 - Delta_inf)) of the chaotic equations at arrays (delta0, delta_inf)."""
    g2 = model.g**2
    e1 = g2 * model._double("phi", mu, delta_inf, delta0) + S - delta_inf
    gap = delta0 - delta_inf
    energy = (0.5 * (delta0 + delta_inf) - S) * gap - g2 * (model._avg("Phi2", mu, delta0)
                                                           - model._double("Phi", mu, delta_inf, delta0))
    return e1, energy / gap


def _delta_inf(model, mu, S, delta0):
    """The smallest root of Delta_inf = g^2 int Dz [int Dx phi]^2 + S in [S, Delta_0) (vectorised), nan if none.

    The right side minus Delta_inf is convex in Delta_inf (its derivative int Dz [int Dx phi']^2 grows
    with Delta_inf) and >= 0 at S: a grid finds its first sign change, regula falsi (Illinois) the root."""
    delta0 = np.asarray(delta0, float)
    lo = np.full(delta0.shape, float(S))
    f_lo = _chaotic_residual(model, mu, S, delta0, lo)[0]
    out = np.full(delta0.shape, np.nan)
    out[f_lo <= 1e-14] = S
    hi, f_hi = np.full(delta0.shape, np.nan), np.full(delta0.shape, np.nan)
    # roots close to Delta_0 (small fluctuations, near the onset of chaos): geometric towards it
    for fraction in np.concatenate([np.linspace(0.0, 0.9, 7)[1:], 1.0 - np.geomspace(0.1, 1e-9, 10)]):
        point = S + fraction * (delta0 - S)
        value = _chaotic_residual(model, mu, S, delta0, point)[0]
        new = np.isnan(hi) & np.isnan(out) & (value < 0)
        hi[new], f_hi[new] = point[new], value[new]
        keep = np.isnan(hi) & np.isnan(out)
        lo[keep], f_lo[keep] = point[keep], value[keep]
    todo = ~np.isnan(hi)
    side = np.zeros(delta0.shape)
    for _ in range(60):
        if not todo.any():
            break
        x = np.where(todo, (lo * f_hi - hi * f_lo) / np.where(todo, f_hi - f_lo, 1.0), lo)
        value = _chaotic_residual(model, mu, S, delta0, x)[0]
        pos = todo & (value >= 0)
        neg = todo & (value < 0)
        lo[pos], f_lo[pos] = x[pos], value[pos]
        hi[neg], f_hi[neg] = x[neg], value[neg]
        # Illinois: halve the value kept twice on the same side
        f_hi[pos & (side > 0)] *= 0.5
        f_lo[neg & (side < 0)] *= 0.5
        side = np.where(pos, 1.0, np.where(neg, -1.0, side))
        todo = todo & (hi - lo > 1e-13 * np.maximum(1.0, hi)) & (np.abs(value) > 1e-15)
        out[~np.isnan(hi)] = x[~np.isnan(hi)]
    return out


def _chaotic_at(model, mu, S, delta_static):
    """(Delta_0, Delta_inf) of the chaotic state at fixed (mu, S), or None: Delta_0 in (S, Delta_static)."""
    from scipy.optimize import brentq

    if not delta_static > S * (1 + 1e-9) + 1e-12:
        return None
    # Near the onset of chaos the chaotic Delta_0 lies just below the stationary one: geometric towards it.
    fractions = np.concatenate([np.linspace(0.02, 0.9, 8), 1.0 - np.geomspace(0.1, 1e-7, 12)])
    grid = S + (delta_static - S) * fractions
    dinf = _delta_inf(model, mu, S, grid)
    ok = ~np.isnan(dinf) & (grid - dinf > 1e-10)
    first = int(np.argmax(ok)) if ok.any() else -1
    if first > 0:
        # Delta_inf appears at a Delta_0 = b where its two roots merge; the chaotic Delta_0 is often just
        # above b: find b by bisection and refine geometrically from it.
        lo, hi = grid[first - 1], grid[first]
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if np.isnan(_delta_inf(model, mu, S, np.array([mid]))[0]):
                lo = mid
            else:
                hi = mid
        extra = hi + (grid[first] - hi) * np.concatenate([[0.0], np.geomspace(1e-9, 0.5, 14)])
        grid = np.concatenate([extra, grid[first:]])
        dinf = np.concatenate([_delta_inf(model, mu, S, extra), dinf[first:]])
        ok = ~np.isnan(dinf) & (grid - dinf > 1e-10)
    if not ok.any():
        return None
    energy = np.full(grid.shape, np.nan)
    energy[ok] = _chaotic_residual(model, mu, S, grid[ok], dinf[ok])[1]
    for k in range(len(grid) - 1):
        if ok[k] and ok[k + 1] and energy[k] * energy[k + 1] < 0:
            def f(d0):
                di = _delta_inf(model, mu, S, np.array([d0]))[0]
                if np.isnan(di):
                    return -1.0  # below b: where the inner root disappears
                return _chaotic_residual(model, mu, S, np.array([d0]), np.array([di]))[1][0]

            try:
                d0 = brentq(f, grid[k], grid[k + 1], xtol=1e-9, rtol=1e-9)
            except ValueError:  # the sign at a bracket end moved with the inner root's last digits
                continue
            di = float(_delta_inf(model, mu, S, np.array([d0]))[0])
            if np.isfinite(di):
                return d0, di
    return None


def _polish(model, kappa, delta0, delta_inf):
    """Solve the R + 2 chaotic equations together from a nearby point (hybr); None if that fails."""
    from scipy.optimize import root

    R = model.rank

    def equations(x):
        kappa, d0, di = x[:R], x[R], x[R + 1]
        if not d0 > di:
            return np.full(R + 2, 1e3)
        mu, S, _ = (v[0] for v in model.moments(kappa))
        e1, e2 = _chaotic_residual(model, mu, S, np.array([d0]), np.array([di]))
        return np.concatenate([model.recurrent(kappa, np.array([d0]))[0] - kappa, e1, e2])

    x0 = np.concatenate([np.asarray(kappa, float), [delta0, delta_inf]])
    solution = root(equations, x0, method="hybr", options={"xtol": 1e-11})
    if not solution.success or np.max(np.abs(equations(solution.x))) > 1e-8:
        return None
    return solution.x[:R], float(solution.x[R]), float(solution.x[R + 1])


def chaotic_solutions(model):
    """The chaotic solutions of the dynamic mean field (theory section 8).

    For each kappa, (Delta_0, Delta_inf) solve the two equations of the
    effective potential (Delta_inf: its smallest root above S, a maximum of
    the potential; Delta_0 in (S, Delta_static(kappa)) by a sign scan and
    Brent's method); kappa then solves kappa = E[n] <phi>(mu, Delta_0) +
    Cov(n, x) <phi'>(mu, Delta_0) (rank one: sign scan of the line; higher
    rank: root finding from 0 and the stationary branches).

    Returns
    -------
    list of ChaoticSolution
        Empty when g sqrt(<phi'^2>) < 1 everywhere (no chaos).
    """
    if not isinstance(model, DMF):
        raise TypeError(f"The 'model' parameter of chaotic_solutions must be a DMF. Got {type(model).__name__}.")
    if model.g == 0.0:
        return []
    R = model.rank
    starts = []
    # the chaotic state around kappa = 0 (Sompolinsky, Crisanti & Sommers with the low-rank terms)
    mu, S, _ = (v[0] for v in model.moments(np.zeros(R)))
    at_rest = _chaotic_at(model._coarse(), mu, S, model._static_delta(mu, S))
    if at_rest is not None:
        starts.append((np.zeros(R), *at_rest))
    # structured chaos: close to each stationary state whose bulk exceeds 1, with a range of fluctuations
    for state in stationary_solutions(model):
        if state.bulk_radius < 1.0 or state.branch != "structured":
            continue
        spread = state.delta0 - state.static_variance
        for fraction in (0.02, 0.1, 0.3):
            starts.append((state.kappa, state.delta0, state.delta0 - fraction * spread))
        if at_rest is not None:
            starts.append((0.5 * state.kappa, 0.5 * (state.delta0 + at_rest[0]), 0.5 * state.delta0))
    out = []
    for kappa, d0, di in starts:
        polished = _polish(model, kappa, d0, di)
        if polished is None:
            continue
        kappa, d0, di = polished
        mu, S, _ = (v[0] for v in model.moments(kappa))
        if d0 - di < 1e-9 * max(1.0, d0) or di < S - 1e-9 * max(1.0, S):
            continue
        if any(np.max(np.abs(kappa - c.kappa)) < 1e-6 * max(1.0, float(np.max(np.abs(kappa)))) for c in out):
            continue
        branch = "homogeneous" if np.max(np.abs(kappa)) < 1e-7 else "structured"
        out.append(ChaoticSolution(kappa=np.asarray(kappa, float), mu=float(mu), delta0=d0, delta_inf=di,
                                   static_variance=float(S), branch=branch))
    return sorted(out, key=lambda c: tuple(c.kappa))


# --- lines and the phase diagram -------------------------------------------------------------------


def _structured_static(model):
    """The stable structured stationary state with the largest kappa (or the largest one), or None.

    Rank one: the largest root of K(kappa) - kappa on kappa > 0 (a geometric scan down from the top,
    then Brent's method), else the full :func:`stationary_solutions`."""
    if model.rank == 1 and not model.inputs.any() and not model.distribution.layout.bias:
        from scipy.optimize import brentq

        def residual(k):
            kappa = np.array([k])
            return float(model.recurrent(kappa, model.static_delta(kappa))[0, 0] - k)

        top = 2.0 * _scale(model)
        grid = top * np.geomspace(1.0, 1e-6, 40)
        values = [residual(top)]
        k = 0
        for k in range(1, len(grid)):
            values.append(residual(grid[k]))
            if values[-1] > 0:
                break
        if values[-1] <= 0 or values[0] > 0:
            return None
        kappa = np.array([brentq(residual, grid[k], grid[k - 1], xtol=1e-13, rtol=1e-12)])
        delta0 = float(model.static_delta(kappa)[0])
        mu, S, _ = model.moments(kappa)
        outliers, radius, stable = stability(model, kappa, delta0)
        return StationarySolution(kappa=kappa, mu=float(mu[0]), delta0=delta0, static_variance=float(S[0]),
                                  branch="structured", outliers=outliers, bulk_radius=radius, stable=stable)
    solutions = [s for s in stationary_solutions(model) if s.branch == "structured"]
    if not solutions:
        return None
    solutions.sort(key=lambda s: (not s.stable, -float(np.linalg.norm(s.kappa))))
    return solutions[0]


def predicted_dmf_regime(model):
    """The regime of the DMF at one model (theory section 8): one of :data:`DMF_REGIMES`.

    ::

        decaying             a stable stationary state with kappa = 0
        structured           a stable stationary state with kappa != 0 (static structured activity)
        structured chaotic   no stable stationary state; a chaotic solution with kappa != 0
        homogeneous chaotic  no stable stationary state; only the chaotic solution with kappa = 0

    (A stable kappa != 0 state wins over a stable kappa = 0 one: the network
    started along m goes there.)
    """
    stationary = stationary_solutions(model)
    if any(s.stable and s.branch == "structured" for s in stationary):
        return "structured"
    if any(s.stable for s in stationary):
        return "decaying"
    chaotic = chaotic_solutions(model)
    if any(c.branch == "structured" for c in chaotic):
        return "structured chaotic"
    return "homogeneous chaotic"


@dataclass
class CriticalLines:
    """The lines of the (g, structure) phase diagram (theory section 8).

    Attributes
    ----------
    structures : ndarray
    g_bulk : ndarray
        gB: the g at which the structured stationary state's bulk radius
        g sqrt(<phi'^2>) reaches 1 (onset of structured chaos); nan if there
        is no structured state.
    g_outlier : ndarray
        gC: the g at which its leading outlier reaches 1 (nan where it stays
        below 1 up to gB).
    g_chaotic_structure : ndarray
        The g beyond which the chaotic solution has kappa = 0 only: the largest
        eigenvalue of (E[n] E[m]^T + Cov(n, m)) <phi'>(0, Delta_0^chaos(g)) reaches 1.
    structure_line : float
        The structure at which the outlier of the state at rest reaches 1 (= 1 for phi'(0) = 1).
    """

    structures: np.ndarray
    g_bulk: np.ndarray
    g_outlier: np.ndarray
    g_chaotic_structure: np.ndarray
    structure_line: float


def _bisect(predicate, lo, hi, tol=1e-4):
    """The boundary in [lo, hi] where predicate turns from False to True (nan if not bracketed)."""
    a, b = predicate(lo), predicate(hi)
    if a == b:
        return float("nan")
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if predicate(mid) == b:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def critical_lines(structures, *, kind="mean", variance=1.0, activation="tanh", g_max=4.0, tol=1e-3,
                   rule="accurate", order=DMF_ORDER, chaotic_line=True):
    """gB, gC and the structured-chaos line against the structure (rank one, :func:`rank_one_structure`).

    Parameters
    ----------
    structures : array-like of float
        Outlier values n^T m / N.
    kind, variance
        As in :func:`rank_one_structure`.
    activation : str, default="tanh"
    g_max : float, default=4
        Search range (0, g_max].
    tol : float, default=1e-3
        Bisection tolerance in g.
    rule, order
        As in :class:`DMF`.
    chaotic_line : bool, default=True
        Also compute ``g_chaotic_structure`` (nan otherwise).

    Returns
    -------
    CriticalLines
    """
    structures = check_array(structures, "structures", ndim=1, dtype=np.float64)
    g_max = _real(g_max, "g_max", "critical_lines")

    def model(structure, g):
        return DMF(rank_one_structure(structure, kind=kind, variance=variance), g, activation=activation, rule=rule,
                   order=order)

    def bulk_unstable(structure, g):
        state = _structured_static(model(structure, g))
        return state is None or state.bulk_radius >= 1.0

    def outlier_unstable(structure, g):
        state = _structured_static(model(structure, g))
        return state is None or (state.outliers.size > 0 and state.outliers.real.max() >= 1.0)

    def chaos_homogeneous(structure, g):
        m = model(structure, g)._coarse()  # Gauss-Hermite 32: the line to ~1e-4 in g, 20x faster
        mu, S, _ = (v[0] for v in m.moments(np.zeros(1)))
        solution = _chaotic_at(m, mu, S, m._static_delta(mu, S))
        if solution is None:
            return False
        dphi = float(m._avg("dphi", mu, solution[0]))
        return float(np.max(np.linalg.eigvals(np.outer(m._mean_n, m._mean_m) + m._cov_nm).real)) * dphi < 1.0

    gb, gc, gk = (np.full(structures.shape, np.nan) for _ in range(3))
    for i, structure in enumerate(structures):
        gb[i] = _bisect(lambda g: bulk_unstable(structure, g), 1e-3, g_max, tol)
        gc[i] = _bisect(lambda g: outlier_unstable(structure, g), 1e-3, g_max, tol)
        if gc[i] >= gb[i] - tol:
            gc[i] = np.nan  # the bulk goes first: the outlier line is not a boundary there
        if chaotic_line:
            gk[i] = _bisect(lambda g: chaos_homogeneous(structure, g), 1.0 + 1e-3, g_max, tol)
    slope = float(_single_average(activation, ("dphi",), np.zeros(1), np.zeros(1), 0, "hermite", 2)[0])
    return CriticalLines(structures=structures, g_bulk=gb, g_outlier=gc, g_chaotic_structure=gk,
                         structure_line=1.0 / slope if slope > 0 else float("inf"))


@dataclass
class PhaseDiagram:
    """The DMF regime over a (structure, g) grid, with simulations where run.

    Attributes
    ----------
    gs, structures : ndarray
    predicted : ndarray of str, shape (len(structures), len(gs))
        :func:`predicted_dmf_regime`.
    simulated : ndarray of str or None
        :func:`simulated_dmf_regime` of a finite network (same shape), or None.
    kappa : ndarray
        kappa of the predicted state (stationary or chaotic; the largest in absolute value).
    lines : CriticalLines or None
    settings : dict
    """

    gs: np.ndarray
    structures: np.ndarray
    predicted: np.ndarray
    kappa: np.ndarray
    simulated: object = None
    lines: object = None
    settings: dict = field(default_factory=dict)

    def agreement(self):
        """Fraction of simulated points whose regime matches the theory (nan without simulations)."""
        if self.simulated is None:
            return float("nan")
        return float(np.mean(self.predicted == self.simulated))

    def to_dict(self):
        """JSON-ready dict."""
        out = {"gs": self.gs.tolist(), "structures": self.structures.tolist(), "predicted": self.predicted.tolist(),
               "kappa": self.kappa.tolist(), "settings": dict(self.settings)}
        if self.simulated is not None:
            out["simulated"] = self.simulated.tolist()
            out["agreement"] = self.agreement()
        if self.lines is not None:
            out["lines"] = {k: np.asarray(v).tolist() if not np.isscalar(v) else v
                            for k, v in vars(self.lines).items()}
        return out


def phase_diagram(gs, structures, *, kind="mean", variance=1.0, activation="tanh", lines=True, rule="accurate",
                  order=DMF_ORDER):
    """The theory's regime over a grid of random strengths g and structures (rank one).

    Parameters
    ----------
    gs, structures : array-like of float
    kind, variance
        As in :func:`rank_one_structure`.
    activation : str
    lines : bool, default=True
        Also compute :func:`critical_lines` at ``structures``.
    rule, order
        As in :class:`DMF`.

    Returns
    -------
    PhaseDiagram
    """
    gs = check_array(gs, "gs", ndim=1, dtype=np.float64)
    structures = check_array(structures, "structures", ndim=1, dtype=np.float64)
    if not len(gs) or not len(structures):
        raise ValueError(f"phase_diagram needs at least one g and one structure. Got {len(gs)} and "
                         f"{len(structures)}.")
    predicted = np.empty((len(structures), len(gs)), dtype=object)
    kappa = np.zeros(predicted.shape)
    for i, structure in enumerate(structures):
        for j, g in enumerate(gs):
            model = DMF(rank_one_structure(structure, kind=kind, variance=variance), g, activation=activation,
                        rule=rule, order=order)
            predicted[i, j] = regime = predicted_dmf_regime(model)
            if regime in ("structured", "decaying"):
                states = [s for s in stationary_solutions(model) if s.stable]
            else:
                states = chaotic_solutions(model)
            kappa[i, j] = max((abs(float(s.kappa[0])) for s in states), default=0.0)
    return PhaseDiagram(gs=gs, structures=structures, predicted=predicted.astype(str), kappa=kappa,
                        lines=critical_lines(structures, kind=kind, variance=variance, activation=activation,
                                             g_max=float(gs.max()) * 1.5, rule=rule, order=order) if lines else None,
                        settings={"kind": kind, "variance": variance, "activation": activation})


# --- simulations of the finite network ---------------------------------------------------------------


def simulated_dmf_regime(network, *, overlap_z=5.0, **options):
    """The regime (one of :data:`DMF_REGIMES`) of a finite network, from simulation.

    :func:`connector_sim.sparse_dynamics.classify_activity` decides decaying /
    structured (static) / chaotic; a chaotic network is "structured chaotic"
    when its time-averaged state overlaps m beyond chance
    (abs(cos(x_bar, m)) sqrt(K) > ``overlap_z``, K recorded units: a state
    unrelated to m gives ~ N(0, 1)), else "homogeneous chaotic".

    Parameters
    ----------
    network : LowRankPlusRandomRNN
    overlap_z : float, default=5
    **options
        Passed to classify_activity.

    Returns
    -------
    (str, RegimeResult)
    """
    from .sparse_dynamics import classify_activity

    result = classify_activity(network, overlap_z=overlap_z, **options)
    regime = result.regime
    if regime == "chaotic":
        K = min(network.n_neurons, options.get("max_units", 4096))
        structured = np.abs(result.overlap) * math.sqrt(K) > overlap_z
        regime = "structured chaotic" if np.mean(structured) > 0.5 else "homogeneous chaotic"
    elif regime == "unstructured":
        regime = "decaying"  # static, no overlap with m: the theory's kappa = 0 state
    return regime, result


def sample_network(structure, g, n_neurons, *, kind="mean", variance=1.0, random_state=0, seed=1,
                   activation="tanh"):
    """A :class:`LowRankPlusRandomRNN` sampled from :func:`rank_one_structure` (whitened loadings: the
    sample means and covariance equal the population ones, so the outlier carries no sampling error)."""
    from .network import LowRankRNN
    from .sparse import LowRankPlusRandomRNN
    from .sparse_dynamics import _whitened_gaussian

    distribution = rank_one_structure(structure, kind=kind, variance=variance)
    rng = np.random.default_rng(random_state)
    rows = distribution.mean + _whitened_gaussian(n_neurons, 2, rng) @ np.linalg.cholesky(
        np.asarray(distribution.cov) + 1e-15 * np.eye(2)).T
    dense = LowRankRNN(rows[:, :1], rows[:, 1:2], activation=activation)
    return LowRankPlusRandomRNN(dense, g, seed=seed)


def simulated_phase_diagram(gs, structures, *, n_neurons=1000, kind="mean", variance=1.0, activation="tanh",
                            random_state=0, seed=1, lines=False, progress=None, scheduler=None, **options):
    """:func:`phase_diagram` with a simulated finite network at every grid point on top.

    Parameters
    ----------
    gs, structures, kind, variance, activation, lines
        As in :func:`phase_diagram`.
    n_neurons : int, default=1000
    random_state, seed : int
        Seeds of the loadings and of chi (the same at every point).
    progress : callable, optional
        progress(done, total) after each point.
    scheduler : None, str or distributed.Client, default=None
        Where the grid points run: serially (None), on local processes
        ("processes"), or on Dask ("dask", "dask://host:port", a Client);
        see :mod:`connector_sim.parallel`. Each task ships (structure, g)
        and the settings, and rebuilds its network from the int seeds, so
        the table is the serial one bit for bit.
    **options
        Passed to :func:`simulated_dmf_regime` (classify_activity's options).

    Returns
    -------
    PhaseDiagram
    """
    from .parallel import run_tasks
    from .sparse_dynamics import _check_order_free_seed

    owner = "simulated_phase_diagram"
    n_neurons = check_int(n_neurons, "n_neurons", minimum=10, owner=owner)
    _check_order_free_seed(random_state, scheduler, owner)
    _check_order_free_seed(seed, scheduler, owner, name="seed")
    diagram = phase_diagram(gs, structures, kind=kind, variance=variance, activation=activation, lines=lines)
    points = [(float(structure), float(g)) for structure in diagram.structures for g in diagram.gs]
    settings = dict(n_neurons=n_neurons, kind=kind, variance=variance, random_state=random_state, seed=seed,
                    activation=activation, options=options)
    report = None if progress is None else (lambda done, total, description: progress(done, total))
    regimes = run_tasks(_phase_point_task, points, scheduler=scheduler, shared=settings, progress=report,
                        describe=lambda point: f"structure = {point[0]:g}, g = {point[1]:g}", owner=owner)
    diagram.simulated = np.array(regimes, dtype=object).reshape(diagram.predicted.shape).astype(str)
    diagram.settings.update(n_neurons=n_neurons, random_state=random_state, seed=seed)
    return diagram


def _phase_point_task(point, settings):
    """One grid point of simulated_phase_diagram: the simulated regime at (structure, g)."""
    structure, g = point
    network = sample_network(structure, g, settings["n_neurons"], kind=settings["kind"],
                             variance=settings["variance"], random_state=settings["random_state"],
                             seed=settings["seed"], activation=settings["activation"])
    return simulated_dmf_regime(network, **settings["options"])[0]


def plot_phase_diagram(diagram, *, ax=None):
    """Regions of the theory (colours), simulated regimes (markers) and the critical lines.

    Parameters
    ----------
    diagram : PhaseDiagram
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if not isinstance(diagram, PhaseDiagram):
        raise TypeError(f"diagram must be a PhaseDiagram (from phase_diagram). Got {type(diagram).__name__}.")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    codes = np.vectorize(DMF_REGIMES.index)(diagram.predicted)
    colours = ["0.9", "C0", "C1", "C3"]
    ax.pcolormesh(diagram.gs, diagram.structures, codes, cmap=ListedColormap(colours), vmin=-0.5, vmax=3.5,
                  shading="nearest", alpha=0.5)
    if diagram.simulated is not None:
        markers = {"decaying": "o", "structured": "s", "structured chaotic": "^", "homogeneous chaotic": "x"}
        for name, marker in markers.items():
            i, j = np.nonzero(diagram.simulated == name)
            if i.size:
                ax.scatter(diagram.gs[j], diagram.structures[i], marker=marker, color="k", s=25,
                           label=f"simulated: {name}")
    if diagram.lines is not None:
        lines = diagram.lines
        ax.plot(lines.g_bulk, lines.structures, "-|", color="k", label="gB (bulk of the structured state)")
        ax.plot(lines.g_outlier, lines.structures, "--|", color="k", label="gC (its outlier)")
        ax.plot(lines.g_chaotic_structure, lines.structures, ":|", color="k", label="chaotic kappa -> 0")
    for k, (name, colour) in enumerate(zip(DMF_REGIMES, colours)):
        ax.scatter([], [], marker="s", color=colour, label=f"theory: {name}")
    ax.set_xlabel("random strength g")
    ax.set_ylabel("structure (outlier of m n^T / N)")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


__all__ = [
    "DMF",
    "DMF_REGIMES",
    "ChaoticSolution",
    "CriticalLines",
    "PhaseDiagram",
    "StationarySolution",
    "chaotic_solutions",
    "critical_lines",
    "phase_diagram",
    "plot_phase_diagram",
    "predicted_dmf_regime",
    "rank_one_structure",
    "sample_network",
    "simulated_dmf_regime",
    "simulated_phase_diagram",
    "stability",
    "stability_matrix",
    "stationary_solutions",
]
