"""The flow field of a sampled network side by side with what a user would write instead.

One thread, G = 900 latent points (a 30 x 30 grid), N = 1e5 neurons, rank
R = 2, float32: out[p] = n^T tanh(m kappa_p) / N, G x N = 9e7 tanh
evaluations. For each case the script prints the median and minimum CPU time
of one evaluation of the whole grid, the ratios against the project's targets
with PASS/FAIL, and how close the kernel gets to this machine's tanh limit
(the same SIMD tanh alone, evaluated G x N times on data in cache).

    python benchmarks/compare_flow_field.py            # ~3-5 minutes here
    python benchmarks/compare_flow_field.py --quick    # ~1 minute, fewer repeats
    python benchmarks/compare_flow_field.py --json out.json

Times are CPU time (time.process_time): everything runs on one thread, so it
equals wall time on an idle machine and ignores time stolen by other
processes on a busy one.
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
    import connector_sim  # noqa: E402
from connector_sim import Gaussian, latent_velocity  # noqa: E402
from connector_sim._kernels import flow_field  # noqa: E402
from connector_sim.synthetic import latent_grid  # noqa: E402

RANK = 2
GRID_PER_AXIS = 30  # G = 900 points
EXTENT = 2.0
CHUNK_ROWS = 64  # grid rows per NumPy chunk: a (64, N) temporary, as a careful user would do

#: (name, ours, theirs, required ratio): "ours" must be this many times faster than "theirs".
TARGETS = [
    ("float32 vs chunked NumPy", "numpy chunked float32", 4.0),
    ("float32 vs torch eager", "torch eager float32", 30.0),
]


def sample_network(n_neurons, dtype):
    """Rank 2, no inputs, no bias; overlap cov(m_r, n_r) = 1.6 so tanh works away from 0."""
    cov = np.diag([1.0, 1.0, 4.0, 4.0])
    cov[0, 2] = cov[2, 0] = cov[1, 3] = cov[3, 1] = 1.6
    return Gaussian(np.zeros(4), cov, rank=RANK).sample(n_neurons, 0, dtype=dtype)


def cpu_times(run, repeats, min_seconds=0.0):
    """CPU seconds of ``run()`` over ``repeats`` calls after one untimed warm-up call."""
    run()
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        samples.append(time.process_time() - start)
        if min_seconds and sum(samples) > min_seconds and len(samples) >= 3:
            break
    return samples


# --- what a user would write instead ---------------------------------------------------


def numpy_chunked(m, n, kappa):
    """z = kappa @ m.T in chunks of grid rows, np.tanh in place, @ n / N (arrays in the network's dtype)."""
    N = m.shape[0]
    out = np.empty((len(kappa), n.shape[1]), dtype=m.dtype)
    for start in range(0, len(kappa), CHUNK_ROWS):
        z = kappa[start:start + CHUNK_ROWS] @ m.T
        np.tanh(z, out=z)
        out[start:start + CHUNK_ROWS] = z @ n / N
    return out


def torch_eager(m, n, kappa):
    """The one-line expression with torch tensors on the CPU (a G x N temporary)."""
    import torch

    with torch.no_grad():
        return torch.tanh(kappa @ m.T) @ n / m.shape[0]


# --- the run ------------------------------------------------------------------------------


def measure(args):
    network = sample_network(args.n_neurons, np.float32)
    grid = latent_grid(GRID_PER_AXIS, EXTENT)
    G, N = len(grid), args.n_neurons
    results = {}

    def record(label, run, repeats=args.repeats, min_seconds=0.0):
        samples = [1e3 * s for s in cpu_times(run, repeats, min_seconds)]
        results[label] = dict(median_ms=float(np.median(samples)), min_ms=float(np.min(samples)), samples_ms=samples)
        print(f"  {label:44s} {np.median(samples):10.1f} {np.min(samples):10.1f}   x {len(samples)}", flush=True)

    print(f"{'case (one evaluation of the grid)':46s} {'median':>10s} {'min':>10s}   (CPU ms)")
    m, n = np.ascontiguousarray(network.m), np.ascontiguousarray(network.n)
    kappa32 = grid.astype(np.float32)
    record("numpy chunked float32", lambda: numpy_chunked(m, n, kappa32))
    try:
        import torch
    except ImportError:
        print("  torch eager float32: torch is not installed, skipped")
    else:
        torch.set_num_threads(1)
        tm, tn, tk = torch.from_numpy(m), torch.from_numpy(n), torch.from_numpy(kappa32)
        record("torch eager float32", lambda: torch_eager(tm, tn, tk), repeats=max(1, args.repeats // 2))

    loadings = (network.m_T, network.n_T, network.I_T, network.b)
    v = np.zeros((G, 0))
    out = np.empty((G, RANK))
    backends = flow_field.available_backends()
    for backend in backends:
        kernel = flow_field.kernel(backend)
        repeats = args.repeats if backend != "numpy" else max(1, args.repeats // 3)
        record(f"kernel [{backend}] float32", lambda: kernel(*loadings, "tanh", grid, v, out), repeats)
        if backend != "numpy":
            # Everything but the tanh: the same kernel with phi = identity.
            record(f"kernel [{backend}] float32 identity", lambda: kernel(*loadings, "identity", grid, v, out),
                   repeats)
    fastest = backends[0]
    # The public call converts the float32 loadings to float64 (so that root
    # finders see a smooth flow): it runs the float64 kernel.
    record(f"latent_velocity [{fastest}] (public, float64 math)",
           lambda: latent_velocity(network, grid, backend=fastest))

    limit = None
    if flow_field.available_backends()[0] == "cpp":
        from connector_sim._ext import _flow_field_cpp as ext

        # The kernel's SIMD tanh alone on 4096 values in L1 (shifted by k 2^-20 in repeat k, so
        # that nothing can be hoisted out of the repeats), to G x N evaluations.
        x = np.linspace(-3.0, 3.0, 4096, dtype=np.float32)
        acc = np.zeros_like(x)
        n_repeats = G * N // x.size
        record("SIMD tanh alone float32 (G x N values)", lambda: ext.tanh_repeated(x, acc, n_repeats))
        limit = results["SIMD tanh alone float32 (G x N values)"]["median_ms"] * G * N / (n_repeats * x.size)
    return results, fastest, limit


def check_targets(results, fastest):
    ours = results[f"kernel [{fastest}] float32"]
    rows = []
    for name, theirs_label, required in TARGETS:
        if theirs_label not in results:
            continue
        theirs = results[theirs_label]
        ratio = theirs["median_ms"] / ours["median_ms"]
        rows.append(dict(target=name, ours=f"kernel [{fastest}] float32", theirs=theirs_label,
                         ours_ms=ours["median_ms"], theirs_ms=theirs["median_ms"], ratio=ratio,
                         ratio_of_minima=theirs["min_ms"] / ours["min_ms"], required=required,
                         passed=bool(ratio >= required)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-neurons", type=lambda text: int(float(text)), default=100_000)
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per case")
    parser.add_argument("--quick", action="store_true", help="--repeats 3")
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 3

    G = GRID_PER_AXIS**2
    print(f"connector_sim {connector_sim.__version__}, numpy {np.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"G = {G} points, N = {args.n_neurons:.0e}, R = {RANK}, float32, one thread, CPU time; "
          f"flow-field backends: {flow_field.available_backends()}\n")

    results, fastest, limit = measure(args)
    targets = check_targets(results, fastest)

    print("\nTargets (ratio of medians; ratio of minima in brackets):")
    for row in targets:
        verdict = "PASS" if row["passed"] else "FAIL"
        print(f"  {verdict}  {row['target']:26s} {row['ratio']:7.1f}x ({row['ratio_of_minima']:6.1f}x) "
              f">= {row['required']:.0f}x   {row['ours']}: {row['ours_ms']:.1f} ms vs {row['theirs']}: "
              f"{row['theirs_ms']:.1f} ms")
    bound = None
    if limit is not None:
        ours = results[f"kernel [{fastest}] float32"]["median_ms"]
        identity = results[f"kernel [{fastest}] float32 identity"]["median_ms"]
        bound = dict(tanh_limit_ms=limit, kernel_ms=ours, percent_of_limit=100 * limit / ours,
                     kernel_identity_ms=identity, kernel_tanh_part_ms=ours - identity)
        print(f"\ntanh limit here: {G} x {args.n_neurons:.0e} = {G * args.n_neurons:.1e} evaluations of the SIMD "
              f"tanh alone take {limit:.1f} ms;\n  the kernel takes {ours:.1f} ms = {bound['percent_of_limit']:.0f}% "
              f"of that limit; with phi = identity it takes {identity:.1f} ms, so its tanh part is "
              f"{ours - identity:.1f} ms.")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(dict(n_neurons=args.n_neurons, n_points=G, rank=RANK, fastest_backend=fastest,
                           timings=results, targets=targets, tanh_limit=bound), stream, indent=1)
        print(f"\nwrote {args.json}")
    return targets


if __name__ == "__main__":
    main()
