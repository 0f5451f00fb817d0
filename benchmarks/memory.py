"""Peak memory of simulate() on the latent path, float32, latents recorded.

Each case runs in a fresh subprocess, which samples the network, warms the
backend up on a tiny network, then restarts the kernel's peak-RSS count
(/proc/self/clear_refs, Linux) and runs simulate(). Reported:

* loadings: bytes of m, n, I, b (network.nbytes);
* before: resident memory entering simulate() (interpreter, libraries, loadings);
* simulate peak: the peak resident memory during simulate();
* beyond loadings: simulate peak - loadings (interpreter and libraries included);
* simulate's own: simulate peak - before (what the call allocates at its peak);
* sampling peak: the peak while Gaussian.sample built the network.

    python benchmarks/memory.py                  # N = 1e7 on every backend, N = 1e8 on the compiled ones
    python benchmarks/memory.py --json out.json
"""

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

N_STEPS = {10_000_000: 20, 100_000_000: 3}
KAPPA0 = (1.0, -0.5)
GIB = 2**30


def status_bytes(field):
    """VmRSS or VmHWM of this process, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def status_bytes_meminfo(field):
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/meminfo")


def reset_peak():
    """Restart VmHWM at the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def child(n_neurons, backend, n_steps):
    """Measure one case in this process and print it as one JSON line."""
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        from connector_sim import Gaussian, simulate

    cov = np.diag([1.0, 1.0, 4.0, 4.0, 1.0])
    cov[0, 2] = cov[2, 0] = cov[1, 3] = cov[3, 1] = 1.6
    distribution = Gaussian(np.zeros(5), cov, rank=2, n_inputs=1)
    simulate(distribution.sample(1000, 1, dtype=np.float32), n_steps=2, path="latent", backend=backend, seed=0)

    start = time.perf_counter()
    network = distribution.sample(n_neurons, 0, dtype=np.float32)
    sampling_seconds = time.perf_counter() - start
    sampling_peak = status_bytes("VmHWM")
    before = status_bytes("VmRSS")
    peak_was_reset = reset_peak()
    start = time.perf_counter()
    result = simulate(network, n_steps=n_steps, path="latent", backend=backend, seed=0, kappa0=KAPPA0)
    simulate_seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM")
    print(json.dumps(dict(
        n_neurons=n_neurons, backend=backend, n_steps=n_steps, loadings=network.nbytes, before=before,
        simulate_peak=peak, beyond_loadings=peak - network.nbytes, simulate_own=peak - before,
        sampling_peak=sampling_peak, peak_was_reset=peak_was_reset, kappa_bytes=result.kappa.nbytes,
        sampling_seconds=sampling_seconds, simulate_seconds=simulate_seconds,
        kernel_seconds=result.wall_time)))


def usable_backends():
    code = ("import warnings; warnings.simplefilter('ignore'); import connector_sim; "
            "from connector_sim._kernels import simulate_dense as s\n"
            "for b in connector_sim.available_backends():\n"
            "    try: s.kernels(b); print(b)\n"
            "    except ImportError: pass")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the numbers to this JSON file")
    parser.add_argument("--child", nargs=3, metavar=("N", "BACKEND", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n_neurons, backend, n_steps = args.child
        child(int(n_neurons), backend, int(n_steps))
        return

    backends = usable_backends()
    compiled = [backend for backend in backends if backend != "numpy"] or ["numpy"]
    cases = [(10_000_000, backend) for backend in backends] + [(100_000_000, backend) for backend in compiled]
    print(f"usable backends: {backends}; latent path, float32, R = 2, D = 1; GiB = 2**30 bytes")
    print(f"{'N':>6s} {'backend':8s} {'steps':>5s} {'loadings':>9s} {'before':>8s} {'peak':>8s} "
          f"{'beyond loadings':>15s} {'simulate own':>12s} {'sampling peak':>13s} {'s/step':>7s} {'sample s':>8s}")
    rows = []
    for n_neurons, backend in cases:
        command = [sys.executable, __file__, "--child", str(n_neurons), backend, str(N_STEPS[n_neurons])]
        completed = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
        if completed.returncode != 0:
            print(f"{n_neurons:6.0e} {backend:8s} failed:\n{completed.stderr}")
            continue
        row = json.loads(completed.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{n_neurons:6.0e} {backend:8s} {row['n_steps']:5d} {row['loadings'] / GIB:9.3f} "
              f"{row['before'] / GIB:8.3f} {row['simulate_peak'] / GIB:8.3f} {row['beyond_loadings'] / GIB:15.3f} "
              f"{row['simulate_own'] / GIB:12.3f} {row['sampling_peak'] / GIB:13.3f} "
              f"{row['kernel_seconds'] / row['n_steps']:7.3f} {row['sampling_seconds']:8.1f}"
              + ("" if row["peak_was_reset"] else "  (peak not resettable: includes sampling)"), flush=True)
    total = status_bytes_meminfo("MemTotal")
    for row in rows:
        if row["n_neurons"] == 10_000_000:
            verdict = "PASS" if row["beyond_loadings"] <= 1e9 else "FAIL"
            print(f"{verdict}  N = 1e7 [{row['backend']}]: {row['beyond_loadings'] / 1e9:.3f} GB beyond the "
                  "loadings (target <= 1 GB)")
        else:
            verdict = "PASS" if row["simulate_peak"] < total else "FAIL"
            print(f"{verdict}  N = 1e8 [{row['backend']}]: peak {row['simulate_peak'] / 1e9:.2f} GB "
                  f"(sampling {row['sampling_peak'] / 1e9:.2f} GB), machine {total / 1e9:.1f} GB")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(rows, stream, indent=1)


if __name__ == "__main__":
    main()
