"""Connector: the maximum-entropy connectivity distribution of a fitted low-rank RNN (theory section 3).

From the latents kappa_t and the loadings (m_i, I_i, b_i) of a fitted
network (LINT, velocity matching, or a ground truth):

1. the marginal p(m, I, b) is learned by a flow-matching CNF on the rows
   (m_i, I_i, b_i) (:class:`~connector_sim.inference.flows.FlowMatchingCNF`);
2. the conditional mean nbar(m, I, b) = E[n | m, I, b] comes from the ridge
   regression of the latent increments on phi(m^T kappa_t + I^T v_t + b)
   over rows sampled from the marginal (theory section 3, step 4,
   :mod:`~connector_sim.inference.conditional_mean`);
3. the conditional p(n | m, I, b) is the maximum-entropy N(nbar, Sigma) for
   a given conditional covariance Sigma (default), or a conditional CNF
   trained on samples of it (``conditional="cnf"``, as in the paper).

Sampling (m, I, b) from the marginal and n from the conditional gives
networks of any size with the fitted network's mean-field dynamics (theory
eq. 4, which depends on p(n | m, I, b) only through nbar).
"""

import inspect
import math
import numbers
import os

import numpy as np

from .._memory import check_allocation
from .._validation import check_array, check_int, check_positive_scalar, check_random_state
from ..activations import BUILTIN_ACTIVATIONS
from ..distributions import Empirical, RowLayout, _Distribution
from ..network import LowRankRNN
from .conditional_mean import (
    ConditionalMean,
    _check_ridge_constant,
    _check_ridge_scaling,
    conditional_covariance,
    fit_conditional_mean,
    gaussian_log_prob,
    regression_data,
    sample_conditional,
)
from .flows import (
    MAX_DIM,
    FlowMatchingCNF,
    ModelFileError,
    _config_int,
    _state_array,
    load_bundle,
    save_bundle,
    torch,
    torch_threads,
)

_OWNER = "Connector"
CONDITIONALS = ("closed_form", "cnf")
REGRESSION_SAMPLINGS = ("sobol", "random")


def sobol_normal(n_samples, dim, random_state=None):
    """Scrambled Sobol points mapped to N(0, I_dim) by the inverse normal CDF (randomised quasi-Monte Carlo).

    The first ``n_samples`` points of a scrambled Sobol sequence of length
    2^ceil(log2 n_samples) (scipy.stats.qmc), coordinate by coordinate
    through the inverse of the standard normal CDF. Each point is marginally
    N(0, I); averages of smooth functions over them have an error that falls
    nearly as 1 / n_samples (independent draws: 1 / sqrt(n_samples)).

    Parameters
    ----------
    n_samples : int
    dim : int
        At least 0 (0 gives an empty (n_samples, 0) array).
    random_state : None, int or numpy.random.Generator
        Seeds the scrambling.

    Returns
    -------
    ndarray of shape (n_samples, dim)

    Examples
    --------
    >>> points = sobol_normal(1024, 2, random_state=0)
    >>> points.shape, bool(abs(points.mean()) < 0.01), bool(abs(points.var() - 1) < 0.01)
    ((1024, 2), True, True)
    """
    from scipy.special import ndtri
    from scipy.stats import qmc

    n_samples = check_int(n_samples, "n_samples", minimum=1, owner="sobol_normal")
    dim = check_int(dim, "dim", minimum=0, owner="sobol_normal")
    rng = check_random_state(random_state)
    if dim == 0:
        return np.zeros((n_samples, 0))
    n_points = 2 ** max(0, math.ceil(math.log2(n_samples)))
    # the Sobol points (float64) and their normal quantiles exist at once
    check_allocation(2 * 8 * n_points * dim, f"sobol_normal({n_samples}, {dim}) ({n_points} Sobol points)",
                     "Ask for fewer samples (for Connector: fewer n_regression_samples).")
    # random_base2 draws 2^k points, the sizes at which a Sobol sequence is balanced (no warning for other sizes).
    # scipy >= 1.15 names the generator rng (seed before, to be deprecated).
    generator = {"rng" if "rng" in inspect.signature(qmc.Sobol).parameters else "seed": rng}
    sobol = qmc.Sobol(dim, scramble=True, **generator)
    unit = sobol.random_base2(n_points.bit_length() - 1)[:n_samples]
    return ndtri(np.clip(unit, 1e-300, None))  # scrambled points are in (0, 1); the clip only guards 0


class Connector(_Distribution):
    """Learn a connectivity distribution p(m, n, I, b) from a fitted network's dynamics.

    scikit-learn style: the constructor stores settings, :meth:`fit` returns
    ``self``, learned attributes end in ``_``. The fitted estimator is a
    connectivity distribution like :class:`~connector_sim.Gaussian`: it has
    a ``layout`` (rows ``[m, n, I, b]``, the bias always included),
    :meth:`sample_rows` and :meth:`sample` (a :class:`~connector_sim.LowRankRNN`
    of any size). For the mean field, pass a sampled network or
    :meth:`empirical` rows to :func:`connector_sim.latent_velocity`, or use
    :meth:`latent_flow`.

    Parameters
    ----------
    conditional : {"closed_form", "cnf"}, default="closed_form"
        How n is drawn given (m, I, b): "closed_form" draws
        n ~ N(nbar(m, I, b), Sigma) with the ridge conditional mean;
        "cnf" trains a conditional CNF on such draws (the paper's route;
        slower, and only as good as its training).
    n_covariance : float, array-like of shape (R,) or (R, R), or "residual", default=1.0
        Sigma, the conditional covariance of n given (m, I, b): a scalar
        (Sigma = s I), a diagonal, a full matrix, or "residual" (the
        covariance of n_i - nbar(m_i, I_i, b_i) over the fitted network's
        rows; needs n). Dynamics do not determine it (theory section 3, step 2).
    ridge_scaling : {"linear", "paper"}, default="linear"
        How the ridge coefficient lambda of the conditional mean scales with
        the N regression rows (theory section 3, step 4): "linear",
        lambda = ``ridge_constant`` * N, under which nbar converges as N
        grows; "paper", lambda = ``lambda_prior`` N^2 / alpha^2 (the
        Connector paper's), whose shrinkage of nbar grows with N (on the ring
        network with 1,000 rows the ring radius of the learned mean field came
        out 3-8% small).
    ridge_constant : float or "cv", default="cv"
        c of the linear scaling. "cv": chosen from
        :data:`~connector_sim.inference.conditional_mean.RIDGE_CONSTANTS`
        by the held-out latent-velocity error, 5-fold over trials, with
        nbar evaluated at the fitted network's rows (the population whose
        increments are held out, so that its finite-N noise cancels)
        (:func:`~connector_sim.inference.conditional_mean.ridge_cv_scores`);
        the choice is in ``ridge_constant_`` and ``ridge_cv_scores_``.
    lambda_prior : float, default=1e-4
        lambda_p of ``ridge_scaling="paper"`` (paper: 1e-4).
    ridge : float, optional
        lambda itself, overriding the scaling.
    n_regression_samples : int, default=1000
        Rows sampled from the marginal for the ridge regression (paper: 1,000).
    regression_sampling : {"sobol", "random"}, default="sobol"
        How those rows are drawn. The regression depends on them only
        through the Gram matrix (1/N) Phi Phi^T, a Monte Carlo estimate of
        the marginal's K_ts = E[phi_t phi_s] whose error the ridge amplifies
        by 1/c (theory section 3, step 4). "sobol": the marginal CNF pushes
        forward scrambled Sobol points of its Gaussian base (randomised
        quasi-Monte Carlo; the integrands are smooth, so the error falls
        nearly as 1/N instead of 1/sqrt(N)); "random": independent draws
        (the paper's). On the ring network (true marginal, 1,000 rows, c
        fixed) the ring radius of the learned mean field varied by 2-6% (sd
        over row draws) with "random" and by 0.1-0.3% with "sobol"; the
        random rows' noise also made the cross-validation pick c 10-30 times
        larger, whose shrinkage took up to 5% off the ring radius.
    n_regressions : int, default=1
        Independent regressions (fresh rows each, the same time points)
        whose W are averaged. nbar depends on the sampled rows: the ring
        radius of the ring network's mean field under nbar varied by +-2.5%
        (sd over seeds) with one regression of 1,000-4,000 rows and by
        +-0.5% with the average of four to eight.
    max_time_points : int or None, default=2000
        The regression uses at most this many (trial, time) points, drawn at
        random without replacement (None: all). Evaluating nbar costs
        O(T R) per neuron, so T bounds the cost of sampling large networks.
    n_conditional_samples : int, optional
        Training rows of the conditional CNF (``conditional="cnf"``); default
        the number of fitted rows.
    hidden, n_layers, n_epochs, batch_size, learning_rate, weight_decay, validation_fraction, patience,
    n_steps, solver, n_threads, cosine, ema_decay
        Of the CNFs, see :class:`~connector_sim.inference.flows.FlowMatchingCNF`
        (official code: 4 x 128, 1,000 epochs, batch 64, AdamW lr 1e-3 and
        weight decay 1e-5, midpoint with step 0.05 = 20 steps; see
        :meth:`official` for a preset with its settings and why the defaults
        differ);
        ``n_threads`` also limits the BLAS threads of the ridge regressions.
    conditional_epochs : int, optional
        Epochs of the conditional CNF; default ``n_epochs``.
    device : {"auto", "cpu", "cuda"}, default="auto"
    random_state : None, int or numpy.random.Generator
        Seeds the CNFs, the regression samples and the time-point subset.
    verbose : bool or int, default=False
        Training progress of the CNFs (stderr).
    callback : callable, optional
        Given to each CNF: ``callback(flow, epoch, {"train_loss", "val_loss"})``
        after each of its epochs; a true return stops that flow's training.
        Not saved with the model.

    Attributes
    ----------
    layout_ : RowLayout
        Rank R, inputs D, bias True.
    marginal_ : FlowMatchingCNF
        p(m, I, b) over rows [m, I, b].
    conditional_mean_ : ConditionalMean
        nbar(m, I, b).
    conditional_ : FlowMatchingCNF or None
        p(n | m, I, b) when ``conditional="cnf"``.
    n_covariance_ : ndarray of shape (R, R)
    alpha_, tau_ : float
    activation_ : str
    n_rows_ : int
        Rows of the fitted network.
    ridge_lambda_ : float
        lambda of the (first) ridge regression.
    ridge_constant_ : float or None
        c of lambda = c N ("linear"), lambda_p ("paper"), None (``ridge``).
    ridge_cv_constants_, ridge_cv_scores_ : ndarray or None
        The candidate c and their mean held-out squared latent-velocity
        errors (units 1 / tau^2) when ``ridge_constant="cv"``; the choice is
        the smallest score.

    Raises
    ------
    ValueError
        From :meth:`fit`: a setting out of range or unknown (checked there, as
        in scikit-learn), latent trajectories or inputs of the wrong shape, or
        too few neurons or time points for the regression.
    TypeError
        From :meth:`fit`: ``network`` is not a LowRankRNN, or a setting has the
        wrong type.
    RuntimeError
        From :meth:`sample` and the other methods before :meth:`fit`: the
        estimator is not fitted.

    Examples
    --------
    >>> from connector_sim import Gaussian
    >>> network = Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 5.0]], rank=1).sample(200, random_state=0)
    >>> connector = Connector(hidden=16, n_layers=2, n_epochs=5, n_regression_samples=200, max_time_points=200,
    ...                       random_state=0, device="cpu")  # tiny settings, for a quick look
    >>> connector.fit(network, n_sim_steps=30).layout_
    RowLayout(rank=1, n_inputs=0, bias=True)
    >>> connector.sample(50, random_state=0)  # a new network of any size
    LowRankRNN(n_neurons=50, rank=1, n_inputs=0, tau=1.0, activation='tanh', dtype=float64)
    """

    def __init__(self, *, conditional="closed_form", n_covariance=1.0, ridge_scaling="linear", ridge_constant="cv",
                 lambda_prior=1e-4, ridge=None,
                 n_regression_samples=1000, regression_sampling="sobol", n_regressions=1, max_time_points=2000,
                 n_conditional_samples=None,
                 hidden=128, n_layers=4, n_epochs=1000, batch_size=64, learning_rate=1e-3, weight_decay=1e-4,
                 validation_fraction=0.2, patience=None, n_steps=10, solver="midpoint", conditional_epochs=None,
                 device="auto", random_state=None, verbose=False, n_threads=1, cosine=True, ema_decay=0.999,
                 callback=None):
        self.conditional = conditional
        self.n_covariance = n_covariance
        self.ridge_scaling = ridge_scaling
        self.ridge_constant = ridge_constant
        self.lambda_prior = lambda_prior
        self.ridge = ridge
        self.n_regression_samples = n_regression_samples
        self.regression_sampling = regression_sampling
        self.n_regressions = n_regressions
        self.max_time_points = max_time_points
        self.n_conditional_samples = n_conditional_samples
        self.hidden = hidden
        self.n_layers = n_layers
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.n_steps = n_steps
        self.solver = solver
        self.conditional_epochs = conditional_epochs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.n_threads = n_threads
        self.cosine = cosine
        self.ema_decay = ema_decay
        self.callback = callback

    _CNF_PARAMS = ("hidden", "n_layers", "batch_size", "learning_rate", "weight_decay", "validation_fraction",
                   "patience", "n_steps", "solver", "device", "verbose", "n_threads", "cosine", "ema_decay")

    #: The settings of the official Connector code's trained models (AllenInstitute/connector: the ``args``
    #: stored in its ``lint/<dataset>/connector/model_fold_1_seed_1_id_0.pth`` checkpoints and its train.py).
    OFFICIAL_SETTINGS = {
        "conditional": "cnf",        # n | (m, I, b) by a conditional CNF
        "hidden": 128, "n_layers": 4,  # hidden_dim 128; 4 hidden layers per velocity MLP
        "n_epochs": 1000,            # mbd_training_epochs and n_training_epochs
        "batch_size": 64,
        "learning_rate": 1e-3,       # AdamW lr
        "weight_decay": 1e-5,        # AdamW weight_decay
        "cosine": False,             # constant learning rate
        "ema_decay": None,           # no averaged weights: the last epoch's
        "validation_fraction": 0.0,  # no early stopping: all epochs, the last state kept
        "patience": None,
        "ridge_scaling": "paper",    # lambda = regularizer * nsamples^2 / alpha^2
        "lambda_prior": 1e-4,        # regularizer
        "n_regression_samples": 1000,  # nsamples
        "regression_sampling": "random",  # independent draws of the marginal
        "n_steps": 20,               # ODESolver step_size=0.05 on [0, 1]: 20 midpoint steps
        "solver": "midpoint",
    }

    @classmethod
    def official(cls, **overrides):
        """A Connector with the official code's settings (see :attr:`OFFICIAL_SETTINGS`); ``overrides`` win.

        Where the defaults of this class differ, and why:

        - ``n_steps=20`` vs 10: the paper's text says 10 midpoint steps, which
          is this class's default (half the sampling cost), but the official
          sampler passes ``step_size=0.05`` to its ODE solver, which then
          integrates 20 midpoint steps (40 velocity evaluations) whatever its
          ``num_steps`` time grid says.
        - ``weight_decay=1e-5`` vs 1e-4, ``cosine=False`` and ``ema_decay=None``
          vs a cosine learning-rate schedule and averaged weights: this
          package's training loop, whose schedule and averaging gave sample
          variances closer to the data's in the measurements quoted at
          :class:`~connector_sim.inference.flows.FlowMatchingCNF`; the
          official code has neither.
        - ``validation_fraction=0`` vs 0.2: the official code trains every
          epoch and keeps the last state; ours monitors held-out rows.
        - ``ridge_scaling="paper"`` vs "linear": the paper's lambda =
          lambda_p N^2 / alpha^2 (theory section 3, step 4).
        - ``regression_sampling="random"`` vs "sobol": the paper's regression
          rows are independent draws of the marginal; this class pushes
          scrambled Sobol points through it, which removes most of the rows'
          Monte Carlo noise from nbar (theory section 3, step 4).
        - ``conditional="cnf"`` vs "closed_form": the paper's route; the closed
          form draws n from the ridge conditional mean plus Gaussian noise,
          which is what the CNF learns, without its training error.

        Not reproduced: the official conditional CNF takes one gradient step
        per epoch on fresh ridge estimates (new rows of the marginal, a new
        regression each epoch); here it trains on draws around one
        conditional mean fitted once (``n_regressions`` averages several).

        Examples
        --------
        >>> Connector.official().n_steps
        20
        >>> Connector.official(n_epochs=50).n_epochs
        50
        """
        params = dict(cls.OFFICIAL_SETTINGS)
        params.update(overrides)
        return cls(**params)
    _PARAMS = ("conditional", "n_covariance", "ridge_scaling", "ridge_constant", "lambda_prior", "ridge",
               "n_regression_samples", "regression_sampling", "n_regressions",
               "max_time_points",
               "n_conditional_samples", "n_epochs", "conditional_epochs", "random_state") + _CNF_PARAMS

    def get_params(self):
        """The constructor parameters, as a dict (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._PARAMS}

    def _cnf(self, n_epochs, seed):
        return FlowMatchingCNF(n_epochs=n_epochs, random_state=seed, callback=getattr(self, "callback", None),
                               **{name: getattr(self, name) for name in self._CNF_PARAMS})

    # ------------------------------------------------------------------ fitting

    def fit(self, network, kappa=None, inputs=None, *, v=None, v0=None, alpha=0.1, kappa0=None, n_sim_steps=100):
        """Fit from a network and its latent trajectories.

        Parameters
        ----------
        network : LowRankRNN
            The fitted network: its rows (m_i, I_i, b_i) are the samples of
            the marginal, and its tau and activation are those of the
            sampled networks.
        kappa : array-like of shape (n_trials, T + 1, R) or (T + 1, R), optional
            The network's noise-free latent trajectories. When omitted, the
            network is simulated for ``n_sim_steps`` steps with
            ``dt = alpha tau`` from ``kappa0`` (default: 400 random points in
            the box ``|kappa_r| <= 1.2 mean |n_i|``, which holds every fixed point).
        inputs, v, v0
            Inputs of the trajectories, see :meth:`fit_latents`.
        alpha : float, default=0.1
            dt / tau of the trajectories.
        kappa0 : array-like of shape (n_trials, R), optional
        n_sim_steps : int, default=100

        Returns
        -------
        self
        """
        if not isinstance(network, LowRankRNN):
            raise TypeError(f"network must be a LowRankRNN (use fit_latents for raw arrays). Got "
                            f"{type(network).__name__}.")
        if kappa is None:
            from ..simulate import simulate

            alpha = check_positive_scalar(alpha, "alpha", owner=_OWNER)
            if kappa0 is None:
                extent = 1.2 * float(np.mean(np.linalg.norm(network.n, axis=1)))
                rng = np.random.default_rng(0)
                kappa0 = rng.uniform(-extent, extent, size=(400, network.rank))
            n_sim_steps = check_int(n_sim_steps, "n_sim_steps", minimum=1, owner=_OWNER)
            result = simulate(network, None if inputs is not None else n_sim_steps, dt=alpha * network.tau,
                              kappa0=kappa0, inputs=inputs, v0=v0)
            kappa, inputs, v, v0 = result.kappa, None, result.v, None
        return self.fit_latents(kappa, network.m, I=network.I, b=network.b, n=network.n, inputs=inputs, v=v,
                                v0=v0, alpha=alpha, tau=network.tau, activation=network.activation)

    def fit_latents(self, kappa, m, *, I=None, b=None, n=None, inputs=None, v=None, v0=None, alpha=0.1, tau=1.0,
                    activation="tanh"):
        """Fit from latent trajectories and loadings given as arrays.

        Parameters
        ----------
        kappa : array-like of shape (n_trials, T + 1, R) or (T + 1, R)
            Latent trajectories; at least two time points.
        m : array-like of shape (N, R)
        I : array-like of shape (N, D), optional
        b : array-like of shape (N,), optional (zero)
        n : array-like of shape (N, R), optional
            Only needed for ``n_covariance="residual"``.
        inputs : array-like of shape (n_trials, T, D) or (T, D), optional
            Raw inputs u_t of the trajectories.
        v : array-like of shape (n_trials, T + 1, D) or (T + 1, D), optional
            Filtered inputs instead of ``inputs``.
        v0 : array-like, optional
            Filtered input at t = 0 with ``inputs``.
        alpha : float, default=0.1
        tau : float, default=1.0
            Time constant given to sampled networks.
        activation : {"tanh", "relu", "identity", "softplus", "sigmoid"}, default="tanh"

        Returns
        -------
        self
        """
        with torch_threads(self.n_threads):  # the ridge regressions' BLAS calls too
            return self._fit_latents(kappa, m, I, b, n, inputs, v, v0, alpha, tau, activation)

    def _fit_latents(self, kappa, m, I, b, n, inputs, v, v0, alpha, tau, activation):
        params = self._check_params()
        alpha = check_positive_scalar(alpha, "alpha", owner=_OWNER)
        if alpha > 1:
            raise ValueError(f"alpha = dt / tau must be in (0, 1]. Got {alpha!r}.")
        tau = check_positive_scalar(tau, "tau", owner=_OWNER)
        if not isinstance(activation, str) or activation not in BUILTIN_ACTIVATIONS:
            raise ValueError(f"{_OWNER} supports the activations {list(BUILTIN_ACTIVATIONS)}. Got {activation!r}.")
        m, I, b, n = self._check_loadings(m, I, b, n)
        N, R = m.shape
        D = I.shape[1]
        kappa_array = np.asarray(kappa)
        if kappa_array.ndim in (2, 3) and kappa_array.shape[-1] != R:
            raise ValueError(f"kappa and the loadings disagree on the rank: kappa has {kappa_array.shape[-1]} latent "
                             f"dimension(s) (shape {kappa_array.shape}) but m has {R} column(s) (shape {m.shape}). "
                             "kappa's last axis must have size R = m.shape[1].")
        points, v_points, increments = regression_data(kappa, alpha, inputs=inputs, v=v, v0=v0)
        if v_points.shape[1] != D:
            raise ValueError(f"The inputs and the loadings disagree: I has {D} column(s) (shape {I.shape}) but the "
                             f"inputs have {v_points.shape[1]} dimension(s). Give one input dimension per column "
                             "of I (or no inputs when D = 0).")
        if isinstance(self.n_covariance, str):
            if self.n_covariance != "residual":
                raise ValueError(f"n_covariance must be a number, a vector, a matrix or 'residual'. "
                                 f"Got {self.n_covariance!r}.")
            if n is None:
                raise ValueError("n_covariance='residual' needs the fitted network's left factors n.")
        else:
            conditional_covariance(self.n_covariance, R)  # checked before any training
        mIb = np.hstack([m, I, b[:, None]])
        dim = mIb.shape[1]
        if N < dim + 1:
            raise ValueError(f"{_OWNER} needs more neurons than dimensions of (m, I, b) to learn their density: "
                             f"at least {dim + 1} rows for R + D + 1 = {dim}. Got {N}.")
        rng = check_random_state(self.random_state)

        self.layout_ = RowLayout(R, D, bias=True)
        self.alpha_, self.tau_, self.activation_, self.n_rows_ = alpha, tau, activation, N
        self.marginal_ = self._cnf(params["n_epochs"], rng).fit(mIb)

        groups = np.arange(len(points)) // (len(points) // (kappa_array.shape[0] if kappa_array.ndim == 3 else 1))
        if params["max_time_points"] is not None and len(points) > params["max_time_points"]:
            keep = np.sort(rng.choice(len(points), params["max_time_points"], replace=False))
            points, v_points, increments, groups = points[keep], v_points[keep], increments[keep], groups[keep]
        weights = []
        ridge = self.ridge
        self.ridge_cv_constants_ = self.ridge_cv_scores_ = None
        for k in range(params["n_regressions"]):
            rows = self._regression_rows(params["n_regression_samples"], rng)
            options = dict(I=rows[:, R:R + D], b=rows[:, R + D], v_points=v_points, alpha=alpha,
                           lambda_prior=self.lambda_prior, ridge=ridge, ridge_scaling=self.ridge_scaling,
                           ridge_constant=self.ridge_constant, activation=activation)
            if k == 0 and ridge is None and self.ridge_constant == "cv":
                # nbar fitted on the training trials predicts the held-out increments through the fitted
                # network's own rows, the population that produced them: their finite-N noise then cancels.
                options.update(groups=groups, m_eval=m, I_eval=I, b_eval=b, random_state=rng)
            model = fit_conditional_mean(rows[:, :R], points, increments, **options)
            if k == 0:
                self.ridge_lambda_, self.ridge_constant_ = model.ridge_lambda, model.ridge_constant
                if model.cv_scores is not None:
                    self.ridge_cv_constants_, self.ridge_cv_scores_ = model.cv_constants, model.cv_scores
                    ridge = model.ridge_lambda  # the chosen lambda (same N) for the other regressions
            weights.append(model.weights)
        # Same time points in every regression: the average of the closed forms is the closed form of the mean W.
        self.conditional_mean_ = ConditionalMean(points, v_points, np.mean(weights, axis=0), activation)

        if isinstance(self.n_covariance, str):
            residual = n - self.conditional_mean_.from_rows(mIb)
            sigma = np.atleast_2d(np.cov(residual, rowvar=False))
        else:
            sigma = self.n_covariance
        self.n_covariance_, self._n_factor = conditional_covariance(sigma, R)

        self.conditional_ = None
        if self.conditional == "cnf":
            count = N if self.n_conditional_samples is None else params["n_conditional_samples"]
            condition = self.marginal_.sample(count, random_state=rng)
            targets = sample_conditional(self.conditional_mean_.from_rows(condition), self._n_factor, rng)
            epochs = params["n_epochs"] if self.conditional_epochs is None else params["conditional_epochs"]
            self.conditional_ = self._cnf(epochs, rng).fit(targets, condition=condition)
        return self

    def _regression_rows(self, count, rng):
        """Rows [m, I, b] of one ridge regression: the marginal at Sobol or random base points."""
        if self.regression_sampling == "random":
            return self.marginal_.sample(count, random_state=rng)
        return self.marginal_.sample(count, x0=sobol_normal(count, int(self.marginal_.free_.sum()), rng))

    def _check_params(self):
        _check_ridge_scaling(self.ridge_scaling, _OWNER)
        if not isinstance(self.regression_sampling, str) or self.regression_sampling not in REGRESSION_SAMPLINGS:
            raise ValueError(f"The 'regression_sampling' parameter of {_OWNER} must be one of "
                             f"{list(REGRESSION_SAMPLINGS)}. Got {self.regression_sampling!r} instead.")
        _check_ridge_constant(self.ridge_constant, _OWNER)
        check_positive_scalar(self.lambda_prior, "lambda_prior", owner=_OWNER)
        if self.ridge is not None:
            check_positive_scalar(self.ridge, "ridge", owner=_OWNER)
        if self.conditional not in CONDITIONALS:
            raise ValueError(f"The 'conditional' parameter of {_OWNER} must be one of {list(CONDITIONALS)}. "
                             f"Got {self.conditional!r} instead.")
        params = {"n_epochs": check_int(self.n_epochs, "n_epochs", minimum=1, owner=_OWNER),
                  "n_regression_samples": check_int(self.n_regression_samples, "n_regression_samples", minimum=2,
                                                    owner=_OWNER),
                  "n_regressions": check_int(self.n_regressions, "n_regressions", minimum=1, owner=_OWNER)}
        params["max_time_points"] = (None if self.max_time_points is None else
                                     check_int(self.max_time_points, "max_time_points", minimum=1, owner=_OWNER))
        if self.n_conditional_samples is not None:
            params["n_conditional_samples"] = check_int(self.n_conditional_samples, "n_conditional_samples",
                                                        minimum=2, owner=_OWNER)
        if self.conditional_epochs is not None:
            params["conditional_epochs"] = check_int(self.conditional_epochs, "conditional_epochs", minimum=1,
                                                     owner=_OWNER)
        return params

    @staticmethod
    def _check_loadings(m, I, b, n):
        m = np.asarray(m)
        if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
            raise ValueError(f"m must have shape (n_neurons, R) with R >= 1. Got shape {m.shape}.")
        m = check_array(m, "m", ndim=2, dtype=np.float64)
        N, R = m.shape
        I = np.zeros((N, 0)) if I is None else check_array(I, "I", ndim=2, dtype=np.float64, shape=(N, None))
        b = np.zeros(N) if b is None else check_array(b, "b", ndim=1, dtype=np.float64, shape=(N,))
        if n is not None:
            n = check_array(n, "n", ndim=2, dtype=np.float64, shape=(N, R))
        return m, I, b, n

    # ------------------------------------------------------------------ the distribution

    def _check_fitted(self):
        if not hasattr(self, "marginal_"):
            raise RuntimeError(f"This {_OWNER} is not fitted yet. Call fit(network, kappa) or fit_latents(...) first.")

    @property
    def layout(self):
        """Rows ``[m, n, I, b]`` (bias included), as for the other distributions."""
        self._check_fitted()
        return self.layout_

    def _split(self, mIb):
        R, D = self.layout_.rank, self.layout_.n_inputs
        return mIb[:, :R], mIb[:, R:R + D], mIb[:, R + D]

    def conditional_mean(self, mIb):
        """nbar(m, I, b) = E[n | m, I, b] for rows [m, I, b] of shape (N, R + D + 1); returns (N, R)."""
        self._check_fitted()
        return self.conditional_mean_.from_rows(mIb)

    def _rows(self, mIb, n):
        m, I, b = self._split(mIb)
        return np.hstack([m, n, I, b[:, None]])

    def _draw(self, count, rng, precision="float32"):
        mIb = self.marginal_.sample(count, random_state=rng, precision=precision)
        if self.conditional_ is None:
            n = sample_conditional(self.conditional_mean_.from_rows(mIb), self._n_factor, rng)
        else:
            n = self.conditional_.sample(condition=mIb, random_state=rng, precision=precision)
        return self._rows(mIb, n), np.zeros(count, np.int64)

    def sample_rows(self, n_samples, random_state=None, *, precision="float32"):
        """Draw neuron rows [m, n, I, b]: (m, I, b) from the marginal CNF, then n given them.

        ``precision="bfloat16"`` runs the CNFs' matrix products in bfloat16
        (see :meth:`FlowMatchingCNF.sample`: opt-in, 1.4-2x faster on CPUs with
        AVX512_BF16 or AMX, a ValueError elsewhere).

        Returns
        -------
        rows : ndarray of shape (n_samples, 2R + D + 1)
        labels : ndarray of shape (n_samples,)
            Zeros (a Connector is one population; cluster the rows with
            :func:`connector_sim.find_cell_types` for cell types).
        """
        self._check_fitted()
        if precision == "float32":
            return super().sample_rows(n_samples, random_state)
        n_samples = check_int(n_samples, "n_samples", minimum=1, owner=f"{_OWNER}.sample_rows")
        self._check_precision(precision, f"{_OWNER}.sample_rows")
        check_allocation(n_samples * (3 * 8 * self.layout_.dim + 8), f"{_OWNER}.sample_rows({n_samples})",
                         "Draw fewer rows.")
        return self._draw(n_samples, check_random_state(random_state), precision)

    def _check_precision(self, precision, owner):
        """Validate ``precision`` for every CNF of the Connector (ValueError where bfloat16 is not available)."""
        for flow in (self.marginal_, self.conditional_):
            if flow is not None:
                flow._check_precision(precision, owner)
        return precision

    def sample(self, n_neurons, random_state=None, *, return_rows=False, return_labels=False, dtype=np.float64,
               tau=None, activation=None, precision="float32"):
        """Sample a network of ``n_neurons`` neurons from the learned distribution.

        Parameters
        ----------
        n_neurons : int
            Any size (it need not be the fitted network's).
        random_state : None, int or numpy.random.Generator
            The same seed gives the same network (also after save/load).
        return_rows : bool, default=False
            Also return the rows [m, n, I, b] (float64).
        return_labels : bool, default=False
            Also return labels (zeros), as the other distributions do.
        dtype : float32 or float64
        tau, activation : optional
            Default: those of the fitted network.
        precision : {"float32", "bfloat16"}, default="float32"
            Precision of the CNFs' matrix products (see
            :meth:`FlowMatchingCNF.sample`): ``"bfloat16"`` is opt-in, ~2x
            faster on CPUs with AVX512_BF16 or AMX (a ValueError elsewhere),
            with float32 ODE states.

        Returns
        -------
        network : LowRankRNN
        rows : ndarray of shape (n_neurons, 2R + D + 1), only if ``return_rows``
        labels : ndarray of shape (n_neurons,), only if ``return_labels``
        """
        self._check_fitted()
        n_neurons = check_int(n_neurons, "n_neurons", minimum=1, owner=f"{_OWNER}.sample")
        self._check_precision(precision, f"{_OWNER}.sample")
        # The rows, the flows' float64 samples and temporaries, labels, and the network's copies.
        check_allocation(n_neurons * (8 * 4 * self.layout_.dim + 8 + 2 * 8 * self.layout_.dim),
                         f"{_OWNER}.sample({n_neurons})", "Sample fewer neurons.")
        rows, labels = self._draw(n_neurons, check_random_state(random_state), precision)
        layout = self.layout_
        # A column of rows is a strided view: the compiled kernels need a contiguous b.
        network = LowRankRNN(rows[:, layout.m], rows[:, layout.n], rows[:, layout.I],
                             np.ascontiguousarray(rows[:, layout.b][:, 0]),
                             tau=self.tau_ if tau is None else tau,
                             activation=self.activation_ if activation is None else activation, dtype=dtype)
        out = (network,) + ((rows,) if return_rows else ()) + ((labels,) if return_labels else ())
        return out[0] if len(out) == 1 else out

    def empirical(self, n_samples=100_000, random_state=0, *, conditional_mean=False):
        """An :class:`~connector_sim.Empirical` distribution of ``n_samples`` rows of this one.

        With ``conditional_mean=True`` each row's n is nbar(m, I, b) rather
        than a draw around it: the mean field (theory eq. 4) depends on
        p(n | m, I, b) only through nbar, so this has the same mean field
        with less sampling noise (but not the same per-neuron n).
        """
        self._check_fitted()
        if conditional_mean:
            n_samples = check_int(n_samples, "n_samples", minimum=1, owner=f"{_OWNER}.empirical")
            mIb = self.marginal_.sample(n_samples, random_state=check_random_state(random_state))
            rows = self._rows(mIb, self.conditional_mean_.from_rows(mIb))
        else:
            rows, _ = self.sample_rows(n_samples, random_state)
        layout = self.layout_
        return Empirical(rows, rank=layout.rank, n_inputs=layout.n_inputs, bias=True)

    def latent_flow(self, v=None, *, n_samples=100_000, random_state=0, **options):
        """The learned mean-field flow kappa -> dkappa/dt (theory eq. 4), by Monte Carlo.

        ::

            dkappa/dt = -kappa + E[ nbar(m, I, b) phi(m^T kappa + I^T v + b) ]

        averaged over ``n_samples`` draws of (m, I, b) from the marginal (see
        :meth:`empirical` with ``conditional_mean=True``); the other options
        go to :func:`connector_sim.latent_flow`.
        """
        from ..mean_field import latent_flow

        source = self.empirical(n_samples, random_state, conditional_mean=True)
        options.setdefault("activation", self.activation_)
        return latent_flow(source, v, **options)

    def score(self, kappa, inputs=None, *, v=None, v0=None, alpha=None, n_samples=20_000, random_state=0):
        """R^2 of the learned mean field's one-step latent drive on trajectories (e.g. held-out trials).

        ::

            target_t    = (kappa_{t+1} - (1 - alpha) kappa_t) / alpha
            predicted_t = E[ nbar(m, I, b) phi(m^T kappa_t + I^T v_t + b) ]
            R^2 = 1 - sum |target - predicted|^2 / sum |target - mean(target)|^2

        The expectation is over ``n_samples`` rows of the marginal (see
        :meth:`latent_flow`); ``alpha`` defaults to the fitted one. Used by
        :func:`~connector_sim.inference.cross_validate`.

        Parameters
        ----------
        kappa : array-like of shape (n_trials, T + 1, R) or (T + 1, R)
        inputs, v, v0 : optional
            As in :meth:`fit`.
        alpha : float, optional
        n_samples : int, default=20000
        random_state : int, Generator or None, default=0

        Returns
        -------
        float
        """
        from ..mean_field import latent_velocity

        self._check_fitted()
        alpha = self.alpha_ if alpha is None else check_positive_scalar(alpha, "alpha", owner=_OWNER)
        points, v_points, target = regression_data(kappa, alpha, inputs=inputs, v=v, v0=v0)
        source = self.empirical(n_samples, random_state, conditional_mean=True)
        predicted = latent_velocity(source, points, v_points if v_points.shape[1] else None,
                                    activation=self.activation_) + points
        residual = np.sum((target - predicted) ** 2)
        total = np.sum((target - target.mean(axis=0)) ** 2)
        return float(1.0 - residual / total) if total > 0 else float("nan")

    def log_prob(self, rows, *, n_steps=None, precision="float32"):
        """log p(m, n, I, b) = log p(m, I, b) + log p(n | m, I, b) of neuron rows.

        The marginal term is the CNF's (reverse ODE with the exact
        divergence); the conditional term is log N(n; nbar, Sigma) (needs a
        non-singular Sigma) or the conditional CNF's.

        Parameters
        ----------
        rows : array-like of shape (n_rows, 2R + D + 1)
            Rows [m, n, I, b] (for a network: ``network.rows()``).
        n_steps : int, optional
            ODE steps of the CNF densities.
        precision : {"float32", "bfloat16"}, default="float32"
            Precision of the CNFs' matrix products (see :meth:`sample`).

        Returns
        -------
        ndarray of shape (n_rows,)
        """
        self._check_fitted()
        layout = self.layout_
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != layout.dim:
            raise ValueError(f"rows must have shape (n_rows, {layout.dim}) = [m (R={layout.rank}), n, "
                             f"I (D={layout.n_inputs}), b]. Got shape {rows.shape}.")
        rows = check_array(rows, "rows", ndim=2, dtype=np.float64)
        self._check_precision(precision, f"{_OWNER}.log_prob")
        mIb = rows[:, layout.mIb]
        n = rows[:, layout.n]
        marginal = self.marginal_.log_prob(mIb, n_steps=n_steps, precision=precision)
        if self.conditional_ is None:
            return marginal + gaussian_log_prob(n, self.conditional_mean_.from_rows(mIb), self.n_covariance_)
        return marginal + self.conditional_.log_prob(n, condition=mIb, n_steps=n_steps, precision=precision)

    # ------------------------------------------------------------------ persistence

    def save(self, path):
        """Write the fitted Connector to the folder ``path``.

        ``config.json`` holds the parameters and fitted metadata;
        ``weights.pt`` a dict of tensors (CNF state dicts, standardisation,
        the regression's points and weights, Sigma), read back with
        ``torch.load(weights_only=True)``: loading runs no pickled code.
        The folder is written as one unit (a hidden folder beside ``path``,
        then a swap): an interrupted save leaves the previous model
        loadable. ``config.json`` records checksums of itself and of the
        weights, which :meth:`load` verifies. An existing ``path`` may only
        hold an earlier save's two files.
        """
        self._check_fitted()
        marginal_config, marginal_tensors = self.marginal_.get_state()
        tensors = {f"marginal.{k}": v for k, v in marginal_tensors.items()}
        config = {
            "kind": _OWNER,
            "params": _json_params(self.get_params()),
            "rank": self.layout_.rank, "n_inputs": self.layout_.n_inputs,
            "alpha": self.alpha_, "tau": self.tau_, "activation": self.activation_, "n_rows": self.n_rows_,
            "marginal": marginal_config, "conditional": None,
            "ridge": {"lambda": self.ridge_lambda_, "constant": self.ridge_constant_,
                      "cv_constants": None if self.ridge_cv_constants_ is None else self.ridge_cv_constants_.tolist(),
                      "cv_scores": None if self.ridge_cv_scores_ is None else self.ridge_cv_scores_.tolist()},
        }
        if self.conditional_ is not None:
            conditional_config, conditional_tensors = self.conditional_.get_state()
            config["conditional"] = conditional_config
            tensors.update({f"conditional.{k}": v for k, v in conditional_tensors.items()})
        cm = self.conditional_mean_
        tensors.update({"conditional_mean.points": torch.as_tensor(cm.points),
                        "conditional_mean.v_points": torch.as_tensor(cm.v_points),
                        "conditional_mean.weights": torch.as_tensor(cm.weights),
                        "n_covariance": torch.as_tensor(self.n_covariance_)})
        save_bundle(path, config, tensors)

    @classmethod
    def load(cls, path, device="auto"):
        """Read a Connector written by :meth:`save` (no training data or pickled code needed).

        Raises
        ------
        FileNotFoundError
            When ``path`` lacks ``config.json`` or ``weights.pt``.
        ModelFileError (a ValueError)
            When the folder was modified after it was saved (both files are
            covered by checksums), or holds values out of range: everything
            is checked before the model is built.
        """
        from .flows import FlowMatchingCNF as Flow

        config, tensors = load_bundle(path, _OWNER)
        try:
            return cls._from_bundle(config, tensors, device, Flow)
        except ModelFileError as exc:
            raise ModelFileError(f"{os.fspath(path)!r} is not a valid {_OWNER} folder: {exc}") from None

    @classmethod
    def _from_bundle(cls, config, tensors, device, Flow):
        params = config.get("params")
        if not isinstance(params, dict) or set(params) - set(cls._PARAMS):
            raise ModelFileError(f"'params' must map {_OWNER}'s parameter names to values.")
        if "ridge_scaling" not in params:
            # Saved before the linear scaling existed: those models were fitted with the paper's form.
            params = dict(params, ridge_scaling="paper", ridge_constant=0.1)
        connector = cls(**dict(params, device=device))
        try:
            connector._check_params()
            connector._cnf(1, 0)._check_params()  # hidden, n_layers, ... of a refit
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"invalid parameter: {exc}") from None
        rank = _config_int(config, "rank", 1, MAX_DIM)
        n_inputs = _config_int(config, "n_inputs", 0, MAX_DIM)
        n_rows = _config_int(config, "n_rows", 1, 2**62)
        alpha, tau = config.get("alpha"), config.get("tau")
        for name, value, high in (("alpha", alpha, 1.0), ("tau", tau, math.inf)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high \
                    or not math.isfinite(value):
                raise ModelFileError(f"{name!r} must be a finite number in (0, {high}]. Got {value!r}.")
        activation = config.get("activation")
        if not isinstance(activation, str) or activation not in BUILTIN_ACTIVATIONS:
            raise ModelFileError(f"'activation' must be one of {list(BUILTIN_ACTIVATIONS)}. Got {activation!r}.")
        dim = rank + n_inputs + 1
        marginal_config, conditional_config = config.get("marginal"), config.get("conditional")
        if not isinstance(marginal_config, dict) or (marginal_config.get("dim"), marginal_config.get(
                "condition_dim")) != (dim, 0):
            raise ModelFileError(f"the marginal flow must model the rows [m, I, b] of dimension {dim}.")
        if conditional_config is not None and (not isinstance(conditional_config, dict) or (
                conditional_config.get("dim"), conditional_config.get("condition_dim")) != (rank, dim)):
            raise ModelFileError(f"the conditional flow must model n ({rank}) given [m, I, b] ({dim}).")
        points = _state_array(tensors, "conditional_mean.points", (None, rank))
        n_points = len(points)
        v_points = _state_array(tensors, "conditional_mean.v_points", (n_points, n_inputs))
        weights = _state_array(tensors, "conditional_mean.weights", (n_points, rank))
        n_covariance = _state_array(tensors, "n_covariance", (rank, rank))

        def part(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        connector.layout_ = RowLayout(rank, n_inputs, bias=True)
        connector.alpha_, connector.tau_ = float(alpha), float(tau)
        connector.activation_, connector.n_rows_ = activation, n_rows
        connector.marginal_ = Flow.from_state(marginal_config, part("marginal."), device=device)
        connector.conditional_ = (None if conditional_config is None else
                                  Flow.from_state(conditional_config, part("conditional."), device=device))
        connector.conditional_mean_ = ConditionalMean(points, v_points, weights, activation)
        connector._set_ridge_from_config(config.get("ridge"), alpha)
        try:
            connector.n_covariance_, connector._n_factor = conditional_covariance(n_covariance, rank)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"invalid 'n_covariance': {exc}") from None
        return connector

    def _set_ridge_from_config(self, ridge, alpha):
        """ridge_lambda_ and the rest from a saved 'ridge' entry; recomputed (no cross-validation) when absent."""
        from .conditional_mean import ridge_lambda

        if ridge is None:  # a folder saved before the entry existed: paper scaling or an absolute ridge
            self.ridge_lambda_ = ridge_lambda(self.n_regression_samples, alpha, self.lambda_prior, self.ridge,
                                              ridge_scaling="paper")
            self.ridge_constant_ = None if self.ridge is not None else float(self.lambda_prior)
            self.ridge_cv_constants_ = self.ridge_cv_scores_ = None
            return

        def number(value, name, optional=False, zero=False):
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (value == 0 and not zero):
                raise ModelFileError(f"'ridge.{name}' must be a finite number {'>=' if zero else '>'} 0. "
                                     f"Got {value!r}.")
            return float(value)

        def numbers_(value, name, zero):
            if value is None:
                return None
            if not isinstance(value, list) or not value:
                raise ModelFileError(f"'ridge.{name}' must be a non-empty list of numbers. Got {value!r}.")
            return np.array([number(v, name, zero=zero) for v in value])

        if not isinstance(ridge, dict) or set(ridge) != {"lambda", "constant", "cv_constants", "cv_scores"}:
            raise ModelFileError("'ridge' must hold 'lambda', 'constant', 'cv_constants' and 'cv_scores'.")
        self.ridge_lambda_ = number(ridge["lambda"], "lambda")
        self.ridge_constant_ = number(ridge["constant"], "constant", optional=True)
        self.ridge_cv_constants_ = numbers_(ridge["cv_constants"], "cv_constants", zero=False)
        self.ridge_cv_scores_ = numbers_(ridge["cv_scores"], "cv_scores", zero=True)  # a held-out MSE may be 0
        if (self.ridge_cv_constants_ is None) != (self.ridge_cv_scores_ is None) or (
                self.ridge_cv_scores_ is not None and len(self.ridge_cv_scores_) != len(self.ridge_cv_constants_)):
            raise ModelFileError("'ridge.cv_constants' and 'ridge.cv_scores' must both be given, of equal length.")

    def __repr__(self):
        if not hasattr(self, "marginal_"):
            return f"{_OWNER}(conditional={self.conditional!r}, unfitted)"
        return (f"{_OWNER}(rank={self.layout_.rank}, n_inputs={self.layout_.n_inputs}, "
                f"conditional={self.conditional!r}, fitted on {self.n_rows_} rows)")


def _json_params(params):
    """Parameters as JSON values; a Generator random_state cannot be stored and becomes None."""
    out = {}
    for name, value in params.items():
        if name == "random_state" and not (value is None or isinstance(value, numbers.Integral)):
            value = None
        elif name == "device" and not isinstance(value, str):
            value = str(value)
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        out[name] = value
    return out


__all__ = ["Connector", "sobol_normal"]
