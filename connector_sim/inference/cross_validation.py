"""k-fold cross-validation over trials for LINT and Connector.

The official Connector code splits trials with a shuffled k-fold (scikit-learn
``KFold(n_splits, shuffle=True, random_state=seed)``): fold k tests on its
own trials, validates (early stopping) on the test trials of fold k + 1 and
trains on the rest. :func:`kfold_trials` gives these splits (``validation=True``
for the three-way split), and :func:`cross_validate` fits a fresh copy of an
estimator on each fold's training trials and scores it on the held-out ones,
returning one row per fold (a dict of equal-length arrays, like
``sklearn.model_selection.cross_validate``; ``pandas.DataFrame(result)`` makes
it a table).

Scores: :meth:`LINT.score <connector_sim.inference.lint.LINT.score>` (R^2 of
the rates the fitted network predicts from each trial's first frame) and
:meth:`Connector.score <connector_sim.inference.connector.Connector.score>`
(R^2 of the learned mean field's one-step latent drive).
"""

import inspect
import time

import numpy as np

from .._validation import check_int, check_random_state

_OWNER = "cross_validate"


def kfold_trials(n_trials, n_folds=5, *, random_state=None, validation=False):
    """Shuffled k-fold splits of trial indices.

    Parameters
    ----------
    n_trials : int
    n_folds : int, default=5
        At least 2 (3 with ``validation=True``), at most ``n_trials``.
    random_state : None, int or numpy.random.Generator
        Shuffles the trials before they are cut into ``n_folds`` contiguous
        folds of sizes differing by at most one.
    validation : bool, default=False
        Also hold out the test trials of the next fold (cyclically) for
        validation, as the official Connector code does.

    Returns
    -------
    list of tuples of sorted int arrays
        ``(train, test)`` per fold, or ``(train, validation, test)``.

    Raises
    ------
    ValueError
        If there are fewer trials than folds, or too few folds.

    Examples
    --------
    >>> [len(test) for _, test in kfold_trials(10, 3, random_state=0)]
    [4, 3, 3]
    """
    n_trials = check_int(n_trials, "n_trials", minimum=1, owner="kfold_trials")
    n_folds = check_int(n_folds, "n_folds", minimum=3 if validation else 2, owner="kfold_trials")
    if n_folds > n_trials:
        raise ValueError(f"The 'n_folds' parameter of kfold_trials must be at most the number of trials "
                         f"({n_trials}): every fold needs a test trial. Got {n_folds} instead.")
    order = check_random_state(random_state).permutation(n_trials)
    # Fold sizes as KFold: the first n_trials % n_folds folds have one trial more.
    sizes = np.full(n_folds, n_trials // n_folds)
    sizes[: n_trials % n_folds] += 1
    tests = np.split(order, np.cumsum(sizes)[:-1])
    splits = []
    for k, test in enumerate(tests):
        if validation:
            held = tests[(k + 1) % n_folds]
            train = np.setdiff1d(order, np.concatenate([test, held]))
            splits.append((np.sort(train), np.sort(held), np.sort(test)))
        else:
            splits.append((np.setdiff1d(order, test), np.sort(test)))
    return splits


def _clone(estimator):
    """A fresh, unfitted copy of an estimator with the same constructor parameters."""
    names = [name for name, p in inspect.signature(type(estimator).__init__).parameters.items()
             if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return type(estimator)(**{name: getattr(estimator, name) for name in names})


def _take(array, indices):
    if array is None:
        return None
    if isinstance(array, (list, tuple)):
        return [array[i] for i in indices]
    return np.asarray(array)[indices]


def cross_validate(estimator, data, *, n_folds=5, random_state=None, inputs=None, lengths=None, network=None,
                   alpha=0.1, return_estimator=False, verbose=False):
    """Fit and score an estimator on k folds of trials; one row of scores per fold.

    Parameters
    ----------
    estimator : LINT or Connector
        Unfitted settings; each fold fits a fresh copy (same parameters).
    data : array-like of shape (n_trials, ...) or list of trials
        LINT: the rates (n_trials, n_times, n_neurons). Connector: the latent
        trajectories kappa (n_trials, T + 1, R) of ``network``.
    n_folds : int, default=5
    random_state : None, int or numpy.random.Generator
        Shuffles the trials (:func:`kfold_trials`).
    inputs, lengths : optional
        Per-trial inputs (both estimators) and valid lengths (LINT), split
        with the trials.
    network : LowRankRNN
        Connector only: the fitted network whose rows are the samples.
    alpha : float, default=0.1
        Connector only: dt / tau of the trajectories.
    return_estimator : bool, default=False
        Also return the fitted estimators (key "estimator").
    verbose : bool, default=False
        One line per fold on stderr.

    Returns
    -------
    dict of ndarray
        "fold" (0 .. n_folds - 1), "n_train_trials", "n_test_trials",
        "train_score", "test_score", "fit_time", "score_time" (seconds).

    Raises
    ------
    TypeError
        For an estimator other than LINT or Connector, or a Connector without ``network``.
    ValueError
        For fewer trials than folds.

    Examples
    --------
    >>> from connector_sim.inference import LINT, cross_validate  # doctest: +SKIP
    >>> scores = cross_validate(LINT(rank=2, n_epochs=20), rates, n_folds=5, random_state=0)  # doctest: +SKIP
    >>> scores["test_score"].mean()  # doctest: +SKIP
    """
    from .connector import Connector
    from .lint import LINT

    if isinstance(estimator, LINT):
        kind = "lint"
    elif isinstance(estimator, Connector):
        kind = "connector"
        if network is None:
            raise TypeError("cross_validate of a Connector needs network=: the fitted LowRankRNN whose latent "
                            "trajectories `data` are.")
    else:
        raise TypeError(f"cross_validate takes a LINT or a Connector estimator. Got {type(estimator).__name__}.")
    n_trials = len(data)
    splits = kfold_trials(n_trials, n_folds, random_state=random_state)
    columns = {key: [] for key in ("fold", "n_train_trials", "n_test_trials", "train_score", "test_score",
                                   "fit_time", "score_time")}
    fitted = []
    for fold, (train, test) in enumerate(splits):
        model = _clone(estimator)
        started = time.perf_counter()
        if kind == "lint":
            model.fit(_take(data, train), _take(inputs, train), _take(lengths, train))
        else:
            model.fit(network, _take(data, train), _take(inputs, train), alpha=alpha)
        fit_time = time.perf_counter() - started
        started = time.perf_counter()
        if kind == "lint":
            train_score = model.score(_take(data, train), _take(inputs, train), _take(lengths, train))
            test_score = model.score(_take(data, test), _take(inputs, test), _take(lengths, test))
        else:
            train_score = model.score(_take(data, train), _take(inputs, train))
            test_score = model.score(_take(data, test), _take(inputs, test))
        score_time = time.perf_counter() - started
        for key, value in zip(columns, (fold, len(train), len(test), train_score, test_score, fit_time, score_time)):
            columns[key].append(value)
        if return_estimator:
            fitted.append(model)
        if verbose:
            import sys

            print(f"fold {fold + 1}/{n_folds}: train {train_score:.4f}, test {test_score:.4f} "
                  f"({fit_time:.1f} s)", file=sys.stderr)
    result = {key: np.asarray(values) for key, values in columns.items()}
    if return_estimator:
        result["estimator"] = fitted
    return result


__all__ = ["cross_validate", "kfold_trials"]
