"""Synthetic low-rank networks with known latent dynamics (Connector paper, section 6.1).

All are rank 2, tanh, no input; rows are ``[m1, m2, n1, n2]``.

- quadstable: four Gaussian cell types with m-means (+-0.87, +-0.87) and
  n-means (+-2.31, +-2.31) in matching quadrants and covariance 0.25 I over
  (m, n); the sampled network's n is then replaced by E[n | m] plus unit
  Gaussian noise.
- bistable, limit cycle, ring: m ~ N(0, I2), Var(n_a) = 4 and
  Cov(n_a, m_b) = A_ab, with A given in :data:`GAUSSIAN_OVERLAPS`.

Their latent dynamics (mean field of the ground truth, tau = 1; checked by
``tests/test_synthetic_structure.py``):

- quadstable: four stable nodes on the axes, at (+-1.825, 0) and
  (0, +-1.825), each between the m-means of two cell types; four saddles
  on the diagonals, at (+-1.013, +-1.013), in the quadrants of the cell
  types; an unstable node at 0.
- bistable: two stable nodes at +-(0.848, 0.424), along the eigenvector
  (2, 1) of A for its eigenvalue 1.6; two saddles at +-(0.486, 0); an
  unstable node at 0.
- limit cycle: a stable limit cycle of radius 0.948 and period 4 pi
  (12.566) around an unstable focus at 0: A = 1.6 I + 0.8 J rotates the
  latents at 0.8 / 1.6 = 0.5 rad per tau on the circle 1.6 <phi'> = 1.
- ring: a ring of marginally stable fixed points of radius 0.948 (the same
  circle 1.6 <phi'> = 1) around an unstable node at 0. A sampled network
  keeps it only approximately: finite N leaves a few nodes and saddles on
  a closed slow curve, or a slow rotation (classify_dynamics: "approximate
  ring"), whose radius is 0.948 up to O(1/sqrt(N)).

The sampled networks of :func:`synthetic_network` (N = 1000, random_state=0)
have the same fixed points and cycle, moved by O(1/sqrt(N)).

:func:`synthetic_network` bundles each network with its ground truth, cell
types and the latent trajectories of the paper's figures.
"""

from dataclasses import dataclass, field

import numpy as np

from ._memory import check_allocation
from ._validation import check_dtype, check_int, check_random_state
from .distributions import Gaussian, GaussianMixture
from .network import LowRankRNN
from .simulate import simulate

QUADSTABLE_M_MEAN = 0.87
QUADSTABLE_N_MEAN = 2.31
QUADSTABLE_VARIANCE = 0.25

#: Cov(n_a, m_b) of the three Gaussian networks.
GAUSSIAN_OVERLAPS = {
    "bistable": np.array([[1.2, 0.8], [0.0, 1.6]]),
    "limit_cycle": np.array([[1.6, -0.8], [0.8, 1.6]]),
    "ring": 1.6 * np.eye(2),
}


def quadstable_mixture():
    """The four-cell-type Gaussian mixture of the quadstable network.

    Returns
    -------
    GaussianMixture
        Equal weights; component k has m-mean s_k 0.87 and n-mean s_k 2.31
        with s_k in {(+,+), (-,+), (-,-), (+,-)}, covariance 0.25 I (4 x 4).
    """
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=float)
    means = np.hstack([QUADSTABLE_M_MEAN * signs, QUADSTABLE_N_MEAN * signs])
    covs = np.stack([QUADSTABLE_VARIANCE * np.eye(4)] * 4)
    return GaussianMixture(np.full(4, 0.25), means, covs, rank=2)


def quadstable_conditional_mean_n(m):
    """E[n | m] under :func:`quadstable_mixture` (n independent of m within a type).

    E[n | m] = sum_k p(k | m) mu_n,k, with p(k | m) the posterior of type k.

    Parameters
    ----------
    m : ndarray of shape (n_neurons, 2)

    Returns
    -------
    ndarray of shape (n_neurons, 2)
    """
    mixture = quadstable_mixture()
    mu_m, mu_n = mixture.means[:, :2], mixture.means[:, 2:]
    log_resp = -0.5 * ((m[:, None, :] - mu_m[None]) ** 2).sum(-1) / QUADSTABLE_VARIANCE
    log_resp -= log_resp.max(axis=1, keepdims=True)
    resp = np.exp(log_resp)
    resp /= resp.sum(axis=1, keepdims=True)
    return resp @ mu_n


def quadstable_network(n_neurons=1000, random_state=0, *, dtype=np.float64):
    """The quadstable network: equal numbers of each type, n = E[n | m] + noise.

    Parameters
    ----------
    n_neurons : int, default=1000
        Split as evenly as possible among the four types (250 each by default).
    random_state : None, int or numpy.random.Generator, default=0
    dtype : float32 or float64

    Returns
    -------
    network : LowRankRNN
    labels : ndarray of shape (n_neurons,)
        Cell type of each neuron.
    """
    n_neurons = check_int(n_neurons, "n_neurons", minimum=4, owner="quadstable_network")
    dtype = check_dtype(dtype)
    # labels, m and n with their float64 temporaries, and the network's copies
    check_allocation(n_neurons * (8 + 4 * 2 * 8 * 2 + 4 * dtype.itemsize),
                     f"quadstable_network({n_neurons}) (dtype {dtype})", "Use fewer neurons, or dtype=np.float32.")
    rng = check_random_state(random_state)
    mixture = quadstable_mixture()
    labels = np.repeat(np.arange(4), [len(chunk) for chunk in np.array_split(np.arange(n_neurons), 4)])
    factors = np.sqrt(QUADSTABLE_VARIANCE)
    m = mixture.means[labels, :2] + factors * rng.standard_normal((n_neurons, 2))
    n = quadstable_conditional_mean_n(m) + rng.standard_normal((n_neurons, 2))
    return LowRankRNN(m, n, dtype=dtype), labels


def gaussian_network_distribution(name):
    """The ground-truth Gaussian of the bistable, limit-cycle or ring network.

    Covariance over (m1, m2, n1, n2): [[I2, A^T], [A, 4 I2]] with
    A = Cov(n, m) from :data:`GAUSSIAN_OVERLAPS`; zero mean.
    """
    if name not in GAUSSIAN_OVERLAPS:
        raise ValueError(f"Unknown network {name!r}. Expected one of {sorted(GAUSSIAN_OVERLAPS)}.")
    overlap = GAUSSIAN_OVERLAPS[name]
    cov = np.block([[np.eye(2), overlap.T], [overlap, 4.0 * np.eye(2)]])
    return Gaussian(np.zeros(4), cov, rank=2)


def latent_grid(n_per_axis=20, extent=2.4):
    """Initial latents on an n x n grid over [-extent, extent]^2, shape (n*n, 2)."""
    n_per_axis = check_int(n_per_axis, "n_per_axis", minimum=1, owner="latent_grid")
    check_allocation(3 * 16 * n_per_axis**2, f"latent_grid({n_per_axis}) ({n_per_axis}^2 points)",
                     "Use fewer points per axis.")
    axis = np.linspace(-extent, extent, n_per_axis)
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)


#: Names accepted by :func:`synthetic_network`.
SYNTHETIC_NETWORKS = ("quadstable", "bistable", "limit_cycle", "ring")


@dataclass
class SyntheticNetwork:
    """A synthetic network with its ground truth (see :func:`synthetic_network`).

    Attributes
    ----------
    name : str
    distribution : Gaussian or GaussianMixture
        Ground-truth connectivity distribution, usable by the mean field.
    network : LowRankRNN
        The sampled network.
    labels : ndarray of shape (n_neurons,)
        Cell type of each neuron (all 0 for the Gaussian networks).
    kappa0 : ndarray of shape (400, 2)
        Initial latents, ``latent_grid(20, 2.4)``.
    trajectories : ndarray of shape (400, 101, 2)
        Latents of 100 steps of the network's discrete latent recursion
        (theory eq. 3) with alpha = 0.1 from each of ``kappa0``.
    """

    name: str
    distribution: object
    network: LowRankRNN = field(repr=False)
    labels: np.ndarray = field(repr=False)
    kappa0: np.ndarray = field(repr=False)
    trajectories: np.ndarray = field(repr=False)


def synthetic_network(name, n_neurons=1000, random_state=0):
    """One of the four synthetic networks, its ground truth and its latent trajectories.

    Parameters
    ----------
    name : {"quadstable", "bistable", "limit_cycle", "ring"}
    n_neurons : int, default=1000
    random_state : None, int or numpy.random.Generator, default=0

    Returns
    -------
    SyntheticNetwork
        For "quadstable", the network is :func:`quadstable_network` (m from
        the four-type mixture, n = E[n | m] + N(0, I)), so its exact ground
        truth is the mixture p(m) times N(E[n | m], I), which no Gaussian
        mixture represents. ``distribution`` is :func:`quadstable_mixture`
        instead: it has the same E[n phi(z)] (the mean field depends on
        p(n | m) only through E[n | m], theory eq. 4), hence the same
        mean-field dynamics; only the per-type flows differ slightly, because
        E[n | m] mixes the types' n-means where their m-clouds overlap.
        For the Gaussian networks, ``distribution`` is exact and the network
        is drawn from it.

    Raises
    ------
    ValueError
        If ``name`` is unknown or ``n_neurons`` is out of range.
    TypeError
        If ``n_neurons`` is not an int.

    Examples
    --------
    >>> bistable = synthetic_network("bistable", n_neurons=100)
    >>> bistable.network
    LowRankRNN(n_neurons=100, rank=2, n_inputs=0, tau=1.0, activation='tanh', dtype=float64)
    """
    if name not in SYNTHETIC_NETWORKS:
        raise ValueError(f"Unknown synthetic network {name!r}. Expected one of {list(SYNTHETIC_NETWORKS)}.")
    if name == "quadstable":
        distribution = quadstable_mixture()
        network, labels = quadstable_network(n_neurons, random_state)
    else:
        n_neurons = check_int(n_neurons, "n_neurons", minimum=1, owner="synthetic_network")
        distribution = gaussian_network_distribution(name)
        network = distribution.sample(n_neurons, random_state)
        labels = np.zeros(n_neurons, np.int64)
    kappa0 = latent_grid(20, 2.4)
    trajectories = simulate(network, 100, dt=0.1 * network.tau, kappa0=kappa0).kappa
    return SyntheticNetwork(name, distribution, network, labels, kappa0, trajectories)
