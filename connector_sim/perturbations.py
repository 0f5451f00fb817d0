"""Perturbations: silencing or clamping units, in simulation and in mean field (theory section 2).

A :class:`Perturbation` replaces the rates phi(x_i) of a set S of units by
clamp values c_i (c_i = 0 silences them) at the steps start <= t < stop::

    kappa_{t+1} = (1 - alpha) kappa_t + alpha (1/N) [ sum_{i not in S} n_i phi(x_i,t) + sum_{i in S} n_i c_i ]

The set S is given by unit indices, a boolean mask, cell-type labels, or a
random fraction f of the units. The same description acts on

- a sampled network, in :func:`connector_sim.simulate` (``clamp=``) and in
  its latent flow (the sample average over the free units plus the constant
  clamped term);
- a :class:`~connector_sim.Gaussian` or :class:`~connector_sim.GaussianMixture`
  in mean field (theory eq. 4): clamping cell type k replaces its term
  w_k E_k[n phi(z)] by w_k E_k[n] c, and clamping a random fraction f of all
  units replaces E[n phi(z)] by (1 - f) E[n phi(z)] + f c E[n].

:func:`perturbation_study` runs perturbations x initial conditions x seeds in
one call and returns a tidy :class:`PerturbationTable`, one row per run.
"""

import csv
import io
import math
import numbers
import os
import sys
import threading
import uuid
import warnings

import numpy as np

from ._files import write_atomic
from ._memory import check_allocation
from ._validation import (
    check_array,
    check_dtype,
    check_int,
    check_n_threads,
    check_nonnegative_scalar,
    check_positive_scalar,
)
from .distributions import Gaussian, GaussianMixture
from .fixed_points import _check_box, find_fixed_points
from .mean_field import DEFAULT_ORDER, latent_flow
from .network import LowRankRNN
from .parallel import NetworkFile, SweepInterrupted, check_scheduler, run_tasks
from .simulate import simulate

#: Name of the system with no perturbation in force, in :attr:`PerturbationTable.fixed_points`.
UNPERTURBED = "unperturbed"


class Perturbation:
    """Silence or clamp a set of units, for the whole run or a window of steps.

    Give at most one of ``units``, ``cell_types`` and ``fraction``; with none
    of them the perturbation is the control (nothing changes). At the steps
    ``start <= t < stop`` the rates of the chosen units are replaced::

        phi(x_i,t) -> c_i  for i in S,   c_i = value (scalar) or value[j] (per unit)

    The step t is the one that advances kappa_t to kappa_{t+1}, as in
    :func:`connector_sim.simulate`'s ``clamp``.

    Parameters
    ----------
    units : array-like of int or bool, optional
        Unit indices (in [0, N)) or a boolean mask of length N.
    cell_types : int or sequence of int, optional
        Cell-type labels: the neurons with these labels (sampled networks,
        see ``labels``) or these mixture components (mean field).
    fraction : float in [0, 1], optional
        A random fraction f of the units, round(f N) of them, drawn with
        ``random_state``; in mean field, every cell type loses a fraction f.
    value : float or array-like of shape (n_units,), default=0.0
        Clamp value(s); 0 silences. Per-unit values need ``units``.
    start : int, default=0
        First clamped step.
    stop : int, optional
        First step after the window; None clamps to the end of the run.
    random_state : int, default=0
        Draws the units of ``fraction``.
    name : str, optional
        Label in the results; a description of the perturbation by default.

    Raises
    ------
    ValueError
        If more than one of ``units``, ``cell_types`` and ``fraction`` is given,
        ``fraction`` is not in [0, 1], ``units`` are negative or not 1-D,
        per-unit values come without ``units`` or in the wrong number, or
        ``stop`` <= ``start``.
    TypeError
        If ``start``, ``stop`` or ``random_state`` is not an int, or ``name``
        not a str.

    See Also
    --------
    Perturbation.silence, Perturbation.clamp : the usual constructors.

    Examples
    --------
    >>> Perturbation.silence(fraction=0.5).name
    'silence 50% of units'
    >>> Perturbation(units=[0, 1], value=1.0, start=10, stop=20)
    Perturbation('clamp 2 units at 1, steps 10-20')
    """

    def __init__(self, *, units=None, cell_types=None, fraction=None, value=0.0, start=0, stop=None,
                 random_state=0, name=None):
        given = [key for key, item in (("units", units), ("cell_types", cell_types), ("fraction", fraction))
                 if item is not None]
        if len(given) > 1:
            raise ValueError(
                f"A Perturbation selects its units one way: units, cell_types or fraction. Got {' and '.join(given)}. "
                "Combine selections into one boolean mask instead."
            )
        self.units = None if units is None else _check_units_argument(units)
        self.cell_types = None
        if cell_types is not None:
            types = [cell_types] if np.ndim(cell_types) == 0 else list(cell_types)
            if not types or any(isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral) for k in types):
                raise ValueError(
                    f"cell_types must be an int or a non-empty sequence of int labels. Got {cell_types!r}."
                )
            self.cell_types = tuple(sorted({int(k) for k in types}))
        self.fraction = None
        if fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 <= fraction <= 1:
                raise ValueError(f"fraction must be a number in [0, 1] (the share of units). Got {fraction!r}.")
            self.fraction = float(fraction)
        if np.ndim(value) > 1:
            raise ValueError(f"value must be a scalar or a 1-D array of per-unit values. Got shape {np.shape(value)}.")
        value = check_array(value, "value", ndim=np.ndim(value), dtype=np.float64)
        if value.ndim:
            if self.units is None:
                raise ValueError(
                    "Per-unit clamp values need the units given explicitly (units=...); with cell_types or "
                    f"fraction give one scalar value. Got {value.shape[0]} values."
                )
            count = int(self.units.sum()) if self.units.dtype == bool else len(self.units)
            if value.shape[0] != count:
                raise ValueError(
                    f"value must be a scalar or one value per clamped unit ({count}). Got {value.shape[0]} values."
                )
        self.value = value.copy()
        self.value.setflags(write=False)
        self.start = check_int(start, "start", minimum=0, owner="Perturbation")
        self.stop = None if stop is None else check_int(stop, "stop", minimum=self.start + 1, owner="Perturbation")
        self.random_state = check_int(random_state, "random_state", owner="Perturbation")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None. Got {name!r}.")
        self.name = self._describe() if name is None else name

    @classmethod
    def silence(cls, units=None, *, cell_types=None, fraction=None, start=0, stop=None, random_state=0, name=None):
        """Silence (clamp phi to 0) units, cell types or a random fraction; see :class:`Perturbation`."""
        return cls(units=units, cell_types=cell_types, fraction=fraction, value=0.0, start=start, stop=stop,
                   random_state=random_state, name=name)

    @classmethod
    def clamp(cls, value, units=None, *, cell_types=None, fraction=None, start=0, stop=None, random_state=0,
              name=None):
        """Clamp the rates of units, cell types or a random fraction to ``value``; see :class:`Perturbation`."""
        return cls(units=units, cell_types=cell_types, fraction=fraction, value=value, start=start, stop=stop,
                   random_state=random_state, name=name)

    @property
    def is_control(self):
        """True when no unit is selected (the unperturbed control)."""
        return self.units is None and self.cell_types is None and self.fraction is None

    def _describe(self):
        if self.is_control:
            return "none"
        verb = "silence" if self.value.ndim == 0 and self.value == 0 else "clamp"
        if self.cell_types is not None:
            what = f"cell type{'s' if len(self.cell_types) > 1 else ''} {', '.join(map(str, self.cell_types))}"
        elif self.fraction is not None:
            what = f"{100 * self.fraction:g}% of units"
        else:
            count = int(self.units.sum()) if self.units.dtype == bool else len(self.units)
            what = f"{count} unit{'s' if count != 1 else ''}"
        text = f"{verb} {what}"
        if verb == "clamp":
            text += f" at {float(self.value):g}" if self.value.ndim == 0 else " at given values"
        if self.start or self.stop is not None:
            text += f", steps {self.start}-{'end' if self.stop is None else self.stop}"
        return text

    def __repr__(self):
        return f"Perturbation({self.name!r})"

    def active_at_end(self, n_steps):
        """Whether the perturbation is in force at the last step t = n_steps - 1 of a run."""
        last = n_steps - 1
        return not self.is_control and self.start <= last and (self.stop is None or last < self.stop)

    def unit_values(self, n_neurons, labels=None):
        """The clamped units of a network of ``n_neurons`` and their clamp values.

        Parameters
        ----------
        n_neurons : int
        labels : array-like of int of shape (n_neurons,), optional
            Cell type of each neuron; needed when the perturbation names cell types.

        Returns
        -------
        mask : ndarray of shape (n_neurons,), bool
        values : ndarray of shape (n_neurons,), float64
            c_i where ``mask``, 0 elsewhere.

        Raises
        ------
        ValueError
            When the perturbation names units that do not exist: an index
            >= n_neurons, a mask of another length, an unknown cell type.
        """
        mask = np.zeros(n_neurons, bool)
        values = np.zeros(n_neurons)
        if self.is_control:
            return mask, values
        if self.units is not None:
            if self.units.dtype == bool:
                if len(self.units) != n_neurons:
                    raise ValueError(
                        f"Perturbation {self.name!r} has a boolean unit mask of length {len(self.units)}, but the "
                        f"network has {n_neurons} units. Give a mask of length {n_neurons}."
                    )
                index = np.flatnonzero(self.units)
            else:
                index = self.units
                if len(index) and index.max() >= n_neurons:
                    raise ValueError(
                        f"Perturbation {self.name!r} names unit {int(index.max())}, but the network has {n_neurons} "
                        f"units (indices 0 to {n_neurons - 1}). Give unit indices in [0, {n_neurons - 1}]."
                    )
        elif self.cell_types is not None:
            labels = _check_labels(labels, n_neurons, f"Perturbation {self.name!r} names cell types "
                                                      f"{list(self.cell_types)}")
            known = np.unique(labels)
            missing = sorted(set(self.cell_types) - set(known.tolist()))
            if missing:
                raise ValueError(
                    f"Perturbation {self.name!r} names cell type(s) {missing}, which do not exist. "
                    f"The cell types (labels) here are {known.tolist()}."
                )
            index = np.flatnonzero(np.isin(labels, self.cell_types))
        else:
            rng = np.random.default_rng(self.random_state)
            index = rng.choice(n_neurons, int(round(self.fraction * n_neurons)), replace=False)
        mask[index] = True
        values[index] = self.value
        return mask, values

    def clamp_spec(self, n_neurons, labels=None):
        """The ``clamp=`` argument of :func:`connector_sim.simulate`, or None for the control."""
        if self.is_control:
            return None
        mask, values = self.unit_values(n_neurons, labels)
        return {"units": mask, "value": values[mask], "start": self.start, "stop": self.stop}


def _check_units_argument(units):
    units = np.asarray(units)
    if units.ndim != 1 or not (np.issubdtype(units.dtype, np.integer) or units.dtype == bool):
        raise ValueError(
            "units must be a 1-D array of integer unit indices or a boolean mask. "
            f"Got an array of dtype {units.dtype} and shape {units.shape}."
        )
    if units.dtype != bool:
        if len(units) and units.min() < 0:
            raise ValueError(f"units must be indices >= 0. Got {int(units.min())}.")
        units = units.astype(np.int64)
    units = units.copy()
    units.setflags(write=False)
    return units


def _check_labels(labels, n_neurons, context):
    if labels is None:
        raise ValueError(
            f"{context}; give the cell type of each neuron with labels= (for instance from "
            "distribution.sample(N, return_labels=True))."
        )
    labels = np.asarray(labels)
    if labels.shape != (n_neurons,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be one integer cell type per neuron, shape ({n_neurons},). "
            f"Got an array of dtype {labels.dtype} and shape {labels.shape}."
        )
    return labels


def _check_perturbation(perturbation):
    if perturbation is None:
        return Perturbation()
    if not isinstance(perturbation, Perturbation):
        raise TypeError(f"perturbation must be a Perturbation or None. Got {type(perturbation).__name__}.")
    return perturbation


def _mean_n(distribution):
    """E[n] under a Gaussian or a Gaussian mixture."""
    layout = distribution.layout
    if isinstance(distribution, Gaussian):
        return distribution.mean[layout.n]
    return distribution.weights @ distribution.means[:, layout.n]


def perturbed_flow(source, perturbation=None, *, labels=None, v=None, activation=None, order=DEFAULT_ORDER):
    """The latent velocity kappa -> dkappa/dt with a perturbation in force.

    For a sampled network (or :class:`~connector_sim.Empirical` rows), with S
    the clamped units::

        F(kappa) = -kappa + (1/N) [ sum_{i not in S} n_i phi(z_i) + sum_{i in S} n_i c_i ]

    exactly the velocity of :func:`connector_sim.simulate` with the same
    ``clamp``. For a Gaussian or Gaussian mixture (mean field, theory section 2),
    clamping cell types K at c::

        F(kappa) = -kappa + sum_{k not in K} w_k E_k[n phi(z)] + c sum_{k in K} w_k E_k[n]

    and clamping a random fraction f of the units::

        F(kappa) = -kappa + (1 - f) E[n phi(z)] + f c E[n]

    (for silencing, c = 0: the overlaps Cov(n, m) scale by 1 - f). The
    window (start, stop) of the perturbation is ignored here: this is the
    flow while it is in force.

    Parameters
    ----------
    source : LowRankRNN, Empirical, Gaussian or GaussianMixture
    perturbation : Perturbation, optional
        None gives the unperturbed flow.
    labels : array-like of int of shape (n_neurons,), optional
        Cell type of each neuron of a sampled source.
    v, activation, order
        As in :func:`connector_sim.latent_velocity`.

    Returns
    -------
    callable
        kappa of shape (..., R) -> dkappa/dt of the same shape.

    Raises
    ------
    TypeError
        If ``perturbation`` is not a Perturbation (or None), or ``source`` is
        not one of the types above.
    ValueError
        If the perturbation names cell types or units the source does not
        have, gives per-unit values or units to a mean-field source, or
        ``labels`` do not match the network.

    Examples
    --------
    >>> from connector_sim import Gaussian
    >>> g = Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 5.0]], rank=1)  # bistable: kappa* = +-1.34
    >>> import numpy as np
    >>> perturbed_flow(g)(np.array([[1.0]])).round(4)  # unperturbed
    array([[0.2114]])
    >>> perturbed_flow(g, Perturbation.silence(fraction=0.5))(np.array([[1.0]])).round(4)
    array([[-0.3943]])
    """
    perturbation = _check_perturbation(perturbation)
    options = dict(activation=activation, order=order)
    if isinstance(source, (Gaussian, GaussianMixture)):
        if labels is not None:
            raise ValueError(
                f"labels are the cell types of a sampled network's neurons; a {type(source).__name__} defines "
                "its cell types as mixture components. Leave labels=None."
            )
        if perturbation.is_control:
            return latent_flow(source, v, **options)
        if perturbation.units is not None:
            raise ValueError(
                f"Perturbation {perturbation.name!r} names units by index, but a {type(source).__name__} has no "
                "units: name cell types (mixture components) or a fraction, or sample a network first."
            )
        if perturbation.value.ndim:
            raise ValueError(f"Perturbation {perturbation.name!r}: the mean field takes one scalar clamp value.")
        value = float(perturbation.value)
        if perturbation.cell_types is not None:
            n_types = source.n_components if isinstance(source, GaussianMixture) else 1
            missing = [k for k in perturbation.cell_types if not 0 <= k < n_types]
            if missing:
                raise ValueError(
                    f"Perturbation {perturbation.name!r} names cell type(s) {missing}, which do not exist. "
                    f"The {type(source).__name__}'s cell types are its components {list(range(n_types))}."
                )
            return latent_flow(source, v, clamp_components={k: value for k in perturbation.cell_types}, **options)
        base = latent_flow(source, v, **options)
        kept, constant = 1.0 - perturbation.fraction, perturbation.fraction * value * _mean_n(source)

        def fraction_flow(kappa):
            kappa = np.asarray(kappa, dtype=np.float64)
            return kept * (base(kappa) + kappa) - kappa + constant

        return fraction_flow
    if isinstance(source, LowRankRNN):
        n_neurons, n_T = source.n_neurons, source.n_T
    elif hasattr(source, "rows") and hasattr(source, "layout"):
        n_neurons, n_T = len(source.rows), source.rows[:, source.layout.n].T
    else:
        raise TypeError(
            "perturbed_flow needs a LowRankRNN, Empirical, Gaussian or GaussianMixture. "
            f"Got {type(source).__name__}."
        )
    mask, values = perturbation.unit_values(n_neurons, labels)
    if not mask.any():
        return latent_flow(source, v, **options)
    free = latent_flow(source, v, labels=mask.astype(np.int64), clamp_components={1: 0.0}, **options)
    constant = n_T[:, mask].astype(np.float64) @ values[mask] / n_neurons

    def clamped_flow(kappa):
        return free(kappa) + constant

    return clamped_flow


class PerturbationTable:
    """The tidy result of :func:`perturbation_study`: one row per run.

    Each row is a dict of scalars:

    ==============================  ==================================================
    ``perturbation``                name of the :class:`Perturbation`
    ``perturbation_index``          its position in the list given
    ``initial_condition``           index of kappa0 in the initial conditions
    ``seed``                        network / noise seed (-1 for mean-field runs)
    ``method``                      "simulation" or "mean field"
    ``n_neurons``                   network size (0 for mean-field runs)
    ``kappa0_j``, ``kappa_end_j``   initial and final latents, j = 0..R-1
    ``end_speed``                   ``|kappa_T - kappa_{T-1}| / dt`` at the last step
    ``settled``                     end_speed < settle_tol
    ``system``                      "perturbed" or "unperturbed": in force at the end
    ``reference``                   "mean field" or "network": whose fixed points
    ``n_fixed_points``              fixed points of that system in the box
    ``n_stable``                    of which stable
    ``attractor``                   index of the nearest stable fixed point in
                                    :meth:`fixed_points_of` (nearest of any kind
                                    when none is stable; -1 when there are none)
    ``attractor_j``                 its position (nan when none)
    ``attractor_stability``         its stability class
    ``attractor_distance``          ``|kappa_end - attractor|``
    ==============================  ==================================================

    Attributes
    ----------
    rows : list of dict
    fixed_points : dict
        (system name, seed or -1) -> list of :class:`~connector_sim.FixedPoint`;
        the system name is a perturbation's name or :data:`UNPERTURBED`.
    trajectories : dict or None
        (perturbation_index, seed) -> kappa of shape (n_initial, n_steps + 1, R),
        when the study kept them.
    interrupted : bool
        True when the study stopped early (KeyboardInterrupt): the rows are those done.

    Raises
    ------
    KeyError
        From :meth:`column`, :meth:`vectors` and :meth:`select`: a column that
        does not exist.

    Examples
    --------
    >>> from connector_sim import Gaussian
    >>> g = Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 5.0]], rank=1)
    >>> table = perturbation_study(g, [Perturbation(name="control")], [[0.5], [-0.5]], n_steps=100)
    >>> len(table), table.select(initial_condition=1).vectors("kappa_end").round(1)
    (2, array([[-1.3]]))
    """

    def __init__(self, rows=None, fixed_points=None, trajectories=None, interrupted=False):
        self.rows = [] if rows is None else list(rows)
        self.fixed_points = {} if fixed_points is None else fixed_points
        self.trajectories = trajectories
        self.interrupted = interrupted

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __repr__(self):
        state = ", interrupted" if self.interrupted else ""
        return f"PerturbationTable({len(self.rows)} rows, columns {self.columns}{state})"

    @property
    def columns(self):
        """Column names, in row order."""
        return list(self.rows[0]) if self.rows else []

    def column(self, name):
        """One column as an array (the dtype of :meth:`to_records`)."""
        if name not in self.columns:
            raise KeyError(f"No column {name!r}. The columns are {self.columns}.")
        return self.to_records()[name]

    def vectors(self, prefix):
        """The columns ``prefix_0 .. prefix_{R-1}`` stacked: shape (n_rows, R).

        For instance ``table.vectors("kappa_end")``.
        """
        names = [name for name in self.columns if name.startswith(prefix + "_") and name[len(prefix) + 1:].isdigit()]
        if not names:
            raise KeyError(f"No columns {prefix}_0, {prefix}_1, ... in {self.columns}.")
        names.sort(key=lambda name: int(name[len(prefix) + 1:]))
        return np.array([[row[name] for name in names] for row in self.rows], dtype=np.float64).reshape(-1, len(names))

    def select(self, **equal):
        """The rows whose columns equal the given values, as a table (e.g. ``select(perturbation="none")``)."""
        unknown = set(equal) - set(self.columns)
        if unknown:
            raise KeyError(f"No column(s) {sorted(unknown)}. The columns are {self.columns}.")
        rows = [row for row in self.rows if all(row[key] == value for key, value in equal.items())]
        return PerturbationTable(rows, self.fixed_points, self.trajectories, self.interrupted)

    def fixed_points_of(self, row):
        """The fixed points a row's ``attractor`` indexes."""
        system = row["perturbation"] if row["system"] == "perturbed" else UNPERTURBED
        # Per seed when each seed sampled its own network, else shared (-1).
        key = (system, row["seed"])
        return self.fixed_points[key if key in self.fixed_points else (system, -1)]

    def to_records(self):
        """The table as a NumPy structured array (one record per row).

        Integer and bool columns keep their type, floats are float64,
        strings are unicode of the longest entry.
        """
        if not self.rows:
            return np.zeros(0, dtype=[])
        fields = []
        for name in self.columns:
            values = [row[name] for row in self.rows]
            if all(isinstance(value, (bool, np.bool_)) for value in values):
                fields.append((name, bool))
            elif all(isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) for value in values):
                fields.append((name, np.int64))
            elif all(isinstance(value, numbers.Real) for value in values):
                fields.append((name, np.float64))
            else:
                fields.append((name, f"U{max(len(str(value)) for value in values)}"))
        return np.array([tuple(row[name] for name, _ in fields) for row in self.rows], dtype=fields)

    def to_csv(self, path):
        """Write the table as CSV (header row, one line per run), atomically.

        Floats are written with repr (round-trip exact).
        """
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([repr(float(value)) if isinstance(value, float) else value for value in row.values()])
        write_atomic(path, text.getvalue().encode())


def _source_parts(source, n_neurons, labels):
    """(distribution or None, fixed network or None, labels, mode) of a study's source."""
    if isinstance(source, (Gaussian, GaussianMixture)):
        if labels is not None:
            raise ValueError(
                "labels are for a LowRankRNN source; a distribution's cell types are its mixture components "
                "(sampled networks get their labels from the sampler). Leave labels=None."
            )
        return source, None, None, "mean field" if n_neurons is None else "simulation"
    if n_neurons is not None:
        raise ValueError(
            f"n_neurons samples networks from a distribution; the source here is a {type(source).__name__} of "
            "fixed size. Leave n_neurons=None."
        )
    if isinstance(source, LowRankRNN):
        if labels is not None:
            labels = _check_labels(labels, source.n_neurons, "labels")
        return None, source, labels, "simulation"
    if hasattr(source, "network") and hasattr(source, "distribution") and hasattr(source, "labels"):
        if labels is not None:
            raise ValueError("A SyntheticNetwork carries its own labels. Leave labels=None.")
        return source.distribution, source.network, source.labels, "simulation"
    raise TypeError(
        "perturbation_study needs a LowRankRNN, a SyntheticNetwork, a Gaussian / GaussianMixture (mean field, "
        f"or sampled networks with n_neurons=) or the path of a saved network. Got {type(source).__name__}."
    )


def _default_box(initial_conditions):
    """Each axis of the initial conditions, widened by a quarter of its range plus 0.5 on each side."""
    low, high = initial_conditions.min(axis=0), initial_conditions.max(axis=0)
    margin = 0.25 * (high - low) + 0.5
    return np.column_stack([low - margin, high + margin])


def _euler_runs(flow, base, perturbation, kappa0, n_steps, alpha):
    """kappa_{t+1} = kappa_t + alpha F_t(kappa_t), F_t the perturbed flow inside the window."""
    out = np.empty((len(kappa0), n_steps + 1, kappa0.shape[1]))
    out[:, 0] = kappa = kappa0
    stop = n_steps if perturbation.stop is None else perturbation.stop
    for t in range(n_steps):
        inside = not perturbation.is_control and perturbation.start <= t < stop
        kappa = kappa + alpha * (flow if inside else base)(kappa)
        out[:, t + 1] = kappa
    return out


def _check_study_memory(n_initial, n_steps, rank, n_kept, distribution, n_neurons, dtype, network, noise_std):
    """Refuse, before any run, a study whose trajectories, sampled networks or states would not fit."""
    n_initial, n_steps, rank, n_kept = int(n_initial), int(n_steps), int(rank), int(n_kept)
    needed = 8 * n_initial * (n_steps + 1) * rank * (n_kept + 1)  # the kept runs and the one running
    size = n_neurons if network is None else network.n_neurons
    if distribution is not None:
        layout = distribution.layout
        needed += int(n_neurons) * ((2 * layout.rank + layout.n_inputs + 1) * check_dtype(dtype).itemsize + 8)
    if size is not None and noise_std > 0:
        needed += 16 * n_initial * int(size)  # the full-path state of a noisy simulation
    check_allocation(
        needed, f"perturbation_study ({n_initial} initial condition(s), {n_steps} steps, rank {rank}"
        + (f", {n_kept} kept trajectories" if n_kept > 1 else "") + ")",
        "Use fewer steps (n_steps), fewer initial conditions or a smaller n_neurons"
        + (", or keep_trajectories=False." if n_kept > 1 else "."),
    )


def _progress_printer(done, total, description):
    print(f"[perturbation_study] {done}/{total} runs: {description}", file=sys.stderr, flush=True)


def perturbation_study(source, perturbations, initial_conditions, seeds=(0,), *, n_steps=400, dt=None,
                       n_neurons=None, labels=None, noise_std=0.0, reference="auto", box=None,
                       fixed_point_options=None, settle_tol=1e-3, backend="auto", n_threads="auto", dtype=np.float64,
                       keep_trajectories=False, progress=None, scheduler=None):
    """Run perturbations x initial conditions x seeds and tabulate where each run ends.

    Each run follows the latent recursion (theory eq. 3) with the
    perturbation's clamp in force at steps start <= t < stop::

        kappa_{t+1} = (1 - alpha) kappa_t + alpha E[n phi_clamped(m^T kappa_t + b)],  alpha = dt / tau

    with E the average over the N sampled neurons (method "simulation",
    through :func:`connector_sim.simulate`, all initial conditions of one
    perturbation and seed in one batched call) or the mean field (method
    "mean field", the expectation under the distribution, theory eq. 4). Each
    end state is then matched to the nearest stable fixed point of the
    system in force at the last step (the perturbed one, or the unperturbed
    one after a window), found by :func:`connector_sim.find_fixed_points` on
    the mean field of the distribution when there is one and the
    perturbation names cell types or a fraction ("mean field" reference),
    else on the perturbed flow of the sampled network itself ("network").

    Parameters
    ----------
    source : Gaussian, GaussianMixture, LowRankRNN, SyntheticNetwork, str or os.PathLike
        - a distribution with ``n_neurons=None``: mean-field runs (``seeds``
          unused, seed -1 in the rows);
        - a distribution with ``n_neurons``: one network sampled per seed
          (``random_state=seed``, with its cell-type labels);
        - a network (``labels`` for cell-type perturbations) or a
          :class:`~connector_sim.SyntheticNetwork` (its network, labels and
          ground-truth distribution);
        - the path of a network saved by
          :func:`connector_sim.data.save_network` (its ``labels`` array, if
          any, gives the cell types unless ``labels=`` is given): read here
          to check it, and by path on each worker
          (:class:`connector_sim.parallel.NetworkFile`), so the tasks carry
          the path, not the arrays. The same table as the network loaded
          in memory, bit for bit.
    perturbations : sequence of Perturbation
        Names must be distinct. Include ``Perturbation()`` for a control.
    initial_conditions : array-like of shape (n_initial, R) or (R,)
        kappa_0 of the runs.
    seeds : sequence of int, default=(0,)
        Network sampling (when ``n_neurons``) and private-noise keys.
    n_steps : int, default=400
    dt : float, optional
        Default tau / 10 (alpha = 0.1).
    n_neurons : int, optional
        Size of the networks sampled from a distribution source.
    labels : array-like of int of shape (N,), optional
        Cell types of a LowRankRNN source's neurons.
    noise_std : float, default=0
        Private noise of the simulations (see :func:`connector_sim.simulate`).
    reference : {"auto", "mean field", "network"}, default="auto"
        Whose fixed points the end states are matched to (see above).
    box : array-like of shape (R, 2), optional
        Where to look for fixed points. Default: the span of the initial
        conditions widened by a quarter of it plus 0.5 on each side.
    fixed_point_options : dict, optional
        Passed to :func:`connector_sim.find_fixed_points` (``n_starts``,
        ``marginal_tol``, ...).
    settle_tol : float, default=1e-3
        A run has ``settled`` when its final speed ``|dkappa/dt|`` is below this.
    backend, n_threads, dtype
        Simulation backend and threads (as in :func:`connector_sim.simulate`;
        default "auto"); dtype of the sampled networks.
    keep_trajectories : bool, default=False
        Keep every kappa trajectory in ``table.trajectories``.
    progress : None, bool or callable, default=None
        True prints a line per batch to stderr; a callable is called as
        ``progress(done_runs, total_runs, description)`` after each batch.
    scheduler : None, str or dask.distributed.Client, default=None
        Where the batches run: None / "serial", "processes", "dask" (a local
        cluster for this call), "dask://host:port" or a Client; see
        :mod:`connector_sim.parallel`. One task per (seed, perturbation): it
        carries the distribution and seed (the worker samples the network),
        or the path of a network file (the worker reads it, once), or, for
        a network in memory, the network goes once to each worker. The
        table is the serial one, bit for bit.

    Returns
    -------
    PerturbationTable
        One row per (seed, perturbation, initial condition). On
        KeyboardInterrupt the rows done so far are returned (the batches
        that finished, in table order; the others are cancelled), with
        ``interrupted = True`` (and a RuntimeWarning).

    Raises
    ------
    TypeError
        If ``perturbations`` is not a non-empty sequence of Perturbation
        objects, ``source`` is not a network, distribution or path, or an int
        option (``n_steps``, ``seeds``, ``n_neurons``, ``n_threads``) is not
        an int.
    FileNotFoundError
        If ``source`` is a path that names no file.
    ValueError
        If ``source`` is a file that does not hold a network saved by
        ``save_network``, two perturbations share a name, ``initial_conditions`` is not of
        shape (n_initial, R), ``seeds`` is empty, or an option is out of range
        or inconsistent with the source (e.g. ``n_neurons`` for a network).
    TooLargeError
        If the runs would not fit in memory.

    Examples
    --------
    >>> from connector_sim import Gaussian
    >>> g = Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 5.0]], rank=1)  # bistable: kappa* = +-1.34
    >>> table = perturbation_study(g, [Perturbation(name="control"), Perturbation.silence(fraction=0.5)],
    ...                            [[0.5], [-0.5]], n_steps=100)
    >>> table.column("perturbation").tolist()
    ['control', 'control', 'silence 50% of units', 'silence 50% of units']
    >>> table.vectors("kappa_end").round(1)  # half the units silenced: no bistability, runs decay
    array([[ 1.3],
           [-1.3],
           [ 0.2],
           [-0.2]])
    """
    check_scheduler(scheduler, "perturbation_study")
    network_file = None
    if isinstance(source, (str, os.PathLike)):
        # A saved network: read here (to check it and the perturbations), and by path on each worker.
        network_file = NetworkFile(source, owner="perturbation_study")
        source, extra = network_file.load()
        if labels is None and "labels" in extra:
            labels = _check_labels(extra["labels"], source.n_neurons, f"{network_file.path!r}: 'labels'")
            file_labels = True
        else:
            file_labels = False
    distribution, fixed_network, fixed_labels, method = _source_parts(source, n_neurons, labels)
    if n_neurons is not None:
        n_neurons = check_int(n_neurons, "n_neurons", minimum=1, owner="perturbation_study")
    if isinstance(perturbations, Perturbation):
        perturbations = [perturbations]
    perturbations = list(perturbations)
    if not perturbations or not all(isinstance(p, Perturbation) for p in perturbations):
        raise TypeError("perturbations must be a non-empty sequence of Perturbation objects.")
    names = [p.name for p in perturbations]
    duplicates = sorted({name for name in names if names.count(name) > 1} | ({UNPERTURBED} & set(names)))
    if duplicates:
        raise ValueError(
            f"Perturbation names must be distinct (and not {UNPERTURBED!r}). Repeated or reserved: {duplicates}. "
            "Give each a name=."
        )
    rank = distribution.layout.rank if distribution is not None else fixed_network.rank
    kappa0 = np.asarray(initial_conditions)
    if kappa0.ndim == 1:
        kappa0 = kappa0[None]
    kappa0 = check_array(kappa0, "initial_conditions", ndim=2, dtype=np.float64, shape=(None, rank))
    if kappa0.shape[0] == 0:
        raise ValueError(
            f"The 'initial_conditions' parameter of perturbation_study must hold at least one latent state of "
            f"dimension {rank}. Got an empty array of shape {kappa0.shape} instead."
        )
    if method == "mean field":
        seeds = [-1]
    else:
        seeds = [check_int(seed, "seeds", minimum=0, owner="perturbation_study") for seed in np.atleast_1d(seeds)]
        if not seeds:
            raise ValueError("seeds must hold at least one int.")
    n_steps = check_int(n_steps, "n_steps", minimum=1, owner="perturbation_study")
    n_threads = check_n_threads(n_threads, "perturbation_study", allow_auto=True)
    tau = fixed_network.tau if fixed_network is not None else 1.0
    dt = tau / 10 if dt is None else check_positive_scalar(dt, "dt", owner="perturbation_study")
    noise_std = check_nonnegative_scalar(noise_std, "noise_std", owner="perturbation_study")
    if method == "mean field" and noise_std:
        raise ValueError("noise_std needs simulations; mean-field runs are deterministic. Give n_neurons= to sample.")
    settle_tol = check_positive_scalar(settle_tol, "settle_tol", owner="perturbation_study")
    if reference not in ("auto", "mean field", "network"):
        raise ValueError(f"reference must be 'auto', 'mean field' or 'network'. Got {reference!r}.")
    if reference == "mean field" and distribution is None:
        raise ValueError("reference='mean field' needs a distribution (a Gaussian, GaussianMixture or SyntheticNetwork).")
    if reference == "network" and method == "mean field":
        raise ValueError("reference='network' needs sampled networks: give n_neurons= with a distribution source.")
    box = _default_box(kappa0) if box is None else _check_box(box)
    if box.shape[0] != rank:
        raise ValueError(f"box must have shape ({rank}, 2) for rank-{rank} latents. Got shape {box.shape}.")
    fixed_point_options = dict(fixed_point_options or {})
    if progress is True:
        progress = _progress_printer
    elif progress is not None and progress is not False and not callable(progress):
        raise TypeError(f"progress must be None, a bool or a callable. Got {progress!r}.")
    check_scheduler(scheduler, "perturbation_study")

    def uses_mean_field(perturbation):
        if reference == "network":
            return False
        expressible = perturbation.units is None
        if reference == "mean field" and not expressible:
            raise ValueError(
                f"Perturbation {perturbation.name!r} names units by index, which the mean field cannot express. "
                "Use reference='network' or 'auto'."
            )
        return distribution is not None and expressible

    # Sizes before any work.
    _check_study_memory(len(kappa0), n_steps, rank, len(seeds) * len(perturbations) if keep_trajectories else 1,
                        distribution if method == "simulation" and fixed_network is None else None, n_neurons,
                        dtype, fixed_network, noise_std)
    # Fail before any run on a perturbation naming units that do not exist.
    for perturbation in perturbations:
        if fixed_network is not None:
            perturbation.unit_values(fixed_network.n_neurons, fixed_labels)
        elif perturbation.units is not None and method == "simulation":
            perturbation.unit_values(n_neurons)
        else:
            perturbed_flow(distribution, perturbation)
        uses_mean_field(perturbation)

    options = dict(n_steps=n_steps, dt=dt, tau=tau, noise_std=noise_std, backend=backend, n_threads=n_threads,
                   dtype=dtype, settle_tol=settle_tol, box=box, fixed_point_options=fixed_point_options,
                   reference=reference, n_neurons=n_neurons, method=method, token=uuid.uuid4().hex)
    # What every task needs, sent once to each worker; a task itself is (seed, perturbation index).
    # A network file goes as its path (and checksum): the workers read it, labels included.
    context = (distribution, fixed_network if network_file is None else network_file,
               None if network_file is not None and file_labels else fixed_labels, perturbations, kappa0, options)
    tasks = [(seed, index) for seed in seeds for index in range(len(perturbations))]
    total = len(tasks) * len(kappa0)
    table = PerturbationTable(fixed_points={}, trajectories={} if keep_trajectories else None)

    def describe(task):
        seed, index = task
        return f"{perturbations[index].name}{'' if seed < 0 else f', seed {seed}'} ({method})"

    def runs_progress(done, n_tasks, description):
        progress(done * len(kappa0), total, description)

    try:
        results = run_tasks(_study_task, tasks, scheduler=scheduler, shared=context, describe=describe,
                            progress=runs_progress if progress else None, owner="perturbation_study")
        finished = dict(enumerate(results))
    except SweepInterrupted as exc:
        finished = exc.results
        table.interrupted = True
    finally:  # the serial run's cache holds a network: let it go
        with _STUDY_CACHE_LOCK:
            _STUDY_CACHE.pop(options["token"], None)
        if network_file is not None:
            NetworkFile.forget(network_file.path)
    for task_index in sorted(finished):
        rows, kappa, key, points = finished[task_index]
        table.rows.extend(rows)
        table.fixed_points.setdefault(key, points)
        if keep_trajectories:
            seed, index = tasks[task_index]
            table.trajectories[(index, seed)] = kappa
    if table.interrupted:
        warnings.warn(
            f"perturbation_study was interrupted after {len(table.rows)} of {total} runs; returning the rows done so "
            "far (table.interrupted is True).",
            RuntimeWarning,
            stacklevel=2,
        )
    return table


# Per process: the last studies' sampled network and fixed points, reused by their next tasks there
# (a worker runs many tasks of one study). Keyed by the study's token; a lock for workers with threads.
_STUDY_CACHE = {}
_STUDY_CACHE_LOCK = threading.Lock()


def _study_cache(token):
    with _STUDY_CACHE_LOCK:
        entry = _STUDY_CACHE.get(token)
        if entry is None:
            entry = _STUDY_CACHE[token] = {"network": None, "fixed_points": {}}
            while len(_STUDY_CACHE) > 2:
                del _STUDY_CACHE[next(iter(_STUDY_CACHE))]
        return entry


def _uses_mean_field(perturbation, distribution, reference):
    return reference != "network" and distribution is not None and perturbation.units is None


def _study_task(task, context):
    """One (seed, perturbation) batch of perturbation_study: (rows, kappa, fixed-point key, fixed points).

    Depends on the task and the study alone (the network is sampled with
    ``random_state=seed``, the noise keyed by seed, the fixed-point search by
    its own ``random_state``), so it gives the same numbers on any worker.
    """
    seed, index = task
    distribution, network, labels, perturbations, kappa0, options = context
    if isinstance(network, NetworkFile):  # read once per process (cached), checked against its checksum
        network, extra = network.load()
        labels = extra.get("labels") if labels is None else labels
    method, n_steps, dt = options["method"], options["n_steps"], options["dt"]
    cache = _study_cache(options["token"])
    if method == "simulation" and network is None:
        entry = cache["network"]  # one read: another thread may replace it
        if entry is None or entry[0] != seed:
            entry = (seed, distribution.sample(options["n_neurons"], seed, return_labels=True, dtype=options["dtype"]))
            cache["network"] = entry
        network, labels = entry[1]
    perturbation = perturbations[index]
    if method == "simulation":
        clamp = perturbation.clamp_spec(network.n_neurons, labels)
        kappa = simulate(network, n_steps, dt=dt, kappa0=kappa0, noise_std=options["noise_std"], seed=seed,
                         clamp=clamp, backend=options["backend"], n_threads=options["n_threads"]).kappa
    else:
        kappa = _euler_runs(perturbed_flow(distribution, perturbation), perturbed_flow(distribution),
                            perturbation, kappa0, n_steps, dt / options["tau"])
    perturbed = perturbation.active_at_end(n_steps)
    # The fixed points of the system in force at the last step.
    use_mean_field = _uses_mean_field(perturbation, distribution, options["reference"])
    system = perturbation.name if perturbed else UNPERTURBED
    key = (system, seed if not use_mean_field and options["method"] == "simulation"
           and context[1] is None else -1)
    points = cache["fixed_points"].get(key)
    if points is None:
        applied = perturbation if perturbed else None
        flow = (perturbed_flow(distribution, applied) if use_mean_field
                else perturbed_flow(network, applied, labels=labels))
        points = cache["fixed_points"][key] = find_fixed_points(flow, options["box"], **options["fixed_point_options"])
    rows = _rows(perturbation, index, seed, method, 0 if method == "mean field" else network.n_neurons, kappa0,
                 kappa, dt, options["settle_tol"], perturbed, "mean field" if use_mean_field else "network", points)
    return rows, kappa, key, points


def _rows(perturbation, index, seed, method, n_neurons, kappa0, kappa, dt, settle_tol, perturbed, reference,
          points):
    """The table rows of one batch of runs."""
    end = kappa[:, -1]
    speed = np.linalg.norm(kappa[:, -1] - kappa[:, -2], axis=1) / dt
    rank = end.shape[1]
    candidates = [i for i, point in enumerate(points) if point.stable] or list(range(len(points)))
    if candidates:
        positions = np.array([points[i].position for i in candidates])
        distance = np.linalg.norm(end[:, None] - positions[None], axis=-1)
        nearest = np.argmin(distance, axis=1)
    rows = []
    for trial in range(len(end)):
        row = {"perturbation": perturbation.name, "perturbation_index": index, "initial_condition": trial,
               "seed": int(seed), "method": method, "n_neurons": int(n_neurons)}
        row.update({f"kappa0_{j}": float(kappa0[trial, j]) for j in range(rank)})
        row.update({f"kappa_end_{j}": float(end[trial, j]) for j in range(rank)})
        row.update({"end_speed": float(speed[trial]), "settled": bool(speed[trial] < settle_tol),
                    "system": "perturbed" if perturbed else "unperturbed", "reference": reference,
                    "n_fixed_points": len(points), "n_stable": sum(point.stable for point in points)})
        if candidates:
            point = points[candidates[nearest[trial]]]
            row["attractor"] = candidates[nearest[trial]]
            row.update({f"attractor_{j}": float(point.position[j]) for j in range(rank)})
            row["attractor_stability"] = point.stability
            row["attractor_distance"] = float(distance[trial, nearest[trial]])
        else:
            row["attractor"] = -1
            row.update({f"attractor_{j}": math.nan for j in range(rank)})
            row["attractor_stability"] = ""
            row["attractor_distance"] = math.nan
        rows.append(row)
    return rows
