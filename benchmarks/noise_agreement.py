"""How far each backend's private-noise normals are from the NumPy reference (README's noise guarantee).

    python benchmarks/noise_agreement.py [--draws 2000000]

For each generator (the Cython module behind ``private_noise``, the numba and
the cpp kernels' own Box-Muller, float64 and float32) prints how many draws
differ from ``counter_rng.standard_normal`` (the specification; float32 draws
against the float32-rounded reference) and the largest absolute difference.
The 64 random bits are the same everywhere; the differences come from the
log, cos and sin each backend uses.
"""

import argparse

import numpy as np

from connector_sim._backends import extension_built, load_extension
from connector_sim._kernels import counter_rng


def generators():
    found = {}
    if extension_built("_counter_rng"):
        found["cython (private_noise)"] = load_extension("_counter_rng").standard_normal
    try:
        import numba

        from connector_sim._kernels._simulate_dense_numba import _fill_noise
    except ImportError:
        pass
    else:
        fill = numba.njit(lambda key, out: _fill_noise(key, 0, 1.0, out))

        def numba_normals(seed, trial, step, n):
            out = np.empty(n)
            fill(counter_rng.step_key(seed, trial, step), out)
            return out

        found["numba float64"] = numba_normals
    if extension_built("_simulate_dense_cpp"):
        ext = load_extension("_simulate_dense_cpp")
        found["cpp float64"] = lambda seed, trial, step, n: ext.standard_normal(seed, trial, step, n, np.float64)
        found["cpp float32"] = lambda seed, trial, step, n: ext.standard_normal(seed, trial, step, n, np.float32)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2_000_000)
    args = parser.parse_args(argv)
    per_key = 100_000
    n_keys = max(1, args.draws // per_key)
    stats = {name: [0, 0.0] for name in generators()}
    found = generators()
    for seed in range(n_keys):
        reference = counter_rng.standard_normal(seed, 3, seed % 2, per_key)
        for name, generate in found.items():
            draws = generate(seed, 3, seed % 2, per_key)
            want = reference.astype(draws.dtype)
            stats[name][0] += int(np.count_nonzero(draws != want))
            stats[name][1] = max(stats[name][1], float(np.max(np.abs(draws.astype(np.float64) - reference))))
    total = n_keys * per_key
    for name, (unequal, worst) in stats.items():
        print(f"{name:24s} {unequal:9d} of {total} draws differ from the reference; max |difference| {worst:.3g}")


if __name__ == "__main__":
    main()
