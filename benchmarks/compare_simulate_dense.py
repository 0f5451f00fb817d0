"""connector_sim.simulate side by side with what a user would write instead.

One thread, N neurons (default 1e6), rank R = 2, one input. For each case the
script prints the median and minimum over repeated runs of ms per step, the
ratios against the project's targets with PASS/FAIL, the memory roofline, and
how much of a simulate() call is Python-side preparation rather than kernel.

    python benchmarks/compare.py simulate_dense                 # ~5-10 minutes
    python benchmarks/compare.py simulate_dense --quick         # ~1-2 minutes, fewer steps and repeats
    python benchmarks/compare.py simulate_dense --json out.json

Times are CPU time (time.process_time): everything runs on one thread, so it
equals wall time on an idle machine and ignores time stolen by other processes
on a busy one.
"""

import os

# Before numpy / torch / numba load their thread pools.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # missing compiled modules are reported below
    import connector_sim  # noqa: E402
from connector_sim import Gaussian, simulate  # noqa: E402
from connector_sim._kernels import simulate_dense  # noqa: E402

torch.set_num_threads(1)

RANK = 2
N_INPUTS = 1
ALPHA = 0.1
NOISE_STD = 0.5
N_TRIALS_BATCHED = 8
DRAM_BYTES_PER_S = 35e9  # one-thread DRAM STREAM triad here (shared/research/performance.md)
SECONDS_PER_RUN = 1.5  # fewer steps than --steps for cases slower than this per run
MIN_STEPS = 10

#: (name, ours, theirs, required ratio): "ours" must be this many times faster
#: per step than "theirs"; the batched targets compare trial-steps per second.
TARGETS = [
    ("float32 vs NumPy expression", "simulate full float32 B=1", "numpy expression float32", 2.2),
    ("float32 vs NumPy expression", "simulate latent float32 B=1", "numpy expression float32", 2.2),
    ("float32 vs torch eager", "simulate full float32 B=1", "torch eager float32", 8.0),
    ("float32 vs torch eager", "simulate latent float32 B=1", "torch eager float32", 8.0),
    ("float64 vs NumPy expression", "simulate full float64 B=1", "numpy expression float64", 2.5),
    ("float64 vs NumPy expression", "simulate latent float64 B=1", "numpy expression float64", 2.5),
    ("noise vs NumPy + Generator", "simulate full+noise float32 B=1", "numpy expression+noise float32", 8.0),
    ("batched full B=8 vs B=1", "simulate full float32 B=8", "simulate full float32 B=1", 2.5),
    ("batched latent B=8 vs B=1", "simulate latent float32 B=8", "simulate latent float32 B=1", 4.0),
]


def sample_network(n_neurons, dtype):
    """Rank-2, one-input Gaussian network (rows [m1, m2, n1, n2, I]), overlap 1.6 on each rank."""
    cov = np.diag([1.0, 1.0, 4.0, 4.0, 1.0])
    cov[0, 2] = cov[2, 0] = cov[1, 3] = cov[3, 1] = 1.6
    distribution = Gaussian(np.zeros(5), cov, rank=RANK, n_inputs=N_INPUTS)
    return distribution.sample(n_neurons, 0, dtype=dtype)


def initial_latents(n_trials):
    return np.array([1.0, -0.5]) + 0.1 * np.arange(n_trials)[:, None]


def usable_backends():
    """Backends whose kernels import (available_backends() lists numba as soon as numba imports)."""
    usable = []
    for backend in connector_sim.available_backends():
        try:
            simulate_dense.kernels(backend)
        except ImportError:
            continue
        usable.append(backend)
    return usable


def ms_per_step(run, max_steps, repeats, min_steps=MIN_STEPS):
    """CPU ms per step of ``run(n_steps)``: all samples, and the number of steps per sample.

    An untimed run warms up (JIT compilation, first page touches), a second
    short one sizes the timed runs: at most ``max_steps`` steps, fewer when a
    run would exceed SECONDS_PER_RUN.
    """
    run(min_steps)
    start = time.process_time()
    run(min_steps)
    estimate = (time.process_time() - start) / min_steps
    n_steps = max(min_steps, min(max_steps, int(SECONDS_PER_RUN / max(estimate, 1e-9))))
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        run(n_steps)
        samples.append((time.process_time() - start) / n_steps * 1e3)
    return samples, n_steps


# --- what a user would write instead ------------------------------------------------


def numpy_expression(m, n, I, b, u, x, n_steps):
    """x += a (-x + m (n^T tanh x) / N + I u_t + b), numpy arrays."""
    N, a = len(x), ALPHA
    for t in range(n_steps):
        x += a * (-x + m @ (n.T @ np.tanh(x)) / N + I @ u[t] + b)


def numpy_expression_noise(m, n, I, b, u, x, n_steps, rng):
    """The same with private noise sqrt(a) sigma xi_t from numpy's Generator, in the dtype of x."""
    N, a, scale = len(x), ALPHA, math.sqrt(ALPHA) * NOISE_STD
    for t in range(n_steps):
        x += a * (-x + m @ (n.T @ np.tanh(x)) / N + I @ u[t] + b) + scale * rng.standard_normal(N, dtype=x.dtype)


def numpy_in_place(m, n, I, b, u, x, n_steps):
    """The same step with two preallocated buffers and out= (no other N-sized temporaries)."""
    N, a = len(x), x.dtype.type(ALPHA)
    rates, drive = np.empty_like(x), np.empty_like(x)
    for t in range(n_steps):
        np.tanh(x, out=rates)
        np.matmul(m, (n.T @ rates) / N, out=drive)
        np.matmul(I, u[t], out=rates)
        drive += rates
        drive += b
        drive -= x
        drive *= a
        x += drive


def numpy_batched(m, n, I, b, u, x, n_steps):
    """B trials at once, x of shape (B, N)."""
    N, a = x.shape[1], ALPHA
    for t in range(n_steps):
        x += a * (-x + (np.tanh(x) @ n / N) @ m.T + u[t] @ I.T + b)


def torch_eager(m, n, I, b, u, x, n_steps, generator=None):
    """The NumPy expression with torch tensors on the CPU; private noise from torch.randn if a generator is given."""
    N, a, scale = len(x), ALPHA, math.sqrt(ALPHA) * NOISE_STD
    with torch.no_grad():
        for t in range(n_steps):
            if generator is None:
                x += a * (-x + m @ (n.T @ torch.tanh(x)) / N + I @ u[t] + b)
            else:
                x += (a * (-x + m @ (n.T @ torch.tanh(x)) / N + I @ u[t] + b)
                      + scale * torch.randn(N, generator=generator, dtype=x.dtype))


def user_code(step_function, network, inputs, n_trials=1, module="numpy", **extra):
    """``run(n_steps)`` for a baseline, on neuron-major (N, R) arrays as a user would hold them."""
    dtype = network.dtype
    x = (initial_latents(n_trials) @ network.m_T.astype(np.float64)).astype(dtype)
    arrays = dict(m=np.ascontiguousarray(network.m), n=np.ascontiguousarray(network.n),
                  I=np.ascontiguousarray(network.I), b=network.b.copy(), u=inputs.astype(dtype),
                  x=x[0].copy() if n_trials == 1 else x)
    if module == "torch":
        arrays = {name: torch.from_numpy(value) for name, value in arrays.items()}
    return lambda n_steps: step_function(**arrays, n_steps=n_steps, **extra)


# --- connector_sim ----------------------------------------------------------------------


def ours(network, inputs, backend, path, n_trials, noise):
    """simulate(), the whole public call, ``n_steps`` steps (n_trials initial conditions)."""
    kappa0 = initial_latents(n_trials)
    options = dict(kappa0=kappa0 if n_trials > 1 else kappa0[0], path=path, backend=backend, seed=0,
                   noise_std=NOISE_STD if noise else 0.0)

    def run(n_steps):
        simulate(network, inputs=inputs[:n_steps], **options)

    return run


def kernel_only(network, inputs, backend, path):
    """The backend's kernel called directly with prebuilt arrays (what simulate() calls)."""
    full_path, latent_path = simulate_dense.kernels(backend)
    dtype, N = network.dtype, network.n_neurons
    loadings = (network.m_T, network.n_T, network.I_T, network.b, network.activation)
    kappa = initial_latents(1)
    x = (kappa @ network.m_T.astype(np.float64)).astype(dtype)  # the state carries on from call to call
    no_clamp = (None, None, 0, 0)

    def run(n_steps):
        kappa_out = np.empty((1, n_steps + 1, RANK))
        if path == "latent":
            v = np.full((1, n_steps + 1, N_INPUTS), 0.5)
            decay = (1 - ALPHA) ** np.arange(n_steps + 1, dtype=np.float64)
            latent_path(*loadings, v, np.zeros((0, N), dtype), decay, ALPHA, kappa, kappa_out, no_clamp)
        else:
            u = np.ascontiguousarray(inputs[None, :n_steps], dtype)
            full_path(*loadings, x, u, ALPHA, 0.0, 0, 0, np.zeros(0, np.int64), kappa, kappa_out,
                      np.empty((1, n_steps + 1, 0), dtype), no_clamp)

    return run


# --- the run ------------------------------------------------------------------------------


def measure(args):
    backends = usable_backends()
    max_steps = args.steps
    inputs = (0.5 + 0.5 * np.sin(np.arange(max_steps) * 0.05))[:, None]
    results = {}

    def record(label, run, steps=max_steps, n_trials=1):
        samples, n_steps = ms_per_step(run, steps, args.repeats)
        samples = [value / n_trials for value in samples]  # per trial-step
        results[label] = dict(median_ms=float(np.median(samples)), min_ms=float(np.min(samples)),
                              samples_ms=samples, n_steps=n_steps, n_trials=n_trials)
        print(f"  {label:48s} {np.median(samples):9.3f} {np.min(samples):9.3f}   {n_steps:4d} x {args.repeats}",
              flush=True)

    print(f"{'case':50s} {'median':>9s} {'min':>9s}   steps x repeats (ms per step, trial-step for B=8)")
    networks = {}
    for dtype in ("float32", "float64"):
        networks[dtype] = network = sample_network(args.n_neurons, dtype)
        record(f"numpy expression {dtype}", user_code(numpy_expression, network, inputs))
        record(f"numpy out= {dtype}", user_code(numpy_in_place, network, inputs))
        record(f"numpy expression+noise {dtype}",
               user_code(numpy_expression_noise, network, inputs, rng=np.random.default_rng(0)))
        record(f"torch eager {dtype}", user_code(torch_eager, network, inputs, module="torch"))
        if dtype == "float32":
            record(f"torch eager+noise {dtype}", user_code(torch_eager, network, inputs, module="torch",
                                                           generator=torch.Generator().manual_seed(0)))
            record(f"numpy expression {dtype} B={N_TRIALS_BATCHED}",
                   user_code(numpy_batched, network, inputs, n_trials=N_TRIALS_BATCHED), n_trials=N_TRIALS_BATCHED)

    cases = [("full", "float32", 1, False), ("latent", "float32", 1, False), ("full", "float64", 1, False),
             ("latent", "float64", 1, False), ("full", "float32", 1, True),
             ("full", "float32", N_TRIALS_BATCHED, False), ("latent", "float32", N_TRIALS_BATCHED, False),
             ("full", "float32", N_TRIALS_BATCHED, True)]
    for backend in backends:
        for path, dtype, n_trials, noise in cases:
            if backend == "numpy" and n_trials > 1:
                continue  # the reference's batched runs are B times its B = 1 runs
            label = f"simulate {path}{'+noise' if noise else ''} {dtype} B={n_trials} [{backend}]"
            run = ours(networks[dtype], inputs, backend, path, n_trials, noise)
            record(label, run, max_steps if backend != "numpy" else max(MIN_STEPS, max_steps // 10), n_trials)
    return backends, networks, results, inputs


def best_of_backends(results):
    """For each simulate case, the backend with the lowest median."""
    best = {}
    for label, entry in results.items():
        if not label.startswith("simulate") or "[" not in label:
            continue
        case, backend = label[:-1].split(" [")
        if case not in best or entry["median_ms"] < results[f"{case} [{best[case]}]"]["median_ms"]:
            best[case] = backend
    return best


def check_targets(results, best):
    rows = []
    for name, our_case, their_case, required in TARGETS:
        if our_case not in best:
            continue
        ours_entry = results[f"{our_case} [{best[our_case]}]"]
        if their_case.startswith("simulate"):
            if their_case not in best:
                continue
            theirs_label = f"{their_case} [{best[our_case]}]"  # same backend: B=8 vs B=1
        else:
            theirs_label = their_case
        theirs_entry = results[theirs_label]
        ratio = theirs_entry["median_ms"] / ours_entry["median_ms"]
        ratio_min = theirs_entry["min_ms"] / ours_entry["min_ms"]
        rows.append(dict(target=name, ours=f"{our_case} [{best[our_case]}]", theirs=theirs_label,
                         ours_ms=ours_entry["median_ms"], theirs_ms=theirs_entry["median_ms"],
                         ratio=ratio, ratio_of_minima=ratio_min, required=required,
                         passed=bool(ratio >= required)))
    return rows


def roofline(networks, inputs, results, best, args):
    """Minimal DRAM traffic per step against the best backend's kernel and simulate() (B = 1, no noise)."""
    rows = []
    for path, dtype in (("full", "float32"), ("full", "float64"), ("latent", "float32"), ("latent", "float64")):
        case = f"simulate {path} {dtype} B=1"
        if case not in best:
            continue
        label = f"{case} [{best[case]}]"
        kernel_samples, _ = ms_per_step(kernel_only(networks[dtype], inputs, best[case], path),
                                        args.steps, args.repeats)
        kernel_ms = float(np.median(kernel_samples))
        # full: read x, m (R), n (R), I, b and write x; latent: read m, n, I, b only.
        arrays = 2 * RANK + 4 if path == "full" else 2 * RANK + 2
        nbytes = arrays * args.n_neurons * np.dtype(dtype).itemsize
        bound_ms = nbytes / DRAM_BYTES_PER_S * 1e3
        rows.append(dict(case=label, arrays=arrays, bytes_per_step=nbytes, bound_ms=bound_ms,
                         kernel_ms=kernel_ms, simulate_ms=results[label]["median_ms"],
                         percent_kernel=100 * bound_ms / kernel_ms,
                         percent_simulate=100 * bound_ms / results[label]["median_ms"]))
    return rows


def preparation_overhead(networks, inputs, best, args):
    """simulate() against its kernel called directly: the Python-side cost of one call."""
    rows = []
    for path in ("full", "latent"):
        case = f"simulate {path} float32 B=1"
        if case not in best:
            continue
        backend, network = best[case], networks["float32"]
        call = ours(network, inputs, backend, path, 1, False)
        kernel = kernel_only(network, inputs, backend, path)
        for n_steps in (1, args.steps):
            call(n_steps)
            kernel(n_steps)
            call_ms, kernel_ms = [], []
            for _ in range(args.repeats):
                start = time.process_time()
                call(n_steps)
                call_ms.append((time.process_time() - start) * 1e3)
                start = time.process_time()
                kernel(n_steps)
                kernel_ms.append((time.process_time() - start) * 1e3)
            call_median, kernel_median = float(np.median(call_ms)), float(np.median(kernel_ms))
            rows.append(dict(case=f"{path} float32 [{backend}]", n_steps=n_steps, call_ms=call_median,
                             kernel_ms=kernel_median, overhead_ms=call_median - kernel_median,
                             overhead_percent=100 * (call_median - kernel_median) / call_median))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="compare.py simulate_dense", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-neurons", type=lambda text: int(float(text)), default=1_000_000)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed run (fewer for slow cases)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case")
    parser.add_argument("--quick", action="store_true", help="--steps 40 --repeats 3")
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 40, 3

    print(f"connector_sim {connector_sim.__version__}, numpy {np.__version__}, torch {torch.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"N = {args.n_neurons:.0e}, R = {RANK}, D = {N_INPUTS}, alpha = {ALPHA}, one thread, CPU time; "
          f"built backends: {connector_sim.available_backends()}, usable: {usable_backends()}\n")

    backends, networks, results, inputs = measure(args)
    best = best_of_backends(results)
    targets = check_targets(results, best)
    bounds = roofline(networks, inputs, results, best, args)
    overhead = preparation_overhead(networks, inputs, best, args)

    print("\nTargets (ratio of medians; ratio of minima in brackets):")
    for row in targets:
        verdict = "PASS" if row["passed"] else "FAIL"
        print(f"  {verdict}  {row['target']:28s} {row['ratio']:6.2f}x ({row['ratio_of_minima']:5.2f}x) "
              f">= {row['required']:.1f}x   {row['ours']}: {row['ours_ms']:.3f} ms vs {row['theirs']}: "
              f"{row['theirs_ms']:.3f} ms")
    print(f"\nRoofline at {DRAM_BYTES_PER_S / 1e9:.0f} GB/s (one-thread DRAM), minimal traffic per step:")
    for row in bounds:
        print(f"  {row['case']:40s} {row['arrays']} x N x itemsize = {row['bytes_per_step'] / 1e6:5.1f} MB -> "
              f"{row['bound_ms']:.3f} ms; kernel {row['kernel_ms']:.3f} ms = {row['percent_kernel']:.0f}%, "
              f"whole simulate() {row['simulate_ms']:.3f} ms = {row['percent_simulate']:.0f}%")
    print("\nsimulate() vs its kernel called directly (float32, B = 1), ms per call:")
    for row in overhead:
        print(f"  {row['case']:28s} {row['n_steps']:4d} steps: call {row['call_ms']:8.2f}, kernel "
              f"{row['kernel_ms']:8.2f}, Python-side {row['overhead_ms']:6.2f} ({row['overhead_percent']:.0f}%)")

    if args.json:
        with open(args.json, "w") as stream:
            json.dump(dict(n_neurons=args.n_neurons, rank=RANK, n_inputs=N_INPUTS, alpha=ALPHA,
                           backends=backends, best_backend=best, timings=results,
                           targets=targets, roofline=bounds,
                           preparation_overhead=overhead), stream, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
