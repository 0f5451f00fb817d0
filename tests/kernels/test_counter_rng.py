"""The counter-based noise: compiled generator against the reference, and its statistics."""

import math

import numpy as np
import pytest
import scipy.stats

import connector_sim.noise
from connector_sim import private_noise
from connector_sim._backends import extension_built, load_extension
from connector_sim._kernels import counter_rng
from conftest import REQUIRE_BACKENDS

SEEDS = [0, 1, 2**64 - 1, -1, -123456789, 2**63, 0xDEADBEEF]
#: libm's log and cos are correctly rounded or nearly so, and so are NumPy's:
#: the normals agree to a few ulp of values below 6.7.
NORMAL_ATOL = 1e-14


@pytest.fixture(scope="module")
def compiled():
    """The Cython module; a failure, not a skip, under CONNECTOR_SIM_STRICT_BUILD."""
    if not extension_built("_counter_rng"):
        message = "connector_sim._ext._counter_rng is not built here"
        if REQUIRE_BACKENDS:
            pytest.fail(message)
        pytest.skip(message)
    return load_extension("_counter_rng")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("trial, step", [(0, 0), (1, 0), (0, 1), (7, 999), (2**40, 2**33), (-1, 5)])
def test_step_key_matches_reference(compiled, seed, trial, step):
    assert compiled.step_key(seed, trial, step) == int(counter_rng.step_key(seed, trial, step))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_units", [1, 2, 10007])
def test_unit_bits_match_reference_bitwise(compiled, seed, n_units):
    key = counter_rng.step_key(seed, 3, 11)
    bits = compiled.unit_bits(key, n_units)
    assert bits.dtype == np.uint64 and bits.shape == (n_units,)
    np.testing.assert_array_equal(bits, counter_rng.unit_bits(key, n_units))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("trial, step", [(0, 0), (5, 17), (2**40, 2**33)])
@pytest.mark.parametrize("n_units", [1, 10007])
def test_standard_normal_matches_reference(compiled, seed, trial, step, n_units):
    xi = compiled.standard_normal(seed, trial, step, n_units)
    assert xi.dtype == np.float64 and xi.shape == (n_units,)
    np.testing.assert_allclose(xi, counter_rng.standard_normal(seed, trial, step, n_units), rtol=0,
                               atol=NORMAL_ATOL)


def test_noise_block_matches_reference(compiled):
    seed, trial_offset, step_start = 2**64 - 5, 3, 40
    xi = compiled.noise_block(seed, trial_offset, 2, step_start, 3, 1001)
    assert xi.shape == (2, 3, 1001)
    for b in range(2):
        for t in range(3):
            expected = counter_rng.standard_normal(seed, trial_offset + b, step_start + t, 1001)
            np.testing.assert_allclose(xi[b, t], expected, rtol=0, atol=NORMAL_ATOL)


def test_out_arguments_are_filled_and_checked(compiled):
    out = np.empty(100)
    assert compiled.standard_normal(1, 2, 3, 100, out=out) is out
    np.testing.assert_array_equal(out, compiled.standard_normal(1, 2, 3, 100))
    block = np.empty((2, 3, 100))
    assert compiled.noise_block(1, 0, 2, 0, 3, 100, out=block) is block
    with pytest.raises(ValueError, match=r"shape \(100,\)"):
        compiled.standard_normal(1, 2, 3, 100, out=np.empty(99))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 100\)"):
        compiled.noise_block(1, 0, 2, 0, 3, 100, out=np.empty((2, 3, 99)))


# --- private_noise ---------------------------------------------------------------


def test_private_noise_shape_and_indexing():
    xi = private_noise(5, n_steps=4, n_units=30, n_trials=3)
    assert xi.shape == (3, 4, 30) and xi.dtype == np.float64
    # Any sub-block can be regenerated on its own.
    part = private_noise(5, n_steps=2, n_units=30, n_trials=2, trial_offset=1, step_start=2)
    np.testing.assert_array_equal(part, xi[1:, 2:])
    np.testing.assert_array_equal(private_noise(5, 4, 10)[0], xi[0, :, :10])
    # Seeds are taken modulo 2**64, as the simulator does.
    np.testing.assert_array_equal(private_noise(-1, 2, 30), private_noise(2**64 - 1, 2, 30))


def test_private_noise_fallback_gives_the_same_numbers(monkeypatch):
    compiled_result = private_noise(2**64 - 1, n_steps=3, n_units=1000, n_trials=2, trial_offset=4)
    monkeypatch.setattr(connector_sim.noise, "extension_built", lambda stem: False)
    reference = private_noise(2**64 - 1, n_steps=3, n_units=1000, n_trials=2, trial_offset=4)
    np.testing.assert_allclose(compiled_result, reference, rtol=0, atol=NORMAL_ATOL)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(seed=1.5), TypeError, "'seed' parameter of private_noise must be an int"),
        (dict(seed=True), TypeError, "'seed' parameter of private_noise must be an int"),
        (dict(n_steps=0), ValueError, r"'n_steps' parameter of private_noise must be an int in the range \[1"),
        (dict(n_units=2.0), TypeError, "'n_units' parameter of private_noise must be an int"),
        (dict(n_trials=-1), ValueError, "'n_trials' parameter of private_noise"),
        (dict(trial_offset=-1), ValueError, "'trial_offset' parameter of private_noise"),
        (dict(step_start=-2), ValueError, "'step_start' parameter of private_noise"),
    ],
)
def test_private_noise_rejects_bad_arguments(kwargs, error, message):
    arguments = dict(seed=0, n_steps=2, n_units=3) | kwargs
    with pytest.raises(error, match=message):
        private_noise(**arguments)


# --- statistics ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def draws():
    """10^6 normals: two trials x two steps x 250_000 units."""
    return private_noise(20240607, n_steps=2, n_units=250_000, n_trials=2)


def test_mean_and_variance(draws):
    xi = draws.ravel()
    n = xi.size
    # Standard errors: 1 / sqrt(n) for the mean, sqrt(2 / n) for the variance.
    assert abs(xi.mean()) < 5 / math.sqrt(n)
    assert abs(xi.var() - 1) < 5 * math.sqrt(2 / n)
    # Box-Muller on 32-bit uniforms: |xi| <= sqrt(-2 log(2**-33)) = 6.76.
    assert np.all(np.abs(xi) < 6.77)


def test_kolmogorov_smirnov_against_standard_normal(draws):
    assert scipy.stats.kstest(draws.ravel(), "norm").pvalue > 1e-3


@pytest.mark.parametrize(
    "first, second",
    [
        ((0, 0, slice(None, -1)), (0, 0, slice(1, None))),  # neighbouring units
        ((0, 0), (0, 1)),  # neighbouring steps
        ((0, 0), (1, 0)),  # neighbouring trials
    ],
    ids=["units", "steps", "trials"],
)
def test_neighbours_are_uncorrelated(draws, first, second):
    a, b = draws[first], draws[second]
    # Under independence the sample correlation has standard error 1 / sqrt(n).
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(a.size)
