"""The opt-in bfloat16 path of CNF sampling and densities (``precision="bfloat16"``) against float32.

bfloat16 keeps 8 significant bits (unit round-off 2^-9 = 2e-3): the hidden
layers' weights and activations are rounded to it, the products accumulate
in float32, and the ODE state stays float32. The velocity is then off by a
few 1e-3 of its size at each evaluation; integrated over t in [0, 1] the
samples move by about that much in units of the data's standard deviation.
The bounds below are 6-12x the largest differences measured on models like
these (samples 8e-4 max, log p 8e-3 max, midpoint and rk4, with and without
a condition), and far below the spread of the distributions (1 in these
units).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from connector_sim.inference import Connector, flows  # noqa: E402
from connector_sim.inference.flows import FlowMatchingCNF, bfloat16_supported  # noqa: E402
from connector_sim.synthetic import synthetic_network  # noqa: E402

needs_bfloat16 = pytest.mark.skipif(
    not bfloat16_supported("cpu"),
    reason="this CPU has neither AVX512_BF16 nor AMX: precision='bfloat16' raises ValueError here",
)

#: Largest |bfloat16 - float32| sample difference, in units of each coordinate's standard deviation.
SAMPLE_BOUND = 0.01
#: Largest |bfloat16 - float32| log-density difference (nats).
LOG_PROB_BOUND = 0.05


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((2, 800))
    x = np.column_stack([u, u**2 + 0.3 * rng.standard_normal(800), np.tanh(3 * v)])
    return x, rng.standard_normal((800, 2))


@pytest.fixture(scope="module")
def fitted(data):
    x, c = data
    options = dict(hidden=32, n_layers=3, n_epochs=3, random_state=0, device="cpu")
    return {False: FlowMatchingCNF(**options).fit(x), True: FlowMatchingCNF(**options).fit(x, c)}


@needs_bfloat16
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("solver", ["midpoint", "rk4"])
def test_bfloat16_samples_and_densities_are_within_the_bound_of_float32(fitted, data, monkeypatch, conditional,
                                                                         solver):
    x, c = data
    flow = fitted[conditional]
    # Tiles of 300 rows: full ones and a partial last one (the defaults are 4,096 and 1,024 rows).
    monkeypatch.setattr(flows, "CPU_TILE_BFLOAT16", 300)
    monkeypatch.setattr(flows, "CPU_TILE", 300)
    options = dict(condition=c if conditional else None, solver=solver, n_steps=8)
    exact = flow.sample(800, random_state=3, **options)
    low = flow.sample(800, random_state=3, precision="bfloat16", **options)
    error = np.abs(low - exact) / flow.scale_
    assert error.max() < SAMPLE_BOUND
    assert error.max() > 0  # the bfloat16 products did run
    log_p = flow.log_prob(x, **options)
    log_p_low = flow.log_prob(x, precision="bfloat16", **options)
    assert np.abs(log_p_low - log_p).max() < LOG_PROB_BOUND
    assert np.abs(log_p_low - log_p).max() > 0


@needs_bfloat16
def test_bfloat16_sampling_keeps_the_float32_defaults_unchanged(fitted):
    flow = fitted[False]
    before = flow.sample(200, random_state=1)
    flow.sample(200, random_state=1, precision="bfloat16")
    np.testing.assert_array_equal(flow.sample(200, random_state=1, precision="float32"), before)


@pytest.mark.parametrize("precision", ["float16", "bf16", None, 32])
def test_precision_is_validated(fitted, data, precision):
    flow = fitted[False]
    with pytest.raises(ValueError, match="'precision' parameter of FlowMatchingCNF.sample must be one of"):
        flow.sample(10, random_state=0, precision=precision)
    with pytest.raises(ValueError, match="'precision' parameter of FlowMatchingCNF.log_prob must be one of"):
        flow.log_prob(data[0][:10], precision=precision)


def test_bfloat16_without_hardware_support_raises(fitted, data, monkeypatch):
    monkeypatch.setattr(flows, "bfloat16_supported", lambda device="cpu": False)
    flow = fitted[False]
    with pytest.raises(ValueError, match="AVX512_BF16 or AMX.*Use precision='float32'"):
        flow.sample(10, random_state=0, precision="bfloat16")
    with pytest.raises(ValueError, match="AVX512_BF16 or AMX"):
        flow.log_prob(data[0][:10], precision="bfloat16")


@needs_bfloat16
def test_bfloat16_needs_the_packages_velocity_mlp(fitted):
    flow = fitted[False]
    handle = flow.model_.register_forward_hook(lambda module, inputs, output: None)
    try:
        with pytest.raises(ValueError, match="needs the package's VelocityMLP"):
            flow.sample(10, random_state=0, precision="bfloat16")
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def connector():
    case = synthetic_network("limit_cycle")
    return Connector(n_epochs=2, hidden=32, n_layers=2, batch_size=128, random_state=0).fit(
        case.network, case.trajectories)


@needs_bfloat16
def test_connector_bfloat16_rows_and_densities(connector):
    rows, _ = connector.sample_rows(500, random_state=4)
    low, labels = connector.sample_rows(500, random_state=4, precision="bfloat16")
    assert low.shape == rows.shape and np.all(labels == 0)
    mIb = connector.layout_.mIb
    # The marginal CNF's coordinates; n is drawn given them (Gaussian), so it moves with them.
    error = np.abs(low[:, mIb] - rows[:, mIb]) / connector.marginal_.scale_
    assert error.max() < SAMPLE_BOUND
    network, sampled_rows = connector.sample(500, random_state=4, return_rows=True, precision="bfloat16")
    np.testing.assert_array_equal(sampled_rows, low)
    log_p = connector.log_prob(rows)
    assert np.abs(connector.log_prob(rows, precision="bfloat16") - log_p).max() < LOG_PROB_BOUND


def test_connector_validates_precision(connector, monkeypatch):
    with pytest.raises(ValueError, match="'precision' parameter of Connector.sample must be one of"):
        connector.sample(10, precision="half")
    with pytest.raises(ValueError, match="'precision' parameter of Connector.sample_rows must be one of"):
        connector.sample_rows(10, precision="half")
    rows, _ = connector.sample_rows(5, random_state=0)
    with pytest.raises(ValueError, match="'precision' parameter of Connector.log_prob must be one of"):
        connector.log_prob(rows, precision="half")
    monkeypatch.setattr(flows, "bfloat16_supported", lambda device="cpu": False)
    with pytest.raises(ValueError, match="AVX512_BF16 or AMX"):
        connector.sample(10, precision="bfloat16")
