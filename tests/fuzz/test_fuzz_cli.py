"""Property-based tests of every CLI subcommand, run in-process (connector_sim.cli.main) in the sandbox.

The property of a command: exit status 0 with finite outputs, or exit status
2 with exactly one line on stderr and nothing written (each example names
fresh output paths, which must still not exist after a refusal). Never a
traceback, another status, a hang or a crash.
"""

import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzlib import CLEAR_ERROR, FINITE, Verdict, capture_cli, check, examples, nonfinite_paths, sometimes

pytest.importorskip("torch")

_names = itertools.count()

# --------------------------------------------------------------------------- the case (run in the sandbox)


def run_cli(argv, outputs):
    """main(argv); judge the status, stderr and the ``outputs`` paths (which do not exist before)."""
    try:
        status, out, err = capture_cli(argv)
    except BaseException as exc:  # noqa: BLE001 - a traceback out of main breaks the CLI's promise
        raise Verdict("traceback", f"main raised {type(exc).__name__}: {exc}") from None
    lines = [line for line in err.splitlines() if line.strip()]
    if status == 2:
        if len(lines) != 1:
            raise Verdict("not one line", f"exit 2 with {len(lines)} lines on stderr: {err[-600:]!r}")
        written = [path for path in outputs if os.path.exists(path)]
        if written:
            raise Verdict("wrote before refusing", f"exit 2 ({lines[0]!r}) but {written} were written")
        raise Verdict(CLEAR_ERROR, lines[0])
    if status != 0:
        raise Verdict("bad exit status", f"exit {status}; stderr {err[-600:]!r}")
    from connector_sim.data import load_arrays

    for path in outputs:
        if path.endswith(".npz") and os.path.isfile(path):
            arrays = load_arrays(path)
            bad = nonfinite_paths({key: value for key, value in arrays.items() if value.dtype.kind in "fc"})
            if bad:
                raise Verdict("silent non-finite result", f"{path}: {bad[:3]} (stderr {err[-300:]!r})")
    raise Verdict(FINITE, out[-200:])


# --------------------------------------------------------------------------- fixtures: the files the commands read


@pytest.fixture(scope="module")
def cli_files(fuzz_dir):
    """A network, a simulation with rates, a LINT fit and its latents, a Connector folder, broken copies."""
    from fuzzlib import capture_cli

    folder = os.path.join(fuzz_dir, "cli")
    os.makedirs(folder)
    files = {name: os.path.join(folder, name) for name in
             ("truth.npz", "sim.npz", "lint.npz", "lint_latents.npz", "model", "corrupt.npz", "a_file.npz",
              "complex.npz", "flat.npz")}
    steps = [["simulate", "quadstable", "--n-neurons", 40, "--trials", 9, "--n-steps", 20, "--record-units", "all",
              "--out", files["sim.npz"], "--network-out", files["truth.npz"], "--backend", "numpy"],
             ["fit", files["sim.npz"], "--rank", 2, "--epochs", 2, "--out", files["lint.npz"]],
             ["infer", files["lint.npz"], "--epochs", 2, "--hidden", 8, "--layers", 1, "--flow-samples", 200,
              "--out", files["model"]]]
    for argv in steps:
        status, out, err = capture_cli(argv)
        assert status == 0, err
    with open(files["corrupt.npz"], "wb") as stream:
        stream.write(b"PK\x03\x04" + os.urandom(300))
    with open(files["a_file.npz"], "wb") as stream:
        stream.write(b"not a folder")
    rng = np.random.default_rng(0)
    np.savez(files["complex.npz"], rates=rng.standard_normal((3, 5, 4)) + 1j, dt=0.1)
    np.savez(files["flat.npz"], rates=rng.standard_normal((5, 4)))
    files["missing.npz"] = os.path.join(folder, "missing.npz")
    files["no_dir"] = os.path.join(folder, "no_such_dir", "x.npz")
    return files


def fresh(folder, suffix=".npz"):
    return os.path.join(folder, f"out{next(_names)}{suffix}")


# --------------------------------------------------------------------------- strategies

INT_HOSTILE = ["0", "-1", "-5", "10000000000", "9223372036854775808", "99999999999999999999999", "1e10", "x", "2.5",
               ""]
FLOAT_HOSTILE = ["nan", "inf", "-inf", "-1", "0", "1e-320", "1e400", "x", "1j", ""]


def option(name, valid, hostile, probability=3):
    """``[name, value]`` with probability 1 / probability, the value valid most of the time."""
    return st.integers(0, probability - 1).flatmap(
        lambda i: st.just([]) if i else sometimes(valid, st.sampled_from(hostile)).map(lambda v: [name, str(v)]))


def assemble(draw, head, options):
    argv = list(head)
    for strategy in options:
        argv += draw(strategy)
    return argv


@st.composite
def simulate_argv(draw, files, folder):
    network = draw(sometimes(st.sampled_from(["quadstable", "bistable", "limit_cycle", "ring", files["truth.npz"]]),
                             st.sampled_from(["foo", files["corrupt.npz"], files["missing.npz"], files["sim.npz"],
                                              files["model"]])))
    out = draw(sometimes(st.just(fresh(folder)), st.sampled_from([files["model"], files["no_dir"], "noext"])))
    argv = assemble(draw, ["simulate", network, "--out", out], [
        option("--n-neurons", st.integers(1, 60), INT_HOSTILE + ["2147483648"], 1),
        option("--trials", st.integers(1, 10), INT_HOSTILE, 1),
        option("--n-steps", st.integers(1, 30), INT_HOSTILE, 1),
        option("--dt", st.sampled_from([0.05, 0.1, 0.2]), FLOAT_HOSTILE),
        option("--noise-std", st.sampled_from([0.0, 0.1, 0.5]), FLOAT_HOSTILE),
        option("--backend", st.sampled_from(["auto", "numpy", "numba", "cpp"]), ["CPP", "gpu"]),
        option("--threads", st.integers(1, 2), INT_HOSTILE + ["100000", "2147483648"]),
        option("--seed", st.integers(0, 2**32), INT_HOSTILE),
        option("--init", st.sampled_from(["grid", "random"]), ["x"]),
        option("--extent", st.sampled_from([1.0, 2.4]), FLOAT_HOSTILE),
        option("--record-units", st.sampled_from(["all", "none", "3"]), ["0", "-3", "x", "10000000000", "2.5"]),
        option("--network-out", st.builds(lambda: fresh(folder)), [files["no_dir"], "noext", files["model"]], 4)])
    outputs = [path for path in (out, argv[argv.index("--network-out") + 1] if "--network-out" in argv else None)
               if path and not os.path.exists(path)]
    return argv, outputs


@st.composite
def fit_argv(draw, files, folder):
    data = draw(sometimes(st.just(files["sim.npz"]), st.sampled_from(
        [files["corrupt.npz"], files["missing.npz"], files["truth.npz"], files["complex.npz"], files["flat.npz"],
         files["model"]])))
    out = draw(sometimes(st.just(fresh(folder)), st.sampled_from([files["no_dir"], "noext", files["model"]])))
    argv = assemble(draw, ["fit", data, "--out", out, "--epochs", draw(sometimes(st.sampled_from(["1", "2"]),
                                                                                 st.sampled_from(INT_HOSTILE)))], [
        option("--rank", st.integers(1, 2), INT_HOSTILE + ["1000"], 2),
        option("--method", st.sampled_from(["lint", "velocity"]), ["x"], 4),
        option("--seed", st.integers(0, 100), INT_HOSTILE, 5),
        option("--dt", st.sampled_from([0.1, 0.05]), FLOAT_HOSTILE, 5),
        option("--tau", st.sampled_from([1.0, 2.0]), FLOAT_HOSTILE, 5),
        option("--n-neurons", st.integers(5, 20), INT_HOSTILE, 6),
        option("--latents-out", st.builds(lambda: fresh(folder)), [files["no_dir"], "noext"], 5)])
    latents = argv[argv.index("--latents-out") + 1] if "--latents-out" in argv else out.removesuffix(".npz") + "_latents.npz"
    outputs = [path for path in (out, latents) if not os.path.exists(path)]
    return argv, outputs


@st.composite
def infer_argv(draw, files, folder):
    network = draw(sometimes(st.just(files["lint.npz"]), st.sampled_from(
        [files["corrupt.npz"], files["missing.npz"], files["truth.npz"], files["sim.npz"]])))
    out = draw(sometimes(st.builds(lambda: fresh(folder, "")), st.sampled_from([files["a_file.npz"], files["no_dir"]])))
    argv = assemble(draw, ["infer", network, "--out", out], [
        option("--epochs", st.integers(1, 2), INT_HOSTILE, 1),
        option("--hidden", st.integers(2, 8), INT_HOSTILE + ["200000"], 1),
        option("--layers", st.integers(1, 2), INT_HOSTILE, 1),
        option("--flow-samples", st.integers(20, 100), INT_HOSTILE, 1),
        option("--n-covariance", st.sampled_from([0.5, 1.0]), FLOAT_HOSTILE, 4),
        option("--seed", st.integers(0, 100), INT_HOSTILE, 5),
        option("--latents", st.just(files["lint_latents.npz"]), [files["sim.npz"], files["missing.npz"],
                                                                  files["corrupt.npz"]], 4)])
    return argv, [out] if not os.path.exists(out) else []


@st.composite
def perturb_argv(draw, files, folder):
    source = draw(sometimes(st.sampled_from([files["truth.npz"], files["model"]]), st.sampled_from(
        [files["corrupt.npz"], files["missing.npz"], files["sim.npz"], files["a_file.npz"], folder])))
    prefix = draw(sometimes(st.builds(lambda: fresh(folder, "")), st.just(files["no_dir"].removesuffix(".npz"))))
    silence = draw(st.one_of(st.just([]), st.lists(st.sampled_from(["all", "0", "1", "2", "3", "99", "x", "-1"]),
                                                    min_size=1, max_size=2).map(lambda v: ["--silence"] + v)))
    argv = assemble(draw, ["perturb", source, "--out", prefix, "--n-neurons", draw(sometimes(
        st.integers(20, 60), st.sampled_from(INT_HOSTILE))), "--cell-type-samples", "60", "--k-max", "2",
        "--grid", "2", "--n-steps", draw(sometimes(st.integers(5, 20), st.sampled_from(INT_HOSTILE)))] + silence, [
        option("--silence-units", st.sampled_from(["0:3", "1,2", "0"]), ["5:2", "x", "-1", "0:100000", ":", ""], 3),
        option("--k-max", st.integers(1, 3), INT_HOSTILE + ["1000000"], 6),
        option("--grid", st.integers(1, 3), INT_HOSTILE + ["100000"], 6),
        option("--cell-type-samples", st.integers(10, 60), INT_HOSTILE, 6),
        option("--extent", st.sampled_from([1.0, 2.0]), FLOAT_HOSTILE, 6),
        option("--backend", st.sampled_from(["numpy", "cpp", "numba"]), ["gpu"], 6),
        option("--seed", st.integers(0, 100), INT_HOSTILE, 6)])
    outputs = [path for path in (prefix + ".csv", prefix + ".json") if not os.path.exists(path)]
    return argv, outputs


@st.composite
def demo_argv(draw, files, folder):
    """Always one invalid option (a valid demo runs for minutes): it must be refused before any work."""
    bad = draw(st.sampled_from([["--large-n", "0"], ["--large-n", "-5"], ["--large-n", "10000000000000"],
                                ["--out", files["a_file.npz"]], ["--large-n", "x"], ["--backend", "gpu"],
                                ["--seed", "99999999999999999999999"], ["--seed", "-1"]]))
    out = fresh(folder, "")
    argv = ["demo", "--out", out] + bad
    if bad[0] != "--large-n":  # (--quick and --skip-simulation make --large-n irrelevant)
        argv += draw(st.sampled_from([[], ["--quick"], ["--quick", "--skip-simulation"]]))
    return argv, [out] if bad[0] != "--out" else []


@st.composite
def backends_argv(draw, files, folder):
    extra = draw(st.sampled_from([[], [], ["--x"], ["extra"], ["--out", "y"]]))
    return ["backends"] + extra, []


#: (strategy, examples under the default profile, seconds an example may take: a refusal is immediate).
COMMANDS = {"simulate": (simulate_argv, 100, None), "fit": (fit_argv, 40, None), "infer": (infer_argv, 25, None),
            "perturb": (perturb_argv, 16, None), "demo": (demo_argv, 16, 20), "backends": (backends_argv, 6, None)}


def _test(command):
    strategy, count, timeout = COMMANDS[command]

    @settings(max_examples=examples(count))
    @given(data=st.data())
    def test(sandbox, cli_files, fuzz_dir, data):
        folder = os.path.join(fuzz_dir, "cli_out")
        os.makedirs(folder, exist_ok=True)
        argv, outputs = data.draw(strategy(cli_files, folder), label="argv")
        check(sandbox, f"cli {command}", run_cli, dict(argv=argv, outputs=outputs), timeout=timeout)

    test.__name__ = f"test_cli_{command}_exits_0_or_2_with_one_line"
    test.__doc__ = f"`connector-sim {command}` on generated arguments: success with finite outputs, or exit 2 and one line."
    return test


test_cli_simulate_exits_0_or_2_with_one_line = _test("simulate")
test_cli_fit_exits_0_or_2_with_one_line = _test("fit")
test_cli_infer_exits_0_or_2_with_one_line = _test("infer")
test_cli_perturb_exits_0_or_2_with_one_line = _test("perturb")
test_cli_demo_exits_0_or_2_with_one_line = _test("demo")
test_cli_backends_exits_0_or_2_with_one_line = _test("backends")


# --------------------------------------------------------------------------- the reproducers of issue 12, always run

ISSUE_ARGV = {
    "simulate --threads 100000": ["simulate", "quadstable", "--n-neurons", "30", "--trials", "4", "--n-steps", "5",
                                  "--backend", "cpp", "--threads", "100000", "--out", "{out}"],
    "simulate --n-steps 10**10": ["simulate", "quadstable", "--n-neurons", "30", "--trials", "4", "--n-steps",
                                  "10000000000", "--out", "{out}"],
    "simulate --n-neurons 1e10": ["simulate", "quadstable", "--n-neurons", "10000000000", "--out", "{out}"],
    "simulate --seed 10**23": ["simulate", "quadstable", "--n-neurons", "30", "--trials", "4", "--n-steps", "5",
                               "--seed", "99999999999999999999999", "--out", "{out}"],
    "simulate --out a directory": ["simulate", "quadstable", "--n-neurons", "30", "--out", "{dir}.npz"],
    "simulate --out unwritable": ["simulate", "quadstable", "--n-neurons", "30", "--out", "/proc/x.npz"],
    "simulate a corrupted network": ["simulate", "{corrupt.npz}", "--out", "{out}"],
    "fit --rank 1000": ["fit", "{sim.npz}", "--rank", "1000", "--epochs", "1", "--out", "{out}"],
    "fit complex rates": ["fit", "{complex.npz}", "--rank", "1", "--epochs", "1", "--out", "{out}"],
    "infer --flow-samples 0": ["infer", "{lint.npz}", "--epochs", "1", "--hidden", "4", "--layers", "1",
                               "--flow-samples", "0", "--out", "{folder}"],
    "infer --hidden 200000": ["infer", "{lint.npz}", "--epochs", "1", "--hidden", "200000", "--out", "{folder}"],
    "infer --flow-samples 10**23": ["infer", "{lint.npz}", "--epochs", "1", "--hidden", "6", "--layers", "1",
                                    "--flow-samples", "99999999999999999999999", "--out", "{folder}"],
    "infer --epochs 2**63": ["infer", "{lint.npz}", "--epochs", "9223372036854775808", "--hidden", "8", "--layers",
                             "1", "--flow-samples", "72", "--out", "{folder}"],
    "perturb --n-steps 10**10": ["perturb", "{truth.npz}", "--silence", "all", "--n-steps", "10000000000", "--out",
                                 "{folder}"],
    "perturb --n-neurons 1e10": ["perturb", "{model}", "--silence", "all", "--n-neurons", "10000000000", "--out",
                                 "{folder}"],
}


@pytest.mark.parametrize("name", list(ISSUE_ARGV))
def test_cli_issue_reproducers(sandbox, cli_files, fuzz_dir, name):
    """Issue items 1, 5, 6, 7, 8: exit 2, one line, nothing written, before any work."""
    folder = os.path.join(fuzz_dir, "cli_out")
    os.makedirs(folder, exist_ok=True)
    out, target = fresh(folder), fresh(folder, "")
    os.makedirs(os.path.join(fuzz_dir, "a_dir.npz"), exist_ok=True)
    names = dict(cli_files, out=out, folder=target, dir=os.path.join(fuzz_dir, "a_dir"))
    argv = []
    for part in ISSUE_ARGV[name]:
        for key, value in names.items():
            part = part.replace("{" + key + "}", value)
        argv.append(part)
    outputs = [path for path in (out, target, target + ".csv", target + ".json") if not os.path.exists(path)]
    check(sandbox, f"cli {argv[0]}", run_cli, dict(argv=argv, outputs=outputs), timeout=30)


# --------------------------------------------------------------------------- Connector.load on damaged model folders


def run_connector_load(folder):
    from connector_sim.inference import Connector

    network = Connector.load(folder, device="cpu").sample(5, random_state=0)
    return network.m, network.n, network.I, network.b


CONFIG_EDITS = [("kind", "LINT"), ("format_version", 99), ("rank", 0), ("rank", 10**9), ("alpha", "nan"),
                ("n_rows", -1), ("activation", "softplus"), ("params", None), ("marginal", {"hidden": 200000})]


@st.composite
def damaged_model(draw):
    target = draw(st.sampled_from(["config.json", "weights.pt"]))
    how = draw(st.sampled_from(["truncate", "flip", "random", "empty", "delete", "intact"]
                               + (["edit", "edit", "not json"] if target == "config.json" else ["pickle"])))
    return {"target": target, "how": how, "fraction": draw(st.floats(0, 1)),
            "flips": draw(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=6)),
            "edit": draw(st.sampled_from(CONFIG_EDITS))}


def damage(source, folder, recipe):
    """A copy of the model folder ``source`` at ``folder`` with one file damaged as ``recipe`` says."""
    import json
    import shutil

    shutil.copytree(source, folder)
    path = os.path.join(folder, recipe["target"])
    with open(path, "rb") as stream:
        data = bytearray(stream.read())
    how = recipe["how"]
    if how == "delete":
        os.remove(path)
        return folder
    if how == "truncate":
        data = data[:int(recipe["fraction"] * len(data))]
    elif how == "flip":
        for position, byte in recipe["flips"]:
            data[min(int(position * len(data)), len(data) - 1)] = byte
    elif how == "random":
        data = bytearray(np.random.default_rng(len(data)).bytes(len(data)))
    elif how == "empty":
        data = bytearray()
    elif how == "not json":
        data = bytearray(b"{'kind': 'Connector',")
    elif how == "edit":
        config = json.loads(data.decode())
        key, value = recipe["edit"]
        config[key] = value
        data = bytearray(json.dumps(config).encode())
    elif how == "pickle":
        import io

        import torch

        buffer = io.BytesIO()
        torch.save({"payload": {1, 2, 3}, "fn": os.getcwd}, buffer)  # weights_only refuses sets and functions
        data = bytearray(buffer.getvalue())
    with open(path, "wb") as stream:
        stream.write(bytes(data))
    return folder


@settings(max_examples=examples(80))
@given(damaged_model())
def test_connector_load_refuses_damaged_folders_clearly(sandbox, cli_files, fuzz_dir, recipe):
    """Issue items 4 and 7: truncated, edited or tampered model files: a clear error (never torch's pickle hint)."""
    folder = damage(cli_files["model"], fresh(os.path.join(fuzz_dir, "cli"), ""), recipe)
    check(sandbox, "Connector.load", run_connector_load, dict(folder=folder))
