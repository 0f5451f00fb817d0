"""Memories in multi-well networks: input-driven switching and autonomous cycling.

- Associative memory (:func:`associative_memory`): a network trained on a
  k-well SDE sits in one well; a pulse of force along the direction from
  that well to a target well, of a given strength and duration, switches it
  or not. The switching probability against the pulse strength is a
  psychometric curve (Wilson 95% intervals from independent trials).
- Dwell times (:func:`dwell_times`): time spent in a well between
  transitions, from core-to-core labels (a state is assigned to a well only
  inside a core disc around it, and keeps its last label in between), for
  network and SDE trajectories alike.
- Episodic memory (:func:`episodic_memory`, :func:`sequence_statistics`):
  with a rotational, non-equilibrium part of strength omega the multi-well
  system visits the wells in a fixed order; the statistics are the fraction
  of transitions to the next well in the rotation sense (order), and the
  period of a full cycle (successive 2 pi windings of the angle) with its
  standard deviation and coefficient of variation.

Every simulation runs all trials in one batched call of
:func:`connector_sim.simulate` (latent path, input noise).
"""

import math

import numpy as np

from .._validation import check_int, check_positive_scalar

Z95 = 1.959963984540054


def wilson_interval(successes, trials, z=Z95):
    """Wilson score interval (low, high) of a binomial proportion (arrays broadcast; NaN for 0 trials)."""
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    p = successes / np.maximum(trials, 1)
    denominator = 1 + z * z / np.maximum(trials, 1)
    centre = (p + z * z / (2 * np.maximum(trials, 1))) / denominator
    half = z * np.sqrt(p * (1 - p) / np.maximum(trials, 1) + z * z / (4 * np.maximum(trials, 1) ** 2)) / denominator
    empty = trials == 0
    low = np.where(empty, np.nan, np.clip(centre - half, 0.0, 1.0))
    high = np.where(empty, np.nan, np.clip(centre + half, 0.0, 1.0))
    return low, high


def _check_wells(wells, d):
    wells = np.asarray(wells, dtype=np.float64)
    if wells.ndim != 2 or wells.shape[1] != d or len(wells) < 2 or not np.all(np.isfinite(wells)):
        raise ValueError(f"wells must be a finite array of shape (k >= 2, {d}). Got shape {wells.shape}.")
    return wells


def default_core_radius(wells):
    """0.3 times the smallest distance between two wells."""
    distance = np.linalg.norm(wells[:, None] - wells[None], axis=-1)
    return 0.3 * float(distance[np.triu_indices(len(wells), 1)].min())


def well_labels(z, wells, core_radius=None):
    """Core-to-core well labels of trajectories.

    Parameters
    ----------
    z : ndarray of shape (n_trials, n_times, d)
    wells : ndarray of shape (k, d)
    core_radius : float, optional
        Default :func:`default_core_radius`.

    Returns
    -------
    labels : ndarray of int of shape (n_trials, n_times)
        The well whose core the state last visited (-1 before the first visit).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[[-1.0], [-0.9], [0.0], [0.95], [1.0], [0.1], [-1.0]]])  # one trial, 1-D
    >>> wells = np.array([[-1.0], [1.0]])
    >>> well_labels(z, wells, core_radius=0.2)  # the last core visited
    array([[0, 0, 0, 1, 1, 1, 0]])
    """
    z = np.asarray(z, dtype=np.float64)
    wells = _check_wells(wells, z.shape[-1])
    radius = default_core_radius(wells) if core_radius is None else check_positive_scalar(core_radius, "core_radius")
    distance = np.linalg.norm(z[..., None, :] - wells, axis=-1)
    raw = np.where(distance.min(-1) < radius, distance.argmin(-1), -1)
    index = np.where(raw >= 0, np.arange(raw.shape[1]), 0)
    np.maximum.accumulate(index, axis=1, out=index)
    filled = np.take_along_axis(raw, index, axis=1)
    return filled


def _segments(labels_row):
    """(start indices, labels) of the runs of equal labels, leading -1 dropped."""
    valid = np.flatnonzero(labels_row >= 0)
    if len(valid) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    row = labels_row[valid[0]:]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(row) != 0) + 1]) + valid[0]
    return starts, labels_row[starts]


def dwell_times(z, wells, dt, core_radius=None):
    """Dwell times in each well, in the time unit of ``dt``.

    A dwell is a complete run of one core-to-core label (the first run, which
    began before the recording, and the last, cut by its end, are left out).

    Parameters
    ----------
    z : ndarray of shape (n_trials, n_times, d)
    wells : ndarray of shape (k, d)
    dt : float
        Time between recorded states.
    core_radius : float, optional

    Returns
    -------
    dict
        ``"per_well"``: list of k arrays of dwell times; ``"all"``: all of
        them; ``"mean"``, ``"ci"`` (normal 95% interval of the mean),
        ``"n"``; ``"transitions"``: (k, k) counts of label changes.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[[-1.0], [-0.9], [0.0], [0.95], [1.0], [0.1], [-1.0]]])  # one trial, 1-D
    >>> wells = np.array([[-1.0], [1.0]])
    >>> result = dwell_times(z, wells, dt=0.5, core_radius=0.2)
    >>> result["all"], result["transitions"]  # one complete dwell, in well 1
    (array([1.5]), array([[0, 1],
           [1, 0]]))
    """
    dt = check_positive_scalar(dt, "dt")
    labels = well_labels(z, wells, core_radius)
    k = len(wells)
    per_well = [[] for _ in range(k)]
    transitions = np.zeros((k, k), np.int64)
    for row in labels:
        starts, values = _segments(row)
        for a, b in zip(values[:-1], values[1:]):
            transitions[a, b] += 1
        for j in range(1, len(starts) - 1):
            per_well[values[j]].append((starts[j + 1] - starts[j]) * dt)
    per_well = [np.asarray(times) for times in per_well]
    everything = np.concatenate(per_well)
    n = len(everything)
    mean = float(everything.mean()) if n else math.nan
    half = Z95 * float(everything.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return {"per_well": per_well, "all": everything, "mean": mean, "ci": (mean - half, mean + half), "n": n,
            "transitions": transitions}


def sequence_statistics(z, wells, dt, *, center=None, core_radius=None):
    """Order and period of the cycling through wells on a circle (2-D states).

    - order: among transitions between neighbouring wells (wells indexed
      counterclockwise), the fraction that go to the next well (j -> j + 1
      mod k), with its Wilson 95% interval;
    - period: the angle theta(t) around ``center`` is unwrapped per trial;
      the n-th full winding (in either sense) completes when ``|theta - theta_0|``
      first reaches 2 pi n; periods are the intervals between
      successive windings;
    - rotation_rate: mean d theta / dt (radians per time unit).

    Parameters
    ----------
    z : ndarray of shape (n_trials, n_times, 2)
    wells : ndarray of shape (k, 2), counterclockwise
    dt : float
    center : array-like of shape (2,), optional
        Default: the mean of the wells.
    core_radius : float, optional

    Returns
    -------
    dict with "order", "order_ci", "n_transitions", "period_mean", "period_std",
    "period_cv", "period_ci", "n_periods", "rotation_rate"

    Examples
    --------
    >>> from connector_sim.ddm import euler_maruyama, multi_well
    >>> sde = multi_well(n_wells=4, rotation=1.0, noise=0.3)  # wells visited counterclockwise
    >>> wells = sde.exact["well_centers"]
    >>> z = euler_maruyama(sde, wells[0], n_steps=5000, dt=0.02, n_trials=2, seed=0)
    >>> stats = sequence_statistics(z, wells, dt=0.02)
    >>> stats["order"], stats["n_transitions"] > 10
    (1.0, True)
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3 or z.shape[2] != 2:
        raise ValueError(f"sequence_statistics needs 2-D trajectories of shape (n_trials, n_times, 2). Got {z.shape}.")
    wells = _check_wells(wells, 2)
    dt = check_positive_scalar(dt, "dt")
    k = len(wells)
    labels = well_labels(z, wells, core_radius)
    forward = backward = 0
    for row in labels:
        _, values = _segments(row)
        step = (values[1:] - values[:-1]) % k
        forward += int((step == 1).sum())
        backward += int((step == k - 1).sum()) if k > 2 else 0
    n_transitions = forward + backward
    order = forward / n_transitions if n_transitions else math.nan
    low, high = wilson_interval(forward, n_transitions)
    center = wells.mean(axis=0) if center is None else np.asarray(center, dtype=np.float64)
    theta = np.unwrap(np.arctan2(z[..., 1] - center[1], z[..., 0] - center[0]), axis=1)
    windings = np.floor(np.abs(theta - theta[:, :1]) / (2 * np.pi)).astype(np.int64)
    periods = []
    for row in windings:
        reached = np.maximum.accumulate(row)
        completed = np.flatnonzero(np.diff(reached) > 0) + 1
        periods.extend(np.diff(completed) * dt)
    periods = np.asarray(periods)
    n_periods = len(periods)
    period_mean = float(periods.mean()) if n_periods else math.nan
    period_std = float(periods.std(ddof=1)) if n_periods > 1 else math.nan
    half = Z95 * period_std / math.sqrt(n_periods) if n_periods > 1 else math.nan
    duration = (z.shape[1] - 1) * dt
    return {
        "order": order, "order_ci": (float(low), float(high)), "n_transitions": n_transitions,
        "period_mean": period_mean, "period_std": period_std,
        "period_cv": period_std / period_mean if n_periods > 1 else math.nan,
        "period_ci": (period_mean - half, period_mean + half), "n_periods": n_periods,
        "rotation_rate": float((theta[:, -1] - theta[:, 0]).mean() / duration),
    }


def _wells_of(estimator, wells):
    if wells is not None:
        return _check_wells(wells, estimator.n_features_in_)
    exact = getattr(getattr(estimator, "_sde", None), "exact", {})
    if "well_centers" not in exact:
        raise ValueError("Give wells (k, d): the fitted SDE does not list its 'well_centers'.")
    return np.asarray(exact["well_centers"], dtype=np.float64)


def associative_memory(estimator, strengths, *, source=0, target=1, wells=None, pulse_duration=1.0,
                       settle=2.0, relax=5.0, n_trials=100, dt=None, core_radius=None, seed=0, network=None,
                       backend="auto", n_threads=1):
    """Switching probability of a fitted multi-well network against the strength of an input pulse.

    Every trial starts in well ``source``, runs ``settle`` SDE time units
    with the network's noise, receives for ``pulse_duration`` a constant
    force of magnitude ``strength`` (SDE units per SDE time) pointing from
    ``source`` to ``target`` (the input u = tau force / (T L), see
    :meth:`LatentEmbedding.force_to_input`), and relaxes for ``relax``. The
    end state's core-to-core label says where it went. All strengths and
    trials run in one batched simulation.

    Parameters
    ----------
    estimator : DriftDiffusionMatching
        Fitted on a multi-well SDE.
    strengths : array-like of float (>= 0)
    source, target : int
    wells : ndarray of shape (k, d), optional
        Default the SDE's ``exact["well_centers"]``.
    pulse_duration, settle, relax : float
        SDE time units.
    n_trials : int, default=100
        Trials per strength.
    dt : float, optional
        Network time step; default tau / 10.
    core_radius : float, optional
    seed : int, default=0
    network : LowRankRNN, optional
        Default ``estimator.network_`` (e.g. a sampled N = 1e5 network).
    backend, n_threads
        As in :func:`connector_sim.simulate`.

    Returns
    -------
    dict of arrays (one entry per strength)
        ``strength``, ``p_target`` (end in the target well), its ``ci_low``,
        ``ci_high``, ``p_leave`` (end outside the source well), ``n_trials``;
        and ``threshold``: the strength at which p_target crosses 1/2 (linear
        interpolation; NaN if it does not).

    Raises
    ------
    ValueError
        If ``estimator`` is not fitted, ``strengths`` is empty, not finite or negative, ``source`` equals
        ``target``, or an index or duration is out of range.
    TypeError
        If ``source``, ``target`` or ``n_trials`` is not an int.
    """
    from ..simulate import simulate

    estimator._check_fitted()
    strengths = np.asarray(strengths, dtype=np.float64).ravel()
    if len(strengths) == 0 or not np.all(np.isfinite(strengths)) or np.any(strengths < 0):
        raise ValueError(f"strengths must be a non-empty array of finite values >= 0. Got {strengths}.")
    wells = _wells_of(estimator, wells)
    k = len(wells)
    source = check_int(source, "source", minimum=0, maximum=k - 1, owner="associative_memory")
    target = check_int(target, "target", minimum=0, maximum=k - 1, owner="associative_memory")
    if source == target:
        raise ValueError(f"source and target must be different wells. Got {source} for both.")
    n_trials = check_int(n_trials, "n_trials", minimum=1, owner="associative_memory")
    for value, name in ((pulse_duration, "pulse_duration"), (settle, "settle"), (relax, "relax")):
        check_positive_scalar(value, name, owner="associative_memory")
    embedding = estimator.embedding_
    dt = embedding.tau / 10 if dt is None else check_positive_scalar(dt, "dt", owner="associative_memory")
    steps = lambda duration: max(1, int(round(duration * embedding.time_scale / dt)))  # noqa: E731
    n_settle, n_pulse, n_relax = steps(settle), steps(pulse_duration), steps(relax)
    T = n_settle + n_pulse + n_relax
    direction = (wells[target] - wells[source]) / np.linalg.norm(wells[target] - wells[source])
    per_strength = embedding.force_to_input(strengths[:, None] * direction)  # (S, d)
    u = np.zeros((len(strengths) * n_trials, T, embedding.dim))
    u[:, n_settle: n_settle + n_pulse] = np.repeat(per_strength, n_trials, axis=0)[:, None, :]
    network = estimator.network_ if network is None else network
    kappa0 = embedding.to_latent(wells[source])
    result = simulate(network, inputs=u, dt=dt, kappa0=kappa0, seed=seed, input_noise=estimator.noise_,
                      backend=backend, n_threads=n_threads)
    z = estimator.latent_trajectories(result)
    end = well_labels(z, wells, core_radius)[:, -1].reshape(len(strengths), n_trials)
    hits = (end == target).sum(axis=1)
    left = (end != source).sum(axis=1)
    low, high = wilson_interval(hits, n_trials)
    p = hits / n_trials
    threshold = math.nan
    above = np.flatnonzero(p >= 0.5)
    if len(above) and above[0] > 0:
        i = above[0]
        threshold = float(np.interp(0.5, [p[i - 1], p[i]], [strengths[i - 1], strengths[i]]))
    elif len(above) and above[0] == 0:
        threshold = float(strengths[0])
    return {"strength": strengths, "p_target": p, "ci_low": low, "ci_high": high, "p_leave": left / n_trials,
            "n_trials": np.full(len(strengths), n_trials), "threshold": threshold, "wall_time": result.wall_time}


def episodic_memory(rotations, *, n_wells=4, noise=0.3, depth=0.25, duration=200.0, n_trials=20, dt_sde=0.02,
                    matching=None, reference=True, seed=0, backend="auto", n_threads=1):
    """Sequence statistics of networks trained on cycling multi-well systems, against the rotation strength.

    For each omega in ``rotations`` a :class:`DriftDiffusionMatching` is
    fitted to ``multi_well(n_wells, rotation=omega, noise=noise, depth=depth)``,
    the network runs ``n_trials`` trials of ``duration`` SDE time units from
    well 0 (one batched call, SDE step ``dt_sde``: network step
    ``dt_sde * time_scale``), and :func:`sequence_statistics` measures order
    and period; with ``reference=True`` the same statistics of the SDE
    itself (Euler-Maruyama, same step) come alongside.

    Parameters
    ----------
    rotations : array-like of float
    n_wells, noise, depth : as in :func:`connector_sim.ddm.multi_well`
    duration : float
    n_trials : int
    dt_sde : float
    matching : dict, optional
        Keyword arguments of :class:`DriftDiffusionMatching`.
    reference : bool, default=True
    seed : int
    backend, n_threads

    Returns
    -------
    list of dict
        One row per (omega, source) with source "network" or "sde": the
        :func:`sequence_statistics` entries plus ``rotation``, ``source``,
        ``drift_error`` (network rows), ``critical_rotation`` (above it the
        deterministic system has a limit cycle).

    Raises
    ------
    ValueError
        If ``rotations`` is empty or not finite, or ``n_trials``, ``duration``
        or ``dt_sde`` is out of range.
    TypeError
        If ``n_trials`` is not an int.
    """
    from .matching import DriftDiffusionMatching
    from .sde import euler_maruyama
    from .systems import multi_well

    rotations = np.asarray(rotations, dtype=np.float64).ravel()
    if len(rotations) == 0 or not np.all(np.isfinite(rotations)):
        raise ValueError(f"rotations must be a non-empty array of finite values. Got {rotations}.")
    n_trials = check_int(n_trials, "n_trials", minimum=1, owner="episodic_memory")
    check_positive_scalar(duration, "duration", owner="episodic_memory")
    check_positive_scalar(dt_sde, "dt_sde", owner="episodic_memory")
    settings = {"random_state": seed, **(matching or {})}
    rows = []
    for omega in rotations:
        sde = multi_well(n_wells, rotation=float(omega), noise=noise, depth=depth)
        wells = sde.exact["well_centers"]
        estimator = DriftDiffusionMatching(**settings).fit(sde)
        dt = dt_sde * estimator.time_scale_
        result = estimator.simulate(duration, dt=dt, z0=wells[0], n_trials=n_trials, seed=seed, backend=backend,
                                    n_threads=n_threads)
        z = estimator.latent_trajectories(result)
        stats = sequence_statistics(z, wells, dt_sde)
        rows.append({"rotation": float(omega), "source": "network", "drift_error": estimator.drift_error_,
                     "critical_rotation": sde.exact["critical_rotation"], **stats})
        if reference:
            em = euler_maruyama(sde, wells[0], z.shape[1] - 1, dt_sde, n_trials=n_trials, seed=seed + 1)
            rows.append({"rotation": float(omega), "source": "sde", "drift_error": 0.0,
                         "critical_rotation": sde.exact["critical_rotation"],
                         **sequence_statistics(em, wells, dt_sde)})
    return rows
