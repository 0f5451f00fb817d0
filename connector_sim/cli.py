"""Command line: ``connector-sim <subcommand>``.

The Connector workflow (theory section 3), one file per step::

    connector-sim simulate quadstable --n-neurons 500 --trials 64 --record-units all --out sim.npz
    connector-sim fit sim.npz --rank 2 --out lint.npz          # also writes lint_latents.npz
    connector-sim infer lint.npz --out connector_model          # a Connector folder
    connector-sim perturb connector_model --silence all --out perturb   # perturb.csv, perturb.json

``compress`` fits a dynamic compression flow to high-dimensional data (a
synthetic dataset name, an .npz or an NWB file) and compares it with PCA,
PCA + a linear dynamical system and LINT::

    connector-sim compress van_der_pol --out vdp --epochs 200

and ``demo`` (the embedded quadstable report), ``ddm SYSTEM`` (drift-diffusion
matching of a benchmark SDE: train, simulate at N = 1e5, compare; ``ddm
all`` writes the whole section) and ``backends`` (the built simulation
backends). Long steps show a progress bar with an ETA on stderr (``--quiet``:
none). Every option is checked before any work or any write. Bad input
(a missing or unreadable file, a wrong key, shape or value, an output path
that cannot be written, a missing optional dependency) ends the command with
a one-line message on stderr and exit status 2; SIGTERM ends it with status
143 and Ctrl-C with 130, removing any half-written temporary file.
"""

import argparse
import math
import os
import sys
import time

from .activations import BUILTIN_ACTIVATIONS
from ._files import (
    Terminated,
    check_folder_target,
    check_writable_file,
    check_writable_folder,
    json_safe,
    sigterm_as_exit,
)
from ._progress import Progress
from ._validation import MAX_THREADS

#: Exit status of a command stopped by bad input.
BAD_INPUT = 2

#: Exit status of a command stopped by another error of the system (a full disk, say).
FAILED = 1

#: Seeds are stored in the output files as int64.
MAX_SEED = 2**63 - 1

#: More epochs than this is a typo, not a training run (the paper trains for 1,000).
MAX_EPOCHS = 10**6


class CommandError(Exception):
    """Bad input found by a command; main prints the message and exits with :data:`BAD_INPUT`."""


#: Longest message printed (a compiled module's argument error can run to pages).
MAX_MESSAGE = 2000


def _one_line(exc):
    """An exception's message on one line (its type when it has none), at most MAX_MESSAGE characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 5] + " ..."


# --------------------------------------------------------------------------- shared helpers


def _stem(path):
    """``path`` without a trailing ``.npz``."""
    return os.fspath(path).removesuffix(".npz")


def _npz_path(path, option):
    """An output .npz path that can be written (checked before any work)."""
    if not os.fspath(path).endswith(".npz"):
        raise CommandError(f"{option} must name an .npz file. Got {path!r}.")
    _writable(path, option)
    return path


def _writable(path, option):
    try:
        check_writable_file(path, "the file")
    except OSError as exc:
        raise CommandError(f"{option}: {_one_line(exc)}") from None
    return path


def _check_int(arguments, name, minimum=1, maximum=None):
    """--name as an int in [minimum, maximum] (None: unset, allowed)."""
    value = getattr(arguments, name)
    option = "--" + name.replace("_", "-")
    if value is None:
        return None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise CommandError(f"{option} must be {bound}. Got {value}.")
    return value


def _check_float(arguments, name, *, positive=True):
    """--name as a finite number > 0 (or >= 0); None: unset, allowed."""
    value = getattr(arguments, name)
    option = "--" + name.replace("_", "-")
    if value is None:
        return None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise CommandError(f"{option} must be a finite number {'>' if positive else '>='} 0. Got {value!r}.")
    return value


def _check_seed(arguments):
    return _check_int(arguments, "seed", 0, MAX_SEED)


def _check_threads(arguments):
    """--threads: "auto" or an int in [1, MAX_THREADS], the library's limit (it checks again)."""
    if arguments.threads != "auto":
        _check_int(arguments, "threads", 1, MAX_THREADS)


def _threads_option(text):
    """argparse type of simulate's --threads: "auto" (threads only where they pay) or an int."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an int, got {text!r}") from None


def _require_inference():
    """Import the torch-based part first, so that a missing torch stops the command before any work."""
    from .inference import flows  # noqa: F401 (raises ImportError with how to install torch)


def _default_latents_path(network_path):
    return _stem(network_path) + "_latents.npz"


#: File layouts a command reads: this package's, the official Connector code's, LINT's (see connector_sim.interop).
FORMATS = ["auto", "native", "official", "lint"]


def _file_format(path, requested="auto"):
    """'native', 'official' or 'lint': ``requested``, or detected from the suffix and the keys of the file.

    ``.pt`` / ``.pth``: an official Connector checkpoint when it holds 'model_state_dict', else a LINT network;
    ``.npz`` with 'MBD': official Connector data. A file that cannot be read is left to its reader to report.
    """
    if requested != "auto":
        return requested
    path = os.fspath(path)
    if path.endswith((".pt", ".pth")):
        if os.path.isfile(path):
            from .interop import load_torch_tensors

            try:
                content = load_torch_tensors(path, "a LINT network or an official Connector checkpoint")
            except ValueError:
                return "lint"
            if isinstance(content, dict) and "model_state_dict" in content:
                return "official"
        return "lint"
    if path.endswith(".npz") and os.path.isfile(path):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                return "official" if "MBD.npy" in archive.namelist() else "native"
        except Exception:  # noqa: BLE001 - a damaged file is reported by the reader it goes to
            return "native"
    return "native"


def _load_foreign_network(value, file_format):
    """(network, description) of an official Connector data file or a LINT network file."""
    if file_format == "lint":
        from .interop import load_lint_network

        if not os.fspath(value).endswith((".pt", ".pth")):
            raise CommandError(f"--format lint reads a LINT network .pt file. Got {value!r}.")
        network = load_lint_network(value).network
        return network, (f"LINT network {value} (N = {network.n_neurons}, rank {network.rank}; LINT's alpha is "
                         "--dt / tau, 0.2 in its tasks)")
    from .interop import load_official_data

    if os.fspath(value).endswith((".pt", ".pth")):
        raise CommandError(f"{value!r} is an official Connector checkpoint, a connectivity distribution rather than "
                           "one network: give it to `perturb` (which samples a network from it).")
    if not os.fspath(value).endswith(".npz"):
        raise CommandError(f"An official Connector network is a data .npz with 'MBD' and 'N'. Got {value!r}.")
    network = load_official_data(value).network
    if network is None:
        raise CommandError(f"{value!r} has 'MBD' but no 'N' (left factors): it holds no whole network.")
    return network, f"official Connector data {value} (N = {network.n_neurons}, rank {network.rank})"


def _load_network_argument(value, n_neurons, seed, file_format="auto", shared=False):
    """(network, labels or None, description, latent extent) of a synthetic name or a network file.

    ``shared``: read a network file through the per-process cache of :class:`connector_sim.parallel.NetworkFile`,
    where a sweep given its path finds it (one copy in memory).
    """
    import numpy as np

    from .data import load_network
    from .synthetic import SYNTHETIC_NETWORKS, gaussian_network_distribution, quadstable_network

    if value in SYNTHETIC_NETWORKS:
        # Not synthetic_network(): it also simulates 400 reference trajectories, which large N does not need.
        if value == "quadstable":
            network, labels = quadstable_network(n_neurons, random_state=seed)
        else:
            network = gaussian_network_distribution(value).sample(n_neurons, random_state=seed)
            labels = np.zeros(n_neurons, np.int64)
        return network, labels, f"{value} (N = {n_neurons}, seed {seed})", 2.4
    file_format = _file_format(value, file_format)
    if file_format in ("official", "lint"):
        network, description = _load_foreign_network(value, file_format)
        return network, None, description, _latent_extent(network)
    if not value.endswith(".npz"):
        raise CommandError(f"network must be one of {list(SYNTHETIC_NETWORKS)} or a network .npz file (written by "
                           f"`connector-sim fit` or connector_sim.data.save_network). Got {value!r}.")
    if shared:
        from .parallel import NetworkFile

        network, extra = NetworkFile(value, owner="connector-sim").load()
    else:
        network, extra = load_network(value, return_extra=True)
    labels = extra.get("labels")
    if labels is not None and labels.shape != (network.n_neurons,):
        raise CommandError(f"{value!r}: 'labels' must hold one cell type per neuron, shape ({network.n_neurons},). "
                           f"Got shape {labels.shape}.")
    return network, labels, f"{value} (N = {network.n_neurons}, rank {network.rank})", _latent_extent(network)


def _latent_extent(network):
    """Half-width of a box holding a network's fixed points: 1.2 mean |n_i| (as Connector.fit uses)."""
    import numpy as np

    return 1.2 * float(np.mean(np.linalg.norm(network.n, axis=1)))


def _initial_latents(n_trials, rank, extent, init, seed):
    """kappa_0 of shape (n_trials, rank): evenly spaced points of a square grid (rank 2) or uniform draws."""
    import numpy as np

    from .synthetic import latent_grid

    if init == "grid":
        if rank != 2:
            raise CommandError(f"--init grid needs a rank-2 network; this one has rank {rank}. Use --init random.")
        per_axis = math.ceil(math.sqrt(n_trials))
        grid = latent_grid(per_axis, extent)
        return grid[np.round(np.linspace(0, len(grid) - 1, n_trials)).astype(int)]
    from ._memory import check_allocation

    check_allocation(8 * 2 * n_trials * rank, f"{n_trials} initial latents", "Use fewer --trials.")
    return np.random.default_rng(seed).uniform(-extent, extent, size=(n_trials, rank))


def _record_units(value):
    """--record-units: None, "all" or a number of units (their indices depend on the network's size)."""
    if value is None or value == "none":
        return None
    if value == "all":
        return "all"
    try:
        count = int(value)
    except ValueError:
        raise CommandError(f"--record-units must be 'none', 'all' or a number of units. Got {value!r}.") from None
    if count < 1:
        raise CommandError(f"--record-units must be at least 1. Got {count}.")
    return count


def _record_indices(record, n_neurons):
    import numpy as np

    return np.arange(min(record, n_neurons)) if isinstance(record, int) else record


def _distinct_rows(points, decimals=1):
    import numpy as np

    return np.unique(np.round(points, decimals) + 0.0, axis=0)


def _format_points(points):
    return "[" + ", ".join("(" + ", ".join(f"{x:.2f}" for x in point) + ")" for point in points) + "]"


def _r2(target, prediction):
    import numpy as np

    residual = np.sum((target - prediction) ** 2)
    total = np.sum((target - target.mean(axis=0)) ** 2)
    return float(1 - residual / total) if total > 0 else float("nan")


# --------------------------------------------------------------------------- simulate


def _simulate(arguments):
    """Simulate a synthetic or saved network from a set of initial latents; write its latents (and rates)."""
    from .data import save_arrays, save_network
    from .simulate import simulate

    # Every option first: nothing runs, and nothing is written, on bad input.
    out = _npz_path(arguments.out, "--out")
    if arguments.network_out is not None:
        _npz_path(arguments.network_out, "--network-out")
        if os.path.abspath(arguments.network_out) == os.path.abspath(out):
            raise CommandError(f"--network-out must differ from --out (both are {out!r}).")
    for name in ("n_neurons", "trials", "n_steps"):
        _check_int(arguments, name)
    _check_seed(arguments)
    _check_threads(arguments)
    _check_float(arguments, "dt")
    _check_float(arguments, "extent")
    _check_float(arguments, "noise_std", positive=False)
    record = _record_units(arguments.record_units)
    if arguments.mpi:
        return _simulate_mpi(arguments, out, record)
    network, labels, description, extent = _load_network_argument(arguments.network, arguments.n_neurons,
                                                                   arguments.seed, arguments.format)
    extent = extent if arguments.extent is None else arguments.extent
    init = arguments.init or ("grid" if network.rank == 2 else "random")
    kappa0 = _initial_latents(arguments.trials, network.rank, extent, init, arguments.seed)
    dt = 0.1 * network.tau if arguments.dt is None else arguments.dt
    record = _record_indices(record, network.n_neurons)
    result = simulate(network, arguments.n_steps, dt=dt, kappa0=kappa0, noise_std=arguments.noise_std,
                      seed=arguments.seed, record_units=record, backend=arguments.backend,
                      n_threads=arguments.threads, progress=arguments.progress.steps("simulate"))
    arrays = dict(kappa=result.kappa, v=result.v, time=result.time, kappa0=kappa0, dt=dt, tau=network.tau,
                  alpha=result.alpha, seed=arguments.seed, noise_std=arguments.noise_std, n_neurons=network.n_neurons,
                  backend=result.backend, path=result.path)
    if result.units is not None:
        arrays.update(units=result.units, rates=result.rates)
        if labels is not None:
            arrays["unit_labels"] = labels[result.units]
    save_arrays(out, **arrays)
    if arguments.network_out is not None:
        save_network(arguments.network_out, network, **({} if labels is None else {"labels": labels}))
    ends = _distinct_rows(result.kappa[:, -1])
    recorded = "no units recorded" if result.units is None else f"{len(result.units)} units recorded"
    arguments.progress.close()  # the bar ends before the summary
    print(f"simulate: {description}, {arguments.trials} trials x {arguments.n_steps} steps (dt {dt:g}, noise "
          f"{arguments.noise_std:g}) on {result.backend}/{result.path} in {result.wall_time:.2f} s; {recorded}; "
          f"{len(ends)} distinct end states{' ' + _format_points(ends) if len(ends) <= 8 else ''} -> {out}")
    return 0


def _simulate_mpi(arguments, out, record):
    """simulate --mpi: one network on the processes of MPI.COMM_WORLD (mpirun -n P); rank 0 writes --out."""
    from . import distributed
    from .data import save_arrays
    from .network import LowRankRNN
    from .synthetic import SYNTHETIC_NETWORKS, gaussian_network_distribution, quadstable_mixture

    if arguments.network_out is not None:
        raise CommandError("--network-out does not go with --mpi: no process holds the whole network. A synthetic "
                           "network is sample_slice(distribution, N, seed) (connector_sim.distributed).")
    comm = distributed._check_comm(None, "simulate --mpi")
    if arguments.network in SYNTHETIC_NETWORKS:
        # Sampled slice by slice from the counter-based generator: the same network for any number of
        # processes, but not the one `simulate` without --mpi samples (a sequential generator).
        distribution = (quadstable_mixture() if arguments.network == "quadstable"
                        else gaussian_network_distribution(arguments.network))
        network = distributed.DistributedNetwork.from_distribution(distribution, arguments.n_neurons,
                                                                   arguments.seed, comm)
        description = f"{arguments.network} (N = {arguments.n_neurons}, seed {arguments.seed}, counter-based)"
        extent = 2.4
    else:
        whole, _, description, extent = _load_network_argument(arguments.network, arguments.n_neurons,
                                                              arguments.seed, arguments.format)
        if type(whole) is not LowRankRNN:
            raise CommandError(f"--mpi simulates dense networks only. Got a {whole.__class__.__name__}.")
        network = distributed.DistributedNetwork.from_network(whole, comm)
        del whole
    extent = extent if arguments.extent is None else arguments.extent
    init = arguments.init or ("grid" if network.rank == 2 else "random")
    kappa0 = _initial_latents(arguments.trials, network.rank, extent, init, arguments.seed)
    dt = 0.1 * network.tau if arguments.dt is None else arguments.dt
    record = _record_indices(record, network.n_neurons)
    result = distributed.simulate_distributed(
        network, arguments.n_steps, dt=dt, kappa0=kappa0, noise_std=arguments.noise_std, seed=arguments.seed,
        record_units=record, backend=arguments.backend, n_threads=arguments.threads,
        progress=arguments.progress.steps("simulate"))
    if network.mpi_rank == 0:
        arrays = dict(kappa=result.kappa, v=result.v, time=result.time, kappa0=kappa0, dt=dt, tau=network.tau,
                      alpha=result.alpha, seed=arguments.seed, noise_std=arguments.noise_std,
                      n_neurons=network.n_neurons, backend=result.backend, path=result.path, n_ranks=network.n_ranks)
        if result.units is not None:
            arrays.update(units=result.units, rates=result.rates)
        save_arrays(out, **arrays)
        arguments.progress.close()
        print(f"simulate --mpi: {description} on {network.n_ranks} processes, {arguments.trials} trials x "
              f"{arguments.n_steps} steps (dt {dt:g}, noise {arguments.noise_std:g}) on {result.backend}/"
              f"{result.path} in {result.wall_time:.2f} s -> {out}")
    comm.Barrier()  # every rank returns once the file is written
    return 0


# --------------------------------------------------------------------------- fit


def _read_neural_data(path):
    """rates (n_trials, n_times, N), inputs or None, lengths or None, kappa or None, dt, tau of a data file."""
    import numpy as np

    from .data import load_arrays

    if os.fspath(path).endswith(".nwb"):
        from .data import read_nwb

        if not os.path.isfile(path):
            raise FileNotFoundError(f"{os.fspath(path)!r} does not exist (expected an NWB file of neural data).")
        data = read_nwb(path)  # units binned into rates, or a rates TimeSeries
        return data.spikes, data.inputs, data.lengths, None, data.dt, None
    arrays = load_arrays(path, what="neural data ('rates' of shape (n_trials, n_times, n_neurons), optional "
                                    "'inputs' (n_trials, n_times, D), 'lengths', 'kappa')")
    key = "rates" if "rates" in arrays else "spikes" if "spikes" in arrays else None
    if key is None:
        hint = (" It looks like a simulation without recorded units: simulate again with --record-units all."
                if "kappa" in arrays else "")
        raise CommandError(f"{path!r} has no 'rates' (or 'spikes') array of shape (n_trials, n_times, n_neurons). "
                           f"Found {sorted(arrays)}.{hint}")
    for name in (key, "inputs", "externalinputs", "kappa", "lengths", "dt", "tau"):
        if name in arrays:
            _check_real(path, name, arrays[name])
    rates = arrays[key]
    if rates.ndim != 3:
        raise CommandError(f"{path!r}: '{key}' must have shape (n_trials, n_times, n_neurons). Got shape "
                           f"{rates.shape}.")
    inputs = arrays.get("inputs", arrays.get("externalinputs"))
    if inputs is not None and inputs.size == 0:
        inputs = None
    kappa = arrays.get("kappa", arrays.get("latents"))  # 'latents': the official Connector data layout
    if kappa is not None and (kappa.ndim != 3 or kappa.shape[:2] != rates.shape[:2]):
        raise CommandError(f"{path!r}: 'kappa' must hold latents of the same trials and bins as '{key}', shape "
                           f"({rates.shape[0]}, {rates.shape[1]}, R). Got shape {kappa.shape}.")
    dt = _file_scalar(path, arrays, "dt")
    tau = _file_scalar(path, arrays, "tau")
    lengths = arrays.get("lengths")
    return np.asarray(rates, np.float64), inputs, lengths, kappa, dt, tau


def _check_real(path, name, array):
    """A numeric array of a data file must be real: a complex one is an error, never silently truncated."""
    import numpy as np

    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == bool):
        raise CommandError(f"{path!r}: '{name}' must be a real numeric array. Got dtype {array.dtype}.")


def _file_scalar(path, arrays, name):
    """A positive finite scalar of a data file (dt, tau), or None when absent."""
    if name not in arrays:
        return None
    value = arrays[name]
    if value.size != 1 or not math.isfinite(float(value.reshape(-1)[0])) or float(value.reshape(-1)[0]) <= 0:
        raise CommandError(f"{path!r}: '{name}' must be a single finite number > 0. Got {value!r}.")
    return float(value.reshape(-1)[0])


def _fit(arguments):
    """Fit a low-rank RNN to neural data (LINT, or velocity matching on given latents)."""
    import numpy as np

    from .data import save_arrays, save_network

    # Every option first: nothing runs, and nothing is written, on bad input.
    out = _npz_path(arguments.out, "--out")
    latents_out = _npz_path(arguments.latents_out or _default_latents_path(out), "--latents-out")
    if os.path.abspath(latents_out) == os.path.abspath(out):
        raise CommandError(f"--latents-out must differ from --out (both are {out!r}).")
    for name in ("rank", "n_neurons"):
        _check_int(arguments, name)
    _check_int(arguments, "epochs", 1, MAX_EPOCHS)
    _check_seed(arguments)
    _check_float(arguments, "dt")
    _check_float(arguments, "tau")
    _require_inference()
    rates, inputs, lengths, kappa, file_dt, file_tau = _read_neural_data(arguments.data)
    tau = arguments.tau if arguments.tau is not None else file_tau if file_tau is not None else 1.0
    dt = arguments.dt if arguments.dt is not None else file_dt if file_dt is not None else 0.1 * tau
    rank = arguments.rank if arguments.rank is not None else None if kappa is None else kappa.shape[2]
    if rank is None:
        raise CommandError("Give --rank (the data file has no 'kappa' latents to take it from).")
    n_trials, n_times, n_neurons = rates.shape
    if arguments.method == "lint" and rank > n_neurons:
        raise CommandError(f"--rank {rank} is more than the data's {n_neurons} neurons: a rank-R network needs "
                           f"R <= N. Give --rank {n_neurons} or less.")
    started = time.perf_counter()
    if arguments.method == "lint":
        from .inference.lint import LINT
        from .latents import align_latents

        lint = LINT(rank=rank, dt=dt, tau=tau, activation=arguments.activation, n_epochs=arguments.epochs,
                    random_state=arguments.seed, callback=arguments.progress.epochs("fit LINT"))
        lint._check_params()
        _fit_or_interrupt(lint, rates, inputs, lengths)
        network, latents = lint.network_, lint.latents_
        message = (f"LINT rank {rank} on {n_trials} trials x {n_times} bins x {n_neurons} neurons, "
                   f"{lint.n_epochs_} epochs (best {lint.best_epoch_}): rate R^2 = "
                   f"{lint.score(rates, inputs, lengths):.4f}")
        if kappa is not None and kappa.shape[2] == rank:
            # The data's own latents (a simulation's): write the fit in their coordinates.
            alignment = align_latents(latents, kappa)
            network, latents = alignment.transform_network(network), alignment.transform(latents)
            message += f"; latents aligned to the data's kappa, R^2 = {alignment.r2:.4f}"
    else:
        from .inference.velocity_matching import VelocityMatching, velocity_samples

        if kappa is None:
            raise CommandError(f"--method velocity matches the latent velocity of given trajectories: "
                               f"{arguments.data!r} needs a 'kappa' array (n_trials, n_times, R), e.g. from "
                               "`connector-sim simulate`. Use --method lint for rates alone.")
        if arguments.rank is not None and arguments.rank != kappa.shape[2]:
            raise CommandError(f"--rank {arguments.rank} disagrees with the data's latents, which have "
                               f"{kappa.shape[2]} dimension(s).")
        if lengths is not None and np.any(np.asarray(lengths) != n_times):
            raise CommandError("--method velocity needs trials of equal length (the data has 'lengths' below "
                               f"{n_times}). Use --method lint.")
        matcher = VelocityMatching(n_neurons=arguments.n_neurons or n_neurons, tau=tau, n_epochs=arguments.epochs,
                                   activation=arguments.activation, random_state=arguments.seed,
                                   callback=arguments.progress.epochs("fit velocity matching"))
        if matcher.n_neurons < rank:
            raise CommandError(f"--n-neurons {matcher.n_neurons} is less than the latents' rank {rank}: a rank-R "
                               "network needs R <= N.")
        points, velocity, v = velocity_samples(kappa, dt, tau=tau, inputs=inputs)
        _fit_or_interrupt(matcher, points, velocity, v)
        network, latents = matcher.network_, np.asarray(kappa, np.float64)
        message = (f"velocity matching, N = {network.n_neurons}, rank {rank}, on {len(points)} latent points, "
                   f"{matcher.n_epochs_} epochs (best {matcher.best_epoch_}): velocity R^2 = "
                   f"{_r2(velocity, matcher.predict(points, v)):.4f}")
    extra = {} if inputs is None else {"inputs": inputs}
    if lengths is not None:
        extra["lengths"] = lengths
    save_network(out, network)
    save_arrays(latents_out, kappa=latents, alpha=dt / tau, dt=dt, tau=tau, method=arguments.method, **extra)
    arguments.progress.close()  # the bar ends before the summary
    print(f"fit: {message} ({time.perf_counter() - started:.1f} s) -> {out}, {latents_out}")
    return 0


# --------------------------------------------------------------------------- infer


def _infer(arguments):
    """Fit Connector to a fitted network and its latents; save the model folder."""
    import numpy as np

    from .data import load_arrays, load_network
    from .mean_field import latent_velocity

    # Every option first: nothing is trained, and nothing written, on bad input.
    for name in ("hidden", "layers", "flow_samples"):
        _check_int(arguments, name)
    if arguments.epochs is None:
        arguments.epochs = 1000 if arguments.official else 300
    _check_int(arguments, "epochs", 1, MAX_EPOCHS)
    _check_seed(arguments)
    _check_float(arguments, "n_covariance", positive=False)
    if arguments.ridge_constant != "cv":
        try:
            arguments.ridge_constant = float(arguments.ridge_constant)
        except ValueError:
            raise CommandError(f"--ridge-constant must be a number > 0 or 'cv'. Got {arguments.ridge_constant!r}.") \
                from None
        if not np.isfinite(arguments.ridge_constant) or arguments.ridge_constant <= 0:
            raise CommandError(f"--ridge-constant must be a finite number > 0 (c of lambda = c N) or 'cv'. Got "
                               f"{arguments.ridge_constant!r}.")
    if arguments.ridge_scaling is None:
        arguments.ridge_scaling = "paper" if arguments.official else "linear"
    if arguments.regression_sampling is None:
        arguments.regression_sampling = "random" if arguments.official else "sobol"
    try:
        check_folder_target(arguments.out, ("config.json", "weights.pt"), probe=True)
    except OSError as exc:
        raise CommandError(f"--out must be a folder that a Connector can be saved as: {_one_line(exc)}") from None
    _require_inference()
    from .inference.connector import Connector

    options = dict(hidden=arguments.hidden, n_layers=arguments.layers, n_covariance=arguments.n_covariance,
                   ridge_scaling=arguments.ridge_scaling, ridge_constant=arguments.ridge_constant,
                   regression_sampling=arguments.regression_sampling, random_state=arguments.seed)
    if arguments.official:
        connector = Connector.official(n_epochs=arguments.epochs, **options)
    else:
        connector = Connector(n_epochs=arguments.epochs, **options)
    connector.callback = arguments.progress.epochs("infer", ("marginal flow", "conditional flow"))
    connector._check_params()
    connector._cnf(arguments.epochs, arguments.seed)._check_params()
    file_format = _file_format(arguments.network, arguments.format)
    latents_path = arguments.latents or _default_latents_path(arguments.network)
    if file_format == "official" and str(arguments.network).endswith((".pt", ".pth")):
        raise CommandError(f"{arguments.network!r} is an official Connector checkpoint, already a Connector: "
                           "give it to `perturb`, or infer from the data .npz it was fitted to.")
    if file_format == "official" and arguments.latents is None:
        # Official Connector data holds the network and its latents (alpha 0.1, the file does not store it).
        from .interop import load_official_data

        official = load_official_data(arguments.network)
        if official.network is None or official.latents is None:
            raise CommandError(f"{arguments.network!r} needs 'N' (left factors) and 'latents' to fit Connector to.")
        network, latents_path = official.network, arguments.network
        latents = {"kappa": official.latents, "alpha": np.asarray(official.alpha)}
        if official.data is not None and official.data.inputs is not None:
            latents["inputs"] = official.data.inputs
    else:
        network = (load_network(arguments.network) if file_format == "native"
                   else _load_foreign_network(arguments.network, file_format)[0])
        latents = load_arrays(latents_path, ("kappa", "alpha"),
                              what="latents ('kappa' (n_trials, n_times, R) and 'alpha'; written by `connector-sim "
                                   "fit`)")
    kappa = latents["kappa"]
    if kappa.ndim != 3 or kappa.shape[2] != network.rank or kappa.shape[1] < 2:
        raise CommandError(f"{latents_path!r}: 'kappa' must have shape (n_trials, n_times >= 2, {network.rank}) for "
                           f"the rank-{network.rank} network {arguments.network!r}. Got shape {kappa.shape}.")
    inputs = latents.get("inputs")
    if inputs is not None and inputs.size == 0:
        inputs = None
    if (inputs is not None) != (network.n_inputs > 0) or (inputs is not None and inputs.shape[2] != network.n_inputs):
        raise CommandError(f"The network has {network.n_inputs} input(s) but the latents file has "
                           f"{0 if inputs is None else inputs.shape[2]} input channel(s): give the latents written "
                           "with this network.")
    for name in ("kappa", "inputs", "alpha"):
        if name in latents:
            _check_real(latents_path, name, latents[name])
    from ._memory import check_allocation

    # The mean-field check after the save: rows [m, n, I, b] of --flow-samples draws, and their copies.
    check_allocation(8 * 4 * arguments.flow_samples * (2 * network.rank + network.n_inputs + 1),
                     f"--flow-samples {arguments.flow_samples}: the mean-field check's samples",
                     "Use fewer --flow-samples (default 20000).")
    alpha = _file_scalar(latents_path, latents, "alpha")
    if alpha > 1:
        raise CommandError(f"{latents_path!r}: 'alpha' = dt / tau must be in (0, 1]. Got {alpha!r}.")
    started = time.perf_counter()
    connector.fit(network, kappa, inputs=None if inputs is None else inputs[:, :kappa.shape[1] - 1], alpha=alpha)
    connector.save(arguments.out)
    history = connector.marginal_.history_
    best = history.get("best_epoch")
    validation = history["val_loss"][best] if best is not None and history.get("val_loss") else float("nan")
    # Does the learned distribution have the fitted network's dynamics? Mean-field velocity (theory eq. 4)
    # against the network's own: at latent points drawn uniformly over the box the latents span (the
    # trajectories themselves sit mostly near fixed points, where both velocities are small), or at the
    # trajectory points with their filtered inputs when there are inputs.
    rng = np.random.default_rng(arguments.seed)
    visited = kappa.reshape(-1, network.rank)
    if inputs is None:
        points = rng.uniform(visited.min(axis=0), visited.max(axis=0), size=(1000, network.rank))
        v_points = None
    else:
        from .latents import filtered_inputs

        v = filtered_inputs(inputs, alpha)  # v_t on the latents' frames
        keep = rng.permutation(kappa.shape[0] * kappa.shape[1])[:1000]
        points, v_points = visited[keep], v.reshape(-1, network.n_inputs)[keep]
    source = connector.empirical(arguments.flow_samples, arguments.seed, conditional_mean=True)
    flow_r2 = _r2(latent_velocity(network, points, v_points), latent_velocity(source, points, v_points))
    arguments.progress.close()  # the bar ends before the summary
    print(f"infer: Connector on {network.n_neurons} rows (rank {network.rank}, {network.n_inputs} inputs), "
          f"{len(history['train_loss'])} epochs in {time.perf_counter() - started:.1f} s; marginal CNF held-out "
          f"flow-matching loss {validation:.4f} (best epoch {None if best is None else best + 1}); mean-field "
          f"velocity R^2 against the network's at {len(points)} latent points = {flow_r2:.4f} -> {arguments.out}")
    print(f"infer: conditional-mean ridge {_ridge_summary(connector)}")
    return 0


def _ridge_summary(connector):
    """How the Connector's ridge lambda was chosen, in one line."""
    n_rows = connector.n_regression_samples
    if connector.ridge is not None:
        return f"lambda = {connector.ridge_lambda_:.4g} (given)"
    if connector.ridge_scaling == "paper":
        return (f"lambda = lambda_p N^2 / alpha^2 = {connector.ridge_lambda_:.4g} (paper scaling, lambda_p = "
                f"{connector.ridge_constant_:g}, N = {n_rows} {connector.regression_sampling} rows)")
    how = "given"
    if connector.ridge_cv_scores_ is not None:
        how = (f"cross-validated over trials from {len(connector.ridge_cv_constants_)} values in "
               f"[{connector.ridge_cv_constants_.min():g}, {connector.ridge_cv_constants_.max():g}], held-out "
               f"latent-velocity MSE {connector.ridge_cv_scores_.min():.3g}")
    return f"lambda = c N = {connector.ridge_lambda_:.4g} (linear scaling, c = {connector.ridge_constant_:g} {how}, " \
           f"N = {n_rows} {connector.regression_sampling} rows)"


# --------------------------------------------------------------------------- perturb


def _parse_units(text, n_neurons):
    """Unit indices from '0:10,15,20:25' (Python slices, stop excluded), each in [0, n_neurons).

    With ``n_neurons=None`` only the syntax is checked (nothing is expanded).
    """
    import numpy as np

    parts = []
    try:
        for part in text.split(","):
            bounds = [int(value) for value in part.split(":")] if ":" in part else [int(part), int(part) + 1]
            if len(bounds) != 2:
                raise ValueError
            parts.append(bounds)
    except ValueError:
        raise CommandError(f"--silence-units takes indices and ranges like '0:10,15'. Got {text!r}.") from None
    if n_neurons is None:
        return None
    if not parts or any(start < 0 or stop > n_neurons or start >= stop for start, stop in parts):
        raise CommandError(f"--silence-units must name units in [0, {n_neurons - 1}] (ranges start:stop with "
                           f"start < stop). Got {text!r}.")
    return np.unique(np.concatenate([np.arange(start, stop) for start, stop in parts]))


def _perturbation_source(arguments):
    """(network, labels or None, description, features to cluster) of a Connector folder or a network file."""
    import numpy as np

    source = arguments.source
    file_format = "native" if os.path.isdir(source) else _file_format(source, arguments.format)
    checkpoint = file_format == "official" and source.endswith((".pt", ".pth"))
    if os.path.isdir(source) or checkpoint:
        _require_inference()
        from .inference.connector import Connector

        if checkpoint:
            from .inference.interop import load_official_checkpoint

            connector = load_official_checkpoint(source)
        else:
            try:
                connector = Connector.load(source)
            except (FileNotFoundError, ValueError, KeyError) as exc:
                raise CommandError(f"{source!r} is not a Connector folder (written by `connector-sim infer`): {exc}")
        network, rows = connector.sample(arguments.n_neurons, arguments.seed, return_rows=True)
        layout = connector.layout_
        features = rows[:, layout.m.start:layout.n.stop]  # [m, n]
        return network, None, f"Connector {source!r} sampled at N = {arguments.n_neurons}", features
    if os.path.isfile(source) or source.endswith(".npz"):
        network, labels, description, _ = _load_network_argument(source, None, arguments.seed, file_format,
                                                                 shared=True)
        return network, labels, description, np.hstack([network.m, network.n])
    raise CommandError(f"source must be a Connector folder or a network .npz file. {source!r} does not exist.")


def _cell_types(arguments, features, labels):
    """(labels, cell-type summary or None): the file's labels, or clusters of the rows [m, n]."""
    import numpy as np

    from .cell_types import find_cell_types

    summary = None
    if labels is None or arguments.cluster:
        subset = features[np.random.default_rng(arguments.seed).permutation(len(features))[:arguments.cell_type_samples]]
        found = find_cell_types(subset, k_range=range(1, arguments.k_max + 1), random_state=arguments.seed,
                                scheduler=getattr(arguments, "scheduler", None))
        labels = found.model.predict(features).astype(np.int64)
        summary = {"n_types": found.n_types, "criterion": found.criterion,
                   "scores": {key: np.asarray(value).tolist() for key, value in found.scores.items()}}
    return np.asarray(labels, np.int64), summary


def _check_scheduler(arguments):
    """--scheduler: parsed, and Dask importable if asked for, before any work."""
    from .parallel import check_scheduler, require_dask

    try:
        kind, _ = check_scheduler(arguments.scheduler, f"connector-sim {arguments.command}")
    except ValueError:
        raise CommandError(f"--scheduler takes serial, processes[:N], dask[:N], dask://HOST:PORT or tcp://HOST:PORT. "
                           f"Got {arguments.scheduler!r}.") from None
    if kind in ("dask", "address"):
        require_dask(f"connector-sim {arguments.command} --scheduler {arguments.scheduler}")


def _perturb(arguments):
    """Silence cell types or units of a Connector sample or a network; tabulate where the runs end."""
    from .parallel import session

    # Every option first: nothing runs, and nothing is written, on bad input.
    out = _stem(arguments.out)
    _writable(out + ".csv", "--out")
    _writable(out + ".json", "--out")
    if not arguments.silence and not arguments.silence_units:
        raise CommandError("Say what to silence: --silence TYPE [TYPE ...] (cell types, or 'all') and/or "
                           "--silence-units '0:10,15'.")
    for name in ("n_neurons", "n_steps", "grid", "cell_type_samples", "k_max"):
        _check_int(arguments, name)
    _check_seed(arguments)
    _check_float(arguments, "extent")
    _check_scheduler(arguments)
    tokens = []  # cell-type labels, and "all" where it was given
    for value in arguments.silence or ():
        if value == "all":
            tokens.append(value)
            continue
        try:
            tokens.append(int(value))
        except ValueError:
            raise CommandError(f"--silence takes cell-type labels (ints) or 'all'. Got {value!r}.") from None
    if arguments.silence_units:
        _parse_units(arguments.silence_units, None)  # the syntax now, the range once N is known
    network, labels, description, features = _perturbation_source(arguments)
    with session(arguments.scheduler, owner=f"connector-sim perturb --scheduler {arguments.scheduler}") as where:
        arguments.scheduler = where  # one cluster for the cell-type fits and the runs
        return _perturb_on(arguments, out, tokens, network, labels, description, features)


def _perturb_on(arguments, out, tokens, network, labels, description, features):
    """The rest of `perturb`, with arguments.scheduler the scheduler (or Client) to use."""
    import numpy as np

    from .demo import write_json_atomic
    from .perturbations import Perturbation, perturbation_study

    units = None if not arguments.silence_units else _parse_units(arguments.silence_units, network.n_neurons)
    extent = _latent_extent(network)
    labels, summary = _cell_types(arguments, features, labels)
    types = np.unique(labels).tolist()
    perturbations = [Perturbation(name="control")]
    requested = [k for token in tokens for k in (types if token == "all" else [token])]
    for k in dict.fromkeys(requested):
        if k not in types:
            raise CommandError(f"--silence {k}: no such cell type. The cell types here are {types}.")
        perturbations.append(Perturbation.silence(cell_types=[k], name=f"silence type {k}"))
    if units is not None:
        perturbations.append(Perturbation.silence(units, name=f"silence units {arguments.silence_units}"))
    extent = extent if arguments.extent is None else arguments.extent
    kappa0 = _initial_latents(arguments.grid ** network.rank if network.rank == 2 else arguments.grid,
                              network.rank, 0.9 * extent, "grid" if network.rank == 2 else "random", arguments.seed)
    box = np.array([[-extent, extent]] * network.rank)
    source, study_labels = network, labels
    if os.path.isfile(arguments.source) and _file_format(arguments.source, arguments.format) == "native":
        # A network file goes to the workers as its path (each reads it once), with its own labels.
        source, study_labels = arguments.source, (None if summary is None else labels)
    table = perturbation_study(source, perturbations, kappa0, seeds=(arguments.seed,), n_steps=arguments.n_steps,
                               labels=study_labels, box=box, backend=arguments.backend,
                               progress=arguments.progress.runs("perturb"), scheduler=arguments.scheduler)
    table.to_csv(out + ".csv")
    fractions = {str(k): float(np.mean(labels == k)) for k in types}
    fixed_points = {f"{system} (seed {seed})" if seed >= 0 else system:
                    [{"kappa": point.position, "stability": point.stability} for point in points]
                    for (system, seed), points in table.fixed_points.items()}
    write_json_atomic(out + ".json", json_safe({
        "source": description, "cell_types": summary, "type_fractions": fractions,
        "perturbations": [p.name for p in perturbations], "rows": table.rows, "fixed_points": fixed_points}))
    arguments.progress.close()  # the bar ends before the summary
    print(f"perturb: {description}, cell types {types} (fractions "
          + ", ".join(f"{k}: {fraction:.0%}" for k, fraction in fractions.items())
          + f"), {len(kappa0)} initial latents x {arguments.n_steps} steps")
    for perturbation in perturbations:
        rows = table.select(perturbation=perturbation.name)
        stable = [p.position for p in table.fixed_points_of(rows.rows[0]) if p.stability.startswith("stable")]
        ends, counts = np.unique(rows.vectors("attractor"), axis=0, return_counts=True)
        reached = ", ".join(f"{_format_points([end])[1:-1]} x {count}" for end, count in zip(ends, counts))
        print(f"  {perturbation.name}: {len(stable)} stable fixed point(s) {_format_points(stable)}; "
              f"{int(np.sum(rows.column('settled')))}/{len(rows)} runs settled; end states by nearest attractor: "
              f"{reached}")
    print(f"wrote {out}.csv, {out}.json")
    return 0


# --------------------------------------------------------------------------- compress


def _compress_options(arguments):
    """Check the options that need no data; return the comparison's methods."""
    from .compression_data import DATASETS
    from .inference.compression_compare import METHODS

    for name in ("k_max", "k_target", "lag", "epochs", "seeds", "horizon", "trials", "n_times", "n_features",
                 "compression_width", "dynamics_width", "depth"):
        value = getattr(arguments, name)
        if value is not None and value < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1. Got {value}.")
    if arguments.k_target > arguments.k_max:
        raise CommandError(f"--k-target ({arguments.k_target}) must be at most --k-max ({arguments.k_max}).")
    if arguments.latent_dim is not None and not 1 <= arguments.latent_dim <= arguments.k_max:
        raise CommandError(f"--latent-dim must be in [1, --k-max = {arguments.k_max}]. Got {arguments.latent_dim}.")
    if arguments.horizon % arguments.lag:
        raise CommandError(f"--horizon ({arguments.horizon}) must be a multiple of --lag ({arguments.lag}).")
    methods = [] if arguments.compare == "none" else list(METHODS) if arguments.compare == "all" else \
        [m.strip() for m in arguments.compare.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise CommandError(f"--compare takes 'all', 'none' or a comma-separated list of {list(METHODS)}. Got "
                           f"{arguments.compare!r}.")
    if "dcf" not in methods:
        methods.append("dcf")
    data = arguments.data
    if data not in DATASETS and not (data.endswith(".npz") or data.endswith(".nwb")):
        raise CommandError(f"DATA must be a synthetic dataset {list(DATASETS)}, an .npz file or an .nwb file. Got "
                           f"{data!r}.")
    if data not in DATASETS and not os.path.isfile(data):
        raise CommandError(f"{data!r} does not exist.")
    synthetic_only = [f"--{name.replace('_', '-')}" for name in ("trials", "n_times", "n_features")
                      if getattr(arguments, name) is not None]
    if synthetic_only and data not in DATASETS:
        raise CommandError(f"{', '.join(synthetic_only)} apply to the synthetic datasets only, not to a file.")
    out = os.path.abspath(arguments.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise CommandError(f"--out must name a folder; {arguments.out!r} is a file.")
    if not os.path.isdir(os.path.dirname(out)):
        raise CommandError(f"--out: the folder {os.path.dirname(out)!r} does not exist. Create it first.")
    from .inference.flows import resolve_device

    resolve_device(arguments.device)
    return methods


def _compress(arguments):
    """Fit a dynamic compression flow (and the baselines) to high-dimensional data; write model, latents, table."""
    import numpy as np

    from .compression_data import DATASETS, load_compression_data
    from .data import save_arrays
    from .inference.compression_compare import compare_compression, write_comparison

    methods = _compress_options(arguments)
    from .compression_data import NETWORK_DATASETS

    options = {key: getattr(arguments, key) for key in ("n_features", "n_times") if getattr(arguments, key)}
    if arguments.data in NETWORK_DATASETS and "n_features" in options:
        options["n_neurons"] = options.pop("n_features")  # a network's dimension is its number of neurons
    if arguments.trials is not None:
        options["n_trials"] = arguments.trials
    if arguments.data in DATASETS:
        options["random_state"] = arguments.seed
        data = load_compression_data(arguments.data, **options)
    else:
        data = load_compression_data(arguments.data, bin_width=arguments.bin_width, smoothing=arguments.smoothing)
    n_trials, n_times, n_features = data.X.shape
    if arguments.k_max > n_features:
        raise CommandError(f"--k-max ({arguments.k_max}) must be at most the data's dimension D = {n_features}.")
    shortest = int(data.lengths.min())
    if shortest < 2 + arguments.lag:
        raise CommandError(f"Every trial needs at least lag + 2 = {arguments.lag + 2} bins; the shortest has "
                           f"{shortest}.")
    if shortest <= arguments.horizon:
        raise CommandError(f"--horizon ({arguments.horizon}) must be shorter than the shortest trial ({shortest} "
                           "bins).")
    if n_trials < 2:
        raise CommandError(f"The data need at least 2 trials (some are held out for the comparison). Got {n_trials}.")
    latent_dim = arguments.latent_dim or data.latent_dim or arguments.k_target
    if latent_dim > arguments.k_max:
        raise CommandError(f"The comparison's latent dimension ({latent_dim}, the data's ground truth) exceeds "
                           f"--k-max ({arguments.k_max}). Raise --k-max.")
    os.makedirs(arguments.out, exist_ok=True)
    started = time.perf_counter()
    dcf_params = {"n_epochs": arguments.epochs, "k_target": arguments.k_target, "device": arguments.device,
                  "compression_width": arguments.compression_width, "dynamics_width": arguments.dynamics_width,
                  "depth": arguments.depth, "solver": arguments.solver, "verbose": False,
                  "callback": arguments.progress.epochs("compress: DCF")}
    progress = (lambda message: arguments.progress.log(f"[compress] {message}")) if arguments.progress.enabled else None
    rows, models = compare_compression(data, latent_dim=latent_dim, methods=methods, n_seeds=arguments.seeds,
                                       horizon=arguments.horizon, k_max=arguments.k_max, lag=arguments.lag,
                                       dcf_params=dcf_params, random_state=arguments.seed, progress=progress,
                                       return_models=True)
    dcf = models["dcf"][0]
    model_dir = os.path.join(arguments.out, "model")
    dcf.save(model_dir)
    latents = dcf.transform(data.X, data.lengths)
    arrays = dict(latents=latents, lengths=data.lengths, dt=data.dt, n_components=dcf.n_components_,
                  dimension_importance=np.asarray(dcf.dimension_importance_, np.float64))
    if data.latents is not None:
        arrays["true_latents"] = data.latents
    latents_path = os.path.join(arguments.out, "latents.npz")
    save_arrays(latents_path, **arrays)
    table = write_comparison(rows, os.path.join(arguments.out, "comparison"),
                             title=f"{data.name}: {n_trials} trials x {n_times} bins x {n_features} features")
    arguments.progress.close()
    row = next(r for r in rows if r["method"] == "DCF")
    r2 = "" if data.latents is None else f", latent R^2 affine {row['r2_affine']:.3f} / signed {row['r2_signed']:.3f}"
    print(f"compress: {data.name} ({n_trials} trials x {n_times} bins x {n_features} features): DCF picked "
          f"k = {dcf.n_components_} of k_max {arguments.k_max}{r2}, {arguments.horizon}-step forecast NMSE "
          f"{row['forecast_nmse']:.3f}; compared {', '.join(r['method'] for r in rows)} at k = {latent_dim} "
          f"({time.perf_counter() - started:.1f} s) -> {model_dir}, {latents_path}, {table[0]}")
    return 0


# --------------------------------------------------------------------------- demo, backends


def _demo(arguments):
    from .demo import run_demo
    from .pipeline import run_connector_pipeline

    # Every option first (the Connector part needs torch): nothing runs on bad input.
    _check_int(arguments, "large_n")
    if not arguments.quick and not arguments.skip_simulation:
        from ._memory import check_allocation

        # m, n (N x 2, float32), b, labels, and the float64 draws they are made from: ~64 bytes per neuron.
        check_allocation(64 * arguments.large_n, f"--large-n {arguments.large_n}: the sampled network",
                         "Use a smaller --large-n (or --quick).")
    _check_seed(arguments)
    existing = os.path.abspath(arguments.out)  # the report folder, or the folder it will be created in
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        check_writable_folder(existing, "the report folder")
    except OSError as exc:
        raise CommandError(f"--out: {_one_line(exc)}") from None
    _require_inference()
    progress = arguments.progress
    if not arguments.skip_simulation:
        run_demo(arguments.out, large_n=1000 if arguments.quick else arguments.large_n, seed=arguments.seed,
                 backend=arguments.backend, log=progress.echo, progress=progress.steps("demo: simulate"))
    run_connector_pipeline(arguments.out, quick=arguments.quick, seed=arguments.seed,
                           progress=progress.log if progress.enabled else False,
                           callback=progress.epochs("demo: fit"))
    if not arguments.skip_compression:
        from .compression_report import run_compression_report

        progress.close()
        run_compression_report(arguments.out, quick=arguments.quick, seed=arguments.seed)
    return 0


def _ddm(arguments):
    import re

    from .ddm.pipeline import SYSTEMS, check_run_options, run_ddm_report, run_memories, run_system

    choices = list(SYSTEMS) + ["all", "memories"]
    if arguments.system not in choices:
        raise CommandError(f"SYSTEM must be one of {choices}. Got {arguments.system!r}.")
    check_run_options(arguments.n_neurons, arguments.epochs, arguments.big_neurons, arguments.trials,
                      arguments.duration, names={"n_neurons": "--n-neurons", "n_epochs": "--epochs",
                                                 "big_neurons": "--big-neurons", "n_trials": "--trials",
                                                 "duration": "--duration"})
    if arguments.threads < 1:
        raise CommandError(f"--threads must be >= 1. Got {arguments.threads}.")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", arguments.device):
        raise CommandError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'. Got {arguments.device!r}.")
    if arguments.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CommandError(f"--device {arguments.device} asks for CUDA, which is not available here. "
                               "Use --device auto or cpu.")
    if arguments.system != "all" and arguments.system != "memories":
        sized = dict(n_neurons=arguments.n_neurons, n_epochs=arguments.epochs, big_neurons=arguments.big_neurons,
                     n_trials=arguments.trials, duration=arguments.duration)
    elif any(value is not None for value in (arguments.n_neurons, arguments.epochs, arguments.big_neurons,
                                             arguments.trials, arguments.duration)):
        raise CommandError(f"'ddm {arguments.system}' runs the report's own sizes (use --quick for the small ones); "
                           "--n-neurons, --epochs, --big-neurons, --trials and --duration apply to one SYSTEM.")
    common = dict(quick=arguments.quick, seed=arguments.seed, device=arguments.device, backend=arguments.backend,
                  n_threads=arguments.threads, log=arguments.progress.log,
                  callback=arguments.progress.epochs(f"ddm {arguments.system}: fit"),
                  progress=arguments.progress.steps(f"ddm {arguments.system}: simulate"))
    if arguments.system == "all":
        summary = run_ddm_report(arguments.out, **common)
        arguments.progress.close()
        for name, entry in summary["systems"].items():
            print(f"{name}: held-out drift error {entry['drift_error']:.4f}; rows agreeing with the SDE: trained "
                  f"{entry['agree_trained']}, sampled {entry['agree_sampled']}")
        print(f"report: {os.path.join(arguments.out, 'ddm_report.md')} ({summary['total_seconds']:.0f} s)")
    elif arguments.system == "memories":
        run_memories(arguments.out, **common)
        arguments.progress.close()
        print(f"wrote {os.path.join(arguments.out, 'ddm_memories.json')} and ddm_memories.png")
    else:
        report = run_system(arguments.system, arguments.out, **sized, **common)
        arguments.progress.close()
        print(f"{arguments.system}: held-out drift error {report['drift_error']:.4f} (N = {report['n_neurons']}), "
              f"time scale {report['time_scale']:.4g} tau per SDE time unit")
        for label in ("trained", "sampled"):
            if f"agree_{label}" in report:
                sim = report[f"simulation_{label}"]
                print(f"  {label} network N = {sim['n_neurons']:,}: {sim['kernel_seconds']:.1f} s simulated; rows "
                      f"agreeing with the SDE: {report[f'agree_{label}']}")
        print(f"wrote {os.path.join(arguments.out, f'ddm_{arguments.system}.md')} (+ .json, .png)")
    return 0


def _backends(arguments):
    from ._backends import available_backends, missing_extensions

    print("available backends:", ", ".join(available_backends()))
    for stem, role in missing_extensions().items():
        print(f"not built: {stem} ({role})")
    from ._backends import cpu_isa, kernel_isa

    for stem, isa in kernel_isa().items():
        print(f"{stem}: runs the {isa} clone (CPU supports up to {cpu_isa()}; CONNECTOR_SIM_ISA=avx2|default narrows)")
    return 0


BACKENDS = ["auto", "cpp", "numba", "numpy"]


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (exit status 2) like every other bad input."""

    def error(self, message):
        self.exit(BAD_INPUT, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


# --- connector-sim dmf: the phase diagram of low-rank plus random networks (theory section 8) -----------


def _float_list(text, option):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CommandError(f"{option} takes numbers separated by commas, e.g. '0.5,1.5,2.5'. Got {text!r}.") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise CommandError(f"{option} needs at least one finite number. Got {text!r}.")
    return values


def _dmf(arguments):
    """The DMF phase diagram in the (g, structure) plane, with simulated finite networks on top (json + png)."""
    import numpy as np

    from .demo import save_figure_atomic, write_json_atomic
    from .dmf import plot_phase_diagram, simulated_phase_diagram

    # Every option first: nothing runs, and nothing is written, on bad input.
    gs = _float_list(arguments.gs or ("0.5,1.5,2.5" if arguments.quick else "0.5,1.0,1.5,2.0,2.5,3.0"), "--gs")
    structures = _float_list(arguments.structures or ("0.5,2.5" if arguments.quick else "0.5,1.5,2.5,3.5"),
                             "--structures")
    if min(gs) < 0:
        raise CommandError(f"--gs must be >= 0 (random strengths). Got {gs}.")
    n_neurons = 500 if arguments.quick and arguments.n_neurons is None else (arguments.n_neurons or 1000)
    arguments.n_neurons = n_neurons
    _check_int(arguments, "n_neurons", 10, 8000)
    _check_seed(arguments)
    os.makedirs(arguments.out, exist_ok=True)
    stem = os.path.join(arguments.out, "dmf_phase_diagram")
    _writable(stem + ".json", "--out")
    _writable(stem + ".png", "--out")
    progress = arguments.progress.runs("dmf")
    diagram = simulated_phase_diagram(
        gs, structures, n_neurons=n_neurons, kind=arguments.kind, random_state=arguments.seed,
        seed=arguments.seed + 1, lines=True,
        progress=None if progress is None else (lambda done, total: progress(done, total, "simulated points")))
    write_json_atomic(stem + ".json", json_safe(diagram.to_dict()))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(8, 4.5))
    plot_phase_diagram(diagram, ax=ax)
    figure.tight_layout()
    save_figure_atomic(figure, stem + ".png")
    plt.close(figure)
    arguments.progress.close()
    print(f"dmf: {len(structures)} structures x {len(gs)} g, N = {n_neurons} ({arguments.kind} structure): "
          f"theory and simulation agree at {diagram.agreement():.0%} of the points")
    for structure, gb in zip(diagram.structures, diagram.lines.g_bulk):
        print(f"  structure {structure:g}: gB = {gb:.3f}" if np.isfinite(gb) else f"  structure {structure:g}: no "
              "structured stationary state")
    print(f"wrote {stem}.json, {stem}.png")
    return 0


def _parser():
    parser = _ArgumentParser(prog="connector-sim", description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="simulate a synthetic or saved network; write its latents (.npz)")
    simulate.add_argument("network", help="quadstable, bistable, limit_cycle, ring, or a network file: .npz (ours "
                                           "or the official Connector data's MBD/N) or LINT's .pt")
    simulate.add_argument("--out", required=True, help="output .npz (kappa, v, time, ...; rates with --record-units)")
    simulate.add_argument("--n-neurons", type=int, default=1000, help="size of a synthetic network (default 1000)")
    simulate.add_argument("--seed", type=int, default=0, help="network sampling, random initial latents, noise")
    simulate.add_argument("--n-steps", type=int, default=100)
    simulate.add_argument("--dt", type=float, default=None, help="default tau / 10")
    simulate.add_argument("--noise-std", type=float, default=0.0, help="private noise sigma (default 0)")
    simulate.add_argument("--backend", default="auto", choices=BACKENDS)
    simulate.add_argument("--threads", type=_threads_option, default="auto",
                          help="'auto' (default: more than one only for large networks on free cores) or an int")
    simulate.add_argument("--trials", type=int, default=400, help="initial conditions (default 400)")
    simulate.add_argument("--init", choices=["grid", "random"], default=None,
                          help="initial latents on a square grid (rank 2, the default) or uniform at random")
    simulate.add_argument("--extent", type=float, default=None,
                          help="initial latents in [-extent, extent] (default 2.4 for the synthetic networks, "
                               "1.2 mean |n_i| for a file)")
    simulate.add_argument("--record-units", default=None, help="'all', or a number K (units 0..K-1): their rates")
    simulate.add_argument("--network-out", default=None, help="also write the simulated network (.npz, with cell "
                                                              "types as 'labels' for the synthetic ones)")
    simulate.add_argument("--format", choices=FORMATS, default="auto",
                          help="layout of a network file (default: detected from its suffix and keys)")
    simulate.add_argument("--mpi", action="store_true",
                          help="one network on the processes of mpirun -n P, each holding a slice of the neurons "
                               "(needs connector_sim[mpi]); rank 0 writes --out")
    simulate.set_defaults(run=_simulate)

    fit = commands.add_parser("fit", help="fit a low-rank RNN to rates (LINT) or to latents (velocity matching)")
    fit.add_argument("data", help=".npz with 'rates' (n_trials, n_times, N) [+ 'inputs', 'lengths', 'kappa'], e.g. "
                                  "from `simulate --record-units all` (the official Connector data's 'rates', "
                                  "'externalinputs', 'latents' work too), or an NWB file (.nwb)")
    fit.add_argument("--out", required=True, help="the fitted network (.npz)")
    fit.add_argument("--latents-out", default=None, help="its latents (.npz; default <out>_latents.npz)")
    fit.add_argument("--method", choices=["lint", "velocity"], default="lint")
    fit.add_argument("--rank", type=int, default=None, help="default: the data's kappa dimension")
    fit.add_argument("--activation", choices=list(BUILTIN_ACTIVATIONS), default="tanh",
                     help="phi of the fitted network (default tanh)")
    fit.add_argument("--epochs", type=int, default=100)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--dt", type=float, default=None, help="bin width (default: the file's dt, else tau / 10)")
    fit.add_argument("--tau", type=float, default=None, help="time constant (default: the file's tau, else 1)")
    fit.add_argument("--n-neurons", type=int, default=None,
                     help="network size for --method velocity (default: the data's neuron count)")
    fit.set_defaults(run=_fit)

    infer = commands.add_parser("infer", help="fit Connector to a fitted network and its latents")
    infer.add_argument("network", help="network .npz (from `fit`), official Connector data .npz (MBD, N, latents) "
                                       "or a LINT .pt")
    infer.add_argument("--latents", default=None, help="latents .npz (default <network>_latents.npz)")
    infer.add_argument("--out", required=True, help="Connector model folder")
    infer.add_argument("--epochs", type=int, default=None, help="CNF epochs (default 300; 1000 with --official)")
    infer.add_argument("--official", action="store_true",
                       help="the official Connector code's settings (Connector.official: a conditional CNF, 20 "
                            "midpoint sampling steps, weight decay 1e-5, no early stopping)")
    infer.add_argument("--hidden", type=int, default=128)
    infer.add_argument("--layers", type=int, default=4)
    infer.add_argument("--n-covariance", type=float, default=1.0, help="Sigma = s I, the conditional covariance "
                                                                        "of n given (m, I, b)")
    infer.add_argument("--flow-samples", type=int, default=20_000,
                       help="samples of the mean-field check (default 20000)")
    infer.add_argument("--ridge-scaling", choices=("linear", "paper"), default=None,
                       help="lambda of the conditional mean's ridge: 'linear' = c N (default; consistent as the "
                            "rows grow), 'paper' = 1e-4 N^2 / alpha^2 (default with --official)")
    infer.add_argument("--regression-sampling", choices=("sobol", "random"), default=None,
                       help="rows of the conditional mean's regression: the marginal at scrambled Sobol points "
                            "(default) or at random ones (the paper's; default with --official); theory section 3, "
                            "step 4")
    infer.add_argument("--ridge-constant", default="cv",
                       help="c of the linear scaling, or 'cv' (default): chosen by held-out latent-velocity error "
                            "over trials")
    infer.add_argument("--seed", type=int, default=0)
    infer.add_argument("--format", choices=FORMATS, default="auto",
                       help="layout of the network file (default: detected from its suffix and keys)")
    infer.set_defaults(run=_infer)

    perturb = commands.add_parser("perturb", help="silence cell types or units; tabulate fixed points and end states")
    perturb.add_argument("source", help="Connector folder (from `infer`), official Connector checkpoint (.pth), "
                                        "network .npz (ours or official data) or LINT .pt")
    perturb.add_argument("--silence", nargs="+", default=None, metavar="TYPE",
                         help="cell types to silence, one at a time ('all': each type)")
    perturb.add_argument("--silence-units", default=None, help="units silenced together, e.g. '0:10,15'")
    perturb.add_argument("--out", required=True, help="output prefix: <out>.csv and <out>.json")
    perturb.add_argument("--n-neurons", type=int, default=5000, help="network sampled from a Connector")
    perturb.add_argument("--cluster", action="store_true",
                         help="cluster a network file's neurons even when it has 'labels'")
    perturb.add_argument("--cell-type-samples", type=int, default=2000, help="rows clustered into cell types")
    perturb.add_argument("--k-max", type=int, default=8)
    perturb.add_argument("--grid", type=int, default=4, help="initial latents per axis (rank 2), else their number")
    perturb.add_argument("--extent", type=float, default=None, help="fixed-point box half-width (default 1.2 "
                                                                   "mean |n_i|)")
    perturb.add_argument("--n-steps", type=int, default=400)
    perturb.add_argument("--backend", default="auto", choices=BACKENDS)
    perturb.add_argument("--seed", type=int, default=0)
    perturb.add_argument("--format", choices=FORMATS, default="auto",
                         help="layout of a source file (default: detected from its suffix and keys)")
    perturb.add_argument("--scheduler", default=None, metavar="WHERE",
                         help="where the runs (and the cell-type fits) go: serial (default), processes[:N], "
                              "dask[:N] (a local Dask cluster), dask://HOST:PORT or tcp://HOST:PORT (a running "
                              "Dask scheduler); same table on each. A network .npz of ours goes to the "
                              "workers as its path (each reads it; on a cluster, a shared file system)")
    perturb.set_defaults(run=_perturb)

    compress = commands.add_parser("compress", help="dynamic compression flow: low-dimensional dynamics of "
                                                    "high-dimensional data, compared with PCA, PCA + LDS and LINT")
    compress.add_argument("data", help="a synthetic dataset (van_der_pol, lorenz, ring, multi_well, linear_gaussian, "
                                       "lrrnn_quadstable, lrrnn_limit_cycle, lrrnn_ring), an .npz with 'X' or "
                                       "'rates' (n_trials, n_times, D) [+ 'lengths', 'dt', 'latents'; FINDR's "
                                       "'spikes' too], or an .nwb file (units binned into rates)")
    compress.add_argument("--out", required=True, help="output folder: model/, latents.npz, comparison.md/.json")
    compress.add_argument("--k-max", type=int, default=8, help="largest latent dimension (default 8)")
    compress.add_argument("--k-target", type=int, default=2, help="mean of the nested-dropout dimension (default 2)")
    compress.add_argument("--latent-dim", type=int, default=None,
                          help="dimension of the comparison (default: the data's true latents, else --k-target)")
    compress.add_argument("--lag", type=int, default=1, help="bins between the dynamics pairs (default 1)")
    compress.add_argument("--epochs", type=int, default=200, help="DCF training epochs (default 200)")
    compress.add_argument("--compression-width", type=int, default=256, help="width of the encoder and the "
                                                                              "compressive flow (default 256)")
    compress.add_argument("--dynamics-width", type=int, default=512, help="width of the dynamics field (default 512)")
    compress.add_argument("--depth", type=int, default=4, help="hidden layers of each network (default 4)")
    compress.add_argument("--solver", choices=["dopri5", "midpoint", "euler"], default="dopri5",
                          help="ODE solver of decoding and generation (default dopri5, adaptive)")
    compress.add_argument("--seed", type=int, default=0)
    compress.add_argument("--seeds", type=int, default=1,
                          help="fits per stochastic method, for the seed agreement (default 1; 5 in the report)")
    compress.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    compress.add_argument("--compare", default="pca,pca_lds",
                          help="baselines beside DCF: 'all', 'none' or a list of pca,pca_lds,lint "
                               "(default pca,pca_lds)")
    compress.add_argument("--horizon", type=int, default=10, help="forecast horizon in bins (default 10)")
    compress.add_argument("--trials", type=int, default=None, help="trials of a synthetic dataset")
    compress.add_argument("--n-times", type=int, default=None, help="bins per trial of a synthetic dataset")
    compress.add_argument("--n-features", type=int, default=None, help="D of a synthetic SDE dataset")
    compress.add_argument("--bin-width", type=float, default=0.01, help="NWB: bin width in s (default 0.01)")
    compress.add_argument("--smoothing", type=float, default=0.1, help="NWB: causal Gaussian sigma in s (default 0.1)")
    compress.set_defaults(run=_compress)

    demo = commands.add_parser("demo", help="the embedded quadstable network: large-N simulation, then LINT -> "
                                            "Connector pipeline; writes a report folder")
    demo.add_argument("--out", default="report", help="report folder (default: report)")
    demo.add_argument("--large-n", type=int, default=1_000_000, help="size of the large sampled network")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--backend", default="auto", choices=BACKENDS)
    demo.add_argument("--quick", action="store_true", help="small sizes and few epochs (under two minutes)")
    demo.add_argument("--skip-simulation", action="store_true",
                      help="only the Connector pipeline, not the large-N simulation report")
    demo.add_argument("--skip-compression", action="store_true",
                      help="leave out the dynamic-compression section (embedded Van der Pol: DCF against PCA, "
                           "PCA + LDS and LINT; about 2 minutes)")
    demo.set_defaults(run=_demo)
    ddm = commands.add_parser("ddm", help="drift-diffusion matching: train a network on a benchmark SDE, simulate "
                                          "it at N = 1e5, compare with the SDE (tables and figures)")
    ddm.add_argument("system", help="double_well, multi_well, cycling, lorenz, van_der_pol, rossler, "
                                    "ornstein_uhlenbeck; 'all' (the report: double_well, cycling, lorenz and the "
                                    "memories) or 'memories'")
    ddm.add_argument("--out", default="report", help="report folder (default: report)")
    ddm.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    ddm.add_argument("--n-neurons", type=int, default=None, help="fitted network size (default 500)")
    ddm.add_argument("--epochs", type=int, default=None, help="Adam epochs (default 50)")
    ddm.add_argument("--big-neurons", type=int, default=None,
                     help="size of the network sampled from the fitted rows (default 100000; 0: none)")
    ddm.add_argument("--trials", type=int, default=None, help="independent trials (default 16)")
    ddm.add_argument("--duration", type=float, default=None, help="SDE time per trial (default: per system)")
    ddm.add_argument("--seed", type=int, default=0)
    ddm.add_argument("--device", default="auto", help="training device: auto (CUDA when available), cpu, cuda")
    ddm.add_argument("--backend", default="auto", choices=BACKENDS)
    ddm.add_argument("--threads", type=int, default=1)
    ddm.set_defaults(run=_ddm)
    dmf = commands.add_parser("dmf", help="dynamic mean field of low-rank plus random networks: the phase diagram "
                                          "in the (g, structure) plane with simulated finite networks (json + png)")
    dmf.add_argument("--out", default="report", help="output folder (default: report)")
    dmf.add_argument("--gs", default=None, help="random strengths g, comma-separated (default 0.5,1,...,3)")
    dmf.add_argument("--structures", default=None,
                     help="structures (outlier of m n^T / N), comma-separated (default 0.5,1.5,2.5,3.5)")
    dmf.add_argument("--kind", default="mean", choices=("mean", "covariance"),
                     help="structure along the means of m, n (default) or their covariance")
    dmf.add_argument("--n-neurons", type=int, default=None, help="simulated network size (default 1000)")
    dmf.add_argument("--quick", action="store_true", help="a small grid and N = 500 (about a minute)")
    dmf.add_argument("--seed", type=int, default=0)
    dmf.set_defaults(run=_dmf)
    backends = commands.add_parser("backends", help="list the simulation backends built here")
    backends.set_defaults(run=_backends)
    for command in commands.choices.values():  # every subcommand, added last so none is missed
        command.add_argument("--quiet", "-q", action="store_true",
                             help="no progress bars or progress messages on stderr")
    return parser


#: Exceptions that mean bad input (arguments, files, paths, the environment): one line and exit status 2.
#: MemoryError covers the library's refusals of sizes that cannot fit in memory.
BAD_INPUT_ERRORS = (CommandError, ValueError, TypeError, OverflowError, MemoryError, ImportError, FileNotFoundError,
                    FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


def _fit_or_interrupt(estimator, *data):
    """``estimator.fit(*data)``; Ctrl-C during training stops the command (exit 130), it does not save a part-fit.

    The library's training loops stop gracefully on Ctrl-C (best state kept,
    ``history_["interrupted"]``); a command line stops instead.
    """
    import warnings

    from .inference.lint import TrainingInterrupted

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingInterrupted)
        estimator.fit(*data)
    if estimator.history_.get("interrupted"):
        raise KeyboardInterrupt
    return estimator


def main(argv=None):
    """Run ``connector-sim`` with ``argv`` (default: the process arguments); return the exit status.

    Bad input returns 2 after one line on stderr; SIGTERM (turned into an
    exception while the command runs, so that temporary files are removed)
    returns 143, Ctrl-C 130, another system error (a full disk) 1.
    """
    arguments = _parser().parse_args(None if argv is None else [os.fspath(a) for a in argv])
    prefix = f"connector-sim {arguments.command}"
    # Bars on stderr by default (each starts with its work, after the checks); --quiet turns them off.
    arguments.progress = Progress(enabled=not arguments.quiet)
    with sigterm_as_exit():
        try:
            with arguments.progress:  # closed before any message below
                return arguments.run(arguments)
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted", file=sys.stderr)
            return 130
        except Terminated as exc:
            print(f"{prefix}: terminated", file=sys.stderr)
            return exc.code
        except BAD_INPUT_ERRORS as exc:
            # Library validation raises these with messages that say what to fix: no traceback for bad input.
            print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
            return BAD_INPUT
        except OSError as exc:
            print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
            return FAILED


if __name__ == "__main__":
    sys.exit(main())
