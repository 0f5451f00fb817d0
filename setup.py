"""Build the compiled extensions of connector_sim.

Extensions (one module ``connector_sim._ext.<stem>`` per file under ``src/``):

- pybind11 C++ kernels: ``src/pybind/*.cpp`` over the headers in ``cpp/include``;
- Cython modules: ``src/cython/*.pyx``.

They are optional: without a compiler the package installs with its numba and
NumPy backends, and ``import connector_sim`` warns, naming what was not built.
Set ``CONNECTOR_SIM_STRICT_BUILD=1`` to make a failed extension an error (CI
does). The C++ kernels carry AVX-512, AVX2 and baseline clones picked at run
time (cpp/include/connector_sim/isa.hpp), so no ``-march`` flag is needed.
``CONNECTOR_SIM_NATIVE=1`` adds ``-mtune=native`` to the C++ modules and
``-march=native`` to the Cython ones (a wheel built so runs only on CPUs like
the build machine's). Not ``-march=native`` for the C++ modules: there the
narrower clones could no longer inline the standard-library helpers (std::min,
std::fabs, std::fill, compiled for the wider target of the whole file), and
the AVX2 clone's tanh loop ran scalar with two calls per neuron, 3.7x slower
(the measurements are in cpp/include/connector_sim/isa.hpp).
"""

import glob
import os
import sys

from setuptools import Extension, setup

STRICT = os.environ.get("CONNECTOR_SIM_STRICT_BUILD", "") not in ("", "0")
NATIVE = os.environ.get("CONNECTOR_SIM_NATIVE", "") not in ("", "0")
OPTIONAL = not STRICT

CPP_HEADERS = sorted(glob.glob("cpp/include/connector_sim/*.hpp"))
PYBIND_HEADERS = sorted(glob.glob("src/pybind/*.hpp"))  # array_checks.hpp, shared by the bindings
COMPILE_ARGS = ["-O3", "-fopenmp", "-fno-math-errno"] + (["-mtune=native"] if NATIVE else [])
LINK_ARGS = ["-fopenmp"]


def pybind_extensions():
    try:
        from pybind11.setup_helpers import Pybind11Extension
    except ImportError:
        if STRICT:
            raise
        print("connector_sim: pybind11 is not installed; the C++ backend will not be built.", file=sys.stderr)
        return []
    extensions = []
    for source in sorted(glob.glob("src/pybind/*.cpp")):
        stem = os.path.splitext(os.path.basename(source))[0]
        extension = Pybind11Extension(
            f"connector_sim._ext.{stem}",
            [source],
            include_dirs=["cpp/include"],
            depends=CPP_HEADERS + PYBIND_HEADERS,
            # An explicit standard: pybind11's automatic probe raises when
            # there is no compiler, before ``optional`` can apply.
            cxx_std=17,
            extra_compile_args=COMPILE_ARGS,
            extra_link_args=LINK_ARGS,
        )
        extension.optional = OPTIONAL
        extensions.append(extension)
    return extensions


def cython_extensions():
    sources = sorted(glob.glob("src/cython/*.pyx"))
    try:
        from Cython.Build import cythonize
    except ImportError:
        if STRICT:
            raise
        print("connector_sim: Cython is not installed; the Cython modules will not be built.", file=sys.stderr)
        return []
    extensions = [
        Extension(
            f"connector_sim._ext.{os.path.splitext(os.path.basename(source))[0]}",
            [source],
            include_dirs=["cpp/include"],
            depends=CPP_HEADERS,
            extra_compile_args=["-O3", "-fno-math-errno"] + (["-march=native"] if NATIVE else []),
        )
        for source in sources
    ]
    extensions = cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})
    # cythonize() drops ``optional``: set it again, or one failed compile aborts the install.
    for extension in extensions:
        extension.optional = OPTIONAL
    return extensions


setup(ext_modules=pybind_extensions() + cython_extensions())
