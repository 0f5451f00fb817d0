"""Connectivity distributions p(m, n, I, b) and sampling networks from them.

A neuron is one row ``[m (R), n (R), I (D), b (1 if bias)]``; a connectivity
distribution is the distribution of these rows (theory section 1). Every
distribution here describes the row layout with :class:`RowLayout` and samples
networks of any size with ``sample(n_neurons, random_state)``.
"""

from dataclasses import dataclass

import numpy as np

from ._memory import aligned_empty, check_allocation
from ._validation import check_array, check_dtype, check_int, check_random_state
from .network import LowRankRNN

#: Rows are drawn and written in chunks of this many neurons, so that sampling
#: a network of 1e8 neurons needs no full-size float64 temporary.
_SAMPLE_CHUNK = 1 << 20


@dataclass(frozen=True)
class RowLayout:
    """Where m, n, I and b sit in a neuron row ``[m, n, I, b]``.

    Parameters
    ----------
    rank : int
        R, the number of columns of m and n.
    n_inputs : int, default=0
        D, the number of input loadings.
    bias : bool, default=False
        Whether the row ends with a bias b.

    Raises
    ------
    TypeError
        If ``rank`` or ``n_inputs`` is not an int.
    ValueError
        If ``rank`` < 1 or ``n_inputs`` < 0.

    Examples
    --------
    >>> layout = RowLayout(rank=2, n_inputs=1, bias=True)  # rows [m1, m2, n1, n2, I1, b]
    >>> layout.dim, layout.n
    (6, slice(2, 4, None))
    """

    rank: int
    n_inputs: int = 0
    bias: bool = False

    def __post_init__(self):
        check_int(self.rank, "rank", minimum=1, owner="RowLayout")
        check_int(self.n_inputs, "n_inputs", minimum=0, owner="RowLayout")

    @property
    def dim(self):
        """Length of a row: 2R + D + (1 if bias)."""
        return 2 * self.rank + self.n_inputs + int(self.bias)

    @property
    def m(self):
        return slice(0, self.rank)

    @property
    def n(self):
        return slice(self.rank, 2 * self.rank)

    @property
    def I(self):  # noqa: E743
        return slice(2 * self.rank, 2 * self.rank + self.n_inputs)

    @property
    def b(self):
        return slice(2 * self.rank + self.n_inputs, self.dim)

    @property
    def mIb(self):
        """Indices of the (m, I, b) coordinates: everything but n."""
        return np.r_[np.arange(0, self.rank), np.arange(2 * self.rank, self.dim)]


def _network_from_row_chunks(layout, n_neurons, draw_chunk, dtype, tau, activation, chunk=_SAMPLE_CHUNK):
    """Fill neuron-contiguous loadings chunk by chunk (``chunk`` rows) from ``draw_chunk(count)``, in order."""
    dtype = np.dtype(dtype)
    R, D = layout.rank, layout.n_inputs
    # 64-byte aligned, as LowRankRNN's own copies (the kernels' vector loads then never span two cache lines)
    m_T = aligned_empty((R, n_neurons), dtype)
    n_T = aligned_empty((R, n_neurons), dtype)
    I_T = aligned_empty((D, n_neurons), dtype)
    b = aligned_empty(n_neurons, dtype)
    b[:] = 0
    labels = np.empty(n_neurons, np.int64)
    for start in range(0, n_neurons, chunk):
        stop = min(start + chunk, n_neurons)
        rows, chunk_labels = draw_chunk(stop - start)
        m_T[:, start:stop] = rows[:, layout.m].T
        n_T[:, start:stop] = rows[:, layout.n].T
        I_T[:, start:stop] = rows[:, layout.I].T
        if layout.bias:
            b[start:stop] = rows[:, layout.b].ravel()
        labels[start:stop] = chunk_labels
    network = LowRankRNN._adopt(m_T, n_T, I_T, b, tau=tau, activation=activation, dtype=dtype)
    return network, labels


def _frozen_attribute(name, doc):
    """A read-only property over ``self._<name>``: a distribution's parameters are fixed at construction.

    Its arrays are read-only too; the sampling factors derived from them
    (Cholesky-like factors of the covariances) could otherwise go stale.
    """

    def get(self):
        return getattr(self, "_" + name)

    def refuse(self, value):
        owner = type(self).__name__
        raise AttributeError(
            f"The {name!r} attribute of {owner} cannot be assigned: the distribution is validated (and its "
            f"sampling factors computed) at construction. Build a new {owner}(...) instead."
        )

    return property(get, refuse, doc=doc)


def _read_only(array):
    array.flags.writeable = False
    return array


class _Distribution:
    """Shared sampling interface: subclasses define ``layout`` and ``_draw``."""

    def sample_rows(self, n_samples, random_state=None):
        """Draw ``n_samples`` neuron rows.

        Returns
        -------
        rows : ndarray of shape (n_samples, layout.dim)
        labels : ndarray of shape (n_samples,)
            Mixture component (or resampled row) of each sample.
        """
        n_samples = check_int(n_samples, "n_samples", minimum=1, owner=type(self).__name__)
        dim = self.layout.dim
        # rows, the standard normals and the product (float64), and the labels
        check_allocation(
            n_samples * (3 * 8 * dim + 8), f"{type(self).__name__}.sample_rows({n_samples})",
            "Draw fewer rows, or draw them in several calls with one numpy.random.Generator.",
        )
        return self._draw(n_samples, check_random_state(random_state))

    def sample(self, n_neurons, random_state=None, *, return_labels=False, dtype=np.float64,
               tau=1.0, activation="tanh"):
        """Sample a network of ``n_neurons`` i.i.d. neurons.

        Parameters
        ----------
        n_neurons : int
        random_state : None, int or numpy.random.Generator
        return_labels : bool, default=False
            Also return the label of each neuron: its mixture component
            (cell type) for :class:`GaussianMixture`, its source row for
            :class:`Empirical`, zeros for :class:`Gaussian`.
        dtype, tau, activation
            Passed to :class:`LowRankRNN`.

        Returns
        -------
        network : LowRankRNN
        labels : ndarray of shape (n_neurons,), only if ``return_labels``
        """
        n_neurons = check_int(n_neurons, "n_neurons", minimum=1, owner=type(self).__name__)
        itemsize = check_dtype(dtype).itemsize
        layout = self.layout
        # The loadings (2R + D + 1 per neuron), the labels, and one chunk of float64 rows and temporaries.
        check_allocation(
            n_neurons * ((2 * layout.rank + layout.n_inputs + 1) * itemsize + 8)
            + 3 * 8 * min(n_neurons, _SAMPLE_CHUNK) * layout.dim,
            f"Sampling a network of {n_neurons} neurons ({type(self).__name__}.sample, dtype {np.dtype(dtype)})",
            "Sample fewer neurons, use dtype=np.float32 (half the memory), or simulate a sparse network with an "
            "implicit mask.",
        )
        rng = check_random_state(random_state)
        network, labels = _network_from_row_chunks(
            self.layout, n_neurons, lambda count: self._draw(count, rng), dtype, tau, activation
        )
        return (network, labels) if return_labels else network


def _check_covariance(cov, dim, name):
    cov = check_array(cov, name, ndim=2, dtype=np.float64, shape=(dim, dim))
    if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
        raise ValueError(f"{name} must be symmetric. Got max |C - C^T| = {np.max(np.abs(cov - cov.T)):.3g}.")
    cov = 0.5 * (cov + cov.T)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    tolerance = 1e-10 * max(1.0, float(np.max(np.abs(eigenvalues))))
    if eigenvalues.min() < -tolerance:
        raise ValueError(
            f"{name} must be positive semi-definite. Got smallest eigenvalue {eigenvalues.min():.3g}."
        )
    # A factor L with L L^T = cov that also works for singular covariances.
    factor = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
    return cov, factor


class Gaussian(_Distribution):
    """A multivariate normal over neuron rows ``[m, n, I, b]``.

    Parameters
    ----------
    mean : array-like of shape (dim,)
    cov : array-like of shape (dim, dim)
        Any symmetric positive semi-definite covariance (singular allowed,
        e.g. a fixed bias).
    rank : int
    n_inputs : int, default=0
    bias : bool, default=False
        dim must equal 2 * rank + n_inputs + bias.

    Raises
    ------
    ValueError
        If ``mean`` or ``cov`` does not have dim = 2 rank + n_inputs + bias
        entries, or ``cov`` is not symmetric positive semi-definite.
    TypeError
        If ``rank`` or ``n_inputs`` is not an int.

    Examples
    --------
    >>> g = Gaussian([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]], rank=1)  # rows (m, n)
    >>> g.sample(100, random_state=0)
    LowRankRNN(n_neurons=100, rank=1, n_inputs=0, tau=1.0, activation='tanh', dtype=float64)
    >>> rows, labels = g.sample_rows(3, random_state=0)
    >>> rows.shape
    (3, 2)
    """

    layout = _frozen_attribute("layout", "The row layout (a RowLayout).")
    mean = _frozen_attribute("mean", "Mean row, shape (dim,) (read-only).")
    cov = _frozen_attribute("cov", "Covariance, shape (dim, dim) (read-only).")

    def __init__(self, mean, cov, *, rank, n_inputs=0, bias=False):
        self._layout = RowLayout(rank, n_inputs, bias)
        dim = self.layout.dim
        self._mean = _read_only(np.array(check_array(mean, "mean", ndim=1, dtype=np.float64, shape=(dim,))))
        cov, factor = _check_covariance(cov, dim, "cov")
        self._cov, self._factor = _read_only(np.array(cov)), _read_only(np.array(factor))

    def _draw(self, count, rng):
        noise = rng.standard_normal((count, self.layout.dim))
        return self.mean + noise @ self._factor.T, np.zeros(count, np.int64)

    def __repr__(self):
        return f"Gaussian(dim={self.layout.dim}, layout={self.layout})"


class GaussianMixture(_Distribution):
    """A mixture of Gaussians over neuron rows: one component per cell type.

    Parameters
    ----------
    weights : array-like of shape (n_components,)
        Non-negative, summing to 1.
    means : array-like of shape (n_components, dim)
    covs : array-like of shape (n_components, dim, dim)
    rank, n_inputs, bias
        The row layout, as for :class:`Gaussian`.

    Raises
    ------
    ValueError
        If ``weights`` are negative or do not sum to 1, ``means`` / ``covs``
        have the wrong shape, or a covariance is not symmetric positive
        semi-definite.
    TypeError
        If ``rank`` or ``n_inputs`` is not an int.

    Examples
    --------
    >>> import numpy as np
    >>> mixture = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [np.eye(2), np.eye(2)], rank=1)
    >>> network, labels = mixture.sample(10, random_state=0, return_labels=True)
    >>> labels  # the component (cell type) of each neuron
    array([1, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    """

    layout = _frozen_attribute("layout", "The row layout (a RowLayout).")
    weights = _frozen_attribute("weights", "Component weights, shape (n_components,) (read-only).")
    means = _frozen_attribute("means", "Component means, shape (n_components, dim) (read-only).")
    covs = _frozen_attribute("covs", "Component covariances, shape (n_components, dim, dim) (read-only).")

    def __init__(self, weights, means, covs, *, rank, n_inputs=0, bias=False):
        self._layout = RowLayout(rank, n_inputs, bias)
        dim = self.layout.dim
        weights = check_array(weights, "weights", ndim=1, dtype=np.float64)
        if np.any(weights < 0) or abs(weights.sum() - 1.0) > 1e-8:
            raise ValueError(f"weights must be non-negative and sum to 1. Got {weights} (sum {weights.sum()}).")
        k = len(weights)
        self._weights = _read_only(weights / weights.sum())
        self._means = _read_only(np.array(check_array(means, "means", ndim=2, dtype=np.float64, shape=(k, dim))))
        covs = check_array(covs, "covs", ndim=3, dtype=np.float64, shape=(k, dim, dim))
        checked = [_check_covariance(c, dim, f"covs[{i}]") for i, c in enumerate(covs)]
        self._covs = _read_only(np.stack([c for c, _ in checked]))
        self._factors = _read_only(np.stack([f for _, f in checked]))

    @property
    def n_components(self):
        return len(self.weights)

    def component(self, k):
        """Component k as a :class:`Gaussian`."""
        layout = self.layout
        return Gaussian(self.means[k], self.covs[k], rank=layout.rank, n_inputs=layout.n_inputs, bias=layout.bias)

    def _draw(self, count, rng):
        labels = rng.choice(self.n_components, size=count, p=self.weights)
        noise = rng.standard_normal((count, self.layout.dim))
        rows = self.means[labels] + np.einsum("kij,kj->ki", self._factors[labels], noise)
        return rows, labels

    def __repr__(self):
        return f"GaussianMixture(n_components={self.n_components}, layout={self.layout})"


class Empirical(_Distribution):
    """The empirical distribution of given rows: sampling resamples them.

    Parameters
    ----------
    rows : array-like of shape (n_rows, dim)
    rank, n_inputs, bias
        The row layout.

    Raises
    ------
    ValueError
        If ``rows`` is not of shape (n_rows, dim) or holds NaN or inf.
    TypeError
        If ``rank`` or ``n_inputs`` is not an int.

    Examples
    --------
    >>> import numpy as np
    >>> empirical = Empirical(np.arange(6.0).reshape(3, 2), rank=1)  # rows (m, n) = (0, 1), (2, 3), (4, 5)
    >>> empirical.sample(5, random_state=0).m[:, 0]  # resampled rows
    array([4., 2., 2., 0., 0.])
    """

    layout = _frozen_attribute("layout", "The row layout (a RowLayout).")
    rows = _frozen_attribute("rows", "The rows, shape (n_rows, dim) (read-only).")

    def __init__(self, rows, *, rank, n_inputs=0, bias=False):
        self._layout = RowLayout(rank, n_inputs, bias)
        self._rows = _read_only(np.array(check_array(rows, "rows", ndim=2, dtype=np.float64,
                                                     shape=(None, self.layout.dim))))
        if len(self.rows) == 0:
            raise ValueError("rows must contain at least one row. Got an empty array.")

    @classmethod
    def from_network(cls, network):
        """The rows of a :class:`LowRankRNN` (with its bias column)."""
        return cls(network.rows(), rank=network.rank, n_inputs=network.n_inputs, bias=True)

    def _draw(self, count, rng):
        index = rng.integers(0, len(self.rows), size=count)
        return self.rows[index], index

    def __repr__(self):
        return f"Empirical(n_rows={len(self.rows)}, layout={self.layout})"
