"""Compare the dynamics of a realisation (a trained network) with the SDE it embeds.

:func:`compare_dynamics` computes, for two sets of trajectories sampled at the
same time step (the SDE's, and the network's latent trajectories mapped into
the SDE's coordinates and time), the statistics users compare: stationary
moments and densities, autocorrelations, dwell times and switching rates
between wells, the period and amplitude of oscillations, and the largest
Lyapunov exponent of the two drifts. Every number comes with a confidence
interval from independent trials (a bootstrap over trials), and every distance
comes with its *noise floor*: the same distance between two independent halves
of the reference trials, which is what "no difference" looks like at this
sample size.

The statistics are functions of trajectories only (except the Lyapunov
exponent, which needs the drifts), so the table works for any pair: SDE
against network, network at N = 1e3 against N = 1e5, two SDEs.
"""

import numbers

import numpy as np

from .._validation import check_int, check_positive_scalar
from .memories import default_core_radius, well_labels
from .sde import largest_lyapunov_exponent

__all__ = [
    "DynamicsComparison",
    "autocorrelation",
    "compare_dynamics",
    "oscillation_statistics",
    "well_transitions",
]

_OWNER = "compare_dynamics"
_STATISTICS = ("moments", "correlation", "histogram", "sinkhorn", "autocorrelation",
               "wells", "oscillation", "lyapunov")


class DynamicsComparison:
    """The tidy result of :func:`compare_dynamics`: one row per statistic and component.

    Each row is a dict of scalars:

    ======================  ============================================================
    ``statistic``           what is measured (e.g. ``"mean"``, ``"dwell time"``)
    ``component``           coordinate, pair or transition it is about (``"z0"``,
                            ``"z0,z1"``, ``"well 0 -> well 1"``, ``"all"``)
    ``kind``                ``"value"``: the statistic of each system; ``"distance"``:
                            ``reference`` is the noise floor (the distance between two
                            independent halves of the reference trials) and
                            ``candidate`` the distance between reference and candidate
    ``reference``           value for the reference (e.g. the SDE)
    ``reference_low/high``  its confidence interval
    ``candidate``           value for the candidate (e.g. the network)
    ``candidate_low/high``  its confidence interval
    ``agree``               the two intervals overlap (for a distance: the candidate's
                            lower bound is at most the floor's upper bound)
    ======================  ============================================================

    Attributes
    ----------
    rows : list of dict
    confidence : float
        Level of the intervals.
    n_trials : tuple of int
        Trials of the reference and of the candidate.
    """

    def __init__(self, rows, confidence, n_trials):
        self.rows = list(rows)
        self.confidence = confidence
        self.n_trials = n_trials

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __repr__(self):
        n_agree = sum(bool(row["agree"]) for row in self.rows)
        return f"DynamicsComparison({len(self.rows)} rows, {n_agree} agree)"

    @property
    def columns(self):
        """Column names, in row order."""
        return list(self.rows[0]) if self.rows else []

    def select(self, statistic):
        """The rows of one statistic."""
        return [row for row in self.rows if row["statistic"] == statistic]

    def to_markdown(self, *, reference_name="SDE", candidate_name="network", digits=4):
        """The table as Markdown text, one line per row."""
        level = f"{round(100 * self.confidence)}%"
        lines = [
            f"| statistic | component | {reference_name} | {candidate_name} | agree ({level} CI) |",
            "|---|---|---|---|---|",
        ]
        for row in self.rows:
            label = row["statistic"] + (" (floor / distance)" if row["kind"] == "distance" else "")
            ref = _interval_text(row["reference"], row["reference_low"], row["reference_high"], digits)
            cand = _interval_text(row["candidate"], row["candidate_low"], row["candidate_high"], digits)
            lines.append(f"| {label} | {row['component']} | {ref} | {cand} | {'yes' if row['agree'] else 'no'} |")
        return "\n".join(lines) + "\n"


def _interval_text(value, low, high, digits):
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


# --------------------------------------------------------------------------- inputs


def _as_trajectories(value, name, dim=None):
    array = np.asarray(value)
    if array.dtype.kind not in "fiu" or array.ndim not in (2, 3):
        raise ValueError(
            f"The {name!r} parameter of {_OWNER} must be trajectories: a real array of shape "
            f"(n_trials, n_times, d) (or (n_times, d) for one trial). Got "
            f"{'dtype ' + str(array.dtype) if array.dtype.kind not in 'fiu' else 'shape ' + str(array.shape)} instead."
        )
    if array.ndim == 2:
        array = array[None]
    array = np.ascontiguousarray(array, dtype=np.float64)
    if array.shape[1] < 4:
        raise ValueError(
            f"The {name!r} parameter of {_OWNER} needs at least 4 time points per trial. "
            f"Got {array.shape[1]} instead."
        )
    if dim is not None and array.shape[2] != dim:
        raise ValueError(
            f"The {name!r} trajectories of {_OWNER} must have {dim} components like the reference. "
            f"Got {array.shape[2]} instead: map the network's latents into the SDE's coordinates first."
        )
    if not np.isfinite(array).all():
        raise ValueError(
            f"The {name!r} trajectories of {_OWNER} contain NaN or inf values: the simulation "
            "diverged (use a smaller dt) or the array is padded; pass finite trials only."
        )
    return array


def _check_confidence(confidence):
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ValueError(
            f"The 'confidence' parameter of {_OWNER} must be a float in (0, 1). Got {confidence!r} instead."
        )
    return float(confidence)


def _check_statistics(statistics):
    if statistics == "auto":
        return None
    if isinstance(statistics, str):
        statistics = [statistics]
    chosen = list(statistics)
    unknown = [s for s in chosen if s not in _STATISTICS]
    if unknown:
        raise ValueError(
            f"The 'statistics' parameter of {_OWNER} must be 'auto' or a list from {list(_STATISTICS)}. "
            f"Got {unknown!r} instead."
        )
    return set(chosen)


# --------------------------------------------------------------------------- intervals
#
# Every statistic (but the Sinkhorn divergence and the Lyapunov exponent) is a
# function of per-trial sums: ``summaries(trajectories)`` gives one row of sums
# per trial, ``finish(totals)`` the statistic from their sum over trials. A
# bootstrap over trials is then a matrix product: resampling weights (B, n_trials)
# times the summaries (n_trials, K), and the whole interval costs one pass over
# the data.


def _resampling_weights(n_trials, n_bootstrap, rng):
    """Multinomial counts of n_trials draws with replacement, one row per resample."""
    draws = rng.integers(0, n_trials, (n_bootstrap, n_trials))
    weights = np.zeros((n_bootstrap, n_trials))
    np.add.at(weights, (np.arange(n_bootstrap)[:, None], draws), 1.0)
    return weights


def _percentiles(values, confidence):
    """Percentile interval of each column; NaN where a column has no finite value
    (e.g. the dwell time of a well that was never left)."""
    tail = 100 * (1 - confidence) / 2
    values = np.asarray(values, dtype=float)
    low = np.full(values.shape[1:], np.nan)
    high = np.full(values.shape[1:], np.nan)
    finite = ~np.all(np.isnan(values), axis=0)
    if finite.any():
        low[finite], high[finite] = np.nanpercentile(values[:, finite], [tail, 100 - tail], axis=0)
    return low, high


def _value_interval(summaries, finish, n_bootstrap, confidence, rng):
    value = finish(summaries.sum(axis=0)[None])[0]
    n_trials = summaries.shape[0]
    if n_trials < 2 or n_bootstrap < 2:
        nan = np.full_like(value, np.nan)
        return value, nan, nan
    totals = _resampling_weights(n_trials, n_bootstrap, rng) @ summaries
    low, high = _percentiles(finish(totals), confidence)
    return value, low, high


def _row(statistic, component, kind, ref, cand):
    (rv, rl, rh), (cv, cl, ch) = ref, cand
    if kind == "distance":
        agree = bool(cv <= rh) or bool(np.isfinite(cl) and np.isfinite(rh) and cl <= rh)
    else:
        agree = bool(np.isfinite(rl) and np.isfinite(cl) and rl <= ch and cl <= rh)
    return {
        "statistic": statistic, "component": component, "kind": kind,
        "reference": float(rv), "reference_low": float(rl), "reference_high": float(rh),
        "candidate": float(cv), "candidate_low": float(cl), "candidate_high": float(ch),
        "agree": agree,
    }


def _value_rows(names, labels, reference, candidate, summaries, finish, n_bootstrap, confidence, rng):
    ref = _value_interval(summaries(reference), finish, n_bootstrap, confidence, rng)
    cand = _value_interval(summaries(candidate), finish, n_bootstrap, confidence, rng)
    if isinstance(names, str):
        names = [names] * len(labels)
    return [
        _row(name, label, "value", tuple(a[j] for a in ref), tuple(a[j] for a in cand))
        for j, (name, label) in enumerate(zip(names, labels))
    ]


def _distance_rows(name, labels, reference, candidate, summaries, distance, n_bootstrap, confidence, rng):
    """Distance rows: the floor between two halves of the reference, and reference to candidate.

    ``distance(totals_a, totals_b)`` compares summed summaries (vectorised over
    the leading axis). The floor splits the reference trials into two random
    halves, so it is the distance at half the sample size: an upper estimate of
    the distance that noise alone gives. Both are bootstrapped over trials
    (within each half for the floor).
    """
    ref, cand = summaries(reference), summaries(candidate)
    n_ref, n_cand = ref.shape[0], cand.shape[0]
    if n_ref < 2:
        raise ValueError(
            f"{_OWNER} needs at least 2 reference trials for a distance's noise floor. Got {n_ref}."
        )
    order = rng.permutation(n_ref)
    half_a, half_b = ref[order[: n_ref // 2]], ref[order[n_ref // 2:]]
    floor = distance(half_a.sum(axis=0)[None], half_b.sum(axis=0)[None])[0]
    cross = distance(ref.sum(axis=0)[None], cand.sum(axis=0)[None])[0]
    if n_bootstrap >= 2:
        floors = distance(_resampling_weights(half_a.shape[0], n_bootstrap, rng) @ half_a,
                          _resampling_weights(half_b.shape[0], n_bootstrap, rng) @ half_b)
        crosses = distance(_resampling_weights(n_ref, n_bootstrap, rng) @ ref,
                           _resampling_weights(n_cand, n_bootstrap, rng) @ cand)
        floor_low, floor_high = _percentiles(floors, confidence)
        cross_low, cross_high = _percentiles(crosses, confidence)
    else:
        floor_low = floor_high = cross_low = cross_high = np.full_like(floor, np.nan)
    return [
        _row(name, label, "distance", (floor[j], floor_low[j], floor_high[j]),
             (cross[j], cross_low[j], cross_high[j]))
        for j, label in enumerate(labels)
    ]


# --------------------------------------------------------------------------- statistics


def _moment_summaries(trajectories):
    # per trial: count, sums, sums of squares and of cross products
    n_trials, n_times, dim = trajectories.shape
    cross = np.einsum("bti,btj->bij", trajectories, trajectories).reshape(n_trials, dim * dim)
    return np.concatenate([np.full((n_trials, 1), float(n_times)), trajectories.sum(axis=1), cross], axis=1)


def _moment_parts(totals, dim):
    count = totals[:, :1]
    mean = totals[:, 1:1 + dim] / count
    second = totals[:, 1 + dim:].reshape(-1, dim, dim) / count[:, :, None]
    covariance = second - mean[:, :, None] * mean[:, None, :]
    return mean, covariance


def _moments_finish(dim):
    def finish(totals):
        mean, covariance = _moment_parts(totals, dim)
        std = np.sqrt(np.maximum(np.diagonal(covariance, axis1=1, axis2=2), 0))
        return np.concatenate([mean, std], axis=1)
    return finish


def _correlations_finish(dim):
    upper = np.triu_indices(dim, k=1)

    def finish(totals):
        _, covariance = _moment_parts(totals, dim)
        std = np.sqrt(np.maximum(np.diagonal(covariance, axis1=1, axis2=2), 0))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = covariance / (std[:, :, None] * std[:, None, :])
        return corr[:, upper[0], upper[1]]
    return finish


def _histogram_edges(reference, candidate, n_bins):
    both = np.concatenate([reference.reshape(-1, reference.shape[2]), candidate.reshape(-1, candidate.shape[2])])
    low, high = np.percentile(both, [0.5, 99.5], axis=0)
    span = np.where(high > low, high - low, 1.0)
    return [np.linspace(low[j] - 0.05 * span[j], high[j] + 0.05 * span[j], n_bins + 1)
            for j in range(both.shape[1])]


def _histogram_summaries(edges, components):
    """Per trial: for each marginal, its bin counts plus one bin for everything outside."""
    def summaries(trajectories):
        blocks = []
        for component in components:
            block_edges = [edges[j] for j in component]
            per_trial = []
            for trial in trajectories:
                counts, _ = np.histogramdd(trial[:, list(component)], bins=block_edges)
                counts = counts.ravel()
                per_trial.append(np.append(counts, trial.shape[0] - counts.sum()))
            blocks.append(np.asarray(per_trial))
        return np.concatenate(blocks, axis=1)

    sizes = [int(np.prod([len(edges[j]) - 1 for j in c])) + 1 for c in components]
    return summaries, np.cumsum([0] + sizes)


def _total_variation(bounds):
    """Total-variation distance between the normalised histograms of each marginal."""
    def distance(a, b):
        values = []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            pa = a[:, start:stop] / np.maximum(a[:, start:stop].sum(axis=1, keepdims=True), 1)
            pb = b[:, start:stop] / np.maximum(b[:, start:stop].sum(axis=1, keepdims=True), 1)
            values.append(0.5 * np.abs(pa - pb).sum(axis=1))
        return np.stack(values, axis=1)
    return distance


def _sinkhorn_rows(reference, candidate, n_samples, blur, n_bootstrap, confidence, rng):
    """Sinkhorn divergence of the pooled samples, its floor between reference halves, both bootstrapped."""
    from ..inference.distances import sinkhorn_divergence

    def pooled(trajectories, trials):
        samples = trajectories[trials].reshape(-1, trajectories.shape[2])
        return samples[rng.choice(samples.shape[0], min(n_samples, samples.shape[0]), replace=False)]

    n_ref, n_cand = reference.shape[0], candidate.shape[0]

    def floor_once(trials):
        half = trials.size // 2
        return sinkhorn_divergence(pooled(reference, trials[:half]), pooled(reference, trials[half:]), blur=blur)

    def cross_once(ref_trials, cand_trials):
        return sinkhorn_divergence(pooled(reference, ref_trials), pooled(candidate, cand_trials), blur=blur)

    floor = floor_once(rng.permutation(n_ref))
    cross = cross_once(np.arange(n_ref), np.arange(n_cand))
    floors = [floor_once(rng.permutation(rng.integers(0, n_ref, n_ref))) for _ in range(n_bootstrap)]
    crosses = [cross_once(rng.integers(0, n_ref, n_ref), rng.integers(0, n_cand, n_cand)) for _ in range(n_bootstrap)]
    if n_bootstrap >= 2:
        floor_low, floor_high = _percentiles(np.asarray(floors)[:, None], confidence)
        cross_low, cross_high = _percentiles(np.asarray(crosses)[:, None], confidence)
    else:
        floor_low = floor_high = cross_low = cross_high = np.array([np.nan])
    return [_row("Sinkhorn divergence", "all", "distance", (floor, floor_low[0], floor_high[0]),
                 (cross, cross_low[0], cross_high[0]))]


def _lag_summaries(max_lag):
    """Per trial and lag k = 0..max_lag: count, sum z_t z_{t+k}, sum z_t and sum z_{t+k} over the pairs."""
    def summaries(trajectories):
        n_trials, n_times, dim = trajectories.shape
        size = 1 << int(np.ceil(np.log2(2 * n_times)))
        spectrum = np.fft.rfft(trajectories, n=size, axis=1)
        products = np.fft.irfft(spectrum * spectrum.conj(), n=size, axis=1)[:, : max_lag + 1]
        total = trajectories.sum(axis=1, keepdims=True)
        head = np.cumsum(trajectories[:, :max_lag], axis=1)        # sum of the first k values
        tail = np.cumsum(trajectories[:, ::-1][:, :max_lag], axis=1)  # sum of the last k values
        zero = np.zeros((n_trials, 1, dim))
        firsts = total - np.concatenate([zero, tail], axis=1)       # sum_{t < T - k} z_t
        seconds = total - np.concatenate([zero, head], axis=1)      # sum_{t >= k} z_t
        counts = np.broadcast_to((n_times - np.arange(max_lag + 1))[None, :, None], products.shape)
        return np.stack([counts, products, firsts, seconds], axis=1).reshape(n_trials, -1)
    return summaries


def _acf_finish(max_lag, dim):
    def finish(totals):
        parts = totals.reshape(totals.shape[0], 4, max_lag + 1, dim)
        count, product, first, second = parts[:, 0], parts[:, 1], parts[:, 2], parts[:, 3]
        covariance = product / count - (first / count) * (second / count)
        with np.errstate(invalid="ignore", divide="ignore"):
            return covariance / covariance[:, :1]
    return finish


def autocorrelation(trajectories, max_lag):
    """Autocorrelation function of each component, pooled over trials.

    ``acf[k] = C(k) / C(0)`` with ``C(k)`` the covariance of the pairs
    (z_t, z_{t+k}) of all trials (each side centred by its own mean over the
    pairs).

    Parameters
    ----------
    trajectories : ndarray of shape (n_trials, n_times, d)
    max_lag : int
        Largest lag in samples (< n_times).

    Returns
    -------
    acf : ndarray of shape (max_lag + 1, d)
        ``acf[0] = 1``.
    """
    trajectories = np.asarray(trajectories, dtype=float)
    if trajectories.ndim == 2:
        trajectories = trajectories[None]
    max_lag = check_int(max_lag, "max_lag", minimum=0, maximum=trajectories.shape[1] - 1, owner="autocorrelation")
    totals = _lag_summaries(max_lag)(trajectories).sum(axis=0)[None]
    return _acf_finish(max_lag, trajectories.shape[2])(totals)[0]


def _correlation_time_finish(max_lag, dim, dt):
    """Integrated autocorrelation time: dt (sum of the ACF up to its first zero - 1/2)."""
    acf_of = _acf_finish(max_lag, dim)

    def finish(totals):
        acf = acf_of(totals)
        positive = np.cumprod(acf > 0, axis=1).astype(bool)   # up to the first zero crossing
        return dt * (np.where(positive, acf, 0).sum(axis=1) - 0.5)
    return finish


def _acf_distance(max_lag, dim):
    acf_of = _acf_finish(max_lag, dim)

    def distance(a, b):
        return np.abs(acf_of(a) - acf_of(b)).max(axis=1)
    return distance


def _well_trial(trial, wells, radius, dt):
    n_wells = wells.shape[0]
    labels = well_labels(trial[None], wells, radius)[0]
    counts = np.zeros((n_wells, n_wells))
    time_in = np.zeros(n_wells)
    valid = labels >= 0
    np.add.at(time_in, labels[valid], dt)
    changes = np.flatnonzero(valid[1:] & valid[:-1] & (labels[1:] != labels[:-1])) + 1
    np.add.at(counts, (labels[changes - 1], labels[changes]), 1.0)
    dwell = [(labels[start], (stop - start) * dt) for start, stop in zip(changes[:-1], changes[1:])]
    return counts, time_in, dwell


def well_transitions(trajectories, wells, radius, dt):
    """Dwell times and transitions between wells (core-set milestoning).

    A trajectory is in the core of well k when it is within ``radius`` of
    ``wells[k]``. Between cores it keeps the label of the last core it was in
    (milestoning), so noise on the edge of a core does not count as switching.
    A transition i -> j is a first entry into core j after core i; the time
    spent with label i is the time in i, and ``counts[i, j] / time_in[i]`` the
    rate of i -> j transitions.

    Parameters
    ----------
    trajectories : ndarray of shape (n_trials, n_times, d)
    wells : array of shape (k, d)
    radius : float
        Core radius (> 0).
    dt : float
        Time between samples.

    Returns
    -------
    counts : ndarray of shape (k, k)
        ``counts[i, j]``: transitions i -> j (diagonal zero).
    time_in : ndarray of shape (k,)
        Total time spent with label i.
    dwell_times : list of k lists
        Complete dwell periods in each well, from entry to the entry into
        another core (the first and last period of each trial, cut by the ends
        of the trial, are left out).
    """
    trajectories = np.asarray(trajectories, dtype=float)
    wells = np.atleast_2d(np.asarray(wells, dtype=float))
    counts = np.zeros((wells.shape[0], wells.shape[0]))
    time_in = np.zeros(wells.shape[0])
    dwell_times = [[] for _ in range(wells.shape[0])]
    for trial in trajectories:
        trial_counts, trial_time, dwell = _well_trial(trial, wells, radius, dt)
        counts += trial_counts
        time_in += trial_time
        for well, duration in dwell:
            dwell_times[well].append(duration)
    return counts, time_in, dwell_times


def _well_statistics(wells, radius, dt):
    n_wells = wells.shape[0]
    pairs = [(i, j) for i in range(n_wells) for j in range(n_wells) if i != j]

    def summaries(trajectories):
        rows = []
        for trial in trajectories:
            counts, time_in, dwell = _well_trial(trial, wells, radius, dt)
            dwell_sum, dwell_count = np.zeros(n_wells), np.zeros(n_wells)
            for well, duration in dwell:
                dwell_sum[well] += duration
                dwell_count[well] += 1
            rows.append(np.concatenate([counts.ravel(), time_in, dwell_sum, dwell_count]))
        return np.asarray(rows)

    def finish(totals):
        k2 = n_wells * n_wells
        counts = totals[:, :k2].reshape(-1, n_wells, n_wells)
        time_in = totals[:, k2:k2 + n_wells]
        dwell_sum = totals[:, k2 + n_wells:k2 + 2 * n_wells]
        dwell_count = totals[:, k2 + 2 * n_wells:]
        with np.errstate(invalid="ignore", divide="ignore"):
            occupancy = time_in / time_in.sum(axis=1, keepdims=True)
            mean_dwell = np.where(dwell_count > 0, dwell_sum / dwell_count, np.nan)
            rates = np.stack([np.where(time_in[:, i] > 0, counts[:, i, j] / time_in[:, i], np.nan)
                              for i, j in pairs], axis=1)
        return np.concatenate([occupancy, mean_dwell, rates], axis=1)

    labels = [f"well {i}" for i in range(n_wells)] * 2 + [f"well {i} -> well {j}" for i, j in pairs]
    names = ["occupancy"] * n_wells + ["dwell time"] * n_wells + ["transition rate"] * len(pairs)
    return summaries, finish, labels, names


def _cycles(trace, centre, h):
    """Start indices of the cycles of one trace (Schmitt trigger on upward crossings)."""
    below = trace < centre - h
    above = trace > centre + h
    starts, armed = [], False
    for t in np.flatnonzero(below | above):
        if below[t]:
            armed = True
        elif armed:
            armed = False
            starts.append(t)
    return starts


def _oscillation_summaries(dt, centre, h):
    def summaries(trajectories):
        rows = []
        for trace in trajectories[:, :, 0]:
            starts = _cycles(trace, centre, h)
            periods = np.diff(starts) * dt
            amplitudes = [0.5 * np.ptp(trace[a:b]) for a, b in zip(starts[:-1], starts[1:])]
            rows.append([len(periods), periods.sum(), float(np.sum(amplitudes))])
        return np.asarray(rows, dtype=float)

    def finish(totals):
        with np.errstate(invalid="ignore", divide="ignore"):
            return totals[:, 1:] / totals[:, :1]
    return summaries, finish


def oscillation_statistics(trajectories, dt, *, component=0, hysteresis=None, centre=None):
    """Period and amplitude of an oscillation, from upward crossings of one component.

    A cycle starts when ``z[component]`` rises above ``centre + h`` after having
    been below ``centre - h`` (a Schmitt trigger: noise near the centre does not
    count as a crossing).

    Parameters
    ----------
    trajectories : ndarray of shape (n_trials, n_times, d)
    dt : float
    component : int, default=0
    hysteresis : float, optional
        h; default 0.2 times the component's standard deviation.
    centre : float, optional
        Default: the component's mean.

    Returns
    -------
    period, amplitude : float
        Mean cycle length and mean half peak-to-peak range of the component per
        cycle, over all complete cycles (NaN when there are none).
    n_cycles : int
    """
    values = np.asarray(trajectories, dtype=float)
    if values.ndim == 2:
        values = values[None]
    values = values[:, :, component:component + 1]
    centre = values.mean() if centre is None else centre
    h = 0.2 * values.std() if hysteresis is None else hysteresis
    summaries, finish = _oscillation_summaries(dt, centre, h)
    totals = summaries(values).sum(axis=0)[None]
    period, amplitude = finish(totals)[0]
    return float(period), float(amplitude), int(totals[0, 0])


def _lyapunov_rows(reference_drift, candidate_drift, starts, dt, t_max, confidence):
    rows = []
    estimates = []
    for drift in (reference_drift, candidate_drift):
        values = largest_lyapunov_exponent(drift, starts, t_max, dt=dt, t_transient=t_max / 10)
        mean = values.mean()
        if values.size > 1:
            from scipy import stats

            half = stats.t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
        else:
            half = np.nan
        estimates.append((mean, mean - half, mean + half))
    rows.append(_row("largest Lyapunov exponent", "all", "value", *estimates))
    return rows


# --------------------------------------------------------------------------- the table


def compare_dynamics(reference, candidate, *, dt, statistics="auto", burn_in=0, wells=None, well_radius=None,
                     periodic=None, max_lag=None, n_bins=30, n_bootstrap=200, confidence=0.95,
                     sinkhorn_samples=1000, blur=0.05, reference_drift=None, candidate_drift=None,
                     lyapunov_time=200.0, lyapunov_dt=None, random_state=0):
    """Compare the trajectories of a candidate (a network) with those of a reference (an SDE).

    Parameters
    ----------
    reference : ndarray of shape (n_trials, n_times, d), or an SDE
        Trajectories of the reference, sampled every ``dt``; or a
        :class:`connector_sim.ddm.SDE`, simulated by Euler-Maruyama with step
        ``dt`` for as many steps and trials as the candidate, from the
        candidate's first points (its drift is then the reference drift).
    candidate : ndarray of shape (n_trials, n_times, d)
        Trajectories of the candidate in the same coordinates and time units
        (for a trained network: its latents mapped into the SDE's coordinates,
        network time converted to SDE time).
    dt : float
        Time between samples, for both.
    statistics : "auto" or list of str
        From ``"moments"`` (mean and standard deviation of each component),
        ``"correlation"`` (between components), ``"histogram"`` (total-variation
        distance of the 1-D marginals and of the 2-D marginal of the first two
        components), ``"sinkhorn"`` (debiased Sinkhorn divergence of the
        stationary samples; needs torch and geomloss), ``"autocorrelation"``
        (integrated correlation time of each component and the largest ACF
        difference), ``"wells"`` (occupancy, dwell times, transition rates;
        needs ``wells``), ``"oscillation"`` (period and amplitude of the first
        component), ``"lyapunov"`` (largest Lyapunov exponent of each drift;
        needs both drifts). ``"auto"``: moments, correlation, histogram and
        autocorrelation always; sinkhorn when torch is installed; wells when
        ``wells`` is given; oscillation when ``periodic`` is true; lyapunov
        when both drifts are known.
    burn_in : int, default=0
        Samples dropped at the start of every trial (so that stationary
        statistics are stationary).
    wells : array of shape (k, d), optional
        Centres of the wells for dwell times and switching rates.
    well_radius : float, optional
        Core radius; default 0.3 times the smallest distance between wells
        (:func:`connector_sim.ddm.memories.default_core_radius`).
    periodic : bool, optional
        Whether to measure period and amplitude; default: when the reference is
        an SDE whose ``exact`` has a ``"period"``.
    max_lag : int, optional
        Largest lag of the autocorrelation in samples; default a quarter of the
        trial length (at most 500).
    n_bins : int, default=30
        Bins per axis of the histograms.
    n_bootstrap : int, default=200
        Bootstrap resamples of the trials for the intervals (Sinkhorn uses at
        most 8: each resample costs two divergences of ``sinkhorn_samples``
        points, about a second each on one core).
    confidence : float, default=0.95
    sinkhorn_samples : int, default=1000
        Samples of each side in the Sinkhorn divergence.
    blur : float, default=0.05
        Sinkhorn blur (length scale), in the units of the trajectories.
    reference_drift, candidate_drift : callable, optional
        Drifts f(z), vectorised over rows, for the Lyapunov exponent.
    lyapunov_time : float, default=200.0
        Averaging time of the Lyapunov exponents (after a tenth of it as transient),
        from up to 8 starts (the last points of the first reference trials): the
        interval is the t-interval of their mean.
    lyapunov_dt : float, optional
        Step of the Lyapunov integration (RK4); default min(dt, 0.01).
    random_state : int, default=0
        Seed of the bootstrap (and of the SDE simulation when ``reference`` is an SDE).

    Returns
    -------
    DynamicsComparison
        The tidy table; ``to_markdown()`` writes it.

    Raises
    ------
    ValueError
        If the trajectories do not match the SDE's dimension or each other,
        ``burn_in`` leaves fewer than 4 time points, ``wells`` is not of shape
        (k >= 2, d), or a statistic asked for lacks what it needs (``wells``;
        both drifts for "lyapunov").

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.ddm.compare import compare_dynamics
    >>> rng = np.random.default_rng(0)
    >>> a = rng.standard_normal((20, 200, 1)); b = rng.standard_normal((20, 200, 1))
    >>> table = compare_dynamics(a, b, dt=0.1, statistics=["moments"])
    >>> all(row["agree"] for row in table)
    True
    """
    dt = check_positive_scalar(dt, "dt", owner=_OWNER)
    confidence = _check_confidence(confidence)
    chosen = _check_statistics(statistics)
    n_bootstrap = check_int(n_bootstrap, "n_bootstrap", minimum=0, owner=_OWNER)
    n_bins = check_int(n_bins, "n_bins", minimum=2, maximum=10_000, owner=_OWNER)
    burn_in = check_int(burn_in, "burn_in", minimum=0, owner=_OWNER)
    candidate = _as_trajectories(candidate, "candidate")
    dim = candidate.shape[2]

    sde = None
    if hasattr(reference, "drift") and hasattr(reference, "dim") and not isinstance(reference, np.ndarray):
        sde = reference
        if sde.dim != dim:
            raise ValueError(
                f"The candidate trajectories of {_OWNER} have {dim} components, the SDE has {sde.dim}."
            )
        from .sde import euler_maruyama

        reference = euler_maruyama(sde, candidate[:, 0], candidate.shape[1] - 1, dt, seed=random_state)
        if reference_drift is None:
            reference_drift = sde.drift
    reference = _as_trajectories(reference, "reference", dim)
    for name, trajectories in (("reference", reference), ("candidate", candidate)):
        if burn_in + 4 > trajectories.shape[1]:
            raise ValueError(
                f"The 'burn_in' parameter of {_OWNER} ({burn_in}) leaves fewer than 4 time points of the "
                f"{name}'s {trajectories.shape[1]}."
            )
    reference, candidate = reference[:, burn_in:], candidate[:, burn_in:]
    n_times = min(reference.shape[1], candidate.shape[1])
    if max_lag is None:
        max_lag = min(n_times // 4, 500)
    max_lag = check_int(max_lag, "max_lag", minimum=1, maximum=n_times - 1, owner=_OWNER)

    if wells is not None:
        wells = np.atleast_2d(np.asarray(wells, dtype=float))
        if wells.ndim != 2 or wells.shape[1] != dim or wells.shape[0] < 2 or not np.isfinite(wells).all():
            raise ValueError(
                f"The 'wells' parameter of {_OWNER} must be a finite array of shape (k >= 2, {dim}). "
                f"Got shape {wells.shape} instead."
            )
        if well_radius is None:
            well_radius = default_core_radius(wells)
        well_radius = check_positive_scalar(well_radius, "well_radius", owner=_OWNER)
    if periodic is None:
        periodic = sde is not None and "period" in getattr(sde, "exact", {})

    if chosen is None:
        chosen = {"moments", "histogram", "autocorrelation"}
        if dim > 1:
            chosen.add("correlation")
        if _torch_available():
            chosen.add("sinkhorn")
        if wells is not None:
            chosen.add("wells")
        if periodic:
            chosen.add("oscillation")
        if reference_drift is not None and candidate_drift is not None:
            chosen.add("lyapunov")
    if "wells" in chosen and wells is None:
        raise ValueError(f"The 'wells' statistic of {_OWNER} needs the 'wells' parameter (their centres).")
    if "lyapunov" in chosen and (reference_drift is None or candidate_drift is None):
        raise ValueError(
            f"The 'lyapunov' statistic of {_OWNER} needs both drifts: pass reference_drift (or an SDE as "
            "the reference) and candidate_drift."
        )

    rng = np.random.default_rng(random_state)
    labels = [f"z{j}" for j in range(dim)]
    rows = []
    if "moments" in chosen:
        rows += _value_rows(["mean"] * dim + ["standard deviation"] * dim, labels * 2, reference, candidate,
                            _moment_summaries, _moments_finish(dim), n_bootstrap, confidence, rng)
    if "correlation" in chosen and dim > 1:
        pairs = [f"z{i},z{j}" for i in range(dim) for j in range(i + 1, dim)]
        rows += _value_rows("correlation", pairs, reference, candidate, _moment_summaries,
                            _correlations_finish(dim), n_bootstrap, confidence, rng)
    if "histogram" in chosen:
        edges = _histogram_edges(reference, candidate, n_bins)
        components = [(j,) for j in range(dim)] + ([(0, 1)] if dim > 1 else [])
        summaries, bounds = _histogram_summaries(edges, components)
        rows += _distance_rows("histogram total variation", labels + (["z0,z1"] if dim > 1 else []),
                               reference, candidate, summaries, _total_variation(bounds), n_bootstrap,
                               confidence, rng)
    if "sinkhorn" in chosen:
        rows += _sinkhorn_rows(reference, candidate, check_int(sinkhorn_samples, "sinkhorn_samples", minimum=2,
                                                               owner=_OWNER),
                               check_positive_scalar(blur, "blur", owner=_OWNER), min(n_bootstrap, 8),
                               confidence, rng)
    if "autocorrelation" in chosen:
        lags = _lag_summaries(max_lag)
        rows += _value_rows("correlation time", labels, reference, candidate, lags,
                            _correlation_time_finish(max_lag, dim, dt), n_bootstrap, confidence, rng)
        rows += _distance_rows("autocorrelation max difference", labels, reference, candidate, lags,
                               _acf_distance(max_lag, dim), n_bootstrap, confidence, rng)
    if "wells" in chosen:
        summaries, finish, well_labels, names = _well_statistics(wells, well_radius, dt)
        rows += _value_rows(names, well_labels, reference, candidate, summaries, finish, n_bootstrap,
                            confidence, rng)
    if "oscillation" in chosen:
        centre = reference[:, :, 0].mean()
        hysteresis = 0.2 * reference[:, :, 0].std()
        summaries, finish = _oscillation_summaries(dt, centre, hysteresis)
        rows += _value_rows(["period", "amplitude"], ["z0", "z0"], reference, candidate, summaries, finish,
                            n_bootstrap, confidence, rng)
    if "lyapunov" in chosen:
        lyapunov_dt = min(dt, 0.01) if lyapunov_dt is None else check_positive_scalar(
            lyapunov_dt, "lyapunov_dt", owner=_OWNER)
        n_starts = min(8, reference.shape[0])
        starts = reference[:n_starts, -1]
        rows += _lyapunov_rows(_rows_drift(reference_drift), _rows_drift(candidate_drift), starts, lyapunov_dt,
                               check_positive_scalar(lyapunov_time, "lyapunov_time", owner=_OWNER), confidence)
    return DynamicsComparison(rows, confidence, (reference.shape[0], candidate.shape[0]))


def _rows_drift(drift):
    return lambda points: np.asarray(drift(points), dtype=float)


def _torch_available():
    from importlib.util import find_spec

    return find_spec("torch") is not None and find_spec("geomloss") is not None
