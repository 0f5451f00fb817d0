"""What the tests need to know about the built backends (imported by the tests and by conftest.py).

A module of its own, not ``conftest``: tests/fuzz has a conftest.py too, and a
``from conftest import ...`` would find whichever of the two was imported last.
"""

import os

import pytest

from connector_sim import available_backends

#: CI sets this: a backend that was not built fails its tests instead of skipping them.
REQUIRE_BACKENDS = os.environ.get("CONNECTOR_SIM_STRICT_BUILD", "") not in ("", "0")


def require_backend(name):
    """Skip (or, under CONNECTOR_SIM_STRICT_BUILD, fail) when a backend is missing."""
    if name not in available_backends():
        message = f"backend {name!r} is not built here (available: {available_backends()})"
        if REQUIRE_BACKENDS:
            pytest.fail(message)
        pytest.skip(message)
