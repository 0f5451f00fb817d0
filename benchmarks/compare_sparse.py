"""Sparse low-rank simulation side by side with what a user would write instead.

One Euler step of a rank-one network, float32, C connections per row, one
thread, CPU time (``time.process_time``, median of repeats):

- ours: the sparse kernels (cpp, numba) with a stored mask (uint16 offsets
  within the strata, in the kernels' tile order) and an implicit
  (regenerated) one, timed inside
  their time loop (``STEPS`` steps per call);
- scipy: ``J @ tanh(x)`` with J a ``scipy.sparse.csr_matrix`` holding float32
  weights (8 bytes per connection), the step a user would write.

The cases are timed in turn, ``REPEATS`` rounds, so that each sees the same
share of this noisy shared machine; the medians over rounds are reported.
Also reported: ns per connection (the random-gather limit of this machine is
about 1.1 ns per lookup, shared/research/performance.md section 1.3: the
kernels' tiles keep their gathers within one stratum of y, so they can beat
it) and the peak resident memory of ``simulate`` on the implicit mask, in a
fresh process.

Run: ``python benchmarks/compare_sparse.py`` (N = 1e6, C = 200) or
``--quick`` (N = 1e5).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

STEPS = 5
REPEATS = 5
GATHER_LIMIT_NS = 1.1


def _network(n_neurons, n_connections, representation):
    from connector_sim import rank_one_gaussian, sparsify

    dense = rank_one_gaussian(n_neurons, 1.0, 0.5, random_state=0, dtype=np.float32)
    return sparsify(dense, n_connections=n_connections, seed=1, representation=representation)


def kernel_stepper(network, backend):
    """A function returning the CPU seconds per step of one call of the sparse kernel (warmed up)."""
    from connector_sim._kernels import simulate_sparse

    full_path, _ = simulate_sparse.kernels(backend)
    N = network.n_neurons
    x = np.random.default_rng(0).standard_normal((1, N)).astype(np.float32)
    u = np.zeros((1, STEPS, 0), np.float32)
    kappa = np.zeros((1, 1))
    kappa_out = np.empty((1, STEPS + 1, 1))
    record_out = np.empty((1, STEPS + 1, 0), np.float32)
    args = (network.mask._kernel_args(), network.m_T, network.n_T, network.I_T, network.b, "tanh", network.weight,
            network.gain, x, u, 0.1, 0.0, 0, 0, np.zeros(0, np.int64), kappa, kappa_out, record_out)
    full_path(*args)

    def seconds_per_step():
        start = time.process_time()
        full_path(*args)
        return (time.process_time() - start) / STEPS

    return seconds_per_step


def scipy_stepper(network):
    """The same for ``x += alpha (-x + J tanh(x))`` with J a scipy CSR matrix of float32 weights."""
    J = network.to_scipy(np.float32)
    x = np.random.default_rng(0).standard_normal(network.n_neurons).astype(np.float32)
    alpha = np.float32(0.1)

    def seconds_per_step():
        start = time.process_time()
        for _ in range(STEPS):
            x[:] += alpha * (J @ np.tanh(x) - x)
        return (time.process_time() - start) / STEPS

    return seconds_per_step


_PEAK_SCRIPT = """
import sys
import numpy as np
from connector_sim import rank_one_gaussian, simulate, sparsify
N, C = int(sys.argv[1]), int(sys.argv[2])
network = sparsify(rank_one_gaussian(N, 1.0, 0.5, random_state=0, dtype=np.float32), n_connections=C, seed=1)
simulate(network, n_steps=10, kappa0=[1.0], noise_std=0.1, seed=0, backend=sys.argv[3])
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) parent across fork and exec.
with open("/proc/self/status") as status:
    print(next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")))
"""


def peak_memory(n_neurons, n_connections, backend):
    """Peak RSS in bytes of a fresh process that samples and simulates an implicit network."""
    output = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(n_neurons), str(n_connections), backend],
                            check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    return int(output.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1e5 instead of 1e6")
    parser.add_argument("--n-neurons", type=int, default=None)
    parser.add_argument("--n-connections", type=int, default=200)
    parser.add_argument("--backends", default="cpp,numba")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        import connector_sim  # noqa: F401
        from connector_sim._backends import available_backends, extension_built

    N = args.n_neurons or (100_000 if args.quick else 1_000_000)
    C = args.n_connections
    backends = [b for b in args.backends.split(",")
                if b in available_backends() and (b != "cpp" or extension_built("_simulate_sparse_cpp"))]
    results = {"n_neurons": N, "n_connections": C, "dtype": "float32", "threads": 1, "ms_per_step": {}}
    stored = _network(N, C, "stored")
    implicit = _network(N, C, "implicit")
    steppers = {"scipy_csr_f32_weights": scipy_stepper(stored)}
    for backend in backends:
        steppers[f"{backend}_stored"] = kernel_stepper(stored, backend)
        steppers[f"{backend}_implicit"] = kernel_stepper(implicit, backend)
    rounds = {name: [] for name in steppers}
    for _ in range(REPEATS):
        for name, step in steppers.items():
            rounds[name].append(step())
    median = {name: float(np.median(values)) for name, values in rounds.items()}
    results["ms_per_step"] = {name: 1e3 * value for name, value in median.items()}
    scipy_time = median["scipy_csr_f32_weights"]
    print(f"N = {N}, C = {C}, float32, 1 thread, CPU ms per Euler step (median of {REPEATS} rounds of "
          f"{STEPS} steps, the cases in turn)")
    print(f"  scipy CSR, stored f32 weights   {1e3 * scipy_time:8.1f} ms")
    for backend in backends:
        t_stored, t_implicit = median[f"{backend}_stored"], median[f"{backend}_implicit"]
        for name, seconds in (("stored", t_stored), ("implicit", t_implicit)):
            ns = seconds / (N * C) * 1e9
            print(f"  {backend:5s} {name:8s} mask            {1e3 * seconds:8.1f} ms   {ns:5.2f} ns/connection "
                  f"({ns / GATHER_LIMIT_NS:4.2f}x the {GATHER_LIMIT_NS} ns gather limit)   "
                  f"{scipy_time / seconds:4.2f}x faster than scipy")
        print(f"  {backend:5s} implicit / stored: {t_implicit / t_stored:4.2f} (target <= 1.2)")
    del stored
    if backends:
        peak = peak_memory(N, C, backends[0])
        results["peak_rss_bytes_implicit"] = peak
        print(f"  peak RSS, sample + simulate(N = {N}, C = {C}, implicit, {backends[0]}): {peak / 1e9:.2f} GB "
              "(target < 2 GB)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
