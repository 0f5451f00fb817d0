"""What running simulate in chunks of steps costs, and how fast Ctrl-C stops it.

    python benchmarks/simulate_chunks.py [--backends cpp numba] [--repeats 5]

At N = 1e6 (rank 2, float32, one thread): the wall time of simulate with its
default chunks against one kernel call for the whole run (medians), and the
time from a SIGINT sent in the middle of a long run to the KeyboardInterrupt.
"""

import os

for _variable in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import connector_sim as cs  # noqa: E402

simulate_module = importlib.import_module("connector_sim.simulate")
N = 1_000_000
CASES = [("latent", 0.0, 1, 400), ("full", 0.5, 1, 200), ("full", 0.5, 8, 40)]


def median_time(run, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def interrupt_latency(run, after):
    sent = []

    def fire():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(after, fire)
    timer.start()
    try:
        run()
    except KeyboardInterrupt:
        return time.perf_counter() - sent[0]
    finally:
        timer.cancel()
    return float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["cpp", "numba"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    network = cs.LowRankRNN(rng.standard_normal((N, 2), np.float32), rng.standard_normal((N, 2), np.float32),
                            dtype=np.float32)
    default_chunks = simulate_module._chunk_steps
    for backend in args.backends:
        for path, noise, B, T in CASES:
            kappa0 = rng.standard_normal((B, 2))

            def run(n_steps=T):
                cs.simulate(network, n_steps, backend=backend, path=path, noise_std=noise, seed=1, kappa0=kappa0)

            run(2)  # compile (numba)
            try:
                simulate_module._chunk_steps = lambda n_steps, *rest: n_steps
                whole = median_time(run, args.repeats)
            finally:
                simulate_module._chunk_steps = default_chunks
            chunked = median_time(run, args.repeats)
            steps = default_chunks(T, B, N, 2, 0, path, noise > 0, 0.0, 1)
            # 2.5 s into a run of 100,000 steps: past the set-up, inside the kernel loop.
            latency = interrupt_latency(lambda: run(100_000), 2.5)
            print(f"{backend:6s} {path:6s} noise={noise} B={B} T={T}: one call {whole * 1e3:.0f} ms, "
                  f"chunked {chunked * 1e3:.0f} ms ({steps} steps per chunk); SIGINT -> KeyboardInterrupt "
                  f"{latency * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
