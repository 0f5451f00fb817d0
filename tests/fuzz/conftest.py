"""Fixtures of the property-based suite: the sandbox process and the per-entry-point tally.

At the end of the session the tally (examples run, clear errors, warnings,
finite results, failures per entry point) is printed; with
``CONNECTOR_SIM_FUZZ_REPORT=path.json`` it is also written as JSON.
"""

import json
import os

import pytest

pytest.importorskip("hypothesis")

import fuzzlib  # noqa: E402 - after the importorskip


@pytest.fixture(scope="session")
def sandbox():
    box = fuzzlib.Sandbox()
    yield box
    box.close()


@pytest.fixture(scope="session")
def fuzz_dir(tmp_path_factory):
    """A folder for the files the examples write and read."""
    return tmp_path_factory.mktemp("fuzz")


def pytest_terminal_summary(terminalreporter):
    if not fuzzlib.TALLY.counts:
        return
    from hypothesis import settings

    profile = settings.get_current_profile_name()
    terminalreporter.write_sep("=", f"connector_sim fuzz tally (hypothesis profile {profile!r})")
    terminalreporter.write_line(fuzzlib.TALLY.table())
    path = os.environ.get("CONNECTOR_SIM_FUZZ_REPORT")
    if path:
        with open(path, "w") as stream:
            json.dump({"profile": profile, "entry_points": fuzzlib.TALLY.counts}, stream, indent=1, sort_keys=True)
        terminalreporter.write_line(f"fuzz tally written to {path}")
