"""Speed of the Connector's flow-matching CNF: sampling, densities, training, against the GEMM peak.

One thread. A Connector is fitted (1 epoch, the paper's 4 x 128 velocity
MLP) on a rank-2 network with one input and a bias, so the marginal CNF
models 4 coordinates (m1, m2, I, b); sampling uses the default 10 midpoint
steps (20 MLP evaluations per sample). The script times

- ``Connector.sample(n)`` for n = 1e5 and 1e6 (1e6 once, with ``--big``),
- ``Connector.marginal_.log_prob`` of 1e5 rows (reverse ODE, exact divergence),
- one training epoch of the marginal CNF (5,000 rows, batch 64, AdamW, EMA),
- ``torch.mm`` on 2048 x 2048 float32 matrices: this machine's GEMM peak,

and prints each as CPU seconds (median of interleaved repeats) and as a
fraction of the GEMM peak, counting only the MLP's matrix-product FLOPs
(2 * in * out per row and layer; densities: (1 + d) times the forward ones,
d = 4, the cost of the exact divergence; training: 3 times, forward and the
two backward products).

    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py            # ~1-2 minutes
    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py --big      # adds sample(1e6) once
    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py --json out.json

Run it against an older checkout with ``PYTHONPATH=<that checkout>``: it only
uses the public API. Times are CPU time (time.process_time).
"""

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    import connector_sim  # noqa: E402
from connector_sim import LowRankRNN, simulate  # noqa: E402
from connector_sim.inference import Connector, FlowMatchingCNF  # noqa: E402

import torch  # noqa: E402

HIDDEN, N_LAYERS, DIM, N_STEPS = 128, 4, 4, 10
N_TRAIN_ROWS, BATCH = 5000, 64


def fitted_connector(n_neurons=2000, seed=0):
    """A rank-2 network with one input and a bias; a Connector fitted for one epoch (the timing needs no more)."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n_neurons, 2))
    I = rng.standard_normal((n_neurons, 1))
    b = 0.3 * rng.standard_normal(n_neurons)
    n = 1.5 * m + rng.standard_normal((n_neurons, 2))
    network = LowRankRNN(m, n, I, b)
    result = simulate(network, inputs=rng.standard_normal((4, 30, 1)), kappa0=rng.standard_normal((4, 2)), dt=0.1)
    connector = Connector(n_epochs=1, hidden=HIDDEN, n_layers=N_LAYERS, n_steps=N_STEPS, device="cpu",
                          random_state=0, n_threads=1)
    return connector.fit(network, result.kappa, inputs=rng.standard_normal((4, 30, 1)))


def forward_flops(dim=DIM, hidden=HIDDEN, n_layers=N_LAYERS):
    """Matrix-product FLOPs of one MLP evaluation of one row."""
    return 2 * ((dim + 1) * hidden + (n_layers - 1) * hidden * hidden + hidden * dim)


def cpu_time(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return times


def gemm_peak(size=2048, repeats=5):
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    times = cpu_time(lambda: torch.mm(a, b, out=out), repeats)
    return 2 * size**3 / min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", action="store_true", help="also time Connector.sample(1_000_000), once")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"connector_sim {connector_sim.__file__}\ntorch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}")

    connector = fitted_connector()
    flow = connector.marginal_
    assert flow.dim_ == DIM and int(flow.free_.sum()) == DIM, (flow.dim_, flow.free_)
    rows = connector.sample_rows(100_000, random_state=1)[0]
    mIb = rows[:, connector.layout_.mIb]
    training_rows = mIb[:N_TRAIN_ROWS]
    connector.sample(1000, random_state=0)  # warm-up (and torch.compile, where it is used)
    flow.log_prob(mIb[:1000])

    def one_epoch(n_epochs):
        return FlowMatchingCNF(hidden=HIDDEN, n_layers=N_LAYERS, n_epochs=n_epochs, batch_size=BATCH,
                               device="cpu", random_state=0, n_threads=1).fit(training_rows)

    one_epoch(1)
    cases = {
        "sample 1e5": (lambda: connector.sample(100_000, random_state=2), 100_000 * 2 * N_STEPS * forward_flops()),
        "log_prob 1e5": (lambda: flow.log_prob(mIb), 100_000 * 2 * N_STEPS * (1 + DIM) * forward_flops()),
        # One epoch = fit(3 epochs) - fit(1 epoch) halved, so set-up costs cancel.
        "train epoch": (None, (3 * 0.8 * N_TRAIN_ROWS + VALIDATION_ROWS) * forward_flops()),
    }
    times = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved
        for name, (function, _) in cases.items():
            if function is None:
                three, one = cpu_time(lambda: one_epoch(3), 1)[0], cpu_time(lambda: one_epoch(1), 1)[0]
                times[name].append((three - one) / 2)
            else:
                times[name] += cpu_time(function, 1)
    if args.big:
        cases["sample 1e6"] = (None, 1_000_000 * 2 * N_STEPS * forward_flops())
        times["sample 1e6"] = cpu_time(lambda: connector.sample(1_000_000, random_state=2), 1)
    peak = gemm_peak()
    results = {"gemm_peak_gflops": peak / 1e9, "load": os.getloadavg()[0], "cases": {}}
    print(f"\ntorch.mm 2048^3 float32, 1 thread: {peak / 1e9:.1f} GFLOP/s (best of 5)\n")
    print(f"{'case':<14} {'median s':>9} {'min s':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for name, (_, flops) in cases.items():
        median, best = float(np.median(times[name])), float(np.min(times[name]))
        rate = flops / median
        results["cases"][name] = {"median_s": median, "min_s": best, "gflops": rate / 1e9, "fraction": rate / peak}
        print(f"{name:<14} {median:9.3f} {best:8.3f} {rate / 1e9:8.1f} {rate / peak:8.1%}")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=1)


#: Validation rows per epoch: 1,000 held-out rows repeated to at least 4,096 draws (5,000).
VALIDATION_ROWS = 5000

if __name__ == "__main__":
    main()
