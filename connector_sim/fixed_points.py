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
- :func:`classify_dynamics`: which of the three a flow has.
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
        The fixed points on the ring.
    """

    center: np.ndarray
    radius: float
    plane: np.ndarray
    speed_on: float
    speed_off: float
    fixed_points: list = field(repr=False)


@dataclass
class Dynamics:
    """What :func:`classify_dynamics` found.

    Attributes
    ----------
    kind : {"fixed points", "limit cycle", "ring"}
    fixed_points : list of FixedPoint
        All fixed points in the box (for a ring, the sampled points on it).
    limit_cycle : LimitCycle or None
    ring : Ring or None
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


def classify_dynamics(velocity, box, *, n_starts=100, random_state=0, n_trajectories=4, dt=0.2, n_steps=1000,
                      marginal_tol=1e-6, dedup_tol=1e-4):
    """Whether a flow has isolated fixed points, a limit cycle or a ring attractor.

    1. :func:`find_fixed_points` in the box.
    2. A ring (:func:`find_ring`) through the marginal fixed points: "ring".
    3. Otherwise RK4 runs from ``n_trajectories`` random starts in the box;
       if one ends on a limit cycle (:func:`detect_limit_cycle`): "limit cycle".
    4. Otherwise: "fixed points".

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
    n_trajectories = check_int(n_trajectories, "n_trajectories", minimum=1, owner="classify_dynamics")
    starts = box[:, 0] + rng.random((n_trajectories, len(box))) * (box[:, 1] - box[:, 0])
    for trajectory in integrate(velocity, starts, dt, n_steps):
        cycle = detect_limit_cycle(trajectory, dt)
        if cycle is not None:
            return Dynamics("limit cycle", points, limit_cycle=cycle)
    return Dynamics("fixed points", points)
