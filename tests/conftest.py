import os

import pytest

from connector_sim import available_backends
from connector_sim._backends import missing_extensions

#: CI sets this: a backend that was not built fails its tests instead of skipping them.
REQUIRE_BACKENDS = os.environ.get("CONNECTOR_SIM_STRICT_BUILD", "") not in ("", "0")


def pytest_report_header(config):
    missing = missing_extensions()
    lines = [f"connector_sim backends: {', '.join(available_backends())}"]
    if missing:
        lines.append(f"connector_sim compiled modules NOT built: {', '.join(missing)}")
    return lines


def require_backend(name):
    """Skip (or, under CONNECTOR_SIM_STRICT_BUILD, fail) when a backend is missing."""
    if name not in available_backends():
        message = f"backend {name!r} is not built here (available: {available_backends()})"
        if REQUIRE_BACKENDS:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(params=["numba", "cpp"])
def fast_backend(request):
    """Each non-reference backend, to be compared with the NumPy reference."""
    require_backend(request.param)
    return request.param


@pytest.fixture(params=["numpy", "numba", "cpp"])
def backend(request):
    """Every backend, the reference included."""
    require_backend(request.param)
    return request.param
