import os
import sys

import pytest

from connector_sim import available_backends
from connector_sim._backends import missing_extensions

# the tests' helper modules (backend_support) are importable from every test folder
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from backend_support import REQUIRE_BACKENDS, require_backend  # noqa: E402, F401


def pytest_report_header(config):
    missing = missing_extensions()
    lines = [f"connector_sim backends: {', '.join(available_backends())}"]
    if missing:
        lines.append(f"connector_sim compiled modules NOT built: {', '.join(missing)}")
    return lines


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


# Hypothesis profiles of the property-based suite (tests/fuzz). The default is
# reproducible (derandomized, no example database) and sized to run in about
# two minutes; `pytest --hypothesis-profile=thorough` runs ten times as many
# examples with fresh randomness.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the fuzz suite skips itself without hypothesis
    pass
else:
    _FUZZ_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    settings.register_profile("connector_sim", max_examples=100, derandomize=True, database=None,
                              deadline=None, suppress_health_check=_FUZZ_HEALTH, print_blob=True)
    settings.register_profile("thorough", max_examples=1000, derandomize=False, database=None,
                              deadline=None, suppress_health_check=_FUZZ_HEALTH, print_blob=True)
    settings.load_profile("connector_sim")
