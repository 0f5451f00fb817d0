"""Trial-structured neural data: rates or spike counts, inputs and trial lengths.

Arrays are laid out trials x time x neurons, padded to the longest trial, with
a ``lengths`` vector giving each trial's number of valid time bins; inputs
are trials x time x D on the same bins. Frame t of the inputs, u_t, acts on
the network state of the next frame (the simulator's convention).

``.npz`` files use the keys ``spikes`` (n_trials, n_times, n_neurons),
``externalinputs`` (n_trials, n_times, D; D = 0 when there are none) and
``lengths`` (n_trials,), the layout the FINDR toolkit reads for the rat
frontal-cortex recordings.

Networks (:func:`save_network` / :func:`load_network`) and any other named
arrays (:func:`save_arrays` / :func:`load_arrays`: latents, simulation
results) are stored in ``.npz`` files as well, written atomically and read
without pickle.

NWB files are read with pynwb (an optional dependency, ``pip install
connector-sim[nwb]``), imported only by :func:`read_nwb`.

Pure NumPy: importing this module does not import torch or pynwb.
"""

import math
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from ._files import write_atomic
from ._memory import check_allocation, format_bytes
from ._validation import check_positive_scalar
from .activations import BUILTIN_ACTIVATIONS
from .network import LowRankRNN

KINDS = ("rates", "counts")


@dataclass
class TrialData:
    """Validated trial-structured data (build it with :func:`as_trial_data`).

    Attributes
    ----------
    spikes : ndarray of shape (n_trials, n_times, n_neurons), float64
        Rates or spike counts; bins at or beyond a trial's length are 0.
    inputs : ndarray of shape (n_trials, n_times, n_inputs), float64, or None
        External inputs u_t; 0 beyond each trial's length.
    lengths : ndarray of shape (n_trials,), int64
        Valid bins of each trial, 1 <= lengths[k] <= n_times.
    kind : {"rates", "counts"}
    dt : float or None
        Bin width (seconds for data read from NWB), when known.
    """

    spikes: np.ndarray
    inputs: np.ndarray
    lengths: np.ndarray
    kind: str = "rates"
    dt: float = None

    @property
    def n_trials(self):
        return self.spikes.shape[0]

    @property
    def n_times(self):
        return self.spikes.shape[1]

    @property
    def n_neurons(self):
        return self.spikes.shape[2]

    @property
    def n_inputs(self):
        return 0 if self.inputs is None else self.inputs.shape[2]

    def mask(self):
        """Valid bins, shape (n_trials, n_times): ``mask[k, t] = t < lengths[k]``."""
        return np.arange(self.n_times)[None, :] < self.lengths[:, None]

    def trial(self, k):
        """Trial k without padding: (spikes (L, N), inputs (L, D) or None)."""
        length = self.lengths[k]
        return self.spikes[k, :length], None if self.inputs is None else self.inputs[k, :length]

    def save_npz(self, path):
        """Write ``path`` with keys ``spikes``, ``externalinputs``, ``lengths`` (see :func:`save_npz`)."""
        save_npz(path, self)


def _error(field, trial, what):
    where = f" of trial {trial}" if trial is not None else ""
    return ValueError(f"{field}{where} {what}")


def _stack(value, field):
    """Pad a list of per-trial (L_k, F) arrays into (n_trials, max L, F); also return the lengths."""
    trials = []
    for k, trial in enumerate(value):
        try:
            trial = np.asarray(trial)
            complex_values = np.iscomplexobj(trial)
            if not complex_values:
                trial = trial.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise _error(field, k, f"must be a numeric (n_times, n_features) array: {exc}") from exc
        if complex_values:
            raise TypeError(f"{field} of trial {k} must be real. Got dtype {trial.dtype}: give the real part (or "
                            "the magnitude) explicitly.")
        if trial.ndim != 2:
            raise _error(field, k, f"must be 2-D (n_times, n_features). Got shape {trial.shape}.")
        trials.append(trial)
    if not trials:
        raise ValueError(f"{field} holds no trials. Give at least one trial.")
    width = trials[0].shape[1]
    for k, trial in enumerate(trials):
        if trial.shape[1] != width:
            raise _error(
                field, k,
                f"has {trial.shape[1]} columns, but trial 0 has {width}: every trial must have the same "
                "number of neurons (or inputs). Ragged trials may differ only in length.",
            )
    lengths = np.array([len(trial) for trial in trials], dtype=np.int64)
    padded = np.zeros((len(trials), lengths.max(), width))
    for k, trial in enumerate(trials):
        padded[k, : len(trial)] = trial
    return padded, lengths


def _as_3d(value, field):
    """(array of shape (n_trials, n_times, F), per-trial lengths if value was a ragged list, else None)."""
    if isinstance(value, (list, tuple)):
        return _stack(value, field)
    array = np.asarray(value)
    if array.dtype == object:
        return _stack(list(array), field)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise TypeError(f"{field} must be a real numeric array. Got dtype {array.dtype}.")
    if array.ndim != 3:
        raise ValueError(
            f"{field} must be 3-D (n_trials, n_times, n_features), or a list of (n_times, n_features) "
            f"arrays, one per trial. Got an array of shape {array.shape}."
        )
    return array.astype(np.float64), None


def _check_lengths(lengths, n_trials, n_times):
    values = np.asarray(lengths)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise TypeError(f"lengths must be integers (numbers of time bins). Got dtype {values.dtype}.")
    if values.shape != (n_trials,):
        raise ValueError(f"lengths must have one entry per trial, shape ({n_trials},). Got shape {values.shape}.")
    if not np.issubdtype(values.dtype, np.integer):
        rounded = np.round(values.astype(np.float64)) if np.issubdtype(values.dtype, np.number) else None
        if rounded is None or not np.all(rounded == values):
            raise TypeError(f"lengths must be integers (numbers of time bins). Got {values!r}.")
        values = rounded
    values = values.astype(np.int64)
    for k, length in enumerate(values):
        if not 1 <= length <= n_times:
            raise _error("lengths", k, f"must be in [1, {n_times}] (the padded number of time bins). Got {length}.")
    return values


def _check_values(array, lengths, field, counts):
    """Finite values (and non-negative integer counts) within each trial's valid bins."""
    for k, length in enumerate(lengths):
        block = array[k, :length]
        bad = ~np.isfinite(block)
        if bad.any():
            t, i = np.argwhere(bad)[0]
            raise _error(
                field, k,
                f"contains a non-finite value ({block[t, i]}) at time bin {t}, column {i} "
                f"({int(bad.sum())} in this trial). Remove or interpolate missing data, or shorten the trial "
                "with `lengths`.",
            )
        if counts:
            negative = block < 0
            if negative.any():
                t, i = np.argwhere(negative)[0]
                raise _error(field, k, f"holds a negative spike count ({block[t, i]}) at time bin {t}, neuron {i}. "
                             "Spike counts must be >= 0.")
            fractional = block != np.round(block)
            if fractional.any():
                t, i = np.argwhere(fractional)[0]
                raise _error(field, k, f"holds a non-integer spike count ({block[t, i]}) at time bin {t}, neuron {i}. "
                             "Use kind='rates' for smoothed or averaged data.")


def as_trial_data(spikes, inputs=None, lengths=None, *, kind="rates", dt=None):
    """Validate trial-structured data and pad it into :class:`TrialData`.

    Parameters
    ----------
    spikes : array-like of shape (n_trials, n_times, n_neurons), or list of (L_k, n_neurons) arrays
        Rates or spike counts. Bins at or beyond a trial's length may hold
        anything (NaN padding included); they are set to 0.
    inputs : array-like of shape (n_trials, n_times, D), or list of (L_k, D) arrays, optional
        External inputs on the same bins as ``spikes``.
    lengths : array-like of int of shape (n_trials,), optional
        Valid bins per trial. Default: all n_times bins, or the lengths of the
        per-trial arrays when lists are given.
    kind : {"rates", "counts"}, default="rates"
        "counts" also requires non-negative integers.
    dt : float, optional
        Bin width.

    Returns
    -------
    TrialData

    Raises
    ------
    ValueError
        Naming the trial and the field: trials with different numbers of
        neurons or inputs, NaN or inf within a trial, negative or fractional
        spike counts, inputs of another length than the spikes, lengths out
        of range.

    Examples
    --------
    >>> import numpy as np
    >>> data = as_trial_data([np.ones((3, 2)), np.ones((5, 2))])  # two trials of 3 and 5 bins
    >>> data.spikes.shape, data.lengths
    ((2, 5, 2), array([3, 5]))
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}. Got {kind!r}.")
    if dt is not None:
        dt = check_positive_scalar(dt, "dt", owner="as_trial_data")
    spikes, list_lengths = _as_3d(spikes, "spikes")
    n_trials, n_times, n_neurons = spikes.shape
    if n_trials == 0 or n_times == 0 or n_neurons == 0:
        raise ValueError(f"spikes must hold at least one trial, time bin and neuron. Got shape {spikes.shape}.")
    if lengths is None:
        lengths = list_lengths if list_lengths is not None else np.full(n_trials, n_times, np.int64)
    else:
        lengths = _check_lengths(lengths, n_trials, n_times)
        if list_lengths is not None and np.any(lengths > list_lengths):
            k = int(np.argmax(lengths > list_lengths))
            raise _error("lengths", k, f"is {lengths[k]}, but spikes of that trial has only {list_lengths[k]} bins.")
    _check_values(spikes, lengths, "spikes", kind == "counts")
    if inputs is not None:
        inputs, input_lengths = _as_3d(inputs, "externalinputs")
        if inputs.shape[0] != n_trials:
            raise ValueError(
                f"externalinputs must have one entry per trial: spikes has {n_trials} trials, externalinputs "
                f"has {inputs.shape[0]}."
            )
        if input_lengths is not None:
            for k in range(n_trials):
                if input_lengths[k] != lengths[k]:
                    raise _error("externalinputs", k, f"has {input_lengths[k]} time bins, but spikes has "
                                 f"{lengths[k]}: give inputs on the same bins as the spikes.")
        elif np.any(lengths > inputs.shape[1]):
            short = int(np.argmax(lengths > inputs.shape[1]))
            raise _error("externalinputs", short, f"has {inputs.shape[1]} time bins, but spikes has "
                         f"{lengths[short]}: give inputs on the same bins as the spikes.")
        if inputs.shape[1] != n_times:
            resized = np.zeros((n_trials, n_times, inputs.shape[2]))
            width = min(n_times, inputs.shape[1])
            resized[:, :width] = inputs[:, :width]
            inputs = resized
        _check_values(inputs, lengths, "externalinputs", False)
        if inputs.shape[2] == 0:
            inputs = None
    mask = np.arange(n_times)[None, :] < lengths[:, None]
    spikes = np.where(mask[..., None], spikes, 0.0)
    if inputs is not None:
        inputs = np.where(mask[..., None], inputs, 0.0)
    return TrialData(spikes, inputs, lengths, kind, dt)


def save_npz(path, data):
    """Write trial data to ``path`` (``.npz``) atomically.

    Keys: ``spikes`` (n_trials, n_times, n_neurons), ``externalinputs``
    (n_trials, n_times, D), ``lengths`` (n_trials,). The file is written to
    a temporary file in the same folder and moved into place with
    ``os.replace``, so a reader never sees a half-written file.

    Parameters
    ----------
    path : str or os.PathLike
    data : TrialData

    Raises
    ------
    TypeError
        If ``data`` is not a TrialData.
    ValueError
        If ``path`` does not end in ".npz".

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "trials.npz")
    >>> save_npz(path, as_trial_data(np.ones((2, 4, 3))))
    >>> load_npz(path).spikes.shape
    (2, 4, 3)
    >>> folder.cleanup()
    """
    if not isinstance(data, TrialData):
        raise TypeError(f"data must be a TrialData (see as_trial_data). Got {type(data).__name__}.")
    inputs = data.inputs if data.inputs is not None else np.zeros(data.spikes.shape[:2] + (0,))
    save_arrays(path, spikes=data.spikes, externalinputs=inputs, lengths=data.lengths)


def save_arrays(path, /, **arrays):
    """Write named arrays to ``path`` (``.npz``) atomically.

    The archive is written to a temporary file in the same folder and moved
    into place with ``os.replace``, so a reader never sees a half-written
    file and an interrupted write leaves the previous file. Object arrays
    are refused: every file must load with ``allow_pickle=False``.

    Parameters
    ----------
    path : str or os.PathLike
        Must end in ``.npz``.
    **arrays : array-like
        Numeric, bool or string arrays (scalars are stored as 0-d arrays).

    Raises
    ------
    ValueError
        If ``path`` does not end in ".npz".
    TypeError
        If an array has dtype object (it would only load with pickle).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "arrays.npz")
    >>> save_arrays(path, x=np.arange(4))
    >>> load_arrays(path, ("x",))["x"], npz_nbytes(path)
    (array([0, 1, 2, 3]), 32)
    >>> folder.cleanup()
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"path must end in '.npz'. Got {path!r}.")
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in arrays.items():
        if value.dtype.hasobject:
            raise TypeError(f"Array {name!r} has dtype object, which only loads with pickle. Give a numeric, bool "
                            "or string array.")
    write_atomic(path, lambda stream: np.savez(stream, **arrays))


def npz_nbytes(path):
    """The bytes the arrays of an ``.npz`` file take once loaded, read from the ``.npy`` headers only.

    Each member's header gives its shape and dtype (shape x itemsize bytes);
    no array data is read. Returns None when the file is not a zip archive
    or a header cannot be read (:func:`load_arrays` then reports the file as
    unreadable).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "arrays.npz")
    >>> save_arrays(path, x=np.zeros((10, 10)))
    >>> npz_nbytes(path)
    800
    >>> folder.cleanup()
    """
    import zipfile

    total = 0
    try:
        with zipfile.ZipFile(os.fspath(path)) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                total += math.prod(int(size) for size in shape) * int(dtype.itemsize)
    except Exception:  # not a zip, a truncated member, a malformed header: left to np.load to report
        return None
    return total


def _check_npz_size(path, what, copies=1):
    """Refuse, before loading, an ``.npz`` whose headers claim more than the memory available."""
    nbytes = npz_nbytes(path)
    if nbytes is not None:
        check_allocation(copies * nbytes, f"Loading {os.fspath(path)!r} ({what}; its array headers claim "
                         f"{format_bytes(nbytes)})", "Check that the file is the one you meant (a corrupted or edited header "
                         "claims sizes its data does not hold), or load it on a machine with more memory.")


def load_arrays(path, required=(), *, what="arrays"):
    """Read every array of an ``.npz`` file (without pickle), checking that the required keys are there.

    Parameters
    ----------
    path : str or os.PathLike
    required : sequence of str
        Keys that must be present.
    what : str
        What the file should hold, for the error messages.

    Returns
    -------
    dict of str to ndarray

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When it is not an ``.npz`` archive, needs pickle, or lacks a required key.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "arrays.npz")
    >>> save_arrays(path, x=np.arange(3))
    >>> load_arrays(path, required=("x",))
    {'x': array([0, 1, 2])}
    >>> folder.cleanup()
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist (expected an .npz file of {what}).")
    with open(path, "rb") as stream:
        magic = stream.read(4)
    if magic != b"PK\x03\x04" and magic != b"PK\x05\x06":  # a zip archive (the second: an empty one)
        kind = "a single .npy array" if magic == b"\x93NUM" else "not a zip archive"
        raise ValueError(f"{path!r} is not a readable .npz archive of {what} (it is {kind}). Write it with "
                         "numpy.savez or connector_sim.data.save_arrays.")
    _check_npz_size(path, what)
    try:
        # np.load given a path leaves the file open when the zip is unreadable: open (and close) it here.
        with open(path, "rb") as stream, np.load(stream, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, KeyError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        # A truncated or corrupted archive (zipfile.BadZipFile, zlib.error), or one that needs pickle.
        raise ValueError(f"{path!r} is not a readable .npz archive of {what} ({' '.join(str(exc).split())}). "
                         "It may be truncated or corrupted: write it again with numpy.savez or "
                         "connector_sim.data.save_arrays; object arrays (pickle) are not read.") from exc
    missing = [key for key in required if key not in arrays]
    if missing:
        raise ValueError(f"{path!r} lacks the key(s) {missing} of {what}. Found {sorted(arrays)}.")
    return arrays


#: Keys of a network file (see :func:`save_network`).
NETWORK_KEYS = ("kind", "m", "n", "I", "b", "tau", "activation")


def save_network(path, network, /, **extra):
    """Write a :class:`~connector_sim.LowRankRNN` to ``path`` (``.npz``) atomically.

    Keys: ``m`` (N, R), ``n`` (N, R), ``I`` (N, D), ``b`` (N,) in the
    network's dtype, ``tau`` and ``activation`` (0-d), ``kind`` =
    "LowRankRNN", plus any ``extra`` arrays (e.g. ``labels``, cell types).
    :func:`load_network` reads it back without pickle.

    Parameters
    ----------
    path : str or os.PathLike
    network : LowRankRNN
        With a built-in activation (a numba function cannot be stored).
    **extra : array-like

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN or its activation is not built in (a
        callable cannot be saved).
    ValueError
        If ``path`` does not end in ".npz" or an extra array uses one of the
        network's own keys.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.TemporaryDirectory()
    >>> from connector_sim.sparse import rank_one_gaussian
    >>> network = rank_one_gaussian(20, 1.0, 0.5, random_state=0)
    >>> path = os.path.join(folder.name, "network.npz")
    >>> save_network(path, network, note=np.arange(3))
    >>> loaded, extra = load_network(path, return_extra=True)
    >>> np.array_equal(loaded.m, network.m), extra
    (True, {'note': array([0, 1, 2])})
    >>> folder.cleanup()
    """
    if not isinstance(network, LowRankRNN):
        raise TypeError(f"network must be a LowRankRNN. Got {type(network).__name__}.")
    if not isinstance(network.activation, str):
        raise TypeError(f"Only networks with a built-in activation {list(BUILTIN_ACTIVATIONS)} can be saved; this "
                        f"one has the user function {network.activation!r}.")
    reserved = sorted(set(extra) & set(NETWORK_KEYS))
    if reserved:
        raise ValueError(f"Extra arrays may not use the network's own keys {reserved}.")
    save_arrays(path, kind="LowRankRNN", m=network.m, n=network.n, I=network.I, b=network.b, tau=network.tau,
                activation=network.activation, **extra)


def load_network(path, *, return_extra=False):
    """Read a network written by :func:`save_network`.

    Parameters
    ----------
    path : str or os.PathLike
    return_extra : bool, default=False
        Also return the file's other arrays (a dict).

    Returns
    -------
    network : LowRankRNN
        In the dtype it was saved in.
    extra : dict of str to ndarray, only if ``return_extra``

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable ``.npz`` archive or does not hold a valid
        network.
    TooLargeError
        If its arrays would not fit in memory.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.TemporaryDirectory()
    >>> from connector_sim.sparse import rank_one_gaussian
    >>> network = rank_one_gaussian(20, 1.0, 0.5, random_state=0)
    >>> path = os.path.join(folder.name, "network.npz")
    >>> save_network(path, network, note=np.arange(3))
    >>> loaded, extra = load_network(path, return_extra=True)
    >>> np.array_equal(loaded.m, network.m), extra
    (True, {'note': array([0, 1, 2])})
    >>> folder.cleanup()
    """
    if os.path.isfile(os.fspath(path)):
        _check_npz_size(path, "a low-rank network", copies=2)  # the arrays and the network's copies
    arrays = load_arrays(path, ("m", "n", "tau", "activation"),
                         what="a low-rank network (m, n, I, b, tau, activation; see save_network)")
    m = arrays["m"]
    dtype = m.dtype if m.dtype in (np.float32, np.float64) else np.float64
    tau = arrays["tau"]
    if tau.size != 1 or not (np.issubdtype(tau.dtype, np.integer) or np.issubdtype(tau.dtype, np.floating)):
        raise ValueError(f"{os.fspath(path)!r} does not hold a valid network: 'tau' must be one real number. Got "
                         f"{tau!r}.")
    try:
        network = LowRankRNN(m, arrays["n"], arrays.get("I"), arrays.get("b"), tau=float(tau.reshape(-1)[0]),
                             activation=str(arrays["activation"]), dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{os.fspath(path)!r} does not hold a valid network: {exc}") from exc
    if not return_extra:
        return network
    return network, {key: value for key, value in arrays.items() if key not in NETWORK_KEYS}


def load_npz(path, *, kind="rates", dt=None):
    """Read trial data written by :func:`save_npz` (or by FINDR's tools).

    Parameters
    ----------
    path : str or os.PathLike
    kind : {"rates", "counts"}, default="rates"
    dt : float, optional

    Returns
    -------
    TrialData
        Validated by :func:`as_trial_data`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable ``.npz`` archive, lacks ``spikes``, or
        holds invalid trial data (see :func:`as_trial_data`).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "trials.npz")
    >>> save_npz(path, as_trial_data(np.ones((2, 4, 3))))
    >>> load_npz(path).lengths
    array([4, 4])
    >>> folder.cleanup()
    """
    arrays = load_arrays(path, ("spikes", "lengths"), what="trial data ('spikes' (n_trials, n_times, n_neurons), "
                                                          "'externalinputs' (n_trials, n_times, D), 'lengths' "
                                                          "(n_trials,))")
    spikes = arrays["spikes"]
    lengths = arrays["lengths"].reshape(-1)
    inputs = arrays.get("externalinputs")
    return as_trial_data(spikes, inputs, lengths, kind=kind, dt=dt)


def causal_gaussian_kernel(bin_width, smoothing, truncate=3.0):
    """Weights of a causal (half-)Gaussian filter on binned counts.

    ::

        w_j = exp(-(j dt)^2 / (2 sigma^2)) / Z,  j = 0 .. K,  K = ceil(truncate sigma / dt),
        Z = sum_j exp(-(j dt)^2 / (2 sigma^2))

    so that ``rate_t = sum_j w_j counts_{t - j} / dt`` uses the current and
    past bins only and a constant count c per bin gives the rate c / dt.

    Parameters
    ----------
    bin_width : float
        dt, in seconds.
    smoothing : float
        sigma, in seconds.
    truncate : float, default=3.0
        Kernel length in units of sigma.

    Returns
    -------
    ndarray of shape (K + 1,)

    Raises
    ------
    ValueError, TypeError
        If ``bin_width``, ``smoothing`` or ``truncate`` is not a positive number.
    TooLargeError
        If the kernel would not fit in memory.

    Examples
    --------
    >>> kernel = causal_gaussian_kernel(0.01, 0.02)
    >>> kernel.round(4), round(float(kernel.sum()), 6)
    (array([0.3329, 0.2938, 0.2019, 0.1081, 0.0451, 0.0146, 0.0037]), 1.0)
    """
    bin_width = check_positive_scalar(bin_width, "bin_width", owner="causal_gaussian_kernel")
    smoothing = check_positive_scalar(smoothing, "smoothing", owner="causal_gaussian_kernel")
    truncate = check_positive_scalar(truncate, "truncate", owner="causal_gaussian_kernel")
    check_allocation(3 * 8 * (truncate * smoothing / bin_width + 2),
                     f"A smoothing kernel of {truncate} x {smoothing} s in bins of {bin_width} s",
                     "Use wider bins (bin_width) or less smoothing.")
    # The 1e-9 keeps 3 * 0.1 / 0.01 = 30.000000000000004 from rounding up to 31.
    lags = np.arange(math.ceil(truncate * smoothing / bin_width - 1e-9) + 1) * bin_width
    weights = np.exp(-0.5 * (lags / smoothing) ** 2)
    return weights / weights.sum()


def bin_spike_times(spike_times, starts, stops, bin_width=0.01, smoothing=0.1, *, truncate=3.0):
    """Spike times of several units into per-trial binned (and smoothed) rates.

    Trial k covers [starts[k], stops[k]) in floor((stop - start) / bin_width)
    full bins; bin j is [start + j dt, start + (j + 1) dt). With smoothing,
    counts are also taken in the K bins before the trial start (the recording
    runs on before a trial), and

        rate_t = sum_{j=0}^{K} w_j counts_{t - j} / dt   (spikes / s)

    with the causal kernel of :func:`causal_gaussian_kernel`.

    Parameters
    ----------
    spike_times : list of array-like
        One array of spike times (seconds) per unit.
    starts, stops : array-like of shape (n_trials,)
        Trial intervals, seconds.
    bin_width : float, default=0.01
    smoothing : float or None, default=0.1
        Standard deviation sigma (seconds) of the causal Gaussian. None
        returns raw spike counts (kind "counts").
    truncate : float, default=3.0

    Returns
    -------
    TrialData
        ``spikes`` (n_trials, max bins, n_units), ``lengths``, ``dt = bin_width``.

    Raises
    ------
    ValueError
        If ``starts`` and ``stops`` differ in length or are empty, a trial
        interval is not finite or holds no full bin, ``spike_times`` holds no
        units, or a smoothing option is not positive.
    TypeError
        If spike times are not real numbers.

    Examples
    --------
    >>> data = bin_spike_times([[0.05, 0.15], [0.12]], starts=[0.0], stops=[0.2], bin_width=0.1,
    ...                        smoothing=None)
    >>> data.kind, data.spikes[0]  # unit 0 spikes in both bins, unit 1 in the second
    ('counts', array([[1., 0.],
           [1., 1.]]))
    """
    bin_width = check_positive_scalar(bin_width, "bin_width", owner="bin_spike_times")
    starts = _real_vector(starts, "starts")
    stops = _real_vector(stops, "stops")
    if starts.shape != stops.shape:
        raise ValueError(f"starts and stops must have the same length. Got {starts.size} and {stops.size}.")
    if len(starts) == 0:
        raise ValueError("There are no trials (starts is empty).")
    with np.errstate(invalid="ignore", over="ignore"):
        spans = np.floor((stops - starts) / bin_width + 1e-9)  # bins per trial, as floats: they may be huge
    for k, span in enumerate(spans):
        if not np.isfinite(starts[k]) or not np.isfinite(stops[k]) or not span >= 1:
            raise _error("trial interval", k, f"[{starts[k]}, {stops[k]}) must be finite and hold at least one "
                         f"bin of {bin_width} s.")
    units = [np.sort(_real_vector(times, f"spike_times[{i}]")) for i, times in enumerate(spike_times)]
    if not units:
        raise ValueError("spike_times holds no units.")
    n_bins = float(spans.max())
    # The output, and per trial and unit the bin edges, the counts and their convolution with the kernel.
    check_allocation(8 * len(starts) * n_bins * len(units) + 8 * 4 * (n_bins + 2), f"Binning {len(starts)} "
                     f"trial(s) of up to {n_bins:.0f} bins x {len(units)} unit(s) (bins of {bin_width} s)",
                     "Use a larger bin_width (or fewer, shorter trials).")
    lengths, n_bins = spans.astype(np.int64), int(n_bins)
    kernel = None if smoothing is None else causal_gaussian_kernel(bin_width, smoothing, truncate)
    history = 0 if kernel is None else len(kernel) - 1
    out = np.zeros((len(starts), n_bins, len(units)))
    for k, (start, length) in enumerate(zip(starts, lengths)):
        edges = start + bin_width * np.arange(-history, length + 1)
        for i, times in enumerate(units):
            counts = np.histogram(times, edges)[0].astype(np.float64)
            if kernel is None:
                out[k, :length, i] = counts
            else:
                # full convolution, then keep the bins of the trial (index history + t).
                out[k, :length, i] = np.convolve(counts, kernel)[history: history + length] / bin_width
    return as_trial_data(out, None, lengths, kind="counts" if kernel is None else "rates", dt=bin_width)


def _real_vector(value, name):
    """``value`` flattened to float64; complex or non-numeric values are an error, never silently cast."""
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers. Got dtype {array.dtype}.")
    return array.astype(np.float64).reshape(-1)


def _row_indices(rows, n_rows, name, table):
    """Rows of an NWB table: distinct integers in [0, n_rows); negative indices are refused, not wrapped."""
    index = np.asarray(rows)
    if index.ndim != 1 or not (np.issubdtype(index.dtype, np.integer) or index.size == 0):
        raise TypeError(f"{name} must be a 1-D sequence of integer row indices of the {table} table. Got {rows!r}.")
    if index.size == 0:
        raise ValueError(f"{name} is empty: give at least one row of the {table} table (or None for all).")
    bad = index[(index < 0) | (index >= n_rows)]
    if bad.size:
        raise ValueError(f"{name} must index rows of the {table} table, in [0, {n_rows - 1}]. Got {int(bad[0])} "
                         f"(negative indices are not allowed).")
    return index.astype(np.int64)


def _has_hdf5_signature(path):
    """The HDF5 signature sits at offset 0, or 512, 1024, 2048, ... after a user block."""
    with open(path, "rb") as stream:
        for offset in [0] + [512 << k for k in range(16)]:
            stream.seek(offset)
            head = stream.read(8)
            if len(head) < 8:
                return False
            if head == b"\x89HDF\r\n\x1a\n":
                return True
    return False


def _read_nwb_tables(NWBHDF5IO, path, units):
    """(spike times of the chosen units, trial starts, trial stops) of an NWB file."""
    with NWBHDF5IO(path, "r") as io:
        nwbfile = io.read()
        if nwbfile.units is None or len(nwbfile.units) == 0:
            raise ValueError(f"{path!r} has no units table (spike-sorted units): nothing to bin.")
        if nwbfile.trials is None or len(nwbfile.trials) == 0:
            raise ValueError(f"{path!r} has no trials table: give trial intervals to bin_spike_times instead.")
        unit_rows = (range(len(nwbfile.units)) if units is None else
                     _row_indices(units, len(nwbfile.units), "units", "units"))
        spike_times = [np.asarray(nwbfile.units["spike_times"][int(u)]) for u in unit_rows]
        starts = np.asarray(nwbfile.trials["start_time"][:])
        stops = np.asarray(nwbfile.trials["stop_time"][:])
    return spike_times, starts, stops


def read_nwb(path, *, bin_width=0.01, smoothing=0.1, units=None, trials=None, truncate=3.0, series=None):
    """Read units' spike times (or a rates TimeSeries) and the trial intervals of an NWB file into binned rates.

    Uses ``nwbfile.units["spike_times"]`` and the ``start_time`` /
    ``stop_time`` columns of ``nwbfile.trials``, then :func:`bin_spike_times`
    (bins of ``bin_width`` seconds, causal Gaussian smoothing of standard
    deviation ``smoothing`` seconds).

    Parameters
    ----------
    path : str or os.PathLike
    bin_width : float, default=0.01
        10 ms bins.
    smoothing : float or None, default=0.1
        100 ms causal Gaussian; None gives spike counts.
    units : array-like of int, optional
        Rows of the units table to read (default all), each in [0, number of units).
    trials : array-like of int, optional
        Rows of the trials table to read (default all), each in [0, number of trials).
    truncate : float, default=3.0
    series : str, optional
        Read this TimeSeries of rates instead of the units table (see
        :func:`connector_sim.interop.read_nwb_timeseries`; ``bin_width``,
        ``smoothing`` and ``units`` do not apply). A file without a units
        table is read from its acquisition TimeSeries "rates" when it has one.

    Returns
    -------
    TrialData

    Raises
    ------
    ImportError
        If pynwb is not installed.
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable NWB file, has no units or trials table,
        or ``units`` / ``trials`` are not rows of them.
    TypeError
        If ``units`` or ``trials`` are not integer row indices.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> folder = tempfile.TemporaryDirectory()
    >>> from connector_sim.interop import write_nwb
    >>> counts = np.array([[[1, 0], [2, 1], [0, 3]]])  # one trial, 3 bins, 2 units
    >>> path = os.path.join(folder.name, "units.nwb")
    >>> write_nwb(path, as_trial_data(counts, kind="counts", dt=0.1))
    >>> read_nwb(path, bin_width=0.1, smoothing=None).spikes[0]
    array([[1., 0.],
           [2., 1.],
           [0., 3.]])
    >>> folder.cleanup()
    """
    try:
        from pynwb import NWBHDF5IO
    except ImportError as exc:
        raise ImportError(
            "read_nwb needs pynwb. Install it with `pip install connector-sim[nwb]` (or `pip install pynwb`)."
        ) from exc
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist (expected an NWB file).")
    if not _has_hdf5_signature(path):
        raise ValueError(f"{path!r} is not an NWB file (NWB 2 files are HDF5 files; this one does not start with "
                         "the HDF5 signature).")
    from .interop import nwb_rates_only, read_nwb_timeseries

    if series is not None or nwb_rates_only(path):
        return read_nwb_timeseries(path, name=series or "rates", trials=trials)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            spike_times, starts, stops = _read_nwb_tables(NWBHDF5IO, path, units)
    except (OSError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
        # h5py and pynwb report a truncated or corrupted file with these, from deep inside.
        raise ValueError(f"{path!r} is not a readable NWB file ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())}). It may be truncated or corrupted.") from exc
    broken = [w for w in caught if type(w.message).__name__ == "BrokenLinkWarning"]
    if broken:  # hdmf reads past a damaged link with only a warning: the file is corrupted
        raise ValueError(f"{path!r} is a damaged NWB file ({' '.join(str(broken[0].message).split())}). "
                         "Read an intact copy.")
    for warning in caught:  # the others, as they were
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if trials is not None:
        trials = _row_indices(trials, len(starts), "trials", "trials")
        starts, stops = starts[trials], stops[trials]
    return bin_spike_times(spike_times, starts, stops, bin_width, smoothing, truncate=truncate)
