"""Eigenvalue spectra of sparse low-rank networks and their theory (theory section 5).

For P_ij = w X_ij m_i . n_j with P(X_ij = 1) = 1 - s (Herbert & Ostojic):

- outliers: the eigenvalues of the R x R matrix ``gain n^T m / N`` with
  gain = w N (1 - s); for rank one and Gaussian (m, n),
  lambda_1 = (1 - s) sigma_mn (w = 1 / N) or C sigma_mn (w = 1);
- bulk: a disk of radius R with R^2 = w^2 s (1 - s) rho(V), V_ij = (m_i . n_j)^2,
  the circular law with a variance profile applied to P - E[P]. For rank one,
  rho(V) = sum_i m_i^2 n_i^2 = N E[m^2 n^2]; the paper's
  R = sigma^2 sqrt(s (1 - s) / N) (w = 1 / N), sqrt(C) sigma^2 sqrt((N - C) / N)
  (w = 1) takes E[m^2 n^2] = sigma^4, which holds when m and n are
  independent. Jointly Gaussian m, n with covariance sigma_mn give
  E[m^2 n^2] = sigma^4 + 2 sigma_mn^2: the bulk grows with the overlap
  (``correlated=True``).
- a dense Gaussian matrix J_ij ~ N(0, g^2 / N), sparsified: radius g sqrt(1 - s).
- the comparison model J = m n^T / N + g chi (:class:`~connector_sim.sparse.LowRankPlusRandomRNN`):
  the outliers of m n^T / N (where they lie outside the disk) and a disk of radius g;
  with an excitatory/inhibitory chi (Rajan & Abbott), radius g sqrt(f sigma_E^2 + (1 - f) sigma_I^2)
  and, unless the row sums are balanced, the outlier g sqrt(N) (f mu_E + (1 - f) mu_I) of its mean.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ._kernels import read_only
from ._memory import check_allocation
from ._threads import MIN_CONNECTIONS_PER_THREAD, resolve_n_threads
from ._validation import check_int, check_n_threads
from .network import LowRankRNN
from .sparse import LowRankPlusRandomRNN, SparseLowRankRNN, _check_dense_fits

#: Largest N for which :func:`eigenvalues` builds the dense matrix.
MAX_DENSE_EIGENVALUES = 8000


def _density(owner, n_neurons, sparsity, n_connections):
    if (sparsity is None) == (n_connections is None):
        raise ValueError(f"{owner} needs exactly one of sparsity and n_connections. "
                         f"Got sparsity={sparsity!r}, n_connections={n_connections!r}.")
    if n_connections is not None:
        if n_neurons is None:
            raise ValueError(f"{owner} needs n_neurons with n_connections (s = 1 - C / N).")
        N = check_int(n_neurons, "n_neurons", minimum=1, owner=owner)
        C = check_int(n_connections, "n_connections", minimum=1, maximum=N, owner=owner)
        return C / N
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"The 'sparsity' parameter of {owner} must be a number in [0, 1). Got {sparsity!r} instead.")
    return 1.0 - float(sparsity)


def _scaling_weight(owner, scaling, n_neurons):
    if scaling == "1/N":
        if n_neurons is None:
            raise ValueError(f"{owner} with scaling='1/N' needs n_neurons.")
        return 1.0 / n_neurons
    if scaling == "1":
        return 1.0
    raise ValueError(f"The 'scaling' parameter of {owner} must be '1/N' or '1'. Got {scaling!r} instead.")


def predicted_outlier(covariance, *, sparsity=None, n_connections=None, n_neurons=None, scaling="1/N"):
    """The outlier of a sparse rank-one network with overlap sigma_mn.

    ::

        lambda_1 = w N (1 - s) sigma_mn = (1 - s) sigma_mn      (w = 1 / N)
                                        = C sigma_mn            (w = 1, C = N (1 - s))

    Parameters
    ----------
    covariance : float
        sigma_mn = E[m n].
    sparsity : float, optional
        s in [0, 1). Give this or ``n_connections``.
    n_connections : int, optional
        C (s = 1 - C / N; needs ``n_neurons``).
    n_neurons : int, optional
        N; needed with ``n_connections`` or ``scaling="1"``.
    scaling : {"1/N", "1"}, default="1/N"

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If not exactly one of ``sparsity`` and ``n_connections`` is given,
        ``n_connections`` comes without ``n_neurons`` or exceeds it,
        ``sparsity`` is not in [0, 1), or ``scaling`` is not "1/N" or "1" (or is "1" without ``n_neurons``).
    TypeError
        If ``n_neurons`` or ``n_connections`` is not an int.

    Examples
    --------
    >>> round(predicted_outlier(0.5, sparsity=0.9), 6)
    0.05
    >>> predicted_outlier(0.5, n_connections=100, n_neurons=1000, scaling="1")
    50.0
    """
    density = _density("predicted_outlier", n_neurons, sparsity, n_connections)
    if scaling == "1":
        if n_neurons is None:
            raise ValueError("predicted_outlier with scaling='1' needs n_neurons (the outlier is C sigma_mn).")
        return float(n_neurons * density * covariance)
    _scaling_weight("predicted_outlier", scaling, 1)
    return float(density * covariance)


def predicted_bulk_radius(variance, *, sparsity=None, n_connections=None, n_neurons=None, scaling="1/N",
                          covariance=0.0, correlated=False):
    """Radius of the eigenvalue bulk of a sparse rank-one network.

    ::

        R^2 = w^2 N^2 s (1 - s) E[m^2 n^2] / N
        R   = sigma^2 sqrt(s (1 - s) / N)              (w = 1 / N, E[m^2 n^2] = sigma^4)
            = sqrt(C) sigma^2 sqrt((N - C) / N)        (w = 1)

    Parameters
    ----------
    variance : float
        sigma^2 = Var m = Var n.
    sparsity, n_connections, n_neurons, scaling
        As in :func:`predicted_outlier`; n_neurons is always needed.
    covariance : float, default=0
        sigma_mn; used only with ``correlated=True``.
    correlated : bool, default=False
        False: the paper's formula, E[m^2 n^2] = sigma^4 (m, n independent).
        True: jointly Gaussian m, n, E[m^2 n^2] = sigma^4 + 2 sigma_mn^2.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If not exactly one of ``sparsity`` and ``n_connections`` is given,
        ``n_connections`` comes without ``n_neurons`` or exceeds it,
        ``sparsity`` is not in [0, 1), or ``scaling`` is not "1/N" or "1", or ``n_neurons`` is missing.
    TypeError
        If ``n_neurons`` or ``n_connections`` is not an int.

    Examples
    --------
    >>> round(predicted_bulk_radius(1.0, sparsity=0.9, n_neurons=1000), 6)  # sqrt(0.9 * 0.1 / 1000)
    0.009487
    """
    if n_neurons is None:
        raise ValueError("predicted_bulk_radius needs n_neurons (the bulk shrinks like 1 / sqrt(N) for w = 1 / N).")
    density = _density("predicted_bulk_radius", n_neurons, sparsity, n_connections)
    w = _scaling_weight("predicted_bulk_radius", scaling, n_neurons)
    moment = variance**2 + (2.0 * covariance**2 if correlated else 0.0)
    return float(math.sqrt(w * w * n_neurons * density * (1.0 - density) * moment))


def predicted_random_radius(g, *, sparsity=None, n_connections=None, n_neurons=None):
    """Radius g sqrt(1 - s) of a sparsified dense Gaussian matrix J_ij ~ N(0, g^2 / N).

    Raises
    ------
    ValueError
        If not exactly one of ``sparsity`` and ``n_connections`` is given,
        ``n_connections`` comes without ``n_neurons`` or exceeds it,
        ``sparsity`` is not in [0, 1), or ``scaling`` is not "1/N" or "1".
    TypeError
        If ``n_neurons`` or ``n_connections`` is not an int.

    Examples
    --------
    >>> predicted_random_radius(1.0, sparsity=0.75)
    0.5
    """
    density = _density("predicted_random_radius", n_neurons, sparsity, n_connections)
    return float(g * math.sqrt(density))


def predicted_ei_radius(g, fraction, variance_e, variance_i, *, mean_e=0.0, mean_i=0.0, density=1.0):
    """Bulk radius of an excitatory/inhibitory random part g chi (Rajan & Abbott 2006).

    ::

        r = g sqrt(f sigma_E^2 + (1 - f) sigma_I^2)

    for chi_ij = (mu_c + sigma_c xi_ij) / sqrt(N), c the population of column j
    (:class:`~connector_sim.sparse.ExcitatoryInhibitory`): the circular law with
    a column-variance profile, r^2 = g^2 sum_j Var(chi_ij) = g^2 mean_j sigma_c(j)^2.
    The means do not enter: with balanced row sums they leave the spectrum
    unchanged, without they add one outlier (:func:`predicted_ei_outlier`).
    Sparse (exactly C = d N entries per row, scaled by 1 / sqrt(C)): the mask
    spreads the means, sigma_c^2 -> sigma_c^2 + (1 - d) mu_c^2.

    Parameters
    ----------
    g : float
        Strength of the random part.
    fraction : float in (0, 1]
        f, the excitatory fraction.
    variance_e, variance_i : float
        sigma_E^2, sigma_I^2.
    mean_e, mean_i : float, default=0
        mu_E, mu_I; used only when ``density`` < 1.
    density : float in (0, 1], default=1
        d = C / N.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``fraction`` is not in (0, 1] or a variance or ``g`` is negative.

    Examples
    --------
    >>> round(predicted_ei_radius(1.0, 0.8, 1.0, 4.0), 6)  # sqrt(0.8 + 0.2 * 4)
    1.264911
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"The 'fraction' parameter of predicted_ei_radius must be in (0, 1]. Got {fraction!r}.")
    if g < 0 or variance_e < 0 or variance_i < 0:
        raise ValueError(f"predicted_ei_radius needs g, variance_e and variance_i >= 0. Got g={g!r}, "
                         f"variance_e={variance_e!r}, variance_i={variance_i!r}.")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"The 'density' parameter of predicted_ei_radius must be in (0, 1]. Got {density!r}.")
    spread = 1.0 - density
    return float(g * math.sqrt(fraction * (variance_e + spread * mean_e**2)
                               + (1.0 - fraction) * (variance_i + spread * mean_i**2)))


def predicted_ei_outlier(g, fraction, mean_e, mean_i, n_neurons, *, balanced=False, n_connections=None):
    """The outlier of the mean of an excitatory/inhibitory random part g chi.

    ::

        lambda_mean = g sqrt(N) (f mu_E + (1 - f) mu_I)      (balanced=False)
                    = 0                                       (balanced row sums)

    The mean matrix g 1 mu^T / sqrt(N) has rank one; its eigenvalue is g mu^T 1
    / sqrt(N). Setting every row sum to zero (``balanced=True``, Rajan & Abbott)
    makes 1 an eigenvector with eigenvalue 0 and removes the means from the
    rest of the spectrum, so there is no outlier. ``fraction`` is N_E / N.
    With exactly C entries per row (scaled by 1 / sqrt(C)), sqrt(N) becomes sqrt(C).

    Parameters
    ----------
    g : float
    fraction : float in (0, 1]
    mean_e, mean_i : float
        mu_E, mu_I.
    n_neurons : int
    balanced : bool, default=False
    n_connections : int, optional
        C of a sparse random part.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``fraction`` is not in (0, 1].
    TypeError
        If ``n_neurons`` is not an int.

    Examples
    --------
    >>> round(predicted_ei_outlier(0.5, 0.8, 1.0, -3.0, 400), 12)  # 0.5 * 20 * (0.8 - 0.6)
    2.0
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"The 'fraction' parameter of predicted_ei_outlier must be in (0, 1]. Got {fraction!r}.")
    N = check_int(n_neurons, "n_neurons", minimum=1, owner="predicted_ei_outlier")
    C = N if n_connections is None else check_int(n_connections, "n_connections", minimum=1, maximum=N,
                                                   owner="predicted_ei_outlier")
    if balanced:
        return 0.0
    return float(g * math.sqrt(C) * (fraction * mean_e + (1.0 - fraction) * mean_i))


@dataclass
class SpectrumTheory:
    """Predicted spectrum of one sampled network.

    Attributes
    ----------
    outliers : ndarray of shape (rank,), complex
        Eigenvalues of gain n^T m / N, largest real part first.
    bulk_radius : float
        sqrt(w^2 s (1 - s) rho(V)), V_ij = (m_i . n_j)^2 (sample moments).
    """

    outliers: np.ndarray
    bulk_radius: float


def network_theory(network):
    """The predicted outliers and bulk radius of a sampled network.

    Uses the network's own loadings (finite-N overlaps and moments), so it
    holds for correlated m and n and any rank::

        outliers = eig(gain n^T m / N),  gain = w N (1 - s)
        R^2      = w^2 s (1 - s) rho(V),  V_ij = (m_i . n_j)^2
                 = w^2 s (1 - s) rho(B^T A),  A_i,(r,q) = m_ir m_iq,  B_j,(r,q) = n_jr n_jq

    For a :class:`LowRankPlusRandomRNN` (J = m n^T / N + g chi) the outliers
    are those of m n^T / N and R = g (circular law of g chi); for an
    excitatory/inhibitory chi R = :func:`predicted_ei_radius`, and without
    balanced row sums the mean of chi joins the outliers (the eigenvalues of
    the (R + 1) x (R + 1) matrix of m n^T / N + g 1 mu^T / sqrt(N)).

    Parameters
    ----------
    network : SparseLowRankRNN, LowRankRNN or LowRankPlusRandomRNN
        A dense network is s = 0 (no bulk).

    Returns
    -------
    SpectrumTheory

    Raises
    ------
    TypeError
        If ``network`` is not one of the network classes above.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian, sparsify
    >>> dense = Gaussian(np.zeros(2), [[1.0, 0.5], [0.5, 1.0]], rank=1).sample(200, 0)
    >>> network = sparsify(dense, n_connections=20, seed=1)  # sigma_mn = 0.5, 1 - s = 0.1
    >>> theory = network_theory(network)
    >>> theory.outliers.round(3), round(theory.bulk_radius, 3)
    (array([0.052+0.j]), 0.029)
    """
    if isinstance(network, LowRankRNN):
        gain, weight, density = 1.0, 1.0 / network.n_neurons, 1.0
    elif isinstance(network, LowRankPlusRandomRNN):
        return _random_part_theory(network)
    elif isinstance(network, SparseLowRankRNN):
        gain, weight, density = network.gain, network.weight, network.mask.density
    else:
        raise TypeError(f"network must be a SparseLowRankRNN, a LowRankRNN or a LowRankPlusRandomRNN. "
                        f"Got {type(network).__name__}.")
    m = network.m.astype(np.float64)
    n = network.n.astype(np.float64)
    N, R = m.shape
    outliers = np.linalg.eigvals(gain * (n.T @ m) / N)
    outliers = outliers[np.argsort(-outliers.real)]
    A = np.einsum("ir,iq->irq", m, m).reshape(N, R * R)
    B = np.einsum("jr,jq->jrq", n, n).reshape(N, R * R)
    rho = float(np.max(np.abs(np.linalg.eigvals(B.T @ A))))
    radius = math.sqrt(weight * weight * density * (1.0 - density) * rho)
    return SpectrumTheory(outliers=outliers.astype(complex), bulk_radius=radius)


def _random_part_theory(network):
    """network_theory of a LowRankPlusRandomRNN (Gaussian or excitatory/inhibitory chi)."""
    m, n = network.m.astype(np.float64), network.n.astype(np.float64)
    N = network.n_neurons
    spec = network.random
    if spec == "gaussian":
        outliers, radius = np.linalg.eigvals(n.T @ m / N), network.g
    else:
        radius = network.g * math.sqrt(float(np.mean(spec.effective_variances(N))))
        if spec.balanced:
            outliers = np.linalg.eigvals(n.T @ m / N)
        else:
            # The deterministic part m n^T / N + g 1 mu^T / sqrt(N) = U V^T, U = [m, 1]:
            # its nonzero eigenvalues are those of V^T U ((R + 1) x (R + 1)).
            U = np.column_stack([m, np.ones(N)])
            V = np.column_stack([n / N, network.g * spec.expected_entries(N)])
            outliers = np.linalg.eigvals(V.T @ U)
    return SpectrumTheory(outliers=outliers[np.argsort(-outliers.real)].astype(complex), bulk_radius=float(radius))


def eigenvalues(network):
    """All N eigenvalues of the connectivity, from the dense matrix.

    Parameters
    ----------
    network : SparseLowRankRNN, LowRankRNN or LowRankPlusRandomRNN
        N <= MAX_DENSE_EIGENVALUES (8000: the dense O(N^3) solver).

    Returns
    -------
    ndarray of shape (N,), complex
        Sorted by decreasing modulus.

    Raises
    ------
    TypeError
        If ``network`` is not one of the network classes above.
    ValueError
        If N > ``MAX_DENSE_EIGENVALUES`` (use :func:`leading_eigenvalues`).
    TooLargeError
        If the dense matrix would not fit in memory.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian, sparsify
    >>> dense = Gaussian(np.zeros(2), [[1.0, 0.5], [0.5, 1.0]], rank=1).sample(200, 0)
    >>> network = sparsify(dense, n_connections=20, seed=1)  # sigma_mn = 0.5, 1 - s = 0.1
    >>> values = eigenvalues(network)
    >>> values.shape, round(float(values.real.max()), 3)
    ((200,), 0.057)
    """
    if not isinstance(network, (SparseLowRankRNN, LowRankRNN, LowRankPlusRandomRNN)):
        raise TypeError(f"network must be a SparseLowRankRNN, a LowRankRNN or a LowRankPlusRandomRNN. "
                        f"Got {type(network).__name__}.")
    if network.n_neurons > MAX_DENSE_EIGENVALUES:
        raise ValueError(
            f"eigenvalues() computes all N eigenvalues of the dense matrix, for N <= {MAX_DENSE_EIGENVALUES}; "
            f"this network has N = {network.n_neurons}. Use leading_eigenvalues() for the outliers and the "
            "edge of the bulk of large networks."
        )
    _check_dense_fits(network.n_neurons, "eigenvalues()", copies=3)
    values = np.linalg.eigvals(network.connectivity())
    return values[np.argsort(-np.abs(values))]


def leading_eigenvalues(network, k=None, *, which="LR", backend="auto", n_threads="auto", tol=1e-8, random_state=0):
    """A few eigenvalues of a large sparse network, matrix-free (ARPACK).

    The operator v -> P v runs on the sparse kernels (the mask is never
    expanded, and no N x N matrix is formed).

    Parameters
    ----------
    network : SparseLowRankRNN
    k : int, optional
        Number of eigenvalues (default rank + 4).
    which : {"LR", "LM"}, default="LR"
        Largest real part (the outliers) or largest modulus (the edge of the bulk).
    backend : {"auto", "cpp", "numba", "numpy"}
    n_threads : "auto" or int, default="auto"
        Threads of the compiled operator, in [1, MAX_THREADS] (see
        :func:`connector_sim._validation.check_n_threads`), or "auto" (one
        thread unless each gets 2e5 connections per product and cores are
        free, see :func:`connector_sim.simulate`); the eigenvalues do not depend on it.
    tol : float
        ARPACK's relative tolerance.
    random_state : int
        Seed of the starting vector.

    Returns
    -------
    ndarray of shape (k,), complex
        Sorted by decreasing real part ("LR") or modulus ("LM").

    Raises
    ------
    TypeError
        If ``network`` is not a SparseLowRankRNN, or ``k`` / ``n_threads`` is
        not an int.
    ValueError
        If ``k`` is not in [1, N - 2], ``which`` is not "LR" or "LM", or
        ``n_threads`` is out of range.
    TooLargeError
        If the Krylov vectors would not fit in memory.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian, sparsify
    >>> dense = Gaussian(np.zeros(2), [[1.0, 0.5], [0.5, 1.0]], rank=1).sample(200, 0)
    >>> network = sparsify(dense, n_connections=20, seed=1)  # sigma_mn = 0.5, 1 - s = 0.1
    >>> values = leading_eigenvalues(network, k=3)
    >>> round(float(values[0].real), 3)
    0.057
    """
    from scipy.sparse.linalg import LinearOperator, eigs

    from . import _backends
    from ._kernels import simulate_sparse

    if not isinstance(network, SparseLowRankRNN):
        raise TypeError(f"network must be a SparseLowRankRNN. Got {type(network).__name__}.")
    N = network.n_neurons
    k = network.rank + 4 if k is None else check_int(k, "k", minimum=1, maximum=N - 2, owner="leading_eigenvalues")
    if which not in ("LR", "LM"):
        raise ValueError(f"which must be 'LR' or 'LM'. Got {which!r}.")
    n_threads = resolve_n_threads(check_n_threads(n_threads, "leading_eigenvalues", allow_auto=True),
                                  network.mask.expected_nnz,  # work of one product: its connections
                                  MIN_CONNECTIONS_PER_THREAD)
    # ARPACK's Krylov basis (ncv = 2k + 1 vectors of N, and its work arrays) and the float64 loadings
    check_allocation(8 * N * (3 * (2 * k + 1) + 2 * network.rank + 4),
                     f"leading_eigenvalues(k={k}) of a network of {N} neurons", "Ask for fewer eigenvalues (k).")
    if backend == "auto":
        backend = "cpp" if _backends.extension_built("_simulate_sparse_cpp") else (
            "numba" if "numba" in _backends.available_backends() else "numpy")
    _, matvec = simulate_sparse.kernels(backend)
    mask = network.mask._kernel_args()
    m64, n64 = read_only(np.ascontiguousarray(network.m_T, np.float64), np.ascontiguousarray(network.n_T, np.float64))
    weight = network.weight

    def apply(v):
        return matvec(mask, m64, n64, weight, np.ascontiguousarray(np.real(v), np.float64), n_threads=n_threads)

    operator = LinearOperator((N, N), matvec=apply, dtype=np.float64)
    v0 = np.random.default_rng(random_state).standard_normal(N)
    values = eigs(operator, k=k, which=which, tol=tol, v0=v0, return_eigenvectors=False)
    key = -values.real if which == "LR" else -np.abs(values)
    return values[np.argsort(key)]


def measured_bulk_radius(values, n_outliers=0, *, quantile=0.99):
    """A robust bulk radius: a high quantile of the moduli, outliers removed.

    The largest modulus overshoots the radius of the limiting disk at finite
    N; a high quantile of ``|lambda|`` does not. The ``n_outliers`` eigenvalues of
    largest real part are dropped first (they belong to the low-rank
    structure when they lie outside the bulk).

    Parameters
    ----------
    values : array-like of complex, shape (N,)
        All eigenvalues (see :func:`eigenvalues`).
    n_outliers : int, default=0
    quantile : float in (0, 1], default=0.99

    Returns
    -------
    float
        The ``quantile`` of ``|lambda|`` over the remaining eigenvalues.

    Raises
    ------
    TypeError
        If ``n_outliers`` is not an int.
    ValueError
        If ``n_outliers`` is not in [0, N - 1] or ``quantile`` is not in (0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian, sparsify
    >>> dense = Gaussian(np.zeros(2), [[1.0, 0.5], [0.5, 1.0]], rank=1).sample(200, 0)
    >>> network = sparsify(dense, n_connections=20, seed=1)  # sigma_mn = 0.5, 1 - s = 0.1
    >>> round(measured_bulk_radius(eigenvalues(network), n_outliers=1), 3)
    0.024
    """
    values = np.asarray(values)
    n_outliers = check_int(n_outliers, "n_outliers", minimum=0, maximum=max(0, len(values) - 1),
                           owner="measured_bulk_radius")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1]. Got {quantile!r}.")
    order = np.argsort(-values.real)
    bulk = values[order[n_outliers:]]
    return float(np.quantile(np.abs(bulk), quantile))


def plot_spectrum(values, *, theory=None, ax=None, unit_circle=True):
    """Eigenvalues in the complex plane, with the predicted outliers and bulk circle.

    Parameters
    ----------
    values : array-like of complex
    theory : SpectrumTheory, optional
        Draws the outliers (crosses) and the bulk circle of radius R.
    ax : matplotlib Axes, optional
    unit_circle : bool, default=True
        Draws ``|lambda| = 1``, the instability of the origin.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian, sparsify
    >>> dense = Gaussian(np.zeros(2), [[1.0, 0.5], [0.5, 1.0]], rank=1).sample(200, 0)
    >>> network = sparsify(dense, n_connections=20, seed=1)  # sigma_mn = 0.5, 1 - s = 0.1
    >>> ax = plot_spectrum(eigenvalues(network), theory=network_theory(network))
    >>> len(ax.collections) >= 1
    True
    """
    import matplotlib.pyplot as plt

    values = np.asarray(values)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(values.real, values.imag, s=4, color="0.3", label="eigenvalues")
    angle = np.linspace(0.0, 2.0 * np.pi, 400)
    if theory is not None:
        ax.plot(theory.bulk_radius * np.cos(angle), theory.bulk_radius * np.sin(angle), color="C1",
                label=f"bulk R = {theory.bulk_radius:.3g}")
        ax.scatter(theory.outliers.real, theory.outliers.imag, marker="x", s=60, color="C3",
                   label="predicted outlier")
    if unit_circle:
        ax.plot(np.cos(angle), np.sin(angle), color="0.6", linestyle="--", linewidth=0.8, label="|lambda| = 1")
    ax.set_aspect("equal")
    ax.set_xlabel("Re lambda")
    ax.set_ylabel("Im lambda")
    ax.legend(loc="upper left", fontsize="small")
    return ax


#: The regimes of the autonomous dynamics (theory section 5).
REGIMES = ("decaying", "structured", "chaotic")


def predicted_regime(variance, covariance, *, n_connections=None, sparsity=None, n_neurons=None, scaling="1",
                     correlated=False):
    """Regime of the autonomous dynamics predicted from the spectrum (theory section 5).

    With lambda_1 = :func:`predicted_outlier` and R = :func:`predicted_bulk_radius`::

        decaying    if lambda_1 < 1 and R < 1
        structured  if lambda_1 > 1 and lambda_1 > R   (static activity along m)
        chaotic     if R > 1 and R > lambda_1          (fluctuating activity)

    Parameters
    ----------
    variance, covariance : float
        sigma^2 and sigma_mn.
    n_connections, sparsity, n_neurons, scaling, correlated
        As in :func:`predicted_bulk_radius` (default ``scaling="1"``, the
        high-sparsity scaling of Herbert & Ostojic Fig. 5).

    Returns
    -------
    str
        One of REGIMES.

    Raises
    ------
    ValueError
        If not exactly one of ``sparsity`` and ``n_connections`` is given,
        ``n_connections`` comes without ``n_neurons`` or exceeds it,
        ``sparsity`` is not in [0, 1), or ``scaling`` is not "1/N" or "1", or ``n_neurons`` is missing.
    TypeError
        If ``n_neurons`` or ``n_connections`` is not an int.

    Examples
    --------
    >>> predicted_regime(1.0, 0.5, n_connections=100, n_neurons=1000)  # lambda_1 = 50 > R
    'structured'
    """
    outlier = predicted_outlier(covariance, sparsity=sparsity, n_connections=n_connections, n_neurons=n_neurons,
                                scaling=scaling)
    radius = predicted_bulk_radius(variance, sparsity=sparsity, n_connections=n_connections, n_neurons=n_neurons,
                                   scaling=scaling, covariance=covariance, correlated=correlated)
    return _spectral_regime(outlier, radius)


def _spectral_regime(outlier, radius):
    """The eigenvalue rule of :func:`predicted_regime` on a given outlier and bulk radius."""
    if outlier <= 1.0 and radius <= 1.0:
        return "decaying"
    return "structured" if outlier > radius else "chaotic"


def regime_diagram(variances, covariances, **kwargs):
    """:func:`predicted_regime` over a grid: an array of shape (len(covariances), len(variances)) of str.

    Raises
    ------
    ValueError, TypeError
        As :func:`predicted_regime`.

    Examples
    --------
    >>> regime_diagram([0.01, 1.0], [0.0, 0.5], n_connections=100, n_neurons=1000)
    array([['decaying', 'chaotic'],
           ['structured', 'structured']], dtype='<U10')
    """
    return np.array([[predicted_regime(v, c, **kwargs) for v in variances] for c in covariances])


# --- the complete regime map: spectrum, then the dynamic mean field (theory section 8) -------------------

#: The regions of the complete regime map (theory section 8).
REGIME_MAP = ("decaying", "structured", "structured chaotic", "homogeneous chaotic")


@dataclass
class RegimeBoundaries:
    """The boundary values of the regime map at one outlier (theory section 8).

    In the plane (bulk radius R, outlier lambda_1), with R in the role of g:

    Attributes
    ----------
    outlier_line : float
        The outlier at which the state at rest loses stability (lambda_1 = 1 for phi'(0) = 1).
    bulk_line : float
        The bulk radius at which it does (R = 1).
    g_bulk : float
        gB: the R at which the structured stationary state's own bulk,
        R sqrt(<phi'^2>), reaches 1 (static structured -> structured chaotic); nan
        without a structured state (lambda_1 <= 1).
    g_outlier : float
        gC: the R at which its outlier reaches 1, where that comes before gB (else nan).
    g_chaotic_structure : float
        The R beyond which the chaotic state has kappa = 0 (structured chaotic ->
        homogeneous chaotic).
    outlier, bulk_radius : float
        lambda_1 and R of the network asked about.
    """

    outlier_line: float
    bulk_line: float
    g_bulk: float
    g_outlier: float
    g_chaotic_structure: float
    outlier: float
    bulk_radius: float


@dataclass
class RegimePrediction:
    """The regime of the complete map and how it was decided.

    Attributes
    ----------
    regime : str
        One of :data:`REGIME_MAP`.
    method : {"spectrum", "dmf"}
        "spectrum" where the eigenvalues decide (at most one of lambda_1, R above 1);
        "dmf" where both exceed 1 and the dynamic mean field (R in the role of g) decides.
    spectral_regime : str
        :func:`predicted_regime`'s answer (one of :data:`REGIMES`), for comparison.
    outlier, bulk_radius : float
    """

    regime: str
    method: str
    spectral_regime: str
    outlier: float
    bulk_radius: float


def _mapped_model(outlier, radius, variance, activation):
    """The dense low-rank + random model a (sparse) network maps onto: Cov(m, n) = lambda_1, g = R."""
    from .dmf import DMF, rank_one_structure

    return DMF(rank_one_structure(outlier, kind="covariance", variance=variance), radius, activation=activation)


def regime_from_spectrum(outlier, radius, *, variance=1.0, activation="tanh"):
    """The complete regime map at a given outlier lambda_1 and bulk radius R (theory section 8).

    ::

        lambda_1 <= 1, R <= 1   decaying                       (spectrum)
        lambda_1 > 1,  R <= 1   structured                     (spectrum)
        lambda_1 <= 1, R > 1    homogeneous chaotic            (spectrum)
        lambda_1 > 1,  R > 1    the dynamic mean field of m n^T / N + R chi with
                                Var m = ``variance``, Cov(m, n) = lambda_1:
                                structured / structured chaotic / homogeneous chaotic

    (Herbert & Ostojic map a sparse network onto the dense low-rank + random
    model with the bulk radius in the role of g; Mastrogiuseppe & Ostojic's
    mean field then splits the region the eigenvalues leave open.)

    Parameters
    ----------
    outlier, radius : float
    variance : float, default=1
        Var m of the low-rank part (enters the static variance of the structured state).
    activation : str, default="tanh"

    Returns
    -------
    RegimePrediction

    Examples
    --------
    >>> regime_from_spectrum(4.0, 3.0).regime
    'structured chaotic'
    >>> regime_from_spectrum(0.5, 0.5).method
    'spectrum'
    """
    outlier, radius = float(outlier), float(radius)
    if not (math.isfinite(outlier) and math.isfinite(radius)) or radius < 0:
        raise ValueError(f"regime_from_spectrum needs a finite outlier and a finite radius >= 0. "
                         f"Got outlier={outlier!r}, radius={radius!r}.")
    spectral = _spectral_regime(outlier, radius)
    if outlier > 1.0 and radius > 1.0:
        from .dmf import predicted_dmf_regime

        regime = predicted_dmf_regime(_mapped_model(outlier, radius, variance, activation))
        method = "dmf"
    else:
        regime = {"decaying": "decaying", "structured": "structured", "chaotic": "homogeneous chaotic"}[spectral]
        method = "spectrum"
    return RegimePrediction(regime=regime, method=method, spectral_regime=spectral, outlier=outlier,
                            bulk_radius=radius)


def predicted_regime_map(variance, covariance, *, n_connections=None, sparsity=None, n_neurons=None, scaling="1",
                         correlated=False, activation="tanh"):
    """:func:`predicted_regime` completed by the dynamic mean field (theory section 8).

    lambda_1 = :func:`predicted_outlier`, R = :func:`predicted_bulk_radius`,
    then :func:`regime_from_spectrum` (with Var m = sigma^2). Where at most one
    of them exceeds 1 the answer is :func:`predicted_regime`'s (its "chaotic"
    called "homogeneous chaotic"); where both do, the mean field decides.

    Parameters
    ----------
    variance, covariance, n_connections, sparsity, n_neurons, scaling, correlated
        As in :func:`predicted_regime`.
    activation : str, default="tanh"

    Returns
    -------
    RegimePrediction

    Examples
    --------
    >>> predicted_regime_map(1.0, 0.05, n_connections=100, n_neurons=1000).regime  # lambda_1 = 5, R = 9.6
    'homogeneous chaotic'
    """
    outlier = predicted_outlier(covariance, sparsity=sparsity, n_connections=n_connections, n_neurons=n_neurons,
                                scaling=scaling)
    radius = predicted_bulk_radius(variance, sparsity=sparsity, n_connections=n_connections, n_neurons=n_neurons,
                                   scaling=scaling, covariance=covariance, correlated=correlated)
    return regime_from_spectrum(outlier, radius, variance=variance, activation=activation)


def regime_boundaries(outlier, radius=float("nan"), *, variance=1.0, activation="tanh", g_max=None, tol=1e-3):
    """The boundary values of the regime map at outlier lambda_1 (theory section 8), not distances.

    Parameters
    ----------
    outlier : float
        lambda_1.
    radius : float, optional
        R of the network asked about (reported back; not needed for the lines).
    variance : float, default=1
        Var m.
    activation : str, default="tanh"
    g_max : float, optional
        Upper end of the search in R (default 2 lambda_1 + 2).
    tol : float, default=1e-3
        Bisection tolerance in R.

    Returns
    -------
    RegimeBoundaries

    Examples
    --------
    >>> b = regime_boundaries(2.0, tol=1e-2)
    >>> (b.outlier_line, b.bulk_line, round(b.g_bulk, 2))
    (1.0, 1.0, 1.65)
    """
    from .dmf import critical_lines

    outlier = float(outlier)
    g_max = 2.0 * abs(outlier) + 2.0 if g_max is None else float(g_max)
    if outlier > 1.0:
        lines = critical_lines([outlier], kind="covariance", variance=variance, activation=activation, g_max=g_max,
                               tol=tol)
        g_bulk, g_outlier, g_chaos = (float(v[0]) for v in (lines.g_bulk, lines.g_outlier,
                                                            lines.g_chaotic_structure))
        line = lines.structure_line
    else:
        g_bulk = g_outlier = g_chaos = float("nan")
        line = 1.0
    return RegimeBoundaries(outlier_line=line, bulk_line=1.0, g_bulk=g_bulk, g_outlier=g_outlier,
                            g_chaotic_structure=g_chaos, outlier=outlier, bulk_radius=float(radius))
