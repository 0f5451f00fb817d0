"""Fixed points, limit cycles and rings of latent dynamics dkappa/dt = F(kappa).

Everything here takes the velocity as a callable ``F(kappa) -> dkappa/dt``
that maps latent points of shape (..., R) to velocities of the same shape,
for instance ``latent_flow(distribution)`` (mean field) or
``latent_flow(network)`` (a sampled network's flow), see
:mod:`connector_sim.mean_field`.

- :func:`find_fixed_points`: roots of F from many starts, with their Jacobian,
  eigenvalues and stability.
- :func:`find_limit_cycle` / :func:`detect_limit_cycle`: periodic orbits, from
  the crossings of a Poincare section.
- :func:`find_ring`: a ring attractor (a closed curve of marginally stable
  fixed points), reported as one object with its radius.
- :func:`find_approximate_ring`: the ring of a finite network, a closed slow
  curve whose flow is of the size of the finite-N noise (:func:`finite_size_speed`).
- :func:`classify_dynamics`: which of these a flow has.
- :func:`network_jacobian`: stability of a fixed point of the full network,
  from the R x R reduced matrix.
"""

from dataclasses import dataclass, field

import numpy as np

from ._memory import check_allocation
from ._validation import check_array, check_int, check_nonnegative_scalar, check_positive_scalar, check_random_state

STABILITY_CLASSES = ("stable node", "stable focus", "saddle", "unstable node", "unstable focus", "center/marginal")


@dataclass
class FixedPoint:
    """A fixed point kappa* of dkappa/dt = F(kappa).

    Attributes
    ----------
    position : ndarray of shape (R,)
        kappa*.
    jacobian : ndarray of shape (R, R)
        dF_i / dkappa_j at kappa* (central finite differences), per unit of tau.
    eigenvalues : ndarray of shape (R,), complex
        Eigenvalues of the Jacobian, by increasing real part.
    stability : str
        One of :data:`STABILITY_CLASSES`.
    residual : float
        ``|F(kappa*)|``.
    """

    position: np.ndarray
    jacobian: np.ndarray
    eigenvalues: np.ndarray
    stability: str
    residual: float

    @property
    def stable(self):
        return self.stability.startswith("stable")


@dataclass
class LimitCycle:
    """A periodic orbit of the latent dynamics.

    Attributes
    ----------
    period : float
        In units of the integration time (tau).
    center : ndarray of shape (R,)
        Time average of the orbit over one period.
    radius : float
        Time-averaged distance of the orbit from its center.
    amplitude : ndarray of shape (R,)
        max - min of each latent over one period.
    orbit : ndarray of shape (n_points, R)
        One period of the trajectory, from one crossing of the Poincare
        section to the next (both ends interpolated onto the section).
    """

    period: float
    center: np.ndarray
    radius: float
    amplitude: np.ndarray
    orbit: np.ndarray = field(repr=False)


@dataclass
class Ring:
    """A ring attractor: a closed curve of (marginally stable) fixed points.

    Attributes
    ----------
    center : ndarray of shape (R,)
    radius : float
        Radius of the circle fitted through the fixed points.
    plane : ndarray of shape (R, 2)
        Orthonormal basis of the plane of the ring.
    speed_on : float
        Largest ``|F|`` on the fitted circle.
    speed_off : float
        Mean ``|F|`` on the concentric circles of radius 0.5 r and 1.5 r;
        speed_on << speed_off on a ring.
    fixed_points : list of FixedPoint
        The fixed points on the ring (for an approximate ring, the slow
        points on it: the nodes and saddles that finite N leaves).
    exact : bool
        True for a ring of fixed points (:func:`find_ring`); False for an
        approximate ring (:func:`find_approximate_ring`), a closed slow curve
        whose flow is of the size of the finite-N fluctuations.
    curve : ndarray of shape (n_angles, R) or None
        Approximate ring: the closed curve where the radial velocity
        vanishes, one point per angle around ``center``.
    radius_spread : float
        Approximate ring: standard deviation of the curve's distance from the
        center, relative to ``radius`` (0 on a circle).
    speed_rms : float or None
        Approximate ring: root mean square ``|F|`` along the curve.
    finite_size_speed : float or None
        Approximate ring: the expected size of the finite-N flow fluctuation
        on the curve, mean of sqrt(tr Cov_i[n_i phi(x_i)] / N)
        (:func:`finite_size_speed`), when the flow knows its network.
    n_slow_points : int or None
        Approximate ring: the number of zeros of the tangential velocity along
        the curve (nodes and saddles alternate; 0 for a slow rotation).
    period : float or None
        Approximate ring without slow points: the time to go once around
        (integral of ds / ``|F|`` along the curve), in units of tau.
    """

    center: np.ndarray
    radius: float
    plane: np.ndarray
    speed_on: float
    speed_off: float
    fixed_points: list = field(repr=False)
    exact: bool = True
    curve: np.ndarray = field(default=None, repr=False)
    radius_spread: float = 0.0
    speed_rms: float = None
    finite_size_speed: float = None
    n_slow_points: int = None
    period: float = None


@dataclass
class Dynamics:
    """What :func:`classify_dynamics` found.

    Attributes
    ----------
    kind : {"fixed points", "limit cycle", "ring", "approximate ring"}
    fixed_points : list of FixedPoint
        All fixed points in the box (for a ring, the sampled points on it).
    limit_cycle : LimitCycle or None
    ring : Ring or None
        For "ring" and "approximate ring" (``ring.exact`` tells which).
    """

    kind: str
    fixed_points: list
    limit_cycle: LimitCycle = None
    ring: Ring = None


def _check_box(box):
    box = np.asarray(box, dtype=float) if not isinstance(box, np.ndarray) else box
    if box.ndim != 2 or box.shape[1] != 2 or box.shape[0] < 1:
        raise ValueError(
            "box must have shape (R, 2): one [low, high] row per latent dimension, e.g. [[-3, 3], [-3, 3]] "
            f"for rank 2. Got shape {box.shape}."
        )
    box = check_array(box, "box", ndim=2, dtype=np.float64)
    if np.any(box[:, 0] >= box[:, 1]):
        raise ValueError(f"Each row of box must be [low, high] with low < high. Got {box.tolist()}.")
    return box


def _call(velocity, points):
    """velocity(points), checked to return real numbers of the shape of ``points``."""
    out = np.asarray(velocity(points))
    if not (np.issubdtype(out.dtype, np.integer) or np.issubdtype(out.dtype, np.floating) or out.dtype == bool):
        raise TypeError(
            "velocity must return real numbers (float arrays) of the shape of its input. "
            f"Given points of shape {points.shape} it returned an array of dtype {out.dtype}."
        )
    out = out.astype(np.float64, copy=False)
    if out.shape != points.shape:
        raise ValueError(
            "velocity must map latent points of shape (..., R) to velocities of the same shape. "
            f"Given points of shape {points.shape} it returned shape {out.shape}."
        )
    return out


class _Diverged(Exception):
    """A root-finding step left the finite numbers (a singular Jacobian); that start is dropped."""


#: Most starts :func:`find_fixed_points` accepts: each runs a root finder (about a millisecond),
#: so a million starts already take tens of minutes.
MAX_STARTS = 1_000_000


def _starts(box, n_starts, rng):
    """The box centre, a cell-centred grid of floor((n_starts - 1)^(1/R)) points per axis, the rest at random."""
    R = len(box)
    per_axis = int(np.floor((n_starts - 1) ** (1.0 / R) + 1e-9))
    axes = [low + (np.arange(per_axis) + 0.5) / per_axis * (high - low) for low, high in box]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, R)
    random = box[:, 0] + rng.random((n_starts - 1 - len(grid), R)) * (box[:, 1] - box[:, 0])
    return np.vstack([box.mean(axis=1, keepdims=True).T, grid, random])


def jacobian(velocity, position, step=1e-5):
    """dF_i / dkappa_j at ``position`` by central differences.

    ::

        J[:, j] = (F(kappa + h e_j) - F(kappa - h e_j)) / (2 h),  h = step * max(1, |kappa|_inf)

    The error is ``O(h^2 F''') + O(eps |F| / h)``: about 1e-10 with the default step.

    Parameters
    ----------
    velocity : callable
    position : ndarray of shape (R,)
    step : float, default=1e-5

    Returns
    -------
    ndarray of shape (R, R)

    Raises
    ------
    TypeError
        If ``velocity`` returns something other than real numbers.
    ValueError
        If ``velocity`` changes the shape of its input.

    Examples
    --------
    >>> import numpy as np
    >>> jacobian(lambda k: np.tanh(2 * k) - k, np.array([0.0])).round(6)
    array([[1.]])
    """
    position = np.asarray(position, dtype=np.float64)
    h = step * max(1.0, float(np.max(np.abs(position))))
    shifts = h * np.eye(len(position))
    values = _call(velocity, np.concatenate([position + shifts, position - shifts]))
    forward, backward = np.split(values, 2)
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite velocity gives a non-finite Jacobian, said by it
        return (forward - backward).T / (2 * h)


def stability_class(eigenvalues, marginal_tol=1e-6):
    """The stability class of a fixed point from its Jacobian eigenvalues.

    - max Re < -tol: "stable focus" if some ``|Im| > tol``, else "stable node";
    - ``|max Re| <= tol``: "center/marginal";
    - max Re > tol and min Re < -tol: "saddle";
    - otherwise (all Re > -tol, some > tol): "unstable focus" / "unstable node".

    Examples
    --------
    >>> import numpy as np
    >>> stability_class(np.array([-1 + 1j, -1 - 1j]))
    'stable focus'
    >>> stability_class(np.array([-1.0, 0.5]))
    'saddle'
    """
    real = np.real(eigenvalues)
    rotating = bool(np.any(np.abs(np.imag(eigenvalues)) > marginal_tol))
    if real.max() < -marginal_tol:
        return "stable focus" if rotating else "stable node"
    if real.max() <= marginal_tol:
        return "center/marginal"
    if real.min() < -marginal_tol:
        return "saddle"
    return "unstable focus" if rotating else "unstable node"


def find_fixed_points(velocity, box, *, n_starts=100, random_state=0, tol=1e-9, dedup_tol=1e-4,
                      jacobian_step=1e-5, marginal_tol=1e-6):
    """Fixed points F(kappa*) = 0 in a box, with their Jacobian and stability.

    Root finding (``scipy.optimize.root``, method "hybr", with the
    Jacobian of :func:`jacobian`) runs from ``n_starts`` starts in the box:
    its centre (where symmetric flows have a fixed point that Newton steps
    from farther away overshoot), a cell-centred grid of
    floor((n_starts - 1)^(1/R)) points per axis, the rest uniform at random. A
    root is kept when ``|F|`` <= ``tol`` and it lies in the box; roots closer
    than ``dedup_tol`` to one already kept are duplicates. A continuum of
    fixed points (a ring) shows up as many marginal points; see
    :func:`find_ring`.

    Parameters
    ----------
    velocity : callable
        kappa of shape (..., R) -> dkappa/dt of the same shape.
    box : array-like of shape (R, 2)
        [low, high] of each latent dimension.
    n_starts : int, default=100
        At most ``MAX_STARTS`` (10^6).
    random_state : None, int or numpy.random.Generator, default=0
        Draws the random starts.
    tol : float, default=1e-9
        Largest ``|F|`` of an accepted root.
    dedup_tol : float, default=1e-4
        Roots closer than this (Euclidean distance) are one fixed point.
    jacobian_step : float, default=1e-5
        Relative step of the finite differences (see :func:`jacobian`).
    marginal_tol : float, default=1e-6
        Real parts within this of 0 count as 0 (see :func:`stability_class`).
        Raise it for a finite network, whose near-zero modes are O(1/sqrt(N)).

    Returns
    -------
    list of FixedPoint
        Sorted by position (lexicographically, to ``dedup_tol``).

    Raises
    ------
    ValueError
        If ``box`` is not of shape (R, 2) with low < high in every row, or a
        tolerance or ``n_starts`` is out of range; also if ``velocity`` changes
        the shape of its input.
    TypeError
        If ``n_starts`` is not an int, a tolerance not a number, or
        ``velocity`` returns something other than real numbers.
    TooLargeError
        If the starts would not fit in memory.

    Examples
    --------
    >>> import numpy as np
    >>> points = find_fixed_points(lambda k: np.tanh(2 * k) - k, [[-2, 2]], n_starts=10)
    >>> [(round(float(p.position[0]), 3), p.stability) for p in points]
    [(-0.958, 'stable node'), (0.0, 'unstable node'), (0.958, 'stable node')]
    """
    from scipy.optimize import root

    box = _check_box(box)
    n_starts = check_int(n_starts, "n_starts", minimum=1, maximum=MAX_STARTS, owner="find_fixed_points")
    tol = check_positive_scalar(tol, "tol", owner="find_fixed_points")
    dedup_tol = check_positive_scalar(dedup_tol, "dedup_tol", owner="find_fixed_points")
    jacobian_step = check_positive_scalar(jacobian_step, "jacobian_step", owner="find_fixed_points")
    marginal_tol = check_nonnegative_scalar(marginal_tol, "marginal_tol", owner="find_fixed_points")
    check_allocation(3 * 8 * n_starts * len(box), f"find_fixed_points with {n_starts} starts in {len(box)} dimensions",
                     "Use fewer starts (n_starts).")
    rng = check_random_state(random_state)
    _call(velocity, box.mean(axis=1))
    found = []
    def equations(x):
        if not np.all(np.isfinite(x)):
            raise _Diverged
        return _call(velocity, x)

    def jacobian_or_diverged(x):
        matrix = jacobian(velocity, x, jacobian_step)
        if not np.all(np.isfinite(matrix)):
            raise _Diverged
        return matrix

    for start in _starts(box, n_starts, rng):
        try:
            position = root(equations, start, jac=jacobian_or_diverged, method="hybr").x
        except _Diverged:
            continue
        inside = np.all(position >= box[:, 0] - dedup_tol) and np.all(position <= box[:, 1] + dedup_tol)
        residual = float(np.linalg.norm(_call(velocity, position)))
        if not inside or residual > tol:
            continue
        if any(np.linalg.norm(position - point.position) < dedup_tol for point in found):
            continue
        matrix = jacobian(velocity, position, jacobian_step)
        if not np.all(np.isfinite(matrix)):  # the velocity is infinite next to this root: no stability to give
            continue
        eigenvalues = np.linalg.eigvals(matrix)
        eigenvalues = eigenvalues[np.argsort(eigenvalues.real, kind="stable")]
        found.append(FixedPoint(position, matrix, eigenvalues, stability_class(eigenvalues, marginal_tol), residual))
    if not found:
        return []
    # Sort on positions rounded to dedup_tol, so that rounding noise in a
    # coordinate shared by two points does not decide their order.
    keys = np.round(np.array([point.position for point in found]) / dedup_tol)
    return [found[i] for i in np.lexsort(keys.T[::-1])]


def integrate(velocity, kappa0, dt, n_steps):
    """Integrate dkappa/dt = F(kappa) by classical Runge-Kutta (RK4).

    ::

        k1 = F(x), k2 = F(x + dt k1 / 2), k3 = F(x + dt k2 / 2), k4 = F(x + dt k3)
        x <- x + dt (k1 + 2 k2 + 2 k3 + k4) / 6

    Parameters
    ----------
    velocity : callable
    kappa0 : array-like of shape (..., R)
        Initial latents; any leading shape runs as one batch.
    dt : float
        Step, in units of tau.
    n_steps : int

    Returns
    -------
    ndarray of shape kappa0.shape[:-1] + (n_steps + 1, R)

    Raises
    ------
    ValueError
        If ``dt`` or ``n_steps`` is not positive, ``kappa0`` is a scalar, or
        ``velocity`` changes the shape of its input.
    TypeError
        If ``dt`` or ``n_steps`` has the wrong type.
    TooLargeError
        If the trajectory would not fit in memory.

    Examples
    --------
    >>> import numpy as np
    >>> trajectory = integrate(lambda k: -k, np.array([1.0]), dt=0.1, n_steps=10)
    >>> trajectory.shape, round(float(trajectory[-1, 0]), 3)
    ((11, 1), 0.368)
    """
    dt = check_positive_scalar(dt, "dt", owner="integrate")
    n_steps = check_int(n_steps, "n_steps", minimum=1, owner="integrate")
    kappa = np.asarray(kappa0, dtype=np.float64)
    if kappa.ndim < 1:
        raise ValueError(f"kappa0 must have shape (..., R). Got a scalar {kappa0!r}.")
    kappa = check_array(kappa, "kappa0", ndim=kappa.ndim, dtype=np.float64)
    check_allocation(8 * (int(n_steps) + 1 + 6) * kappa.size, f"integrate ({n_steps} steps of {kappa.size} latents)",
                     "Use fewer steps (n_steps) or fewer starting points.")
    out = np.empty(kappa.shape[:-1] + (n_steps + 1, kappa.shape[-1]))
    out[..., 0, :] = kappa
    for t in range(n_steps):
        k1 = _call(velocity, kappa)
        k2 = _call(velocity, kappa + 0.5 * dt * k1)
        k3 = _call(velocity, kappa + 0.5 * dt * k2)
        k4 = _call(velocity, kappa + dt * k3)
        kappa = kappa + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[..., t + 1, :] = kappa
    return out


def detect_limit_cycle(trajectory, dt, *, transient=0.5, rtol=1e-2, min_periods=3):
    """A limit cycle in a sampled trajectory, or None.

    After discarding the first ``transient`` fraction, the Poincare section is
    the hyperplane kappa_j = mean(kappa_j) through the mean of the rest, j the
    latent with the widest range. Upward crossings are located by linear
    interpolation; the period is the mean time between successive crossings.
    The trajectory is periodic when there are at least ``min_periods`` + 1
    crossings, the periods agree to ``rtol`` (relative), and the last two
    crossing points are within ``rtol`` x range of each other (a spiral into
    or away from a focus moves them).

    Parameters
    ----------
    trajectory : array-like of shape (n_times, R)
        Latents at times 0, dt, 2 dt, ... (from :func:`integrate`,
        :func:`connector_sim.simulate` or :func:`~connector_sim.mean_field_trajectory`).
    dt : float
        Time between samples.
    transient : float in [0, 1), default=0.5
    rtol : float, default=1e-2
    min_periods : int, default=3

    Returns
    -------
    LimitCycle or None
        None when the trajectory settles on a point, or is not periodic.

    Raises
    ------
    ValueError
        If ``trajectory`` is not of shape (n_times, R), ``dt`` is not positive
        or ``transient`` is not in [0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> def van_der_pol(k):
    ...     x, y = k[..., 0], k[..., 1]
    ...     return np.stack([y, (1 - x ** 2) * y - x], axis=-1)
    >>> trajectory = integrate(van_der_pol, np.array([0.5, 0.0]), dt=0.05, n_steps=4000)
    >>> cycle = detect_limit_cycle(trajectory, dt=0.05)
    >>> round(cycle.period, 1), round(cycle.radius, 1)
    (6.7, 2.0)
    """
    trajectory = np.asarray(trajectory)
    if trajectory.ndim != 2:
        raise ValueError(f"trajectory must have shape (n_times, R). Got shape {trajectory.shape}.")
    trajectory = check_array(trajectory, "trajectory", ndim=2, dtype=np.float64)
    dt = check_positive_scalar(dt, "dt", owner="detect_limit_cycle")
    if not 0 <= transient < 1:
        raise ValueError(f"transient must be a fraction in [0, 1). Got {transient!r}.")
    tail = trajectory[int(transient * len(trajectory)):]
    spread = tail.max(axis=0) - tail.min(axis=0)
    j = int(np.argmax(spread))
    if spread[j] == 0:
        return None
    level = tail[:, j].mean()
    below = tail[:-1, j] < level
    upward = np.flatnonzero(below & (tail[1:, j] >= level))
    if len(upward) < min_periods + 1:
        return None
    fraction = (level - tail[upward, j]) / (tail[upward + 1, j] - tail[upward, j])
    times = dt * (upward + fraction)
    points = tail[upward] + fraction[:, None] * (tail[upward + 1] - tail[upward])
    periods = np.diff(times)
    period = float(periods.mean())
    if periods.max() - periods.min() > rtol * period:
        return None
    if np.linalg.norm(points[-1] - points[-2]) > rtol * spread[j]:
        return None
    # The last period, from crossing to crossing; time averages by the
    # trapezoidal rule over it are exact to O(dt^2).
    inner = np.arange(upward[-2] + 1, upward[-1] + 1)
    orbit = np.vstack([points[-2], tail[inner], points[-1]])
    orbit_times = np.concatenate([[times[-2]], dt * inner, [times[-1]]])
    weights = np.diff(orbit_times) / (2 * (times[-1] - times[-2]))

    def time_average(values):
        return weights @ (values[1:] + values[:-1])

    center = time_average(orbit)
    radius = time_average(np.linalg.norm(orbit - center, axis=1))
    return LimitCycle(period=period, center=center, radius=float(radius),
                      amplitude=orbit.max(axis=0) - orbit.min(axis=0), orbit=orbit)


def find_limit_cycle(velocity, kappa0, dt=0.1, n_steps=2000, *, transient=0.5, rtol=1e-2, min_periods=3):
    """Integrate from ``kappa0`` (RK4) and return the limit cycle reached, or None.

    Parameters
    ----------
    velocity : callable
    kappa0 : array-like of shape (R,)
    dt : float, default=0.1
        RK4 step, in units of tau.
    n_steps : int, default=2000
        The run must hold ``min_periods`` + 1 periods after the transient.
    transient, rtol, min_periods
        As in :func:`detect_limit_cycle`.

    Returns
    -------
    LimitCycle or None
        None when the trajectory converges to a fixed point (or is not periodic).

    Raises
    ------
    ValueError
        If ``kappa0`` is not one point of shape (R,), or an option is out of
        range (see :func:`integrate` and :func:`detect_limit_cycle`).

    Examples
    --------
    >>> import numpy as np
    >>> def van_der_pol(k):
    ...     x, y = k[..., 0], k[..., 1]
    ...     return np.stack([y, (1 - x ** 2) * y - x], axis=-1)
    >>> cycle = find_limit_cycle(van_der_pol, [0.5, 0.0], dt=0.05, n_steps=4000)
    >>> round(cycle.period, 1)
    6.7
    >>> find_limit_cycle(lambda k: -k, [1.0, 0.0]) is None
    True
    """
    kappa0 = np.asarray(kappa0, dtype=np.float64)
    if kappa0.ndim != 1:
        raise ValueError(f"kappa0 must be one latent point, shape (R,). Got shape {kappa0.shape}.")
    trajectory = integrate(velocity, kappa0, dt, n_steps)
    return detect_limit_cycle(trajectory, dt, transient=transient, rtol=rtol, min_periods=min_periods)


def find_ring(velocity, fixed_points, *, min_points=3, fit_rtol=0.05, tangent_cos=0.9, speed_ratio=0.05,
              n_angles=64):
    """A ring attractor through the marginal fixed points, or None.

    A ring is reported when

    1. at least ``min_points`` fixed points are "center/marginal";
    2. they lie on a circle: in the plane of their two main principal axes, a
       least-squares circle fit (x^2 + y^2 = 2 a x + 2 b y + c) leaves every
       distance within ``fit_rtol`` x radius of the radius;
    3. at each, the eigenvector of the eigenvalue nearest 0 is tangent to the
       circle (``|cos|`` >= ``tangent_cos``): the flow is neutral along the ring;
    4. the flow is slow along the whole circle: max ``|F|`` on it is at most
       ``speed_ratio`` x the mean ``|F|`` on the circles of radius 0.5 r and 1.5 r.

    This is the exact ring of a mean-field flow. A finite network's ring has no
    continuum of marginal fixed points (a few nodes and saddles at
    O(1/sqrt(N)) speeds): :func:`find_approximate_ring` finds it, and
    :func:`classify_dynamics` tries both.

    Parameters
    ----------
    velocity : callable
    fixed_points : list of FixedPoint
        From :func:`find_fixed_points`.
    min_points : int, default=3
    fit_rtol, tangent_cos, speed_ratio : float
    n_angles : int, default=64
        Points on each circle for the speed test.

    Returns
    -------
    Ring or None

    Examples
    --------
    >>> import numpy as np
    >>> def ring_flow(k):
    ...     return k * (1 - np.sum(k ** 2, axis=-1, keepdims=True))
    >>> points = find_fixed_points(ring_flow, [[-2, 2], [-2, 2]], n_starts=50, marginal_tol=1e-4)
    >>> ring = find_ring(ring_flow, points)
    >>> round(ring.radius, 6)
    1.0
    """
    marginal = [point for point in fixed_points if point.stability == "center/marginal"]
    if len(marginal) < max(min_points, 3) or len(marginal[0].position) < 2:
        return None
    positions = np.array([point.position for point in marginal])
    mean = positions.mean(axis=0)
    _, singular, axes = np.linalg.svd(positions - mean, full_matrices=False)
    if singular[1] <= 1e-9 * max(1.0, singular[0]):
        return None
    plane = axes[:2].T
    x, y = ((positions - mean) @ plane).T
    design = np.column_stack([2 * x, 2 * y, np.ones_like(x)])
    (a, b, c), *_ = np.linalg.lstsq(design, x**2 + y**2, rcond=None)
    radius = float(np.sqrt(c + a**2 + b**2))
    if np.max(np.abs(np.hypot(x - a, y - b) - radius)) > fit_rtol * radius:
        return None
    center = mean + plane @ np.array([a, b])
    for point, px, py in zip(marginal, x, y):
        values, vectors = np.linalg.eig(point.jacobian)
        neutral = np.real(vectors[:, np.argmin(np.abs(values.real))])
        tangent = plane @ np.array([-(py - b), px - a])
        cosine = abs(neutral @ tangent) / (np.linalg.norm(neutral) * np.linalg.norm(tangent))
        if cosine < tangent_cos:
            return None
    angles = np.linspace(0.0, 2 * np.pi, n_angles, endpoint=False)
    directions = np.column_stack([np.cos(angles), np.sin(angles)]) @ plane.T

    def speeds(scale):
        return np.linalg.norm(_call(velocity, center + scale * radius * directions), axis=1)

    speed_on = float(speeds(1.0).max())
    speed_off = float(np.concatenate([speeds(0.5), speeds(1.5)]).mean())
    if speed_on > speed_ratio * speed_off:
        return None
    return Ring(center=center, radius=radius, plane=plane, speed_on=speed_on, speed_off=speed_off,
                fixed_points=marginal)


def finite_size_speed(network, kappa, v=None):
    """Expected size of the finite-N part of a sampled network's latent flow.

    The latent flow of a network of N neurons is an average over neurons,
    F_N(kappa) = -kappa + (1 / N) sum_i n_i phi(x_i), x_i = m_i . kappa +
    I_i . v + b_i; it differs from its mean field (N -> infinity) by a
    fluctuation of size::

        sigma_F(kappa) = sqrt(tr Cov_i[n_i phi(x_i)] / N)

    (the standard error of that average). A ring attractor of the mean field
    becomes, at finite N, a closed curve on which ``|F|`` is of this size;
    :func:`find_approximate_ring` compares the two.

    Parameters
    ----------
    network : LowRankRNN
    kappa : array-like of shape (..., R)
    v : array-like of shape (D,), optional
        Constant input (default 0).

    Returns
    -------
    ndarray of shape kappa.shape[:-1]

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN.
    ValueError
        If ``kappa`` does not end with the network's rank.

    Examples
    --------
    >>> from connector_sim.synthetic import gaussian_network_distribution
    >>> network = gaussian_network_distribution("ring").sample(1000, 0)
    >>> round(float(finite_size_speed(network, [1.0, 0.0])), 2)  # ~ sqrt(Var(n_1 tanh(m_1))) / sqrt(N)
    0.06
    """
    from .activations import apply_activation
    from .network import LowRankRNN

    if not isinstance(network, LowRankRNN):
        raise TypeError(f"network must be a LowRankRNN. Got {type(network).__name__}.")
    kappa = np.asarray(kappa, dtype=np.float64)
    if kappa.ndim < 1 or kappa.shape[-1] != network.rank:
        raise ValueError(f"kappa must have shape (..., {network.rank}) (the rank). Got shape {kappa.shape}.")
    m, n = network.m.astype(np.float64), network.n.astype(np.float64)
    base = network.b.astype(np.float64).copy()
    if v is not None and network.n_inputs:
        base += network.I.astype(np.float64) @ np.asarray(v, dtype=np.float64)
    points = kappa.reshape(-1, network.rank)
    out = np.empty(len(points))
    chunk = max(1, (1 << 22) // network.n_neurons)
    for start in range(0, len(points), chunk):
        rates = apply_activation(network.activation, points[start:start + chunk] @ m.T + base)  # (P, N)
        mean = rates @ n / network.n_neurons  # (P, R)
        second = (rates * rates) @ (n * n) / network.n_neurons
        out[start:start + chunk] = np.sqrt(np.maximum(second - mean * mean, 0.0).sum(axis=1) / network.n_neurons)
    return out.reshape(kappa.shape[:-1])


def find_approximate_ring(velocity, center, *, box=None, r_max=None, fixed_points=(), n_angles=64, n_radii=60,
                          noise_ratio=1.25, speed_ratio=0.05):
    """A closed slow curve around ``center``: the ring of a finite network, or None.

    A finite network sampled from a ring attractor has no ring of fixed points:
    the O(1/sqrt(N)) fluctuations of its flow leave a few nodes and saddles on
    a closed curve (or none, and a slow rotation), with eigenvalues of the same
    small size. This finds that curve and decides whether it is a ring up to
    finite-N noise. For a rank-two flow:

    1. along ``n_angles`` rays from ``center``, the first radius where the
       radial velocity F . e_r turns from outward to inward (a grid of
       ``n_radii`` radii up to ``r_max`` or the box edge, then Brent's method);
       every ray must have one: the curve;
    2. its speeds: max and root mean square ``|F|`` on the curve (speed_on,
       speed_rms) and the mean ``|F|`` on the curves scaled by 0.5 and 1.5 about
       the center (speed_off, the off-ring relaxation);
    3. it is a ring when speed_rms <= ``noise_ratio`` x sigma_F, the mean finite-N
       fluctuation on the curve (:func:`finite_size_speed`; known when the flow is
       ``latent_flow(network)`` of a :class:`~connector_sim.LowRankRNN`), or, for
       any flow, when speed_on <= ``speed_ratio`` x speed_off.

    On a ring the flow along the curve is pure noise, whose tangential
    component has rms sigma_F / sqrt(2) in expectation; measured speed_rms /
    sigma_F on rings sampled from the ring distribution: <= 1.14 at N = 500
    and <= 0.87 at N = 1000 (10 seeds each), while the quadstable network's
    curve (four nodes and four saddles of the mean field) gives >= 1.33 at
    N = 500 and >= 1.83 at N = 1000, growing like sqrt(N). Below N ~ 1000 a
    network of a few attractors along a circle can pass for a ring: its flow
    there is itself within the finite-N noise.

    Parameters
    ----------
    velocity : callable
        kappa of shape (..., 2) -> dkappa/dt.
    center : array-like of shape (2,)
        A point inside the curve (the unstable fixed point a ring surrounds).
    box : array-like of shape (2, 2), optional
        The rays end at its edge. Give ``box`` or ``r_max``.
    r_max : float, optional
        Length of the rays.
    fixed_points : list of FixedPoint, optional
        Those within 10 % of the radius of the curve are reported on it.
    n_angles, n_radii : int, default=64, 60
    noise_ratio : float, default=1.25
    speed_ratio : float, default=0.05

    Returns
    -------
    Ring or None
        ``exact=False``, with ``curve``, ``radius`` (mean distance of the
        curve from the center), ``radius_spread``, ``speed_on``, ``speed_rms``,
        ``speed_off``, ``finite_size_speed``, the slow points (``fixed_points``,
        ``n_slow_points``) and, without slow points, ``period``.

    Raises
    ------
    ValueError
        If ``center`` is not a point of rank two, neither ``box`` nor
        ``r_max`` is given, or an option is out of range.

    Examples
    --------
    >>> from connector_sim import latent_flow
    >>> from connector_sim.synthetic import gaussian_network_distribution
    >>> network = gaussian_network_distribution("ring").sample(1000, 0)
    >>> ring = find_approximate_ring(latent_flow(network), [0.0, 0.0], r_max=3.0)
    >>> ring.exact, round(ring.radius, 2), ring.n_slow_points
    (False, 1.03, 4)
    """
    from scipy.optimize import brentq

    center = np.asarray(center, dtype=np.float64)
    if center.shape != (2,):
        raise ValueError(f"find_approximate_ring works on rank-two flows: center must have shape (2,). "
                         f"Got shape {center.shape}.")
    n_angles = check_int(n_angles, "n_angles", minimum=8, owner="find_approximate_ring")
    n_radii = check_int(n_radii, "n_radii", minimum=4, owner="find_approximate_ring")
    noise_ratio = check_nonnegative_scalar(noise_ratio, "noise_ratio", owner="find_approximate_ring")
    speed_ratio = check_nonnegative_scalar(speed_ratio, "speed_ratio", owner="find_approximate_ring")
    angles = np.linspace(0.0, 2 * np.pi, n_angles, endpoint=False)
    rays = np.column_stack([np.cos(angles), np.sin(angles)])
    if box is not None:
        box = _check_box(box)
        if len(box) != 2:
            raise ValueError(f"box must have shape (2, 2) for a rank-two flow. Got shape {box.shape}.")
        with np.errstate(divide="ignore"):
            to_edge = np.where(rays > 0, (box[:, 1] - center) / rays, np.where(rays < 0, (box[:, 0] - center) / rays,
                                                                               np.inf))
        lengths = to_edge.min(axis=1)
        if np.any(lengths <= 0):
            return None
    elif r_max is not None:
        lengths = np.full(n_angles, check_positive_scalar(r_max, "r_max", owner="find_approximate_ring"))
    else:
        raise ValueError("find_approximate_ring needs box or r_max (how far the rays from the center go).")
    fractions = np.arange(1, n_radii + 1) / n_radii
    grid = center + (fractions[None, :, None] * lengths[:, None, None]) * rays[:, None, :]
    radial = np.einsum("arx,ax->ar", _call(velocity, grid), rays)
    radii = np.empty(n_angles)
    for a in range(n_angles):
        turns = np.flatnonzero((radial[a, :-1] > 0) & (radial[a, 1:] <= 0))
        if len(turns) == 0 or radial[a, 0] <= 0:
            return None
        low, high = fractions[turns[0]] * lengths[a], fractions[turns[0] + 1] * lengths[a]

        def along(r, a=a):
            return float(_call(velocity, center + r * rays[a]) @ rays[a])

        radii[a] = high if along(high) == 0 else brentq(along, low, high, xtol=1e-12)
    curve = center + radii[:, None] * rays
    on = _call(velocity, curve)
    speeds_on = np.linalg.norm(on, axis=1)
    speed_off = float(np.mean([np.linalg.norm(_call(velocity, center + scale * radii[:, None] * rays), axis=1)
                               for scale in (0.5, 1.5)]))
    speed_on, speed_rms = float(speeds_on.max()), float(np.sqrt(np.mean(speeds_on**2)))
    noise = getattr(velocity, "finite_size_speed", None)
    sigma = float(np.mean(noise(curve))) if callable(noise) else None
    if not (speed_on <= speed_ratio * speed_off or (sigma is not None and speed_rms <= noise_ratio * sigma)):
        return None
    radius = float(radii.mean())
    tangential = np.einsum("ax,ax->a", on, np.column_stack([-rays[:, 1], rays[:, 0]]))
    signs = np.sign(tangential)
    n_slow = int(np.count_nonzero(signs != np.roll(signs, -1)))
    period = None
    if n_slow == 0:
        steps = np.linalg.norm(np.roll(curve, -1, axis=0) - curve, axis=1)
        period = float(np.sum(steps * 0.5 * (1 / speeds_on + 1 / np.roll(speeds_on, -1))))
    on_curve = []
    for point in fixed_points:
        offset = point.position - center
        distance = float(np.linalg.norm(offset))
        if distance == 0:
            continue
        angle = np.arctan2(offset[1], offset[0]) % (2 * np.pi)
        if abs(distance - np.interp(angle, np.append(angles, 2 * np.pi), np.append(radii, radii[0]))) < 0.1 * radius:
            on_curve.append(point)
    return Ring(center=center, radius=radius, plane=np.eye(2), speed_on=speed_on, speed_off=speed_off,
                fixed_points=on_curve, exact=False, curve=curve, radius_spread=float(radii.std() / radius),
                speed_rms=speed_rms, finite_size_speed=sigma, n_slow_points=n_slow, period=period)


@dataclass
class NetworkJacobian:
    """Stability of a fixed point of the full network (see :func:`network_jacobian`).

    Attributes
    ----------
    outliers : ndarray of shape (R,), complex
        -1 + eig(n^T diag(phi'(x*)) m / N), by decreasing real part: the
        eigenvalues of the full Jacobian along the structure (per unit of tau).
    bulk_center : float
        -1.
    bulk_radius : float
        0 for a low-rank network (the other N - R eigenvalues are exactly -1);
        g sqrt(mean_j phi'(x*_j)^2) for a random part g chi (the circular law
        of g chi diag(phi'); with an excitatory/inhibitory chi, g
        sqrt(mean_j sigma_c(j)^2 phi'(x*_j)^2)).
    bulk_multiplicity : int
        N - R.
    leading : float
        The largest real part: of the outliers outside the bulk, and of the
        bulk's edge -1 + bulk_radius.
    stable : bool
        leading < 0.
    residual : float
        Root mean square of -x* + J phi(x*) + I v + b over the neurons (0 at an
        exact fixed point).
    eigenvalues : ndarray of shape (N,), complex, or None
        All eigenvalues of J_full, by decreasing real part (``dense=True`` only);
        ``leading`` and ``stable`` then come from them.
    """

    outliers: np.ndarray
    bulk_center: float
    bulk_radius: float
    bulk_multiplicity: int
    leading: float
    stable: bool
    residual: float
    eigenvalues: np.ndarray = field(default=None, repr=False)


def _activation_slope(activation, x):
    """phi'(x) elementwise (closed forms for the built-ins, central differences otherwise)."""
    from .activations import apply_activation

    if activation == "tanh":
        return 1.0 - np.tanh(x) ** 2
    if activation == "relu":
        return (x > 0).astype(np.float64)
    if activation == "identity":
        return np.ones_like(x)
    if activation in ("softplus", "sigmoid"):
        rate = apply_activation("sigmoid", x)
        return rate if activation == "softplus" else rate * (1.0 - rate)
    step = 1e-6 * np.maximum(1.0, np.abs(x))
    return (apply_activation(activation, x + step) - apply_activation(activation, x - step)) / (2 * step)


def network_jacobian(network, kappa=None, *, x=None, v=None, dense=False):
    """The full N x N Jacobian at a fixed point, from its R x R reduced matrix.

    ::

        J_full = -I + W diag(phi'(x*)),   W = m n^T / N (+ g chi)

    For W = m n^T / N the nonzero eigenvalues of W diag(phi') are those of the
    R x R matrix n^T diag(phi') m / N, and the other N - R eigenvalues of
    J_full are exactly -1, so the stability of a fixed point of the finite
    network needs no N x N matrix. With a random part (a
    :class:`~connector_sim.LowRankPlusRandomRNN`) the bulk becomes a disk of
    radius g sqrt(<phi'^2>) about -1 (circular law of g chi diag(phi')), and
    the reduced matrix gives the outliers only approximately: phi'(x*) is
    correlated with chi at a fixed point of the full network, which moves
    them by O(g^2) (measured: 0.05 to 0.2 at N = 300, g = 0.5; the dynamic
    mean field of Mastrogiuseppe & Ostojic accounts for it). ``dense=True``
    computes every eigenvalue of the N x N matrix instead. Eigenvalues are
    per unit of tau, as the latent Jacobians of :func:`find_fixed_points`
    (for a low-rank network the outliers equal those latent eigenvalues).

    Parameters
    ----------
    network : LowRankRNN or LowRankPlusRandomRNN
    kappa : array-like of shape (R,), optional
        A fixed point of the network's own latent flow
        (``find_fixed_points(latent_flow(network), ...)``); then x* = m kappa +
        I v + b, an exact fixed point of the low-rank network. Give ``kappa``
        or ``x``.
    x : array-like of shape (N,), optional
        The full state (needed with a random part, whose fixed points leave the
        span of m: e.g. the end state of a simulation).
    v : array-like of shape (D,), optional
        Constant input (default 0).
    dense : bool, default=False
        Also form J_full (N x N) and compute all its eigenvalues (O(N^3)).

    Returns
    -------
    NetworkJacobian

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN or LowRankPlusRandomRNN.
    ValueError
        If not exactly one of ``kappa`` and ``x`` is given, ``kappa`` is given
        for a network with a random part, or a shape is wrong.

    Examples
    --------
    >>> from connector_sim import latent_flow
    >>> from connector_sim.synthetic import gaussian_network_distribution
    >>> network = gaussian_network_distribution("bistable").sample(1000, 0)
    >>> points = find_fixed_points(latent_flow(network), [[-3, 3], [-3, 3]], n_starts=30)
    >>> [network_jacobian(network, p.position).stable for p in points] == [p.stable for p in points]
    True
    """
    from .network import LowRankRNN
    from .sparse import LowRankPlusRandomRNN

    if not isinstance(network, (LowRankRNN, LowRankPlusRandomRNN)):
        raise TypeError(f"network must be a LowRankRNN or a LowRankPlusRandomRNN. Got {type(network).__name__}.")
    if (kappa is None) == (x is None):
        raise ValueError("network_jacobian needs exactly one of kappa (a latent fixed point) and x (the full state). "
                         f"Got kappa={'None' if kappa is None else '...'}, x={'None' if x is None else '...'}.")
    random = isinstance(network, LowRankPlusRandomRNN)
    N, R = network.n_neurons, network.rank
    m, n = network.m.astype(np.float64), network.n.astype(np.float64)
    drive = network.b.astype(np.float64).copy()
    if v is not None and network.n_inputs:
        v = check_array(np.asarray(v, dtype=np.float64), "v", ndim=1, dtype=np.float64, shape=(network.n_inputs,))
        drive += network.I.astype(np.float64) @ v
    if kappa is not None:
        if random:
            raise ValueError("A network with a random part has fixed points off the span of m: give its full state "
                             "x (for instance the end state of a simulation), not kappa.")
        kappa = check_array(np.asarray(kappa, dtype=np.float64), "kappa", ndim=1, dtype=np.float64, shape=(R,))
        x = m @ kappa + drive
    else:
        x = check_array(np.asarray(x, dtype=np.float64), "x", ndim=1, dtype=np.float64, shape=(N,))
    from .activations import apply_activation

    rates = apply_activation(network.activation, x)
    recurrent = m @ (n.T @ rates / N)
    if random:
        recurrent += network.random_part.astype(np.float64) @ rates
    residual = float(np.sqrt(np.mean((-x + recurrent + drive) ** 2)))
    slope = _activation_slope(network.activation, x)
    reduced = (n * slope[:, None]).T @ m / N
    outliers = -1.0 + np.linalg.eigvals(reduced).astype(complex)
    outliers = outliers[np.argsort(-outliers.real, kind="stable")]
    radius = 0.0
    if random:
        if network.random == "gaussian":
            radius = network.g * float(np.sqrt(np.mean(slope**2)))
        else:
            radius = network.g * float(np.sqrt(np.mean(network.random.effective_variances(N) * slope**2)))
    outside = outliers[np.abs(outliers + 1.0) > radius]
    leading = max([-1.0 + radius] + [float(value.real) for value in outside])
    values = None
    if dense:
        from .sparse import _check_dense_fits

        _check_dense_fits(N, "network_jacobian(dense=True)", copies=3)
        matrix = network.connectivity() * slope[None, :]
        matrix[np.diag_indices(N)] -= 1.0
        values = np.linalg.eigvals(matrix)
        values = values[np.argsort(-values.real, kind="stable")]
        leading = float(values[0].real)
    return NetworkJacobian(outliers=outliers, bulk_center=-1.0, bulk_radius=radius, bulk_multiplicity=N - R,
                           leading=leading, stable=leading < 0, residual=residual, eigenvalues=values)


def classify_dynamics(velocity, box, *, n_starts=100, random_state=0, n_trajectories=4, dt=0.2, n_steps=1000,
                      marginal_tol=1e-6, dedup_tol=1e-4):
    """Whether a flow has isolated fixed points, a limit cycle or a ring attractor.

    1. :func:`find_fixed_points` in the box.
    2. A ring (:func:`find_ring`) through the marginal fixed points: "ring".
    3. For a rank-two flow, a closed slow curve around one of the unstable
       fixed points that is a ring up to finite-N noise
       (:func:`find_approximate_ring`, with its defaults): "approximate ring".
       This is what a ring attractor of the mean field becomes in a finite
       network (a few nodes and saddles on the curve, or a slow rotation);
       ``ring`` holds its radius, speeds and slow points. The noise level is
       known when ``velocity`` is ``latent_flow(network)`` of a network.
    4. Otherwise RK4 runs from ``n_trajectories`` random starts in the box;
       if one ends on a limit cycle (:func:`detect_limit_cycle`): "limit cycle".
    5. Otherwise: "fixed points".

    Parameters
    ----------
    velocity : callable
        kappa of shape (..., R) -> dkappa/dt of the same shape.
    box : array-like of shape (R, 2)
    n_starts, random_state, marginal_tol, dedup_tol
        As in :func:`find_fixed_points`.
    n_trajectories : int, default=4
    dt : float, default=0.2
        RK4 step of the runs (the flows here vary on the scale of tau).
    n_steps : int, default=1000
        Steps of each run: 200 tau, enough for four periods of ~25 tau after
        the transient.

    Returns
    -------
    Dynamics

    Raises
    ------
    ValueError
        If ``box`` is not of shape (R, 2) with low < high in every row, or an
        option is out of range (see :func:`find_fixed_points`).
    TypeError
        If ``n_trajectories`` or ``random_state`` has the wrong type.

    Examples
    --------
    >>> import numpy as np
    >>> dynamics = classify_dynamics(lambda k: np.tanh(2 * k) - k, [[-2, 2]], n_starts=10)
    >>> dynamics.kind, len(dynamics.fixed_points)
    ('fixed points', 3)
    """
    box = _check_box(box)
    rng = check_random_state(random_state)
    points = find_fixed_points(velocity, box, n_starts=n_starts, random_state=rng, dedup_tol=dedup_tol,
                               marginal_tol=marginal_tol)
    ring = find_ring(velocity, points)
    if ring is not None:
        return Dynamics("ring", points, ring=ring)
    if len(box) == 2:
        # A ring surrounds a source: try the unstable nodes and foci, nearest the box centre first.
        sources = [p.position for p in points if p.stability in ("unstable node", "unstable focus")]
        sources.sort(key=lambda position: float(np.linalg.norm(position - box.mean(axis=1))))
        for source in sources[:3]:
            ring = find_approximate_ring(velocity, source, box=box, fixed_points=points)
            if ring is not None:
                return Dynamics("approximate ring", points, ring=ring)
    n_trajectories = check_int(n_trajectories, "n_trajectories", minimum=1, owner="classify_dynamics")
    starts = box[:, 0] + rng.random((n_trajectories, len(box))) * (box[:, 1] - box[:, 0])
    for trajectory in integrate(velocity, starts, dt, n_steps):
        cycle = detect_limit_cycle(trajectory, dt)
        if cycle is not None:
            return Dynamics("limit cycle", points, limit_cycle=cycle)
    return Dynamics("fixed points", points)
