"""Velocity matching: the quadstable flow, given loadings, callable fields, trajectories, bad input."""

import numpy as np
import pytest

pytest.importorskip("torch")

from connector_sim import LowRankRNN, latent_velocity, simulate  # noqa: E402
from connector_sim.inference.velocity_matching import VelocityMatching, velocity_samples  # noqa: E402
from connector_sim.synthetic import latent_grid, quadstable_network  # noqa: E402


def relative_error(estimate, target):
    return np.linalg.norm(estimate - target) / np.linalg.norm(target)


@pytest.fixture(scope="module")
def quadstable():
    network, _ = quadstable_network(1000, random_state=0)
    return network


def test_reproduces_the_quadstable_flow(quadstable):
    # Trained on a 20 x 20 grid over [-2.4, 2.4]^2, checked on another 15 x 15
    # grid. 200 units with learned m and b approximate the flow to ~0.1 %; 2 %
    # leaves room for other seeds.
    train = latent_grid(20, 2.4)
    fit = VelocityMatching(200, n_epochs=10, random_state=0).fit(train, latent_velocity(quadstable, train))
    test = latent_grid(15, 2.2)
    target = latent_velocity(quadstable, test)
    assert relative_error(fit.predict(test), target) < 0.02
    # predict() is the returned network's own flow (the package's sample average).
    np.testing.assert_allclose(latent_velocity(fit.network_, test), fit.predict(test), rtol=1e-10, atol=1e-12)
    assert fit.network_.n_neurons == 200 and fit.network_.rank == 2


def test_adam_improves_on_the_closed_form_start(quadstable):
    # With 16 units the ridge start misses the flow by ~15 %; training m, n and
    # b together must at least halve that (it reaches ~4 %).
    train = latent_grid(20, 2.4)
    target = latent_velocity(quadstable, train)
    fit = VelocityMatching(16, n_epochs=300, batch_size=400, learning_rate=3e-2, patience=None,
                           random_state=0).fit(train, target)
    assert fit.initial_relative_error_ > 0.1
    assert fit.relative_error_ < 0.5 * fit.initial_relative_error_
    assert fit.history_["val_loss"][fit.best_epoch_] == min(fit.history_["val_loss"])


def input_network(N=300, seed=0):
    rng = np.random.default_rng(seed)
    m, I = rng.standard_normal((N, 1)), rng.standard_normal((N, 1))
    return LowRankRNN(m, 1.8 * m + 0.8 * I + 0.3 * rng.standard_normal((N, 1)), I, 0.2 * rng.standard_normal(N))


def test_given_loadings_stay_fixed_and_callable_field_matches_samples():
    teacher = input_network()
    rng = np.random.default_rng(1)
    kappa, v = rng.uniform(-2, 2, (300, 1)), rng.uniform(-1, 1, (300, 1))

    def field(k, inputs):
        return latent_velocity(teacher, k, inputs)

    # random_state differs from the teacher's seed: with the same stream, b would equal
    # the teacher's m, and every feature tanh(m_i (kappa + 1) + I_i v) would be odd about (-1, 0).
    options = dict(m=teacher.m, n_epochs=30, random_state=3)
    from_field = VelocityMatching(**options).fit(kappa, field, v)
    from_samples = VelocityMatching(**options).fit(kappa, field(kappa, v), v)
    np.testing.assert_array_equal(from_field.network_.m, teacher.m)  # the given loading is not trained
    np.testing.assert_allclose(from_field.network_.n, from_samples.network_.n, rtol=1e-6)
    test_k, test_v = rng.uniform(-1.8, 1.8, (100, 1)), rng.uniform(-0.9, 0.9, (100, 1))
    assert relative_error(from_field.predict(test_k, test_v), field(test_k, test_v)) < 0.05
    assert from_field.network_.n_inputs == 1


def test_velocity_samples_from_trajectories_are_exact():
    # kappa_{t+1} = kappa_t + alpha F(kappa_t, v_t) exactly, so the finite
    # difference is the flow to rounding, with and without inputs.
    teacher = input_network(N=100)
    rng = np.random.default_rng(2)
    u = rng.standard_normal((3, 25, 1))
    result = simulate(teacher, inputs=u[:, :-1], kappa0=rng.standard_normal((3, 1)), dt=0.2, backend="numpy")
    kappa, velocity, v = velocity_samples(result.kappa, 0.2, inputs=u)
    assert kappa.shape == (72, 1) and v.shape == (72, 1)
    np.testing.assert_allclose(velocity, latent_velocity(teacher, kappa, v), atol=1e-10)
    np.testing.assert_allclose(v, result.v[:, :-1].reshape(-1, 1), atol=1e-12)


def test_bad_input():
    kappa = np.zeros((10, 2))
    with pytest.raises(ValueError, match="needs n_neurons"):
        VelocityMatching().fit(kappa, kappa)
    with pytest.raises(ValueError, match=r"m must have one column per latent: shape \(5, 2\)"):
        VelocityMatching(m=np.ones((5, 3))).fit(kappa, kappa)
    with pytest.raises(ValueError, match=r"must return an array of shape \(10, 2\)"):
        VelocityMatching(5).fit(kappa, lambda k: k[:, :1])
    with pytest.raises(ValueError, match=r"velocity must have shape \(10, 2\)"):
        VelocityMatching(5).fit(kappa, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="at least 2 time points"):
        velocity_samples(np.zeros((2, 1, 2)), 0.1)
    with pytest.raises(ValueError, match="not fitted yet"):
        VelocityMatching(5).predict(kappa)
