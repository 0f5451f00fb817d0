"""k-fold cross-validation over trials: the splits, and LINT and Connector scored per fold."""

import numpy as np
import pytest

pytest.importorskip("torch")

from connector_sim import simulate  # noqa: E402
from connector_sim.inference import LINT, Connector, cross_validate, kfold_trials  # noqa: E402
from connector_sim.synthetic import quadstable_network, synthetic_network  # noqa: E402


@pytest.mark.parametrize("n_trials, n_folds", [(10, 5), (11, 3), (7, 7)])
def test_folds_partition_the_trials(n_trials, n_folds):
    splits = kfold_trials(n_trials, n_folds, random_state=0)
    tests = [test for _, test in splits]
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(n_trials))  # every trial tested once
    assert sorted(len(t) for t in tests) == sorted([n_trials // n_folds + (k < n_trials % n_folds)
                                                    for k in range(n_folds)])
    for train, test in splits:
        assert np.array_equal(np.union1d(train, test), np.arange(n_trials)) and not np.intersect1d(train, test).size
    assert all(np.array_equal(a, b) for split_a, split_b in zip(splits, kfold_trials(n_trials, n_folds, random_state=0))
               for a, b in zip(split_a, split_b))


def test_official_three_way_split_validates_on_the_next_fold():
    # As the official code: fold k validates on fold k + 1's test trials (cyclically).
    splits = kfold_trials(20, 5, random_state=1, validation=True)
    for k, (train, validation, test) in enumerate(splits):
        assert np.array_equal(validation, splits[(k + 1) % 5][2])
        assert len(train) == 12 and len(validation) == 4 and len(test) == 4
        assert np.array_equal(np.sort(np.concatenate([train, validation, test])), np.arange(20))


def test_bad_folds():
    with pytest.raises(ValueError, match="'n_folds' parameter of kfold_trials must be at most the number of trials"):
        kfold_trials(3, 5)
    with pytest.raises(ValueError, match="'n_folds' parameter of kfold_trials"):
        kfold_trials(10, 1)
    with pytest.raises(TypeError, match="takes a LINT or a Connector"):
        cross_validate(object(), np.zeros((4, 3, 2)))
    with pytest.raises(TypeError, match="needs network="):
        cross_validate(Connector(), np.zeros((4, 3, 2)))


def test_lint_scores_per_fold_are_held_out_scores():
    # Each row is the fold's own fit scored on its own held-out trials: refitting
    # the fold's copy by hand on the same trials reproduces the test score (torch
    # runs are deterministic for a seed, single-threaded), and a fit on noisy
    # quadstable rates scores R^2 > 0.8 on every held-out fold.
    rng = np.random.default_rng(0)
    teacher, _ = quadstable_network(120, random_state=0)
    result = simulate(teacher, 24, dt=0.1, kappa0=rng.uniform(-2, 2, (12, 2)), record_units="all", backend="numpy")
    rates = result.rates + 0.05 * rng.standard_normal(result.rates.shape)
    lint = LINT(rank=2, dt=0.1, n_epochs=3, learning_rate=3e-3, random_state=0)
    scores = cross_validate(lint, rates, n_folds=3, random_state=0, return_estimator=True)
    assert list(scores["fold"]) == [0, 1, 2] and list(scores["n_test_trials"]) == [4, 4, 4]
    assert np.all(scores["test_score"] > 0.8) and np.all(scores["fit_time"] > 0)
    train, test = kfold_trials(12, 3, random_state=0)[1]
    by_hand = LINT(rank=2, dt=0.1, n_epochs=3, learning_rate=3e-3, random_state=0).fit(rates[train])
    assert by_hand.score(rates[test]) == pytest.approx(scores["test_score"][1], abs=1e-6)
    assert scores["estimator"][1].score(rates[test]) == scores["test_score"][1]


def test_connector_scores_per_fold():
    # The learned mean field predicts the held-out trials' one-step latent drive:
    # the limit cycle's Connector, even barely trained, explains nearly all of it
    # (the ridge conditional mean carries the dynamics; measured R^2 = 0.999).
    limit_cycle = synthetic_network("limit_cycle")
    kappa = limit_cycle.trajectories[:30, :40]
    connector = Connector(n_epochs=5, hidden=32, n_layers=2, batch_size=128, random_state=0)
    scores = cross_validate(connector, kappa, network=limit_cycle.network, n_folds=3, random_state=0)
    assert scores["test_score"].shape == (3,) and list(scores["n_test_trials"]) == [10, 10, 10]
    assert np.all(scores["test_score"] > 0.98)
