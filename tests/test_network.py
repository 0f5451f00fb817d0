import numpy as np
import pytest

from connector_sim import LowRankRNN, simulate


def test_loadings_round_trip_and_layout():
    rng = np.random.default_rng(0)
    m, n, I, b = rng.standard_normal((5, 2)), rng.standard_normal((5, 2)), rng.standard_normal((5, 3)), rng.standard_normal(5)
    network = LowRankRNN(m, n, I, b, tau=2.0)
    np.testing.assert_array_equal(network.m, m)
    np.testing.assert_array_equal(network.n, n)
    np.testing.assert_array_equal(network.I, I)
    assert network.m_T.flags.c_contiguous and network.m_T.shape == (2, 5)
    assert (network.n_neurons, network.rank, network.n_inputs) == (5, 2, 3)
    np.testing.assert_allclose(network.connectivity(), m @ n.T / 5)
    assert network.rows().shape == (5, 2 * 2 + 3 + 1)


def test_loadings_are_read_only_copies():
    # The network owns read-only copies: changing the caller's array later
    # cannot put the network in a state its kernels did not validate.
    m_T = np.ones((2, 7))
    network = LowRankRNN(m_T.T, m_T.T)
    assert not np.shares_memory(network.m_T, m_T)
    m_T[0, 0] = np.nan
    assert np.all(np.isfinite(network.m))
    for array in (network.m_T, network.n_T, network.I_T, network.b, network.m, network.n, network.I):
        assert not array.flags.writeable


def _starts_on_cache_line(array):
    return array.ctypes.data % 64 == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loadings_start_on_a_cache_line(dtype):
    # The kernels stream m_T, n_T, I_T and b with 64-byte vector loads; NumPy
    # only promises 16-byte alignment (a large array starts 16 bytes past a line).
    from connector_sim import Gaussian

    rng = np.random.default_rng(1)
    for n_neurons in (1, 7, 1000, 40_001):
        m, n, I, b = (rng.standard_normal(shape) for shape in ((n_neurons, 2), (n_neurons, 2), (n_neurons, 1),
                                                                 n_neurons))
        network = LowRankRNN(m, n, I, b, dtype=dtype)
        for name in ("m_T", "n_T", "I_T", "b"):
            assert _starts_on_cache_line(getattr(network, name)), name
            assert not getattr(network, name).flags.writeable
        np.testing.assert_array_equal(network.m, m.astype(dtype))
        np.testing.assert_array_equal(network.b, b.astype(dtype))
        network.b = np.zeros(n_neurons)  # an assignment stores a new aligned copy
        assert _starts_on_cache_line(network.b)
    sampled = Gaussian(np.zeros(6), np.eye(6), rank=2, n_inputs=1, bias=True).sample(10_001, random_state=0,
                                                                                      dtype=dtype)
    for name in ("m_T", "n_T", "I_T", "b"):
        assert _starts_on_cache_line(getattr(sampled, name)), name
    no_inputs = LowRankRNN(m, n, dtype=dtype)
    assert no_inputs.I_T.shape == (0, n_neurons) and no_inputs.I.shape == (n_neurons, 0)


def test_astype_and_defaults():
    network = LowRankRNN(np.ones((4, 1)), np.ones((4, 1)))
    assert network.n_inputs == 0 and np.all(network.b == 0)
    assert network.astype(np.float32).dtype == np.float32
    assert "LowRankRNN(n_neurons=4" in repr(network)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"m": np.ones(4), "n": np.ones((4, 1))}, ValueError, r"m must be 2-dimensional.*Got an array of shape \(4,\)"),
        ({"m": np.ones((4, 2)), "n": np.ones((4, 1))}, ValueError, "same rank.*rank 2.*rank 1"),
        ({"m": np.ones((4, 1)), "n": np.ones((3, 1))}, ValueError, r"n must have shape \(4, 1\). Got shape \(3, 1\)"),
        ({"m": np.ones((4, 1)), "n": np.ones((4, 1)), "b": np.ones(5)}, ValueError, r"b must have shape \(4\)"),
        ({"m": np.ones((4, 1)), "n": np.ones((4, 1)), "I": np.ones((3, 2))}, ValueError, r"I must have shape \(4, any\)"),
        ({"m": [[1.0], [np.nan]], "n": np.ones((2, 1))}, ValueError, r"m must contain only finite values. Got nan at index \(1, 0\)"),
        ({"m": np.ones((2, 1)), "n": [[1.0], [np.inf]]}, ValueError, "n must contain only finite values. Got inf"),
        ({"m": np.ones((2, 1)), "n": np.ones((2, 1)), "tau": 0.0}, ValueError, "'tau' parameter of LowRankRNN must be a finite number > 0. Got 0.0"),
        ({"m": np.ones((2, 1)), "n": np.ones((2, 1)), "tau": -1}, ValueError, "must be a finite number > 0. Got -1"),
        ({"m": np.ones((2, 1)), "n": np.ones((2, 1)), "activation": "softsign"}, ValueError, r"Unknown activation 'softsign'. Expected one of \['tanh', 'relu', 'identity', 'softplus', 'sigmoid'\]"),
        ({"m": np.ones((2, 1)), "n": np.ones((2, 1)), "activation": abs}, TypeError, "numba.njit"),
        ({"m": np.ones((2, 1)), "n": np.ones((2, 1)), "dtype": np.int32}, TypeError, "float32 or float64. Got int32"),
        ({"m": np.ones((2, 1)) * 1j, "n": np.ones((2, 1))}, TypeError, "m must be real"),
    ],
)
def test_bad_input_messages(kwargs, error, message):
    with pytest.raises(error, match=message):
        LowRankRNN(**kwargs)


def test_connectivity_refuses_huge_networks():
    network = LowRankRNN(np.ones((30_000, 1)), np.ones((30_000, 1)), dtype=np.float32)
    with pytest.raises(ValueError, match="dense 30000 x 30000 matrix"):
        network.connectivity()


def test_strided_bias_is_stored_contiguous_and_simulates():
    # A bias taken as a column of a larger array is strided; the compiled
    # kernels need contiguous arrays, so the network stores a contiguous copy.
    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 3))
    network = LowRankRNN(table[:, :1], table[:, 1:2], b=table[:, 2])
    assert network.b.flags.c_contiguous
    np.testing.assert_array_equal(network.b, table[:, 2])
    result = simulate(network, 5, dt=0.1, kappa0=np.ones(1))
    assert np.all(np.isfinite(result.kappa))
