"""Error and CPU time of the Sinkhorn divergence: the converged default against GeomLoss's epsilon-scaling.

Two different 2-D clouds of n points (x ~ N(0, I); y ~ (N(1, 0.5^2), N(0, 1.5^2))), blur 0.05 (the default).
The reference value is the default method at tol=1e-10 (its dual-gap bound, printed, certifies it); each row
prints the relative error against it and the median CPU time of ``--repeats`` calls (one torch thread).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/sinkhorn_convergence.py [--sizes 200 1000] [--repeats 3]
"""

import argparse
import time

import numpy as np


def clouds(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2)), np.c_[rng.standard_normal(n) * 0.5 + 1.0, rng.standard_normal(n) * 1.5]


def timed(function, repeats):
    times, value = [], None
    for _ in range(repeats):
        start = time.process_time()
        value = function()
        times.append(time.process_time() - start)
    return value, float(np.median(times))


def main():
    from connector_sim.inference import sinkhorn_divergence

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blur", type=float, default=0.05)
    args = parser.parse_args()
    methods = [("newton tol=1e-5 (default)", dict()),
               ("newton tol=1e-3", dict(tol=1e-3)),
               ("geomloss scaling=0.5", dict(method="geomloss", scaling=0.5)),
               ("geomloss scaling=0.9", dict(method="geomloss", scaling=0.9))]
    for n in args.sizes:
        x, y = clouds(n)
        reference, seconds = timed(lambda: sinkhorn_divergence(x, y, blur=args.blur, tol=1e-10, max_iter=500), 1)
        print(f"n = {n}: reference (tol=1e-10) {reference:.10f}, {seconds:.2f} s CPU", flush=True)
        for name, options in methods:
            value, seconds = timed(lambda: sinkhorn_divergence(x, y, blur=args.blur, **options), args.repeats)
            print(f"  {name:28s} value {value:.10f}  relative error {abs(value - reference) / reference:.2e}  "
                  f"CPU {seconds:.3f} s", flush=True)


if __name__ == "__main__":
    main()
