"""LINT: recovery of a teacher network, inputs and variable lengths, training mechanics, bad input."""

import numpy as np
import pytest

pytest.importorskip("torch")

from connector_sim import LowRankRNN, simulate  # noqa: E402
from connector_sim.inference.lint import LINT, resolve_device  # noqa: E402
from connector_sim.latents import align_latents, check_identifiability  # noqa: E402
from connector_sim.synthetic import quadstable_network  # noqa: E402


def quadstable_rates(n_trials=32, n_times=40, noise=0.05, seed=0):
    """Rates phi(x) of the quadstable teacher (rank 2, N = 200) from random initial latents, plus noise."""
    rng = np.random.default_rng(seed)
    teacher, _ = quadstable_network(200, random_state=seed)
    result = simulate(teacher, n_times - 1, dt=0.1, kappa0=rng.uniform(-2, 2, (n_trials, 2)), record_units="all",
                      backend="numpy")
    return result, result.rates + noise * rng.standard_normal(result.rates.shape)


def test_lint_recovers_teacher_rates_and_latents():
    # Issue check: held-out rates R^2 > 0.9, aligned latents R^2 > 0.9. The
    # teacher's rates carry N(0, 0.05^2) noise, so the noise-free rates are
    # the reference; both thresholds leave room for the 2-D fit's finite-data error.
    result, rates = quadstable_rates()
    train, test = slice(0, 24), slice(24, 32)
    lint = LINT(rank=2, dt=0.1, n_epochs=8, learning_rate=3e-3, random_state=0).fit(rates[train])
    assert lint.score(rates[test]) > 0.9
    assert lint.score(result.rates[test]) > 0.9
    latents = lint.transform(rates[test])
    assert align_latents(latents, result.kappa[test]).r2 > 0.9
    assert align_latents(lint.latents_, result.kappa[train]).r2 > 0.9
    assert check_identifiability(lint.latents_).identifiable
    # Early stopping keeps the best validation state, never worse than the initialisation.
    history = lint.history_
    assert history["epoch"][0] == 0 and len(history["val_loss"]) == lint.n_epochs_ + 1
    assert history["val_loss"][lint.best_epoch_] == min(history["val_loss"])
    assert len(lint.validation_trials_) == 5 and len(lint.train_trials_) == 19


def test_latents_are_those_of_the_returned_network():
    # The estimator's rollout is the simulator's latent recursion (theory eq. 3) in
    # float32: the returned network, simulated in float64 by the package from
    # kappa0_, gives the same latents and rates to float32 rounding (1e-4).
    result, rates = quadstable_rates(n_trials=6, n_times=20)
    lint = LINT(rank=2, n_epochs=2, validation_fraction=0.0, random_state=1).fit(rates)
    assert isinstance(lint.network_, LowRankRNN) and lint.network_.n_neurons == 200
    replay = simulate(lint.network_, 19, dt=0.1, kappa0=lint.kappa0_, record_units="all", backend="numpy")
    np.testing.assert_allclose(replay.kappa, lint.latents_, atol=1e-4)
    np.testing.assert_allclose(replay.rates, lint.predict(rates), atol=1e-4)


def input_teacher(N=60, seed=1):
    """Rank 1 with one input: n overlaps m (memory) and I (integration)."""
    rng = np.random.default_rng(seed)
    m, I = rng.standard_normal((N, 1)), rng.standard_normal((N, 1))
    return LowRankRNN(m, 1.6 * m + I + 0.5 * rng.standard_normal((N, 1)), I)


def input_trials(network, n_trials=30, n_times=40, noise=0.05, seed=2):
    rng = np.random.default_rng(seed)
    u = np.zeros((n_trials, n_times, 1))
    u[:, 5:20, 0] = rng.uniform(-1, 1, (n_trials, 1))
    u += 0.1 * rng.standard_normal(u.shape)
    result = simulate(network, inputs=u[:, :-1], dt=0.1, record_units="all", backend="numpy")
    lengths = rng.integers(28, n_times + 1, n_trials)
    return result, result.rates + noise * rng.standard_normal(result.rates.shape), u, lengths


@pytest.mark.parametrize("initial_state", ["invert", "encoder"])
def test_lint_with_inputs_and_variable_lengths(initial_state):
    # Padding beyond each trial's length is NaN: it must be masked out, not fitted.
    result, rates, u, lengths = input_trials(input_teacher())
    padded = rates.copy()
    for k, length in enumerate(lengths):
        padded[k, length:] = np.nan
    lint = LINT(rank=1, n_epochs=5, batch_size=8, learning_rate=3e-3, initial_state=initial_state,
                random_state=0).fit(padded[:22], u[:22], lengths[:22])
    assert lint.network_.n_inputs == 1 and lint.n_inputs_ == 1
    assert lint.score(padded[22:], u[22:], lengths[22:]) > 0.9
    assert align_latents(lint.transform(rates[22:], u[22:]), result.kappa[22:]).r2 > 0.9
    if initial_state == "encoder":
        assert lint.encoder_.shape == (1, 60)


def test_bptt_from_random_initialisation():
    # Without the regression start, BPTT alone must bring the loss down by an
    # order of magnitude and the held-out fit above R^2 = 0.9.
    result, rates, u, lengths = input_trials(input_teacher(N=30), n_trials=24, n_times=30, noise=0.02)
    lint = LINT(rank=1, init="random", n_epochs=40, batch_size=4, learning_rate=2e-2, patience=None,
                initial_state="invert", random_state=0).fit(rates[:18], u[:18])
    losses = lint.history_["val_loss"]
    assert min(losses) < 0.1 * losses[0]
    assert lint.score(rates[18:], u[18:]) > 0.9


def test_affine_readout_fits_rates_in_other_units():
    # Rates reported as 20 + 15 * phi(x) spikes/s: the affine readout absorbs gain and offset.
    result, rates = quadstable_rates(n_trials=16, n_times=30, noise=0.02, seed=3)
    scaled = 20.0 + 15.0 * rates
    lint = LINT(rank=2, readout="affine", n_epochs=30, learning_rate=1e-2, random_state=0).fit(scaled[:12])
    assert lint.score(scaled[12:]) > 0.9
    assert lint.readout_gain_.shape == (200,) and np.median(lint.readout_gain_) > 5


def test_progress_callback_and_verbose(capsys):
    result, rates = quadstable_rates(n_trials=6, n_times=10)
    seen = []

    def stop_after_two(estimator, epoch, logs):
        seen.append((epoch, logs["train_loss"], logs["val_loss"]))
        return epoch == 2

    lint = LINT(rank=2, n_epochs=50, verbose=1, callback=stop_after_two, random_state=0).fit(rates)
    assert [epoch for epoch, _, _ in seen] == [0, 1, 2] and lint.n_epochs_ == 2
    assert all(np.isfinite(train) and np.isfinite(val) for _, train, val in seen)
    printed = capsys.readouterr().out
    assert "[LINT] epoch     2" in printed and "val_loss" in printed
    # The same seed gives the same split and fit.
    again = LINT(rank=2, n_epochs=2, random_state=0).fit(rates)
    np.testing.assert_array_equal(again.validation_trials_, lint.validation_trials_)


def test_device_resolution():
    import torch

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA, which is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu!")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"rank": 0}, r"The 'rank' parameter of LINT must be an int in the range \[1, inf\]. Got 0 instead."),
        ({"activation": "softsign"}, r"The 'activation' parameter of LINT must be one of"),
        ({"readout": "exp"}, r"The 'readout' parameter of LINT must be one of"),
        ({"validation_fraction": 1.0}, r"must be a number in \[0, 1\)"),
        ({"dt": 2.0}, r"needs dt <= tau"),
        ({"activation": "relu", "initial_state": "invert"}, "needs an invertible activation"),
    ],
)
def test_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        LINT(**params).fit(np.zeros((4, 5, 3)))


def test_bad_data():
    with pytest.raises(ValueError, match="spikes of trial 1 contains a non-finite value"):
        LINT().fit(np.where(np.arange(60).reshape(4, 5, 3) == 20, np.nan, 0.1))
    with pytest.raises(ValueError, match="needs at least 2 trials"):
        LINT().fit(np.zeros((1, 5, 3)))
    with pytest.raises(ValueError, match="not fitted yet"):
        LINT().predict(np.zeros((1, 5, 3)))
    result, rates = quadstable_rates(n_trials=4, n_times=8)
    lint = LINT(rank=2, n_epochs=1, random_state=0).fit(rates)
    with pytest.raises(ValueError, match="must have 200 neurons, as in fit. Got 3"):
        lint.predict(np.zeros((1, 5, 3)))
    with pytest.raises(ValueError, match=r"kappa0 must be finite with shape \(4, 2\)"):
        lint.predict(rates, kappa0=np.zeros(2))


def test_cuda_matches_cpu():
    # Runs where a GPU is present (skipped on CPU-only machines). float64 on
    # both devices; different reduction orders leave rounding-level differences.
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    result, rates = quadstable_rates(n_trials=8, n_times=20)
    options = dict(rank=2, n_epochs=3, dtype="float64", random_state=0)
    cpu = LINT(device="cpu", **options).fit(rates)
    cuda = LINT(device="cuda", **options).fit(rates)
    assert cuda.device_.type == "cuda"
    np.testing.assert_allclose(cuda.history_["train_loss"], cpu.history_["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(cuda.latents_, cpu.latents_, atol=1e-6)


def test_warns_when_latents_are_not_identifiable():
    # Every trial sits at the same fixed point: the rates carry no dynamics,
    # the fitted latent is constant in time, and the fit says so.
    from connector_sim.latents import IdentifiabilityWarning

    m = np.random.default_rng(4).standard_normal((50, 1))
    teacher = LowRankRNN(m, 2.0 * m, None, None)  # bistable, fixed points at kappa = +-1.42
    settled = simulate(teacher, 400, dt=0.1, kappa0=[1.0], backend="numpy").kappa[0, -1]
    result = simulate(teacher, 19, dt=0.1, kappa0=np.tile(settled, (6, 1)), record_units="all", backend="numpy")
    with pytest.warns(IdentifiabilityWarning, match="constant in time"):
        lint = LINT(rank=1, n_epochs=0, fit_bias=False, validation_fraction=0.0, random_state=0).fit(result.rates)
    assert not lint.identifiability_.varies


@pytest.mark.parametrize("activation", ["softplus", "sigmoid"])
def test_smooth_activations_fit_their_teacher(activation):
    # A rank-1 teacher with this activation: LINT with the same activation fits
    # held-out rates (R^2 > 0.9 against the noise-free rates; noise 0.02 is ~10%
    # of the rates' spread), and its network, simulated by the package, replays
    # its latents and rates to float32 rounding (1e-4), as for tanh above.
    rng = np.random.default_rng(3)
    N = 80
    m = rng.standard_normal((N, 1))
    teacher = LowRankRNN(m, 4.0 * m + rng.standard_normal((N, 1)), b=-0.5 + 0.3 * rng.standard_normal(N),
                         activation=activation)
    result = simulate(teacher, 29, dt=0.1, kappa0=rng.uniform(-1.5, 1.5, (24, 1)), record_units="all",
                      backend="numpy")
    rates = result.rates + 0.02 * rng.standard_normal(result.rates.shape)
    lint = LINT(rank=1, dt=0.1, activation=activation, n_epochs=5, learning_rate=3e-3, validation_fraction=0.0,
                random_state=0)
    lint.fit(rates[:18])
    assert lint.score(result.rates[18:]) > 0.9
    replay = simulate(lint.network_, 29, dt=0.1, kappa0=lint.kappa0_, record_units="all", backend="numpy")
    assert lint.network_.activation == activation
    # float32 rounding, relative too: softplus latents reach ~1e2.
    np.testing.assert_allclose(replay.kappa, lint.latents_, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(replay.rates, lint.predict(rates[:18]), rtol=1e-5, atol=1e-4)
def test_a_tiny_alpha_is_a_clear_error_not_an_eigen_failure():
    # dt = 1e-200: the increments divided by alpha overflow and numpy's eigh raised "Eigenvalues did not converge".
    from connector_sim.inference import LINT

    rates = np.tanh(np.random.default_rng(0).standard_normal((2, 5, 3)))
    with pytest.raises(ValueError, match="not finite"):
        LINT(rank=1, dt=1e-200, n_epochs=1, random_state=0, device="cpu").fit(rates)
