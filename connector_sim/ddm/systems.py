"""Benchmark SDEs with their standard parameters and what is known about them exactly.

Every constructor returns an :class:`~connector_sim.ddm.SDE` whose ``exact``
dict holds the closed-form (or reference) facts the tests check:

============================  =================================================
system                        exact
============================  =================================================
``ornstein_uhlenbeck``        stationary covariance (Lyapunov equation),
                              stationary density, lagged covariance,
                              irreversible drift matrix, entropy production
``double_well``               stationary density exp(-2U/s^2)/Z, fixed points,
                              mean first-passage time (quadrature), Kramers rate
``multi_well``                fixed points, barrier height; stationary density
                              exp(-2U/s^2)/Z for rotation 0 or the level-set
                              rotation; limit-cycle period for a strong solid
                              rotation
``van_der_pol``               fixed point, period (mu = 1 reference value and
                              the small-mu expansion)
``lorenz``                    fixed points, largest Lyapunov exponent (reference)
``rossler``                   fixed points, largest Lyapunov exponent (reference)
============================  =================================================

The drifts are written with elementwise operations and
:func:`~connector_sim.ddm.sde.stack_last`, so they accept numpy arrays and torch
tensors alike.
"""

import numbers

import numpy as np
import scipy.linalg

from .sde import SDE, array_namespace, stack_last

__all__ = [
    "ornstein_uhlenbeck",
    "double_well",
    "multi_well",
    "van_der_pol",
    "lorenz",
    "rossler",
    "benchmark_systems",
]


def _check_real(value, name, owner, *, positive=False, nonnegative=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise TypeError(f"The {name!r} parameter of {owner} must be a finite number. Got {value!r} instead.")
    if positive and value <= 0:
        raise ValueError(f"The {name!r} parameter of {owner} must be > 0. Got {value!r} instead.")
    if nonnegative and value < 0:
        raise ValueError(f"The {name!r} parameter of {owner} must be >= 0. Got {value!r} instead.")
    return float(value)


def _gaussian_density(mean, cov):
    cov = np.asarray(cov, dtype=float)
    inv = np.linalg.inv(cov)
    norm = 1.0 / np.sqrt(np.linalg.det(2 * np.pi * cov))

    def density(z):
        x = np.asarray(z, dtype=float) - mean
        return norm * np.exp(-0.5 * np.einsum("...i,ij,...j->...", x, inv, x))
    return density


# --------------------------------------------------------------------------- OU
def ornstein_uhlenbeck(A=None, sigma=1.0, rotation=1.0):
    """Linear SDE dz = A z dt + G dW (Ornstein-Uhlenbeck), with a rotational part.

    Parameters
    ----------
    A : array of shape (d, d), optional
        The drift matrix (all eigenvalues with negative real part). Default:
        the 2-D ``[[-1, -rotation], [rotation, -1]]``, a stable spiral.
    sigma : float, array of shape (d,) or (d, d), default=1.0
        G (see :class:`SDE`).
    rotation : float, default=1.0
        The angular velocity omega of the default A (ignored when A is given).

    Raises
    ------
    TypeError
        If a parameter is not a finite number.
    ValueError
        If ``A`` is not a finite square matrix or not stable, or ``sigma``
        is not a valid noise scale or covariance.

    Notes
    -----
    With D = G G^T / 2 the stationary law is N(0, S) where S solves the
    Lyapunov equation ``A S + S A^T + 2 D = 0``. Then
    ``grad log p_s = -S^{-1} z``, so the reversible drift is
    ``f_rev = -D S^{-1} z`` and the irreversible one ``f_irr = A_irr z`` with
    ``A_irr = A + D S^{-1}``; the entropy production rate is
    ``e_p = E[f_irr^T D^{-1} f_irr] = tr(A_irr^T D^{-1} A_irr S)``.
    For the default A and G = sigma I: S = sigma^2 / 2 I, A_irr = omega J and
    e_p = 2 omega^2 (independent of sigma). The lagged covariance is
    ``C(tau) = E[z_{t+tau} z_t^T] = expm(A tau) S``; its antisymmetric part
    vanishes for all tau exactly when A_irr = 0 (detailed balance).

    Examples
    --------
    >>> import numpy as np
    >>> sde = ornstein_uhlenbeck()  # A = [[-1, -1], [1, -1]]: a stable spiral
    >>> sde.drift(np.array([[1.0, 0.0]]))
    array([[-1.,  1.]])
    >>> sorted(sde.exact)[:3]
    ['drift_matrix', 'entropy_production', 'fixed_points']
    """
    owner = "ornstein_uhlenbeck"
    if A is None:
        w = _check_real(rotation, "rotation", owner)
        A = np.array([[-1.0, -w], [w, -1.0]])
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or not np.all(np.isfinite(A)):
        raise ValueError(f"The 'A' parameter of {owner} must be a finite square matrix. Got shape {A.shape} instead.")
    eig = np.linalg.eigvals(A)
    if np.max(eig.real) >= 0:
        raise ValueError(f"The 'A' parameter of {owner} must be stable (all eigenvalues with negative real part) "
                         f"for a stationary law to exist. Got eigenvalues {np.round(eig, 4).tolist()}.")
    d = A.shape[0]
    A_copy = A.copy()

    def drift(z):
        return stack_last([sum(A_copy[i, j] * z[..., j] for j in range(d)) for i in range(d)], z)

    sde = SDE(drift, sigma, d, name="ornstein_uhlenbeck", params={"A": A.tolist(), "sigma": np.asarray(sigma).tolist()})
    D = sde.diffusion_tensor()
    S = scipy.linalg.solve_continuous_lyapunov(A, -2 * D)
    S = (S + S.T) / 2
    exact = {"fixed_points": np.zeros((1, d)), "stationary_covariance": S, "drift_matrix": A.copy()}
    if np.linalg.matrix_rank(S) == d:
        A_irr = A + D @ np.linalg.inv(S)
        exact["irreversible_drift_matrix"] = A_irr
        exact["reversible_drift_matrix"] = A - A_irr
        exact["stationary_density"] = _gaussian_density(np.zeros(d), S)
        exact["entropy_production"] = float(np.trace(A_irr.T @ np.linalg.pinv(D) @ A_irr @ S))
    exact["lagged_covariance"] = lambda tau: scipy.linalg.expm(A_copy * float(tau)) @ S
    sde.exact = exact
    return sde


# --------------------------------------------------------------------------- double well
def _mfpt_1d(U, D, a, b, lower, n=20001):
    """Mean first-passage time from a to b > a of dx = -U'(x) dt + sqrt(2D) dW, reflecting far below.

    T(a -> b) = (1/D) int_a^b dy exp(U(y)/D) int_lower^y exp(-U(z)/D) dz (trapezoid rule).
    """
    x = np.linspace(lower, b, n)
    u = U(x)
    shift = u.min()
    w = np.exp(-(u - shift) / D)
    inner = np.concatenate([[0.0], np.cumsum((w[1:] + w[:-1]) / 2 * np.diff(x))])
    mask = x >= a
    xs = x[mask]
    ys = np.exp((u[mask] - shift) / D) * inner[mask] / D
    return float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)))


def double_well(noise=0.5):
    """The 1-D double well dx = (x - x^3) dt + s dW.

    The potential is U(x) = x^4/4 - x^2/2 (f = -U'), minima at +-1, barrier
    height Delta U = 1/4 at x = 0. With D = s^2/2:

    * stationary density p(x) = exp(-2 U(x) / s^2) / Z (exact, detailed balance);
    * mean first-passage time from -1 to +1 (exact, by quadrature of the
      1-D formula) in ``exact["mean_first_passage_time"]``;
    * Kramers' rate of leaving a well, ``sqrt(U''(1) |U''(0)|) / (2 pi) exp(-Delta U / D)``
      = sqrt(2) / (2 pi) exp(-1 / (2 s^2)), an approximation whose relative
      error is O(D / Delta U) (1 / rate is close to the first-passage time
      from one minimum to the other).

    Raises
    ------
    TypeError
        If a parameter is not a finite number.
    ValueError
        If ``noise`` < 0.

    Examples
    --------
    >>> sde = double_well()
    >>> sde.exact["fixed_points"][:, 0], sde.exact["barrier_height"]
    (array([-1.,  0.,  1.]), 0.25)
    """
    s = _check_real(noise, "noise", "double_well", nonnegative=True)

    def drift(z):
        x = z[..., 0]
        return stack_last([x - x * x * x], z)

    def potential(x):
        x = np.asarray(x, dtype=float)
        return x**4 / 4 - x**2 / 2

    exact = {"fixed_points": np.array([[-1.0], [0.0], [1.0]]), "well_centers": np.array([[-1.0], [1.0]]),
             "potential": potential, "barrier_height": 0.25}
    if s > 0:
        D = s * s / 2
        xs = np.linspace(-4, 4, 40001)
        w = np.exp(-(potential(xs) - potential(1.0)) / D)
        Z = np.sum((w[1:] + w[:-1]) / 2 * np.diff(xs))

        def density(z):
            x = np.asarray(z, dtype=float)[..., 0]
            return np.exp(-(potential(x) - potential(1.0)) / D) / Z

        exact["stationary_density"] = density
        exact["kramers_rate"] = float(np.sqrt(2.0) / (2 * np.pi) * np.exp(-0.25 / D))
        exact["mean_first_passage_time"] = _mfpt_1d(potential, D, -1.0, 1.0, lower=-3.0 - 10 * np.sqrt(D))
    return SDE(drift, s, 1, name="double_well", params={"noise": s}, exact=exact)


# --------------------------------------------------------------------------- multi well
def multi_well(n_wells=4, radius=1.0, depth=0.25, rotation=0.0, noise=0.5, *, stiffness=2.0,
               rotation_field="solid"):
    """k wells on a circle in 2-D, optionally with a rotational current that cycles through them.

    Potential (x + iy = rho e^{i theta}, r = radius, k = n_wells, h = depth, a = stiffness)::

        U = a/4 (rho^2 - r^2)^2 - h (rho/r)^k exp(k (1 - rho^2/r^2) / 2) cos(k theta)

    (the second term is Re((x + iy)^k) r^-k exp(...), smooth everywhere). Its
    radial factor is 1 with zero slope at rho = r, so the circle rho = r holds
    the k minima (theta = 2 pi j / k) and the k saddles (theta = 2 pi (j + 1/2) / k)
    exactly, with barrier 2 h along the circle; the origin is a maximum.
    Needs a r^4 > h k (the circle stays radially attracting).

    Drift::

        rotation_field="solid":     f = -grad U + omega (-y, x)
        rotation_field="level_set": f = -grad U + omega J grad U,  J = [[0, -1], [1, 0]]

    The solid rotation makes the state cycle through the wells in the order
    0, 1, ..., k - 1 (omega > 0: counterclockwise). It is tangent to the circle,
    which stays invariant, and on it theta' = omega - omega_c sin(k theta) with
    omega_c = h k / r^2: for omega > omega_c a deterministic limit cycle of
    period 2 pi / sqrt(omega^2 - omega_c^2) (``exact["period"]``); below,
    noise-driven cycling. It changes the stationary density.
    The level-set rotation J grad U is divergence-free and orthogonal to
    grad U, so exp(-2U/s^2) stays the stationary density (a non-equilibrium
    steady state with the equilibrium density), but its current flows along the
    level sets of U -- around each well, and in opposite directions inside and
    outside the circle -- so it does not make the state cycle through the wells.

    Parameters
    ----------
    n_wells : int, default=4
    radius : float, default=1.0
    depth : float, default=0.25
        h; the barrier between neighbouring wells is 2 h.
    rotation : float, default=0.0
        omega.
    noise : float, default=0.5
        Isotropic noise amplitude s (G = s I).
    stiffness : float, default=2.0
        a, the radial confinement.
    rotation_field : {"solid", "level_set"}, default="solid"

    Raises
    ------
    TypeError
        If a parameter is not a finite number.
    ValueError
        If ``n_wells`` is not an int >= 2, ``radius``, ``depth`` or
        ``stiffness`` is not positive, ``noise`` < 0, ``rotation_field`` is
        unknown, or the wells are not radially stable (stiffness radius^4 <=
        depth n_wells).

    Examples
    --------
    >>> sde = multi_well(n_wells=3)
    >>> sde.dim, sde.exact["well_centers"].shape
    (2, (3, 2))
    """
    owner = "multi_well"
    if isinstance(n_wells, bool) or not isinstance(n_wells, numbers.Integral) or n_wells < 2:
        raise ValueError(f"The 'n_wells' parameter of {owner} must be an int >= 2. Got {n_wells!r} instead.")
    k = int(n_wells)
    r = _check_real(radius, "radius", owner, positive=True)
    h = _check_real(depth, "depth", owner, positive=True)
    w = _check_real(rotation, "rotation", owner)
    s = _check_real(noise, "noise", owner, nonnegative=True)
    a = _check_real(stiffness, "stiffness", owner, positive=True)
    if rotation_field not in ("solid", "level_set"):
        raise ValueError(f"The 'rotation_field' parameter of {owner} must be 'solid' or 'level_set'. "
                         f"Got {rotation_field!r} instead.")
    if a * r**4 <= h * k:
        raise ValueError(f"multi_well needs stiffness * radius^4 > depth * n_wells for the circle of wells to be "
                         f"radially stable. Got {a} * {r}^4 <= {h} * {k}; raise 'stiffness'.")

    def grad_u(x, y):
        xp = array_namespace(x)
        rho2 = x * x + y * y
        # xi^(k-1) = (c + i s1) and xi^k = (P + i Q), xi = x + i y
        c, s1 = 1.0 + 0.0 * x, 0.0 * x
        for _ in range(k - 1):
            c, s1 = c * x - s1 * y, c * y + s1 * x
        P = c * x - s1 * y
        E = xp.exp(k * (1.0 - rho2 / (r * r)) / 2.0) / r**k
        radial = a * (rho2 - r * r)
        gx = radial * x - h * E * (k * c - P * k * x / (r * r))
        gy = radial * y - h * E * (-k * s1 - P * k * y / (r * r))
        return gx, gy

    def potential(z):
        z = np.asarray(z, dtype=float)
        xi = (z[..., 0] + 1j * z[..., 1]) ** k
        rho2 = z[..., 0] ** 2 + z[..., 1] ** 2
        return a / 4 * (rho2 - r * r) ** 2 - h * xi.real / r**k * np.exp(k * (1 - rho2 / (r * r)) / 2)

    def drift(z):
        x, y = z[..., 0], z[..., 1]
        gx, gy = grad_u(x, y)
        if rotation_field == "solid":
            return stack_last([-gx - w * y, -gy + w * x], z)
        return stack_last([-gx - w * gy, -gy + w * gx], z)

    angles_min = 2 * np.pi * np.arange(k) / k
    angles_sad = angles_min + np.pi / k
    exact = {
        "potential": potential,
        "barrier_height": 2 * h,
        "well_angles": angles_min,
        "well_centers": r * np.stack([np.cos(angles_min), np.sin(angles_min)], axis=1),
        "critical_rotation": h * k / r**2,
    }
    omega_c = h * k / r**2
    if rotation_field == "level_set" or w == 0:
        exact["fixed_points"] = np.concatenate([
            np.zeros((1, 2)),
            r * np.stack([np.cos(angles_min), np.sin(angles_min)], axis=1),
            r * np.stack([np.cos(angles_sad), np.sin(angles_sad)], axis=1)])
    elif abs(w) <= omega_c:  # at omega_c the fixed points merge in pairs (infinite period)
        # on the circle theta' = omega - omega_c sin(k theta) = 0
        base = np.arcsin(w / omega_c) / k
        th = np.concatenate([base + 2 * np.pi * np.arange(k) / k, np.pi / k - base + 2 * np.pi * np.arange(k) / k])
        exact["fixed_points"] = np.concatenate([np.zeros((1, 2)), r * np.stack([np.cos(th), np.sin(th)], axis=1)])
    else:
        exact["fixed_points"] = np.zeros((1, 2))
        exact["period"] = 2 * np.pi / np.sqrt(w * w - omega_c * omega_c)
        exact["limit_cycle_radius"] = r
    if s > 0 and (rotation_field == "level_set" or w == 0):
        D = s * s / 2
        n = 401
        L = r + 4.0
        g = np.linspace(-L, L, n)
        X, Y = np.meshgrid(g, g, indexing="ij")
        u = potential(np.stack([X, Y], axis=-1))
        u0 = -h
        Z = np.exp(-(u - u0) / D).sum() * (g[1] - g[0]) ** 2

        def density(z):
            return np.exp(-(potential(z) - u0) / D) / Z

        exact["stationary_density"] = density
    return SDE(drift, s, 2, name="multi_well", exact=exact,
               params={"n_wells": k, "radius": r, "depth": h, "rotation": w, "noise": s, "stiffness": a,
                       "rotation_field": rotation_field})


# --------------------------------------------------------------------------- van der Pol
#: Period of the mu = 1 Van der Pol limit cycle (standard reference value).
VAN_DER_POL_PERIOD_MU1 = 6.663286859323130


def van_der_pol(mu=1.0, noise=0.1):
    """Stochastic Van der Pol oscillator: dx = y dt + s dW1, dy = (mu (1 - x^2) y - x) dt + s dW2.

    Deterministic limit (s = 0): an unstable focus/node at 0 and a stable limit
    cycle. Its period is 6.663286859 for mu = 1 (``exact["period"]``) and
    2 pi (1 + mu^2 / 16 - 5 mu^4 / 3072 + O(mu^6)) for small mu
    (``exact["period_small_mu"]``, Poincare-Lindstedt); the amplitude of x
    tends to 2 as mu -> 0.

    Raises
    ------
    TypeError
        If a parameter is not a finite number.
    ValueError
        If ``mu`` <= 0 or ``noise`` < 0.

    Examples
    --------
    >>> round(van_der_pol().exact["period"], 2)  # of the deterministic cycle at mu = 1
    6.66
    """
    mu = _check_real(mu, "mu", "van_der_pol", positive=True)
    s = _check_real(noise, "noise", "van_der_pol", nonnegative=True)

    def drift(z):
        x, y = z[..., 0], z[..., 1]
        return stack_last([y, mu * (1 - x * x) * y - x], z)

    exact = {"fixed_points": np.zeros((1, 2)), "period_small_mu": 2 * np.pi * (1 + mu**2 / 16 - 5 * mu**4 / 3072)}
    if mu == 1.0:
        exact["period"] = VAN_DER_POL_PERIOD_MU1
    return SDE(drift, s, 2, name="van_der_pol", params={"mu": mu, "noise": s}, exact=exact)


# --------------------------------------------------------------------------- Lorenz
#: Largest Lyapunov exponent of Lorenz-63 at the standard parameters (literature value).
LORENZ_LYAPUNOV = 0.9056


def lorenz(sigma=10.0, rho=28.0, beta=8.0 / 3.0, noise=1.0):
    """Stochastic Lorenz-63: dz = f(z) dt + s dW with f = (sigma (y - x), x (rho - z) - y, x y - beta z).

    Fixed points: 0 and (+-c, +-c, rho - 1) with c = sqrt(beta (rho - 1)) (for
    rho > 1). The deterministic system at the standard parameters has largest
    Lyapunov exponent ~0.9056 (``exact["lyapunov_exponent"]``, a reference value).

    Raises
    ------
    TypeError
        If a parameter is not a finite number.
    ValueError
        If ``sigma``, ``rho`` or ``beta`` is not positive, or ``noise`` < 0.

    Examples
    --------
    >>> lorenz().dim
    3
    """
    owner = "lorenz"
    sg = _check_real(sigma, "sigma", owner, positive=True)
    rh = _check_real(rho, "rho", owner, positive=True)
    bt = _check_real(beta, "beta", owner, positive=True)
    s = _check_real(noise, "noise", owner, nonnegative=True)

    def drift(z):
        x, y, w = z[..., 0], z[..., 1], z[..., 2]
        return stack_last([sg * (y - x), x * (rh - w) - y, x * y - bt * w], z)

    fps = [np.zeros(3)]
    if rh > 1:
        c = np.sqrt(bt * (rh - 1))
        fps += [np.array([c, c, rh - 1]), np.array([-c, -c, rh - 1])]
    exact = {"fixed_points": np.array(fps)}
    if (sg, rh, bt) == (10.0, 28.0, 8.0 / 3.0):
        exact["lyapunov_exponent"] = LORENZ_LYAPUNOV
    return SDE(drift, s, 3, name="lorenz", params={"sigma": sg, "rho": rh, "beta": bt, "noise": s}, exact=exact)


# --------------------------------------------------------------------------- Rossler
#: Largest Lyapunov exponent of the Rossler system at a = b = 0.2, c = 5.7 (literature value).
ROSSLER_LYAPUNOV = 0.0714


def rossler(a=0.2, b=0.2, c=5.7, noise=0.1):
    """Stochastic Rossler system: f = (-y - z, x + a y, b + z (x - c)), plus s dW.

    Fixed points (c^2 > 4 a b): y = (-c +- sqrt(c^2 - 4 a b)) / (2 a), x = -a y, z = -y.
    Largest Lyapunov exponent ~0.0714 at the standard parameters (reference value).

    Raises
    ------
    TypeError
        If a parameter is not a finite number.
    ValueError
        If ``noise`` < 0.

    Examples
    --------
    >>> rossler().dim
    3
    """
    owner = "rossler"
    a = _check_real(a, "a", owner)
    b = _check_real(b, "b", owner)
    c = _check_real(c, "c", owner)
    s = _check_real(noise, "noise", owner, nonnegative=True)

    def drift(z):
        x, y, w = z[..., 0], z[..., 1], z[..., 2]
        return stack_last([-y - w, x + a * y, b + w * (x - c)], z)

    fps = []
    disc = c * c - 4 * a * b
    if a != 0 and disc >= 0:
        for sign in (1.0, -1.0):
            y = (-c + sign * np.sqrt(disc)) / (2 * a)
            fps.append([-a * y, y, -y])
    exact = {"fixed_points": np.array(fps).reshape(-1, 3)}
    if (a, b, c) == (0.2, 0.2, 5.7):
        exact["lyapunov_exponent"] = ROSSLER_LYAPUNOV
    return SDE(drift, s, 3, name="rossler", params={"a": a, "b": b, "c": c, "noise": s}, exact=exact)


def benchmark_systems():
    """The benchmark library at its standard parameters: a dict name -> SDE.

    ``"multi_well"`` is the gradient system; ``"multi_well_cycling"`` adds a
    solid rotation of 0.8 omega_c (below the deterministic threshold, so the
    cycling through the wells is noise-driven and in a fixed order).

    Examples
    --------
    >>> sorted(benchmark_systems())
    ['double_well', 'lorenz', 'multi_well', 'multi_well_cycling', 'ornstein_uhlenbeck', 'rossler', 'van_der_pol']
    """
    return {
        "ornstein_uhlenbeck": ornstein_uhlenbeck(),
        "double_well": double_well(),
        "multi_well": multi_well(),
        "multi_well_cycling": multi_well(rotation=0.8),
        "van_der_pol": van_der_pol(),
        "lorenz": lorenz(),
        "rossler": rossler(),
    }
