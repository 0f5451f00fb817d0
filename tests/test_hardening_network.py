"""Regression tests of the hardening of networks, sizes and inputs (issue 12, items 3, 5, 6 and part of 7).

- Networks hold read-only, validated arrays: no assignment can put a network
  in a state its kernels do not trust.
- Sizes are checked before any work: no hang on 10^10 steps or 2^63 starts.
- Every allocation that scales with user input goes through
  ``connector_sim._memory.check_allocation``: a clear TooLargeError (a
  MemoryError and a ValueError) instead of a traceback or the OOM killer.
- Bad inputs give a clear ValueError / TypeError, never an error from deep
  inside NumPy or the compiled kernels.

Sizes that must be refused are checked against a fixed memory budget
(``_memory.max_bytes``), so that the outcome does not depend on the machine.
"""

import io
import time
import zipfile

import numpy as np
import pytest

import connector_sim as cs
import connector_sim.data  # noqa: F401 (cs.data)
from connector_sim import _memory
from connector_sim.cli import main
from connector_sim.fixed_points import integrate
from connector_sim.sparse_dynamics import simulate_low_rank_plus_random
from connector_sim.synthetic import latent_grid, quadstable_mixture

from backend_support import require_backend

#: Everything here that must be refused is refused before any work: far below this.
FAST_SECONDS = 2.0


@pytest.fixture
def budget(monkeypatch):
    """A fixed memory budget of 1 GB (what the machine has does not matter)."""
    monkeypatch.setattr(_memory, "max_bytes", 10**9)
    monkeypatch.delenv(_memory.ENV_VAR, raising=False)
    return 10**9


@pytest.fixture
def network():
    return cs.Gaussian(np.zeros(6), np.eye(6) + 0.3 * np.eye(6, k=2) + 0.3 * np.eye(6, k=-2),
                       rank=2, n_inputs=1, bias=True).sample(60, 0)


def _refused_quickly(function, error=_memory.TooLargeError, match=None):
    started = time.perf_counter()
    with pytest.raises(error, match=match) as info:
        function()
    assert time.perf_counter() - started < FAST_SECONDS
    return info.value


def _unaligned(array):
    """A C-contiguous copy of ``array`` whose data start one byte into a buffer: not aligned."""
    array = np.asarray(array)
    buffer = np.zeros(array.nbytes + 1, np.uint8)
    out = buffer[1:].view(array.dtype).reshape(array.shape)
    out[...] = array
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


# --------------------------------------------------------------------------- item 3: networks


def test_network_arrays_are_read_only_copies(network):
    m = np.array(network.m)
    copy = cs.LowRankRNN(m, network.n, network.I, network.b)
    m[:] = np.nan  # the caller's array: the network keeps its own copy
    assert np.all(np.isfinite(copy.m))
    for name in ("m", "n", "I", "b", "m_T", "n_T", "I_T"):
        array = getattr(copy, name)
        assert not array.flags.writeable, name
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0.0


def test_copies_of_a_network_stay_read_only(network):
    import copy
    import pickle

    for twin in (copy.deepcopy(network), pickle.loads(pickle.dumps(network)), copy.copy(network)):
        for name in ("m_T", "n_T", "I_T", "b"):
            assert not getattr(twin, name).flags.writeable
            np.testing.assert_array_equal(getattr(twin, name), getattr(network, name))
        twin.tau = 3.0
        assert network.tau == 1.0


@pytest.mark.parametrize("name, value, error, match", [
    ("b", np.zeros(3), ValueError, r"'b' attribute of LowRankRNN must have shape \(60,\)"),
    ("n_T", np.zeros((2, 59)), ValueError, r"'n_T' attribute.*\(2, 60\).*Got shape \(2, 59\)"),
    ("I_T", np.zeros((2, 60)), ValueError, r"'I_T' attribute.*\(1, 60\)"),
    ("m", np.zeros((60, 3)), ValueError, r"'m' attribute.*\(60, 2\).*build a new LowRankRNN"),
    ("n", [[1.0, 2.0], [3.0]], ValueError, "n must"),
    ("I", np.full((60, 1), np.inf), ValueError, "I must contain only finite values"),
    ("b", np.zeros(60, complex), TypeError, "b must be real"),
    ("tau", 0, ValueError, "'tau' parameter of LowRankRNN must be a finite number > 0. Got 0"),
    ("tau", np.nan, ValueError, "'tau'"),
    ("tau", "1", TypeError, "'tau'"),
    ("activation", "softsign", ValueError, "Unknown activation"),
    ("dtype", np.float32, AttributeError, r"astype\(dtype\)"),
])
def test_network_assignments_are_validated(network, name, value, error, match):
    before = {key: np.array(getattr(network, key)) for key in ("m", "n", "I", "b")}
    with pytest.raises(error, match=match):
        setattr(network, name, value)
    for key, array in before.items():  # a refused assignment changes nothing
        np.testing.assert_array_equal(getattr(network, key), array)
    assert network.tau == 1.0 and network.activation == "tanh"


def test_valid_assignment_is_what_the_kernels_simulate(network, backend):
    # Assigning b, n_T and tau gives exactly the network built with them (same kernels, same bits).
    rng = np.random.default_rng(1)
    b, n = rng.standard_normal(60), rng.standard_normal((60, 2))
    network.b = b.tolist()  # any array-like, converted to the network's dtype
    network.n_T = n.T
    network.tau = 2.0
    built = cs.LowRankRNN(network.m, n, network.I, b, tau=2.0)
    assert not network.b.flags.writeable and network.b.dtype == np.float64
    run = dict(n_steps=20, kappa0=[0.5, -0.5], inputs=np.ones((20, 1)), backend=backend, noise_std=0.1, seed=3)
    np.testing.assert_array_equal(cs.simulate(network, **run).kappa, cs.simulate(built, **run).kappa)


def test_sparse_and_random_networks_cannot_be_put_out_of_shape(network):
    sparse = cs.sparsify(network, n_connections=10, seed=0, representation="stored")
    with pytest.raises(AttributeError, match=r"network.dense.b = \.\.\."):
        sparse.b = np.zeros(60)
    with pytest.raises(ValueError, match="for the network's 60 neurons"):
        sparse.mask = cs.SparseMask(50, n_connections=5, seed=0)
    with pytest.raises(ValueError, match="mask's 60 neurons"):
        sparse.dense = network.__class__(np.ones((50, 2)), np.ones((50, 2)))
    with pytest.raises(TypeError, match="must be a SparseMask"):
        sparse.mask = "mask"
    with pytest.raises(ValueError, match="'scaling' attribute"):
        sparse.scaling = "N"
    mask = sparse.mask
    for name, value in (("n_neurons", 10**9), ("n_connections", 60), ("seed", 1), ("representation", "implicit")):
        with pytest.raises(AttributeError, match=f"'{name}' attribute of SparseMask cannot be assigned"):
            setattr(mask, name, value)
    assert not mask.tile_offsets().flags.writeable
    bernoulli = cs.SparseMask(60, sparsity=0.5, seed=0, representation="stored")
    assert not any(part.flags.writeable for part in bernoulli.csr())

    mixed = cs.LowRankPlusRandomRNN(network, 0.5, seed=0)
    assert not mixed.random_part.flags.writeable
    for name in ("g", "random_part", "seed"):
        with pytest.raises(AttributeError, match="cannot be assigned"):
            setattr(mixed, name, 1.0)
    with pytest.raises(ValueError, match="60 neurons and dtype float64"):
        mixed.dense = network.astype(np.float32)


def test_distribution_parameters_are_fixed_at_construction():
    # The sampling factors are computed from cov at construction: an assigned cov would be ignored silently.
    gaussian = cs.Gaussian(np.zeros(2), np.eye(2), rank=1)
    mixture = cs.GaussianMixture([1.0], np.zeros((1, 2)), np.eye(2)[None], rank=1)
    empirical = cs.Empirical(np.ones((3, 2)), rank=1)
    for distribution, names in ((gaussian, ("mean", "cov", "layout")),
                                (mixture, ("weights", "means", "covs", "layout")), (empirical, ("rows", "layout"))):
        for name in names:
            with pytest.raises(AttributeError, match=f"'{name}' attribute of {type(distribution).__name__} cannot"):
                setattr(distribution, name, getattr(distribution, name))
            if name != "layout":
                assert not getattr(distribution, name).flags.writeable


# --------------------------------------------------------------------------- item 5: hangs


def test_huge_step_counts_are_refused_before_any_work(network, budget):
    _refused_quickly(lambda: cs.simulate(network, 10**10), match="Simulating 1 trial")
    _refused_quickly(lambda: cs.perturbation_study(quadstable_mixture(), [cs.Perturbation()], np.zeros((1, 2)),
                                                   n_steps=10**10), match="perturbation_study")
    _refused_quickly(lambda: integrate(lambda k: -k, np.zeros(2), 0.1, 10**12), match="integrate")
    mixed = cs.LowRankPlusRandomRNN(cs.Gaussian(np.zeros(2), np.eye(2), rank=1).sample(50, 0), 0.5, seed=0)
    _refused_quickly(lambda: simulate_low_rank_plus_random(mixed, 10**10), match="Simulating 1 trial")
    _refused_quickly(lambda: cs.mean_field_trajectory(quadstable_mixture(), np.zeros(2), 10**10),
                     match="mean_field_trajectory")


def test_find_fixed_points_refuses_huge_n_starts():
    cs.find_fixed_points(lambda k: -k, [[-1, 1], [-1, 1]], n_starts=1)  # imports scipy.optimize
    _refused_quickly(lambda: cs.find_fixed_points(lambda k: -k, [[-1, 1], [-1, 1]], n_starts=2**63),
                     ValueError, match=r"'n_starts'.*\[1, 1000000\]")


def test_cli_refuses_huge_sizes_with_exit_2(tmp_path, capsys, budget):
    out = str(tmp_path / "sim.npz")
    for option, value in (("--n-steps", 10**10), ("--n-neurons", 10**10), ("--trials", 10**12),
                          ("--init random --trials", 2**63 - 1)):
        started = time.perf_counter()
        assert main(["simulate", "bistable", *option.split(), str(value), "--out", out]) == 2
        assert time.perf_counter() - started < 10 * FAST_SECONDS
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "needs" in error and "more than the memory available" in error
    assert not (tmp_path / "sim.npz").exists()


# --------------------------------------------------------------------------- item 6: memory


def test_check_allocation_says_what_how_much_and_how_to_fix(budget):
    assert issubclass(_memory.TooLargeError, MemoryError) and issubclass(_memory.TooLargeError, ValueError)
    assert _memory.check_allocation(10**9, "x", "y") == 10**9  # the budget itself fits
    with pytest.raises(_memory.TooLargeError) as info:
        _memory.check_allocation(745 * 2**30, "Loading the big thing", "Load a smaller one.")
    message = str(info.value)
    assert "Loading the big thing needs 800 GB" in message  # 745 GiB
    assert "memory available (1 GB)" in message and "CONNECTOR_SIM_MAX_BYTES" in message
    assert message.endswith("Load a smaller one.")
    assert (info.value.requested, info.value.available) == (745 * 2**30, 10**9)
    with pytest.raises(_memory.TooLargeError, match=r"needs about 10\^400 bytes"):
        _memory.check_allocation(10**400, "A request past the float range", "Ask for less.")


def test_memory_override_from_the_environment(monkeypatch):
    monkeypatch.setattr(_memory, "max_bytes", None)
    for text, expected in (("16G", 16 << 30), ("1.5e9", 1_500_000_000), ("512 MiB", 512 << 20), ("2g", 2 << 30), ("0", 0)):
        monkeypatch.setenv(_memory.ENV_VAR, text)
        assert _memory.available_memory() == expected
    monkeypatch.setenv(_memory.ENV_VAR, "lots")
    with pytest.raises(ValueError, match="CONNECTOR_SIM_MAX_BYTES must be a number of bytes"):
        _memory.available_memory()
    monkeypatch.delenv(_memory.ENV_VAR)
    assert _memory.available_memory() > 0  # MemAvailable, or the fallback


@pytest.mark.parametrize("make", [
    lambda: cs.Gaussian(np.zeros(4), np.eye(4), rank=2),
    lambda: cs.GaussianMixture([0.5, 0.5], np.zeros((2, 4)), np.stack([np.eye(4)] * 2), rank=2),
    lambda: cs.Empirical(np.ones((3, 4)), rank=2),
])
def test_distributions_refuse_huge_samples(make, budget):
    distribution = make()
    _refused_quickly(lambda: distribution.sample(10**12), match="Sampling a network of 1000000000000 neurons")
    _refused_quickly(lambda: distribution.sample_rows(10**12), match=r"sample_rows\(1000000000000\)")
    assert distribution.sample(10).n_neurons == 10


def test_simulate_refuses_what_would_not_fit(network, budget):
    for kwargs in (dict(n_trials=10**12), dict(n_trials=2**63), dict(n_trials=10**7, path="full")):
        error = _refused_quickly(lambda: cs.simulate(network, 10, **kwargs), match="Simulating")
        assert "Use fewer trials" in str(error)
    # The recording check keeps its own limit (max_record_bytes), now a TooLargeError too.
    _refused_quickly(lambda: cs.simulate(network, 10, record_units="all", max_record_bytes=100),
                     match="Recording 60 units.*max_record_bytes given")


def test_final_state_is_checked_before_it_is_built(network, monkeypatch):
    result = cs.simulate(network, 5, n_trials=100)
    monkeypatch.setattr(_memory, "max_bytes", 100 * 60 * 8)  # less than the state and its temporaries
    _refused_quickly(lambda: result.final_state, match="final_state.*record_units")
    monkeypatch.setattr(_memory, "max_bytes", None)
    full = cs.simulate(network, 5, n_trials=100, path="full")
    np.testing.assert_allclose(result.final_state, full.final_state, rtol=0, atol=1e-12)


def test_sparse_masks_and_dense_matrices_are_checked(monkeypatch):
    monkeypatch.setattr(_memory, "max_bytes", 10**6)
    _refused_quickly(lambda: cs.SparseMask(10**6, n_connections=1000, seed=0, representation="stored"),
                     match="Storing this mask.*half the available memory.*representation='implicit'")
    small = cs.Gaussian(np.zeros(2), np.eye(2), rank=1).sample(1000, 0)
    _refused_quickly(lambda: cs.LowRankPlusRandomRNN(small, 1.0), match="1000 x 1000 matrix")
    from connector_sim import spectra

    _refused_quickly(lambda: spectra.leading_eigenvalues(cs.sparsify(small, n_connections=10, seed=0), k=500),
                     match=r"leading_eigenvalues\(k=500\)")
    assert cs.SparseMask(10**6, n_connections=1000, seed=0).nbytes == 0  # implicit: nothing stored


def _npz_claiming(path, shape):
    """An .npz whose one member's header claims ``shape`` (float64) and holds a few bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m.npy", header.getvalue() + b"\0" * 64)
    return path


def test_npz_headers_are_read_before_loading(tmp_path, budget, capsys):
    path = str(_npz_claiming(tmp_path / "huge.npz", (745 * 2**27,)))  # 745 GiB of float64
    assert cs.data.npz_nbytes(path) == 745 * 2**30
    _refused_quickly(lambda: cs.data.load_arrays(path), match="its array headers claim 800 GB")
    _refused_quickly(lambda: cs.data.load_network(path), match="needs 1.6 TB")
    assert main(["simulate", path, "--out", str(tmp_path / "sim.npz")]) == 2
    assert "its array headers claim" in capsys.readouterr().err
    saved = tmp_path / "ok.npz"
    cs.data.save_arrays(saved, a=np.zeros((3, 4)), b=np.arange(5, dtype=np.int32))
    assert cs.data.npz_nbytes(saved) == 3 * 4 * 8 + 5 * 4


def test_grids_and_flows_are_checked(budget):
    _refused_quickly(lambda: latent_grid(10**6), match=r"latent_grid\(1000000\)")
    _refused_quickly(lambda: cs.plot_flow_field(lambda k: -k, [[-1, 1], [-1, 1]], resolution=10**6),
                     match="plot_flow_field with resolution 1000000")
    # One latent point costs ~order x 8 bytes of quadrature temporaries per cell type.
    points = np.zeros((10**6, 2))
    _refused_quickly(lambda: cs.latent_velocity(quadstable_mixture(), points, order=64),
                     match="mean-field velocity at 1000000 latent points")


# --------------------------------------------------------------------------- item 7: inputs


@pytest.mark.parametrize("backend", ["numpy", "cpp"])  # numba accepts them too, at the cost of a recompilation
def test_unaligned_arrays_work_on_the_compiled_backend(network, backend):
    require_backend(backend)
    inputs = np.random.default_rng(0).standard_normal((3, 12, 1))
    x0 = np.random.default_rng(1).standard_normal((3, 60))
    reference = cs.simulate(network, inputs=inputs, x0=x0, backend="numpy", path="full")
    result = cs.simulate(network, inputs=_unaligned(inputs), x0=_unaligned(x0), backend=backend, path="full")
    np.testing.assert_allclose(result.kappa, reference.kappa, rtol=0, atol=1e-12)
    points = np.random.default_rng(2).standard_normal((7, 2))
    velocity = cs.latent_velocity(network, _unaligned(points), np.zeros((7, 1)), backend=backend)
    np.testing.assert_allclose(velocity, cs.latent_velocity(network, points, np.zeros((7, 1)), backend="numpy"),
                               rtol=0, atol=1e-12)


def test_unaligned_network_arrays_are_copied(network):
    require_backend("cpp")
    copy = cs.LowRankRNN(_unaligned(network.m), _unaligned(network.n), _unaligned(network.I), _unaligned(network.b))
    assert all(getattr(copy, name).flags.aligned for name in ("m_T", "n_T", "I_T", "b"))
    run = dict(n_steps=10, noise_std=0.2, seed=0, backend="cpp")
    np.testing.assert_array_equal(cs.simulate(copy, **run).kappa, cs.simulate(network, **run).kappa)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(max_record_bytes="1"), TypeError, "'max_record_bytes' parameter must be a number >= 0. Got '1'"),
    (dict(x0=[[0.0] * 60, [0.0] * 59]), ValueError, "x0 must be an array of numbers.*non-ragged"),
    (dict(v0=[[0.0], []]), ValueError, "v0 must be an array of numbers.*non-ragged"),
    (dict(kappa0=[[0.0, 1.0], [2.0]]), ValueError, "kappa0 must be an array of numbers"),
    (dict(clamp={"units": [0], "value": "x"}), TypeError, r"clamp\['value'\] must be a number.*Got 'x'"),
    (dict(clamp={"units": [0], "value": 1j}), TypeError, r"clamp\['value'\] must be real"),
    (dict(clamp={"units": [0], "value": [1.0, 2.0]}), ValueError, r"clamp\['value'\] must be a scalar or one value"),
    (dict(noise_std=10**400), ValueError, "'noise_std' parameter of simulate must be a finite number >= 0"),
    (dict(noise_std=float("inf")), ValueError, "'noise_std'"),
    (dict(n_trials=2**63), _memory.TooLargeError, "Simulating 9223372036854775808 trial"),
    (dict(record_units=[[0, 1], [2]]), ValueError, "record_units must be None, 'all' or a 1-D array"),
])
def test_simulate_bad_inputs_are_clear(network, kwargs, error, match):
    with pytest.raises(error, match=match):
        cs.simulate(network, 10, **kwargs)


def test_inputs_without_time_steps_are_refused(network):
    for shape in ((0, 1), (4, 0, 1)):
        with pytest.raises(ValueError, match="inputs must have at least one time step"):
            cs.simulate(network, inputs=np.zeros(shape))
    with pytest.raises(ValueError, match="inputs must be an array of numbers"):
        cs.simulate(network, inputs=[[0.0], [0.0, 1.0]])


def test_empty_record_units_records_nothing(network):
    result = cs.simulate(network, 10, kappa0=[0.3, -0.2], record_units=[])
    plain = cs.simulate(network, 10, kappa0=[0.3, -0.2])
    assert result.units is None and result.potentials is None and result.rates is None
    np.testing.assert_array_equal(result.kappa, plain.kappa)
    clamped = cs.simulate(network, 10, kappa0=[0.3, -0.2], clamp={"units": []})  # an empty clamp clamps nothing
    np.testing.assert_array_equal(clamped.kappa, plain.kappa)


@pytest.mark.parametrize("name", ["tol", "dedup_tol", "jacobian_step", "marginal_tol"])
@pytest.mark.parametrize("value", [1j, None, "1e-9"])
def test_find_fixed_points_tolerances_are_validated(name, value):
    with pytest.raises(TypeError, match=f"'{name}' parameter of find_fixed_points must be"):
        cs.find_fixed_points(lambda k: -k, [[-1, 1], [-1, 1]], n_starts=3, **{name: value})


@pytest.mark.parametrize("velocity", [lambda k: -k + 1j, lambda k: np.array(["x"] * k.size).reshape(k.shape)])
def test_find_fixed_points_refuses_a_velocity_that_is_not_real(velocity):
    with pytest.raises(TypeError, match="velocity must return real numbers"):
        cs.find_fixed_points(velocity, [[-1, 1]], n_starts=3)


def test_flow_networks_are_checked_before_torch_allocates(budget):
    pytest.importorskip("torch")
    from connector_sim.inference.flows import VelocityMLP

    _refused_quickly(lambda: VelocityMLP(2, 0, hidden=200_000), match="4 hidden layers of width 200000")
    _refused_quickly(lambda: VelocityMLP(2, 0, hidden=4, n_layers=10**10), match="10000000000 hidden layers")
    assert sum(p.numel() for p in VelocityMLP(2, 1, hidden=8, n_layers=2).parameters()) == (4 + 1) * 8 + 9 * 8 + 9 * 2


def test_binning_smoothing_and_noise_blocks_are_checked(budget):
    from connector_sim.data import bin_spike_times, causal_gaussian_kernel

    _refused_quickly(lambda: causal_gaussian_kernel(1e-300, 0.1), match="smoothing kernel")
    _refused_quickly(lambda: bin_spike_times([[0.1]], [0.0], [1.0], bin_width=1e-12, smoothing=None),
                     match="Binning 1 trial")
    _refused_quickly(lambda: cs.private_noise(0, 10**6, 10**6), match="private_noise of 1 x 1000000 x 1000000")
    assert bin_spike_times([[0.1, 0.25]], [0.0], [1.0], bin_width=0.1, smoothing=None).spikes.sum() == 2


def test_sinkhorn_cost_matrices_are_checked(budget):
    pytest.importorskip("geomloss")
    from connector_sim.inference.distances import sinkhorn_divergence

    _refused_quickly(lambda: sinkhorn_divergence(np.zeros((10**5, 2)), np.ones((10**5, 2))),
                     match="sinkhorn_divergence of 100000 and 100000 points")
