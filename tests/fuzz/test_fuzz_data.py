"""Property-based tests of the data loaders and as_trial_data: hostile arrays and hostile files (see fuzzlib).

The files are written by the test (corrupted, truncated, wrong keys, wrong
dtypes, an .npy renamed .npz, object arrays, a header claiming 745 GiB, a
directory, a missing file) and read in the sandbox.
"""

import itertools
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzlib import arrays, check, examples, hostile_arrays, ints, npz_recipes, reals, sometimes, write_recipe

_names = itertools.count()


def fresh_path(folder, suffix=".npz"):
    return os.path.join(folder, f"f{next(_names)}{suffix}")


# --------------------------------------------------------------------------- cases (run in the sandbox)


def run_load_arrays(path, required):
    from connector_sim.data import load_arrays

    arrays = load_arrays(path, required)
    # The arrays are the file's data, NaN included: the property is a dict of arrays, not their values.
    if not isinstance(arrays, dict) or not all(isinstance(v, np.ndarray) for v in arrays.values()):
        raise TypeError(f"load_arrays returned {type(arrays).__name__}, not a dict of arrays")
    return None


def run_load_network(path):
    from connector_sim.data import load_network

    network, extra = load_network(path, return_extra=True)
    return network.m, network.n, network.I, network.b, network.tau


def run_load_npz(path, kwargs):
    from connector_sim.data import load_npz

    data = load_npz(path, **kwargs)
    return data.spikes, data.inputs, data.lengths


def run_as_trial_data(spikes, inputs, lengths, kwargs):
    from connector_sim.data import as_trial_data

    data = as_trial_data(spikes, inputs, lengths, **kwargs)
    return data.spikes, data.inputs, data.lengths


def run_read_nwb(path, kwargs):
    from connector_sim.data import read_nwb

    data = read_nwb(path, **kwargs)
    return data.spikes, data.lengths


# --------------------------------------------------------------------------- strategies


def network_arrays():
    N, R = 4, 2
    return st.fixed_dictionaries(
        {"m": sometimes(arrays((N, R), hostile=False), hostile_arrays((N, R))),
         "n": sometimes(arrays((N, R), hostile=False), hostile_arrays((N, R))),
         "tau": sometimes(st.just(np.float64(1.0)), st.sampled_from([np.float64(0), np.float64(np.nan), np.array("x"),
                                                                     np.complex128(1j), np.array([1.0, 2.0])])),
         "activation": sometimes(st.just(np.array("tanh")), st.sampled_from([np.array("softplus"), np.float64(1),
                                                                            np.array(["tanh", "relu"])]))},
        optional={"I": hostile_arrays((N, 1)), "b": sometimes(arrays((N,), hostile=False), hostile_arrays((N,))),
                  "kind": st.just(np.array("LowRankRNN")), "labels": hostile_arrays((N,), 0, 3),
                  "M": arrays((N, R))})


def trial_arrays():
    K, T, N = 3, 5, 2
    return st.fixed_dictionaries(
        {"spikes": sometimes(arrays((K, T, N), 0, 3, hostile=False), hostile_arrays((K, T, N), 0, 3)),
         "lengths": sometimes(st.just(np.array([5, 4, 3])), st.sampled_from(
             [np.array([6, 5, 5]), np.array([0, 1, 1]), np.array([1.5, 2, 2]), np.array([-1, 2, 2]), np.array([5]),
              np.array([[5, 5, 5]]), np.array(["a", "b", "c"])]))},
        optional={"externalinputs": hostile_arrays((K, T, 1)), "other": arrays((2,))})


@settings(max_examples=examples(120))
@given(npz_recipes(st.one_of(network_arrays(), trial_arrays())), st.sampled_from([(), ("m",), ("m", "nothere")]))
def test_load_arrays_reads_any_file_or_says_why_not(sandbox, fuzz_dir, recipe, required):
    path = write_recipe(fresh_path(fuzz_dir), recipe)
    check(sandbox, "load_arrays", run_load_arrays, dict(path=path, required=required))


@settings(max_examples=examples(150))
@given(npz_recipes(network_arrays()))
def test_load_network_gives_a_clear_error_or_a_finite_network(sandbox, fuzz_dir, recipe):
    path = write_recipe(fresh_path(fuzz_dir), recipe)
    check(sandbox, "load_network", run_load_network, dict(path=path))


@settings(max_examples=examples(150))
@given(npz_recipes(trial_arrays()), st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["rates", "counts", "spikes"]), "dt": reals(0.01, 0.1)}))
def test_load_npz_gives_a_clear_error_or_finite_trials(sandbox, fuzz_dir, recipe, kwargs):
    path = write_recipe(fresh_path(fuzz_dir), recipe)
    check(sandbox, "load_npz", run_load_npz, dict(path=path, kwargs=kwargs))


@st.composite
def trial_data_arguments(draw):
    K, T, N, D = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
    if draw(st.integers(0, 4)) == 0:  # a list of per-trial arrays of different lengths
        spikes = [draw(sometimes(arrays((draw(st.integers(1, T)), N), 0, 3, hostile=False),
                                 hostile_arrays((draw(st.integers(0, T)), N), 0, 3))) for _ in range(K)]
    else:
        spikes = draw(sometimes(arrays((K, T, N), 0, 3, hostile=False), hostile_arrays((K, T, N), 0, 3)))
    inputs = draw(st.one_of(st.none(), sometimes(arrays((K, T, D), hostile=False), hostile_arrays((K, T, D)))))
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(1, T), min_size=K, max_size=K),
                             hostile_arrays((K,), 0, T + 1), st.sampled_from([[0] * K, [T + 1] * K, [T], -1])))
    kwargs = draw(st.fixed_dictionaries({}, optional={"kind": st.sampled_from(["rates", "counts", "x"]),
                                                      "dt": reals(0.01, 0.1)}))
    return dict(spikes=spikes, inputs=inputs, lengths=lengths, kwargs=kwargs)


@settings(max_examples=examples(150))
@given(trial_data_arguments())
def test_as_trial_data_gives_a_clear_error_or_finite_trials(sandbox, params):
    check(sandbox, "as_trial_data", run_as_trial_data, params)


# --------------------------------------------------------------------------- NWB


@pytest.fixture(scope="module")
def nwb_files(fuzz_dir):
    """A valid NWB file (3 units, 4 trials), one without trials, and corrupted copies of the valid one."""
    pytest.importorskip("pynwb")
    from datetime import datetime, timezone

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynwb/hdmf chatter while writing; reading is what is tested
        from pynwb import NWBHDF5IO, NWBFile

        def write(path, with_trials):
            nwbfile = NWBFile(session_description="fuzz", identifier=os.path.basename(path),
                              session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
            rng = np.random.default_rng(0)
            for _ in range(3):
                nwbfile.add_unit(spike_times=np.sort(rng.uniform(0, 4, 40)))
            if with_trials:
                for k in range(4):
                    nwbfile.add_trial(start_time=float(k), stop_time=k + 0.8)
            with NWBHDF5IO(path, "w") as io:
                io.write(nwbfile)
            return path

        valid = write(os.path.join(fuzz_dir, "valid.nwb"), True)
        no_trials = write(os.path.join(fuzz_dir, "no_trials.nwb"), False)
    with open(valid, "rb") as stream:
        data = stream.read()
    files = {"valid": valid, "no trials": no_trials}
    for name, content in (("truncated", data[:len(data) // 2]), ("random bytes", os.urandom(1000)),
                          ("bit flips", data[:3000] + bytes(255 - b for b in data[3000:3400]) + data[3400:])):
        files[name] = os.path.join(fuzz_dir, name.replace(" ", "_") + ".nwb")
        with open(files[name], "wb") as stream:
            stream.write(content)
    files["missing"] = os.path.join(fuzz_dir, "missing.nwb")
    return files


@st.composite
def nwb_arguments(draw):
    which = draw(sometimes(st.just("valid"), st.sampled_from(["no trials", "truncated", "random bytes", "bit flips",
                                                               "missing"]), valid_weight=4))
    kwargs = {}
    if draw(st.integers(0, 2)) == 0:
        kwargs["units"] = draw(st.one_of(st.lists(st.integers(0, 2), max_size=3),
                                         st.sampled_from([[5], [-1], [0.5], "0", [[0]], [2**63], []])))
    if draw(st.integers(0, 2)) == 0:
        kwargs["trials"] = draw(st.one_of(st.lists(st.integers(0, 3), max_size=3),
                                          st.sampled_from([[4], [-1], [0.5], [], [2**40]])))
    if draw(st.integers(0, 3)) == 0:
        kwargs["bin_width"] = draw(reals(0.01, 0.2))
    if draw(st.integers(0, 3)) == 0:
        kwargs["smoothing"] = draw(st.one_of(st.none(), reals(0.01, 0.2)))
    if draw(st.integers(0, 4)) == 0:
        kwargs["truncate"] = draw(reals(1, 4))
    return which, kwargs


@settings(max_examples=examples(60))
@given(nwb_arguments())
def test_read_nwb_gives_a_clear_error_or_finite_rates(sandbox, nwb_files, case):
    which, kwargs = case
    check(sandbox, "read_nwb", run_read_nwb, dict(path=nwb_files[which], kwargs=kwargs))


# --------------------------------------------------------------------------- the reproducers of issue 12, always run


@pytest.mark.parametrize("kwargs", [{"units": [5]}, {"units": [-1]}, {"trials": [4]}, {"trials": [-1]},
                                    {"bin_width": 1e-9}], ids=str)
def test_read_nwb_issue_reproducers(sandbox, nwb_files, kwargs):
    """Issue item 7: units out of range; negative indices were silently accepted."""
    check(sandbox, "read_nwb", run_read_nwb, dict(path=nwb_files["valid"], kwargs=kwargs), timeout=30)


@pytest.mark.parametrize("kind", ["truncated", "npy renamed", "huge header", "random bytes", "bit flips", "empty",
                                  "directory", "object array"])
@pytest.mark.parametrize("loader", ["load_arrays", "load_network", "load_npz"])
def test_loader_issue_reproducers(sandbox, fuzz_dir, kind, loader):
    """Issue items 6 and 7: corrupted/truncated npz, an .npy renamed .npz, a header claiming 745 GiB."""
    rng = np.random.default_rng(0)
    arrays = {"m": rng.standard_normal((4, 2)), "n": rng.standard_normal((4, 2)), "tau": np.float64(1.0),
              "activation": np.array("tanh"), "spikes": rng.uniform(0, 1, (2, 3, 4)), "lengths": np.array([3, 2])}
    recipe = {"kind": kind, "arrays": arrays, "cut": 0.6, "flips": [(0.3, 0), (0.5, 255), (0.7, 17)], "seed": 0}
    path = write_recipe(fresh_path(fuzz_dir), recipe)
    function, params = {"load_arrays": (run_load_arrays, {"required": ()}), "load_network": (run_load_network, {}),
                        "load_npz": (run_load_npz, {"kwargs": {}})}[loader]
    check(sandbox, loader, function, dict(path=path, **params))
