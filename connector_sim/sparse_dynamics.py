"""Dynamics of sparse low-rank networks (theory section 5; Herbert & Ostojic).

Four studies of the paper, each with its theory:

- **The comparison model** J = m n^T / N + g chi, chi_ij ~ N(0, 1 / N)
  (:class:`~connector_sim.sparse.LowRankPlusRandomRNN`), simulated by a dense
  mat-vec loop (:func:`simulate_low_rank_plus_random`). Its spectrum is the
  outlier of the low-rank part plus a disk of radius g; a sparse network's
  bulk plays the role of g chi.
- **Regimes of the autonomous dynamics** (decaying / structured stationary /
  chaotic), from theory (:func:`connector_sim.spectra.predicted_regime`) and
  from simulation (:func:`classify_activity`, :func:`simulated_regime`), over
  a grid (:func:`simulated_regime_diagram`, :func:`plot_regime_diagram`).
- **Input-driven dynamics** (paper Fig. 4): kappa_r along m and the
  participation ratio of the activity for a step input along I, as sparsity
  grows (:func:`input_driven_sweep`), with the mean-field fixed point
  (:func:`input_fixed_point`).
- **Evidence accumulation** (paper Fig. 6): a sparse rank-one network built
  from the geometric recipe (:func:`evidence_accumulation_network`) and its
  psychometric curve (:func:`psychometric_curve`, :func:`psychometric_curves`,
  :func:`plot_psychometric`).

Findings that qualify the theory (measured with the functions here, rank one,
C = 100, N = 2000-4000; see tests/test_sparse_dynamics.py):

- The outlier of a sampled sparse matrix is not C sigma_mn but carries a
  mask-dependent shift, to second order B / lambda_1 with
  B = w^2 p a^T (X - p) a, a_i = m_i n_i; its size is
  ~ R^2 sqrt(C / N) / lambda_1 (e.g. 0.8 -> 0.96 and 4.0 -> 4.4), so
  at moderate N points within ~10 % of a boundary can change regime.
- The structured state starts to fluctuate (structured chaos) before the
  bulk reaches the outlier: at lambda_1 = 4 the static state was lost
  between R / lambda_1 ~ 0.75 and 0.9, not at R = lambda_1.
- Without noise, most of the growth of the participation ratio with sparsity
  comes from the time course of the latents (kappa(t) against v(t) as the
  gain falls); the quenched heterogeneity adds ~1e-3.
- With a symmetric task (odd phi, x_0 = 0) the psychometric curve crosses 1/2
  at the threshold at every sparsity; sparsity (through C sigma_mn) changes
  its slope, not its position.

Conventions: the Euler steps, the counter-based private noise and the latent
kappa (``SimulationResult.kappa``, the low-pass filtered ``gain n^T phi(x) /
N``) are those of :func:`connector_sim.simulate`. matplotlib and scipy are
imported inside the functions that need them.
"""

import math
import numbers
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ._validation import (
    check_array,
    check_int,
    check_nonnegative_scalar,
    check_positive_scalar,
    check_random_state,
    check_seed,
)
from .activations import apply_activation
from .network import LowRankRNN
from .parallel import NetworkFile, check_scheduler, run_tasks
from .sparse import LowRankPlusRandomRNN, SparseLowRankRNN

#: Labels :func:`classify_activity` gives: the three regimes of the theory, and
#: "unstructured" for static activity with no significant overlap with m (which
#: the theory does not predict; it shows up only near boundaries, if at all).
SIMULATED_REGIMES = ("decaying", "structured", "chaotic", "unstructured")

_NETWORK_TYPES = (LowRankRNN, SparseLowRankRNN, LowRankPlusRandomRNN)


def _check_network(network, owner, types=_NETWORK_TYPES):
    if not isinstance(network, types):
        names = ", ".join(t.__name__ for t in types)
        raise TypeError(f"The 'network' parameter of {owner} must be one of ({names}). "
                        f"Got {type(network).__name__} instead.")
    return network


def _check_real(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"The {name!r} parameter of {owner} must be a finite real number. Got {value!r} instead.")
    return float(value)


# --- the comparison model: dense low-rank plus random ----------------------------------------


def simulate_low_rank_plus_random(network, n_steps=None, *, dt=None, inputs=None, x0=None, kappa0=None,
                                  n_trials=None, noise_std=0.0, seed=None, record_units=None,
                                  max_record_bytes=None):
    """Simulate J = m n^T / N + g chi by forward Euler (dense mat-vec, BLAS).

    ::

        krec_t  = n^T phi(x_t) / N                                   (float64)
        kappa_{t+1} = (1 - alpha) kappa_t + alpha krec_t
        x_{t+1} = x_t + alpha (-x_t + m krec_t + g chi phi(x_t) + I u_t + b) + sqrt(alpha) sigma xi_t

    the steps of :func:`connector_sim.simulate` (full path) with the random
    part added; xi_t[b, i] is the same counter-based draw (seed, trial b,
    step t, unit i) as there, so a sparse and a dense-plus-random network
    simulated with the same ``seed`` receive the same private noise.

    Parameters
    ----------
    network : LowRankPlusRandomRNN
    n_steps : int, optional
        T; taken from ``inputs`` when they are given.
    dt : float, optional
        Default tau / 10.
    inputs : array-like of shape (T, D) or (n_trials, T, D), optional
    x0 : array-like of shape (N,) or (n_trials, N), optional
        Initial potentials (default x0 = m kappa0 + b).
    kappa0 : array-like of shape (R,) or (n_trials, R), optional
        Initial latents; not with ``x0``.
    n_trials : int, optional
    noise_std : float, default=0
        sigma of the private noise.
    seed : int, optional
        Key of the private noise; drawn at random when None.
    record_units : None, "all", array of int or bool mask, optional
    max_record_bytes : int, optional

    Returns
    -------
    SimulationResult
        As :func:`connector_sim.simulate` returns it (``backend="numpy"``,
        ``path="full"``); ``kappa`` is the low-pass filtered n^T phi(x) / N.
    """
    from .noise import private_noise
    from .simulate import (
        SimulationResult,
        _batch_size,
        _check_memory,
        _check_simulation_memory,
        _FiniteWatch,
        _inputs_and_steps,
        _leading,
        _optional_state,
        _record_indices,
    )

    owner = "simulate_low_rank_plus_random"
    _check_network(network, owner, (LowRankPlusRandomRNN,))
    N, R, D = network.n_neurons, network.rank, network.n_inputs
    dtype = network.dtype
    tau = network.tau
    dt = tau / 10 if dt is None else check_positive_scalar(dt, "dt", owner=owner)
    alpha = dt / tau
    noise_std = check_nonnegative_scalar(noise_std, "noise_std", owner=owner)
    seed = check_seed(seed, owner)
    if n_trials is not None:
        n_trials = check_int(n_trials, "n_trials", minimum=1, owner=owner)
    inputs, T = _inputs_and_steps(inputs, n_steps, D, owner)
    if x0 is not None and kappa0 is not None:
        raise ValueError("Give either x0 or kappa0 (x0 = m kappa0 + b), not both.")

    x0, x0_batched = _leading(_optional_state(x0, "x0", N), 2)
    kappa0, kappa0_batched = _leading(_optional_state(kappa0, "kappa0", R), 2)
    inputs, inputs_batched = _leading(inputs, 3)
    B = _batch_size([("x0", x0 if x0_batched else None), ("kappa0", kappa0 if kappa0_batched else None),
                          ("inputs", inputs if inputs_batched else None)], n_trials)
    units = _record_indices(record_units, N)
    _check_memory(B, T + 1, len(units), dtype, max_record_bytes)
    _check_simulation_memory(B, 1 if inputs is None else inputs.shape[0], T, N, R, D, len(units), dtype, "full",
                             x0 is not None, inputs is not None, "numpy")

    m64, n64 = network.m.astype(np.float64), network.n.astype(np.float64)
    b = network.b
    u = np.zeros((1, T, D)) if inputs is None else inputs
    Bv = u.shape[0]
    v = np.empty((Bv, T + 1, D))
    v[:, 0] = 0.0
    for t in range(T):
        v[:, t + 1] = (1 - alpha) * v[:, t] + alpha * u[:, t]
    x = np.empty((B, N), dtype)
    if x0 is not None:
        x[:] = x0
        kappa = np.linalg.lstsq(m64, (np.broadcast_to(x0, (B, N)) - b).T, rcond=None)[0].T.copy()
    else:
        kappa = np.broadcast_to(np.zeros((1, R)) if kappa0 is None else kappa0, (B, R)).copy()
        x[:] = kappa @ m64.T + b
    kappa_out = np.empty((B, T + 1, R))
    record_out = np.empty((B, T + 1, len(units)), dtype)
    kappa_out[:, 0] = kappa
    record_out[:, 0] = x[:, units]
    G_T = network.random_part.T
    m_T, I_T = network.m_T, network.I_T
    u_kernel = u.astype(dtype)
    a = dtype.type(alpha)
    noise_scale = math.sqrt(alpha) * noise_std
    chunk = max(1, min(T, (1 << 23) // max(1, B * N)))  # noise drawn in blocks of steps
    xi = None
    started = time.perf_counter()
    # A diverging run is reported once, as by simulate() (numpy's overflow warnings are not).
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T):
            if noise_scale and t % chunk == 0:
                xi = private_noise(seed, min(chunk, T - t), N, n_trials=B, step_start=t)
            rates = apply_activation(network.activation, x)
            krec = rates.astype(np.float64) @ n64 / N
            kappa = (1 - alpha) * kappa + alpha * krec
            drive = krec.astype(dtype) @ m_T + rates @ G_T + u_kernel[:, t] @ I_T + b
            x += a * (drive - x)
            if noise_scale:
                x += (noise_scale * xi[:, t % chunk]).astype(dtype)
            kappa_out[:, t + 1] = kappa
            record_out[:, t + 1] = x[:, units]
    watch = _FiniteWatch("warn", dt, alpha)
    watch.check(kappa_out, 0, T, state=x)
    watch.warn_if_diverged()
    wall_time = time.perf_counter() - started
    return SimulationResult(
        kappa=kappa_out, v=v, time=dt * np.arange(T + 1), units=units if len(units) else None,
        potentials=record_out if len(units) else None, path="full", backend="numpy", dtype=dtype, seed=seed,
        alpha=alpha, wall_time=wall_time, network=network, _final_state=x, _clamp=(None, None, 0, 0))


def _simulate(network, n_steps, *, backend="auto", **options):
    """simulate() for low-rank and sparse networks, the dense loop for the comparison model."""
    if isinstance(network, LowRankPlusRandomRNN):
        return simulate_low_rank_plus_random(network, n_steps, **options)
    from .simulate import simulate

    return simulate(network, n_steps, backend=backend, path="full", **options)


# --- regimes of the autonomous dynamics ---------------------------------------------------------


def exact_rank_one(n_neurons, variance, covariance, *, random_state=None, n_inputs=0, input_overlap=0.0,
                   dtype=np.float64, tau=1.0, activation="tanh"):
    """A rank-one network whose sample moments equal the population ones.

    Rows (m_i, n_i[, I_i]) are Gaussian draws, centred and whitened so that, exactly,
    ::

        sum_i m_i = sum_i n_i = 0,  m^T m / N = n^T n / N = sigma^2,  n^T m / N = sigma_mn
        (with an input: sum_i I_i = 0, I^T I / N = 1, n^T I / N = sigma_nI, m^T I / N = 0)

    The outlier gain n^T m / N then carries no O(1 / sqrt(N)) sampling error
    (for a sparse network with C connections it would be C sigma^2 / sqrt(N),
    comparable to the distances to the regime boundaries at moderate N); the
    rows are otherwise as in :func:`connector_sim.rank_one_gaussian`.

    Parameters
    ----------
    n_neurons : int
        N >= 3.
    variance : float
        sigma^2 > 0.
    covariance : float
        sigma_mn with ``|sigma_mn| < sigma^2``.
    random_state : None, int or numpy.random.Generator
    n_inputs : {0, 1}, default=0
    input_overlap : float, default=0
        sigma_nI (needs n_inputs = 1).
    dtype, tau, activation
        As in :class:`LowRankRNN`.

    Returns
    -------
    LowRankRNN
    """
    owner = "exact_rank_one"
    N = check_int(n_neurons, "n_neurons", minimum=3, owner=owner)
    variance = check_positive_scalar(variance, "variance", owner=owner)
    covariance = _check_real(covariance, "covariance", owner)
    if abs(covariance) >= variance:
        raise ValueError(f"The 'covariance' parameter of {owner} must satisfy |sigma_mn| < sigma^2 = {variance}. "
                         f"Got {covariance} instead; lower |sigma_mn| or raise sigma^2.")
    n_inputs = check_int(n_inputs, "n_inputs", minimum=0, maximum=1, owner=owner)
    input_overlap = _check_real(input_overlap, "input_overlap", owner)
    if input_overlap and not n_inputs:
        raise ValueError(f"The 'input_overlap' of {owner} needs n_inputs=1. Got input_overlap={input_overlap} "
                         "with n_inputs=0.")
    cov = np.array([[variance, covariance, 0.0], [covariance, variance, input_overlap], [0.0, input_overlap, 1.0]])
    cov = cov[:2 + n_inputs, :2 + n_inputs]
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"The covariance of (m, n, I) in {owner} is not positive definite: sigma^2 = {variance}, sigma_mn = "
            f"{covariance}, sigma_nI = {input_overlap} (need sigma_mn^2 + sigma^2 sigma_nI^2 < sigma^4). Lower "
            "the overlaps.") from None
    rows = _whitened_gaussian(N, 2 + n_inputs, check_random_state(random_state)) @ chol.T
    return LowRankRNN(rows[:, :1], rows[:, 1:2], rows[:, 2:] if n_inputs else None, tau=tau,
                      activation=activation, dtype=dtype)


def _whitened_gaussian(N, k, rng):
    """(N, k) Gaussian draws with zero column means and sample covariance exactly I."""
    z = rng.standard_normal((N, k))
    z -= z.mean(axis=0)
    chol = np.linalg.cholesky(z.T @ z / N)
    return np.linalg.solve(chol, z.T).T


@dataclass
class RegimeResult:
    """What :func:`classify_activity` measured and concluded.

    Attributes
    ----------
    regime : str
        The label most trials got (one of SIMULATED_REGIMES; ties go to the
        first in that order).
    labels : ndarray of shape (n_initial,), str
        The label of each initial condition.
    activity : ndarray of shape (n_initial,)
        A / A_0: RMS potential over the window, relative to that of x_0.
    fluctuation : ndarray of shape (n_initial,)
        F / A: RMS temporal standard deviation over the window, relative to A.
    overlap : ndarray of shape (n_initial,)
        cos(x_bar, m) of the time-averaged state with m (rank one: the first column).
    kappa : ndarray of shape (n_initial, R)
        Projection of the time-averaged state on m, (m^T m)^-1 m^T x_bar (paper eq. 34).
    threshold : float
        epsilon = exp(-resolution t_discard / tau).
    predicted : str
        The regime of :func:`connector_sim.spectra.network_theory` for this
        network (outliers and bulk of its own loadings).
    outlier, bulk_radius : float
        Largest real part of the predicted outliers, and the predicted bulk radius.
    """

    regime: str
    labels: np.ndarray
    activity: np.ndarray
    fluctuation: np.ndarray
    overlap: np.ndarray
    kappa: np.ndarray
    threshold: float
    predicted: str
    outlier: float
    bulk_radius: float


def classify_activity(network, *, n_initial=4, n_discard=300, n_window=100, dt=0.2, resolution=0.1,
                      overlap_z=5.0, seed=0, backend="auto", max_units=4096):
    """The regime of a network's autonomous dynamics, from simulation.

    From ``n_initial`` initial conditions x_0 = +-m / sd(m) + xi (xi_i ~ N(0,
    1), signs alternating, so both structured states are reached), simulate
    ``n_discard`` steps (the transient), then ``n_window`` steps (the window),
    and measure on the window, over K <= ``max_units`` recorded units::

        A = sqrt(<x_i(t)^2>_{i,t}),   F = sqrt(<Var_t x_i(t)>_i),   A_0 = sqrt(<x_i(0)^2>_i)
        c = cos(x_bar, m),  x_bar = <x(t)>_t      (over the recorded units)

    Every threshold derives from one number, the ``resolution`` r (in units
    of eigenvalues): a mode whose eigenvalue lies r inside the stability line
    (Re lambda = 1 - r) decays by epsilon = exp(-r t_discard / tau) during the
    transient. The classifier therefore resolves networks whose spectrum lies
    at least r from a boundary, and reads, in this order::

        decaying      A < sqrt(epsilon) A_0 and A_2 < A_1   (small and still shrinking)
        chaotic       F > epsilon A                         (still moving after the transient)
        structured    static, and |c| sqrt(K) > overlap_z
        unstructured  static, no overlap with m beyond chance

    (A_1, A_2: the RMS over the first and second half of the window;
    sqrt(epsilon) is what a mode r / 2 inside the line leaves, so a network
    decaying slowly, but faster than that, is not mistaken for a fluctuating
    one.)

    Active states r beyond a boundary are far from both thresholds: a
    structured state at lambda_1 = 1 + r has A ~ sqrt(r) (tanh saturation),
    and chaos at R = 1 + r fluctuates with F / A = O(sqrt(r)) to O(1), while
    epsilon = exp(-6) = 2.5e-3 at the defaults (t_discard = 60 tau). For a
    state unrelated to m, cos(x_bar, m) sqrt(K) is ~ N(0, 1): ``overlap_z``
    = 5 standard deviations.

    Parameters
    ----------
    network : SparseLowRankRNN, LowRankRNN or LowRankPlusRandomRNN
        No inputs are given (autonomous dynamics).
    n_initial : int, default=4
    n_discard : int, default=300
        Steps of transient.
    n_window : int, default=100
        Steps of the measurement window (>= 2).
    dt : float, default=0.2
        Euler step, in units of tau.
    resolution : float, default=0.1
        r, see above.
    overlap_z : float, default=5
    seed : int, default=0
        Seed of the initial conditions.
    backend : {"auto", "cpp", "numba", "numpy"}, default="auto"
        Of :func:`connector_sim.simulate` (ignored for the comparison model).
    max_units : int, default=4096
        Units recorded in the window (a fixed random subset when N is larger).

    Returns
    -------
    RegimeResult
    """
    from . import spectra

    owner = "classify_activity"
    _check_network(network, owner)
    n_initial = check_int(n_initial, "n_initial", minimum=1, owner=owner)
    n_discard = check_int(n_discard, "n_discard", minimum=1, owner=owner)
    n_window = check_int(n_window, "n_window", minimum=2, owner=owner)
    dt = check_positive_scalar(dt, "dt", owner=owner)
    resolution = check_positive_scalar(resolution, "resolution", owner=owner)
    overlap_z = check_positive_scalar(overlap_z, "overlap_z", owner=owner)
    max_units = check_int(max_units, "max_units", minimum=2, owner=owner)
    N = network.n_neurons
    rng = np.random.default_rng(seed)
    m = network.m.astype(np.float64)
    signs = np.where(np.arange(n_initial) % 2 == 0, 1.0, -1.0)
    x0 = rng.standard_normal((n_initial, N)) + signs[:, None] * (m[:, 0] / max(m[:, 0].std(), 1e-300))
    x0 += network.b
    units = np.arange(N) if N <= max_units else np.sort(rng.choice(N, max_units, replace=False))
    options = {"dt": dt, "backend": backend, "seed": int(rng.integers(2**62))}
    transient = _simulate(network, n_discard, x0=x0, **options)
    window = _simulate(network, n_window, x0=transient.final_state, record_units=units, **options)
    x = window.potentials[:, 1:].astype(np.float64) - network.b[units]  # (B, T, K)

    A0 = np.sqrt(np.mean((x0[:, units] - network.b[units]) ** 2, axis=1))
    A = np.sqrt(np.mean(x**2, axis=(1, 2)))
    F = np.sqrt(np.mean(x.var(axis=1), axis=1))
    x_bar = x.mean(axis=1)
    m_units = m[units]
    norms = np.linalg.norm(x_bar, axis=1) * np.linalg.norm(m_units[:, 0])
    overlap = np.divide(x_bar @ m_units[:, 0], norms, out=np.zeros(n_initial), where=norms > 0)
    kappa = np.linalg.lstsq(m_units, x_bar.T, rcond=None)[0].T
    epsilon = math.exp(-resolution * n_discard * dt)
    labels = np.empty(n_initial, dtype=object)
    half = n_window // 2
    a_first = np.sqrt(np.mean(x[:, :half] ** 2, axis=(1, 2)))
    a_second = np.sqrt(np.mean(x[:, half:] ** 2, axis=(1, 2)))
    for trial in range(n_initial):
        if A[trial] < math.sqrt(epsilon) * A0[trial] and a_second[trial] < a_first[trial]:
            labels[trial] = "decaying"
        elif F[trial] > epsilon * A[trial]:
            labels[trial] = "chaotic"
        elif abs(overlap[trial]) * math.sqrt(len(units)) > overlap_z:
            labels[trial] = "structured"
        else:
            labels[trial] = "unstructured"
    counts = [np.sum(labels == name) for name in SIMULATED_REGIMES]
    theory = spectra.network_theory(network)
    outlier = float(theory.outliers.real.max())
    return RegimeResult(
        regime=SIMULATED_REGIMES[int(np.argmax(counts))], labels=labels.astype(str),
        activity=A / A0, fluctuation=np.divide(F, A, out=np.zeros_like(F), where=A > 0), overlap=overlap,
        kappa=kappa, threshold=epsilon, predicted=spectra._spectral_regime(outlier, theory.bulk_radius),
        outlier=outlier, bulk_radius=float(theory.bulk_radius))


def simulated_regime(variance, covariance, *, n_neurons, n_connections=None, sparsity=None, scaling="1",
                     exact_moments=True, random_state=0, mask_seed=1, **options):
    """The regime of a sampled sparse rank-one network, from simulation.

    Samples (m_i, n_i) Gaussian with variance sigma^2 and covariance sigma_mn
    (:func:`exact_rank_one` when ``exact_moments``, else
    :func:`connector_sim.rank_one_gaussian`), keeps C connections per row (or
    each with probability 1 - s), P_ij = w X_ij m_i n_j, and classifies the
    autonomous activity with :func:`classify_activity`. The theory it is
    compared with is :func:`connector_sim.spectra.predicted_regime`::

        lambda_1 = w N (1 - s) sigma_mn,   R = sqrt(w^2 N s (1 - s) E[m^2 n^2]),  E[m^2 n^2] = sigma^4 + 2 sigma_mn^2

    Parameters
    ----------
    variance, covariance : float
        sigma^2 > 0 and sigma_mn (``|sigma_mn| < sigma^2``).
    n_neurons : int
    n_connections : int, optional
        C; give this or ``sparsity``.
    sparsity : float, optional
    scaling : {"1", "1/N"}, default="1"
        w = 1 (the high-sparsity scaling of the paper's Fig. 5) or 1 / N.
    exact_moments : bool, default=True
    random_state : None, int or Generator, default=0
        Of the loadings.
    mask_seed : int, default=1
    **options
        Passed to :func:`classify_activity` (n_initial, n_discard, n_window,
        dt, resolution, overlap_z, seed, backend, max_units).

    Returns
    -------
    RegimeResult
        ``predicted`` is the regime of the sampled network's own spectrum
        theory (:func:`connector_sim.spectra.network_theory`).
    """
    from .sparse import rank_one_gaussian, sparsify

    if exact_moments:
        dense = exact_rank_one(n_neurons, variance, covariance, random_state=random_state)
    else:
        dense = rank_one_gaussian(n_neurons, variance, covariance, random_state=random_state)
    network = sparsify(dense, n_connections=n_connections, sparsity=sparsity, seed=mask_seed, scaling=scaling)
    return classify_activity(network, **options)


def predicted_boundary_distance(outlier, radius):
    """Distance of (lambda_1, R) to the nearest regime boundary, in log units.

    In the plane (a, b) = (ln lambda_1, ln R) the boundaries of
    :func:`connector_sim.spectra.predicted_regime` are three half-lines::

        a = 0, b <= 0   (decaying | structured)
        b = 0, a <= 0   (decaying | chaotic)
        a = b >= 0      (structured | chaotic)

    and the distance is the Euclidean distance to the nearest one (0.1 means
    the eigenvalues are ~10 % away from changing the regime). lambda_1 <= 0
    (no outlier to the right) counts as lambda_1 = 1e-12.

    Parameters
    ----------
    outlier, radius : float or array-like
        lambda_1 and R (broadcast).

    Returns
    -------
    float or ndarray
    """
    with np.errstate(invalid="ignore"):
        a = np.log(np.maximum(np.asarray(outlier, dtype=np.float64), 1e-12))
        b = np.log(np.maximum(np.asarray(radius, dtype=np.float64), 1e-12))

    def to_half_line(px, py, dx, dy):
        # Half-line from the origin along the unit vector (dx, dy).
        along = np.maximum(px * dx + py * dy, 0.0)
        return np.hypot(px - along * dx, py - along * dy)

    s = 1.0 / math.sqrt(2.0)
    distance = np.minimum(np.minimum(to_half_line(a, b, 0.0, -1.0), to_half_line(a, b, -1.0, 0.0)),
                          to_half_line(a, b, s, s))
    return float(distance) if distance.ndim == 0 else distance


@dataclass
class RegimeDiagram:
    """Theory and simulation over a (sigma^2, sigma_mn) grid.

    Arrays have shape (len(covariances), len(variances)): row i is
    covariances[i], column j is variances[j].

    Attributes
    ----------
    variances, covariances : ndarray
    predicted : ndarray of str
        :func:`connector_sim.spectra.predicted_regime` (population theory);
        "" where ``|sigma_mn| >= sigma^2`` (no such m, n: not simulated, nan
        outlier, radius and distance, ``results`` entry None).
    simulated : ndarray of str
        :func:`simulated_regime`.
    outlier, bulk_radius : ndarray
        The predicted lambda_1 and R.
    distance : ndarray
        :func:`predicted_boundary_distance`.
    results : list of list of RegimeResult
    settings : dict
        n_neurons, n_connections / sparsity, scaling, correlated.
    """

    variances: np.ndarray
    covariances: np.ndarray
    predicted: np.ndarray
    simulated: np.ndarray
    outlier: np.ndarray
    bulk_radius: np.ndarray
    distance: np.ndarray
    results: list = field(repr=False)
    settings: dict = field(default_factory=dict)

    def agreement(self, margin=0.0):
        """Fraction of grid points at distance >= margin where theory and simulation agree (nan if none)."""
        away = (self.distance >= margin) & (self.predicted != "")
        if not away.any():
            return float("nan")
        return float(np.mean(self.predicted[away] == self.simulated[away]))


def simulated_regime_diagram(variances, covariances, *, n_neurons, n_connections=None, sparsity=None,
                             scaling="1", correlated=True, exact_moments=True, random_state=0, mask_seed=1,
                             scheduler=None, progress=None, **options):
    """The phase diagram over a (sigma^2, sigma_mn) grid, from theory and from simulation.

    At each grid point the population theory gives
    ::

        lambda_1 = w N (1 - s) sigma_mn,   R = sqrt(w^2 N s (1 - s) (sigma^4 + 2 sigma_mn^2 [correlated]))

    and the regime (:func:`connector_sim.spectra.predicted_regime`), and
    :func:`simulated_regime` simulates a network sampled there (the same seeds
    at every point).

    Parameters
    ----------
    variances : array-like of float
        sigma^2 values (> 0).
    covariances : array-like of float
        sigma_mn values, each with ``|sigma_mn| < sigma^2`` for every variance.
    n_neurons, n_connections, sparsity, scaling
        As in :func:`simulated_regime`.
    correlated : bool, default=True
        E[m^2 n^2] = sigma^4 + 2 sigma_mn^2 (jointly Gaussian m, n, as
        sampled here) in the bulk radius; False uses the paper's sigma^4.
    exact_moments, random_state, mask_seed, **options
        As in :func:`simulated_regime`.
    scheduler : None, str or dask.distributed.Client, default=None
        Where the grid points run (one task each: sigma^2, sigma_mn and the
        seeds; the worker samples the network): None / "serial",
        "processes", "dask", "dask://host:port" or a Client; see
        :mod:`connector_sim.parallel`. The same diagram on each, bit for
        bit; other schedulers than the serial one need an int
        ``random_state`` (a Generator's draws would depend on the order).
    progress : None, bool or callable, default=None
        ``progress(done, total, description)`` as grid points finish.

    Returns
    -------
    RegimeDiagram
    """
    from . import spectra

    owner = "simulated_regime_diagram"
    variances = check_array(variances, "variances", ndim=1, dtype=np.float64)
    covariances = check_array(covariances, "covariances", ndim=1, dtype=np.float64)
    if not len(variances) or not len(covariances):
        raise ValueError(f"{owner} needs at least one variance and one covariance. "
                         f"Got {len(variances)} and {len(covariances)}.")
    if np.any(variances <= 0):
        raise ValueError(f"The 'variances' of {owner} must be > 0 (sigma^2). Got {variances.tolist()}.")
    if not np.any(np.abs(covariances)[:, None] < variances[None, :]):
        raise ValueError(
            f"No grid point of {owner} has |sigma_mn| < sigma^2 (a positive-definite covariance of m, n): "
            f"covariances {covariances.tolist()}, variances {variances.tolist()}. Lower the covariances.")
    theory = {"n_connections": n_connections, "sparsity": sparsity, "n_neurons": n_neurons, "scaling": scaling}
    shape = (len(covariances), len(variances))
    predicted = np.empty(shape, dtype=object)
    simulated = np.empty(shape, dtype=object)
    outlier, radius = np.empty(shape), np.empty(shape)
    _check_order_free_seed(random_state, scheduler, owner)
    points = []
    for i, cov in enumerate(covariances):
        for j, var in enumerate(variances):
            if abs(cov) >= var:  # no such Gaussian (m, n): left out
                predicted[i, j] = simulated[i, j] = ""
                outlier[i, j] = radius[i, j] = np.nan
                continue
            outlier[i, j] = spectra.predicted_outlier(cov, n_connections=n_connections, sparsity=sparsity,
                                                      n_neurons=n_neurons, scaling=scaling)
            radius[i, j] = spectra.predicted_bulk_radius(var, covariance=cov, correlated=correlated, **theory)
            predicted[i, j] = spectra.predicted_regime(var, cov, correlated=correlated, **theory)
            points.append((i, j, float(var), float(cov)))
    settings = dict(n_neurons=n_neurons, n_connections=n_connections, sparsity=sparsity, scaling=scaling,
                    exact_moments=exact_moments, random_state=random_state, mask_seed=mask_seed, **options)
    done = run_tasks(_regime_task, points, scheduler=scheduler, shared=settings, progress=progress,
                     describe=lambda p: f"sigma^2 = {p[2]:g}, sigma_mn = {p[3]:g}", owner=owner)
    results = [[None] * len(variances) for _ in covariances]
    for (i, j, _, _), result in zip(points, done):
        simulated[i, j] = result.regime
        results[i][j] = result
    return RegimeDiagram(
        variances=variances, covariances=covariances, predicted=predicted.astype(str),
        simulated=simulated.astype(str), outlier=outlier, bulk_radius=radius,
        distance=predicted_boundary_distance(outlier, radius), results=results,
        settings=dict(theory, correlated=correlated))


def _regime_task(point, settings):
    """One grid point of simulated_regime_diagram, from (i, j, sigma^2, sigma_mn) and the shared settings."""
    _, _, var, cov = point
    return simulated_regime(var, cov, **settings)


def _check_order_free_seed(random_state, scheduler, owner, name="random_state"):
    """Off the serial scheduler a seed must be an int: a shared Generator's draws depend on the task order."""
    if check_scheduler(scheduler, owner)[0] != "serial" and (
            isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral)):
        raise ValueError(
            f"The '{name}' parameter of {owner} must be an int to run on the scheduler {scheduler!r} (each task "
            f"rebuilds its network from it; a Generator's draws would depend on the order the tasks run in). "
            f"Got {random_state!r} instead.")


_REGIME_COLORS = {"decaying": "0.85", "structured": "#8fbcd4", "chaotic": "#e8a87c", "unstructured": "#b39ddb"}
_REGIME_MARKERS = {"decaying": "o", "structured": "s", "chaotic": "^", "unstructured": "D"}


def plot_regime_diagram(diagram, *, ax=None, resolution=200):
    """The phase diagram: theory regions (shaded) and simulated regimes (markers).

    The background is :func:`connector_sim.spectra.predicted_regime` on a fine
    grid spanning the diagram, with the boundaries lambda_1 = 1, R = 1 and
    lambda_1 = R; each grid point of the simulation is a marker whose shape
    and colour give the simulated regime, circled in red where it disagrees
    with the theory.

    Parameters
    ----------
    diagram : RegimeDiagram
    ax : matplotlib Axes, optional
    resolution : int, default=200
        Points per axis of the theory background.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    from . import spectra

    if not isinstance(diagram, RegimeDiagram):
        raise TypeError(f"diagram must be a RegimeDiagram (from simulated_regime_diagram). "
                        f"Got {type(diagram).__name__}.")
    resolution = check_int(resolution, "resolution", minimum=2, owner="plot_regime_diagram")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    v, c = diagram.variances, diagram.covariances
    pad_v = 0.05 * (v.max() - v.min() or v.max())
    pad_c = 0.05 * (c.max() - c.min() or abs(c.max()) or 1.0)
    fine_v = np.linspace(max(v.min() - pad_v, 1e-12), v.max() + pad_v, resolution)
    fine_c = np.linspace(c.min() - pad_c, c.max() + pad_c, resolution)
    settings = dict(diagram.settings)
    names = list(spectra.REGIMES)
    codes = np.array([[names.index(spectra.predicted_regime(var, cov, **settings)) for var in fine_v]
                      for cov in fine_c])
    cmap = ListedColormap([_REGIME_COLORS[name] for name in names])
    ax.pcolormesh(fine_v, fine_c, codes, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, shading="nearest")
    grid_v, grid_c = np.meshgrid(v, c)
    for name in SIMULATED_REGIMES:
        where = diagram.simulated == name
        if where.any():
            ax.scatter(grid_v[where], grid_c[where], marker=_REGIME_MARKERS[name], color="k", s=30, zorder=3)
    wrong = (diagram.simulated != diagram.predicted) & (diagram.predicted != "")
    if wrong.any():
        ax.scatter(grid_v[wrong], grid_c[wrong], marker="o", s=140, facecolors="none", edgecolors="red",
                   linewidths=1.5, zorder=4)
    handles = [Line2D([], [], marker=_REGIME_MARKERS[name], color="k", linestyle="", label=f"simulated: {name}")
               for name in SIMULATED_REGIMES if (diagram.simulated == name).any()]
    handles += [plt.Rectangle((0, 0), 1, 1, color=_REGIME_COLORS[name], label=f"theory: {name}") for name in names]
    if wrong.any():
        handles.append(Line2D([], [], marker="o", color="red", markerfacecolor="none", linestyle="",
                              label="disagrees"))
    ax.legend(handles=handles, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_xlabel("variance sigma^2")
    ax.set_ylabel("covariance sigma_mn")
    where = settings.get("n_connections")
    label = f"C = {where}" if where is not None else f"s = {settings.get('sparsity')}"
    ax.set_title(f"{label}, N = {settings.get('n_neurons')}", fontsize="small")
    return ax


# --- input-driven dynamics -----------------------------------------------------------------------


def participation_ratio(activity):
    """Participation ratio of the covariance of activity over time.

    ::

        PR = (sum_k l_k)^2 / sum_k l_k^2 = tr(S)^2 / ||S||_F^2,
        S = cov over t of x(t) in R^N  (N x N; l_k its eigenvalues)

    (Herbert & Ostojic Fig. 4: the covariance of the activations along one
    trajectory.) Computed from the T x T Gram matrix of the centred
    trajectory, which has the same nonzero eigenvalues. PR is 1 for activity
    along one direction, at most min(N, T - 1).

    Parameters
    ----------
    activity : array-like of shape (T, N) or (n_trials, T, N)
        x_i(t), T >= 2.

    Returns
    -------
    float or ndarray of shape (n_trials,)
        nan where the activity does not vary in time.
    """
    x = np.asarray(activity, dtype=np.float64)
    if x.ndim not in (2, 3) or x.shape[-2] < 2:
        raise ValueError(f"activity must have shape (T, N) or (n_trials, T, N) with T >= 2. Got shape {x.shape}.")
    single = x.ndim == 2
    x = x[None] if single else x
    out = np.empty(x.shape[0])
    for trial, trajectory in enumerate(x):
        centred = trajectory - trajectory.mean(axis=0)
        gram = centred @ centred.T if centred.shape[0] <= centred.shape[1] else centred.T @ centred
        trace, frobenius2 = np.trace(gram), np.sum(gram * gram)
        out[trial] = trace * trace / frobenius2 if frobenius2 > 0 else np.nan
    return float(out[0]) if single else out


def _hermite(order=64):
    x, w = np.polynomial.hermite.hermgauss(order)
    return math.sqrt(2.0) * x, w / math.sqrt(math.pi)


def input_fixed_point(network, amplitude=0.0, *, kappa0=None, heterogeneity=True, tol=1e-12, max_iter=100_000):
    """The mean-field steady state kappa_r under a constant input u (the latent along m).

    Static mean field over the network's own rows i (finite-N sample
    averages <.>_i, Gauss-Hermite in z ~ N(0, 1))::

        x_i     = mu_i + s_i z,   mu_i = m_i . kappa + I_i . u + b_i,   s_i^2 = Delta + m_i^T V m_i
        kappa   = gain <n_i E_z[phi(x_i)]>_i                      gain = w N (1 - s)  (1 if dense)
        Delta   = g^2 <E_z[phi(x_i)^2]>_i                          random part g chi (else 0)
        V       = w^2 N s (1 - s) <n_i n_i^T E_z[phi(x_i)^2]>_i     Bernoulli mask
                = w^2 C (1 - C / N) Cov_i(n_i E_z[phi(x_i)])         C connections per row

    Delta is the static variance a random part adds (the fixed point of the
    dynamic mean field, valid where that fixed point is stable); V is the
    quenched variance of the recurrent latent w sum_j X_ij n_j phi(x_j) that
    unit i receives from its own random set of inputs (mean kappa; Herbert &
    Ostojic neglect it, ``heterogeneity=False``). The state is reached by
    iterating the flow d kappa / dt = -kappa + gain <n phi(.)> from kappa = 0,
    the state a network at rest goes to when the step input starts. For a
    dense low-rank network (V = Delta = 0) this is its exact fixed point.
    Without inputs, start from ``kappa0`` != 0 to reach a structured state.

    Parameters
    ----------
    network : LowRankRNN, SparseLowRankRNN or LowRankPlusRandomRNN
    amplitude : float or array-like of shape (D,), default=0
        u (ignored without inputs).
    kappa0 : array-like of shape (R,), optional
        Start of the iteration (default 0, the state at rest).
    heterogeneity : bool, default=True
        Include V (sparse networks).
    tol : float, default=1e-12
        Convergence on the largest change of kappa, Delta and V in one step.
    max_iter : int, default=100000

    Returns
    -------
    ndarray of shape (R,)

    Raises
    ------
    RuntimeError
        If the iteration does not converge (no stable fixed point reached from
        rest, e.g. in the chaotic regime).
    """
    owner = "input_fixed_point"
    _check_network(network, owner)
    if isinstance(network, LowRankPlusRandomRNN) and network.random != "gaussian" and network.g > 0:
        raise ValueError(f"{owner} takes Delta = g^2 <phi^2> from a Gaussian chi; this network has an "
                         f"excitatory/inhibitory random part ({network.random!r}), whose means and column "
                         "variances it does not model. Simulate it (simulate_low_rank_plus_random) instead.")
    D = network.n_inputs
    try:
        u = np.broadcast_to(np.asarray(amplitude, dtype=np.float64), (D,))
    except (ValueError, TypeError) as error:
        raise ValueError(f"The 'amplitude' of {owner} must be a number or {D} numbers (one per input). "
                         f"Got {amplitude!r}.") from error
    if not np.all(np.isfinite(u)):
        raise ValueError(f"The 'amplitude' of {owner} must be finite. Got {amplitude!r}.")
    m, n = network.m.astype(np.float64), network.n.astype(np.float64)
    N, R = m.shape
    base = network.I.astype(np.float64) @ u + network.b.astype(np.float64)
    g = network.g if isinstance(network, LowRankPlusRandomRNN) else 0.0
    gain = network.gain if isinstance(network, SparseLowRankRNN) else 1.0
    quenched = 0.0
    if heterogeneity and isinstance(network, SparseLowRankRNN):
        mask = network.mask
        if mask.kind == "bernoulli" or mask.per == "column":  # rows of a column mask: ~ independent entries
            quenched = network.weight**2 * N * mask.density * (1.0 - mask.density)
        else:
            quenched = network.weight**2 * mask.n_connections * (1.0 - mask.density)
    nodes, weights = _hermite(40)
    kappa = np.zeros(R) if kappa0 is None else check_array(kappa0, "kappa0", ndim=1, dtype=np.float64, shape=(R,))
    delta, V = 0.0, np.zeros((R, R))
    step = 0.5
    for _ in range(max_iter):
        mu = m @ kappa + base
        spread = np.sqrt(np.maximum(delta + np.einsum("ir,rq,iq->i", m, V, m), 0.0))
        if spread.any():
            rates = apply_activation(network.activation, mu[:, None] + spread[:, None] * nodes[None])
            mean_rate, mean_square = rates @ weights, (rates * rates) @ weights
        else:
            mean_rate = apply_activation(network.activation, mu)
            mean_square = mean_rate * mean_rate
        a_mean = n.T @ mean_rate / N
        new_kappa = gain * a_mean
        new_delta = g * g * float(np.mean(mean_square))
        if quenched and (network.mask.kind == "bernoulli" or network.mask.per == "column"):
            new_V = quenched * (n * mean_square[:, None]).T @ n / N
        elif quenched:
            a = n * mean_rate[:, None]
            new_V = quenched * ((a.T @ a) / N - np.outer(a_mean, a_mean))
        else:
            new_V = V
        change = step * max(np.max(np.abs(new_kappa - kappa)), abs(new_delta - delta), np.max(np.abs(new_V - V)))
        kappa = kappa + step * (new_kappa - kappa)
        delta = delta + step * (new_delta - delta)
        V = V + step * (new_V - V)
        if change < tol:
            return kappa
    raise RuntimeError(
        f"{owner} did not converge in {max_iter} iterations (last change {change:.3g}): the network has no "
        "stable fixed point reached from rest under this input (e.g. it is chaotic or oscillates). Lower the "
        "outlier or bulk below 1, or raise max_iter if the flow is merely slow.")


@dataclass
class InputDrivenSweep:
    """Responses to a step input along I at several sparsity levels (or random strengths g).

    Attributes
    ----------
    levels : ndarray
        The swept values: C (``n_connections``), s (``sparsities``) or g.
    kind : {"n_connections", "sparsity", "g"}
    sparsity : ndarray
        s of each level (0 for the dense-plus-random model).
    gain : ndarray
        w N (1 - s) (1 for the dense-plus-random model).
    kappa_r : ndarray
        Projection of the final state on m, (m^T m)^-1 m^T (x_T - I u - b)
        (paper eq. 34, with the input part removed; rank one: a number per level).
    kappa_latent : ndarray
        The simulator's latent at the end (low-pass filtered gain n^T phi(x) / N).
    kappa_theory : ndarray
        :func:`input_fixed_point`.
    participation_ratio : ndarray
        PR of the activity over the whole trajectory (step onset to the end),
        :func:`participation_ratio`.
    participation_ratio_latent : ndarray
        PR of the activity m kappa(t) + I v(t) + b that the latents alone
        describe (the activity of a dense low-rank network): what sparsity
        or the random part adds shows as PR - PR_latent.
    kappa_scale : ndarray
        The finite-N scale of what the mean field leaves out, from the final
        state x and its residual r = x - m kappa_latent - I u - b (the
        quenched part of the activity, off the low-rank plane)::

            gain sd_i(n_i (phi(x_i) - phi(x_i - r_i))) / sqrt(N) + sqrt(sum_i m_i^2 r_i^2) / sum_i m_i^2

        (its effect on the sample average in kappa, and on the projection on
        m). 0 for a dense low-rank network, whose activity stays on the plane.
    amplitude : float
    """

    levels: np.ndarray
    kind: str
    sparsity: np.ndarray
    gain: np.ndarray
    kappa_r: np.ndarray
    kappa_latent: np.ndarray
    kappa_theory: np.ndarray
    participation_ratio: np.ndarray
    participation_ratio_latent: np.ndarray
    kappa_scale: np.ndarray
    amplitude: float


def _latent_participation_ratio(network, kappa, v):
    """PR of x(t) = m kappa(t) + I v(t) + b from the (R + D)-dimensional latents: eig of (L^T L) cov(latents)."""
    L = np.hstack([network.m, network.I]).astype(np.float64)
    latents = np.concatenate([kappa, np.broadcast_to(v, kappa.shape[:1] + v.shape[1:])], axis=-1)
    centred = latents - latents.mean(axis=0)
    M = (L.T @ L) @ (centred.T @ centred)
    trace, trace2 = np.trace(M), np.trace(M @ M)
    return trace * trace / trace2 if trace2 > 0 else np.nan


def _input_level_task(level, shared):
    """One level of input_driven_sweep: the sparsified (or dense-plus-random) network, simulated and measured."""
    from .sparse import sparsify

    network, settings = shared
    if isinstance(network, NetworkFile):  # read once per process (cached), checked against its checksum
        network = network.load()[0]
    kind, amplitude, n_steps = settings["kind"], settings["amplitude"], settings["n_steps"]
    N = network.n_neurons
    inputs = np.full((n_steps, 1), amplitude)
    x0 = network.b.astype(np.float64)
    m64 = network.m.astype(np.float64)
    steady = network.I[:, 0].astype(np.float64) * amplitude + network.b
    if kind == "g":
        level_network = LowRankPlusRandomRNN(network, float(level), seed=settings["random_seed"])
    elif kind == "n_connections":
        level_network = sparsify(network, n_connections=int(level), seed=settings["mask_seed"],
                                 scaling=settings["scaling"])
    else:
        level_network = sparsify(network, sparsity=float(level), seed=settings["mask_seed"],
                                 scaling=settings["scaling"])
    result = _simulate(level_network, n_steps, inputs=inputs, x0=x0, dt=settings["dt"], record_units=settings["units"],
                       backend=settings["backend"], seed=0)
    final = result.final_state[0].astype(np.float64)
    out = {"sparsity": level_network.sparsity if isinstance(level_network, SparseLowRankRNN) else 0.0,
           "gain": level_network.gain,
           "kappa_r": np.linalg.lstsq(m64, final - steady, rcond=None)[0],
           "kappa_latent": result.kappa[0, -1],
           "kappa_theory": input_fixed_point(level_network, amplitude),
           "pr": participation_ratio(result.potentials[0]),
           "pr_latent": _latent_participation_ratio(network, result.kappa[0], result.v[0])}
    residual = final - steady - m64 @ result.kappa[0, -1]
    quenched = network.n.astype(np.float64) * (apply_activation(network.activation, final)
                                               - apply_activation(network.activation, final - residual))[:, None]
    weighted = np.sqrt(np.sum((m64 * residual[:, None]) ** 2, axis=0)) / np.sum(m64**2, axis=0)
    out["scale"] = level_network.gain * quenched.std(axis=0) / math.sqrt(N) + weighted
    return out


def input_driven_sweep(network, *, n_connections=None, sparsities=None, g=None, scaling="1", amplitude=1.0,
                       n_steps=200, dt=0.1, mask_seed=1, random_seed=1, backend="auto", max_units=4096,
                       scheduler=None, progress=None):
    """kappa_r and the dimensionality of the response to a step input, as sparsity grows.

    From rest (x_0 = b), the input u(t) = ``amplitude`` along I (one input)
    starts at t = 0 and stays on for ``n_steps`` Euler steps. For each level
    the network is the dense ``network`` sparsified with C connections per
    row (``n_connections``) or sparsity s (``sparsities``), P_ij = w X_ij m_i
    n_j, or the dense-plus-random model with strength g (``g``). Measured:

    - kappa_r = (m^T m)^-1 m^T (x_T - I u - b), the activity along m at the
      end (paper eq. 34), against the mean-field fixed point
      (:func:`input_fixed_point`);
    - PR = tr(S)^2 / ||S||_F^2 of the covariance S over time of x(t) along
      the trajectory (:func:`participation_ratio`).

    In a dense low-rank network x(t) = m kappa(t) + I v(t) + b: PR <= 2 and
    close to 1 when kappa(t) and v(t) rise together. Sparsity scales the
    recurrent gain w N (1 - s) down, so kappa_r falls towards 0 (and PR
    towards 1: the activity becomes I v(t)) while the quenched heterogeneity
    of the recurrent input adds dimensions in between; a random part g chi
    adds dimensions without changing kappa_r much (Herbert & Ostojic Fig. 4).

    Parameters
    ----------
    network : LowRankRNN, str or os.PathLike
        The dense loadings, with one input (e.g. ``rank_one_gaussian(...,
        n_inputs=1, input_overlap=sigma_nI)``), or the path of such a network
        saved by :func:`connector_sim.data.save_network` (the tasks then carry
        the path and each worker reads the file once; the same sweep bit
        for bit).
    n_connections : array-like of int, optional
        C levels (scaling w as ``scaling``). Give exactly one of
        ``n_connections``, ``sparsities`` and ``g``.
    sparsities : array-like of float, optional
        s levels in [0, 1) (Bernoulli masks).
    g : array-like of float, optional
        Random strengths of the dense-plus-random model J = m n^T / N + g chi
        (``scaling`` does not apply).
    scaling : {"1", "1/N"}, default="1"
    amplitude : float, default=1
    n_steps : int, default=200
    dt : float, default=0.1
    mask_seed, random_seed : int
        Seeds of the masks and of chi (the same at every level).
    backend : str, default="auto"
    max_units : int, default=4096
        N above this records a fixed random subset of units for the PR.
    scheduler : None, str or dask.distributed.Client, default=None
        Where the levels run (one task each; the dense network, or its
        path, goes once to each worker): None / "serial", "processes", "dask",
        "dask://host:port" or a Client; see :mod:`connector_sim.parallel`.
        The same sweep on each, bit for bit.
    progress : None, bool or callable, default=None
        ``progress(done, total, description)`` as levels finish.

    Returns
    -------
    InputDrivenSweep
    """
    owner = "input_driven_sweep"
    network_file = None
    if isinstance(network, (str, os.PathLike)):  # read here to check it, and by path on each worker
        network_file = NetworkFile(network, owner=owner)
        network = network_file.load()[0]
    if not isinstance(network, LowRankRNN):
        raise TypeError(f"The 'network' parameter of {owner} must be a LowRankRNN (the dense loadings) or the path "
                        f"of one saved by connector_sim.data.save_network. Got {type(network).__name__} instead.")
    if network.n_inputs != 1:
        raise ValueError(f"{owner} needs a network with one input vector I (n_inputs = 1). Got n_inputs = "
                         f"{network.n_inputs}; sample it with rank_one_gaussian(..., n_inputs=1, input_overlap=...).")
    given = {name: value for name, value in
             (("n_connections", n_connections), ("sparsity", sparsities), ("g", g)) if value is not None}
    if len(given) != 1:
        raise ValueError(f"{owner} needs exactly one of n_connections, sparsities and g (the swept levels). "
                         f"Got {sorted(given) or 'none'}.")
    kind, levels = next(iter(given.items()))
    levels = np.atleast_1d(np.asarray(levels))
    if levels.ndim != 1 or not len(levels):
        raise ValueError(f"The {kind} levels of {owner} must be a non-empty 1-D list. Got shape {levels.shape}.")
    amplitude = _check_real(amplitude, "amplitude", owner)
    n_steps = check_int(n_steps, "n_steps", minimum=2, owner=owner)
    check_scheduler(scheduler, owner)
    N = network.n_neurons
    units = np.arange(N) if N <= max_units else np.sort(np.random.default_rng(0).choice(N, max_units, False))
    settings = dict(kind=kind, amplitude=amplitude, n_steps=n_steps, dt=dt, mask_seed=mask_seed,
                    random_seed=random_seed, scaling=scaling, backend=backend, units=units)
    try:
        per_level = run_tasks(_input_level_task, list(levels), scheduler=scheduler,
                              shared=(network if network_file is None else network_file, settings),
                              progress=progress, describe=lambda level: f"{kind} = {level}", owner=owner)
    finally:
        if network_file is not None:
            NetworkFile.forget(network_file.path)
    out = {key: [level[key] for level in per_level] for key in
           ("sparsity", "gain", "kappa_r", "kappa_latent", "kappa_theory", "pr", "pr_latent", "scale")}
    squeeze = (lambda a: a[:, 0]) if network.rank == 1 else (lambda a: a)
    return InputDrivenSweep(
        levels=levels, kind=kind, sparsity=np.array(out["sparsity"]), gain=np.array(out["gain"]),
        kappa_r=squeeze(np.array(out["kappa_r"])), kappa_latent=squeeze(np.array(out["kappa_latent"])),
        kappa_theory=squeeze(np.array(out["kappa_theory"])), participation_ratio=np.array(out["pr"]),
        participation_ratio_latent=np.array(out["pr_latent"]), kappa_scale=squeeze(np.array(out["scale"])),
        amplitude=amplitude)


def plot_input_driven(sweep, *, axes=None):
    """kappa_r (simulated and mean field) and the participation ratio against the swept level.

    Parameters
    ----------
    sweep : InputDrivenSweep
    axes : pair of matplotlib Axes, optional

    Returns
    -------
    ndarray of 2 matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if not isinstance(sweep, InputDrivenSweep):
        raise TypeError(f"sweep must be an InputDrivenSweep (from input_driven_sweep). Got {type(sweep).__name__}.")
    if axes is None:
        _, axes = plt.subplots(2, 1, figsize=(4, 5), sharex=True)
    axes = np.asarray(axes).ravel()
    x = sweep.sparsity if sweep.kind != "g" else sweep.levels
    axes[0].plot(x, sweep.participation_ratio, "o-", label="activity")
    axes[0].plot(x, sweep.participation_ratio_latent, "--", color="0.5", label="latents only")
    axes[0].set_ylabel("participation ratio")
    axes[0].legend(fontsize="small")
    kappa = sweep.kappa_r if sweep.kappa_r.ndim == 1 else sweep.kappa_r[:, 0]
    theory = sweep.kappa_theory if sweep.kappa_theory.ndim == 1 else sweep.kappa_theory[:, 0]
    axes[1].plot(x, kappa, "o", label="simulation (projection on m)")
    axes[1].plot(x, theory, "-", label="mean field")
    axes[1].set_ylabel("kappa_r")
    axes[1].set_xlabel("sparsity s" if sweep.kind != "g" else "random strength g")
    axes[1].legend(fontsize="small")
    return axes


# --- evidence accumulation -----------------------------------------------------------------------


@dataclass
class EvidenceTask:
    """A network for the evidence-accumulation task and its readout.

    Attributes
    ----------
    network : SparseLowRankRNN or LowRankRNN
        Rank one, one input I.
    readout : ndarray of shape (N,)
        w; the output is z(t) = w^T phi(x(t)) / N.
    variance, covariance, input_overlap, readout_overlap : float
        sigma^2, sigma_mn, sigma_nI, sigma_mw.
    """

    network: object
    readout: np.ndarray
    variance: float
    covariance: float
    input_overlap: float
    readout_overlap: float


def evidence_accumulation_network(n_neurons, *, n_connections=None, sparsity=None, variance=0.05, covariance=0.02,
                                  input_overlap=0.1, readout_overlap=0.1, scaling="1", random_state=0,
                                  mask_seed=1, exact_moments=True, dtype=np.float64):
    """A sparse rank-one network built from the geometric recipe of the task.

    With y, I, w, a, c independent standard Gaussian vectors (Herbert &
    Ostojic Methods eq. 17-18, extended by an input and a readout; M&O 2018)::

        m = sqrt(sigma_mn) y + sigma_mw w + sqrt(sigma^2 - sigma_mn - sigma_mw^2) a
        n = sqrt(sigma_mn) y + sigma_nI I + sqrt(sigma^2 - sigma_mn - sigma_nI^2) c

    so Var m = Var n = sigma^2, and m and n overlap (sigma_mn) only along the
    shared direction y, orthogonal to the input and the readout; I overlaps n
    (sigma_nI, the input is picked up by the recurrence) but not m; the
    readout w overlaps m (sigma_mw) but not n. P_ij = w_s X_ij m_i n_j with
    C connections per row (or sparsity s); with scaling w_s = 1 the outlier is
    C sigma_mn, which must exceed 1 and the bulk sqrt(C (sigma^4 + 2
    sigma_mn^2)) for the bistable structured regime the task relies on. (The
    dense network, without C or s, is J = m n^T / N with outlier sigma_mn:
    give it sigma_mn > 1.)

    Parameters
    ----------
    n_neurons : int
    n_connections : int, optional
        C; give this or ``sparsity``; neither gives the dense network (w = 1 / N).
    sparsity : float, optional
    variance, covariance : float
        sigma^2, sigma_mn; need sigma_mn + max(sigma_nI, sigma_mw)^2 <= sigma^2.
    input_overlap, readout_overlap : float
        sigma_nI, sigma_mw.
    scaling : {"1", "1/N"}, default="1"
    random_state : None, int or Generator, default=0
    mask_seed : int, default=1
    exact_moments : bool, default=True
        Whiten the five vectors (zero means, sample covariance exactly I), so
        that the sample overlaps are the given ones.
    dtype : float32 or float64

    Returns
    -------
    EvidenceTask
    """
    from .sparse import sparsify

    owner = "evidence_accumulation_network"
    N = check_int(n_neurons, "n_neurons", minimum=6, owner=owner)
    variance = check_positive_scalar(variance, "variance", owner=owner)
    covariance = check_nonnegative_scalar(covariance, "covariance", owner=owner)
    input_overlap = _check_real(input_overlap, "input_overlap", owner)
    readout_overlap = _check_real(readout_overlap, "readout_overlap", owner)
    spare_m = variance - covariance - readout_overlap**2
    spare_n = variance - covariance - input_overlap**2
    if spare_m < 0 or spare_n < 0:
        raise ValueError(
            f"{owner} needs sigma_mn + sigma_mw^2 <= sigma^2 and sigma_mn + sigma_nI^2 <= sigma^2 (the variance "
            f"of m and n is shared between the directions). Got sigma^2 = {variance}, sigma_mn = {covariance}, "
            f"sigma_mw = {readout_overlap}, sigma_nI = {input_overlap}. Raise the variance or lower the overlaps.")
    rng = check_random_state(random_state)
    if exact_moments:
        y, I, w, a, c = _whitened_gaussian(N, 5, rng).T
    else:
        y, I, w, a, c = rng.standard_normal((5, N))
    m = math.sqrt(covariance) * y + readout_overlap * w + math.sqrt(spare_m) * a
    n = math.sqrt(covariance) * y + input_overlap * I + math.sqrt(spare_n) * c
    dense = LowRankRNN(m[:, None], n[:, None], I[:, None], dtype=dtype)
    if n_connections is None and sparsity is None:
        network = dense
    else:
        network = sparsify(dense, n_connections=n_connections, sparsity=sparsity, seed=mask_seed, scaling=scaling)
    return EvidenceTask(network=network, readout=w, variance=variance, covariance=covariance,
                        input_overlap=input_overlap, readout_overlap=readout_overlap)


@dataclass
class PsychometricCurve:
    """Fraction of positive choices against stimulus strength.

    Attributes
    ----------
    strengths : ndarray of shape (S,)
        Mean stimulus c.
    fraction_positive : ndarray of shape (S,)
        p_hat(c): fraction of trials with z > 0 at the end of the stimulus.
    standard_error : ndarray of shape (S,)
        sqrt(p_hat (1 - p_hat) / n_trials), with p_hat clipped to [1/(2n), 1 - 1/(2n)].
    readout : ndarray of shape (S, n_trials)
        z at the end of each trial.
    n_trials : int
    threshold : float
        c_0; the choice is "c > c_0".
    n_connections, sparsity : int or None, float
        Of the network (None / 0 for a dense one).
    """

    strengths: np.ndarray
    fraction_positive: np.ndarray
    standard_error: np.ndarray
    readout: np.ndarray
    n_trials: int
    threshold: float
    n_connections: object
    sparsity: float

    def crossing(self):
        """The strength where p_hat crosses 0.5, by linear interpolation (nan if it does not)."""
        p, c = self.fraction_positive, self.strengths
        for k in range(len(p) - 1):
            if (p[k] - 0.5) * (p[k + 1] - 0.5) <= 0 and p[k] != p[k + 1]:
                return float(c[k] + (0.5 - p[k]) * (c[k + 1] - c[k]) / (p[k + 1] - p[k]))
        return float("nan")


def psychometric_curve(task, strengths, *, threshold=0.0, input_noise=0.5, n_trials=100, n_steps=100, dt=0.1,
                       noise_std=0.0, seed=0, backend="auto"):
    """Fraction of "c > c_0" choices against the stimulus strength c.

    Trial k at strength c starts at rest (x_0 = 0) and receives, along I, for
    ``n_steps`` Euler steps::

        u_t = (c - c_0) + sigma_u xi_t,   xi_t ~ N(0, 1) i.i.d. per step and trial

    (common random numbers: trial k receives the same xi at every strength, so
    differences between strengths are due to c alone)
    (the threshold c_0 enters as a constant offset -c_0 along I, i.e. a bias
    b = -c_0 I). The choice is the sign of the readout z = w^T phi(x_T) / N at
    the end. In the structured regime the origin is unstable along m, and the
    latent kappa along m amplifies the integrated input,
    kappa' ~ (lambda_1 - 1) kappa + C sigma_nI v, until it settles in one of
    the two states +-kappa*; z has the sign of kappa (w overlaps m).

    Theory of the crossing: for an odd phi (tanh) and b = 0 the network maps
    (x, u) -> (-x, -u) onto itself and the noise is symmetric, so
    P(z > 0 | c) = 1 - P(z > 0 | 2 c_0 - c): the expected curve passes
    through 0.5 exactly at c = c_0, at every sparsity. Sparsity changes the
    slope (through the gain C sigma_mn, sigma_nI C and the bulk), not the
    crossing.

    Parameters
    ----------
    task : EvidenceTask
    strengths : array-like of float, shape (S,)
    threshold : float, default=0
        c_0.
    input_noise : float, default=0.5
        sigma_u.
    n_trials : int, default=100
        Trials per strength (all strengths and trials run as one batch).
    n_steps : int, default=100
    dt : float, default=0.1
    noise_std : float, default=0
        Private noise of the units (see :func:`connector_sim.simulate`).
    seed : int, default=0
        Seed of the stimulus noise (and the private noise).
    backend : str, default="auto"

    Returns
    -------
    PsychometricCurve
    """
    owner = "psychometric_curve"
    if not isinstance(task, EvidenceTask):
        raise TypeError(f"The 'task' parameter of {owner} must be an EvidenceTask (from "
                        f"evidence_accumulation_network). Got {type(task).__name__} instead.")
    strengths = check_array(strengths, "strengths", ndim=1, dtype=np.float64)
    if not len(strengths):
        raise ValueError(f"{owner} needs at least one stimulus strength. Got an empty array.")
    threshold = _check_real(threshold, "threshold", owner)
    input_noise = check_nonnegative_scalar(input_noise, "input_noise", owner=owner)
    n_trials = check_int(n_trials, "n_trials", minimum=1, owner=owner)
    n_steps = check_int(n_steps, "n_steps", minimum=1, owner=owner)
    network = task.network
    S, N = len(strengths), network.n_neurons
    rng = np.random.default_rng(seed)
    # Common random numbers: trial k sees the same noise at every strength.
    u = (strengths - threshold)[:, None, None] + input_noise * rng.standard_normal((n_trials, n_steps))[None]
    result = _simulate(network, n_steps, inputs=u.reshape(S * n_trials, n_steps, 1), x0=np.zeros(N), dt=dt,
                       noise_std=noise_std, seed=seed, backend=backend)
    final = result.final_state.astype(np.float64)
    z = (apply_activation(network.activation, final) @ task.readout / N).reshape(S, n_trials)
    p = np.mean(z > 0, axis=1)
    clipped = np.clip(p, 1 / (2 * n_trials), 1 - 1 / (2 * n_trials))
    sparse = isinstance(network, SparseLowRankRNN)
    return PsychometricCurve(
        strengths=strengths, fraction_positive=p, standard_error=np.sqrt(clipped * (1 - clipped) / n_trials),
        readout=z, n_trials=n_trials, threshold=threshold,
        n_connections=network.mask.n_connections if sparse else None,
        sparsity=network.sparsity if sparse else 0.0)


def _psychometric_task(n_connections, shared):
    """One sparsity level of psychometric_curves: the task network built on the worker, then its curve."""
    n_neurons, strengths, task_options, options = shared
    task = evidence_accumulation_network(n_neurons, n_connections=int(n_connections), **task_options)
    return psychometric_curve(task, strengths, **options)


def psychometric_curves(n_neurons, n_connections, strengths, *, task_options=None, scheduler=None, progress=None,
                        **options):
    """Psychometric curves at several sparsity levels (same loadings, C connections per row).

    Parameters
    ----------
    n_neurons : int
    n_connections : array-like of int
        C levels.
    strengths : array-like of float
    task_options : dict, optional
        Passed to :func:`evidence_accumulation_network` (variance, covariance,
        input_overlap, readout_overlap, scaling, random_state, mask_seed, ...).
    scheduler : None, str or dask.distributed.Client, default=None
        Where the levels run (one task each: the worker builds the network
        from ``n_neurons``, C and ``task_options``): None / "serial",
        "processes", "dask", "dask://host:port" or a Client; see
        :mod:`connector_sim.parallel`. The same curves on each, bit for bit
        (off the serial scheduler ``task_options["random_state"]`` must be
        an int, if given).
    progress : None, bool or callable, default=None
        ``progress(done, total, description)`` as levels finish.
    **options
        Passed to :func:`psychometric_curve`.

    Returns
    -------
    list of PsychometricCurve
    """
    task_options = dict(task_options or {})
    levels = np.atleast_1d(np.asarray(n_connections))
    if levels.ndim != 1 or not len(levels) or not np.issubdtype(levels.dtype, np.integer):
        raise ValueError(f"n_connections must be a non-empty 1-D list of ints (C levels). Got {n_connections!r}.")
    _check_order_free_seed(task_options.get("random_state", 0), scheduler, "psychometric_curves",
                           "task_options['random_state']")
    return run_tasks(_psychometric_task, [int(C) for C in levels], scheduler=scheduler,
                     shared=(n_neurons, strengths, task_options, options), progress=progress,
                     describe=lambda C: f"C = {C}", owner="psychometric_curves")


def plot_psychometric(curves, *, ax=None):
    """Psychometric curves (fraction positive +- 1 standard error) with the threshold and 0.5 marked.

    Parameters
    ----------
    curves : PsychometricCurve or list of them
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    curves = [curves] if isinstance(curves, PsychometricCurve) else list(curves)
    if not curves or not all(isinstance(curve, PsychometricCurve) for curve in curves):
        raise TypeError("curves must be a PsychometricCurve or a non-empty list of them (from psychometric_curve).")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    for curve in curves:
        label = f"C = {curve.n_connections}" if curve.n_connections is not None else "dense"
        ax.errorbar(curve.strengths, curve.fraction_positive, yerr=curve.standard_error, marker="o", capsize=2,
                    label=f"{label} (s = {curve.sparsity:.2f})")
    ax.axhline(0.5, color="0.6", linestyle=":", linewidth=0.8)
    ax.axvline(curves[0].threshold, color="0.6", linestyle="--", linewidth=0.8, label="threshold c_0")
    ax.set_xlabel("stimulus strength c")
    ax.set_ylabel("fraction positive")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="small")
    return ax


__all__ = [
    "SIMULATED_REGIMES",
    "EvidenceTask",
    "InputDrivenSweep",
    "PsychometricCurve",
    "RegimeDiagram",
    "RegimeResult",
    "classify_activity",
    "evidence_accumulation_network",
    "exact_rank_one",
    "input_driven_sweep",
    "input_fixed_point",
    "participation_ratio",
    "plot_input_driven",
    "plot_psychometric",
    "plot_regime_diagram",
    "predicted_boundary_distance",
    "psychometric_curve",
    "psychometric_curves",
    "simulate_low_rank_plus_random",
    "simulated_regime",
    "simulated_regime_diagram",
]
