"""Estimate-and-refuse: check an allocation that scales with user input before making it.

Every allocation whose size follows from user input (numbers of neurons,
trials, steps, samples, grid points, the shapes stored in a file) goes
through :func:`check_allocation` first. A request larger than the memory
available raises :class:`TooLargeError` (a ``MemoryError`` and a
``ValueError``, so the command line reports it as bad input, exit status 2)
saying how much was asked, how much is available and what to change,
instead of a ``MemoryError`` traceback from inside NumPy or a visit from the
out-of-memory killer.

The memory available is, in this order:

1. ``connector_sim._memory.max_bytes`` when it is set (an int, in bytes);
2. the environment variable ``CONNECTOR_SIM_MAX_BYTES`` (bytes, e.g.
   ``8e9``, or with a suffix ``K``, ``M``, ``G``, ``T`` for powers of 1024,
   e.g. ``16G``, ``16GiB``, ``512M``);
3. ``MemAvailable`` of ``/proc/meminfo`` (Linux);
4. the free physical pages (``os.sysconf``) elsewhere;
5. 8 GiB when none of these can be read.

Set the override to refuse earlier (a shared machine) or to allow a request
the estimate would refuse (swap you mean to use).
"""

import math
import numbers
import os
import re

import numpy as np

#: The environment variable that overrides the memory available (bytes, or with a K/M/G/T suffix).
ENV_VAR = "CONNECTOR_SIM_MAX_BYTES"

#: Module-level override of the memory available, in bytes (None: the environment, then the system).
max_bytes = None

_FALLBACK_BYTES = 8 << 30
_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class TooLargeError(MemoryError, ValueError):
    """An allocation was refused before it was made: it would not fit in the memory available.

    A subclass of both ``MemoryError`` and ``ValueError``: the request is bad
    input for this machine. Attributes ``requested`` and ``available`` are in bytes.

    Examples
    --------
    >>> import numpy as np
    >>> from connector_sim import Gaussian
    >>> try:
    ...     Gaussian([0.0, 0.0], np.eye(2), rank=1).sample(10**12)  # 32 TB of loadings
    ... except TooLargeError as error:
    ...     print(isinstance(error, ValueError), error.requested > error.available)
    True True
    """

    def __init__(self, message, requested=None, available=None):
        super().__init__(message)
        self.requested = requested
        self.available = available


def _parse_bytes(text):
    match = re.fullmatch(r"\s*([0-9.]+(?:[eE][+-]?[0-9]+)?)\s*(?:([KMGTkmgt])(?:i?[Bb])?)?\s*", text)
    value = math.nan
    if match:
        try:
            value = float(match.group(1)) * (_SUFFIXES[match.group(2).upper()] if match.group(2) else 1)
        except ValueError:
            pass
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"The environment variable {ENV_VAR} must be a number of bytes >= 0 (e.g. 8e9 or 16G). "
            f"Got {text!r}. Unset it to use the memory the system reports."
        )
    return int(value)


def available_memory():
    """The bytes an allocation may use now (see the module docstring for the order of sources)."""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Real) or not max_bytes >= 0:
            raise ValueError(
                f"connector_sim._memory.max_bytes must be None or a number of bytes >= 0. Got {max_bytes!r}."
            )
        return int(max_bytes)
    override = os.environ.get(ENV_VAR)
    if override:
        return _parse_bytes(override)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return _FALLBACK_BYTES


def format_bytes(n_bytes):
    """'1.5 GB', '745 TB', '12 bytes': decimal units, three significant digits."""
    if isinstance(n_bytes, numbers.Integral) and n_bytes >= 10**300:
        return f"about 10^{len(str(int(n_bytes))) - 1} bytes"
    n_bytes = float(n_bytes)
    for unit, scale in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes:.0f} bytes"


def check_allocation(n_bytes, what, fix, *, available=None, limit_text=None):
    """Raise :class:`TooLargeError` if ``n_bytes`` would not fit, before anything is allocated.

    Parameters
    ----------
    n_bytes : int or float
        The estimated size of the allocation (all arrays it makes at once).
        Compute it with Python ints or floats, never fixed-width NumPy
        integers, which overflow silently.
    what : str
        What would be allocated, e.g. "Sampling 10^12 neurons".
    fix : str
        What to change, e.g. "Sample fewer neurons, or use dtype=float32".
    available : int, optional
        The limit in bytes; default :func:`available_memory`.
    limit_text : str, optional
        How the limit was chosen, e.g. "half the available memory"; default
        "the memory available".

    Returns
    -------
    int
        ``n_bytes`` (rounded up), for use in messages.
    """
    if isinstance(n_bytes, numbers.Integral):
        n_bytes = int(n_bytes)  # exact, however large (a float would overflow past 1e308)
    else:
        n_bytes = float(n_bytes)
        n_bytes = math.ceil(n_bytes) if math.isfinite(n_bytes) else math.inf
    limit = available_memory() if available is None else available
    if n_bytes > limit:
        how = limit_text or "the memory available"
        override = "" if available is not None else (
            f" (override the estimate with the environment variable {ENV_VAR} or connector_sim._memory.max_bytes)")
        raise TooLargeError(
            f"{what} needs {format_bytes(n_bytes)}, more than {how} ({format_bytes(limit)}){override}. {fix}",
            requested=n_bytes, available=limit,
        )
    return n_bytes


#: Alignment of the arrays the compiled kernels stream (bytes): one cache line, one 512-bit vector.
KERNEL_ALIGNMENT = 64


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array whose first element starts on a 64-byte boundary.

    NumPy only promises 16 bytes: a large array starts 16 bytes past a
    cache line, so every 64-byte vector load of a kernel streaming it spans
    two lines. On a Zen 5 core that halves the rate of such loads (2 per
    cycle aligned, 1 split); the batched latent pass measured 12.5-13.1
    against 11.9-12.0 cycles per 16 neuron-trials. Rows after the first are
    aligned too when the row length is a multiple of 64 bytes.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in (shape if isinstance(shape, tuple) else (shape,)))
    n_bytes = math.prod(shape) * dtype.itemsize
    buffer = np.empty(n_bytes + KERNEL_ALIGNMENT, dtype=np.uint8)
    offset = -buffer.ctypes.data % KERNEL_ALIGNMENT
    return buffer[offset:offset + n_bytes].view(dtype).reshape(shape)


def aligned_copy(array, dtype=None):
    """A C-contiguous copy of ``array`` (in ``dtype``) that starts on a 64-byte boundary (see :func:`aligned_empty`)."""
    array = np.asarray(array)
    out = aligned_empty(array.shape, array.dtype if dtype is None else dtype)
    np.copyto(out, array, casting="same_kind")
    return out
