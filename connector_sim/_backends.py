"""Which compiled modules were built, and which simulation backends exist.

The compiled extensions are optional at install time; this module imports
them lazily and reports what is missing.
"""

import importlib
import importlib.util
import warnings

#: Compiled extension modules (``connector_sim._ext.<stem>``) and what they provide.
EXTENSIONS = {
    "_simulate_dense_cpp": "the 'cpp' simulation backend (C++/pybind11)",
    "_counter_rng": "the Cython counter-based noise generator",
    "_sparse_mask": "the Cython assembly of stored sparse masks (CSR and tiles)",
    "_simulate_sparse_cpp": "the 'cpp' backend of sparse low-rank networks (C++/pybind11)",
    "_flow_field_cpp": "the 'cpp' backend of sampled networks' flow fields (C++/pybind11)",
    "_cnf_train_cpp": "the fused float32 training step of the flow-matching CNF (C++/pybind11)",
}

#: Backends in order of preference for ``backend="auto"`` (fastest first;
#: measured in benchmarks/compare.py).
BACKEND_PREFERENCE = ("cpp", "numba", "numpy")


#: What ``backend="auto"`` runs, per case: the fastest backend measured
#: (``benchmarks/compare_public_paths.py``, sparse block, and
#: ``benchmarks/compare_sparse.py``; AMD EPYC with AVX-512, one thread, C =
#: 200 connections per row, private noise on and off, float32 and float64;
#: CPU ms per step at N = 1e5 / 1e6)::
#:
#:   network                           values gathered   auto    cpp          numba
#:                                     per connection
#:   dense (any path)                  -                 cpp     fastest      slower (compare_simulate_dense.py)
#:   sparse, fixed C, stored mask      B R = 1           numba   7.7 / 117    7.7 / 98
#:   sparse, fixed C, implicit mask    B R = 1           numba   13.3 / 148   9.2 / 108
#:   sparse, fixed C, either mask      B R >= 2          cpp     13.3-19.6    20.7-23.8 (N = 1e5)
#:   sparse, Bernoulli mask            any               cpp     (rows of varying length: not measured apart)
#:   user (numba) activation           any               numba   -            the only one
#:
#: (B trials, rank R.) With one value per connection the numba kernel's
#: scalar gathers and hash match or beat the C++ tiles; with more, the C++
#: kernel's per-tile vector sums win. "auto" falls back down
#: :data:`BACKEND_PREFERENCE` when the chosen one is not built.
AUTO_SPARSE_NUMBA_MAX_GATHERED = 1


def auto_backend(available, *, sparse_kind=None, gathered=1):
    """The ``backend="auto"`` choice of the table above, among ``available`` (fastest first)."""
    if sparse_kind == "fixed" and gathered <= AUTO_SPARSE_NUMBA_MAX_GATHERED and "numba" in available:
        return "numba"
    return available[0]


def extension_built(stem):
    """True if ``connector_sim._ext.<stem>`` can be imported."""
    return importlib.util.find_spec(f"connector_sim._ext.{stem}") is not None


def load_extension(stem):
    return importlib.import_module(f"connector_sim._ext.{stem}")


def missing_extensions():
    """Names and roles of the compiled modules that were not built."""
    return {stem: role for stem, role in EXTENSIONS.items() if not extension_built(stem)}


def _numba_importable():
    return importlib.util.find_spec("numba") is not None


def available_backends():
    """The simulation backends usable here, fastest first.

    Returns
    -------
    list of str
        A subset of ``["cpp", "numba", "numpy"]``; "numpy" (the reference) is
        always there.

    Examples
    --------
    >>> "numpy" in available_backends()  # the reference is always available
    True
    """
    built = {
        "cpp": extension_built("_simulate_dense_cpp"),
        "numba": _numba_importable(),
        "numpy": True,
    }
    return [name for name in BACKEND_PREFERENCE if built[name]]


def warn_missing_extensions():
    missing = missing_extensions()
    if missing:
        listed = "; ".join(f"{stem} ({role})" for stem, role in missing.items())
        warnings.warn(
            f"connector_sim was installed without some compiled modules: {listed}. "
            "The numba and NumPy backends still work. To build them, install a C++ compiler "
            "and reinstall (pip install -e .), with CONNECTOR_SIM_STRICT_BUILD=1 to see the error.",
            RuntimeWarning,
            stacklevel=3,
        )


# --- instruction-set clones of the C++ kernels ---------------------------------------------------

#: The C++ extension modules; each carries AVX-512, AVX2 and baseline clones of its kernels.
CPP_EXTENSIONS = ("_simulate_dense_cpp", "_simulate_sparse_cpp", "_flow_field_cpp", "_cnf_train_cpp")

#: Clone names, widest first.
KERNEL_ISAS = ("avx512", "avx2", "default")


def _built_cpp_modules():
    return {stem: load_extension(stem) for stem in CPP_EXTENSIONS if extension_built(stem)}


def kernel_isa():
    """Which clone of the C++ kernels runs, per extension module.

    Every C++ kernel is compiled three times: "avx512" (x86-64-v4: AVX-512,
    16 float / 8 double lanes in the vectorised loops), "avx2" (x86-64-v3:
    AVX2 + FMA) and "default" (baseline x86-64). A module runs the widest
    clone the CPU supports unless the environment variable
    ``CONNECTOR_SIM_ISA`` (read when the module is first imported) or
    :func:`set_kernel_isa` chose a narrower one. Results are identical across
    clones except where the default clone cannot fuse multiply-adds.

    Returns
    -------
    dict
        ``{module stem: clone name}`` for the C++ modules built here (empty
        when none is).

    Examples
    --------
    >>> set(kernel_isa().values()) <= {"avx512", "avx2", "default"}
    True
    """
    return {stem: module.kernel_isa() for stem, module in _built_cpp_modules().items()}


def cpu_isa():
    """The widest clone of the C++ kernels this CPU can run ("avx512", "avx2" or "default"), or None if none is built."""
    modules = _built_cpp_modules()
    return next(iter(modules.values())).cpu_isa() if modules else None


def set_kernel_isa(isa):
    """Make every C++ kernel run its ``isa`` clone ("avx512", "avx2" or "default") from now on.

    For tests and benchmarks of the narrower clones on a wide machine; the
    widest supported clone is the default. Returns the previous choice (as
    :func:`kernel_isa` gives it).
    """
    if isa not in KERNEL_ISAS:
        raise ValueError(f"The 'isa' parameter of set_kernel_isa must be one of {list(KERNEL_ISAS)}. Got {isa!r} instead.")
    widest = cpu_isa()
    if widest is not None and KERNEL_ISAS.index(isa) < KERNEL_ISAS.index(widest):
        raise ValueError(f"The 'isa' parameter of set_kernel_isa must be a clone this CPU supports "
                         f"(at most {widest!r}). Got {isa!r} instead.")
    previous = kernel_isa()
    for module in _built_cpp_modules().values():
        module.set_kernel_isa(isa)
    return previous
