"""Files of the official Connector code, of LINT (Valente et al.) and NWB, read and written.

Three foreign layouts, each mapped onto this package's conventions:

**Official Connector data** (``.npz``; the layout of the Connector paper's
code, ``data/<dataset>.npz``). Keys, N neurons, R latents, D inputs::

    MBD        (N, R + D [+ 1])  rows [m, B, d]: right factors m, input loadings B, bias d (when fitted with a bias)
    N          (N, R)            left factors n                       (optional)
    latents    (n_trials, T, R)  latent trajectories, latents[:, 0] the initial point   (optional)
    potentials (n_trials, T, N)  latents @ m.T                        (optional)
    rates      (n_trials, T, N)  phi(potentials)                      (optional; 'spikes' is read too)
    externalinputs (n_trials, T, D), lengths (n_trials,)              (optional)
    enms       (N, R)            E[n | m] of each neuron (ground-truth networks)       (optional)
    inv_perm   (N,)              the permutation that sorts the neurons back by cell type (optional)

Its dynamics are ours with tau = 1 and alpha = dt = 0.1 (the file does not
store alpha): ``z_{t+1} = z_t + alpha (-z_t + n^T phi(m z_t + B u_t + d) / N)``.
Its regressions put the input u_t inside phi directly, where this package's
latent recursion uses the low-pass filtered input v_t (see
:func:`connector_sim.simulate`); the two agree for inputs that change slowly
against tau.

**LINT networks** (``.pt``, a torch state dict of tensors, e.g. ``rdm_rank1_512.pt``):
``wi`` (D, N), ``si`` (D,), ``m`` (N, R), ``n`` (N, R), ``b`` (N,), ``wo``
(N, K), ``so`` (K,), ``h0`` (N,). Its update, per step of alpha = dt / tau::

    h_{t+1} = h_t + noise_std xi_t + alpha (-h_t + m n^T phi(h_t + b) / N + (wi * si)^T u_t)
    output_t = tanh(h_{t+1}) (wo * so) / N

is this package's with x = h + b, I = (wi * si)^T, the same m, n and 1/N,
and private-noise sigma = noise_std / sqrt(alpha) (LINT's noise_std is the
per-step standard deviation, unscaled by alpha; ours is scaled by
sqrt(alpha)). One difference: LINT starts from r_0 = phi(h_0), without the
bias, so with a nonzero b its first step differs; the saved LINT networks
have b = 0. Neither alpha nor noise_std is in the file: give them.

**NWB** (:func:`write_nwb` / :func:`read_nwb_timeseries`): rates as a
``TimeSeries`` in the acquisition group, or spike counts as spike times in
the Units table; a trials table (start_time, stop_time); inputs as a
stimulus ``TimeSeries``; latents in a processing module. Trials are laid
end to end without padding. pynwb is imported only by these functions.

torch is imported only by the LINT functions. Pure NumPy otherwise.
"""

import io
import os
from dataclasses import dataclass

import numpy as np

from ._files import write_atomic
from ._validation import check_nonnegative_scalar, check_positive_scalar
from .data import TrialData, as_trial_data, load_arrays, save_arrays
from .network import LowRankRNN

# --------------------------------------------------------------------------- official Connector data

#: Keys of an official Connector data file, required first.
OFFICIAL_DATA_KEYS = ("MBD", "N", "latents", "potentials", "rates", "spikes", "externalinputs", "lengths", "enms",
                      "inv_perm")


@dataclass
class OfficialData:
    """An official Connector data file, mapped (see :func:`load_official_data`).

    Attributes
    ----------
    mbd : ndarray of shape (N, R + D [+ 1])
        The file's ``MBD`` rows [m, B, d].
    network : LowRankRNN or None
        m, n = ``N``, I = B, b = d (zero without a bias column); None when the
        file has no ``N``.
    latents : ndarray of shape (n_trials, T, R) or None
        In this package's ``kappa`` layout (row 0 the initial point).
    data : TrialData or None
        ``rates`` (or ``spikes``) with ``externalinputs`` and ``lengths``.
    potentials, enms, inv_perm : ndarray or None
    alpha : float
        dt / tau of the trajectories (not stored in the file; given to the reader).
    bias : bool
        Whether ``MBD`` has a bias column.
    rank : int
        R.
    """

    mbd: np.ndarray
    network: LowRankRNN
    latents: np.ndarray
    data: TrialData
    potentials: np.ndarray
    enms: np.ndarray
    inv_perm: np.ndarray
    alpha: float
    bias: bool
    rank: int


def _file_error(path, what):
    return ValueError(f"{os.fspath(path)!r} {what}")


def _shape_error(path, key, expected, array):
    return _file_error(path, f"is not an official Connector data file: {key!r} must have shape {expected}. "
                             f"Got shape {array.shape}.")


def load_official_data(path, *, alpha=0.1, rank=None, bias=None, tau=1.0, activation="tanh", dtype=np.float64):
    """Read an official Connector data ``.npz`` (``MBD``, ``N``, ``latents``, ``rates`` ...).

    Parameters
    ----------
    path : str or os.PathLike
    alpha : float, default=0.1
        dt / tau of the file's trajectories (the official files use 0.1).
    rank : int, optional
        R; default the width of ``N`` or of ``latents``.
    bias : bool, optional
        Whether the last column of ``MBD`` is a bias. Default: when ``MBD``
        has one column more than R + D.
    tau : float, default=1.0
        Time constant given to the network.
    activation : str, default="tanh"
        phi of the network (the official default).
    dtype : float32 or float64, default=float64

    Returns
    -------
    OfficialData

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file needs pickle, lacks ``MBD``, or its arrays disagree
        in shape (the message names the key and the expected shape).

    Examples
    --------
    >>> official = load_official_data("quadstable_attractors.npz")  # doctest: +SKIP
    >>> result = connector_sim.simulate(official.network, 99, dt=0.1,
    ...                                 kappa0=official.latents[:, 0])  # doctest: +SKIP
    """
    alpha = check_positive_scalar(alpha, "alpha", owner="load_official_data")
    arrays = load_arrays(path, ("MBD",), what="official Connector data (keys 'MBD', 'N', 'latents', 'rates', ...)")
    mbd = arrays["MBD"]
    if mbd.ndim != 2 or mbd.shape[0] < 1 or not np.issubdtype(mbd.dtype, np.number):
        raise _shape_error(path, "MBD", "(n_neurons, R + D [+ 1]), numeric", mbd)
    n_neurons = mbd.shape[0]
    n = arrays.get("N")
    latents = arrays.get("latents")
    if n is not None and (n.ndim != 2 or n.shape[0] != n_neurons):
        raise _shape_error(path, "N", f"({n_neurons}, R), one row per row of 'MBD'", n)
    if latents is not None and latents.ndim != 3:
        raise _shape_error(path, "latents", "(n_trials, n_times, R)", latents)
    if rank is None:
        if n is not None:
            rank = n.shape[1]
        elif latents is not None:
            rank = latents.shape[2]
        else:
            raise _file_error(path, "has neither 'N' nor 'latents' to tell the rank R from: give rank=.")
    rank = int(rank)
    if n is not None and n.shape[1] != rank:
        raise _shape_error(path, "N", f"({n_neurons}, {rank})", n)
    if latents is not None and latents.shape[2] != rank:
        raise _shape_error(path, "latents", f"(n_trials, n_times, {rank})", latents)
    inputs = arrays.get("externalinputs")
    if inputs is not None and (inputs.size == 0 or np.all(np.isnan(inputs))):
        inputs = None  # the official loaders fill missing inputs with NaN
    if inputs is not None and inputs.ndim != 3:
        raise _shape_error(path, "externalinputs", "(n_trials, n_times, D)", inputs)
    n_inputs = 0 if inputs is None else inputs.shape[2]
    extra = mbd.shape[1] - rank - n_inputs
    if bias is None:
        if extra not in (0, 1):
            raise _shape_error(path, "MBD", f"({n_neurons}, R + D [+ 1]) = ({n_neurons}, {rank + n_inputs} or "
                                            f"{rank + n_inputs + 1}) for R = {rank} and D = {n_inputs}", mbd)
        bias = extra == 1
    elif extra != int(bool(bias)):
        raise _shape_error(path, "MBD", f"({n_neurons}, {rank + n_inputs + int(bool(bias))}) for R = {rank}, "
                                        f"D = {n_inputs} and bias={bool(bias)}", mbd)
    mbd = mbd.astype(np.float64)
    network = None
    if n is not None:
        network = LowRankRNN(mbd[:, :rank], n, mbd[:, rank:rank + n_inputs],
                             np.ascontiguousarray(mbd[:, -1]) if bias else None, tau=tau, activation=activation,
                             dtype=dtype)
    key = "rates" if "rates" in arrays else "spikes" if "spikes" in arrays else None
    data = None
    if key is not None:
        rates = arrays[key]
        if rates.ndim != 3:
            raise _shape_error(path, key, "(n_trials, n_times, n_neurons)", rates)
        lengths = arrays.get("lengths")
        data = as_trial_data(rates, inputs, None if lengths is None else np.asarray(lengths).reshape(-1),
                             kind="rates", dt=alpha * tau)
    potentials = arrays.get("potentials")
    trials = None if latents is None else latents.shape[:2]
    for name, array in (("potentials", potentials), ("rates", None if data is None else data.spikes)):
        if array is not None and trials is not None and array.shape[:2] != trials:
            raise _shape_error(path, name, f"({trials[0]}, {trials[1]}, n_neurons), the trials and times of "
                                           "'latents'", array)
    enms = arrays.get("enms")
    if enms is not None and enms.shape != (n_neurons, rank):
        raise _shape_error(path, "enms", f"({n_neurons}, {rank})", enms)
    inv_perm = arrays.get("inv_perm")
    if inv_perm is not None:
        if (inv_perm.shape != (n_neurons,) or not np.issubdtype(inv_perm.dtype, np.integer)
                or not np.array_equal(np.sort(inv_perm), np.arange(n_neurons))):
            raise _file_error(path, f"is not an official Connector data file: 'inv_perm' must be a permutation of "
                                    f"0 .. {n_neurons - 1}. Got an array of dtype {inv_perm.dtype} and shape "
                                    f"{inv_perm.shape}.")
        inv_perm = inv_perm.astype(np.int64)
    return OfficialData(mbd=mbd, network=network,
                        latents=None if latents is None else latents.astype(np.float64), data=data,
                        potentials=None if potentials is None else potentials.astype(np.float64),
                        enms=None if enms is None else enms.astype(np.float64), inv_perm=inv_perm, alpha=alpha,
                        bias=bool(bias), rank=rank)


def save_official_data(path, network, *, latents=None, rates=None, potentials=None, inputs=None, lengths=None,
                       enms=None, inv_perm=None, bias=None):
    """Write a network (and its trajectories) as an official Connector data ``.npz``, atomically.

    ``MBD`` = [m, I, b] (b only with ``bias``; default: when b is not zero),
    ``N`` = n; the other arrays under the official keys (``latents``:
    this package's ``kappa``, row 0 the initial point; ``inputs`` are
    written as ``externalinputs``). :func:`load_official_data` reads it back.

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.npz``.
    network : LowRankRNN
    latents : array-like of shape (n_trials, T, R), optional
    rates, potentials : array-like of shape (n_trials, T, N_recorded), optional
    inputs : array-like of shape (n_trials, T, D), optional
    lengths : array-like of shape (n_trials,), optional
    enms : array-like of shape (N, R), optional
    inv_perm : array-like of int of shape (N,), optional
    bias : bool, optional

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN.
    ValueError
        If an array has the wrong shape (e.g. ``latents`` not (n_trials, T, R)).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from connector_sim.sparse import rank_one_gaussian
    >>> network = rank_one_gaussian(50, 1.0, 0.5, random_state=0)
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "network.npz")
    >>> save_official_data(path, network)
    >>> np.array_equal(load_official_data(path).network.m, network.m)
    True
    >>> folder.cleanup()
    """
    if not isinstance(network, LowRankRNN):
        raise TypeError(f"network must be a LowRankRNN. Got {type(network).__name__}.")
    if bias is None:
        bias = bool(np.any(network.b != 0))
    columns = [network.m, network.I] + ([network.b[:, None]] if bias else [])
    arrays = {"MBD": np.hstack(columns), "N": np.array(network.n)}
    optional = {"latents": latents, "rates": rates, "potentials": potentials, "externalinputs": inputs,
                "lengths": lengths, "enms": enms, "inv_perm": inv_perm}
    arrays.update({key: np.asarray(value) for key, value in optional.items() if value is not None})
    if "latents" in arrays and (arrays["latents"].ndim != 3 or arrays["latents"].shape[2] != network.rank):
        raise ValueError(f"latents must have shape (n_trials, T, {network.rank}). Got shape {arrays['latents'].shape}.")
    save_arrays(path, **arrays)


# --------------------------------------------------------------------------- LINT networks

#: Keys of a LINT low-rank network's state dict.
LINT_KEYS = ("wi", "si", "m", "n", "b", "wo", "so", "h0")


def lint_noise_to_sigma(noise_std, alpha):
    """This package's private-noise sigma for LINT's per-step ``noise_std``: ``noise_std / sqrt(alpha)``.

    Raises
    ------
    ValueError, TypeError
        If ``noise_std`` is negative or ``alpha`` not positive, or either is not
        a number.

    Examples
    --------
    >>> float(lint_noise_to_sigma(0.05, alpha=0.25))
    0.1
    """
    noise_std = check_nonnegative_scalar(noise_std, "noise_std", owner="lint_noise_to_sigma")
    return noise_std / np.sqrt(check_positive_scalar(alpha, "alpha", owner="lint_noise_to_sigma"))


def sigma_to_lint_noise(sigma, alpha):
    """LINT's per-step ``noise_std`` for this package's sigma: ``sqrt(alpha) sigma``.

    Raises
    ------
    ValueError, TypeError
        If ``sigma`` is negative or ``alpha`` not positive, or either is not a
        number.

    Examples
    --------
    >>> float(sigma_to_lint_noise(0.1, alpha=0.25))
    0.05
    """
    sigma = check_nonnegative_scalar(sigma, "sigma", owner="sigma_to_lint_noise")
    return np.sqrt(check_positive_scalar(alpha, "alpha", owner="sigma_to_lint_noise")) * sigma


@dataclass
class LintNetwork:
    """A LINT network mapped onto this package (see :func:`load_lint_network`).

    Attributes
    ----------
    network : LowRankRNN
        m, n, I = (wi * si)^T, b; simulate it with ``dt = alpha * network.tau``.
    readout : ndarray of shape (N, K)
        wo * so.
    x0 : ndarray of shape (N,)
        The initial state h0 + b (pass as ``x0`` to :func:`connector_sim.simulate`).
    alpha : float
    noise_std : float
        This package's sigma, lint_noise_std / sqrt(alpha).
    lint_noise_std : float
        LINT's per-step noise standard deviation.
    """

    network: LowRankRNN
    readout: np.ndarray
    x0: np.ndarray
    alpha: float
    noise_std: float
    lint_noise_std: float

    @property
    def dt(self):
        """The simulation step giving LINT's alpha: alpha * tau."""
        return self.alpha * self.network.tau

    def output(self, potentials):
        """LINT's readout of potentials x (..., N): ``tanh(x - b) (wo * so) / N``, shape (..., K).

        LINT's output at step t reads h_{t+1}: pass ``result.potentials[:, 1:]``.
        """
        potentials = np.asarray(potentials, dtype=np.float64)
        h = potentials - self.network.b.astype(np.float64)
        return np.tanh(h) @ self.readout.astype(np.float64) / self.network.n_neurons


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency of the inference extra
        raise ImportError("Reading and writing LINT's .pt files needs torch. Install it with "
                          "`pip install connector-sim[inference]` (or `pip install torch`).") from exc
    return torch


def load_torch_tensors(path, what):
    """``torch.load(path, weights_only=True, map_location="cpu")``, with a clear error for anything else.

    Returns the loaded object (dicts, lists, numbers and tensors only; no
    pickled code runs).

    Raises
    ------
    ImportError
        If torch is not installed.
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``torch.load(weights_only=True)`` refuses the file (pickled objects
        other than tensors, numbers, strings, lists and dicts; not a torch
        file).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from connector_sim.sparse import rank_one_gaussian
    >>> network = rank_one_gaussian(50, 1.0, 0.5, random_state=0)
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "network.pt")
    >>> save_lint_network(path, network)
    >>> sorted(load_torch_tensors(path, "a LINT network"))
    ['b', 'h0', 'm', 'n', 'si', 'so', 'wi', 'wo']
    >>> folder.cleanup()
    """
    torch = _torch()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist (expected {what}).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (objects other than tensors), RuntimeError (not a zip), EOFError ...
        # torch's own message is not repeated: it suggests loading with weights_only=False, which runs the file's code.
        raise ValueError(f"{path!r} is not {what} that loads without running code: torch.load(weights_only=True) "
                         f"refused it ({type(exc).__name__}). Only files of tensors, numbers, strings, lists and "
                         "dicts are read; save the state dict (tensors), not pickled objects.") from None


def load_lint_network(path, *, alpha=0.2, noise_std=0.0, tau=1.0, activation="tanh", dtype=np.float64):
    """Read a LINT low-rank network (``.pt`` state dict: wi, si, m, n, b, wo, so, h0).

    Parameters
    ----------
    path : str or os.PathLike
    alpha : float, default=0.2
        dt / tau of the network (LINT's tasks use 0.2: 20 ms steps, tau = 100 ms).
    noise_std : float, default=0.0
        LINT's per-step noise standard deviation (its ``noise_std``, e.g. 0.05);
        converted to this package's sigma = noise_std / sqrt(alpha).
    tau : float, default=1.0
        The network's time constant; simulate with ``dt = alpha * tau``.
    activation : str, default="tanh"
        LINT's ``non_linearity``.
    dtype : float32 or float64, default=float64

    Returns
    -------
    LintNetwork

    Raises
    ------
    ValueError
        When the file is not a state dict of tensors readable with
        ``torch.load(weights_only=True)``, lacks a key, or a tensor has
        the wrong shape (the message names it).

    Examples
    --------
    >>> lint = load_lint_network("rdm_rank1_512.pt", alpha=0.2, noise_std=0.05)  # doctest: +SKIP
    >>> result = connector_sim.simulate(lint.network, inputs=u, dt=lint.dt, x0=lint.x0,
    ...                                 noise_std=lint.noise_std, record_units="all")  # doctest: +SKIP
    >>> z = lint.output(result.potentials[:, 1:])  # doctest: +SKIP
    """
    alpha = check_positive_scalar(alpha, "alpha", owner="load_lint_network")
    if alpha > 1:
        raise ValueError(f"alpha = dt / tau must be in (0, 1]. Got {alpha!r}.")
    sigma = lint_noise_to_sigma(noise_std, alpha)
    what = "a LINT network (a torch state dict with tensors 'wi', 'si', 'm', 'n', 'b', 'wo', 'so', 'h0')"
    state = load_torch_tensors(path, what)
    torch = _torch()
    if not isinstance(state, dict):
        raise _file_error(path, f"holds a {type(state).__name__}, not {what}.")
    if "model_state_dict" in state:
        raise _file_error(path, "is a checkpoint of the official Connector code (it has 'model_state_dict'), not "
                                f"{what}. Read it with connector_sim.inference.interop.load_official_checkpoint.")
    missing = [key for key in LINT_KEYS if key not in state]
    if missing:
        raise _file_error(path, f"lacks the key(s) {missing} of {what}. Found {sorted(state)}.")
    arrays = {}
    for key in LINT_KEYS:
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise _file_error(path, f"holds a {type(value).__name__} under {key!r}; {what} holds tensors.")
        arrays[key] = value.detach().cpu().numpy().astype(np.float64)
    m, n, wi, si, wo, so = (arrays[k] for k in ("m", "n", "wi", "si", "wo", "so"))
    if m.ndim != 2 or m.shape[0] < 1:
        raise _file_error(path, f"has 'm' of shape {m.shape}; expected (N, R).")
    N, R = m.shape
    expected = {"n": (N, R), "b": (N,), "h0": (N,), "wi": (None, N), "wo": (N, None)}
    for key, shape in expected.items():
        got = arrays[key].shape
        if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
            text = "(" + ", ".join("D" if w is None and key == "wi" else "K" if w is None else str(w)
                                   for w in shape) + ("," if len(shape) == 1 else "") + ")"
            raise _file_error(path, f"has {key!r} of shape {got}; expected {text} for m of shape {m.shape}.")
    if si.shape != (wi.shape[0],) or so.shape != (wo.shape[1],):
        raise _file_error(path, f"has 'si' of shape {si.shape} and 'so' of shape {so.shape}; expected "
                                f"({wi.shape[0]},) and ({wo.shape[1]},) (one scale per input and per output).")
    I = (wi * si[:, None]).T
    network = LowRankRNN(m, n, I, arrays["b"], tau=tau, activation=activation, dtype=dtype)
    return LintNetwork(network=network, readout=wo * so[None, :], x0=arrays["h0"] + arrays["b"], alpha=alpha,
                       noise_std=float(sigma), lint_noise_std=float(noise_std))


def save_lint_network(path, network, *, readout=None, x0=None):
    """Write a :class:`~connector_sim.LowRankRNN` as a LINT state dict (``.pt``), atomically.

    Keys wi = I^T (D, N), si = 1 (D,), m, n, b, wo = ``readout`` (N, K;
    default zeros of shape (N, 1)), so = 1 (K,), h0 = x0 - b (default 0),
    as tensors in the network's dtype (LINT's ``load_state_dict`` casts them
    to its float32 parameters). LINT's LowRankRNN(D, N, K, noise_std,
    alpha, rank=R) loads it; :func:`load_lint_network` reads it back.

    Parameters
    ----------
    path : str or os.PathLike
    network : LowRankRNN
    readout : array-like of shape (N, K), optional
    x0 : array-like of shape (N,), optional
        Initial potentials (this package's x, which is LINT's h + b).

    Raises
    ------
    ImportError
        If torch is not installed.
    TypeError
        If ``network`` is not a LowRankRNN.
    ValueError
        If ``readout`` is not of shape (N, K) or ``x0`` not of shape (N,).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from connector_sim.sparse import rank_one_gaussian
    >>> network = rank_one_gaussian(50, 1.0, 0.5, random_state=0)
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "network.pt")
    >>> save_lint_network(path, network)
    >>> np.array_equal(load_lint_network(path, alpha=0.2).network.n, network.n)
    True
    >>> folder.cleanup()
    """
    if not isinstance(network, LowRankRNN):
        raise TypeError(f"network must be a LowRankRNN. Got {type(network).__name__}.")
    torch = _torch()
    N, dtype = network.n_neurons, network.dtype
    readout = np.zeros((N, 1), dtype) if readout is None else np.asarray(readout, dtype)
    if readout.ndim != 2 or readout.shape[0] != N:
        raise ValueError(f"readout must have shape ({N}, K). Got shape {readout.shape}.")
    x0 = network.b.copy() if x0 is None else np.asarray(x0, dtype)
    if x0.shape != (N,):
        raise ValueError(f"x0 must have shape ({N},). Got shape {x0.shape}.")
    arrays = {"wi": network.I.T, "si": np.ones(network.n_inputs, dtype), "m": network.m, "n": network.n,
              "b": network.b, "wo": readout, "so": np.ones(readout.shape[1], dtype),
              "h0": (x0 - network.b).astype(dtype)}
    state = {key: torch.from_numpy(np.array(arrays[key], order="C")) for key in LINT_KEYS}  # writable copies
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(os.fspath(path), buffer.getvalue())


# --------------------------------------------------------------------------- NWB


def _pynwb():
    try:
        import pynwb
    except ImportError as exc:
        raise ImportError("NWB files need pynwb. Install it with `pip install connector-sim[nwb]` (or "
                          "`pip install pynwb`).") from exc
    return pynwb


def write_nwb(path, data, *, dt=None, latents=None, start_time=None, session_description="connector_sim simulation",
              identifier=None, rates_name="rates", units_as_spikes=None):
    """Write trial data as an NWB file that other NWB tools read.

    Trials are laid end to end (no padding): trial k occupies bins
    ``offset_k .. offset_k + lengths[k] - 1`` of a time base with step dt,
    and the trials table gets ``start_time = offset_k dt``, ``stop_time =
    (offset_k + lengths[k]) dt``. Then

    - rates (``data.kind == "rates"``): a ``TimeSeries`` ``rates_name`` in
      the acquisition group, data (n_bins, n_neurons), ``rate = 1 / dt``;
    - spike counts (``kind == "counts"``): the Units table, one unit per
      neuron, c spikes at the centre of a bin holding c (reading it back
      with bins of dt and no smoothing gives the counts again);
    - inputs: a stimulus ``TimeSeries`` "inputs" (n_bins, D);
    - latents (optional, e.g. ``SimulationResult.kappa``): a ``TimeSeries``
      "latents" in the processing module "dynamics".

    Parameters
    ----------
    path : str or os.PathLike
        Ends in ``.nwb``; written atomically.
    data : TrialData
        See :func:`connector_sim.data.as_trial_data` (e.g.
        ``as_trial_data(result.rates)``).
    dt : float, optional
        Bin width in seconds; default ``data.dt``.
    latents : array-like of shape (n_trials, n_times, R), optional
        On the bins of ``data``.
    start_time : datetime, optional
        Session start (default: 1970-01-01 UTC, so that equal data give equal files).
    session_description, identifier : str, optional
    rates_name : str, default="rates"
    units_as_spikes : bool, optional
        Force the Units table (True) or the rates series (False); default by ``data.kind``.

    Raises
    ------
    ImportError
        If pynwb is not installed.
    TypeError
        If ``data`` is not a TrialData.
    ValueError
        If ``path`` does not end in ".nwb", neither ``dt`` nor ``data.dt`` is
        given, ``units_as_spikes=True`` is asked for rates, or ``latents`` do not
        match the trials and bins.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from connector_sim.data import as_trial_data
    >>> rates = np.random.default_rng(0).random((2, 5, 3))  # trials, bins, neurons
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "rates.nwb")
    >>> write_nwb(path, as_trial_data(rates, dt=0.1))
    >>> back = read_nwb_timeseries(path)
    >>> back.n_trials, bool(np.allclose(back.spikes, rates)), back.dt
    (2, True, 0.1)
    >>> folder.cleanup()
    """
    pynwb = _pynwb()
    import datetime
    import uuid

    path = os.fspath(path)
    if not path.endswith(".nwb"):
        raise ValueError(f"path must end in '.nwb'. Got {path!r}.")
    if not isinstance(data, TrialData):
        raise TypeError(f"data must be a TrialData (see connector_sim.data.as_trial_data). Got {type(data).__name__}.")
    dt = data.dt if dt is None else dt
    if dt is None:
        raise ValueError("Give dt (the bin width in seconds): the data has none.")
    dt = check_positive_scalar(dt, "dt", owner="write_nwb")
    spikes = data.kind == "counts" if units_as_spikes is None else bool(units_as_spikes)
    if spikes and (np.any(data.spikes != np.round(data.spikes)) or np.any(data.spikes < 0)):
        raise ValueError("units_as_spikes=True needs non-negative integer spike counts; these are rates.")
    mask = data.mask()
    flat = data.spikes[mask]  # (n_bins, N), trials end to end
    offsets = np.concatenate([[0], np.cumsum(data.lengths)])
    if latents is not None:
        latents = np.asarray(latents, dtype=np.float64)
        if latents.ndim != 3 or latents.shape[:2] != data.spikes.shape[:2]:
            raise ValueError(f"latents must have shape ({data.n_trials}, {data.n_times}, R), the trials and bins of "
                             f"the data. Got shape {latents.shape}.")
    start_time = start_time or datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    nwbfile = pynwb.NWBFile(session_description=session_description,
                            identifier=identifier or str(uuid.uuid4()), session_start_time=start_time)
    if spikes:
        centres = (np.arange(len(flat)) + 0.5) * dt
        for i in range(data.n_neurons):
            counts = flat[:, i].astype(np.int64)
            nwbfile.add_unit(spike_times=np.repeat(centres, counts))
    else:
        nwbfile.add_acquisition(pynwb.TimeSeries(name=rates_name, data=flat, unit="a.u.", rate=1.0 / dt,
                                                 starting_time=0.0, description="firing rates, trials end to end"))
    if data.inputs is not None:
        nwbfile.add_stimulus(pynwb.TimeSeries(name="inputs", data=data.inputs[mask], unit="a.u.", rate=1.0 / dt,
                                              starting_time=0.0, description="external inputs u_t"))
    if latents is not None:
        module = nwbfile.create_processing_module(name="dynamics", description="latent trajectories")
        module.add(pynwb.TimeSeries(name="latents", data=latents[mask], unit="a.u.", rate=1.0 / dt,
                                    starting_time=0.0, description="latents kappa_t"))
    for k in range(data.n_trials):
        nwbfile.add_trial(start_time=offsets[k] * dt, stop_time=offsets[k + 1] * dt)

    def write(stream):
        # NWBHDF5IO needs a named file: write next to the stream's temporary file, then copy its bytes.
        import tempfile

        folder = os.path.dirname(os.path.abspath(path))
        handle, scratch = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".nwb")
        os.close(handle)
        try:
            with pynwb.NWBHDF5IO(scratch, "w") as io_:
                io_.write(nwbfile)
            with open(scratch, "rb") as source:
                stream.write(source.read())
        finally:
            os.unlink(scratch)

    write_atomic(path, write)


def _series(nwbfile, name, path):
    """The TimeSeries ``name`` from acquisition, stimulus or any processing module."""
    for group in (nwbfile.acquisition, nwbfile.stimulus):
        if name in group:
            return group[name]
    for module in nwbfile.processing.values():
        if name in module.data_interfaces:
            return module.data_interfaces[name]
    found = sorted(set(nwbfile.acquisition) | set(nwbfile.stimulus)
                   | {key for module in nwbfile.processing.values() for key in module.data_interfaces})
    raise ValueError(f"{path!r} has no TimeSeries named {name!r}. Found {found}.")


def _series_bins(series, starts, stops, path):
    """Per trial, the indices of the series' samples with time in [start, stop)."""
    n_samples = len(series.data)
    if series.timestamps is not None:
        times = np.asarray(series.timestamps[:], dtype=np.float64)
        rate = None
        # Timestamps summed from intervals carry rounding: a tolerance of 1e-6 of the median interval.
        half = 1e-6 * float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    else:
        rate = float(series.rate)
        times = float(series.starting_time or 0.0) + np.arange(n_samples) / rate
        half = 0.5 / rate
    bins = []
    for k, (start, stop) in enumerate(zip(starts, stops)):
        # A sample at time s belongs to [start, stop) when start <= s < stop; the slack (half a bin with a
        # rate) absorbs the rounding of j / rate against offset * dt.
        index = np.flatnonzero((times >= start - half) & (times < stop - half))
        if len(index) == 0:
            raise ValueError(f"{path!r}: trial {k} [{start}, {stop}) holds no sample of the TimeSeries "
                             f"{series.name!r}.")
        bins.append(index)
    return bins, (1.0 / rate if rate else None)


def nwb_rates_only(path):
    """Whether an NWB file has no (or an empty) units table but an acquisition TimeSeries "rates".

    False for a file that does not exist or that pynwb cannot read (the
    reader then reports the problem).

    Raises
    ------
    ImportError
        If pynwb is not installed.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from connector_sim.data import as_trial_data
    >>> rates = np.random.default_rng(0).random((2, 5, 3))  # trials, bins, neurons
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "rates.nwb")
    >>> write_nwb(path, as_trial_data(rates, dt=0.1))
    >>> nwb_rates_only(path)
    True
    >>> folder.cleanup()
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    pynwb = _pynwb()
    try:
        with pynwb.NWBHDF5IO(path, "r") as io_:
            nwbfile = io_.read()
            return (nwbfile.units is None or len(nwbfile.units) == 0) and "rates" in nwbfile.acquisition
    except (OSError, ValueError, KeyError):
        return False


def read_nwb_timeseries(path, *, name="rates", inputs="inputs", trials=None, kind="rates"):
    """Read a rates ``TimeSeries`` (and inputs) of an NWB file into trial data, cut by its trials table.

    Trial k holds the samples of the series with time in [start_time_k,
    stop_time_k) (as :func:`write_nwb` writes them; any TimeSeries with a
    ``rate`` or ``timestamps`` works).

    Parameters
    ----------
    path : str or os.PathLike
    name : str, default="rates"
        The TimeSeries (acquisition, stimulus or a processing module).
    inputs : str or None, default="inputs"
        A TimeSeries of inputs on the same samples; ignored when absent.
    trials : array-like of int, optional
        Rows of the trials table (default all).
    kind : {"rates", "counts"}, default="rates"

    Returns
    -------
    TrialData
        With ``dt = 1 / rate`` when the series has a rate.

    Raises
    ------
    ImportError
        If pynwb is not installed.
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file has no TimeSeries ``name`` or no trials table, ``trials``
        are not rows of it, or a trial holds no sample of the series.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from connector_sim.data import as_trial_data
    >>> rates = np.random.default_rng(0).random((2, 5, 3))  # trials, bins, neurons
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "rates.nwb")
    >>> write_nwb(path, as_trial_data(rates, dt=0.1))
    >>> data = read_nwb_timeseries(path, trials=[1])
    >>> data.n_trials, bool(np.allclose(data.spikes[0], rates[1]))
    (1, True)
    >>> folder.cleanup()
    """
    pynwb = _pynwb()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist (expected an NWB file).")
    with pynwb.NWBHDF5IO(path, "r") as io_:
        nwbfile = io_.read()
        series = _series(nwbfile, name, path)
        if nwbfile.trials is None or len(nwbfile.trials) == 0:
            raise ValueError(f"{path!r} has no trials table: cannot cut the TimeSeries {name!r} into trials.")
        starts = np.asarray(nwbfile.trials["start_time"][:], dtype=np.float64)
        stops = np.asarray(nwbfile.trials["stop_time"][:], dtype=np.float64)
        if trials is not None:
            rows = np.asarray(trials, dtype=np.int64).reshape(-1)
            if rows.size == 0 or rows.min() < -len(starts) or rows.max() >= len(starts):
                raise ValueError(f"trials must be rows of the trials table, in [0, {len(starts) - 1}]. Got {rows}.")
            starts, stops = starts[rows], stops[rows]
        values = np.asarray(series.data[:], dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        bins, dt = _series_bins(series, starts, stops, path)
        input_values = None
        if inputs is not None:
            try:
                input_series = _series(nwbfile, inputs, path)
            except ValueError:
                input_series = None
            if input_series is not None:
                input_values = np.asarray(input_series.data[:], dtype=np.float64)
                if input_values.ndim == 1:
                    input_values = input_values[:, None]
                input_bins, _ = _series_bins(input_series, starts, stops, path)
    rates = [values[index] for index in bins]
    u = None if input_values is None else [input_values[index] for index in input_bins]
    return as_trial_data(rates, u, kind=kind, dt=dt)


__all__ = [
    "LINT_KEYS",
    "LintNetwork",
    "OfficialData",
    "lint_noise_to_sigma",
    "load_lint_network",
    "load_official_data",
    "load_torch_tensors",
    "nwb_rates_only",
    "read_nwb_timeseries",
    "save_lint_network",
    "save_official_data",
    "sigma_to_lint_noise",
    "write_nwb",
]
