"""Input checks shared by the public functions.

Each check raises ``ValueError`` or ``TypeError`` whose message says what was
expected, what was given and, where it helps, how to fix it.
"""

import numbers
import os

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_dtype(dtype, name="dtype"):
    """Return ``np.dtype(dtype)`` if it is float32 or float64, else raise."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(
            f"The {name!r} parameter must be float32 or float64. Got {dtype!r} instead."
        ) from exc
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(
            f"The {name!r} parameter must be float32 or float64. Got {resolved} instead."
        )
    return resolved


def check_array(value, name, *, ndim, dtype=None, shape=None, allow_none=False):
    """Convert ``value`` to an ndarray of ``ndim`` dimensions and finite values.

    ``shape`` may contain ``None`` for free axes; the other entries are
    required sizes, named in the error message.
    """
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required. Got None.")
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} must be convertible to an array: {exc}") from exc
    if array.dtype == object:
        raise ValueError(f"{name} must be a numeric array. Got an object array (ragged input?).")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name} must be numeric. Got dtype {array.dtype}.")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real. Got dtype {array.dtype}.")
    if array.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-dimensional{_shape_words(shape)}. "
            f"Got an array of shape {array.shape}."
        )
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, array.shape)):
            if want is not None and want != got:
                raise ValueError(
                    f"{name} must have shape {_shape_text(shape)}. Got shape {array.shape} "
                    f"(axis {axis} has size {got}, expected {want})."
                )
    if dtype is not None:
        array = np.asarray(array, dtype=dtype)
    check_finite(array, name)
    return array


def check_finite(array, name):
    """Raise if ``array`` holds NaN or inf, naming the first offending index.

    A float64 sum is NaN or inf whenever an element is, and needs no
    temporary array; only when it is not finite (or overflowed) is the
    elementwise search run.
    """
    if array.size == 0 or not np.issubdtype(array.dtype, np.floating):
        return
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sum(array, dtype=np.float64)
    if np.isfinite(total):
        return
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{name} must contain only finite values. Got {array[index]} at index {index} "
            f"({len(bad)} non-finite value(s) in all)."
        )


def _shape_text(shape):
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"


def _shape_words(shape):
    return "" if shape is None else f" with shape {_shape_text(shape)}"


def _finite_real(value):
    """Whether a real number is finite as a float (an int too large for a float, like 10**400, is not)."""
    try:
        return bool(np.isfinite(float(value)))
    except OverflowError:
        return False


def check_positive_scalar(value, name, *, owner=None):
    """A finite real number > 0."""
    where = f" of {owner}" if owner else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"The {name!r} parameter{where} must be a positive number. Got {value!r} instead.")
    if not _finite_real(value) or value <= 0:
        raise ValueError(f"The {name!r} parameter{where} must be a finite number > 0. Got {value!r} instead.")
    return float(value)


def check_nonnegative_scalar(value, name, *, owner=None):
    """A finite real number >= 0."""
    where = f" of {owner}" if owner else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"The {name!r} parameter{where} must be a number >= 0. Got {value!r} instead.")
    if not _finite_real(value) or value < 0:
        raise ValueError(f"The {name!r} parameter{where} must be a finite number >= 0. Got {value!r} instead.")
    return float(value)


def check_int(value, name, *, minimum=None, maximum=None, owner=None):
    """An integer in [minimum, maximum]."""
    where = f" of {owner}" if owner else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"The {name!r} parameter{where} must be an int. Got {value!r} instead.")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        lo = "-inf" if minimum is None else minimum
        hi = "inf" if maximum is None else maximum
        raise ValueError(f"The {name!r} parameter{where} must be an int in the range [{lo}, {hi}]. Got {value} instead.")
    return value


#: The most threads any ``n_threads`` parameter accepts: four per CPU, and at
#: least 64 (so that a script written on a workstation still runs on a
#: laptop). More threads than cores only adds contention, and far more
#: crashes: OpenMP runtimes fail to create tens of thousands of threads.
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))


def check_n_threads(n_threads, owner=None, *, allow_none=False, allow_auto=False):
    """A thread count: a positive int (Python or NumPy, not bool) <= :data:`MAX_THREADS`.

    Every public ``n_threads`` parameter goes through this check, before any
    work, so the kernels may assume a count they can run. With
    ``allow_none``, None (leave the thread pools as they are) passes through;
    with ``allow_auto``, "auto" does (resolved per call by
    ``connector_sim._threads.resolve_n_threads``).
    """
    where = f" of {owner}" if owner else ""
    if n_threads is None and allow_none:
        return None
    if allow_auto and isinstance(n_threads, str) and n_threads == "auto":
        return "auto"
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, numbers.Integral):
        accepted = "an int or None" if allow_none else "an int"
        accepted = f"'auto' or {accepted}" if allow_auto else accepted
        raise TypeError(
            f"The 'n_threads' parameter{where} must be {accepted} in the range [1, {MAX_THREADS}]. "
            f"Got {n_threads!r} of type {type(n_threads).__name__} instead."
        )
    value = int(n_threads)
    if not 1 <= value <= MAX_THREADS:
        raise ValueError(
            f"The 'n_threads' parameter{where} must be an int in the range [1, {MAX_THREADS}] "
            f"(64, or 4 per CPU on machines with more than 16 CPUs; this one has {os.cpu_count()}). "
            f"Got {value} instead. "
            "Use n_threads=1 (the default), or up to the number of CPU cores."
        )
    return value


def check_seed(seed, owner):
    """A 64-bit seed for the counter-based generators: ``seed`` as uint64, or fresh entropy for None."""
    if seed is None:
        return int(np.random.SeedSequence().entropy) & 0xFFFFFFFFFFFFFFFF
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"The 'seed' parameter of {owner} must be an int or None. Got {seed!r} instead.")
    return int(seed) & 0xFFFFFFFFFFFFFFFF


def check_random_state(random_state):
    """Turn None, an int or a Generator into a ``numpy.random.Generator``."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool) and random_state < 0:
        raise ValueError(f"random_state must be None, an int >= 0 or a numpy.random.Generator. Got {random_state!r} "
                         "instead.")
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.SeedSequence)):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise TypeError(
        f"random_state must be None, an int or a numpy.random.Generator. Got {random_state!r} instead."
    )
