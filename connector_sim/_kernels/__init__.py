"""NumPy references, numba kernels and the wrappers of the compiled ("cpp") kernels."""

import numpy as np


def aligned(*arrays):
    """The arrays, C-contiguous and aligned: a copy of any that is not, the others as they are.

    The compiled kernels read raw pointers and refuse unaligned or strided
    arrays; NumPy and numba accept them (and copy where they must). The cpp
    wrappers pass every array they only read through this, so a view into a
    byte buffer or a strided slice works on every backend alike. Arrays the
    kernels write are allocated by the package (always aligned) and must not
    go through it.
    """
    out = tuple(a if a is None or (a.flags.c_contiguous and a.flags.aligned)
                else np.require(a, requirements=("C", "A")) for a in arrays)
    return out if len(out) != 1 else out[0]


def read_only(*arrays):
    """Read-only views of the arrays (the arrays themselves are not changed).

    numba compiles one specialization per combination of array types, and a
    read-only array is a type of its own. The networks' arrays are read-only;
    wrappers that pass arrays of their own alongside them (group copies,
    empty placeholders) make those read-only too, so each kernel is compiled
    once rather than once per mix.
    """
    out = []
    for array in arrays:
        view = array.view()
        view.flags.writeable = False
        out.append(view)
    return tuple(out) if len(out) != 1 else out[0]
