"""The Examples sections of the public docstrings run and print what they say.

Every public function and class of the modules below (their ``__all__``, or
their public names defined there when a module has none) is collected with
:class:`doctest.DocTestFinder` (methods included) and each docstring with
examples becomes one test. Examples that need torch are skipped when torch is
not installed. Each docstring runs in a copy of its module's namespace, as
``doctest.testmod`` does. The examples use tiny sizes: the whole file runs in seconds.
"""

import doctest
import importlib
import importlib.util
import inspect
import sys

import pytest

MODULES = [
    "connector_sim",
    "connector_sim.inference",
    "connector_sim.ddm",
    "connector_sim.interop",
    "connector_sim.data",
    "connector_sim.sparse",
    "connector_sim.spectra",
    "connector_sim.dmf",
    "connector_sim.latents",
    "connector_sim.mean_field",
    "connector_sim.cell_types",
    "connector_sim.perturbations",
    "connector_sim.parallel",
    "connector_sim.fixed_points",
    "connector_sim.plotting",
]

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_PYNWB = importlib.util.find_spec("pynwb") is not None
# Docstrings whose examples use an optional dependency (by a substring of their name).
NEEDS_TORCH = (".inference.", "lint_network", "load_torch_tensors")
NEEDS_PYNWB = ("nwb",)


def _public_objects(module_name):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name, value in vars(module).items()
                 if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
                 and getattr(value, "__module__", None) == module_name]
    for name in names:
        try:
            value = getattr(module, name)
        except ImportError:  # a lazily imported torch module without torch: its examples are skipped
            if HAVE_TORCH:
                raise
            continue
        if inspect.isfunction(value) or inspect.isclass(value):
            yield value


def _collect():
    finder = doctest.DocTestFinder(recurse=True, exclude_empty=True)
    tests, seen = {}, set()
    for module_name in MODULES:
        for obj in _public_objects(module_name):
            key = (obj.__module__, obj.__qualname__)
            if key in seen:
                continue
            seen.add(key)
            module = importlib.import_module(obj.__module__)
            for test in finder.find(obj, name=f"{obj.__module__}.{obj.__qualname__}", module=module,
                                    globs=dict(vars(module))):
                if test.examples and test.name not in tests:
                    tests[test.name] = test
    return [tests[name] for name in sorted(tests)]


DOCTESTS = _collect()


def _needs_torch(test):
    return any("torch" in example.source for example in test.examples) or any(key in test.name for key in NEEDS_TORCH)


def test_examples_were_found():
    # Guards against a finder that silently collects nothing.
    assert len(DOCTESTS) >= 5


@pytest.mark.parametrize("test", DOCTESTS, ids=[test.name for test in DOCTESTS])
def test_docstring_examples(test):
    if _needs_torch(test) and not HAVE_TORCH:
        pytest.skip("this example needs torch")
    if any(key in test.name for key in NEEDS_PYNWB) and not HAVE_PYNWB:
        pytest.skip("this example needs pynwb")
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    output = []
    try:
        runner.run(test, out=output.append)
    finally:
        if "matplotlib.pyplot" in sys.modules:  # the plotting examples leave their figures open
            sys.modules["matplotlib.pyplot"].close("all")
    assert runner.failures == 0, "".join(output)
