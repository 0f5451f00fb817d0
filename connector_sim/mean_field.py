"""Mean-field latent dynamics, cell-type flows and perturbations (theory sections 1-2).

For neuron rows (m, n, I, b) drawn i.i.d. from p, the latents of an infinitely
large network follow (theory eq. 4)::

    dkappa/dt = -kappa + E_p[ n phi(z) ],    z = m^T kappa + I^T v + b

For a Gaussian p, Stein's lemma reduces the expectation to two 1-D Gaussian
averages::

    E[n phi(z)] = mu_n <phi>(mu_z, s_z) + Cov(n, z) <phi'>(mu_z, s_z)
    mu_z = mu_(m,I,b)^T a,  s_z^2 = a^T Sigma_(m,I,b) a,  Cov(n, z) = Sigma_(n,(m,I,b)) a
    a = [kappa; v; 1 (if the rows have a bias)]

and a Gaussian mixture is the weighted sum of its components. For an
:class:`~connector_sim.Empirical` distribution or a sampled
:class:`~connector_sim.LowRankRNN` the expectation is the sample average over
neurons (the flow of that finite network).

Cell types are mixture components (or, for sampled sources, neuron labels).
``component=k`` gives the type-k flow F_k(kappa) = -kappa + E_k[n phi(z)];
``clamp_components={k: c}`` replaces type k's term w_k E_k[n phi(z)] by
w_k E_k[n] c (c = 0 silences it, theory section 2).
"""

import functools
import math

import numpy as np

from ._kernels import flow_field, read_only
from ._memory import check_allocation
from ._validation import check_array, check_dtype, check_int, check_positive_scalar
from .activations import BUILTIN_ACTIVATIONS, activation_name, apply_activation, check_activation
from .distributions import Empirical, Gaussian, GaussianMixture
from .network import LowRankRNN

#: Quadrature nodes per rule in :func:`gaussian_averages`; with the rule switch
#: at :data:`WIDE_THRESHOLD` it is accurate to 1e-12 for any (mu, s).
DEFAULT_ORDER = 64

#: s above which tanh averages use the split rule instead of Gauss-Hermite.
WIDE_THRESHOLD = 0.6

#: tanh(y) = sign(y) to within 2 exp(-2 L) = 8e-18 for ``|y| > L``.
KINK_HALF_WIDTH = 20.0

#: Points per block in :func:`gaussian_averages` (bounds the (points x order) temporaries).
_AVERAGE_CHUNK = 1 << 15


@functools.lru_cache(maxsize=8)
def _quadrature_nodes(order):
    """Gauss-Hermite nodes for E[f(g)], g ~ N(0, 1), and Gauss-Legendre nodes on [0, L]."""
    x, w = np.polynomial.hermite.hermgauss(order)
    hermite = (math.sqrt(2.0) * x, w / math.sqrt(math.pi))
    y, u = np.polynomial.legendre.leggauss(order)
    legendre = (0.5 * KINK_HALF_WIDTH * (y + 1.0), 0.5 * KINK_HALF_WIDTH * u)
    return hermite, legendre


def gaussian_averages(activation, mu, s, order=DEFAULT_ORDER):
    """<phi>(mu, s) and <phi'>(mu, s): averages of phi and phi' over N(mu, s^2).

    ::

        <f>(mu, s) = E[f(mu + s g)],  g ~ N(0, 1)

    - identity: <phi> = mu, <phi'> = 1.
    - relu: <phi> = mu Phi(mu / s) + s varphi(mu / s), <phi'> = Phi(mu / s)
      (Phi, varphi: standard normal cdf and density).
    - sigmoid = (1 + tanh(y / 2)) / 2: <sigmoid>(mu, s) = (1 + <tanh>(mu/2, s/2)) / 2
      and <sigmoid'>(mu, s) = <tanh'>(mu/2, s/2) / 4, by the tanh rules below.
    - softplus (phi' = sigmoid): <softplus'> = <sigmoid>; <softplus> by
      Gauss-Hermite for s <= :data:`WIDE_THRESHOLD` (softplus is analytic
      within pi of the real axis), and above it as relu + r with
      ``r(y) = log(1 + exp(-|y|))``: <relu> in closed form, plus
      int_0^L r(y) [N(y) + N(-y)] dy by Gauss-Legendre and the tail beyond L,
      where r(y) = exp(-y) to 1e-17, in closed form.
    - tanh (phi' = 1 - tanh^2), by quadrature with ``order`` nodes:

      * s <= :data:`WIDE_THRESHOLD`: Gauss-Hermite in g. Its error grows with s,
        because tanh(mu + s g) turns into a step of width 1/s in g that nodes
        spaced ~1 / sqrt(order) apart cannot resolve: at s = 20 even 300
        Hermite nodes leave an error of 1e-2.
      * s > :data:`WIDE_THRESHOLD`: in y = mu + s g, write tanh = sign + r with
        r = tanh - sign, nonzero only within ``|y| < L = 20`` (``|r| < 1e-17`` beyond)
        and discontinuous only at 0. Then
        <tanh> = erf(mu / (s sqrt 2)) + int_0^L r(y) [N(y) - N(-y)] dy and
        <tanh'> = int_0^L (1 - tanh^2 y) [N(y) + N(-y)] dy, with N the
        N(mu, s^2) density; both integrands are smooth on [0, L] and
        Gauss-Legendre integrates them to rounding for s > 0.6.

      ``order=64`` is accurate to 1e-12 over s in [0, 1e3] and any mu
      (checked against adaptive quadrature in the tests); ``order=10`` errs by
      1e-2 near the switch.

    Parameters
    ----------
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}
    mu, s : array-like, broadcastable
        Mean and standard deviation (s >= 0) of the pre-activation.
    order : int, default=64
        Nodes of each quadrature rule (tanh, softplus, sigmoid).

    Returns
    -------
    phi_average, dphi_average : ndarray of the broadcast shape

    Raises
    ------
    ValueError
        If ``activation`` is not one of the built-in activations with a
        closed-form or quadrature rule.

    Examples
    --------
    >>> import numpy as np
    >>> phi, dphi = gaussian_averages("relu", np.array([0.0]), np.array([1.0]))
    >>> phi.round(6), dphi
    (array([0.398942]), array([0.5]))
    >>> phi, dphi = gaussian_averages("tanh", np.array([0.0, 1.0]), np.array([1.0, 1.0]))
    >>> phi.round(4), dphi.round(4)
    (array([0.    , 0.5504]), array([0.6057, 0.4496]))
    """
    _check_closed_form(activation)
    mu, s = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(s, dtype=np.float64))
    if activation == "identity":
        return mu.copy(), np.ones_like(mu)
    if activation == "relu":
        return _relu_averages(mu, s)
    average = {"tanh": _tanh_averages, "sigmoid": _sigmoid_averages, "softplus": _softplus_averages}[activation]
    flat_mu, flat_s = mu.ravel(), s.ravel()
    phi, dphi = np.empty_like(flat_mu), np.empty_like(flat_mu)
    for start in range(0, flat_mu.size, _AVERAGE_CHUNK):
        block = slice(start, start + _AVERAGE_CHUNK)
        phi[block], dphi[block] = average(flat_mu[block], flat_s[block], order)
    return phi.reshape(mu.shape), dphi.reshape(mu.shape)


def _check_closed_form(activation):
    if not isinstance(activation, str) or activation not in BUILTIN_ACTIVATIONS:
        raise ValueError(
            f"The closed-form mean field supports the activations {list(BUILTIN_ACTIVATIONS)}. "
            f"Got {activation_name(activation)!r}. For another activation, sample a large network "
            "(distribution.sample(n_neurons, activation=...)) and use its flow, the sample average."
        )


def _relu_averages(mu, s):
    from scipy.special import ndtr

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(s > 0, mu / np.where(s > 0, s, 1.0), np.copysign(np.inf, mu))
    cdf = np.where((s == 0) & (mu == 0), 0.0, ndtr(ratio))
    density = np.exp(-0.5 * np.minimum(ratio**2, 1e300)) / math.sqrt(2 * math.pi)
    return mu * cdf + s * density, cdf


def _tanh_averages(mu, s, order):
    from scipy.special import erf

    (hermite_x, hermite_w), (legendre_y, legendre_w) = _quadrature_nodes(order)
    phi, dphi = np.empty_like(mu), np.empty_like(mu)
    narrow = s <= WIDE_THRESHOLD
    if narrow.any():
        rates = np.tanh(mu[narrow, None] + s[narrow, None] * hermite_x)
        phi[narrow] = rates @ hermite_w
        dphi[narrow] = (1.0 - rates * rates) @ hermite_w
    wide = ~narrow
    if wide.any():
        mean, std = mu[wide, None], s[wide, None]
        norm = 1.0 / (std * math.sqrt(2 * math.pi))
        density_pos = norm * np.exp(-0.5 * ((legendre_y - mean) / std) ** 2)
        density_neg = norm * np.exp(-0.5 * ((legendre_y + mean) / std) ** 2)
        rates = np.tanh(legendre_y)
        # r(y) = tanh(y) - 1 = -2 / (exp(2y) + 1) for y > 0, without cancellation.
        residual = -2.0 / (np.exp(2.0 * legendre_y) + 1.0)
        phi[wide] = erf(mu[wide] / (s[wide] * math.sqrt(2))) + (density_pos - density_neg) @ (residual * legendre_w)
        dphi[wide] = (density_pos + density_neg) @ ((1.0 - rates * rates) * legendre_w)
    return phi, dphi


def _sigmoid_averages(mu, s, order):
    # sigmoid(y) = (1 + tanh(y / 2)) / 2, sigmoid'(y) = (1 - tanh(y / 2)^2) / 4.
    phi, dphi = _tanh_averages(0.5 * mu, 0.5 * s, order)
    return 0.5 * (1.0 + phi), 0.25 * dphi


def _softplus_averages(mu, s, order):
    from scipy.special import log_ndtr

    (hermite_x, hermite_w), (legendre_y, legendre_w) = _quadrature_nodes(order)
    phi = np.empty_like(mu)
    dphi = _sigmoid_averages(mu, s, order)[0]
    narrow = s <= WIDE_THRESHOLD
    if narrow.any():
        phi[narrow] = np.logaddexp(0.0, mu[narrow, None] + s[narrow, None] * hermite_x) @ hermite_w
    wide = ~narrow
    if wide.any():
        mean, std = mu[wide, None], s[wide, None]
        norm = 1.0 / (std * math.sqrt(2 * math.pi))
        density_pos = norm * np.exp(-0.5 * ((legendre_y - mean) / std) ** 2)
        density_neg = norm * np.exp(-0.5 * ((legendre_y + mean) / std) ** 2)
        residual = np.log1p(np.exp(-legendre_y))
        inner = (density_pos + density_neg) @ (residual * legendre_w)
        # Beyond L, r(y) = exp(-y) (1 - exp(-y) / 2 + ...) = exp(-y) to 2e-18 relative, and
        # int_L^inf exp(-y) N(y; c, s) dy = exp(s^2 / 2 - c) Phi((c - s^2 - L) / s), in logs.
        mu_w, s_w = mu[wide], s[wide]
        tail = sum(np.exp(0.5 * s_w**2 - c + log_ndtr((c - s_w**2 - KINK_HALF_WIDTH) / s_w)) for c in (mu_w, -mu_w))
        phi[wide] = _relu_averages(mu_w, s_w)[0] + inner + tail
    return phi, dphi


def _check_points_memory(n_types, n_points, per_point):
    """Refuse a flow evaluation whose float64 temporaries (``per_point`` per point and type) would not fit."""
    check_allocation(
        8 * 3 * int(n_types) * int(n_points) * int(per_point),
        f"The mean-field velocity at {n_points} latent points ({n_types} cell type(s))",
        "Evaluate fewer points per call (split the grid into chunks), or use a lower quadrature order.",
    )


class _GaussianTerms:
    """E_k[n phi(z)] and E_k[n] of the components of a mixture, by Stein's lemma."""

    def __init__(self, weights, means, covs, layout):
        self.weights = weights
        self.keys = list(range(len(weights)))
        coords = layout.mIb
        self.mean_z = means[:, coords]  # (K, c), c = R + D + bias
        self.cov_z = covs[:, coords][:, :, coords]  # (K, c, c)
        self.cov_nz = covs[:, layout.n][:, :, coords]  # (K, R, c)
        self.mean_n = means[:, layout.n]  # (K, R)
        self.bias = layout.bias

    def recurrent(self, which, kappa, v, activation, order):
        """(len(which), P, R): the terms of components ``which`` at the P points."""
        _check_points_memory(len(which), len(kappa), kappa.shape[1] + v.shape[1] + 2 + order)
        columns = [kappa, v] + ([np.ones((len(kappa), 1))] if self.bias else [])
        a = np.hstack(columns)
        mu_z = self.mean_z[which] @ a.T  # (k, P)
        s_z = np.sqrt(np.clip(np.einsum("pi,kij,pj->kp", a, self.cov_z[which], a), 0.0, None))
        phi, dphi = gaussian_averages(activation, mu_z, s_z, order)
        cov_nz = np.einsum("kri,pi->kpr", self.cov_nz[which], a)
        return self.mean_n[which][:, None, :] * phi[..., None] + cov_nz * dphi[..., None]


class _SampleTerms:
    """Averages of n phi(z) and of n over the neurons of each label (one group if unlabelled).

    The averages are the flow-field kernel of ``backend`` (see
    :func:`connector_sim._kernels.flow_field.choose_backend`), run on loadings
    of ``dtype``: the compiled kernels compute z and phi(z) in the dtype of the
    loadings. float64 (the default) is what root finding to ``|F| < 1e-9``
    needs; float32 (rounding and tanh error ~1e-7, bound in
    :func:`connector_sim._kernels.flow_field.float32_error_bound`) runs the
    float32 kernel, about twice as fast. Loadings are converted once, here
    (not at all when they already have that dtype).
    """

    def __init__(self, m_T, n_T, I_T, b, labels, owner, activation, backend, dtype=np.float64):
        self.kernel = flow_field.kernel(flow_field.choose_backend(backend, activation))
        m_T, n_T, I_T, b = (np.ascontiguousarray(a, dtype=dtype) for a in (m_T, n_T, I_T, b))
        n_neurons = m_T.shape[1]
        if labels is None:
            groups = [np.arange(n_neurons)]
            self.keys = [0]
        else:
            labels = np.asarray(labels)
            if labels.shape != (n_neurons,) or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(
                    f"labels must be one integer cell type per neuron of the {owner}, shape ({n_neurons},). "
                    f"Got an array of dtype {labels.dtype} and shape {labels.shape}."
                )
            self.keys = [int(label) for label in np.unique(labels)]
            groups = [np.flatnonzero(labels == label) for label in self.keys]
        whole = len(groups) == 1
        self.loadings = [read_only(m_T, n_T, I_T, b) if whole else
                         read_only(*(np.ascontiguousarray(a[..., g]) for a in (m_T, n_T, I_T, b))) for g in groups]
        self.weights = np.array([len(g) / n_neurons for g in groups])
        self.mean_n = np.stack([n.astype(np.float64).mean(axis=1) for _, n, _, _ in self.loadings])

    def recurrent(self, which, kappa, v, activation, order):
        _check_points_memory(len(which), len(kappa), kappa.shape[1] + 1)
        out = np.empty((len(which),) + kappa.shape)
        kappa, v = np.ascontiguousarray(kappa), np.ascontiguousarray(v)
        for slot, k in enumerate(which):
            self.kernel(*self.loadings[k], activation, kappa, v, out[slot])
        return out


class _MeanField:
    """The latent velocity of a source, prepared once and evaluated on (P, R) points.

    Cell types are indexed internally by position 0..K-1; ``keys`` are the
    names users give (component indices, or neuron label values).
    """

    def __init__(self, source, *, activation, order, labels, component, clamp_components, backend="auto",
                 dtype=None):
        self.order = check_int(order, "order", minimum=2, owner="the mean field")
        _check_backend_name(backend)
        dtype = np.dtype(np.float64) if dtype is None else check_dtype(dtype)
        if isinstance(source, (Gaussian, GaussianMixture)):
            if labels is not None:
                raise ValueError(
                    f"labels are the cell types of a sampled network's neurons; a {type(source).__name__} "
                    "defines its cell types as mixture components. Leave labels=None."
                )
            layout = source.layout
            self.rank, self.n_inputs = layout.rank, layout.n_inputs
            if isinstance(source, Gaussian):
                self.terms = _GaussianTerms(np.ones(1), source.mean[None], source.cov[None], layout)
            else:
                self.terms = _GaussianTerms(source.weights, source.means, source.covs, layout)
            self.activation = "tanh" if activation is None else activation
            _check_closed_form(self.activation)
        elif isinstance(source, LowRankRNN):
            self.rank, self.n_inputs = source.rank, source.n_inputs
            self.activation = source.activation if activation is None else check_activation(activation)
            self.terms = _SampleTerms(source.m_T, source.n_T, source.I_T, source.b, labels, "network",
                                      self.activation, backend, dtype)
        elif isinstance(source, Empirical):
            layout, rows = source.layout, source.rows
            self.rank, self.n_inputs = layout.rank, layout.n_inputs
            b = rows[:, layout.b][:, 0] if layout.bias else np.zeros(len(rows))
            self.activation = "tanh" if activation is None else check_activation(activation)
            self.terms = _SampleTerms(rows[:, layout.m].T, rows[:, layout.n].T, rows[:, layout.I].T, b, labels,
                                      "Empirical distribution", self.activation, backend, dtype)
        else:
            raise TypeError(
                "The mean field needs a Gaussian, GaussianMixture, Empirical or LowRankRNN. "
                f"Got {type(source).__name__}."
            )
        n_types = len(self.terms.keys)
        self.clamp_values = np.full(n_types, np.nan)
        for key, value in ({} if clamp_components is None else dict(clamp_components)).items():
            self.clamp_values[self._position(key, "clamp_components")] = _check_clamp_value(value, key)
        if component is None:
            self.selected = np.arange(n_types)
            self.weights = self.terms.weights
        else:
            self.selected = np.array([self._position(component, "component")])
            self.weights = np.zeros(n_types)
            self.weights[self.selected] = 1.0

    def _position(self, key, name):
        keys = self.terms.keys
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)) or int(key) not in keys:
            raise ValueError(
                f"{name} names cell type {key!r}, which does not exist. The cell types here are "
                f"{keys} (mixture components, or the distinct neuron labels)."
            )
        return keys.index(int(key))

    def __call__(self, kappa, v):
        """dkappa/dt at points kappa (P, R) with inputs v (P, D)."""
        clamped = ~np.isnan(self.clamp_values[self.selected])
        velocity = -kappa
        if clamped.any():
            types = self.selected[clamped]
            constant = (self.weights[types] * self.clamp_values[types]) @ self.terms.mean_n[types]
            velocity = velocity + constant
        free = self.selected[~clamped]
        if len(free):
            terms = self.terms.recurrent(free, kappa, v, self.activation, self.order)
            velocity = velocity + np.tensordot(self.weights[free], terms, axes=1)
        return velocity


def _check_backend_name(backend):
    if not isinstance(backend, str) or backend not in ("auto",) + flow_field.BACKENDS:
        raise ValueError(
            f"backend must be 'auto' or one of {list(flow_field.BACKENDS)} (the kernel that averages over a "
            f"sampled source's neurons). Got {backend!r}."
        )


def _check_clamp_value(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise ValueError(f"clamp_components[{key!r}] must be a finite number (the clamped rate; 0 silences). Got {value!r}.")
    return float(value)


def _check_points(kappa, rank, name="kappa"):
    kappa = np.asarray(kappa)
    if kappa.ndim < 1 or kappa.shape[-1] != rank:
        raise ValueError(
            f"{name} must have shape (..., {rank}): latent points of a rank-{rank} source. "
            f"Got shape {kappa.shape}. Stack the grid coordinates on the last axis "
            "(e.g. np.stack(np.meshgrid(x, y, indexing='ij'), axis=-1))."
        )
    return check_array(kappa, name, ndim=kappa.ndim, dtype=np.float64)


def _check_inputs(v, leading_shape, n_inputs, name="v"):
    """v as (P, D) for the P points of ``leading_shape``."""
    n_points = math.prod(leading_shape)
    if v is None:
        return np.zeros((n_points, n_inputs))
    v = np.asarray(v)
    if n_inputs == 0 and v.size:
        raise ValueError(f"{name} must be None: the source has no inputs (D = 0). Got shape {v.shape}.")
    if v.ndim < 1 or v.shape[-1] != n_inputs:
        raise ValueError(f"{name} must have shape (..., {n_inputs}) (D = {n_inputs} inputs). Got shape {v.shape}.")
    v = check_array(v, name, ndim=v.ndim, dtype=np.float64)
    try:
        v = np.broadcast_to(v, tuple(leading_shape) + (n_inputs,))
    except ValueError as exc:
        raise ValueError(
            f"{name} of shape {v.shape} does not broadcast against the latent points, shape "
            f"{tuple(leading_shape)} + ({n_inputs},)."
        ) from exc
    return v.reshape(n_points, n_inputs)


def latent_velocity(source, kappa, v=None, *, activation=None, order=DEFAULT_ORDER, component=None,
                    clamp_components=None, labels=None, backend="auto", dtype=None):
    """The mean-field latent velocity dkappa/dt at latent points (theory eq. 4).

    ::

        dkappa/dt = -kappa + sum_k w_k E_k[ n phi(m^T kappa + I^T v + b) ]

    with the sum over cell types k (mixture components, or neuron labels of a
    sampled source; a Gaussian or an unlabelled sample is one type, 0). With
    ``component=j`` only type j, unweighted: F_j = -kappa + E_j[n phi(z)].
    With ``clamp_components={k: c}`` type k's term becomes w_k E_k[n] c, as
    when its units' rates are clamped at c (c = 0 silences them).

    Parameters
    ----------
    source : Gaussian, GaussianMixture, Empirical or LowRankRNN
        The connectivity distribution (closed form for Gaussians and mixtures),
        or a sampled network / set of rows (sample average over neurons).
    kappa : array-like of shape (..., R)
        Latent points, any leading shape (a grid, a batch, one point).
    v : array-like of shape (D,) or (..., D), optional
        Filtered input at the points (broadcast against kappa's leading
        shape). Zero when omitted; must be None when D = 0.
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}, optional
        phi. Default: the network's own, else "tanh". Sampled sources also
        accept a numba function.
    order : int, default=64
        Quadrature nodes for tanh (see :func:`gaussian_averages`).
    component : int, optional
        Return the flow F_j of this cell type alone.
    clamp_components : dict {int: float}, optional
        Cell types whose rates are clamped, and the clamp values.
    labels : array-like of int of shape (n_neurons,), optional
        Cell type of each neuron (or row) of a sampled source.
    backend : {"auto", "cpp", "numba", "numpy"}, default="auto"
        Kernel of the sample average over a sampled source's neurons
        (P x N evaluations of phi for P points): "auto" takes the fastest
        available one that runs the activation. All of them agree to ~1e-15
        in float64. Ignored by the closed form of Gaussians and mixtures.
    dtype : {None, "float64", "float32"}, default=None
        Precision of the sample average (sampled sources only). None and
        float64: the loadings are converted to float64 once (a float32
        network's too), so that root finders see a smooth flow (the float64
        default keeps fixed-point searches to ``|F| < 1e-9`` working).
        float32: the float32 kernel on the loadings as they are (no copy for
        a float32 network), about twice as fast; z and phi(z) in float32,
        sums over neurons in float64, so the error does not grow with N.
        Against the float64 flow of the same loadings, at each point::

            |F32 - F64| <= mean_i |n_i| (2 (R + D + 1) eps S_i + e_phi + 17 eps (1 + S_i))

        with ``eps = 2**-23``, ``S_i = |b_i| + |I_i|.|v| + |m_i|.|kappa|``
        and e_phi the float32 activation's own error (3.5e-7 for tanh; 0 for
        relu and identity; 3e-7 (1 + S_i) for softplus and sigmoid):
        ``connector_sim._kernels.flow_field.float32_error_bound``, a worst
        case. Measured (rank 2, one input, bias, 100 points, N = 1e4, 1e5
        and 1e6, cpp kernel): at most ``0.08 eps mean_i |n_i|`` (1e-8 here),
        the same at every N (the float32 tanh's own error does not average
        out), about 1/2000 of the bound.

    Returns
    -------
    ndarray of shape kappa.shape
        dkappa/dt, in latent units per unit of tau.

    Raises
    ------
    TypeError
        If ``source`` is not a Gaussian, GaussianMixture, Empirical or
        LowRankRNN, or ``order`` is not an int.
    ValueError
        If the points or inputs have the wrong shape, the activation has no
        closed form (Gaussian sources), ``component`` / ``clamp_components`` name
        a cell type that does not exist, or ``labels`` are given for a Gaussian
        source.

    Examples
    --------
    >>> from connector_sim import Gaussian
    >>> g = Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 5.0]], rank=1)  # rows (m, n), cov(m, n) = 2
    >>> latent_velocity(g, [[0.0], [1.0]]).round(4)
    array([[0.    ],
           [0.2114]])
    """
    flow = latent_flow(source, v, activation=activation, order=order, component=component,
                       clamp_components=clamp_components, labels=labels, backend=backend, dtype=dtype)
    return flow(kappa)


def latent_flow(source, v=None, *, activation=None, order=DEFAULT_ORDER, component=None, clamp_components=None,
                labels=None, backend="auto", dtype=None):
    """The function kappa -> dkappa/dt of :func:`latent_velocity`, prepared once.

    For repeated evaluation (root finding, integration): the source and
    options are checked here, not at each call. ``latent_flow(source, v,
    **options)(kappa)`` equals ``latent_velocity(source, kappa, v, **options)``.

    Parameters
    ----------
    source, v, activation, order, component, clamp_components, labels, backend, dtype
        As in :func:`latent_velocity`.

    Returns
    -------
    callable
        kappa of shape (..., R) -> dkappa/dt of the same shape.

    Raises
    ------
    TypeError
        If ``source`` is not a Gaussian, GaussianMixture, Empirical or
        LowRankRNN, or ``order`` is not an int.
    ValueError
        If the points or inputs have the wrong shape, the activation has no
        closed form (Gaussian sources), ``component`` / ``clamp_components`` name
        a cell type that does not exist, or ``labels`` are given for a Gaussian
        source.

    Examples
    --------
    >>> from connector_sim import Gaussian
    >>> g = Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 5.0]], rank=1)  # rows (m, n), cov(m, n) = 2
    >>> flow = latent_flow(g)
    >>> flow([[0.5]]).round(4)
    array([[0.3265]])
    """
    flow = _MeanField(source, activation=activation, order=order, labels=labels, component=component,
                      clamp_components=clamp_components, backend=backend, dtype=dtype)

    def velocity(kappa):
        kappa = _check_points(kappa, flow.rank)
        v_points = _check_inputs(v, kappa.shape[:-1], flow.n_inputs)
        return flow(kappa.reshape(-1, flow.rank), v_points).reshape(kappa.shape)

    if (isinstance(source, LowRankRNN) and component is None and not clamp_components and activation is None
            and (v is None or np.ndim(v) == 1)):
        # The size of the finite-N part of this flow (fixed_points.find_approximate_ring reads it).
        from .fixed_points import finite_size_speed

        velocity.finite_size_speed = functools.partial(finite_size_speed, source, v=v)
    return velocity


def normalized_difference(source, kappa_grid, type_a, type_b, labels=None, v=None, *, activation=None,
                          order=DEFAULT_ORDER, backend="auto"):
    """Normalized difference index of two cell types' flows (theory section 2).

    ::

        ND(kappa) = (|F_A(kappa)| - |F_B(kappa)|) / (|F_A(kappa)| + |F_B(kappa)|)
        F_k(kappa) = -kappa + E_k[n phi(m^T kappa + I^T v + b)]

    +1 where type A alone moves the latents much faster than type B, -1 the
    reverse; 0 where both flows vanish.

    Parameters
    ----------
    source : Gaussian, GaussianMixture, Empirical or LowRankRNN
        The connectivity distribution (closed form for Gaussians and mixtures),
        or a sampled network / set of rows (sample average over neurons).
    kappa_grid : array-like of shape (..., R)
    type_a, type_b : int
        Cell types (mixture components, or neuron labels of a sampled source).
    labels : array-like of int of shape (n_neurons,), optional
        Neuron labels, for a sampled source.
    v, activation, order, backend
        As in :func:`latent_velocity`.

    Returns
    -------
    ndarray of shape kappa_grid.shape[:-1], values in [-1, 1]

    Raises
    ------
    TypeError
        If ``source`` is not a Gaussian, GaussianMixture, Empirical or
        LowRankRNN, or ``order`` is not an int.
    ValueError
        If the points or inputs have the wrong shape, the activation has no
        closed form (Gaussian sources), ``component`` / ``clamp_components`` name
        a cell type that does not exist, or ``labels`` are given for a Gaussian
        source.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import GaussianMixture
    >>> mixture = GaussianMixture([0.5, 0.5], [[0, 0], [0, 0]],
    ...                           [[[1, 2], [2, 5]], [[1, 0], [0, 1]]], rank=1)
    >>> normalized_difference(mixture, np.array([[0.5], [1.0]]), 0, 1).round(4)
    array([-0.2099, -0.651 ])
    """
    options = dict(v=v, activation=activation, order=order, labels=labels, backend=backend)
    speed_a = np.linalg.norm(latent_velocity(source, kappa_grid, component=type_a, **options), axis=-1)
    speed_b = np.linalg.norm(latent_velocity(source, kappa_grid, component=type_b, **options), axis=-1)
    total = speed_a + speed_b
    return np.divide(speed_a - speed_b, total, out=np.zeros_like(total), where=total > 0)



def mean_field_trajectory(source, kappa0, n_steps=None, dt=None, *, inputs=None, v0=None, tau=None,
                          activation=None, order=DEFAULT_ORDER, component=None, clamp_components=None,
                          labels=None, backend="auto"):
    """Integrate the mean-field latent ODE with the simulator's Euler steps.

    ::

        kappa_{t+1} = kappa_t + alpha F(kappa_t, v_t)
                    = (1 - alpha) kappa_t + alpha E_p[n phi(m^T kappa_t + I^T v_t + b)]
        v_{t+1}     = (1 - alpha) v_t + alpha u_t,       alpha = dt / tau

    the discrete latent recursion of :func:`connector_sim.simulate` (theory
    eq. 3) with the sample average replaced by the mean field: for a sampled
    network it reproduces ``simulate(network, ...).kappa`` to rounding.

    Parameters
    ----------
    source : Gaussian, GaussianMixture, Empirical or LowRankRNN
        The connectivity distribution (closed form for Gaussians and mixtures),
        or a sampled network / set of rows (sample average over neurons).
    kappa0 : array-like of shape (R,) or (n_trials, R)
        Initial latents; trials run as one batch.
    n_steps : int, optional
        Number of steps T; taken from ``inputs`` when given.
    dt : float, optional
        Time step, in units of tau. Default tau / 10 (alpha = 0.1).
    inputs : array-like of shape (T, D) or (n_trials, T, D), optional
        u_t, shared by all trials when 2-D. Zero when omitted.
    v0 : array-like of shape (D,) or (n_trials, D), optional
        Initial filtered input. Default zero.
    tau : float, optional
        Time constant. Default: the network's, else 1.
    activation, order, component, clamp_components, labels, backend
        As in :func:`latent_velocity`.

    Returns
    -------
    kappa : ndarray of shape (n_trials, T + 1, R)
        Row 0 is kappa0 (n_trials = 1 for a 1-D kappa0).

    Raises
    ------
    TypeError
        If ``source`` is not a Gaussian, GaussianMixture, Empirical or
        LowRankRNN, or ``order`` is not an int.
    ValueError
        If the points or inputs have the wrong shape, the activation has no
        closed form (Gaussian sources), ``component`` / ``clamp_components`` name
        a cell type that does not exist, or ``labels`` are given for a Gaussian
        source.
        Also if neither ``n_steps`` nor ``inputs`` is given, or they disagree.
    TooLargeError
        If the trajectory would not fit in memory.

    Examples
    --------
    >>> from connector_sim import Gaussian
    >>> g = Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 5.0]], rank=1)  # rows (m, n), cov(m, n) = 2
    >>> kappa = mean_field_trajectory(g, [0.1], n_steps=200, dt=0.1)
    >>> kappa.shape, round(float(kappa[0, -1, 0]), 4)  # (n_trials, T + 1, R); settles at kappa* = 1.337
    ((1, 201, 1), 1.3371)
    """
    flow = _MeanField(source, activation=activation, order=order, labels=labels, component=component,
                      clamp_components=clamp_components, backend=backend)
    R, D = flow.rank, flow.n_inputs
    if tau is None:
        tau = source.tau if isinstance(source, LowRankRNN) else 1.0
    tau = check_positive_scalar(tau, "tau", owner="mean_field_trajectory")
    dt = tau / 10 if dt is None else check_positive_scalar(dt, "dt", owner="mean_field_trajectory")
    alpha = dt / tau
    kappa0 = _check_points(kappa0, R, "kappa0")
    if kappa0.ndim > 2:
        raise ValueError(f"kappa0 must have shape ({R},) or (n_trials, {R}). Got shape {kappa0.shape}.")
    kappa = np.atleast_2d(kappa0)
    if inputs is not None:
        inputs = np.asarray(inputs)
        if inputs.ndim not in (2, 3):
            raise ValueError(f"inputs must have shape (T, {D}) or (n_trials, T, {D}). Got shape {inputs.shape}.")
        inputs = check_array(inputs, "inputs", ndim=inputs.ndim, dtype=np.float64,
                             shape=(None,) * (inputs.ndim - 1) + (D,))
        if n_steps is not None and check_int(n_steps, "n_steps", minimum=1) != inputs.shape[-2]:
            raise ValueError(f"n_steps = {n_steps} disagrees with inputs, which have {inputs.shape[-2]} time steps.")
        n_steps = inputs.shape[-2]
    elif n_steps is None:
        raise ValueError("Give n_steps (or inputs, whose length sets it).")
    T = check_int(n_steps, "n_steps", minimum=1, owner="mean_field_trajectory")
    batch = max(len(kappa), 1 if inputs is None or inputs.ndim == 2 else len(inputs))
    check_allocation(8 * (batch * (T + 1) * R + (T * D if inputs is None else 0)),
                     f"mean_field_trajectory ({batch} trial(s) of {T} steps, rank {R})",
                     "Use fewer steps (n_steps) or fewer initial conditions.")
    u = np.zeros((1, T, D)) if inputs is None else inputs.reshape((-1, T, D))
    if v0 is None:
        v = np.zeros((1, D))
    else:
        v0 = np.asarray(v0)
        if v0.ndim not in (1, 2):
            raise ValueError(f"v0 must have shape ({D},) or (n_trials, {D}). Got shape {v0.shape}.")
        v = np.atleast_2d(check_array(v0, "v0", ndim=v0.ndim, dtype=np.float64, shape=(None,) * (v0.ndim - 1) + (D,)))
    n_trials = {len(kappa), len(u), len(v)} - {1}
    if len(n_trials) > 1:
        raise ValueError(
            f"kappa0, inputs and v0 disagree on the number of trials ({len(kappa)}, {len(u)}, {len(v)}). "
            "Give each batched argument the same leading size."
        )
    B = n_trials.pop() if n_trials else 1
    kappa = np.broadcast_to(kappa, (B, R)).copy()
    v = np.broadcast_to(v, (B, D)).copy()
    u = np.broadcast_to(u, (B, T, D))
    out = np.empty((B, T + 1, R))
    out[:, 0] = kappa
    for t in range(T):
        kappa = kappa + alpha * flow(kappa, v)
        v = (1 - alpha) * v + alpha * u[:, t]
        out[:, t + 1] = kappa
    return out



# --- more Gaussian averages: the dynamic mean field (theory section 8) -------------------------------

#: The quantities :func:`gaussian_average` computes, as products of phi, phi' and Phi
#: (Phi the primitive of phi, see :func:`primitive`).
AVERAGE_QUANTITIES = {
    "phi": ("phi",), "dphi": ("dphi",), "phi2": ("phi", "phi"), "dphi2": ("dphi", "dphi"),
    "phi_dphi": ("phi", "dphi"), "Phi": ("Phi",), "Phi2": ("Phi", "Phi"),
}

#: Quadrature rules of :func:`gaussian_average`: "accurate" (piecewise Gauss-Legendre with
#: closed-form tails, to ~1e-12 for any (mu, s)) or "hermite" (plain Gauss-Hermite, ``order`` nodes).
AVERAGE_RULES = ("accurate", "hermite")

_LOG2 = math.log(2.0)
# Half-width L beyond which each activation, its derivative and its primitive equal a
# polynomial (the "tails") to within 1e-17 (exactly for relu and identity, L = 0).
_TAIL_HALF_WIDTH = {"tanh": 20.0, "sigmoid": 40.0, "softplus": 40.0, "relu": 0.0, "identity": 0.0}
# Tail polynomials (ascending coefficients) of phi, phi' and Phi: (beyond +L, beyond -L).
_TAILS = {
    "tanh": {"phi": ((1.0,), (-1.0,)), "dphi": ((0.0,), (0.0,)), "Phi": ((-_LOG2, 1.0), (-_LOG2, -1.0))},
    "sigmoid": {"phi": ((1.0,), (0.0,)), "dphi": ((0.0,), (0.0,)), "Phi": ((0.0, 1.0), (0.0,))},
    "softplus": {"phi": ((0.0, 1.0), (0.0,)), "dphi": ((1.0,), (0.0,)),
                 "Phi": ((math.pi**2 / 6, 0.0, 0.5), (0.0,))},
    "relu": {"phi": ((0.0, 1.0), (0.0,)), "dphi": ((1.0,), (0.0,)), "Phi": ((0.0, 0.0, 0.5), (0.0,))},
    "identity": {"phi": ((0.0, 1.0), (0.0, 1.0)), "dphi": ((1.0,), (1.0,)), "Phi": ((0.0, 0.0, 0.5), (0.0, 0.0, 0.5))},
}
# Window of the Gaussian density kept by the accurate rule: |y - mu| <= 9 s (mass outside 2e-19).
_WINDOW = 9.0


def primitive(activation, y):
    """Phi(y), the primitive of phi used by the chaotic mean field (theory section 8).

    Closed forms, with the additive constant chosen as below (it cancels in
    every quantity the mean field uses)::

        tanh      Phi(y) = log cosh y = |y| - log 2 + log(1 + exp(-2 |y|))
        sigmoid   Phi(y) = softplus(y) = log(1 + e^y)
        softplus  Phi(y) = -Li2(-e^y)   (dilogarithm; y^2 / 2 + pi^2 / 6 + Li2(-e^-y) for y > 0)
        relu      Phi(y) = max(y, 0)^2 / 2
        identity  Phi(y) = y^2 / 2

    Parameters
    ----------
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}
    y : array-like

    Returns
    -------
    ndarray

    Examples
    --------
    >>> primitive("tanh", [0.0, 1.0]).round(6)
    array([0.      , 0.433781])
    """
    _check_closed_form(activation)
    y = np.asarray(y, dtype=np.float64)
    if activation == "tanh":
        a = np.abs(y)
        return a - _LOG2 + np.log1p(np.exp(-2.0 * a))
    if activation == "sigmoid":
        return np.logaddexp(0.0, y)
    if activation == "softplus":
        from scipy.special import spence

        # scipy: spence(1 - x) = Li2(x), so Li2(-e^y) = spence(1 + e^y).
        e = np.exp(-np.abs(y))
        return np.where(y <= 0, -spence(1.0 + e), 0.5 * y * y + math.pi**2 / 6 + spence(1.0 + e))
    if activation == "relu":
        return 0.5 * np.maximum(y, 0.0) ** 2
    return 0.5 * y * y


def _base_function(activation, name, y):
    if name == "Phi":
        return primitive(activation, y)
    if name == "phi":
        return apply_activation(activation, y)
    # phi'
    if activation == "tanh":
        t = np.tanh(y)
        return 1.0 - t * t
    if activation in ("softplus", "relu"):
        return apply_activation("sigmoid", y) if activation == "softplus" else (y > 0).astype(np.float64)
    if activation == "sigmoid":
        s = apply_activation("sigmoid", y)
        return s * (1.0 - s)
    return np.ones_like(y)


def _product(activation, factors, y):
    out = _base_function(activation, factors[0], y)
    for name in factors[1:]:
        out = out * _base_function(activation, name, y)
    return out


def _tail_polynomials(activation, factors):
    """The tail polynomials (beyond +L, beyond -L) of a product of phi, phi' and Phi."""
    from numpy.polynomial import polynomial as P

    sides = []
    for side in (0, 1):
        poly = np.array([1.0])
        for name in factors:
            poly = P.polymul(poly, np.array(_TAILS[activation][name][side]))
        sides.append(np.atleast_1d(poly))
    return sides


def _standard_tail_moments(alpha, degree):
    """J_j = E[t^j 1{t > alpha}] for t ~ N(0, 1), j = 0..degree (J_j = alpha^(j-1) varphi(alpha) + (j-1) J_(j-2))."""
    from scipy.special import ndtr

    # Beyond |alpha| = 40 the density underflows to 0 and ndtr saturates: clipping changes nothing and
    # keeps alpha^(j - 1) finite.
    alpha = np.clip(alpha, -40.0, 40.0)
    density = np.exp(-0.5 * alpha * alpha) / math.sqrt(2 * math.pi)
    J = [ndtr(-alpha), density]
    for j in range(2, degree + 1):
        J.append(alpha ** (j - 1) * density + (j - 1) * J[j - 2])
    return J


def _tail_integral(poly, a, mu, s, power):
    """E[p(y) (y - mu)^power 1{y > a}], y = mu + s t ~ N(mu, s^2), s > 0.

    p(mu + s t) is expanded in t (no cancellation between powers of mu), then
    E[t^j 1{t > (a - mu) / s}] in closed form."""
    degree = len(poly) - 1
    J = _standard_tail_moments((a - mu) / s, degree + power)
    total = 0.0
    for j in range(degree + 1):  # coefficient of t^j in p(mu + s t); coefficients may be per-point arrays
        q = sum(poly[k] * math.comb(k, j) * mu ** (k - j) for k in range(j, degree + 1))
        total = total + q * s ** (j + power) * J[j + power]
    return total


@functools.lru_cache(maxsize=8)
def _legendre_unit(order):
    y, w = np.polynomial.legendre.leggauss(order)
    return 0.5 * (y + 1.0), 0.5 * w


def _accurate_average(function, tails, L, mu, s, power, order, kinks=(0.0,)):
    """E[f(y) (y - mu)^power], y ~ N(mu, s^2), s > 0 (arrays of P points): closed-form tails beyond +-L,
    piecewise Gauss-Legendre on [-L, L] within the window mu +- 9 s, split at the kinks and every 3 s.

    ``function(y, index)`` evaluates f at y of shape (len(index), pieces, order) for the points
    ``index``; ``tails`` = (upper, lower) lists of ascending coefficients (numbers or (P,) arrays);
    ``L`` a number or a (P,) array."""
    upper, lower = tails
    L = np.broadcast_to(np.asarray(L, dtype=np.float64), mu.shape)
    # Beyond -L: y -> -y' with y' ~ N(-mu, s^2), p(-y') and (y - mu)^k = (-1)^k (y' + mu)^k.
    flipped = [c * (-1.0) ** k for k, c in enumerate(lower)]
    total = _tail_integral(upper, L, mu, s, power) + (-1.0) ** power * _tail_integral(flipped, L, -mu, s, power)
    total = np.broadcast_to(total, mu.shape).copy()
    lo, hi = np.maximum(-L, mu - _WINDOW * s), np.minimum(L, mu + _WINDOW * s)
    index = np.flatnonzero(lo < hi)
    if not index.size:
        return total
    m, sd, lo, hi = mu[index], s[index], lo[index], hi[index]
    cuts = [m + 3.0 * k * sd for k in range(-2, 3)] + [np.full_like(m, kink) for kink in kinks]
    points = np.sort(np.column_stack([lo] + [np.clip(c, lo, hi) for c in cuts] + [hi]), axis=1)
    start, width = points[:, :-1], np.diff(points, axis=1)  # (P, pieces)
    nodes, weights = _legendre_unit(order)
    y = start[..., None] + width[..., None] * nodes  # (P, pieces, order)
    d = y - m[:, None, None]
    density = np.exp(-0.5 * (d / sd[:, None, None]) ** 2) / (sd[:, None, None] * math.sqrt(2 * math.pi))
    values = function(y, index) * density * d**power
    total[index] += np.einsum("pko,o,pk->p", values, weights, width)
    return total


def _check_rule(rule, order, owner):
    if rule not in AVERAGE_RULES:
        raise ValueError(f"The 'rule' parameter of {owner} must be one of {list(AVERAGE_RULES)}. "
                         f"Got {rule!r} instead.")
    return check_int(order, "order", minimum=2, maximum=4096, owner=owner)


def _check_quantity(quantity, allowed, owner):
    if quantity not in allowed:
        raise ValueError(f"The 'quantity' parameter of {owner} must be one of {list(allowed)}. "
                         f"Got {quantity!r} instead.")


def _check_spread(s, name, owner):
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"The {name!r} parameter of {owner} must be finite and >= 0 (a standard deviation). "
                         f"Got min {np.min(s) if s.size else s}.")


def gaussian_average(activation, quantity, mu, s, *, power=0, rule="accurate", order=DEFAULT_ORDER):
    """<f>(mu, s) = E[f(mu + s g) (s g)^power], g ~ N(0, 1), for f built from phi, phi' and Phi.

    ``quantity`` names f (theory section 8)::

        "phi" phi    "dphi" phi'    "phi2" phi^2    "dphi2" phi'^2    "phi_dphi" phi phi'
        "Phi" Phi    "Phi2" Phi^2   (Phi = primitive(activation, .), e.g. log cosh for tanh)

    Rules:

    - ``"accurate"`` (default): for s > 0, in y = mu + s g the tails beyond
      +-L (L = 20 for tanh, 40 for sigmoid / softplus, 0 for relu / identity)
      are polynomials (to 1e-17, exactly for relu and identity), integrated in
      closed form (truncated Gaussian moments); in between, Gauss-Legendre
      with ``order`` nodes on pieces of [-L, L] n [mu - 9 s, mu + 9 s] split
      at 0 (the kink of relu) and every 3 s. relu and identity are therefore
      closed forms; tanh, sigmoid, softplus are accurate to ~1e-12 relative to
      max(1, abs(<f>)) for any (mu, s) at ``order=64`` (the tests check it
      against adaptive quadrature). s = 0 gives f(mu) (times 0^power).
    - ``"hermite"``: plain Gauss-Hermite with ``order`` nodes in g, for
      reproducing another code's numbers; inaccurate for wide s (tanh becomes
      a step that nodes ~1 / sqrt(order) apart cannot resolve) and for
      relu's kink.

    Parameters
    ----------
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}
    quantity : str
        One of :data:`AVERAGE_QUANTITIES`.
    mu, s : array-like, broadcastable
        Mean and standard deviation (s >= 0).
    power : {0, 1, 2}, default=0
        Weight (x - mu)^power, x = mu + s g (what the conditional-mean terms of
        the stability analysis need; <(x - mu) f> = s^2 <f'> by Stein's lemma).
    rule : {"accurate", "hermite"}, default="accurate"
    order : int, default=64
        Nodes per piece (accurate) or in total (hermite), in [2, 4096].

    Returns
    -------
    ndarray of the broadcast shape

    Raises
    ------
    ValueError
        If ``activation``, ``quantity``, ``rule`` or ``power`` is not one of
        the above, or ``s`` is negative or not finite.

    Examples
    --------
    >>> float(gaussian_average("tanh", "phi2", 0.0, 1.0).round(6))  # 1 - <tanh'>(0, 1)
    0.394294
    >>> float(gaussian_average("relu", "Phi", 0.0, 1.0))  # E[max(g, 0)^2] / 2
    0.25
    """
    owner = "gaussian_average"
    _check_closed_form(activation)
    _check_quantity(quantity, AVERAGE_QUANTITIES, owner)
    order = _check_rule(rule, order, owner)
    if power not in (0, 1, 2) or isinstance(power, bool):
        raise ValueError(f"The 'power' parameter of {owner} must be 0, 1 or 2. Got {power!r} instead.")
    mu, s = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(s, dtype=np.float64))
    _check_spread(s, "s", owner)
    factors = AVERAGE_QUANTITIES[quantity]
    return _single_average(activation, factors, mu, s, power, rule, order)


def _single_average(activation, factors, mu, s, power, rule, order):
    shape = mu.shape
    mu, s = mu.ravel(), s.ravel()
    out = np.empty(mu.shape)
    for start in range(0, max(mu.size, 1), _AVERAGE_CHUNK // 8):
        block = slice(start, start + _AVERAGE_CHUNK // 8)
        out[block] = _single_block(activation, factors, mu[block], s[block], power, rule, order)
    return out.reshape(shape)


def _single_block(activation, factors, mu, s, power, rule, order):
    def function(y):
        return _product(activation, factors, y)

    if rule == "hermite":
        (x, w), _ = _quadrature_nodes(order)
        d = s[:, None] * x
        return (function(mu[:, None] + d) * d**power) @ w
    out = np.empty(mu.shape)
    point = s == 0
    out[point] = function(mu[point]) * (1.0 if power == 0 else 0.0)
    spread = ~point
    if spread.any():
        out[spread] = _accurate_average(lambda y, index: function(y), _tail_polynomials(activation, factors),
                                        _TAIL_HALF_WIDTH[activation], mu[spread], s[spread], power, order)
    return out


def _smoothed_polynomial(poly, s):
    """q(y) = E[p(y + s x)], x ~ N(0, 1), as ascending coefficients."""
    from numpy.polynomial import polynomial as P

    out = np.zeros(len(poly))
    for k, c in enumerate(poly):
        if c == 0.0:
            continue
        for j in range(0, k + 1, 2):  # E[x^j] = (j - 1)!! for even j
            moment = float(np.prod(np.arange(j - 1, 0, -2))) if j else 1.0
            out = P.polyadd(out, c * math.comb(k, j) * s**j * moment * np.eye(k - j + 1)[k - j])
    return out


def double_gaussian_average(activation, quantity, mu, s_static, s_fluctuating, *, rule="accurate",
                            order=DEFAULT_ORDER):
    """int Dz [ int Dx f(mu + s_f x + s_s z) ]^2 with f = phi or Phi (theory section 8).

    The averages of the chaotic mean field: z is the static (quenched) part of
    a unit's input, with variance s_s^2 = Delta_inf, and x the fluctuating
    part, with variance s_f^2 = Delta_0 - Delta_inf. With F(y) =
    <f>(y, s_f) (:func:`gaussian_average`), the result is <F^2>(mu, s_s).

    Rules: ``"hermite"`` nests two Gauss-Hermite rules of ``order`` nodes.
    ``"accurate"`` computes F with the accurate rule and integrates F^2 the
    same way: beyond +-(L + 9 s_f) F equals the smoothed tail polynomial
    E[p(y + s_f x)] (to 1e-17), in closed form, and Gauss-Legendre inside.

    Parameters
    ----------
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}
    quantity : {"phi", "Phi"}
    mu, s_static, s_fluctuating : array-like, broadcastable
        s_static, s_fluctuating >= 0.
    rule : {"accurate", "hermite"}, default="accurate"
    order : int, default=64

    Returns
    -------
    ndarray of the broadcast shape

    Raises
    ------
    ValueError
        As :func:`gaussian_average`.

    Examples
    --------
    >>> # s_f = 0: <phi^2>; s_s = 0: <phi>^2
    >>> a = double_gaussian_average("tanh", "phi", 0.3, 1.0, 0.0)
    >>> bool(abs(a - gaussian_average("tanh", "phi2", 0.3, 1.0)) < 1e-12)
    True
    """
    owner = "double_gaussian_average"
    _check_closed_form(activation)
    _check_quantity(quantity, ("phi", "Phi"), owner)
    order = _check_rule(rule, order, owner)
    mu, s_s, s_f = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (mu, s_static, s_fluctuating)))
    _check_spread(s_s, "s_static", owner)
    _check_spread(s_f, "s_fluctuating", owner)
    return _double_average(activation, AVERAGE_QUANTITIES[quantity], mu, s_s, s_f, rule, order)


def _double_average(activation, factors, mu, s_s, s_f, rule, order):
    """int Dz <f>(mu + s_s z, s_f)^2 over broadcast arrays (see double_gaussian_average)."""
    shape = mu.shape
    mu, s_s, s_f = (np.ascontiguousarray(a, dtype=np.float64).ravel() for a in (mu, s_s, s_f))

    def smoothed(y, index):  # F(y) = <f>(y, s_f) at y of shape (len(index), ...)
        spread = np.broadcast_to(s_f[index].reshape((-1,) + (1,) * (y.ndim - 1)), y.shape)
        return _single_average(activation, factors, y.ravel(), spread.ravel(), 0, rule, order).reshape(y.shape)

    if rule == "hermite":
        (x, w), _ = _quadrature_nodes(order)
        y = mu[:, None] + s_s[:, None] * x
        return ((smoothed(y, np.arange(mu.size)) ** 2) @ w).reshape(shape)
    out = np.empty(mu.shape)
    point = s_s == 0.0
    if point.any():
        out[point] = smoothed(mu[point], np.flatnonzero(point)) ** 2
    sharp = (s_f == 0.0) & ~point
    if sharp.any():
        out[sharp] = _single_average(activation, factors * 2, mu[sharp], s_s[sharp], 0, rule, order)
    rest = np.flatnonzero(~point & ~sharp)
    if rest.size:
        from numpy.polynomial import polynomial as P

        # Beyond +-(L + 9 s_f), F is the smoothed tail polynomial E[p(y + s_f x)] (to 1e-17): per point.
        tails = []
        for p in _tail_polynomials(activation, factors):
            squared = [P.polymul(q, q) for q in (_smoothed_polynomial(p, sf) for sf in s_f[rest])]
            degree = max(len(q) for q in squared)
            table = np.zeros((degree, rest.size))
            for i, q in enumerate(squared):
                table[:len(q), i] = q
            tails.append(list(table))
        L = _TAIL_HALF_WIDTH[activation] + _WINDOW * s_f[rest]
        out[rest] = _accurate_average(lambda y, index: smoothed(y, rest[index]) ** 2, tails, L, mu[rest],
                                      s_s[rest], 0, order)
    return out.reshape(shape)
