"""Stochastic differential equations dz = f(z) dt + G(z) dW and their reference simulator.

:class:`SDE` describes an Ito SDE in R^d: a drift f and a diffusion G
(a constant d x d matrix, a diagonal, a scalar, or a state-dependent
callable). :func:`euler_maruyama` is the reference simulator: batched over
trials and driven by the package's counter-based generator, so trial b's path
depends on (seed, b) only, never on how many trials are simulated at once.

Numpy only: the drifts of the built-in systems also accept torch tensors
(they pick the array namespace from their argument, see :func:`array_namespace`),
but this module never imports torch.
"""

import numbers
import sys

import numpy as np

from .._validation import check_int, check_positive_scalar, check_seed
from ..noise import private_noise

__all__ = ["SDE", "array_namespace", "stack_last", "euler_maruyama", "rk4_trajectory", "largest_lyapunov_exponent",
           "limit_cycle_period"]


def _is_torch(z):
    return type(z).__module__.split(".")[0] == "torch"


def array_namespace(z):
    """The module whose elementwise functions apply to ``z``: numpy, or torch for a torch tensor.

    torch is taken from ``sys.modules`` (a tensor exists, so torch is already
    imported): this never imports torch itself. Both modules spell ``sin``,
    ``cos``, ``exp``, ``sqrt``, ``tanh`` and ``atan2``/``arctan2`` alike enough
    for the built-in drifts; use :func:`stack_last` to assemble components.

    Examples
    --------
    >>> import numpy as np
    >>> array_namespace(np.zeros(2)).__name__
    'numpy'
    """
    if _is_torch(z):
        return sys.modules["torch"]
    return np


def stack_last(components, like):
    """Stack equally shaped arrays along a new last axis, with numpy or torch as ``like`` is.

    Examples
    --------
    >>> import numpy as np
    >>> stack_last([np.zeros(3), np.ones(3)], like=np.zeros(3)).shape
    (3, 2)
    """
    if _is_torch(like):
        return sys.modules["torch"].stack(list(components), dim=-1)
    return np.stack(components, axis=-1)


def _diffusion_kind(diffusion, dim):
    """Validate a diffusion specification; return (kind, constant G or callable)."""
    if callable(diffusion):
        return "callable", diffusion
    if isinstance(diffusion, bool):
        raise TypeError("The 'diffusion' parameter of SDE must be a number, an array or a callable. "
                        f"Got {diffusion!r} instead.")
    if isinstance(diffusion, numbers.Real):
        if not np.isfinite(diffusion) or diffusion < 0:
            raise ValueError(f"The 'diffusion' parameter of SDE must be a finite number >= 0 when a scalar "
                             f"(G = s I). Got {diffusion!r} instead.")
        return "scalar", float(diffusion) * np.eye(dim)
    try:
        G = np.asarray(diffusion, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The 'diffusion' parameter of SDE must be a number, a ({dim},) diagonal, a ({dim}, {dim}) "
                        f"matrix or a callable G(z) -> (..., {dim}, {dim}). Got {diffusion!r} instead.") from exc
    if not np.all(np.isfinite(G)):
        raise ValueError("The 'diffusion' parameter of SDE must contain only finite values. Got non-finite entries.")
    if G.shape == (dim,):
        if np.any(G < 0):
            raise ValueError(f"The 'diffusion' parameter of SDE, given as a diagonal, must have entries >= 0 "
                             f"(the noise amplitude of each component). Got {G.tolist()} instead.")
        return "diagonal", np.diag(G)
    if G.shape == (dim, dim):
        return "matrix", G
    raise ValueError(f"The 'diffusion' parameter of SDE must be a scalar, a ({dim},) diagonal or a ({dim}, {dim}) "
                     f"matrix G (noise covariance G G^T). Got an array of shape {G.shape} instead.")


class SDE:
    """An Ito SDE dz = f(z) dt + G(z) dW in R^d.

    Parameters
    ----------
    drift : callable
        f(z): an array of shape (..., d) to an array of the same shape. It must
        accept numpy arrays; to also accept torch tensors write it with
        elementwise operations, ``xp = array_namespace(z)`` for functions like
        ``xp.sin``, and :func:`stack_last` to assemble the components.
    diffusion : float, array of shape (d,) or (d, d), or callable
        G: a scalar s (G = s I), a diagonal (G = diag(g)), a constant matrix G,
        or a callable G(z) returning shape (..., d, d). The noise covariance is
        G G^T and the diffusion tensor D = G G^T / 2 (so that the Fokker-Planck
        equation reads dp/dt = -div(f p) + sum_ij d_i d_j (D_ij p)).
        Use :meth:`SDE.from_covariance` to give G G^T instead.
    dim : int
        d >= 1.
    name : str, optional
    params : dict, optional
        The parameters the system was built with (for reports).
    exact : dict, optional
        What is known exactly about the system (``"fixed_points"``,
        ``"stationary_density"``, ``"stationary_covariance"``,
        ``"entropy_production"``, ``"period"``, ``"lyapunov_exponent"``, ...).

    Attributes
    ----------
    constant_diffusion : ndarray of shape (d, d) or None
        G when it does not depend on z, else None.

    Raises
    ------
    TypeError
        If ``drift`` is not callable.
    ValueError
        If ``dim`` < 1 or ``diffusion`` has the wrong shape; from :meth:`drift`
        and :meth:`diffusion`, states of the wrong shape or non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> sde = SDE(lambda z: -z, 0.5, dim=1, name="ou")  # dz = -z dt + 0.5 dW
    >>> sde.drift(np.array([[2.0]])), sde.diffusion_tensor()  # D = G G^T / 2
    (array([[-2.]]), array([[0.125]]))
    """

    def __init__(self, drift, diffusion, dim, *, name=None, params=None, exact=None):
        self.dim = check_int(dim, "dim", minimum=1, owner="SDE")
        if not callable(drift):
            raise TypeError(f"The 'drift' parameter of SDE must be a callable f(z) -> (..., {self.dim}). "
                            f"Got {type(drift).__name__} instead.")
        self._drift = drift
        self._diffusion_kind, G = _diffusion_kind(diffusion, self.dim)
        if self._diffusion_kind == "callable":
            self._diffusion_fn = G
            self.constant_diffusion = None
        else:
            self._diffusion_fn = None
            self.constant_diffusion = G
        self.name = "sde" if name is None else str(name)
        self.params = {} if params is None else dict(params)
        self.exact = {} if exact is None else dict(exact)

    @classmethod
    def from_covariance(cls, drift, covariance, dim, **kwargs):
        """An SDE given the noise covariance C = G G^T (constant) instead of G.

        C must be symmetric positive semidefinite; G is its symmetric square
        root (eigendecomposition, negative round-off eigenvalues set to 0).
        """
        dim = check_int(dim, "dim", minimum=1, owner="SDE.from_covariance")
        C = np.asarray(covariance, dtype=float)
        if C.shape != (dim, dim):
            raise ValueError(f"The 'covariance' parameter of SDE.from_covariance must have shape ({dim}, {dim}). "
                             f"Got shape {C.shape} instead.")
        if not np.all(np.isfinite(C)):
            raise ValueError("The 'covariance' parameter of SDE.from_covariance must contain only finite values.")
        scale = max(np.abs(C).max(), 1e-300)
        if np.abs(C - C.T).max() > 1e-10 * scale:
            raise ValueError("The 'covariance' parameter of SDE.from_covariance must be symmetric (C = G G^T). "
                             f"Got max |C - C^T| = {np.abs(C - C.T).max():.3g}.")
        w, V = np.linalg.eigh((C + C.T) / 2)
        if w.min() < -1e-10 * scale:
            raise ValueError("The 'covariance' parameter of SDE.from_covariance must be positive semidefinite. "
                             f"Got an eigenvalue {w.min():.3g} < 0; a covariance G G^T has none.")
        G = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
        return cls(drift, G, dim, **kwargs)

    def __repr__(self):
        return f"SDE(name={self.name!r}, dim={self.dim}, diffusion={self._diffusion_kind})"

    # -- drift ---------------------------------------------------------------
    def _check_state(self, z, owner):
        z = np.asarray(z, dtype=float)
        if z.ndim == 0 or z.shape[-1] != self.dim:
            raise ValueError(f"The state z given to {owner} must have shape (..., {self.dim}) for this {self.dim}-D "
                             f"SDE. Got shape {z.shape} instead.")
        return z

    def drift(self, z):
        """f(z) for z of shape (..., d); a torch tensor in gives a torch tensor out.

        For numpy input the output is checked: same shape as z and finite, else
        a ValueError naming the problem.
        """
        if _is_torch(z):
            return self._drift(z)
        z = self._check_state(z, f"{self.name}.drift")
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.asarray(self._drift(z), dtype=float)
        if out.shape != z.shape:
            raise ValueError(f"The drift of SDE {self.name!r} must return an array of the same shape as its input "
                             f"(..., {self.dim}). Got shape {out.shape} for an input of shape {z.shape}.")
        if not np.all(np.isfinite(out)):
            bad = np.argwhere(~np.isfinite(out))[0]
            raise ValueError(f"The drift of SDE {self.name!r} returned a non-finite value at index {tuple(bad)} "
                             f"(state {z[tuple(bad[:-1])].tolist()}). Check the drift, or the state it is "
                             "evaluated at.")
        return out

    # -- diffusion -----------------------------------------------------------
    def diffusion(self, z=None):
        """G(z), shape (..., d, d); (d, d) for a constant G when z is None."""
        if self.constant_diffusion is not None:
            if z is None:
                return self.constant_diffusion.copy()
            z = self._check_state(z, f"{self.name}.diffusion")
            return np.broadcast_to(self.constant_diffusion, z.shape[:-1] + (self.dim, self.dim)).copy()
        if z is None:
            raise ValueError(f"The diffusion of SDE {self.name!r} depends on the state: pass z.")
        z = self._check_state(z, f"{self.name}.diffusion")
        with np.errstate(over="ignore", invalid="ignore"):
            G = np.asarray(self._diffusion_fn(z), dtype=float)
        want = z.shape[:-1] + (self.dim, self.dim)
        if G.shape != want:
            raise ValueError(f"The diffusion of SDE {self.name!r} must return G(z) of shape (..., {self.dim}, "
                             f"{self.dim}): {want} for an input of shape {z.shape}. Got shape {G.shape} instead.")
        if not np.all(np.isfinite(G)):
            raise ValueError(f"The diffusion of SDE {self.name!r} returned non-finite values.")
        return G

    def noise_covariance(self, z=None):
        """G G^T: (d, d) for a constant G when z is None, else (..., d, d)."""
        G = self.diffusion(z)
        return G @ np.swapaxes(G, -1, -2)

    def diffusion_tensor(self, z=None):
        """D = G G^T / 2, the tensor of the Fokker-Planck equation."""
        return self.noise_covariance(z) / 2.0

    # fast paths for the integrators (no validation: the caller validated once)
    def _f(self, z):
        return self._drift(z)

    def _noise(self, z, xi):
        """G(z) xi for states z (B, d) and draws xi (B, d)."""
        if self.constant_diffusion is not None:
            return xi @ self.constant_diffusion.T
        G = np.asarray(self._diffusion_fn(z), dtype=float)
        return np.einsum("bij,bj->bi", G, xi)


def _initial_states(sde, z0, n_trials, owner):
    z0 = np.asarray(z0, dtype=float)
    if z0.ndim == 1:
        if z0.shape[0] != sde.dim:
            raise ValueError(f"The 'z0' parameter of {owner} must have shape ({sde.dim},) or (n_trials, {sde.dim}). "
                             f"Got shape {z0.shape} instead.")
        n = 1 if n_trials is None else check_int(n_trials, "n_trials", minimum=1, owner=owner)
        z0 = np.repeat(z0[None], n, axis=0)
    elif z0.ndim == 2:
        if z0.shape[1] != sde.dim:
            raise ValueError(f"The 'z0' parameter of {owner} must have shape ({sde.dim},) or (n_trials, {sde.dim}). "
                             f"Got shape {z0.shape} instead.")
        if n_trials is not None and check_int(n_trials, "n_trials", minimum=1, owner=owner) != z0.shape[0]:
            raise ValueError(f"The 'n_trials' parameter of {owner} ({n_trials}) disagrees with z0's "
                             f"{z0.shape[0]} rows. Give one initial state per trial, or a single state and n_trials.")
    else:
        raise ValueError(f"The 'z0' parameter of {owner} must have shape ({sde.dim},) or (n_trials, {sde.dim}). "
                         f"Got shape {z0.shape} instead.")
    if not np.all(np.isfinite(z0)):
        raise ValueError(f"The 'z0' parameter of {owner} must contain only finite values.")
    return np.ascontiguousarray(z0)


def euler_maruyama(sde, z0, n_steps, dt, *, n_trials=None, seed=0, record_every=1, trial_offset=0):
    """Simulate dz = f(z) dt + G(z) dW with the Euler-Maruyama scheme (the reference simulator).

    ::

        z_{t+1} = z_t + f(z_t) dt + sqrt(dt) G(z_t) xi_t

    where ``xi_t[b, i]`` is the package's counter-based standard normal keyed
    by (seed, trial ``trial_offset + b``, step t, component i) -- the draws
    :func:`connector_sim.private_noise` returns with ``n_units = d``. A trial's
    path therefore does not depend on the number of trials simulated with it.

    Parameters
    ----------
    sde : SDE
    z0 : array of shape (d,) or (n_trials, d)
        Initial state(s).
    n_steps : int
        Number of Euler steps (>= 1).
    dt : float
        Time step (> 0).
    n_trials : int, optional
        Number of trials when ``z0`` is a single state (default 1).
    seed : int, default=0
    record_every : int, default=1
        Keep every ``record_every``-th state.
    trial_offset : int, default=0
        Index of the first trial (for simulating trials in separate batches).

    Returns
    -------
    z : ndarray of shape (n_trials, n_steps // record_every + 1, d)
        z[:, k] is the state at time k * record_every * dt; z[:, 0] = z0.

    Raises
    ------
    FloatingPointError
        When the path leaves the floating-point range (reduce ``dt``).

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.ddm import double_well
    >>> paths = euler_maruyama(double_well(), np.array([1.0]), n_steps=100, dt=0.01, n_trials=3, seed=0)
    >>> paths.shape  # (n_trials, n_steps // record_every + 1, d)
    (3, 101, 1)
    """
    owner = "euler_maruyama"
    if not isinstance(sde, SDE):
        raise TypeError(f"The 'sde' parameter of {owner} must be an SDE. Got {type(sde).__name__} instead.")
    n_steps = check_int(n_steps, "n_steps", minimum=1, owner=owner)
    dt = check_positive_scalar(dt, "dt", owner=owner)
    record_every = check_int(record_every, "record_every", minimum=1, owner=owner)
    trial_offset = check_int(trial_offset, "trial_offset", minimum=0, owner=owner)
    seed = check_seed(seed, owner)
    z = _initial_states(sde, z0, n_trials, owner).copy()
    B, d = z.shape
    sde.drift(z)            # validates shape and finiteness once
    if sde.constant_diffusion is None:
        sde.diffusion(z)
    n_rec = n_steps // record_every
    out = np.empty((B, n_rec + 1, d))
    out[:, 0] = z
    sqdt = np.sqrt(dt)
    chunk = max(1, min(n_steps, (1 << 18) // (B * d)))
    t = 0
    with np.errstate(over="ignore", invalid="ignore"):
        while t < n_steps:
            c = min(chunk, n_steps - t)
            xi = private_noise(seed, c, d, n_trials=B, trial_offset=trial_offset, step_start=t)
            for k in range(c):
                z = z + dt * np.asarray(sde._f(z), dtype=float) + sqdt * sde._noise(z, xi[:, k])
                step = t + k + 1
                if step % record_every == 0:
                    out[:, step // record_every] = z
                    if not np.all(np.isfinite(z)):
                        raise FloatingPointError(
                            f"euler_maruyama: the path of SDE {sde.name!r} became non-finite by step {step} "
                            f"(t = {step * dt:g}); reduce dt (now {dt:g}).")
            t += c
    return out


def rk4_trajectory(drift, z0, n_steps, dt, *, record_every=1):
    """Integrate the deterministic flow dz/dt = f(z) with classical Runge-Kutta 4.

    ``drift`` is a callable (or an :class:`SDE`, whose drift is used); ``z0``
    has shape (..., d). Returns shape (..., n_steps // record_every + 1, d).

    Raises
    ------
    TypeError
        If ``n_steps`` or ``record_every`` is not an int, or ``dt`` not a number.
    ValueError
        If ``n_steps`` or ``record_every`` is < 1 or ``dt`` <= 0.

    Examples
    --------
    >>> import numpy as np
    >>> path = rk4_trajectory(lambda z: -z, np.array([1.0]), n_steps=10, dt=0.1)
    >>> path.shape, round(float(path[-1, 0]), 6)  # exp(-1) = 0.367879
    ((11, 1), 0.36788)
    """
    f = drift._f if isinstance(drift, SDE) else drift
    n_steps = check_int(n_steps, "n_steps", minimum=1, owner="rk4_trajectory")
    dt = check_positive_scalar(dt, "dt", owner="rk4_trajectory")
    record_every = check_int(record_every, "record_every", minimum=1, owner="rk4_trajectory")
    z = np.array(z0, dtype=float)
    out = np.empty(z.shape[:-1] + (n_steps // record_every + 1, z.shape[-1]))
    out[..., 0, :] = z
    for step in range(1, n_steps + 1):
        z = _rk4_step(f, z, dt)
        if step % record_every == 0:
            out[..., step // record_every, :] = z
    return out


def _rk4_step(f, z, dt):
    k1 = f(z)
    k2 = f(z + 0.5 * dt * k1)
    k3 = f(z + 0.5 * dt * k2)
    k4 = f(z + dt * k3)
    return z + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def largest_lyapunov_exponent(drift, z0, t_max, *, dt=0.01, t_transient=10.0, renormalize_every=10,
                              eps=1e-8, random_state=0):
    """The largest Lyapunov exponent of dz/dt = f(z) (Benettin's two-trajectory method).

    A reference trajectory and a companion started ``eps`` away are integrated
    with RK4; every ``renormalize_every`` steps the log of their separation
    growth is accumulated and the companion is pulled back to distance eps
    along the current separation. Estimate = sum of logs / (t_max).
    Needs only the drift (no Jacobian), so it applies to a network's latent
    drift as well.

    Parameters
    ----------
    drift : callable or SDE
        f(z) for z of shape (B, d) (batched over independent starts).
    z0 : array of shape (d,) or (B, d)
        Starting points; several rows give independent estimates.
    t_max : float
        Averaging time after the transient.
    dt : float, default=0.01
    t_transient : float, default=10.0
        Time integrated before averaging starts (to reach the attractor).
    renormalize_every : int, default=10
    eps : float, default=1e-8
        Separation of the companion trajectory (small enough to stay linear,
        large enough above round-off).
    random_state : int, default=0
        Seeds the direction of the first separation.

    Returns
    -------
    lambdas : ndarray of shape (B,)
        One estimate per starting point (average them; their spread is an
        error bar).

    Examples
    --------
    >>> import numpy as np
    >>> largest_lyapunov_exponent(lambda z: -z, np.ones(1), t_max=10.0).round(6)  # dz/dt = -z contracts at rate 1
    array([-1.])
    """
    f = drift._f if isinstance(drift, SDE) else drift
    t_max = check_positive_scalar(t_max, "t_max", owner="largest_lyapunov_exponent")
    dt = check_positive_scalar(dt, "dt", owner="largest_lyapunov_exponent")
    z = np.atleast_2d(np.asarray(z0, dtype=float)).copy()
    for _ in range(int(round(t_transient / dt))):
        z = _rk4_step(f, z, dt)
    rng = np.random.default_rng(random_state)
    delta = rng.standard_normal(z.shape)
    delta *= eps / np.linalg.norm(delta, axis=1, keepdims=True)
    w = z + delta
    n_blocks = max(1, int(round(t_max / (dt * renormalize_every))))
    total = np.zeros(z.shape[0])
    for _ in range(n_blocks):
        for _ in range(renormalize_every):
            z = _rk4_step(f, z, dt)
            w = _rk4_step(f, w, dt)
        sep = w - z
        dist = np.linalg.norm(sep, axis=1)
        total += np.log(dist / eps)
        w = z + sep * (eps / dist)[:, None]
    return total / (n_blocks * renormalize_every * dt)


def limit_cycle_period(drift, z0, *, dt=0.001, t_transient=50.0, t_max=100.0, coordinate=0, level=0.0):
    """Period of the deterministic limit cycle of dz/dt = f(z) reached from ``z0`` (RK4).

    After ``t_transient``, the upward crossings of ``z[coordinate] = level``
    are located by linear interpolation between RK4 steps (error O(dt^2) per
    crossing) and the period is the mean interval between successive ones
    over ``t_max``. Returns NaN when fewer than two crossings occur (no cycle,
    or a period longer than t_max).

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.ddm import van_der_pol
    >>> period = limit_cycle_period(van_der_pol().drift, np.array([0.5, 0.0]), dt=0.01, t_transient=20.0,
    ...                             t_max=40.0)
    >>> round(period, 2)
    6.66
    """
    f = drift._f if isinstance(drift, SDE) else drift
    dt = check_positive_scalar(dt, "dt", owner="limit_cycle_period")
    z = np.asarray(z0, dtype=float)[None].copy()
    for _ in range(int(round(t_transient / dt))):
        z = _rk4_step(f, z, dt)
    crossings = []
    prev = z[0, coordinate] - level
    for step in range(1, int(round(t_max / dt)) + 1):
        z = _rk4_step(f, z, dt)
        cur = z[0, coordinate] - level
        if prev < 0 <= cur:
            crossings.append((step - 1 + prev / (prev - cur)) * dt)
        prev = cur
    if len(crossings) < 2:
        return float("nan")
    return float(np.mean(np.diff(crossings)))
