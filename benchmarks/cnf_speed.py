"""Speed of the Connector's flow-matching CNF: sampling, densities, training, against the GEMM peak.

One thread. A Connector is fitted (1 epoch, the paper's 4 x 128 velocity
MLP) on a rank-2 network with one input and a bias, so the marginal CNF
models 4 coordinates (m1, m2, I, b); sampling uses the default 10 midpoint
steps (20 MLP evaluations per sample). The script times

- ``Connector.sample(n)`` for n = 1e5 and 1e6 (1e6 once, with ``--big``),
- ``Connector.marginal_.log_prob`` of 1e5 rows (reverse ODE, exact divergence),
- one training epoch of the marginal CNF (5,000 rows, batch 64, AdamW, EMA),
- ``torch.mm`` on 2048 x 2048 float32 matrices: this machine's GEMM peak,

and, where the checkout has ``precision=`` and the CPU multiplies bfloat16
in hardware (AVX512_BF16 or AMX), the same sampling and density cases with
``precision="bfloat16"`` and ``torch.mm`` of bfloat16 matrices. It prints
each as CPU seconds (median of interleaved repeats) and as a
fraction of the float32 GEMM peak, counting only the MLP's matrix-product FLOPs
(2 * in * out per row and layer; densities: (1 + d) times the forward ones,
d = 4, the cost of the exact divergence; training: 3 times, forward and the
two backward products).

    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py            # ~1-2 minutes
    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py --big      # adds sample(1e6) once
    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py --json out.json
    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py --accuracy # bfloat16 vs float32 samples only (~1 min)

``--accuracy`` trains a 4 x 128 flow for 30 epochs on 5,000 rows of a
non-Gaussian 4-D distribution and compares 20,000 samples drawn with
``precision="bfloat16"`` with the float32 ones of the same seed: the
per-sample error (max, rms, in units of each coordinate's standard
deviation), the mean and covariance differences, and the Sinkhorn divergence
(geomloss, blur 0.05, 5,000 samples of the standardised coordinates), next
to the same measures between two float32 draws of different seeds (the
sampling noise floor); and the log-density differences on 5,000 rows.

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


def gemm_peak(size=2048, repeats=5, dtype=torch.float32):
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)
    times = cpu_time(lambda: torch.mm(a, b, out=out), repeats)
    return 2 * size**3 / min(times)


def has_bfloat16():
    """Whether this checkout has ``precision=`` and the CPU has bfloat16 matrix products."""
    import inspect

    if "precision" not in inspect.signature(Connector.sample).parameters:
        return False
    from connector_sim.inference.flows import bfloat16_supported

    return bfloat16_supported("cpu")


def accuracy(n_samples=20_000, n_sinkhorn=5000):
    """bfloat16 against float32 samples and densities of a trained flow, next to float32's seed-to-seed noise."""
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((2, N_TRAIN_ROWS))
    x = np.column_stack([u, u**2 + 0.3 * rng.standard_normal(N_TRAIN_ROWS), np.tanh(3 * v), v + 0.5 * u])
    flow = FlowMatchingCNF(hidden=HIDDEN, n_layers=N_LAYERS, n_epochs=30, batch_size=BATCH, device="cpu",
                           random_state=0, n_threads=1).fit(x)
    scale = flow.scale_
    a = flow.sample(n_samples, random_state=5) / scale
    b = flow.sample(n_samples, random_state=5, precision="bfloat16") / scale
    other = flow.sample(n_samples, random_state=6) / scale
    results = {}
    try:
        from geomloss import SamplesLoss

        loss = SamplesLoss("sinkhorn", p=2, blur=0.05)

        def sinkhorn(p, q):
            return float(loss(torch.as_tensor(p[:n_sinkhorn], dtype=torch.float32),
                              torch.as_tensor(q[:n_sinkhorn], dtype=torch.float32)))
    except ImportError:
        sinkhorn = None
    for name, q in (("bf16 vs f32, same seed", b), ("f32 vs f32, other seed", other)):
        error = np.abs(q - a)
        row = {"max_abs": float(error.max()), "rms": float(np.sqrt(np.mean(error**2))),
               "mean_diff": float(np.abs(q.mean(axis=0) - a.mean(axis=0)).max()),
               "cov_diff": float(np.abs(np.cov(q.T) - np.cov(a.T)).max())}
        if sinkhorn is not None:
            row["sinkhorn"] = sinkhorn(q, a)
        results[name] = row
    log_p = flow.log_prob(x[:5000])
    log_p_low = flow.log_prob(x[:5000], precision="bfloat16")
    results["log_prob bf16 - f32"] = {"max_abs": float(np.abs(log_p_low - log_p).max()),
                                      "rms": float(np.sqrt(np.mean((log_p_low - log_p) ** 2))),
                                      "std of log_prob": float(log_p.std())}
    print(f"\nbfloat16 accuracy, {n_samples} samples of a 30-epoch 4 x 128 flow (units: each coordinate's std)")
    for name, row in results.items():
        print(f"  {name:<24} " + "  ".join(f"{k} {v:.2e}" for k, v in row.items()))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", action="store_true", help="also time Connector.sample(1_000_000), once")
    parser.add_argument("--accuracy", action="store_true", help="only compare bfloat16 with float32 samples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bfloat16 = has_bfloat16()
    if args.accuracy:
        if not bfloat16:
            raise SystemExit("This checkout or CPU has no bfloat16 path (precision=, AVX512_BF16 or AMX).")
        results = accuracy()
        if args.json:
            with open(args.json, "w") as stream:
                json.dump(results, stream, indent=1)
        return
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
    if bfloat16:
        connector.sample(1000, random_state=0, precision="bfloat16")
        cases["sample 1e5 bf16"] = (lambda: connector.sample(100_000, random_state=2, precision="bfloat16"),
                                    cases["sample 1e5"][1])
        cases["log_prob 1e5 bf16"] = (lambda: flow.log_prob(mIb, precision="bfloat16"), cases["log_prob 1e5"][1])
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
        if bfloat16:
            cases["sample 1e6 bf16"] = cases["sample 1e6"]
            times["sample 1e6 bf16"] = cpu_time(
                lambda: connector.sample(1_000_000, random_state=2, precision="bfloat16"), 1)
    peak = gemm_peak()
    results = {"gemm_peak_gflops": peak / 1e9, "load": os.getloadavg()[0], "cases": {}}
    print(f"\ntorch.mm 2048^3 float32, 1 thread: {peak / 1e9:.1f} GFLOP/s (best of 5)")
    if bfloat16:
        peak_low = gemm_peak(dtype=torch.bfloat16)
        results["gemm_peak_bf16_gflops"] = peak_low / 1e9
        print(f"torch.mm 2048^3 bfloat16, 1 thread: {peak_low / 1e9:.1f} GFLOP/s (best of 5)")
    print("('of peak': of the float32 peak)\n")
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
