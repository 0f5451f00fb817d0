"""Public paths against their kernels and against what a user would write (issue 17, items 3 and 4).

Four blocks, medians over interleaved rounds (so every case sees the same
share of a shared machine); the 1-minute load average is printed with each:

- flow: ``latent_velocity`` of a float32 network (G = 900 grid points,
  N = 1e5, rank 2) in float64 (the default) and with ``dtype="float32"``,
  against chunked float32 NumPy (CPU ms per grid);
- simulate: CPU ms per step of the full path (N = 1e6 and 1e7 float32, rank
  2, private noise) in calls of 16 steps against calls of 200 steps;
- sparse: ``simulate`` of a rank-one sparse network (C = 200 connections per
  row, float32, private noise) with ``backend="auto"`` and each backend, on a
  stored and an implicit mask, and scipy CSR ``x += alpha (J tanh(x) - x)``
  (CPU ms per step);
- threads: the full and latent paths at N = 1e6 with n_threads = 1, "auto"
  and 2, wall ms per step (threads need wall time).

    python benchmarks/compare_public_paths.py [--quick] [--json out.json]
    python benchmarks/compare.py public_paths [--quick]
"""

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    import connector_sim as cs  # noqa: E402
from connector_sim._backends import available_backends, extension_built  # noqa: E402
try:  # absent before n_threads="auto" (so that the script also measures the code before it)
    from connector_sim._threads import resolve_n_threads  # noqa: E402
except ImportError:
    resolve_n_threads = None
import inspect  # noqa: E402
from connector_sim.synthetic import latent_grid  # noqa: E402


def load():
    return os.getloadavg()[0]


def rounds(cases, n_rounds, clock=time.process_time):
    """{name: median seconds per unit} of cases {name: (run, units)}, timed in turn over n_rounds."""
    samples = {name: [] for name in cases}
    for run, _ in cases.values():
        run()  # warm-up (numba compilation, caches)
    for _ in range(n_rounds):
        for name, (run, units) in cases.items():
            start = clock()
            run()
            samples[name].append((clock() - start) / units)
    return {name: float(np.median(values)) for name, values in samples.items()}


def print_rows(title, medians, reference=None, unit="ms"):
    """One line per case; ratio = reference time / case time (> 1: the case is faster)."""
    print(f"-- {title} (load average {load():.1f})")
    for name, seconds in medians.items():
        ratio = f"   {medians[reference] / seconds:5.2f}x {reference}" if reference and name != reference else ""
        print(f"  {name:44s} {1e3 * seconds:9.3f} {unit}{ratio}", flush=True)


# --- flow -------------------------------------------------------------------------------------------------


def flow_block(n_rounds, n_neurons=100_000):
    cov = np.diag([1.0, 1.0, 4.0, 4.0])
    cov[0, 2] = cov[2, 0] = cov[1, 3] = cov[3, 1] = 1.6
    network = cs.Gaussian(np.zeros(4), cov, rank=2).sample(n_neurons, 0, dtype=np.float32)
    grid = latent_grid(30, 2.0)
    m, n, kappa32 = np.ascontiguousarray(network.m), np.ascontiguousarray(network.n), grid.astype(np.float32)

    def numpy_chunked():
        out = np.empty((len(kappa32), 2), np.float32)
        for start in range(0, len(kappa32), 64):
            z = kappa32[start:start + 64] @ m.T
            np.tanh(z, out=z)
            out[start:start + 64] = z @ n / n_neurons
        return out

    cases = {"latent_velocity (default: float64 math)": (lambda: cs.latent_velocity(network, grid), 1)}
    if "dtype" in inspect.signature(cs.latent_velocity).parameters:
        cases["latent_velocity dtype=float32"] = (lambda: cs.latent_velocity(network, grid, dtype=np.float32), 1)
    cases["numpy chunked float32"] = (numpy_chunked, 1)
    medians = rounds(cases, n_rounds)
    print_rows(f"flow field, G = {len(grid)}, N = {n_neurons}, float32 network, CPU ms per grid", medians,
               reference="numpy chunked float32")
    return medians


# --- simulate: short calls ----------------------------------------------------------------------------------


def short_calls_block(n_rounds, sizes):
    results = {}
    for N in sizes:
        rng = np.random.default_rng(0)
        network = cs.LowRankRNN(rng.standard_normal((N, 2), np.float32), rng.standard_normal((N, 2), np.float32),
                                dtype=np.float32)
        options = dict(kappa0=[0.5, -0.5], noise_std=0.5, seed=1, path="full", n_threads=1)
        cases = {
            f"N = {N:.0e}: 16-step calls": (lambda: cs.simulate(network, 16, **options), 16),
            f"N = {N:.0e}: 200-step calls": (lambda: cs.simulate(network, 200, **options), 200),
        }
        medians = rounds(cases, n_rounds)
        print_rows(f"simulate full path float32, noise, 1 thread, CPU ms per step (N = {N:.0e})", medians,
                   reference=f"N = {N:.0e}: 200-step calls")
        results.update(medians)
        del network
    return results


# --- sparse: auto against each backend ----------------------------------------------------------------------------


def sparse_block(n_rounds, N, C=200, steps=10):
    backends = ["auto"] + [b for b in ("cpp", "numba") if b in available_backends()
                           and (b != "cpp" or extension_built("_simulate_sparse_cpp"))]
    dense = cs.rank_one_gaussian(N, 1.0, 0.5, random_state=0, dtype=np.float32)
    results = {}
    for representation in ("stored", "implicit"):
        network = cs.sparsify(dense, n_connections=C, seed=1, representation=representation)
        cases = {}
        for backend in backends:
            def run(backend=backend, network=network):
                cs.simulate(network, steps, kappa0=[1.0], noise_std=0.1, seed=0, backend=backend, n_threads=1)

            cases[f"{representation} simulate backend={backend}"] = (run, steps)
        if representation == "stored":
            J = network.to_scipy(np.float32)
            x = np.random.default_rng(0).standard_normal(N).astype(np.float32)

            def scipy_steps():
                for _ in range(steps):
                    x[:] += np.float32(0.1) * (J @ np.tanh(x) - x)

            cases["scipy CSR f32 weights"] = (scipy_steps, steps)
        medians = rounds(cases, n_rounds)
        picked = cs.simulate(network, 1, kappa0=[1.0], noise_std=0.1, seed=0).backend
        print_rows(f"sparse R = 1, N = {N:.0e}, C = {C}, {representation} mask, CPU ms per step "
                   f"(auto picks {picked})", medians,
                   reference="scipy CSR f32 weights" if representation == "stored" else None)
        results.update(medians)
        del network
    return results


# --- threads ----------------------------------------------------------------------------------------------------------


def threads_block(n_rounds, N=1_000_000, steps=50):
    """Wall ms per step for n_threads = 1 and "auto" (interleaved), then 2.

    Not interleaved: after a multi-threaded call the OpenMP workers spin-wait
    for a while, and on a busy 2-core machine that alone slowed the next
    single-threaded call by ~30% (measured).
    """
    rng = np.random.default_rng(0)
    network = cs.LowRankRNN(rng.standard_normal((N, 2), np.float32), rng.standard_normal((N, 2), np.float32),
                            dtype=np.float32)
    results = {}
    for path, noise in (("full", 0.5), ("latent", 0.0)):
        def case(threads):
            def run():
                cs.simulate(network, steps, kappa0=[0.5, -0.5], noise_std=noise, seed=1, path=path,
                            n_threads=threads)

            return f"{path} n_threads={threads}", (run, steps)

        # 1 and "auto" interleaved; 2 threads after them (see the docstring).
        wall = rounds(dict(case(t) for t in ((1, "auto") if resolve_n_threads else (1,))), n_rounds,
                      clock=time.perf_counter)
        wall.update(rounds(dict([case(2)]), n_rounds, clock=time.perf_counter))
        auto = resolve_n_threads("auto", N) if resolve_n_threads else "-"
        print_rows(f"threads, N = {N:.0e} float32 {path} path, wall ms per step (auto resolves to {auto} now)",
                   wall, reference=f"{path} n_threads=1")
        results.update({f"{name} wall": value for name, value in wall.items()})
    return results


def crossover_block(n_rounds, sizes=(25_000, 50_000, 100_000, 200_000, 400_000, 1_000_000), steps=200):
    """Wall ms per step with 1 and with 2 threads over N: where does a second thread start to pay?

    This is the measurement behind ``MIN_WORK_PER_THREAD``; it only means
    something on an idle machine (the load average is printed). All 1-thread
    runs of a size come before its 2-thread runs (see :func:`threads_block`).
    """
    results = {}
    rng = np.random.default_rng(0)
    for path, noise in (("full", 0.5), ("latent", 0.0)):
        for N in sizes:
            network = cs.LowRankRNN(rng.standard_normal((N, 2), np.float32), rng.standard_normal((N, 2), np.float32),
                                    dtype=np.float32)
            n_steps = max(steps, int(steps * 1_000_000 // N) // 10)

            def case(threads):
                def run():
                    cs.simulate(network, n_steps, kappa0=[0.5, -0.5], noise_std=noise, seed=1, path=path,
                                n_threads=threads)

                return f"{path} N={N:.0e} n_threads={threads}", (run, n_steps)

            wall = rounds(dict([case(1)]), n_rounds, clock=time.perf_counter)
            wall.update(rounds(dict([case(2)]), n_rounds, clock=time.perf_counter))
            auto = resolve_n_threads("auto", N) if resolve_n_threads else "-"
            print_rows(f"crossover, N = {N:.0e} float32 {path} path, wall ms per step "
                       f"(auto resolves to {auto} now, load {load():.2f})", wall,
                       reference=f"{path} N={N:.0e} n_threads=1")
            results.update({f"{name} wall": value for name, value in wall.items()})
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1e6 only for short calls, N = 1e5 sparse")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--blocks", default="flow,short_calls,sparse,threads")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    n_rounds = args.rounds or (3 if args.quick else 7)
    blocks = args.blocks.split(",")
    results = {"load_average_start": load(), "cpus": os.cpu_count()}
    if "flow" in blocks:
        results["flow"] = flow_block(n_rounds)
    if "short_calls" in blocks:
        results["short_calls"] = short_calls_block(n_rounds, [1_000_000] if args.quick else [1_000_000, 10_000_000])
    if "sparse" in blocks:
        results["sparse"] = {}
        for N in ([100_000] if args.quick else [100_000, 1_000_000]):
            results["sparse"][N] = sparse_block(n_rounds, N)
    if "threads" in blocks:
        results["threads"] = threads_block(n_rounds)
    if "crossover" in blocks:  # not in the default blocks: needs an idle machine
        results["crossover"] = crossover_block(n_rounds)
    results["load_average_end"] = load()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
