"""Shared input checks (connector_sim._validation)."""

import numpy as np
import pytest

from connector_sim import Gaussian, find_fixed_points
from connector_sim._validation import check_random_state


@pytest.mark.parametrize("seed", [-1, -(2**70), np.int64(-5)])
def test_a_negative_random_state_is_a_clear_error_from_the_package(seed):
    # numpy refuses negative seeds with "expected non-negative integer" from inside its bit generator;
    # the package says which parameter and what it accepts.
    with pytest.raises(ValueError, match="random_state must be None, an int >= 0"):
        check_random_state(seed)
    with pytest.raises(ValueError, match="random_state"):
        Gaussian(np.zeros(2), np.eye(2), rank=1).sample(3, random_state=seed)
    with pytest.raises(ValueError, match="random_state"):
        find_fixed_points(lambda kappa: -kappa, [[-1.0, 1.0]], n_starts=2, random_state=seed)


@pytest.mark.parametrize("seed", [0, 2**70, np.uint64(2**63)])
def test_large_non_negative_random_states_seed_a_generator(seed):
    first, second = check_random_state(seed), check_random_state(seed)
    assert first.integers(2**32) == second.integers(2**32)
