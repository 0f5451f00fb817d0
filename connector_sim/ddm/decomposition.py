"""Decompositions of a network and of its dynamics: connectivity asymmetry and time-irreversibility.

Connectivity. ``J = M N^T / N`` splits into a symmetric part
``J_s = (M N^T + N M^T) / (2N)`` and an antisymmetric part
``J_a = (M N^T - N M^T) / (2N)``. :func:`connectivity_decomposition` returns
their norms and spectra through the low-rank structure (never forming J), and
the same split of J restricted to the latent subspace span(M) (R x R, in
orthonormal coordinates), which is similar to the overlap ``N^T M / N`` that
drives the latent dynamics.

Dynamics. For dz = f dt + G dW with D = G G^T / 2 and stationary density p_s,
the probability current is ``j = f p - div(D p)`` and the drift splits into

    f = f_rev + f_irr,   f_rev = D grad log p_s + div D,   f_irr = j_s / p_s

(f_rev is what a reversible process with the same p_s and D would have;
f_irr is divergence-free against p_s: div(f_irr p_s) = 0). The entropy
production rate is ``e_p = int f_irr^T D^{-1} f_irr p_s dz`` (>= 0, zero
exactly under detailed balance). :func:`stationary_density` solves the
stationary Fokker-Planck equation ``0 = -div(f p) + sum_ij d_i d_j (D_ij p)``
on a grid for d <= 2 (finite volumes, sparse solve) and estimates p_s from
simulations otherwise; :func:`helmholtz_hodge` and :func:`entropy_production`
build on it; :func:`irreversibility_from_trajectories` measures the
irreversibility from sampled paths alone.
"""

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from .sde import SDE, euler_maruyama

__all__ = [
    "ConnectivityDecomposition",
    "connectivity_decomposition",
    "make_grid",
    "stationary_density",
    "HelmholtzHodge",
    "helmholtz_hodge",
    "entropy_production",
    "Irreversibility",
    "irreversibility_from_trajectories",
    "entropy_production_from_paths",
    "cycling_rate",
]


# =========================================================================== connectivity
@dataclass
class ConnectivityDecomposition:
    """Symmetric / antisymmetric split of J = M N^T / N and of the latent overlap N^T M / N.

    Attributes
    ----------
    norm, norm_symmetric, norm_antisymmetric : float
        Frobenius norms of J, J_s, J_a (norm^2 = norm_symmetric^2 + norm_antisymmetric^2).
    asymmetry : float
        ||J_a||_F / ||J||_F, in [0, 1] (0: symmetric, 1: antisymmetric).
    eigenvalues : ndarray (R,), complex
        Non-zero spectrum of J (= eigenvalues of the overlap N^T M / N).
    eigenvalues_symmetric : ndarray (2R,), real
        Non-zero spectrum of J_s (the rest of its N eigenvalues are 0).
    eigenvalues_antisymmetric : ndarray (2R,), complex (purely imaginary)
        Non-zero spectrum of J_a.
    overlap : ndarray (R, R)
        N^T M / N: the latent linearisation of a linear network in the
        coordinates kappa of x = M kappa is d kappa / dt = -kappa + overlap kappa.
        Its symmetric part depends on the (non-orthonormal) basis M, so the
        split below uses orthonormal latent coordinates instead.
    latent : ndarray (R, R)
        K = Q^T J Q with M = Q T_M (thin QR): J restricted to span(M) in
        orthonormal coordinates y = T_M kappa (similar to ``overlap``:
        K = T_M overlap T_M^{-1}). K_s = Q^T J_s Q and K_a = Q^T J_a Q, so a
        symmetric J gives a symmetric K.
    latent_symmetric, latent_antisymmetric : ndarray (R, R)
    latent_norm_symmetric, latent_norm_antisymmetric : float
    latent_eigenvalues_symmetric : ndarray (R,), real
    latent_eigenvalues_antisymmetric : ndarray (R,), complex (purely imaginary)
    """

    norm: float
    norm_symmetric: float
    norm_antisymmetric: float
    asymmetry: float
    eigenvalues: np.ndarray
    eigenvalues_symmetric: np.ndarray
    eigenvalues_antisymmetric: np.ndarray
    overlap: np.ndarray
    latent: np.ndarray
    latent_symmetric: np.ndarray
    latent_antisymmetric: np.ndarray
    latent_norm_symmetric: float
    latent_norm_antisymmetric: float
    latent_eigenvalues_symmetric: np.ndarray
    latent_eigenvalues_antisymmetric: np.ndarray


def connectivity_decomposition(network):
    """Split the connectivity of a low-rank network into symmetric and antisymmetric parts.

    Works in O(N R^2) time and O(N R) memory: with U = [M, N] (N x 2R) and its
    thin QR factorisation U = Q T,

        J_s = Q T [[0, I], [I, 0]] T^T Q^T / (2N),   J_a = Q T [[0, I], [-I, 0]] T^T Q^T / (2N)

    so their non-zero eigenvalues are those of the 2R x 2R matrices in the
    middle, and ||J_s||_F, ||J_a||_F their Frobenius norms. The non-zero
    eigenvalues of J are those of N^T M / N.

    Parameters
    ----------
    network : LowRankRNN, or a tuple (m, n) of (N, R) arrays

    Returns
    -------
    ConnectivityDecomposition

    Raises
    ------
    TypeError
        If ``network`` is not a LowRankRNN or a tuple (m, n).
    ValueError
        If m and n differ in shape.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import LowRankRNN
    >>> a, b = np.random.default_rng(0).normal(size=(2, 50, 1))
    >>> round(connectivity_decomposition(LowRankRNN(a, a)).asymmetry, 6)  # J = a a^T / N: symmetric
    0.0
    >>> m, n = np.hstack([a, b]), np.hstack([b, -a])  # J = (a b^T - b a^T) / N: antisymmetric
    >>> round(connectivity_decomposition(LowRankRNN(m, n)).asymmetry, 6)
    1.0
    """
    if isinstance(network, tuple) and len(network) == 2:
        m, n = (np.asarray(a, dtype=float) for a in network)
    elif hasattr(network, "m") and hasattr(network, "n"):
        m, n = np.asarray(network.m, dtype=float), np.asarray(network.n, dtype=float)
    else:
        raise TypeError("The 'network' parameter of connectivity_decomposition must be a LowRankRNN or a tuple "
                        f"(m, n) of (N, R) arrays. Got {type(network).__name__} instead.")
    if m.ndim != 2 or m.shape != n.shape:
        raise ValueError(f"connectivity_decomposition needs m and n of the same shape (N, R). "
                         f"Got {m.shape} and {n.shape}.")
    N, R = m.shape
    U = np.hstack([m, n])
    _, T = np.linalg.qr(U, mode="reduced")           # U = Q T, T (2R x 2R) upper triangular
    I_R = np.eye(R)
    Z = np.zeros((R, R))
    Cs = np.block([[Z, I_R], [I_R, Z]])
    Ca = np.block([[Z, I_R], [-I_R, Z]])
    Ks = T @ Cs @ T.T / (2 * N)
    Ka = T @ Ca @ T.T / (2 * N)
    Ks = (Ks + Ks.T) / 2
    Ka = (Ka - Ka.T) / 2
    norm_s = float(np.linalg.norm(Ks))
    norm_a = float(np.linalg.norm(Ka))
    norm = float(np.sqrt(norm_s**2 + norm_a**2))
    overlap = n.T @ m / N
    Qm, Tm = np.linalg.qr(m, mode="reduced")
    K = Tm @ (n.T @ Qm) / N                       # Q^T J Q = T_M N^T Q / N
    Os = (K + K.T) / 2
    Oa = (K - K.T) / 2
    eig_a = np.linalg.eigvals(Ka)
    eig_a = 1j * np.sort(eig_a.imag)
    eig_oa = np.linalg.eigvals(Oa)
    eig_oa = 1j * np.sort(eig_oa.imag)
    return ConnectivityDecomposition(
        norm=norm, norm_symmetric=norm_s, norm_antisymmetric=norm_a,
        asymmetry=norm_a / norm if norm > 0 else 0.0,
        eigenvalues=np.linalg.eigvals(overlap),
        eigenvalues_symmetric=np.linalg.eigvalsh(Ks),
        eigenvalues_antisymmetric=eig_a,
        overlap=overlap, latent=K, latent_symmetric=Os, latent_antisymmetric=Oa,
        latent_norm_symmetric=float(np.linalg.norm(Os)), latent_norm_antisymmetric=float(np.linalg.norm(Oa)),
        latent_eigenvalues_symmetric=np.linalg.eigvalsh(Os), latent_eigenvalues_antisymmetric=eig_oa,
    )


# =========================================================================== grids
def make_grid(bounds, n):
    """Cell centres of a uniform grid: ``bounds`` is [(low, high)] * d, ``n`` an int or one per axis.

    Cell i of an axis covers [low + i h, low + (i + 1) h], h = (high - low) / n,
    and its centre is low + (i + 1/2) h.

    Raises
    ------
    ValueError
        If a pair of ``bounds`` does not have low < high, or ``n`` < 3.

    Examples
    --------
    >>> axes = make_grid([(0.0, 1.0)], 4)  # a tuple of one axis per dimension
    >>> axes[0]
    array([0.125, 0.375, 0.625, 0.875])
    """
    bounds = np.asarray(bounds, dtype=float)
    if bounds.ndim == 1:
        bounds = bounds[None]
    if bounds.ndim != 2 or bounds.shape[1] != 2 or np.any(bounds[:, 1] <= bounds[:, 0]):
        raise ValueError(f"The 'bounds' parameter of make_grid must be [(low, high), ...] with low < high. "
                         f"Got {bounds.tolist()} instead.")
    ns = np.broadcast_to(np.asarray(n, dtype=int), (bounds.shape[0],))
    if np.any(ns < 3):
        raise ValueError(f"The 'n' parameter of make_grid must be >= 3 cells per axis. Got {n!r} instead.")
    return tuple(lo + (np.arange(k) + 0.5) * (hi - lo) / k for (lo, hi), k in zip(bounds, ns))


def _check_grid(grid, dim, owner):
    if isinstance(grid, np.ndarray) and grid.ndim == 1:
        grid = (grid,)
    try:
        axes = tuple(np.asarray(g, dtype=float) for g in grid)
    except TypeError as exc:
        raise TypeError(f"The 'grid' parameter of {owner} must be a tuple of {dim} 1-D arrays of cell centres "
                        "(see make_grid).") from exc
    if len(axes) != dim:
        raise ValueError(f"The 'grid' parameter of {owner} must have one axis per dimension ({dim}). "
                         f"Got {len(axes)} axes.")
    for k, g in enumerate(axes):
        if g.ndim != 1 or g.size < 3:
            raise ValueError(f"Axis {k} of the 'grid' parameter of {owner} must be a 1-D array of >= 3 cell centres.")
        h = np.diff(g)
        if np.any(h <= 0) or np.ptp(h) > 1e-8 * abs(h[0]):
            raise ValueError(f"Axis {k} of the 'grid' parameter of {owner} must be increasing and uniformly spaced "
                             "(use make_grid).")
    return axes


def _mesh(axes):
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _bernoulli(x):
    """B(x) = x / (e^x - 1), B(0) = 1 (the Scharfetter-Gummel weight)."""
    x = np.asarray(x, dtype=float)
    out = np.ones_like(x)
    nz = np.abs(x) > 1e-10
    with np.errstate(over="ignore"):
        out[nz] = x[nz] / np.expm1(x[nz])
    return out


# =========================================================================== Fokker-Planck
def _face_fluxes(sde, axes):
    """Sparse operators F_k (faces along axis k x cells): flux of p across the interior faces.

    Flux along axis k at the face between cells c and c + e_k (spacing h):

        F = (D_kk / h) [B(-Pe) p_c - B(Pe) p_{c+e_k}] - sum_{l != k} d_l (D_kl p)

    with a = f_k - d_k D_kk at the face and Pe = a h / D_kk: the
    Scharfetter-Gummel (exponentially fitted) flux of a p - D_kk d_k p,
    exact for constant a and D_kk, upwind as D_kk -> 0 and central as a -> 0.
    The cross terms d_l (D_kl p) use central differences along l (one-sided at
    the domain edge). Faces on the domain boundary carry no flux (reflecting).
    """
    dim = len(axes)
    shape = tuple(len(g) for g in axes)
    n_cells = int(np.prod(shape))
    index = np.arange(n_cells).reshape(shape)
    h = [g[1] - g[0] for g in axes]
    centres = _mesh(axes)
    Dc = sde.diffusion_tensor(centres.reshape(-1, dim)).reshape(shape + (dim, dim))
    ops = []
    for k in range(dim):
        lo = [slice(None)] * dim
        hi = [slice(None)] * dim
        lo[k] = slice(0, -1)
        hi[k] = slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        faces = (centres[lo] + centres[hi]) / 2
        f_face = sde.drift(faces.reshape(-1, dim))[:, k]
        if sde.constant_diffusion is not None:
            Dkk = np.full(f_face.shape, Dc.reshape(-1, dim, dim)[0, k, k])
            dDkk = np.zeros_like(f_face)
        else:
            D_face = sde.diffusion_tensor(faces.reshape(-1, dim))
            Dkk = D_face[:, k, k]
            dDkk = ((Dc[hi][..., k, k] - Dc[lo][..., k, k]) / h[k]).ravel()
        a = f_face - dDkk
        il = index[lo].ravel()
        ir = index[hi].ravel()
        n_faces = il.size
        rows_f = np.arange(n_faces)
        pos = Dkk > 0
        wl = np.where(a > 0, a, 0.0)
        wr = np.where(a < 0, -a, 0.0)       # upwind when D_kk = 0: F = a+ p_l - a- p_r
        if np.any(pos):
            pe = a[pos] * h[k] / Dkk[pos]
            wl[pos] = Dkk[pos] / h[k] * _bernoulli(-pe)
            wr[pos] = Dkk[pos] / h[k] * _bernoulli(pe)
        rows = [rows_f, rows_f]
        cols = [il, ir]
        vals = [wl, -wr]
        for l in range(dim):
            if l == k or np.all(Dc[..., k, l] == 0):
                continue
            # - d_l (D_kl p) at the face: average over the two cells of the central difference along l
            Dkl = Dc[..., k, l]
            for side in (lo, hi):
                n_l = shape[l]
                pos_l = np.arange(n_l)
                up = np.minimum(pos_l + 1, n_l - 1)
                dn = np.maximum(pos_l - 1, 0)
                width = (up - dn) * h[l]
                bshape = [1] * dim
                bshape[l] = n_l
                denom = np.broadcast_to(width.reshape(bshape), shape)[side]
                for shift_idx, sign in ((up, 1.0), (dn, -1.0)):
                    neigh = np.take(index, shift_idx, axis=l)[side]
                    w_l = np.take(Dkl, shift_idx, axis=l)[side]
                    rows.append(rows_f)
                    cols.append(neigh.ravel())
                    vals.append((-sign * 0.5 * w_l / denom).ravel())
        F = scipy.sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                    shape=(n_faces, n_cells))
        ops.append((F, il, ir))
    return ops


def _solve_fokker_planck(sde, axes):
    """p on the grid (normalised, sum p vol = 1) and the face-flux operators."""
    shape = tuple(len(g) for g in axes)
    n_cells = int(np.prod(shape))
    vol = float(np.prod([g[1] - g[0] for g in axes]))
    ops = _face_fluxes(sde, axes)
    L = scipy.sparse.csr_matrix((n_cells, n_cells))
    for k, (F, il, ir) in enumerate(ops):
        h = axes[k][1] - axes[k][0]
        n_faces = il.size
        # divergence: d p / dt in cell c = (inflow - outflow) / h
        Div = scipy.sparse.csr_matrix(
            (np.concatenate([-np.ones(n_faces), np.ones(n_faces)]) / h,
             (np.concatenate([il, ir]), np.concatenate([np.arange(n_faces)] * 2))), shape=(n_cells, n_faces))
        L = L + Div @ F
    # 1^T L = 0 (the scheme conserves probability), so one equation is redundant:
    # replace it by the normalisation sum(p) vol = 1.
    row = n_cells // 2
    keep = np.ones(n_cells)
    keep[row] = 0.0
    norm_row = scipy.sparse.csr_matrix((np.full(n_cells, vol), (np.full(n_cells, row), np.arange(n_cells))),
                                       shape=(n_cells, n_cells))
    L = scipy.sparse.diags(keep) @ L + norm_row
    rhs = np.zeros(n_cells)
    rhs[row] = 1.0
    p = scipy.sparse.linalg.spsolve(L.tocsc(), rhs)
    if not np.all(np.isfinite(p)):
        raise FloatingPointError("stationary_density: the Fokker-Planck system is singular on this grid "
                                 "(does the drift point inwards at the domain edge?).")
    return p.reshape(shape), ops, vol


def _check_sde(sde, owner):
    if not isinstance(sde, SDE):
        raise TypeError(f"The 'sde' parameter of {owner} must be an SDE. Got {type(sde).__name__} instead.")


def _histogram(samples, axes):
    edges = [np.concatenate([g - (g[1] - g[0]) / 2, [g[-1] + (g[1] - g[0]) / 2]]) for g in axes]
    H, _ = np.histogramdd(samples, bins=edges)
    vol = float(np.prod([g[1] - g[0] for g in axes]))
    return H / (len(samples) * vol)


def stationary_density(sde, grid, *, samples=None, n_trials=64, n_steps=20000, dt=0.01, burn_in=2000, seed=0):
    """The stationary density p_s of an SDE on a grid of cell centres.

    For d <= 2 (and ``samples`` None) it solves the stationary Fokker-Planck
    equation ``0 = -div(f p) + sum_ij d_i d_j (D_ij p)`` by finite volumes:
    Scharfetter-Gummel fluxes (exponential fitting: positive, exact for a
    locally constant drift, second order in the cell size for smooth
    coefficients), zero flux through the domain boundary, and a sparse LU
    solve with one equation replaced by the normalisation. The domain must
    hold essentially all the probability. For d > 2, or with ``samples``, it
    is a histogram of the samples on the grid's cells (simulated with
    :func:`euler_maruyama` when ``samples`` is None: ``n_trials`` paths of
    ``n_steps`` steps of ``dt``, the first ``burn_in`` steps dropped).

    Parameters
    ----------
    sde : SDE
    grid : tuple of d 1-D arrays of uniformly spaced cell centres (see :func:`make_grid`)
    samples : array of shape (n, d), optional

    Returns
    -------
    p : ndarray of the grid's shape
        Density values at the cell centres; ``p.sum() * cell_volume = 1``.

    Raises
    ------
    TypeError
        If ``sde`` is not an SDE or ``grid`` not a tuple of 1-D axes.
    ValueError
        If the grid does not have one increasing, uniformly spaced axis of at
        least 3 cells per dimension, or ``samples`` is not of shape (n, d).
    FloatingPointError
        If the Fokker-Planck system is singular on the grid.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.ddm import ornstein_uhlenbeck
    >>> sde = ornstein_uhlenbeck()  # a stable spiral: a stationary state with a rotating current
    >>> grid = make_grid([(-4.0, 4.0), (-4.0, 4.0)], 40)
    >>> density = stationary_density(sde, grid)
    >>> density.shape, round(float(density.sum() * 0.2 ** 2), 6)  # integrates to 1 (cells of 0.2 x 0.2)
    ((40, 40), 1.0)
    """
    _check_sde(sde, "stationary_density")
    axes = _check_grid(grid, sde.dim, "stationary_density")
    if samples is not None:
        samples = np.asarray(samples, dtype=float)
        if samples.ndim != 2 or samples.shape[1] != sde.dim:
            raise ValueError(f"The 'samples' parameter of stationary_density must have shape (n, {sde.dim}). "
                             f"Got {samples.shape} instead.")
        return _histogram(samples, axes)
    if sde.dim > 2:
        return _histogram(_simulate_samples(sde, axes, n_trials, n_steps, dt, burn_in, seed), axes)
    return _solve_fokker_planck(sde, axes)[0]


def _simulate_samples(sde, axes, n_trials, n_steps, dt, burn_in, seed):
    z0 = np.array([g[len(g) // 2] for g in axes])
    z = euler_maruyama(sde, z0, n_steps, dt, n_trials=n_trials, seed=seed)
    return z[:, burn_in + 1:].reshape(-1, sde.dim)


# =========================================================================== Helmholtz-Hodge
@dataclass
class HelmholtzHodge:
    """The decomposition f = f_rev + f_irr of a drift on a grid.

    Attributes
    ----------
    grid : tuple of 1-D arrays (cell centres)
    density : ndarray, grid shape
        p_s (``density.sum() * cell_volume == 1``).
    drift, reversible, irreversible, current : ndarray, grid shape + (d,)
        f, f_rev = f - f_irr (= D grad log p_s + div D), f_irr = j_s / p_s and
        the stationary probability current j_s = f p_s - div(D p_s). Where
        p_s < ``floor`` * max p_s, f_irr (and so f_rev) is set to 0 and
        ``valid`` is False: j / p is not resolved there.
    valid : ndarray of bool, grid shape
    entropy_production : float
        sum over valid cells of j^T D^{-1} j / p_s * cell_volume
        (= int f_irr^T D^{-1} f_irr p_s dz).
    cell_volume : float
    method : str
        "fokker_planck" or "trajectories".
    """

    grid: tuple
    density: np.ndarray
    drift: np.ndarray
    reversible: np.ndarray
    irreversible: np.ndarray
    current: np.ndarray
    valid: np.ndarray
    entropy_production: float
    cell_volume: float
    method: str = "fokker_planck"
    extra: dict = field(default_factory=dict)


def helmholtz_hodge(sde, grid, *, trajectories=None, dt=None, floor=1e-8):
    """Split the drift into a reversible and an irreversible (probability-current) part.

    ``f = f_rev + f_irr`` with ``f_irr = j_s / p_s`` the velocity of the
    stationary probability current ``j_s = f p_s - div(D p_s)``, and
    ``f_rev = f - f_irr = D grad log p_s + div D``.

    For d <= 2 (no ``trajectories``) p_s and j_s come from the finite-volume
    Fokker-Planck solution of :func:`stationary_density`: j_s at a cell
    centre is the mean of the fluxes through its two faces along each axis
    (so it is the discretely divergence-free current of the scheme). The
    discretisation error of f_irr and e_p is second order in the cell size
    where p_s is resolved.

    With ``trajectories`` (shape (n_trials, n_times, d), sampled every ``dt``;
    the only option for d > 2) p_s is their histogram on the grid and
    f_irr(cell) the average Stratonovich velocity (z_{t+1} - z_{t-1}) / (2 dt)
    of the visits to the cell: E[dz/dt | z] = j_s / p_s. This estimate has a
    noise floor: one velocity sample has covariance ~ D / dt, and successive
    samples share an increment (correlation 1/2), so the mean over a cell's
    c visits has covariance ~ 2 D / (dt c) and the entropy production is
    biased upwards by about 2 K d / (dt n) for K visited cells and n samples.
    ``entropy_production`` has this first-order bias subtracted
    (``extra["entropy_production_raw"]`` and ``extra["ep_bias"]`` keep both).
    Cells are averages over their width and the mass outside the grid is
    left out, both of which lower the estimate.

    Parameters
    ----------
    sde : SDE
        Gives f and D.
    grid : tuple of d 1-D arrays of cell centres
    trajectories : array (n_trials, n_times, d), optional
    dt : float, optional
        Sampling interval of ``trajectories``.
    floor : float, default=1e-8
        Relative density below which f_irr is not computed.

    Returns
    -------
    HelmholtzHodge

    Raises
    ------
    TypeError
        If ``sde`` is not an SDE or ``grid`` not a tuple of 1-D axes.
    ValueError
        If the grid does not have one increasing, uniformly spaced axis of at
        least 3 cells per dimension, a grid solve is asked for d > 2, or
        ``trajectories`` come without ``dt`` or with the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.ddm import ornstein_uhlenbeck
    >>> sde = ornstein_uhlenbeck()  # a stable spiral: a stationary state with a rotating current
    >>> grid = make_grid([(-4.0, 4.0), (-4.0, 4.0)], 40)
    >>> split = helmholtz_hodge(sde, grid)
    >>> round(split.entropy_production, 1), sde.exact["entropy_production"]  # grid vs closed form
    (2.0, 2.0)
    """
    owner = "helmholtz_hodge"
    _check_sde(sde, owner)
    axes = _check_grid(grid, sde.dim, owner)
    dim = sde.dim
    shape = tuple(len(g) for g in axes)
    centres = _mesh(axes)
    f = sde.drift(centres.reshape(-1, dim)).reshape(shape + (dim,))
    Dc = sde.diffusion_tensor(centres.reshape(-1, dim)).reshape(shape + (dim, dim))
    Dinv = np.linalg.pinv(Dc)
    if trajectories is None:
        if dim > 2:
            raise ValueError("helmholtz_hodge solves the Fokker-Planck equation on a grid for d <= 2 only; for a "
                             f"{dim}-D SDE pass trajectories= (from euler_maruyama) and dt=.")
        p, ops, vol = _solve_fokker_planck(sde, axes)
        j = np.zeros(shape + (dim,))
        for k, (F, il, ir) in enumerate(ops):
            flux = F @ p.ravel()
            jk = np.zeros(p.size)
            np.add.at(jk, il, flux / 2)
            np.add.at(jk, ir, flux / 2)
            j[..., k] = jk.reshape(shape)
        valid = p > floor * p.max()
        f_irr = np.zeros_like(f)
        f_irr[valid] = j[valid] / p[valid][:, None]
        quad = np.einsum("...i,...ij,...j->...", f_irr, Dinv, f_irr)
        ep = float(np.sum(quad[valid] * p[valid]) * vol)
        return HelmholtzHodge(axes, p, f, f - f_irr, f_irr, j, valid, ep, vol, "fokker_planck")
    # ------------------------------------------------------------ from trajectories
    if dt is None:
        raise ValueError("helmholtz_hodge needs dt= (the sampling interval) with trajectories=.")
    traj = _check_trajectories(trajectories, dim, owner)
    vol = float(np.prod([g[1] - g[0] for g in axes]))
    mid = traj[:, 1:-1].reshape(-1, dim)
    vel = ((traj[:, 2:] - traj[:, :-2]) / (2 * dt)).reshape(-1, dim)
    edges = [np.concatenate([g - (g[1] - g[0]) / 2, [g[-1] + (g[1] - g[0]) / 2]]) for g in axes]
    counts, _ = np.histogramdd(mid, bins=edges)
    sums = np.stack([np.histogramdd(mid, bins=edges, weights=vel[:, k])[0] for k in range(dim)], axis=-1)
    n_in = counts.sum()
    p = counts / (max(n_in, 1) * vol)
    valid = counts >= max(1, floor * counts.max())
    f_irr = np.zeros(shape + (dim,))
    f_irr[valid] = sums[valid] / counts[valid][:, None]
    j = f_irr * p[..., None]
    quad = np.einsum("...i,...ij,...j->...", f_irr, Dinv, f_irr)
    ep_raw = float(np.sum(quad[valid] * p[valid]) * vol)
    # one velocity sample has covariance ~ D / dt; overlapping successive samples (correlation 1/2)
    # double the variance of a cell's mean: E[f_irr^T D^-1 f_irr] gains 2 d / (dt c) per cell, weighted
    # by p vol = c / n: 2 d / (dt n) per visited cell.
    bias = float(2 * valid.sum() * dim / (dt * max(n_in, 1)))
    return HelmholtzHodge(axes, p, f, f - f_irr, f_irr, j, valid, ep_raw - bias, vol, "trajectories",
                          extra={"entropy_production_raw": ep_raw, "ep_bias": bias})


def cycling_rate(decomposition, center=(0.0, 0.0)):
    """Net rate of cycling around ``center`` of a 2-D stationary state: the probability current through a ray.

    The stationary current j_s is divergence-free, so its flux through any
    curve from ``center`` to the edge of the domain is the same; it equals
    the mean net number of turns per unit time around ``center`` (positive:
    counterclockwise), and 1 / rate is the mean cycling period. Computed
    through the ray y = center_y, x > center_x, from the current at the two
    rows of cell centres on either side of it (linear interpolation).

    Parameters
    ----------
    decomposition : HelmholtzHodge
        A 2-D decomposition (from the Fokker-Planck solution).
    center : (float, float), default=(0, 0)

    Returns
    -------
    rate : float
        Turns per unit time.

    Raises
    ------
    TypeError
        If ``decomposition`` is not a 2-D HelmholtzHodge.
    ValueError
        If ``center`` lies outside the grid.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.ddm import ornstein_uhlenbeck
    >>> sde = ornstein_uhlenbeck()  # a stable spiral: a stationary state with a rotating current
    >>> grid = make_grid([(-4.0, 4.0), (-4.0, 4.0)], 40)
    >>> rate = cycling_rate(helmholtz_hodge(sde, grid))  # one turn per 2 pi time units
    >>> bool(abs(rate - 1 / (2 * np.pi)) < 0.01)
    True
    """
    if not isinstance(decomposition, HelmholtzHodge) or len(decomposition.grid) != 2:
        raise TypeError("cycling_rate needs a 2-D HelmholtzHodge (from helmholtz_hodge on a 2-D grid).")
    x, y = decomposition.grid
    cx, cy = center
    if not (y[0] < cy < y[-1]):
        raise ValueError(f"cycling_rate: the center's y = {cy} lies outside the grid.")
    j1 = int(np.searchsorted(y, cy)) - 1
    w = (cy - y[j1]) / (y[j1 + 1] - y[j1])
    jy = (1 - w) * decomposition.current[:, j1, 1] + w * decomposition.current[:, j1 + 1, 1]
    right = x > cx
    return float(np.sum(jy[right]) * (x[1] - x[0]))


def entropy_production(sde_or_decomposition, grid=None, **kwargs):
    """The entropy production rate e_p = int f_irr^T D^{-1} f_irr p_s dz (>= 0; 0 under detailed balance).

    Pass an SDE and a grid (the arguments of :func:`helmholtz_hodge`), or a
    :class:`HelmholtzHodge` already computed. In units of 1 / time (k_B = 1).
    For a linear SDE it equals tr(A_irr^T D^{-1} A_irr S) (see
    :func:`~connector_sim.ddm.ornstein_uhlenbeck`).

    Raises
    ------
    ValueError
        If an SDE is given without a grid; otherwise as :func:`helmholtz_hodge`.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.ddm import ornstein_uhlenbeck
    >>> sde = ornstein_uhlenbeck()  # a stable spiral: a stationary state with a rotating current
    >>> grid = make_grid([(-4.0, 4.0), (-4.0, 4.0)], 40)
    >>> round(entropy_production(sde, grid), 1)
    2.0
    """
    if isinstance(sde_or_decomposition, HelmholtzHodge):
        return sde_or_decomposition.entropy_production
    if grid is None:
        raise ValueError("entropy_production needs a grid (or a HelmholtzHodge result).")
    return helmholtz_hodge(sde_or_decomposition, grid, **kwargs).entropy_production


# =========================================================================== from trajectories
def _check_trajectories(traj, dim, owner):
    traj = np.asarray(traj, dtype=float)
    if traj.ndim == 2:
        traj = traj[None]
    if traj.ndim != 3 or (dim is not None and traj.shape[2] != dim) or traj.shape[1] < 3:
        want = "d" if dim is None else str(dim)
        raise ValueError(f"The 'traj' parameter of {owner} must have shape (n_trials, n_times >= 3, {want}) or "
                         f"(n_times, {want}). Got {np.shape(traj)} instead.")
    if not np.all(np.isfinite(traj)):
        raise ValueError(f"The 'traj' parameter of {owner} must contain only finite values.")
    return traj


@dataclass
class Irreversibility:
    """Time-irreversibility measured from trajectories.

    Attributes
    ----------
    lags : ndarray of int
        Lags in samples.
    covariance_asymmetry : ndarray (n_lags, d, d)
        A(tau) = (C(tau) - C(tau)^T) / 2 with C(tau) = E[dz_{t+tau} dz_t^T]
        (dz = z - mean); zero for every tau under detailed balance.
    covariance_asymmetry_se : ndarray (n_lags, d, d)
        Standard errors of A(tau) across trials (needs >= 2 trials; NaN otherwise).
    asymmetry_norm : ndarray (n_lags,)
        ||A(tau)||_F.
    kl_rate : float
        Entropy production rate of the coarse-grained chain at lag
        ``kl_lag``: (1 / (kl_lag dt)) sum_ij pi_ij log(pi_ij / pi_ji) over
        pairs of partition cells seen in both directions. With infinite data it
        is a lower bound on e_p (coarse-graining in space and time can only
        lose irreversibility).
    kl_rate_bias : float
        Its first-order finite-sample bias, 2 K / (n_transitions kl_lag dt)
        for K pairs counted (each pair adds (n_ij - n_ji)^2 / (n m) ~ 2 / n in
        expectation when the counts are Poisson with mean m); positive.
        Successive transitions are correlated, so the real bias can be larger:
        compare with a reversible control.
    kl_rate_trials : ndarray (n_trials,)
        The same rate per trial (spread -> error bar), when there are >= 2 trials.
    n_states : int
    """

    lags: np.ndarray
    covariance_asymmetry: np.ndarray
    covariance_asymmetry_se: np.ndarray
    asymmetry_norm: np.ndarray
    kl_rate: float
    kl_rate_bias: float
    kl_rate_trials: np.ndarray
    n_states: int


def _kl_rate(labels_list, n_states, lag, dt):
    counts = np.zeros((n_states, n_states))
    for lab in labels_list:
        np.add.at(counts, (lab[:-lag], lab[lag:]), 1.0)
    n = counts.sum()
    both = (counts > 0) & (counts.T > 0)
    np.fill_diagonal(both, False)
    pi = counts / n
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(both, pi * np.log(np.where(both, counts, 1) / np.where(both, counts.T, 1)), 0.0)
    K = both.sum() / 2
    return float(terms.sum() / (lag * dt)), float(2 * K / (n * lag * dt))


def irreversibility_from_trajectories(traj, dt, *, lags=(1, 2, 5, 10), n_bins=4, kl_lag=1, labels=None):
    """How far sampled paths are from time-reversible, from the paths alone.

    Two estimators:

    * the antisymmetric part of the lagged covariance,
      A(tau) = (C(tau) - C(tau)^T) / 2, C(tau) = E[dz_{t+tau} dz_t^T]: zero at
      every lag for a reversible process; for a linear SDE it is the
      antisymmetric part of expm(A tau) S (to first order tau (A S - S A^T)/2).
      Unbiased (the mean is removed, a bias O(1/T)); standard errors from the
      spread across trials.
    * the KL divergence rate between forward and time-reversed transition
      statistics on a coarse partition: each coordinate split into ``n_bins``
      quantile bins (``n_bins ** d`` cells), or the given ``labels``
      (integers per time point, e.g. the well occupied). With infinite data it
      is a lower bound on the entropy production rate; at finite data it is
      biased upwards (``kl_rate_bias`` gives the first-order size).

    Parameters
    ----------
    traj : array (n_trials, n_times, d) or (n_times, d)
    dt : float
        Sampling interval.
    lags : sequence of int, default=(1, 2, 5, 10)
        Lags of the covariance asymmetry, in samples.
    n_bins : int, default=4
    kl_lag : int, default=1
        Lag (in samples) of the transition counts.
    labels : int array (n_trials, n_times), optional
        A partition to use instead of the quantile grid.

    Returns
    -------
    Irreversibility

    Raises
    ------
    ValueError
        If ``traj`` is not of shape (n_trials, n_times >= 3, d) with finite
        values, ``dt`` is not positive, ``lags`` or ``kl_lag`` are not in
        [1, n_times - 1], or ``labels`` do not match ``traj``.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.ddm import double_well, euler_maruyama, ornstein_uhlenbeck
    >>> spiral, well = ornstein_uhlenbeck(), double_well()  # irreversible / reversible (a gradient flow)
    >>> spiral_paths = euler_maruyama(spiral, np.zeros(2), n_steps=20000, dt=0.01, n_trials=4, seed=0)
    >>> well_paths = euler_maruyama(well, np.ones(1), n_steps=20000, dt=0.01, n_trials=4, seed=0)
    >>> spiral_result = irreversibility_from_trajectories(spiral_paths, dt=0.01)
    >>> well_result = irreversibility_from_trajectories(well_paths, dt=0.01)
    >>> bool(spiral_result.kl_rate > 0.1), bool(well_result.kl_rate < 0.01)
    (True, True)
    >>> well_result.asymmetry_norm  # a 1-D lagged covariance is symmetric
    array([0., 0., 0., 0.])
    """
    owner = "irreversibility_from_trajectories"
    traj = _check_trajectories(traj, None, owner)
    B, T, d = traj.shape
    if not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"The 'dt' parameter of {owner} must be a finite number > 0. Got {dt!r} instead.")
    lags = np.atleast_1d(np.asarray(lags, dtype=int))
    if lags.ndim != 1 or np.any(lags < 1) or np.any(lags >= T):
        raise ValueError(f"The 'lags' parameter of {owner} must be ints in [1, n_times - 1]. Got {lags.tolist()}.")
    x = traj - traj.reshape(-1, d).mean(axis=0)
    per_trial = np.empty((B, len(lags), d, d))
    for b in range(B):
        for i, L in enumerate(lags):
            C = x[b, L:].T @ x[b, :-L] / (T - L)
            per_trial[b, i] = (C - C.T) / 2
    asym = per_trial.mean(axis=0)
    se = per_trial.std(axis=0, ddof=1) / np.sqrt(B) if B > 1 else np.full_like(asym, np.nan)
    # --- coarse partition
    if labels is None:
        flat = traj.reshape(-1, d)
        lab = np.zeros(B * T, dtype=np.int64)
        for k in range(d):
            qs = np.quantile(flat[:, k], np.linspace(0, 1, n_bins + 1)[1:-1])
            lab = lab * n_bins + np.searchsorted(qs, flat[:, k])
        labels = lab.reshape(B, T)
        n_states = n_bins**d
    else:
        labels = np.asarray(labels)
        if labels.shape != (B, T) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError(f"The 'labels' parameter of {owner} must be non-negative ints of shape ({B}, {T}).")
        n_states = int(labels.max()) + 1
    if kl_lag < 1 or kl_lag >= T:
        raise ValueError(f"The 'kl_lag' parameter of {owner} must be in [1, n_times - 1]. Got {kl_lag!r}.")
    kl, bias = _kl_rate(list(labels), n_states, kl_lag, dt)
    trials = np.array([_kl_rate([labels[b]], n_states, kl_lag, dt)[0] for b in range(B)]) if B > 1 else np.array([kl])
    return Irreversibility(lags, asym, se, np.linalg.norm(asym, axis=(1, 2)), kl, bias, trials, n_states)


def entropy_production_from_paths(sde, traj, dt):
    """Entropy production rate estimated along sampled paths (stochastic thermodynamics).

    For a constant diffusion tensor D the medium entropy produced along a
    path is the Stratonovich integral ``int f(z)^T D^{-1} o dz``; the system
    entropy -log p_s(z) has no net growth in the steady state, so

        e_p = E[ f(z_mid)^T D^{-1} (z_{t+1} - z_t) ] / dt,   z_mid = (z_t + z_{t+1}) / 2

    on stationary paths sampled every ``dt`` (from :func:`euler_maruyama`:
    a bias O(dt) from the scheme, and the stationary average needs paths long
    against the relaxation time). Needs no grid, so it applies in any
    dimension.

    Returns
    -------
    rate : float
        The estimate over all trials.
    per_trial : ndarray (n_trials,)
        One estimate per trial (their spread / sqrt(n_trials) is a standard error).

    Raises
    ------
    TypeError
        If ``sde`` is not an SDE.
    ValueError
        If its diffusion is not constant, ``traj`` is not of shape (n_trials,
        n_times >= 3, d) with finite values, or ``dt`` is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim.ddm import double_well, euler_maruyama, ornstein_uhlenbeck
    >>> spiral, well = ornstein_uhlenbeck(), double_well()  # irreversible / reversible (a gradient flow)
    >>> spiral_paths = euler_maruyama(spiral, np.zeros(2), n_steps=20000, dt=0.01, n_trials=4, seed=0)
    >>> well_paths = euler_maruyama(well, np.ones(1), n_steps=20000, dt=0.01, n_trials=4, seed=0)
    >>> rate, per_trial = entropy_production_from_paths(spiral, spiral_paths, dt=0.01)
    >>> round(rate, 1), spiral.exact["entropy_production"]
    (2.1, 2.0)
    >>> abs(entropy_production_from_paths(well, well_paths, dt=0.01)[0]) < 0.05  # detailed balance
    True
    """
    owner = "entropy_production_from_paths"
    _check_sde(sde, owner)
    if sde.constant_diffusion is None:
        raise ValueError(f"{owner} needs a constant diffusion (the estimator for a state-dependent D needs the "
                         "Ito-to-Stratonovich correction div D, not implemented).")
    traj = _check_trajectories(traj, sde.dim, owner)
    Dinv = np.linalg.pinv(sde.diffusion_tensor())
    mid = (traj[:, 1:] + traj[:, :-1]) / 2
    inc = traj[:, 1:] - traj[:, :-1]
    f = sde.drift(mid.reshape(-1, sde.dim)).reshape(mid.shape)
    work = np.einsum("bti,ij,btj->bt", f, Dinv, inc) / dt
    per_trial = work.mean(axis=1)
    return float(per_trial.mean()), per_trial
