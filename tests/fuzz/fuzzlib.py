"""The machinery of the property-based (hypothesis) suite: hostile inputs, a sandbox, the property, a tally.

The property every entry point must satisfy on any input:

- a clear error: ``ValueError`` or ``TypeError`` (``FileNotFoundError`` for
  a missing file) with a non-empty message, raised from connector_sim's own
  code (the innermost frame of the traceback is in the package, not deep in
  numpy, numba, torch or scipy); or
- a documented warning (a warning class defined by connector_sim, or one
  issued from its code, e.g. the non-finite-state warning of diverging
  dynamics); or
- a finite result (every float in what it returns is finite).

Never a crash (segfault, abort), a hang, another exception type
(ZeroDivisionError, IndexError, MemoryError, zipfile.BadZipFile ...), an
error raised deep inside a library, a library's own warning ("overflow
encountered in ..."), or a silent NaN/inf in the result.

Inputs are described by picklable *recipes* (:class:`ArraySpec`, plain
values) that the sandbox turns into arrays, so that an unaligned,
read-only or big-endian array reaches the code exactly as generated.
Every call runs in a :class:`Sandbox` worker process: a segfault or a hang
there fails the example (and the worker is restarted) instead of killing
or freezing pytest; the worker's address space is capped so that a
runaway allocation raises there instead of calling the OOM killer.
"""

import dataclasses
import io
import json
import multiprocessing
import os
import sys
import threading
import traceback
import warnings

import numpy as np
from hypothesis import strategies as st

#: Seconds one call may run in the sandbox before it counts as a hang.
#: Generous: a loaded 2-core machine compiling a numba kernel for a new signature takes tens of seconds.
CALL_TIMEOUT = float(os.environ.get("CONNECTOR_SIM_FUZZ_TIMEOUT", "60"))
#: Address-space cap of the sandbox (bytes): far more than any legitimate example needs.
SANDBOX_ADDRESS_SPACE = 24 << 30

CLEAR_ERROR, WARNED, FINITE = "clear error", "warned", "finite"
PASSING = (CLEAR_ERROR, WARNED, FINITE)


# --------------------------------------------------------------------------- recipes of hostile arrays


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """A recipe for an array: float64 ``values``, then a dtype and a memory layout.

    layout: "C", "F" (Fortran), "strided" (every other element of a larger
    array), "reversed" (negative strides), "unaligned" (data at an odd
    address), "readonly", "broadcast" (zero strides), "list" (nested lists),
    "ragged" (nested lists of unequal lengths).
    """

    values: np.ndarray
    dtype: str = "float64"
    layout: str = "C"

    def build(self):
        values = np.asarray(self.values, dtype=np.float64)
        if self.layout == "ragged":
            rows = values.reshape(len(values), -1).tolist() if values.ndim and values.size else [[1.0]]
            rows.append(rows[-1][:-1] if rows and rows[-1] else [1.0, 2.0])
            return rows
        with np.errstate(all="ignore"):
            if self.dtype == "object":
                array = values.astype(object)
            elif self.dtype == "str":
                array = values.astype(str)
            elif self.dtype.startswith(("int", "uint", ">i", "<i", "bool")):
                array = np.nan_to_num(values, nan=0.0, posinf=1e9, neginf=-1e9).clip(-1e9, 1e9).astype(self.dtype)
            else:
                array = values.astype(self.dtype)
        array = np.asarray(array)  # (clip and astype give scalars for 0-d input)
        layout = self.layout
        if layout == "list":
            return array.tolist()
        if layout == "F":
            return np.asfortranarray(array)
        if layout == "strided" and array.ndim:
            wide = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), array.dtype)
            wide[..., ::2] = array
            return wide[..., ::2]
        if layout == "reversed" and array.ndim:
            flipped = np.ascontiguousarray(array[::-1])
            return flipped[::-1]
        if layout == "unaligned" and array.dtype.itemsize > 1 and array.dtype != object:
            buffer = np.zeros(array.nbytes + 1, np.uint8)
            out = buffer[1:].view(array.dtype).reshape(array.shape)
            out[...] = array
            return out
        if layout == "readonly":
            array = array.copy()
            array.flags.writeable = False
            return array
        if layout == "broadcast" and array.ndim and array.size:
            return np.broadcast_to(array.reshape(-1)[:1].reshape((1,) * array.ndim), array.shape)
        return array


def build(value):
    """Turn recipes (also inside lists, tuples and dicts) into the objects they describe."""
    if isinstance(value, ArraySpec):
        return value.build()
    if isinstance(value, dict):
        return {key: build(item) for key, item in value.items()}
    if isinstance(value, list):
        return [build(item) for item in value]
    if isinstance(value, tuple):
        return tuple(build(item) for item in value)
    return value


# --------------------------------------------------------------------------- strategies

#: Values that break numerics: non-finite, overflowing (in float32 too), subnormal.
SPECIAL_FLOATS = [np.nan, np.inf, -np.inf, 1e308, -1e308, 1e39, 3.5e38, 1e-310, -0.0, 1e300]

DTYPES_VALID = ["float64", "float32", ">f8", ">f4", "int64", "int32", "uint8", "bool", "float16"]
DTYPES_HOSTILE = ["complex128", "complex64", "object", "str"]
LAYOUTS = ["C", "F", "strided", "reversed", "unaligned", "readonly", "broadcast", "list"]


def floats(low=-3.0, high=3.0, special=0.05):
    """Mostly ordinary floats in [low, high]; with probability ``special`` a hostile one."""
    if not special:
        return st.floats(low, high, allow_nan=False)
    return weighted((round(1 / special) - 1, st.floats(low, high, allow_nan=False)), (1, st.sampled_from(SPECIAL_FLOATS)))


@st.composite
def values_of_shape(draw, shape, low=-3.0, high=3.0, hostile_values=True):
    """A float64 array of ``shape``: ordinary values, sometimes one or a few special ones."""
    size = int(np.prod(shape)) if shape else 1
    seed = draw(st.integers(0, 2**32 - 1))
    values = np.random.default_rng(seed).uniform(low, high, size=size)
    if hostile_values and size and draw(st.integers(0, 9)) == 0:
        for _ in range(draw(st.integers(1, 3))):
            values[draw(st.integers(0, size - 1))] = draw(st.sampled_from(SPECIAL_FLOATS))
    return values.reshape(shape)


@st.composite
def shapes_near(draw, shape):
    """``shape`` itself (most often) or a wrong one: an axis off by one or empty, an axis added or removed."""
    choice = draw(st.integers(0, 9))
    shape = tuple(shape)
    if choice < 6 or not shape:
        return shape
    if choice == 6:
        axis = draw(st.integers(0, len(shape) - 1))
        return shape[:axis] + (draw(st.sampled_from([0, max(shape[axis] - 1, 0), shape[axis] + 1])),) + shape[axis + 1:]
    if choice == 7:
        return shape + (draw(st.integers(1, 2)),)
    if choice == 8:
        return shape[:-1]
    return (draw(st.integers(0, 3)),) * draw(st.integers(0, 4))


@st.composite
def arrays(draw, shape, low=-3.0, high=3.0, hostile=True, wrong_shapes=True):
    """An :class:`ArraySpec` near ``shape``, in a valid or hostile dtype and any layout."""
    if wrong_shapes and hostile:
        shape = draw(shapes_near(shape))
    values = draw(values_of_shape(shape, low, high, hostile_values=hostile))
    if not hostile:
        return ArraySpec(values, draw(st.sampled_from(["float64", "float32", ">f8"])),
                         draw(st.sampled_from(["C", "F", "readonly"])))
    dtype = draw(st.sampled_from(DTYPES_VALID * 3 + DTYPES_HOSTILE))
    layout = draw(st.sampled_from(LAYOUTS + ["C"] * 4 + ["ragged"]))
    return ArraySpec(values, dtype, layout)


#: Values that are not arrays at all.
NOT_ARRAYS = [None, "abc", 1 + 2j, object.__name__, {"a": 1}, True, b"\x00\x01", (1, "a"), [[1.0, 2.0], [3.0]]]


def hostile_arrays(shape, low=-3.0, high=3.0):
    """An array near ``shape`` in any dtype/layout, or something that is not an array."""
    return weighted((4, arrays(shape, low, high)), (1, st.sampled_from(NOT_ARRAYS)))


#: Integers a size parameter should refuse or handle: zero, negative, huge, 64-bit edge cases.
HOSTILE_INTS = [0, -1, -(2**63), 2**31, 2**31 - 1, 2**32 + 1, 10**10, 10**12, 2**63 - 1, 2**63, 2**64 + 1, 10**30,
                10**400]


def ints(low, high, hostile=True):
    """Mostly valid ints in [low, high]; sometimes an edge case, a float, a bool, a string or None."""
    if not hostile:
        return st.integers(low, high)
    others = st.sampled_from(HOSTILE_INTS + [True, 2.0, 2.5, float("nan"), float("inf"), "3", None, 1 + 0j,
                                             np.int64(2), np.uint64(2**63), np.float32(2.0), np.int8(-1)])
    return weighted((2, st.integers(low, high)), (1, others))


#: Reals a scale parameter should refuse or handle.
HOSTILE_REALS = [0.0, -1.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-320, 1e-200, 1e300, 10**400,
                 2**63, "0.1", None, 1 + 2j, True, np.float32("nan"), np.float64(1e308), complex("nan")]


def reals(low, high, hostile=True):
    """Mostly valid floats in [low, high]; sometimes a non-finite, negative, extreme or non-numeric one."""
    if not hostile:
        return st.floats(low, high)
    return weighted((2, st.floats(low, high)), (1, st.sampled_from(HOSTILE_REALS)))


# --------------------------------------------------------------------------- the property


def _package_dir():
    import connector_sim

    return os.path.dirname(os.path.abspath(connector_sim.__file__))


def _innermost_frame(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    return frames[-1] if frames else None


FOREIGN_MODULES = ("numpy", "numba", "torch", "scipy", "sklearn", "geomloss", "pynwb", "hdmf", "h5py", "llvmlite")


def _issued_by_package(record, package):
    """Whether a recorded warning is connector_sim's own (documented) rather than a library's.

    Its class is defined in connector_sim; or it is not a floating-point
    warning of numpy ("overflow encountered in ...") nor a library's warning
    class, and it is attributed to the package or, through ``stacklevel``, to
    the caller in this suite.
    """
    category_module = type(record.message).__module__ or ""
    if category_module.startswith("connector_sim"):
        return True
    if "encountered in" in str(record.message) or category_module.startswith(FOREIGN_MODULES):
        return False
    filename = os.path.abspath(record.filename)
    return filename.startswith(package) or filename.startswith(os.path.dirname(os.path.abspath(__file__)))


def nonfinite_paths(value, path="result", depth=0, seen=None):
    """Where ``value`` (arrays, numbers, dataclasses, containers, objects) holds NaN or inf."""
    seen = set() if seen is None else seen
    if depth > 6 or id(value) in seen:
        return []
    if isinstance(value, (str, bytes, type(None), bool)) or callable(value) and not hasattr(value, "__dict__"):
        return []
    if isinstance(value, (float, complex, np.floating, np.complexfloating)):
        return [] if np.isfinite(value) else [path]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and value.size and not np.all(np.isfinite(value)):
            return [f"{path} ({int(np.sum(~np.isfinite(value)))} of {value.size} values)"]
        if value.dtype == object:
            return [p for i, item in enumerate(value.ravel()[:1000])
                    for p in nonfinite_paths(item, f"{path}[{i}]", depth + 1, seen)]
        return []
    seen.add(id(value))
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in nonfinite_paths(item, f"{path}[{key!r}]", depth + 1, seen)]
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value[:1000]) for p in nonfinite_paths(item, f"{path}[{i}]", depth + 1, seen)]
    if dataclasses.is_dataclass(value):
        return [p for f in dataclasses.fields(value) if not f.name.startswith("_")
                for p in nonfinite_paths(getattr(value, f.name), f"{path}.{f.name}", depth + 1, seen)]
    module = type(value).__module__ or ""
    if module.startswith("connector_sim") and hasattr(value, "__dict__"):
        return [p for name, item in vars(value).items() if not name.startswith("_")
                for p in nonfinite_paths(item, f"{path}.{name}", depth + 1, seen)]
    return []


@dataclasses.dataclass
class Outcome:
    """What one call did: ``kind`` is one of PASSING or a failure name; ``detail`` says what happened."""

    kind: str
    detail: str = ""

    @property
    def passed(self):
        return self.kind in PASSING


def evaluate(function, params):
    """Run ``function(**build(params))`` and judge it by the property (in the sandbox process)."""
    package = _package_dir()
    try:
        params = build(params)
    except Exception as exc:  # noqa: BLE001 - a bug of this suite, not of the package
        return Outcome("harness error", f"building the inputs failed: {type(exc).__name__}: {exc}")
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        try:
            result = function(**params)
        except (ValueError, TypeError, FileNotFoundError) as exc:
            frame = _innermost_frame(exc)
            where = f"{frame.filename}:{frame.lineno} in {frame.name}" if frame else "?"
            if not str(exc).strip():
                return Outcome("empty message", f"{type(exc).__name__} with an empty message at {where}")
            if frame is None or not os.path.abspath(frame.filename).startswith(package):
                return Outcome("raised deep in a library", f"{type(exc).__name__}: {str(exc)[:300]} (raised at {where})")
            return Outcome(CLEAR_ERROR, f"{type(exc).__name__}: {str(exc)[:200]}")
        except Verdict as exc:
            return Outcome(exc.kind, str(exc))
        except BaseException as exc:  # noqa: BLE001 - every other exception breaks the property
            frame = _innermost_frame(exc)
            where = f"{frame.filename}:{frame.lineno} in {frame.name}" if frame else "?"
            return Outcome("other exception", f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]} "
                                              f"(raised at {where})")
    ours = [r for r in records if _issued_by_package(r, package)]
    foreign = [r for r in records if not _issued_by_package(r, package)]
    if foreign:
        record = foreign[0]
        return Outcome("library warning", f"{record.category.__name__}: {record.message} "
                                          f"({record.filename}:{record.lineno})")
    bad = nonfinite_paths(result)
    if bad and not ours:
        return Outcome("silent non-finite result", "; ".join(bad[:5]))
    if ours:
        return Outcome(WARNED, f"{ours[0].category.__name__}: {str(ours[0].message)[:200]}")
    return Outcome(FINITE)


class Verdict(Exception):
    """Raised by a case function that judges its call itself (e.g. a CLI exit status and its stderr)."""

    def __init__(self, kind, detail=""):
        super().__init__(detail)
        self.kind = kind


# --------------------------------------------------------------------------- the sandbox


def _limit_memory():
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = SANDBOX_ADDRESS_SPACE if hard == resource.RLIM_INFINITY else min(SANDBOX_ADDRESS_SPACE, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):
        pass


def _worker(connection, path):
    """The sandbox loop: receive (function, params), send back an Outcome."""
    sys.path[:0] = [p for p in path if p not in sys.path]
    os.environ["OMP_NUM_THREADS"] = "1"
    _limit_memory()
    import connector_sim  # noqa: F401 - warm up: import and JIT caches before the first timed call

    warnings.simplefilter("ignore")
    connection.send("ready")
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message is None:
            return
        function, params = message
        try:
            outcome = evaluate(function, params)
        except BaseException as exc:  # noqa: BLE001 - e.g. a params object that failed to build
            outcome = Outcome("other exception", f"in the sandbox itself: {type(exc).__name__}: {exc}")
        connection.send(outcome)


class Sandbox:
    """A worker process that runs calls with a time limit; restarted after a crash or a hang."""

    def __init__(self, timeout=CALL_TIMEOUT):
        self.timeout = timeout
        self.process = None
        self.connection = None
        self.lock = threading.Lock()

    def _start(self):
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, list(sys.path)), daemon=True)
        self.process.start()
        child.close()
        self.connection = parent
        if not parent.poll(300) or parent.recv() != "ready":
            raise RuntimeError("the fuzz sandbox did not start")

    def _stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.join()
        self.process = self.connection = None

    def close(self):
        self._stop()

    def run(self, function, params, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        with self.lock:
            if self.process is None or not self.process.is_alive():
                self._start()
            try:
                self.connection.send((function, params))
                if not self.connection.poll(timeout):
                    self._stop()
                    return Outcome("hang", f"no answer within {timeout:g} s")
                return self.connection.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError):
                self.process.join(10)
                code = self.process.exitcode
                self._stop()
                return Outcome("crash", f"the process died with exit code {code}"
                                        + (f" (signal {-code})" if code is not None and code < 0 else ""))


# --------------------------------------------------------------------------- the tally


class Tally:
    """Per entry point: examples run, clear errors, warnings, finite results, failures."""

    def __init__(self):
        self.counts = {}

    def add(self, entry, outcome):
        row = self.counts.setdefault(entry, {"examples": 0, CLEAR_ERROR: 0, WARNED: 0, FINITE: 0, "failed": 0})
        row["examples"] += 1
        row[outcome.kind if outcome.passed else "failed"] += 1

    def table(self):
        header = f"{'entry point':<34} {'examples':>8} {'clear error':>11} {'warned':>6} {'finite':>6} {'failed':>6}"
        lines = [header, "-" * len(header)]
        total = {"examples": 0, CLEAR_ERROR: 0, WARNED: 0, FINITE: 0, "failed": 0}
        for entry in sorted(self.counts):
            row = self.counts[entry]
            for key in total:
                total[key] += row[key]
            lines.append(f"{entry:<34} {row['examples']:>8} {row[CLEAR_ERROR]:>11} {row[WARNED]:>6} "
                         f"{row[FINITE]:>6} {row['failed']:>6}")
        lines.append("-" * len(header))
        lines.append(f"{'total':<34} {total['examples']:>8} {total[CLEAR_ERROR]:>11} {total[WARNED]:>6} "
                     f"{total[FINITE]:>6} {total['failed']:>6}")
        return "\n".join(lines)


TALLY = Tally()
#: CONNECTOR_SIM_FUZZ_COLLECT=path logs failures to ``path`` instead of failing (for exploring, not for CI).
COLLECT = os.environ.get("CONNECTOR_SIM_FUZZ_COLLECT")


def _json_default(value):
    if isinstance(value, ArraySpec):
        values = np.asarray(value.values)
        text = np.array2string(values, threshold=20, precision=3, separator=",").replace("\n", "")
        return f"ArraySpec(shape={values.shape}, dtype={value.dtype}, layout={value.layout}, values={text})"
    return repr(value)


def check(sandbox, entry, function, params, timeout=None):
    """Run one example in the sandbox, count it under ``entry`` and assert the property."""
    outcome = sandbox.run(function, params, timeout)
    TALLY.add(entry, outcome)
    if not outcome.passed and COLLECT:
        # Exploration mode: log every failure instead of stopping at (and shrinking) the first one.
        with open(COLLECT, "a") as stream:
            stream.write(json.dumps({"entry": entry, "kind": outcome.kind, "detail": outcome.detail,
                                     "function": function.__name__, "params": params}, default=_json_default) + "\n")
        return outcome
    assert outcome.passed, f"{entry}: {outcome.kind}: {outcome.detail}"
    return outcome


def capture_cli(argv):
    """connector_sim.cli.main(argv) with stdout and stderr captured: (status, stdout, stderr)."""
    import contextlib

    from connector_sim.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
    return status, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- shared recipes


def examples(base):
    """``base`` examples under the default profile (max_examples 100), scaled with the loaded profile."""
    from hypothesis import settings

    return max(2, round(base * settings().max_examples / 100))


def weighted(*pairs):
    """One of the strategies, picked with the given weights: ``weighted((3, a), (1, b))``.

    (``st.one_of(a, a, b)`` does not weight: it drops repeated strategies.)
    """
    total = sum(weight for weight, _ in pairs)
    cumulative, bounds = 0, []
    for weight, strategy in pairs:
        cumulative += weight
        bounds.append((cumulative, strategy))

    def pick(index):
        return next(strategy for bound, strategy in bounds if index < bound)

    return st.integers(0, total - 1).flatmap(pick)


def sometimes(valid, hostile, valid_weight=8):
    """``valid`` most of the time (``valid_weight`` to 1), else ``hostile``: one bad argument at a time."""
    return weighted((valid_weight, valid), (1, hostile))


@st.composite
def network_recipes(draw, max_neurons=24, max_rank=3, max_inputs=2, diverging=None):
    """Keyword arguments of :func:`make_network`: a small valid LowRankRNN."""
    diverging = draw(st.integers(0, 9)) == 0 if diverging is None else diverging
    return dict(n_neurons=draw(st.integers(1, max_neurons)), rank=draw(st.integers(1, max_rank)),
                n_inputs=draw(st.integers(0, max_inputs)), dtype=draw(st.sampled_from(["float64", "float32"])),
                activation=draw(st.sampled_from(["identity", "relu"] if diverging else ["tanh", "relu", "identity"])),
                tau=draw(st.sampled_from([1.0, 0.5, 2.0])), scale=30.0 if diverging else 1.0,
                bias=draw(st.booleans()), seed=draw(st.integers(0, 1000)))


def make_network(n_neurons, rank, n_inputs, dtype, activation, tau, scale, bias, seed):
    """A LowRankRNN with i.i.d. normal loadings; ``scale`` multiplies m and n (30: diverging dynamics)."""
    from connector_sim import LowRankRNN

    rng = np.random.default_rng(seed)
    m = scale * rng.standard_normal((n_neurons, rank))
    n = scale * rng.standard_normal((n_neurons, rank)) + (scale * m if scale > 1 else 0.0)
    I = rng.standard_normal((n_neurons, n_inputs)) if n_inputs else None
    b = 0.1 * rng.standard_normal(n_neurons) if bias else None
    return LowRankRNN(m, n, I, b, tau=tau, activation=activation, dtype=dtype)


# --------------------------------------------------------------------------- hostile files

FILE_KINDS = ["valid", "valid", "valid", "valid", "truncated", "bit flips", "random bytes", "empty", "npy renamed",
              "object array", "huge header", "directory", "missing", "text"]


@st.composite
def npz_recipes(draw, arrays_strategy):
    """How to write a file: its kind (see FILE_KINDS) and, for npz kinds, the named arrays in it."""
    kind = draw(st.sampled_from(FILE_KINDS))
    return {"kind": kind, "arrays": draw(arrays_strategy), "cut": draw(st.floats(0, 1)),
            "flips": draw(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8)),
            "seed": draw(st.integers(0, 2**32 - 1))}


def _huge_npy(stream, shape=(10**6, 10**5)):
    """An .npy whose header claims ``shape`` of float64 (745 GiB for the default) over 64 bytes of data."""
    np.lib.format.write_array_header_1_0(stream, {"descr": "<f8", "fortran_order": False, "shape": shape})
    stream.write(b"\0" * 64)


def write_recipe(path, recipe):
    """Write the file ``recipe`` describes at ``path`` (in the test process); return ``path``."""
    import shutil
    import zipfile

    path = os.fspath(path)
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    kind = recipe["kind"]
    if kind == "missing":
        return path
    if kind == "directory":
        os.makedirs(path)
        return path
    if kind == "empty":
        open(path, "wb").close()
        return path
    if kind == "text":
        with open(path, "w") as stream:
            stream.write("m,n\n1,2\n")
        return path
    if kind == "random bytes":
        with open(path, "wb") as stream:
            stream.write(np.random.default_rng(recipe["seed"]).bytes(200))
        return path
    arrays = {name: build(value) for name, value in recipe["arrays"].items()}
    arrays = {name: np.asarray(value) if not isinstance(value, list) else np.asarray(value, dtype=object)
              for name, value in arrays.items()}
    buffer = io.BytesIO()
    if kind == "npy renamed":
        np.save(buffer, next(iter(arrays.values()), np.zeros(3)), allow_pickle=True)
    elif kind == "huge header":
        huge = next(iter(arrays), "m")
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, value in arrays.items():
                if name != huge:
                    with archive.open(name + ".npy", "w") as member:
                        np.save(member, value, allow_pickle=True)
            with archive.open(huge + ".npy", "w") as member:
                _huge_npy(member)
    else:
        if kind == "object array" and arrays:
            name = next(iter(arrays))
            arrays[name] = np.asarray(arrays[name], dtype=object)
        np.savez(buffer, **arrays)
    data = bytearray(buffer.getvalue())
    if kind == "truncated":
        data = data[:int(recipe["cut"] * len(data))]
    elif kind == "bit flips" and data:
        for position, byte in recipe["flips"]:
            data[min(int(position * len(data)), len(data) - 1)] = byte
    with open(path, "wb") as stream:
        stream.write(bytes(data))
    return path
