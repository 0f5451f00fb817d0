"""The fuzz harness itself: the sandbox survives crashes and hangs, and the property tells outcomes apart."""

import os
import signal
import time
import warnings

import numpy as np
import pytest

import fuzzlib
from fuzzlib import CLEAR_ERROR, FINITE, WARNED, ArraySpec, Sandbox, evaluate


def segfault():
    os.kill(os.getpid(), signal.SIGSEGV)


def sleep(seconds):
    time.sleep(seconds)


def deep_numpy_error():
    return np.ones(3).reshape(2)


def package_error():
    from connector_sim._validation import check_int

    return check_int("x", "n_steps")


def nan_result():
    return {"kappa": np.array([0.0, np.nan])}


def numpy_warning():
    with np.errstate(divide="warn"):
        return np.ones(1) / np.zeros(1)


def package_warning():
    from connector_sim._files import json_safe  # noqa: F401 - any connector_sim frame will do

    warnings.warn("diverged", RuntimeWarning, stacklevel=1)
    return np.array([np.inf])


def other_exception():
    return {}["missing"]


def array_of(spec):
    return spec


@pytest.fixture(scope="module")
def own_sandbox():
    box = Sandbox(timeout=2)
    yield box
    box.close()


def test_a_segfault_or_a_hang_fails_the_example_and_the_sandbox_restarts(own_sandbox):
    assert own_sandbox.run(segfault, {}).kind == "crash"
    assert own_sandbox.run(sleep, {"seconds": 30}).kind == "hang"
    assert own_sandbox.run(package_error, {}).kind == CLEAR_ERROR  # a fresh worker answers again


@pytest.mark.parametrize("function, kind", [
    (deep_numpy_error, "raised deep in a library"), (package_error, CLEAR_ERROR),
    (nan_result, "silent non-finite result"), (numpy_warning, "library warning"),
    (package_warning, WARNED), (other_exception, "other exception")])
def test_the_property_tells_outcomes_apart(function, kind):
    assert evaluate(function, {}).kind == kind


@pytest.mark.parametrize("layout", ["C", "F", "strided", "reversed", "unaligned", "readonly", "broadcast"])
@pytest.mark.parametrize("dtype", ["float64", ">f8", "float32", "int32", "complex128"])
def test_array_recipes_build_what_they_say(layout, dtype):
    values = np.arange(6.0).reshape(2, 3)
    array = ArraySpec(values, dtype, layout).build()
    assert array.dtype == np.dtype(dtype) and array.shape == (2, 3)
    if layout != "broadcast":
        np.testing.assert_array_equal(array, values.astype(dtype))
    flags = array.flags
    assert {"F": flags.f_contiguous and not flags.c_contiguous, "strided": not flags.c_contiguous,
            "reversed": array.strides[0] < 0, "unaligned": not flags.aligned or array.dtype.itemsize == 1,
            "readonly": not flags.writeable, "broadcast": 0 in array.strides, "C": flags.c_contiguous}[layout]


def test_the_tally_counts_outcomes_per_entry_point():
    tally = fuzzlib.Tally()
    for kind in (CLEAR_ERROR, CLEAR_ERROR, FINITE, "crash"):
        tally.add("f", fuzzlib.Outcome(kind))
    assert tally.counts["f"] == {"examples": 4, CLEAR_ERROR: 2, WARNED: 0, FINITE: 1, "failed": 1}
    assert "f " in tally.table() and "total" in tally.table()
