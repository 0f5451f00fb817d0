"""Cell types: clustering connectivity samples, and mixtures built from the clusters.

A cell type is a cluster of neuron rows (m, n, I, b), or of any subset of
their columns (theory section 4: k-means or a Gaussian mixture; k chosen by
held-out log-likelihood, inertia and silhouette; by default the held-out
completed log-likelihood, see :func:`find_cell_types`). :func:`mixture_from_labels`
turns clusters into a :class:`~connector_sim.GaussianMixture` whose components
are the types, for the mean field and the sampler. scikit-learn is imported
when these functions run, not with the package.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_array, check_int, check_n_threads, check_positive_scalar
from .distributions import GaussianMixture, RowLayout
from .parallel import check_scheduler, run_tasks

METHODS = ("gmm", "kmeans")
#: Rules that choose k (see :func:`find_cell_types`).
CRITERIA = ("completed_log_likelihood", "log_likelihood", "silhouette")


@dataclass
class CellTypes:
    """What :func:`find_cell_types` found.

    Attributes
    ----------
    n_types : int
        The chosen number of clusters k.
    labels : ndarray of shape (n_samples,)
        Cluster of each sample, in [0, n_types).
    method : {"gmm", "kmeans"}
    criterion : str
        The rule that chose ``n_types`` (see :func:`find_cell_types`).
    scores : dict of str to ndarray of shape (len(k_range),)
        The per-k table: "k"; "log_likelihood" and "log_likelihood_se", the
        mean held-out log-likelihood per sample over the folds and its
        standard error; "completed_log_likelihood" and
        "completed_log_likelihood_se", the same for the held-out completed
        (classification) log-likelihood (these four GMM only, NaN for
        k-means); "inertia" (k-means sum of squared distances to the
        centres); "silhouette" (NaN for k = 1).
    model : sklearn.mixture.GaussianMixture or sklearn.cluster.KMeans
        The clustering with ``n_types`` clusters fitted on all samples.
    """

    n_types: int
    labels: np.ndarray
    method: str
    scores: dict
    model: object = field(repr=False)
    criterion: str = "completed_log_likelihood"


def _check_samples(samples):
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[0] < 1 or samples.shape[1] < 1:
        raise ValueError(
            "samples must be a 2-D array of shape (n_samples, n_features), one neuron row (or a subset of its "
            f"columns) per row. Got shape {samples.shape}."
        )
    return check_array(samples, "samples", ndim=2, dtype=np.float64)


def _check_k_range(k_range):
    try:
        values = sorted({check_int(k, "k_range entry", minimum=1, owner="find_cell_types") for k in k_range})
    except TypeError as exc:
        raise TypeError(f"k_range must be an iterable of ints >= 1, e.g. range(1, 9). Got {k_range!r}.") from exc
    if not values:
        raise ValueError(f"k_range must hold at least one cluster count. Got {k_range!r}.")
    return np.array(values)


def find_cell_types(samples, k_range=range(1, 9), method="gmm", n_folds=5, random_state=0,
                    silhouette_sample_size=5000, *, criterion=None, covariance_type="full", n_init=1, n_threads=1, scheduler=None,
                    progress=None):
    """Cluster connectivity samples and choose the number of cell types.

    For every k in ``k_range``:

    - held-out log-likelihood (``method="gmm"``): a Gaussian mixture with k
      components is fitted on n_folds - 1 folds (shuffled K-fold) and scored
      on the held-out fold, ``mean_i log p(x_i)``; mean and standard error
      over the folds;
    - held-out completed log-likelihood (``method="gmm"``), on the same
      fits: ``mean_i [log p(x_i) - H(t_i)]`` with t_ik = p(k | x_i) the
      responsibilities and H(t_i) = -sum_k t_ik log t_ik their entropy, i.e.
      the held-out log-likelihood of the samples together with their cluster
      assignments (the cross-validated form of ICL, Biernacki, Celeux &
      Govaert 2000);
    - inertia: a k-means fit on all samples, ``sum_i |x_i - c(x_i)|^2``;
    - silhouette: of the method's clustering of all samples, estimated on a
      random subset of ``silhouette_sample_size`` samples (k >= 2).

    k is chosen by ``criterion``:

    - "completed_log_likelihood" (default for "gmm"): the k of the largest
      held-out completed log-likelihood. A cell type is a cluster, not a
      Gaussian component: when the clusters are not exactly Gaussian, the
      plain held-out log-likelihood keeps rising slowly as extra components
      model the shape of each cluster (on Connector samples of the
      quadstable network, whose n = nbar(m) + noise bends each cluster, its
      one-standard-error rule chose 6 of 2,000 samples and 8 of 5,000 for 4
      types), while those extra, overlapping components make the
      assignments uncertain and the entropy term cancels their gain (4 in
      both cases). The entropy term already penalises them, so no
      one-standard-error margin is added: on 600 of those samples it would
      have chosen 3.
    - "log_likelihood": the smallest k whose held-out log-likelihood is
      within one standard error of the best (the number of Gaussian
      components the data support).
    - "silhouette" (default for "kmeans"): the k of the largest silhouette
      (k >= 2 only, unless k_range holds only 1).

    The Connector paper (section 6.1, Figure 2H) reports held-out GMM
    log-likelihood, k-means inertia and silhouette against k without
    stating a rule; every score stays in :attr:`CellTypes.scores`.

    Parameters
    ----------
    samples : array-like of shape (n_samples, n_features)
        Neuron rows [m, n, I, b] or any subset of their columns.
    k_range : iterable of int, default=range(1, 9)
    method : {"gmm", "kmeans"}, default="gmm"
    n_folds : int, default=5
        Folds of the held-out log-likelihood (each needs >= 2 samples).
    random_state : int, default=0
        Seeds the folds, the fits and the silhouette subsample.
    silhouette_sample_size : int, default=5000
    criterion : {"completed_log_likelihood", "log_likelihood", "silhouette"}, optional
        The rule that chooses k (above); default "completed_log_likelihood"
        for "gmm" and "silhouette" for "kmeans" (the likelihoods need
        ``method="gmm"``).
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Of the Gaussian mixtures (``sklearn.mixture.GaussianMixture``).
    n_init : int, default=1
        Restarts of each fit.
    n_threads : int or None, default=1
        Threads of scikit-learn's OpenMP and BLAS pools during the fits (via
        threadpoolctl); None leaves them as they are. Fits on a few thousand
        samples are too small to gain from threads: one thread was 3x
        (idle machine) to 25x (busy 2-core machine) faster on 2,000 rows.
        Use None for very large sample sets.
    scheduler : None, str or dask.distributed.Client, default=None
        Where the cluster counts run (one task per k; the samples and folds go
        once to each worker): None / "serial", "processes", "dask",
        "dask://host:port" or a Client; see :mod:`connector_sim.parallel`.
        The same scores and choice on each, bit for bit, with an int
        ``n_threads`` (None: each worker's own thread pools).
    progress : None, bool or callable, default=None
        ``progress(done, total, description)`` as cluster counts finish.

    Returns
    -------
    CellTypes

    Raises
    ------
    ValueError
        If ``samples`` is not a 2-D array, ``k_range`` is empty or asks for
        more clusters than there are (training) samples, there are fewer than 2
        samples per fold, or ``method`` / ``criterion`` is unknown or
        incompatible (likelihood criteria need ``method="gmm"``).
    TypeError
        If ``k_range`` is not an iterable of ints, or ``n_folds``,
        ``silhouette_sample_size`` or ``n_threads`` is not an int.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> samples = np.vstack([rng.normal(-3, 0.5, size=(30, 2)), rng.normal(3, 0.5, size=(30, 2))])
    >>> types = find_cell_types(samples, k_range=range(1, 4), n_folds=3)
    >>> types.n_types, np.bincount(types.labels)
    (2, array([30, 30]))
    """
    from sklearn.model_selection import KFold

    samples = _check_samples(samples)
    ks = _check_k_range(k_range)
    if method not in METHODS:
        raise ValueError(f"The 'method' parameter of find_cell_types must be one of {list(METHODS)}. Got {method!r}.")
    if criterion is None:
        criterion = CRITERIA[0] if method == "gmm" else "silhouette"
    if criterion not in CRITERIA:
        raise ValueError(f"The 'criterion' parameter of find_cell_types must be one of {list(CRITERIA)}. "
                         f"Got {criterion!r} instead.")
    if method == "kmeans" and criterion != "silhouette":
        raise ValueError(f"criterion={criterion!r} needs the held-out likelihoods of Gaussian mixtures: use "
                         "method='gmm', or criterion='silhouette' with k-means.")
    n_folds = check_int(n_folds, "n_folds", minimum=2, owner="find_cell_types")
    silhouette_sample_size = check_int(silhouette_sample_size, "silhouette_sample_size", minimum=2,
                                       owner="find_cell_types")
    n_samples = len(samples)
    if n_samples // n_folds < 2:
        raise ValueError(
            f"find_cell_types needs at least 2 samples per fold: {n_samples} samples in n_folds = {n_folds} "
            f"folds give {n_samples // n_folds}. Use at least {2 * n_folds} samples or fewer folds."
        )
    n_train = n_samples - -(-n_samples // n_folds)
    largest = n_train if method == "gmm" else n_samples
    if ks[-1] > largest:
        where = f"the {n_train} training samples of each fold" if method == "gmm" else f"the {n_samples} samples"
        raise ValueError(
            f"k_range asks for up to {ks[-1]} clusters, more than {where}. "
            f"Use cluster counts <= {largest}, or more samples."
        )

    n_threads = check_n_threads(n_threads, "find_cell_types", allow_none=True)
    check_scheduler(scheduler, "find_cell_types")
    folds = list(KFold(n_folds, shuffle=True, random_state=random_state).split(samples))
    settings = dict(method=method, covariance_type=covariance_type, n_init=n_init, random_state=random_state,
                    silhouette_sample_size=silhouette_sample_size, n_threads=n_threads)
    per_k = run_tasks(_score_k, ks, scheduler=scheduler, shared=(samples, folds, settings), progress=progress,
                      describe=lambda k: f"k = {k}", owner="find_cell_types")
    scores = {name: np.array([row[name] for row in per_k], dtype=np.float64)
              for name in ("log_likelihood", "log_likelihood_se", "completed_log_likelihood",
                           "completed_log_likelihood_se", "inertia", "silhouette")}
    models = {k: row["model"] for k, row in zip(ks, per_k)}
    scores = {"k": ks, **scores}
    chosen = choose_k(scores, criterion)
    model = models[chosen]
    labels = model.predict(samples) if method == "gmm" else model.labels_
    return CellTypes(n_types=chosen, labels=np.asarray(labels, np.int64), method=method,
                     scores=scores, model=model, criterion=criterion)


def _score_k(k, shared):
    """The scores and the model of one cluster count k (one task of find_cell_types)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture as SklearnMixture
    from threadpoolctl import threadpool_limits

    samples, folds, settings = shared
    method, random_state, n_init = settings["method"], settings["random_state"], settings["n_init"]
    n_samples = len(samples)

    def mixture():
        return SklearnMixture(k, covariance_type=settings["covariance_type"], n_init=n_init,
                              random_state=random_state)

    row = dict.fromkeys(("log_likelihood", "log_likelihood_se", "completed_log_likelihood",
                         "completed_log_likelihood_se", "inertia", "silhouette"), np.nan)
    with threadpool_limits(settings["n_threads"]):
        kmeans = KMeans(k, n_init=n_init, random_state=random_state).fit(samples)
        row["inertia"] = kmeans.inertia_
        if method == "gmm":
            held_out = np.array([_held_out_scores(mixture().fit(samples[train]), samples[test])
                                 for train, test in folds])
            for column, name in enumerate(("log_likelihood", "completed_log_likelihood")):
                row[name] = np.mean(held_out[:, column])
                row[f"{name}_se"] = np.std(held_out[:, column], ddof=1) / np.sqrt(len(folds))
            row["model"] = mixture().fit(samples)
            labels = row["model"].predict(samples)
        else:
            row["model"] = kmeans
            labels = kmeans.labels_
        if 2 <= len(np.unique(labels)) < n_samples:
            row["silhouette"] = silhouette_score(samples, labels, sample_size=min(settings["silhouette_sample_size"],
                                                                                  n_samples), random_state=random_state)
    return row


def _held_out_scores(mixture, samples):
    """Mean log p(x_i) and mean completed log-likelihood log p(x_i) - H(t_i) of held-out samples."""
    from scipy.special import entr  # -t log t, 0 at t = 0

    log_density = mixture.score_samples(samples)
    entropy = entr(mixture.predict_proba(samples)).sum(axis=1)
    return np.mean(log_density), np.mean(log_density - entropy)


def choose_k(scores, criterion="completed_log_likelihood"):
    """The number of cell types that ``criterion`` picks from a per-k score table.

    Parameters
    ----------
    scores : dict
        :attr:`CellTypes.scores` (keys "k", the scores and their "_se").
    criterion : {"completed_log_likelihood", "log_likelihood", "silhouette"}
        - "completed_log_likelihood": argmax_k of the held-out completed
          log-likelihood;
        - "log_likelihood": the smallest k with
          ``LL(k) >= LL(k*) - SE(k*)``, k* = argmax_k LL(k) (one-standard-error rule);
        - "silhouette": argmax_k of the silhouette (the first k when every
          silhouette is NaN, i.e. k_range is [1]).

        See :func:`find_cell_types` for why the first is the default.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If ``criterion`` is unknown, or the table has no scores for it (a
        likelihood criterion on a k-means table).

    Examples
    --------
    >>> import numpy as np
    >>> scores = {"k": np.array([1, 2, 3]), "log_likelihood": np.array([-3.0, -2.0, -1.99]),
    ...           "log_likelihood_se": np.array([0.1, 0.1, 0.1])}
    >>> choose_k(scores, "log_likelihood")  # one-standard-error rule: 3 is no better than 2
    2
    """
    if criterion not in CRITERIA:
        raise ValueError(f"The 'criterion' parameter of choose_k must be one of {list(CRITERIA)}. "
                         f"Got {criterion!r} instead.")
    ks = np.asarray(scores["k"])
    values = np.asarray(scores[criterion], dtype=float)
    if np.all(np.isnan(values)):
        if criterion != "silhouette":
            raise ValueError(f"The table has no {criterion} scores (k-means fits have none): use "
                             "criterion='silhouette'.")
        return int(ks[0])
    if criterion == "log_likelihood":
        best = np.nanargmax(values)
        return int(ks[np.flatnonzero(values >= values[best] - scores["log_likelihood_se"][best])[0]])
    return int(ks[np.nanargmax(values)])


def mixture_from_labels(samples, labels, layout, *, ridge=1e-6):
    """A Gaussian mixture with one component per cluster of neuron rows.

    ::

        w_k = n_k / n,  mu_k = mean of the rows labelled k,
        Sigma_k = their sample covariance (ddof = 1; zero for a single row)

    A singular Sigma_k (fewer rows than dimensions, a constant column such as
    a zero bias, collinear columns) gets ``ridge`` added to its diagonal, with
    a warning, so every component has a density.

    Parameters
    ----------
    samples : array-like of shape (n_samples, layout.dim)
        Full neuron rows [m, n, I, b].
    labels : array-like of int of shape (n_samples,)
        Cluster of each row; components follow the sorted distinct labels.
    layout : RowLayout
        Where m, n, I and b sit in a row.
    ridge : float, default=1e-6
        Variance added to the diagonal of a singular covariance.

    Returns
    -------
    GaussianMixture
        Accepted by :func:`~connector_sim.latent_velocity` and
        ``GaussianMixture.sample``.

    Raises
    ------
    TypeError
        If ``layout`` is not a RowLayout.
    ValueError
        If ``samples`` is not of shape (n_samples, layout.dim), ``labels`` not of
        shape (n_samples,), or ``ridge`` is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> samples = np.vstack([rng.normal(-3, 0.5, size=(30, 2)), rng.normal(3, 0.5, size=(30, 2))])
    >>> from connector_sim import RowLayout
    >>> labels = np.repeat([0, 1], 30)
    >>> mixture = mixture_from_labels(samples, labels, RowLayout(rank=1))
    >>> mixture.weights
    array([0.5, 0.5])
    """
    if not isinstance(layout, RowLayout):
        raise TypeError(f"layout must be a RowLayout (e.g. RowLayout(rank=2)). Got {layout!r}.")
    samples = _check_samples(samples)
    if samples.shape[1] != layout.dim:
        raise ValueError(
            f"samples must have layout.dim = {layout.dim} columns [m ({layout.rank}), n ({layout.rank}), "
            f"I ({layout.n_inputs}), b ({int(layout.bias)})]. Got {samples.shape[1]}."
        )
    labels = np.asarray(labels)
    if labels.shape != (len(samples),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be one integer cluster per sample, shape ({len(samples)},). "
            f"Got an array of dtype {labels.dtype} and shape {labels.shape}."
        )
    ridge = check_positive_scalar(ridge, "ridge", owner="mixture_from_labels")
    types = np.unique(labels)
    weights, means, covs = [], [], []
    for k in types:
        rows = samples[labels == k]
        cov = np.cov(rows, rowvar=False).reshape(layout.dim, layout.dim) if len(rows) > 1 else np.zeros((layout.dim,) * 2)
        eigenvalues = np.linalg.eigvalsh(cov)
        if eigenvalues[0] <= 1e-12 * max(1.0, eigenvalues[-1]):
            warnings.warn(
                f"The covariance of cluster {k} ({len(rows)} rows in dimension {layout.dim}) is singular "
                f"(smallest eigenvalue {eigenvalues[0]:.3g}); added ridge = {ridge:g} to its diagonal.",
                UserWarning,
                stacklevel=2,
            )
            cov = cov + ridge * np.eye(layout.dim)
        weights.append(len(rows) / len(samples))
        means.append(rows.mean(axis=0))
        covs.append(cov)
    return GaussianMixture(np.array(weights), np.array(means), np.array(covs), rank=layout.rank,
                           n_inputs=layout.n_inputs, bias=layout.bias)
