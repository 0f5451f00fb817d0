"""High-dimensional dynamical datasets with known low-dimensional latents, for dynamic compression.

Each dataset is a :class:`CompressionDataset`: observations ``X`` of shape
(n_trials, n_times, D), the ground-truth latents (n_trials, n_times, d) that
generated them (None for recordings), the bin width ``dt`` and per-trial
``lengths``.

Synthetic latents come from stochastic differential equations
dz = f(z) dt + s dW, integrated by Euler-Maruyama (``connector_sim.ddm``,
counter-based noise keyed by (seed, trial, step, component), so a trial does
not depend on how many others are drawn), and are embedded into D dimensions
by a random map (:class:`RandomEmbedding`) plus Gaussian observation noise::

    u = (z - mean(z)) / std(z)                        per latent dimension, over the dataset
    x = W_out tanh(g W_in u + b) + sigma_obs eps      ("tanh"), or
    x = Q u + sigma_obs eps                           ("linear": Q with orthonormal columns)

- ``van_der_pol``: the stochastic Van der Pol oscillator in Lienard form,
  dz1 = rho tau (z1 - z1^3 / 3 - z2) dt + s dW1, dz2 = (tau / rho) z1 dt + s dW2,
  rho = 2, tau = 15 (a relaxation limit cycle of period about 0.51);
- ``lorenz``: Lorenz-63 (sigma 10, rho 28, beta 8/3) with additive noise;
- ``ring``: a noisy ring attractor, ``dz = z (1 - |z|^2) dt + s dW`` (the angle
  diffuses freely along the unit circle);
- ``multi_well``: a particle in four wells on a circle, with a rotational
  current that makes it hop from well to well;
- ``linear_gaussian``: a damped rotation dz = A z dt + s dW embedded
  linearly (the case where PCA is exact);
- ``lrrnn_quadstable``, ``lrrnn_limit_cycle``, ``lrrnn_ring``: the
  package's rank-2 networks (:mod:`connector_sim.synthetic`) at N = 1000;
  X holds the rates phi(x) of all neurons and the latents are kappa.

:func:`load_compression_data` also reads recordings: an ``.npz`` with
``rates`` / ``X`` (or FINDR's ``spikes``, ``lengths``) and NWB files
(:func:`connector_sim.data.read_nwb`: units binned and smoothed into rates).

NumPy only: importing this module does not import torch.
"""

import os
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_int, check_nonnegative_scalar, check_positive_scalar, check_random_state
from .data import as_trial_data, load_arrays

EMBEDDINGS = ("tanh", "linear")


@dataclass
class CompressionDataset:
    """Trial-structured high-dimensional data with (optionally) its ground-truth latents.

    Attributes
    ----------
    X : ndarray of shape (n_trials, n_times, n_features)
        Observations; bins at or beyond a trial's length are 0.
    latents : ndarray of shape (n_trials, n_times, latent_dim) or None
        The latents that generated X (None for recordings).
    dt : float
        Bin width (time units of the system; seconds for NWB data).
    lengths : ndarray of int of shape (n_trials,)
        Valid bins per trial.
    name : str
    params : dict
        How the data were made (system parameters, embedding, noise, seed).
    embedding : RandomEmbedding or None
        The map from latents to the noise-free X (synthetic SDE data only).
    """

    X: np.ndarray
    latents: np.ndarray
    dt: float
    lengths: np.ndarray
    name: str
    params: dict = field(default_factory=dict)
    embedding: object = field(default=None, repr=False)

    @property
    def n_trials(self):
        return self.X.shape[0]

    @property
    def n_times(self):
        return self.X.shape[1]

    @property
    def n_features(self):
        return self.X.shape[2]

    @property
    def latent_dim(self):
        """Dimension of the ground-truth latents (None when they are unknown)."""
        return None if self.latents is None else self.latents.shape[2]

    def trial_data(self):
        """The observations as :class:`connector_sim.data.TrialData` (validated, with ``lengths`` and ``dt``)."""
        return as_trial_data(self.X, lengths=self.lengths, dt=self.dt)

    def subset(self, trials):
        """The dataset restricted to ``trials`` (indices or a boolean mask)."""
        trials = np.asarray(trials)
        return CompressionDataset(self.X[trials], None if self.latents is None else self.latents[trials], self.dt,
                                  self.lengths[trials], self.name, dict(self.params), self.embedding)


class RandomEmbedding:
    """A random map from standardised latents u (..., d) to observations (..., D).

    ::

        "tanh":   x = W_out tanh(gain W_in u + b),  W_in (H, d), b (H,) ~ N(0, 1) entries,
                  W_out (D, H) ~ N(0, 1 / H) entries: a random H-dimensional subspace of R^D
        "linear": x = Q u,  Q (D, d) with orthonormal columns (a random rotation of R^D, first d columns)

    The tanh map is injective when H >= d (W_in has full column rank almost
    surely, tanh is monotone and W_out has full column rank): the latents are
    recoverable from noise-free X, but no linear map recovers them.

    Parameters
    ----------
    latent_dim : int
    n_features : int
        D.
    kind : {"tanh", "linear"}, default="tanh"
    hidden : int, optional
        H for "tanh"; default max(8 d, 16), at most D.
    gain : float, default=1.5
        How far into the saturation of tanh the standardised latents reach.
    random_state : None, int or numpy.random.Generator
    """

    def __init__(self, latent_dim, n_features, *, kind="tanh", hidden=None, gain=1.5, random_state=None):
        owner = "RandomEmbedding"
        self.latent_dim = check_int(latent_dim, "latent_dim", minimum=1, owner=owner)
        self.n_features = check_int(n_features, "n_features", minimum=self.latent_dim, owner=owner)
        if kind not in EMBEDDINGS:
            raise ValueError(f"The 'kind' parameter of {owner} must be one of {list(EMBEDDINGS)}. Got {kind!r} "
                             "instead.")
        self.kind = kind
        self.gain = check_positive_scalar(gain, "gain", owner=owner)
        rng = check_random_state(random_state)
        if kind == "linear":
            q, r = np.linalg.qr(rng.standard_normal((self.n_features, self.latent_dim)))
            self.readout = q * np.sign(np.diag(r))
            self.hidden = self.latent_dim
            self.weights = self.bias = None
        else:
            default = min(max(8 * self.latent_dim, 16), self.n_features)
            self.hidden = default if hidden is None else check_int(hidden, "hidden", minimum=self.latent_dim,
                                                                   owner=owner)
            self.weights = rng.standard_normal((self.hidden, self.latent_dim))
            self.bias = rng.standard_normal(self.hidden)
            self.readout = rng.standard_normal((self.n_features, self.hidden)) / np.sqrt(self.hidden)

    def __call__(self, u):
        """Observations (..., D) of standardised latents u (..., d), without noise."""
        u = np.asarray(u, dtype=np.float64)
        if u.shape[-1] != self.latent_dim:
            raise ValueError(f"u must have shape (..., {self.latent_dim}). Got shape {u.shape}.")
        if self.kind == "linear":
            return u @ self.readout.T
        return np.tanh(self.gain * (u @ self.weights.T) + self.bias) @ self.readout.T

    def __repr__(self):
        return (f"RandomEmbedding(latent_dim={self.latent_dim}, n_features={self.n_features}, kind={self.kind!r}, "
                f"hidden={self.hidden})")


def embed(latents, n_features, *, kind="tanh", observation_noise=0.05, hidden=None, gain=1.5, random_state=None):
    """Embed latents (n_trials, n_times, d) into D dimensions with a random map and Gaussian noise.

    ::

        u = (z - mean) / std          (per latent dimension, over all trials and bins)
        x = c f(u) + sigma_obs eps,   eps ~ N(0, I_D)

    with f a :class:`RandomEmbedding` and c the scale that gives the
    noise-free features unit mean variance, so ``observation_noise`` is the
    noise standard deviation relative to the signal's.

    Returns
    -------
    X : ndarray of shape (n_trials, n_times, n_features)
    embedding : RandomEmbedding
        With ``scale`` (c), ``latent_mean`` and ``latent_std`` set.
    """
    latents = np.asarray(latents, dtype=np.float64)
    observation_noise = check_nonnegative_scalar(observation_noise, "observation_noise", owner="embed")
    rng = check_random_state(random_state)
    embedding = RandomEmbedding(latents.shape[-1], n_features, kind=kind, hidden=hidden, gain=gain, random_state=rng)
    flat = latents.reshape(-1, latents.shape[-1])
    embedding.latent_mean = flat.mean(axis=0)
    embedding.latent_std = np.where(flat.std(axis=0) > 0, flat.std(axis=0), 1.0)
    clean = embedding((latents - embedding.latent_mean) / embedding.latent_std)
    embedding.scale = 1.0 / max(float(np.sqrt(clean.reshape(-1, n_features).var(axis=0).mean())), 1e-12)
    X = embedding.scale * clean + observation_noise * rng.standard_normal(clean.shape)
    return X, embedding


# --------------------------------------------------------------------------- SDE ground truths


def van_der_pol_sde(rho=2.0, tau=15.0, noise=0.1):
    """The stochastic Van der Pol oscillator in Lienard form (an :class:`connector_sim.ddm.SDE`).

    ::

        dz1 = rho tau (z1 - z1^3 / 3 - z2) dt + s dW1
        dz2 = (tau / rho) z1 dt + s dW2

    This is the classical oscillator x'' - rho (1 - x^2) x' + x = 0 in the
    time t' = tau t. Its period for rho = 2 is about 7.63 / tau (0.509 for tau = 15).
    """
    from .ddm.sde import SDE, stack_last

    rho = check_positive_scalar(rho, "rho", owner="van_der_pol_sde")
    tau = check_positive_scalar(tau, "tau", owner="van_der_pol_sde")
    noise = check_nonnegative_scalar(noise, "noise", owner="van_der_pol_sde")

    def drift(z):
        z1, z2 = z[..., 0], z[..., 1]
        return stack_last([rho * tau * (z1 - z1 ** 3 / 3 - z2), (tau / rho) * z1], z)

    return SDE(drift, noise, 2, name="van_der_pol", params={"rho": rho, "tau": tau, "noise": noise})


def ring_sde(noise=0.3):
    """A noisy ring attractor: ``dz = z (1 - |z|^2) dt + s dW`` (radius 1, the angle diffuses)."""
    from .ddm.sde import SDE, stack_last

    noise = check_nonnegative_scalar(noise, "noise", owner="ring_sde")

    def drift(z):
        shrink = 1 - (z[..., 0] ** 2 + z[..., 1] ** 2)
        return stack_last([z[..., 0] * shrink, z[..., 1] * shrink], z)

    return SDE(drift, noise, 2, name="ring", params={"noise": noise})


def linear_sde(rate=0.5, frequency=2.0, noise=0.5):
    """A damped rotation dz = A z dt + s dW with A = [[-rate, -frequency], [frequency, -rate]]."""
    from .ddm.sde import SDE, stack_last

    A = np.array([[-rate, -frequency], [frequency, -rate]], dtype=np.float64)

    def drift(z):
        return stack_last([A[0, 0] * z[..., 0] + A[0, 1] * z[..., 1], A[1, 0] * z[..., 0] + A[1, 1] * z[..., 1]], z)

    return SDE(drift, noise, 2, name="linear", params={"A": A, "noise": noise})


def sde_dataset(sde, *, n_trials=64, n_times=200, dt=0.01, substeps=5, burn_in=100, z0=None, n_features=100,
                embedding="tanh", observation_noise=0.05, hidden=None, gain=1.5, random_state=0, name=None):
    """Latent trajectories of an SDE, embedded into ``n_features`` dimensions.

    The SDE is integrated by Euler-Maruyama with step dt / substeps from
    ``z0`` for burn_in + n_times - 1 recorded bins; the first ``burn_in`` bins
    are dropped so the trials start on the attractor.

    Parameters
    ----------
    sde : connector_sim.ddm.SDE
    n_trials, n_times : int
    dt : float
        Bin width of the recorded data.
    substeps : int
        Euler-Maruyama steps per bin.
    burn_in : int
        Bins discarded at the start.
    z0 : array-like of shape (d,) or (n_trials, d), optional
        Initial states; default N(0, I).
    n_features : int
        D.
    embedding : {"tanh", "linear"}
    observation_noise : float
        Noise standard deviation relative to the signal's (see :func:`embed`).
    hidden, gain : see :class:`RandomEmbedding`
    random_state : int
        Seeds the initial states, the embedding and the observation noise,
        and keys the SDE noise.
    name : str, optional

    Returns
    -------
    CompressionDataset
    """
    from .ddm.sde import euler_maruyama

    owner = "sde_dataset"
    n_trials = check_int(n_trials, "n_trials", minimum=1, owner=owner)
    n_times = check_int(n_times, "n_times", minimum=2, owner=owner)
    dt = check_positive_scalar(dt, "dt", owner=owner)
    substeps = check_int(substeps, "substeps", minimum=1, owner=owner)
    burn_in = check_int(burn_in, "burn_in", minimum=0, owner=owner)
    n_features = check_int(n_features, "n_features", minimum=sde.dim, owner=owner)
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(random_state, (int, np.integer)):
        raise TypeError(f"The 'random_state' parameter of {owner} must be an int (it keys the SDE noise). Got "
                        f"{random_state!r} instead.")
    rng = np.random.default_rng(random_state)
    z0 = rng.standard_normal((n_trials, sde.dim)) if z0 is None else np.broadcast_to(
        np.asarray(z0, dtype=np.float64), (n_trials, sde.dim)).copy()
    n_steps = (burn_in + n_times - 1) * substeps
    path = euler_maruyama(sde, z0, n_steps, dt / substeps, n_trials=n_trials, seed=int(random_state),
                          record_every=substeps)
    latents = np.ascontiguousarray(path[:, burn_in:burn_in + n_times])
    if not np.all(np.isfinite(latents)):
        raise FloatingPointError(f"{owner}: the {sde.name} trajectories diverged. Lower dt or raise substeps.")
    X, mapping = embed(latents, n_features, kind=embedding, observation_noise=observation_noise, hidden=hidden,
                       gain=gain, random_state=rng)
    params = dict(sde.params, system=sde.name, n_features=n_features, embedding=embedding,
                  observation_noise=observation_noise, dt=dt, substeps=substeps, burn_in=burn_in,
                  random_state=random_state)
    return CompressionDataset(X, latents, dt, np.full(n_trials, n_times, np.int64), name or sde.name, params,
                              mapping)


def van_der_pol_dataset(*, rho=2.0, tau=15.0, noise=0.1, n_trials=64, n_times=200, dt=0.01, n_features=100,
                        observation_noise=0.05, embedding="tanh", gain=1.5, random_state=0):
    """Stochastic Van der Pol (rho = 2, tau = 15), about 2 cycles per 100 bins of 0.01, embedded in D dimensions."""
    z0 = np.random.default_rng(random_state).normal([1.0, 1.0], 0.2, size=(n_trials, 2))
    return sde_dataset(van_der_pol_sde(rho, tau, noise), n_trials=n_trials, n_times=n_times, dt=dt, substeps=10,
                       burn_in=25, z0=z0, n_features=n_features, embedding=embedding,
                       observation_noise=observation_noise, gain=gain, random_state=random_state, name="van_der_pol")


def lorenz_dataset(*, noise=1.0, n_trials=64, n_times=200, dt=0.01, n_features=100, observation_noise=0.05,
                   embedding="tanh", gain=1.5, random_state=0):
    """Lorenz-63 (sigma 10, rho 28, beta 8/3) with additive noise, embedded in D dimensions."""
    from .ddm.systems import lorenz

    z0 = np.random.default_rng(random_state).normal([0.0, 0.0, 25.0], 8.0, size=(n_trials, 3))
    return sde_dataset(lorenz(noise=noise), n_trials=n_trials, n_times=n_times, dt=dt, substeps=10, burn_in=100,
                       z0=z0, n_features=n_features, embedding=embedding, observation_noise=observation_noise,
                       gain=gain, random_state=random_state, name="lorenz")


def ring_dataset(*, noise=0.3, n_trials=64, n_times=200, dt=0.05, n_features=100, observation_noise=0.05,
                 embedding="tanh", gain=1.5, random_state=0):
    """A noisy 2-D ring attractor (:func:`ring_sde`), embedded in D dimensions."""
    return sde_dataset(ring_sde(noise), n_trials=n_trials, n_times=n_times, dt=dt, substeps=5, burn_in=40,
                       n_features=n_features, embedding=embedding, observation_noise=observation_noise,
                       gain=gain, random_state=random_state, name="ring")


def multi_well_dataset(*, n_wells=4, rotation=0.8, noise=0.5, n_trials=64, n_times=200, dt=0.05, n_features=100,
                       observation_noise=0.05, embedding="tanh", gain=1.5, random_state=0):
    """A 2-D particle hopping between ``n_wells`` wells on a circle (``connector_sim.ddm.multi_well``), embedded."""
    from .ddm.systems import multi_well

    sde = multi_well(n_wells=n_wells, rotation=rotation, noise=noise)
    return sde_dataset(sde, n_trials=n_trials, n_times=n_times, dt=dt, substeps=5, burn_in=40,
                       n_features=n_features, embedding=embedding, observation_noise=observation_noise,
                       gain=gain, random_state=random_state, name="multi_well")


def linear_gaussian_dataset(*, noise=0.5, n_trials=64, n_times=200, dt=0.05, n_features=100,
                            observation_noise=0.05, random_state=0):
    """A damped rotation (:func:`linear_sde`) embedded linearly with isotropic Gaussian noise: PCA's exact case."""
    return sde_dataset(linear_sde(noise=noise), n_trials=n_trials, n_times=n_times, dt=dt, substeps=2, burn_in=20,
                       n_features=n_features, embedding="linear", observation_noise=observation_noise,
                       random_state=random_state, name="linear_gaussian")


# --------------------------------------------------------------------------- low-rank RNNs

#: lrRNN datasets and the synthetic network each simulates.
NETWORK_DATASETS = {"lrrnn_quadstable": "quadstable", "lrrnn_limit_cycle": "limit_cycle", "lrrnn_ring": "ring"}


def network_dataset(name="lrrnn_limit_cycle", *, n_neurons=1000, n_trials=64, n_times=100, dt=0.1,
                    noise_std=0.0, extent=2.4, observation_noise=0.0, random_state=0):
    """Rates of all neurons of one of the package's rank-2 networks; the latents are its kappa.

    Initial latents are uniform in [-extent, extent]^2; the network is
    simulated with :func:`connector_sim.simulate` (``record_units="all"``),
    X = phi(x) (+ observation noise), latents = kappa.

    Parameters
    ----------
    name : {"lrrnn_quadstable", "lrrnn_limit_cycle", "lrrnn_ring"}
    n_neurons : int, default=1000
    n_trials, n_times : int
    dt : float
        In units of the network's tau (alpha = dt / tau).
    noise_std : float
        Private noise of the simulation (0: the exact latent path).
    extent : float
    observation_noise : float
        Standard deviation of Gaussian noise added to the rates.
    random_state : int

    Returns
    -------
    CompressionDataset
    """
    from .simulate import simulate
    from .synthetic import gaussian_network_distribution, quadstable_network

    owner = "network_dataset"
    if name not in NETWORK_DATASETS:
        raise ValueError(f"The 'name' parameter of {owner} must be one of {list(NETWORK_DATASETS)}. Got {name!r} "
                         "instead.")
    n_trials = check_int(n_trials, "n_trials", minimum=1, owner=owner)
    n_times = check_int(n_times, "n_times", minimum=2, owner=owner)
    observation_noise = check_nonnegative_scalar(observation_noise, "observation_noise", owner=owner)
    network_name = NETWORK_DATASETS[name]
    if network_name == "quadstable":
        network, _ = quadstable_network(n_neurons, random_state=random_state)
    else:
        network = gaussian_network_distribution(network_name).sample(n_neurons, random_state=random_state)
    rng = np.random.default_rng(random_state)
    kappa0 = rng.uniform(-extent, extent, size=(n_trials, 2))
    result = simulate(network, n_times - 1, dt=dt, kappa0=kappa0, noise_std=noise_std, seed=random_state,
                      record_units="all")
    X = result.rates.astype(np.float64)
    if observation_noise > 0:
        X = X + observation_noise * rng.standard_normal(X.shape)
    params = dict(network=network_name, n_neurons=n_neurons, dt=dt, noise_std=noise_std, extent=extent,
                  observation_noise=observation_noise, random_state=random_state)
    return CompressionDataset(X, result.kappa.astype(np.float64), dt, np.full(n_trials, n_times, np.int64), name,
                              params)


# --------------------------------------------------------------------------- registry and files

#: Synthetic datasets by name (keyword arguments of each builder: n_trials, n_times, random_state, ...).
DATASETS = {
    "van_der_pol": van_der_pol_dataset,
    "lorenz": lorenz_dataset,
    "ring": ring_dataset,
    "multi_well": multi_well_dataset,
    "linear_gaussian": linear_gaussian_dataset,
    **{key: (lambda key: lambda **kwargs: network_dataset(key, **kwargs))(key) for key in NETWORK_DATASETS},
}


def make_dataset(name, **kwargs):
    """The synthetic dataset ``name`` (one of :data:`DATASETS`), built with ``kwargs``."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Expected one of {list(DATASETS)}.")
    return DATASETS[name](**kwargs)


#: Keys read from an .npz, in order of preference: observations, latents.
OBSERVATION_KEYS = ("X", "rates", "spikes")
LATENT_KEYS = ("latents", "kappa")


def load_compression_data(source, *, bin_width=0.01, smoothing=0.1, **kwargs):
    """A :class:`CompressionDataset` from a synthetic name, an ``.npz`` file or an NWB file.

    Parameters
    ----------
    source : str
        A name of :data:`DATASETS` (built with ``kwargs``); an ``.npz``
        with observations under ``X``, ``rates`` or ``spikes`` (FINDR's key)
        of shape (n_trials, n_times, D), optional ``lengths``, ``dt``
        (default 1) and ground-truth ``latents`` / ``kappa``; or an ``.nwb`` file (units
        binned in ``bin_width`` s bins and smoothed by a causal Gaussian of
        ``smoothing`` s, see :func:`connector_sim.data.read_nwb`).

    Returns
    -------
    CompressionDataset
    """
    source = os.fspath(source)
    if source in DATASETS:
        return make_dataset(source, **kwargs)
    if kwargs:
        raise ValueError(f"Options {sorted(kwargs)} apply to the synthetic datasets only, not to the file {source!r}.")
    name = os.path.splitext(os.path.basename(source))[0]
    if source.endswith(".nwb"):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{source!r} does not exist (expected an NWB file with units and trials).")
        from .data import read_nwb

        data = read_nwb(source, bin_width=bin_width, smoothing=smoothing)
        return CompressionDataset(data.spikes, None, data.dt, data.lengths, name, {"source": source,
                                  "bin_width": bin_width, "smoothing": smoothing})
    if not source.endswith(".npz"):
        raise ValueError(f"DATA must be a synthetic dataset name {list(DATASETS)}, an .npz file or an .nwb file. Got "
                         f"{source!r}.")
    arrays = load_arrays(source, what="observations ('X', 'rates' or 'spikes' of shape (n_trials, n_times, D); "
                                      "optional 'lengths', 'dt', 'latents')")
    key = next((k for k in OBSERVATION_KEYS if k in arrays), None)
    if key is None:
        raise ValueError(f"{source!r} has no observations: expected one of the keys {list(OBSERVATION_KEYS)} of shape "
                         f"(n_trials, n_times, D). Found {sorted(arrays)}.")
    lengths = arrays.get("lengths")
    data = as_trial_data(arrays[key], None, None if lengths is None else np.asarray(lengths).reshape(-1))
    latents = next((arrays[k] for k in LATENT_KEYS if k in arrays), None)
    if latents is not None:
        latents = np.asarray(latents, dtype=np.float64)
        if latents.ndim != 3 or latents.shape[:2] != data.spikes.shape[:2]:
            raise ValueError(f"{source!r}: the latents must cover the same trials and bins as '{key}', shape "
                             f"({data.n_trials}, {data.n_times}, d). Got shape {latents.shape}.")
    dt = float(arrays["dt"]) if "dt" in arrays else 1.0
    return CompressionDataset(data.spikes, latents, dt, data.lengths, name, {"source": source, "key": key})
