"""The C++ kernels' instruction-set clones side by side, each against its own limit.

Every C++ kernel is compiled as an "avx512" (x86-64-v4), an "avx2"
(x86-64-v3) and a "default" (baseline x86-64) clone, picked at run time
(``connector_sim._backends.kernel_isa``). For each clone this CPU supports,
in one run, interleaved (each round times every clone once, so that all see
the same share of a shared machine), one thread, CPU time, medians:

- the limits, measured in the same run: a streaming read (the faster of
  ``a.max()`` and ``a @ a`` over a float32 array of the kernel's
  working-set size, GB/s) and the
  clone's own SIMD tanh (4096 values in L1, repeated; G values/s);
- each kernel: the dense latent and full steps at N = 1e6 (float32 B = 1
  and B = 8, float64 B = 1), the flow field at G = 900 points, N = 1e5
  (float32; also with phi = identity, the kernel without its tanh), and the
  sparse step at N = 1e5, C = 200 (stored and implicit masks, float32);
- its fraction of its limit: max(bytes read / bandwidth, tanh evaluations /
  tanh rate) over the time taken (1.0 = at the limit). The sparse steps are
  bound by their random gathers (one per connection, within a stratum of
  the rates), for which this run has no separate measurement: their
  fraction is of the streaming limit only, and the table's ns per
  connection is the figure to watch;
- the issue's targets, against what users would write instead (chunked
  NumPy and torch eager for the flow field; the NumPy expression for the
  dense float64 step; B = 8 against B = 1 trial-steps/s), with the widest
  clone.

    python benchmarks/compare.py isa [--quick] [--json out.json]
    python benchmarks/compare.py isa --cases "dense latent float32"   # only the kernels so named
"""

import os

# Before numpy / torch / numba load their thread pools.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # missing compiled modules are reported below
    import connector_sim  # noqa: F401, E402
from connector_sim._backends import KERNEL_ISAS, cpu_isa, extension_built, set_kernel_isa  # noqa: E402
from connector_sim._kernels import flow_field, simulate_dense  # noqa: E402

RANK = 2
N_INPUTS = 1
ALPHA = 0.1
NO_CLAMP = (None, None, 0, 0)

#: (name, ours, theirs, required ratio, per): ours must be this many times
#: faster than theirs (per trial-step for "trial-steps").
TARGETS = [
    ("flow field float32 vs chunked NumPy", "flow field float32 G=900 N=1e5", "numpy chunked flow field", 4.0),
    ("flow field float32 vs torch eager", "flow field float32 G=900 N=1e5", "torch eager flow field", 25.0),
    ("dense float64 full step vs NumPy", "dense full float64 B=1", "numpy expression float64", 5.0),
    ("dense float64 latent step vs NumPy", "dense latent float64 B=1", "numpy expression float64", 5.0),
    ("batched latent B=8 vs B=1 (trial-steps/s)", "dense latent float32 B=8", "dense latent float32 B=1", 2.5),
]


def cpu_seconds(run):
    start = time.process_time()
    run()
    return time.process_time() - start


def interleaved(runs, rounds):
    """{label: [CPU seconds]} of each ``(label, isa, run)``, every run once per round, after one warm-up each."""
    samples = {label: [] for label, _, _ in runs}
    for label, isa, run in runs:
        if isa is not None:
            set_kernel_isa(isa)
        run()
    for _ in range(rounds):
        for label, isa, run in runs:
            if isa is not None:
                set_kernel_isa(isa)
            samples[label].append(cpu_seconds(run))
    return samples


# --- the kernels ---------------------------------------------------------------------------


def dense_network(n_neurons, dtype):
    from compare_simulate_dense import sample_network

    return sample_network(n_neurons, dtype)


def dense_run(network, path, n_trials, n_steps, activation=None):
    """``run()``: n_steps steps of the dense C++ kernel for n_trials trials (the state carries on)."""
    full_path, latent_path = simulate_dense.kernels("cpp")
    dtype, N = network.dtype, network.n_neurons
    loadings = (network.m_T, network.n_T, network.I_T, network.b, activation or network.activation)
    kappa = np.array([1.0, -0.5]) + 0.1 * np.arange(n_trials)[:, None]
    x = (kappa @ network.m_T.astype(np.float64)).astype(dtype)
    kappa_out = np.empty((n_trials, n_steps + 1, RANK))
    v = np.full((n_trials, n_steps + 1, N_INPUTS), 0.5)
    decay = (1 - ALPHA) ** np.arange(n_steps + 1, dtype=np.float64)
    no_xperp = np.zeros((0, N), dtype)
    u = np.full((n_trials, n_steps, N_INPUTS), 0.5, dtype)
    record_idx = np.zeros(0, np.int64)
    record_out = np.empty((n_trials, n_steps + 1, 0), dtype)

    def run():
        if path == "latent":
            latent_path(*loadings, v, no_xperp, decay, ALPHA, kappa, kappa_out, NO_CLAMP)
        else:
            full_path(*loadings, x, u, ALPHA, 0.0, 0, 0, record_idx, kappa, kappa_out, record_out, NO_CLAMP)

    return run


def flow_run(network, grid, activation="tanh"):
    kernel = flow_field.kernel("cpp")
    loadings = (network.m_T, network.n_T, network.I_T, network.b)
    v = np.zeros((len(grid), 0))
    out = np.empty((len(grid), RANK))
    return lambda: kernel(*loadings, activation, grid, v, out)


def tanh_run(dtype, n_values):
    """The flow-field module's SIMD tanh alone: n_values evaluations on 4096 values in L1."""
    from connector_sim._ext import _flow_field_cpp as ext

    x = np.linspace(-3.0, 3.0, 4096, dtype=dtype)
    acc = np.zeros_like(x)
    n_repeats = max(1, n_values // x.size)
    return (lambda: ext.tanh_repeated(x, acc, n_repeats)), n_repeats * x.size


def stream_runs(n_bytes):
    """Two streaming reads of a float32 array of n_bytes (a.max() and the BLAS dot a @ a), each repeated
    to at least 64 MB read: the faster of the two is the read bandwidth (both read every byte once)."""
    a = np.ones(max(1, n_bytes // 4), np.float32)
    repeats = max(1, (64 << 20) // a.nbytes)

    def maximum():
        for _ in range(repeats):
            a.max()

    def dot():
        for _ in range(repeats):
            a @ a

    return [maximum, dot], repeats * a.nbytes


# --- the run -------------------------------------------------------------------------------


def measure(args):
    isas = list(KERNEL_ISAS[KERNEL_ISAS.index(cpu_isa()):])
    steps = args.steps
    N = args.n_neurons
    cases = {}  # label -> dict(run per isa, bytes, tanh values, dtype, per)
    networks = {dtype: dense_network(N, dtype) for dtype in ("float32", "float64")}
    for path, dtype, B in (("latent", "float32", 1), ("latent", "float32", 8), ("full", "float32", 1),
                           ("latent", "float64", 1), ("full", "float64", 1)):
        itemsize = np.dtype(dtype).itemsize
        # latent: read m (R), n (R), I, b; full: also read and write x (B rows).
        arrays = 2 * RANK + 2 + (2 * B if path == "full" else 0)
        cases[f"dense {path} {dtype} B={B}"] = dict(
            run=dense_run(networks[dtype], path, B, steps), steps=steps, trials=B, dtype=dtype,
            bytes=arrays * N * itemsize * steps, tanh=B * N * steps)
    # Everything but the tanh at B = 8: what bounds the batched path.
    cases["dense latent float32 B=8 identity (no tanh)"] = dict(
        run=dense_run(networks["float32"], "latent", 8, steps, "identity"), steps=steps, trials=8, dtype="float32",
        bytes=(2 * RANK + 2) * N * 4 * steps, tanh=0)
    # --cases: only the kernels whose label contains it (the rest, and what users would write instead, skipped)
    cases = {label: case for label, case in cases.items() if args.cases is None or args.cases in label}
    if args.cases is not None:
        return measured(args, isas, cases, others=False)
    from compare_flow_field import sample_network as flow_network
    from connector_sim.synthetic import latent_grid

    grid = latent_grid(30, 2.0)
    n_flow = args.flow_neurons
    flow_net = flow_network(n_flow, np.float32)
    cases["flow field float32 G=900 N=1e5"] = dict(run=flow_run(flow_net, grid), steps=1, trials=1, dtype="float32",
                                                   bytes=(2 * RANK + 2) * n_flow * 4, tanh=len(grid) * n_flow)
    # Everything but the tanh: the same kernel with phi = identity (its loads from L1 bound it).
    cases["flow field float32 identity (no tanh)"] = dict(
        run=flow_run(flow_net, grid, "identity"), steps=1, trials=1, dtype="float32",
        bytes=(2 * RANK + 2) * n_flow * 4, tanh=0)
    if extension_built("_simulate_sparse_cpp"):
        from compare_sparse import STEPS, _network, kernel_stepper

        for representation in ("stored", "implicit"):
            network = _network(args.sparse_neurons, 200, representation)
            stepper = kernel_stepper(network, "cpp")
            # stored: uint16 offsets (2 bytes per connection) + the rank-one loadings and x;
            # implicit: the loadings and x only (the columns are regenerated).
            mask_bytes = 2 * 200 * args.sparse_neurons if representation == "stored" else 0
            cases[f"sparse {representation} float32 N=1e5 C=200"] = dict(
                run=stepper, steps=STEPS, trials=1, dtype="float32",
                bytes=STEPS * (mask_bytes + 6 * args.sparse_neurons * 4), tanh=STEPS * args.sparse_neurons)
    return measured(args, isas, cases, others=True, flow_net=flow_net, grid=grid, networks=networks)


def measured(args, isas, cases, others, flow_net=None, grid=None, networks=None):
    """Times the cases (and, with others, what users would write instead) and prints the tables."""
    rounds, steps = args.rounds, args.steps
    runs = []
    for label, case in cases.items():
        for isa in isas:
            runs.append((f"{label} [{isa}]", isa, case["run"]))
    tanh_runs = {}
    for dtype in ("float32", "float64"):
        run, count = tanh_run(np.dtype(dtype).type, 16 << 20)
        tanh_runs[dtype] = count
        for isa in isas:
            runs.append((f"tanh {dtype} [{isa}]", isa, run))
    streams = {}
    for label, case in cases.items():
        size = case["bytes"] // case["steps"]
        if size not in streams:
            readers, nbytes = stream_runs(size)
            streams[size] = nbytes
            for k, reader in enumerate(readers):
                runs.append((f"stream read {size / 1e6:.1f} MB #{k}", None, reader))

    if others:
        # What users would write instead (widest clone for ours).
        from compare_flow_field import numpy_chunked, torch_eager
        from compare_simulate_dense import numpy_expression, user_code

        m, n = np.ascontiguousarray(flow_net.m), np.ascontiguousarray(flow_net.n)
        kappa32 = grid.astype(np.float32)
        runs.append(("numpy chunked flow field", None, lambda: numpy_chunked(m, n, kappa32)))
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            torch.set_num_threads(1)
            tm, tn, tk = torch.from_numpy(m), torch.from_numpy(n), torch.from_numpy(kappa32)
            runs.append(("torch eager flow field", None, lambda: torch_eager(tm, tn, tk)))
        inputs = np.full((steps, N_INPUTS), 0.5)
        numpy64 = user_code(numpy_expression, networks["float64"], inputs)
        runs.append(("numpy expression float64", None, lambda: numpy64(steps)))

    print(f"{len(runs)} runs x {rounds} rounds, interleaved; clones: {', '.join(isas)}", flush=True)
    samples = interleaved(runs, rounds)
    set_kernel_isa(isas[0])
    median = {label: float(np.median(values)) for label, values in samples.items()}

    results = dict(isas=isas, median_s=median, samples_s=samples, cases={}, limits={}, targets=[])
    tanh_rate = {f"{dtype} [{isa}]": tanh_runs[dtype] / median[f"tanh {dtype} [{isa}]"]
                 for dtype in ("float32", "float64") for isa in isas}
    bandwidth = {size: nbytes / min(median[f"stream read {size / 1e6:.1f} MB #{k}"] for k in (0, 1))
                 for size, nbytes in streams.items()}
    results["limits"] = dict(tanh_values_per_s=tanh_rate, stream_bytes_per_s={str(k): v for k, v in bandwidth.items()})

    print("\nlimits measured in this run")
    for key, rate in tanh_rate.items():
        print(f"  SIMD tanh {key:24s} {rate / 1e9:6.2f} G values/s")
    for size, rate in bandwidth.items():
        print(f"  streaming read {size / 1e6:8.1f} MB working set {rate / 1e9:6.1f} GB/s")

    print(f"\n{'kernel [clone]':48s} {'ms/step':>9s} {'vs avx2':>8s} {'mem lim':>8s} {'tanh lim':>8s} "
          f"{'limit frac':>10s}")
    for label, case in cases.items():
        size = case["bytes"] // case["steps"]
        for isa in isas:
            key = f"{label} [{isa}]"
            per_step = median[key] / case["steps"]
            memory_s = size / bandwidth[size]
            tanh_s = case["tanh"] / case["steps"] / tanh_rate[f"{case['dtype']} [{isa}]"]
            fraction = max(memory_s, tanh_s) / per_step
            versus = median.get(f"{label} [avx2]", np.nan) / median[key]
            results["cases"][key] = dict(ms_per_step=1e3 * per_step, memory_limit_ms=1e3 * memory_s,
                                         tanh_limit_ms=1e3 * tanh_s, limit_fraction=fraction,
                                         speedup_vs_avx2=versus)
            extra = f"   {1e9 * per_step / (200 * args.sparse_neurons):.2f} ns/connection" if label.startswith("sparse") else ""
            print(f"  {key:46s} {1e3 * per_step:9.3f} {versus:8.2f} {1e3 * memory_s:8.3f} {1e3 * tanh_s:8.3f} "
                  f"{fraction:10.2f}{extra}")

    # The batched kernel per neuron and trial, against its clone's tanh alone (what the tanh part costs at best).
    for label, case in cases.items():
        if case["trials"] > 1 and case["tanh"] > 0:
            print(f"\n{label}, per neuron-trial")
            for isa in isas:
                total = 1e9 * median[f"{label} [{isa}]"] / (case["steps"] * case["trials"] * args.n_neurons)
                tanh_ns = 1e9 / tanh_rate[f"{case['dtype']} [{isa}]"]
                print(f"  [{isa}] {total:.3f} ns: the tanh alone {tanh_ns:.3f} ns, the rest {total - tanh_ns:.3f} ns")
                results["cases"][f"{label} [{isa}]"].update(ns_per_neuron_trial=total, tanh_ns_per_value=tanh_ns)

    widest = isas[0]
    print(f"\ntargets (clone {widest})")
    fastest = {label: float(np.min(values)) for label, values in samples.items()}
    for name, ours, theirs, required in TARGETS:
        ours_key = f"{ours} [{widest}]"
        theirs_key = f"{theirs} [{widest}]" if theirs.startswith("dense") else theirs
        if ours_key not in median or theirs_key not in median:
            continue
        ratios = []
        for times in (median, fastest):
            if theirs.startswith("dense"):  # B=8 vs B=1: trial-steps per second
                ratios.append((cases[ours]["trials"] / times[ours_key]) / (cases[theirs]["trials"] / times[theirs_key]))
            else:
                ratios.append(times[theirs_key] / times[ours_key])
        ratio, ratio_of_minima = ratios
        passed = ratio >= required
        results["targets"].append(dict(target=name, ratio=ratio, ratio_of_minima=ratio_of_minima, required=required,
                                       passed=bool(passed)))
        print(f"  {name:46s} {ratio:7.2f}x  (of minima {ratio_of_minima:5.2f}x; target >= {required}x)  "
              f"{'PASS' if passed else 'FAIL'}")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--cases", help="only the kernels whose label contains this text, e.g. 'dense latent "
                        "float32' (B = 1, B = 8 and B = 8 without the tanh); skips what users would write instead")
    parser.add_argument("--rounds", type=int, help="rounds (default 7, 3 with --quick)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.steps = 10 if args.quick else 40
    args.n_neurons = 1_000_000
    args.flow_neurons = 100_000
    args.sparse_neurons = 100_000
    if not extension_built("_simulate_dense_cpp") or not extension_built("_flow_field_cpp"):
        print("the C++ modules are not built here: nothing to compare")
        return None
    print(f"CPU: {platform.processor() or platform.machine()}, widest clone {cpu_isa()}; "
          f"load average {os.getloadavg()[0]:.1f} (CPU time, one thread)")
    results = measure(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return results


if __name__ == "__main__":
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    main()
