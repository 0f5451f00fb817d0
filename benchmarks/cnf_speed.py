"""Speed of the Connector's flow-matching CNF: sampling, densities, training, against the GEMM peak.

One thread. A Connector is fitted (1 epoch, the paper's 4 x 128 velocity
MLP) on a rank-2 network with one input and a bias, so the marginal CNF
models 4 coordinates (m1, m2, I, b); sampling uses the default 10 midpoint
steps (20 MLP evaluations per sample). The script times

- ``Connector.sample(n)`` for n = 1e5 and 1e6 (1e6 once, with ``--big``),
- ``Connector.marginal_.log_prob`` of 1e5 rows (reverse ODE, exact divergence),
- one training epoch of the marginal CNF at the Connector's defaults (5,000
  rows, 4 x 128, batch 64, AdamW, cosine schedule, weight average, 1/5 held
  out for validation),
- GEMM rates, float32 (and bfloat16), by ``torch.mm`` (MKL: on AMD processors
  its AVX2 code) and by oneDNN's linear (what the CPU evaluator uses), at
  2048^2 and at the MLP's shapes (1,024-row tiles, 64-row training batches),

and, where the checkout has ``precision=`` and the CPU multiplies bfloat16
in hardware (AVX512_BF16 or AMX), the same sampling and density cases with
``precision="bfloat16"``. It prints each as CPU seconds (median of
interleaved repeats), its speed-up over commit eb22026 (the version before
the tiled evaluator: measured in the same run with ``--baseline``, else the
figures in ``BASELINE_EB22026``), and as a fraction of the float32 2048^2
rates of torch.mm and of oneDNN (and, for bfloat16 rows, of the bfloat16
rate), counting only the MLP's matrix-product FLOPs
(2 * in * out per row and layer; densities: (1 + d) times the forward ones,
d = 4, the cost of the exact divergence; training: 3 times, forward and the
two backward products, plus one forward per validation row), and the
training epoch's floor: its products at the best measured float32 rate of
their shapes. Where the checkout has the fused compiled training step
(``connector_sim._ext._cnf_train_cpp``, the default float32 CPU path), it also
times the epoch with the torch step (``flows.USE_FUSED_TRAINING = False``,
interleaved), the fused kernel's product per instruction-set clone, and the
share of the epoch spent inside the kernel's calls.

    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py            # ~1-2 minutes
    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py --big      # adds sample(1e6) once
    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py --json out.json
    OMP_NUM_THREADS=1 python benchmarks/cnf_speed.py --big --baseline /tmp/eb22026  # ~7 minutes
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
uses the public API; ``--baseline <checkout>`` does that in a subprocess, one
repeat after each of this checkout's (``git archive eb22026 | tar -x -C
/tmp/eb22026`` and copy ``connector_sim/_ext/*.so`` into it). Times are CPU
time (time.process_time).
"""

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
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


def gemm_rate(m, k, n, dtype=torch.float32, library="torch.mm", repeats=5):
    """FLOP/s of one (m, k) x (k, n) product (best of ``repeats`` timed batches), by torch.mm or oneDNN's linear.

    torch.mm on float32 calls MKL (on AMD processors its AVX2 code); oneDNN's linear
    (``torch.ops.mkldnn._linear_pointwise``, what the package's CPU evaluator uses) runs AVX-512.
    """
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    if library == "torch.mm":
        out = torch.empty(m, n, dtype=dtype)

        def product():
            torch.mm(a, b.t(), out=out)
    else:
        op = torch.ops.mkldnn._linear_pointwise

        def product():
            op(a, b, None, "none", [], "")
    calls = max(1, int(2e8 // (2 * m * k * n)))
    product()
    times = cpu_time(lambda: [product() for _ in range(calls)], repeats)
    return 2 * m * k * n * calls / min(times)


def gemm_peak(size=2048, repeats=5, dtype=torch.float32):
    return gemm_rate(size, size, size, dtype, repeats=repeats)


def gemm_table(bfloat16):
    """GEMM rates at 2048^2 and at the MLP's shapes (tiles of 1,024 and training batches of 64 rows)."""
    libraries = ["torch.mm"]
    try:
        torch.ops.mkldnn._linear_pointwise  # noqa: B018
        libraries.append("oneDNN")
    except (AttributeError, RuntimeError):
        pass
    dtypes = [torch.float32] + ([torch.bfloat16] if bfloat16 else [])
    table = {}
    for m, k, n in ((2048, 2048, 2048), (1024, HIDDEN, HIDDEN), (BATCH, HIDDEN, HIDDEN)):
        for dtype in dtypes:
            for library in libraries:
                name = f"{library} {str(dtype).split('.')[-1]} {m}x{k}x{n}"
                table[name] = gemm_rate(m, k, n, dtype, library)
    table.update(fused_kernel_gemm_rates())
    return table


def fused_kernel_module():
    """connector_sim._ext._cnf_train_cpp (the fused training step) if this checkout has it and it is built."""
    try:
        from connector_sim._ext import _cnf_train_cpp
    except ImportError:
        return None
    return _cnf_train_cpp


def fused_kernel_gemm_rates(repeats=5):
    """FLOP/s of the fused training step's product at the training shape, per instruction-set clone.

    ``_cnf_train_cpp.matmul``: W (hidden x hidden) times a feature-major batch (hidden x 64), the forward
    product of one hidden layer (the backward ones have the same FLOPs and tiles).
    """
    module = fused_kernel_module()
    if module is None:
        return {}
    rng = np.random.default_rng(0)
    a = rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32)
    b = rng.standard_normal((HIDDEN, BATCH)).astype(np.float32)
    out = np.empty((HIDDEN, BATCH), np.float32)
    flops = 2 * HIDDEN * HIDDEN * BATCH
    calls = max(1, int(2e8 // flops))
    previous, rates = module.kernel_isa(), {}
    isas = ("avx512", "avx2", "default")
    try:
        for isa in isas[isas.index(module.cpu_isa()):]:
            module.set_kernel_isa(isa)
            module.matmul(a, b, out)
            times = cpu_time(lambda: module.matmul(a, b, out, calls), repeats)
            rates[f"fused kernel ({isa}) float32 {BATCH}x{HIDDEN}x{HIDDEN}"] = flops * calls / min(times)
    finally:
        module.set_kernel_isa(previous)
    return rates


def fused_kernel_share(fit, repeats=3):
    """CPU seconds per epoch inside the fused kernel's calls (steps, validation) and of the whole epoch.

    Times the calls of CnfTrainStep.step and .squared_error inside real fits (through a thin wrapper, ~1 us a
    call), (fit(1 + EXTRA_EPOCHS) - fit(1)) / EXTRA_EPOCHS as the epoch; medians of ``repeats``.
    """
    from connector_sim.inference import flows

    spent = {"step": 0.0, "validation": 0.0}

    class Timed:
        def __init__(self, kernel):
            self.kernel = kernel

        def step(self, *args):
            start = time.process_time()
            result = self.kernel.step(*args)
            spent["step"] += time.process_time() - start
            return result

        def squared_error(self, *args):
            start = time.process_time()
            result = self.kernel.squared_error(*args)
            spent["validation"] += time.process_time() - start
            return result

    original = flows._FusedTrainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.kernel = Timed(self.kernel)

    flows._FusedTrainer.__init__ = init
    rows = []
    try:
        for _ in range(repeats):
            measured = []
            for n_epochs in (1 + EXTRA_EPOCHS, 1):
                spent.update(step=0.0, validation=0.0)
                start = time.process_time()
                fit(n_epochs)
                measured.append((time.process_time() - start, spent["step"], spent["validation"]))
            rows.append([(more - one) / EXTRA_EPOCHS for more, one in zip(*measured)])
    finally:
        flows._FusedTrainer.__init__ = original
    epoch, step, validation = np.median(np.array(rows), axis=0)
    return float(epoch), float(step), float(validation)


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


def child_run(path, big, json_path, only=None):
    """This script, one repeat, on the checkout at ``path`` (PYTHONPATH): its cases' CPU seconds."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
    command = [sys.executable, os.path.abspath(__file__), "--repeats", "1", "--child", "--json", json_path]
    subprocess.run(command + (["--big"] if big else []) + (["--only", only] if only else []), env=env, check=True)
    with open(json_path) as stream:
        return {name: row["median_s"] for name, row in json.load(stream)["cases"].items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", action="store_true", help="also time Connector.sample(1_000_000), once")
    parser.add_argument("--accuracy", action="store_true", help="only compare bfloat16 with float32 samples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="also time the checkout at this path (e.g. `git archive eb22026` with the compiled "
                             "extensions copied in), one repeat after each of ours, in a subprocess")
    parser.add_argument("--only", metavar="PREFIX", help="only the cases whose name starts with PREFIX "
                        "(e.g. 'train', 'log_prob')")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
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
    if not args.child:
        print(f"connector_sim {connector_sim.__file__}\ntorch {torch.__version__}, threads "
              f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}, load "
              f"{os.getloadavg()[0]:.2f}", flush=True)

    connector = fitted_connector()
    flow = connector.marginal_
    assert flow.dim_ == DIM and int(flow.free_.sum()) == DIM, (flow.dim_, flow.free_)
    rows = connector.sample_rows(100_000, random_state=1)[0]
    mIb = rows[:, connector.layout_.mIb]
    training_rows = mIb[:N_TRAIN_ROWS]
    connector.sample(1000, random_state=0)  # warm-up
    flow.log_prob(mIb[:1000])

    def one_epoch(n_epochs):
        # The Connector's defaults: 4 x 128, batch 64, AdamW, cosine schedule, weight average, 1/5 validation.
        return FlowMatchingCNF(hidden=HIDDEN, n_layers=N_LAYERS, n_epochs=n_epochs, batch_size=BATCH,
                               device="cpu", random_state=0, n_threads=1).fit(training_rows)

    one_epoch(1)
    from connector_sim.inference import flows

    fused = hasattr(flows, "USE_FUSED_TRAINING") and fused_kernel_module() is not None

    def one_epoch_torch_step(n_epochs):  # this checkout's torch training step (the one before the fused kernel)
        flows.USE_FUSED_TRAINING = False
        try:
            return one_epoch(n_epochs)
        finally:
            flows.USE_FUSED_TRAINING = True

    n_train = round(0.8 * N_TRAIN_ROWS)
    steps = -(-n_train // BATCH)
    cases = {
        "sample 1e5": (lambda: connector.sample(100_000, random_state=2), 100_000 * 2 * N_STEPS * forward_flops()),
        "log_prob 1e5": (lambda: flow.log_prob(mIb), 100_000 * 2 * N_STEPS * (1 + DIM) * forward_flops()),
        # One epoch = (fit(1 + EXTRA_EPOCHS epochs) - fit(1 epoch)) / EXTRA_EPOCHS, so set-up costs cancel.
        # Forward + two backward products per training row, one forward per validation row.
        "train epoch": (None, (3 * n_train + VALIDATION_ROWS) * forward_flops()),
    }
    if fused:  # the torch step of this checkout (as on main before the fused kernel), interleaved
        cases["train epoch torch step"] = (None, cases["train epoch"][1])
    epochs = {"train epoch": one_epoch, "train epoch torch step": one_epoch_torch_step}
    if bfloat16:
        connector.sample(1000, random_state=0, precision="bfloat16")
        cases["sample 1e5 bf16"] = (lambda: connector.sample(100_000, random_state=2, precision="bfloat16"),
                                    cases["sample 1e5"][1])
        cases["log_prob 1e5 bf16"] = (lambda: flow.log_prob(mIb, precision="bfloat16"), cases["log_prob 1e5"][1])
    baseline = {}
    if args.only:
        cases = {name: case for name, case in cases.items() if name.startswith(args.only)}
    times = {name: [] for name in cases}
    for repeat in range(args.repeats):  # interleaved
        for name, (function, _) in cases.items():
            if function is None:
                fit = epochs[name]
                more, one = cpu_time(lambda: fit(1 + EXTRA_EPOCHS), 1)[0], cpu_time(lambda: fit(1), 1)[0]
                times[name].append((more - one) / EXTRA_EPOCHS)
            else:
                times[name] += cpu_time(function, 1)
        if args.baseline:
            with tempfile.TemporaryDirectory() as folder:
                for name, seconds in child_run(args.baseline, args.big and repeat == 0,
                                               os.path.join(folder, "baseline.json"), args.only).items():
                    baseline.setdefault(name, []).append(seconds)
    if args.big and (not args.only or "sample 1e6".startswith(args.only)):
        cases["sample 1e6"] = (None, 1_000_000 * 2 * N_STEPS * forward_flops())
        times["sample 1e6"] = cpu_time(lambda: connector.sample(1_000_000, random_state=2), 1)
        if bfloat16:
            cases["sample 1e6 bf16"] = cases["sample 1e6"]
            times["sample 1e6 bf16"] = cpu_time(
                lambda: connector.sample(1_000_000, random_state=2, precision="bfloat16"), 1)
    results = {"load": os.getloadavg()[0], "cases": {}}
    if args.child:
        results["cases"] = {name: {"median_s": float(np.median(t))} for name, t in times.items()}
        with open(args.json, "w") as stream:
            json.dump(results, stream)
        return
    gemms = gemm_table(bfloat16)
    results["gemm_gflops"] = {name: rate / 1e9 for name, rate in gemms.items()}
    print("\nGEMM rates, one thread, best of 5 (GFLOP/s):")
    for name, rate in gemms.items():
        print(f"  {name:<42} {rate / 1e9:7.1f}")
    peak_mm = gemms["torch.mm float32 2048x2048x2048"]
    peak_onednn = gemms.get("oneDNN float32 2048x2048x2048", peak_mm)
    results["gemm_peak_gflops"] = peak_mm / 1e9
    def before_name(name):  # the eb22026 case a case is compared with
        return name.replace(" bf16", "").replace(" torch step", "")

    reference = {name: float(np.median(baseline[before_name(name)])) if baseline
                 else BASELINE_EB22026.get(before_name(name)) for name in cases}
    source = "measured above, interleaved" if baseline else "BASELINE_EB22026 in this script"
    print(f"\nbefore: commit eb22026 ({source}); 'of mm' / 'of oneDNN': of the float32 2048^2 rate of "
          f"torch.mm (MKL) / of oneDNN; 'of bf16': of the bfloat16 2048^2 rate\n")
    peak_bf16 = max((rate for name, rate in gemms.items() if "bfloat16 2048x" in name), default=None)
    print(f"{'case':<22} {'median s':>9} {'min s':>8} {'before s':>9} {'speed-up':>9} {'GFLOP/s':>8} "
          f"{'of mm':>7} {'of oneDNN':>9} {'of bf16':>8}")
    for name, (_, flops) in cases.items():
        median, best = float(np.median(times[name])), float(np.min(times[name]))
        rate = flops / median
        before = reference.get(name)
        row = {"median_s": median, "min_s": best, "gflops": rate / 1e9, "fraction": rate / peak_mm,
               "fraction_onednn": rate / peak_onednn, "before_s": before,
               "speedup": None if before is None else before / median}
        results["cases"][name] = row
        before_text = f"{before:9.3f} {before / median:8.2f}x" if before else f"{'-':>9} {'-':>9}"
        of_bf16 = f"{rate / peak_bf16:8.1%}" if "bf16" in name and peak_bf16 else f"{'':>8}"
        if "bf16" in name and peak_bf16:
            row["fraction_bf16"] = rate / peak_bf16
        print(f"{name:<22} {median:9.3f} {best:8.3f} {before_text} {rate / 1e9:8.1f} {rate / peak_mm:7.1%} "
              f"{rate / peak_onednn:9.1%} {of_bf16}")
    # The training floor: the epoch's products at the best measured float32 rate of their shapes (with the
    # fused kernel the validation runs by 64-row tiles of its product too).
    batch_rate = max(rate for name, rate in gemms.items() if f"float32 {BATCH}x" in name)
    tile_rate = max([rate for name, rate in gemms.items() if "float32 1024x" in name] + ([batch_rate] if fused else []))
    floor = steps * 3 * BATCH * forward_flops() / batch_rate + VALIDATION_ROWS * forward_flops() / tile_rate
    results["train_epoch_floor_s"] = floor
    before = reference.get("train epoch")
    print(f"\ntraining epoch floor (float32 products only, {steps} steps of {BATCH} rows at {batch_rate / 1e9:.0f} "
          f"GFLOP/s, {VALIDATION_ROWS} validation rows at {tile_rate / 1e9:.0f}): {floor:.4f} s"
          + (f" = {before / floor:.1f}x the before time" if before else ""))
    if fused and "train epoch" in cases:
        # Where the epoch goes: CPU time inside the kernel's calls during fits (apart from the timed ones).
        epoch, step_s, validation_s = fused_kernel_share(one_epoch)
        kernel_s = step_s + validation_s
        results["train_epoch_kernel"] = {"epoch_s": epoch, "steps_s": step_s, "validation_s": validation_s}
        torch_step = results["cases"].get("train epoch torch step", {}).get("median_s")
        step_rate = steps * 3 * BATCH * forward_flops() / step_s
        fused_epoch = results["cases"]["train epoch"]["median_s"]
        speed_up = f"; the epoch {torch_step / fused_epoch:.2f}x faster than with the torch step" if torch_step else ""
        print(f"fused kernel: {step_s / steps * 1e6:.0f} us a step ({step_rate / 1e9:.0f} GFLOP/s), "
              f"{validation_s * 1e3:.2f} ms the {VALIDATION_ROWS} validation rows: {kernel_s:.4f} of {epoch:.4f} s "
              f"= {kernel_s / epoch:.0%} of the epoch (the rest: torch's draws, Python, the schedule, best-state "
              f"copies){speed_up}")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(results, stream, indent=1)


#: CPU seconds (medians) of commit eb22026, before the tiled evaluator, measured with --baseline in the same
#: run as the numbers in the README (AMD EPYC with AVX-512 and AVX512_BF16, 2 shared vCPUs, one thread, load
#: 1-3.4; the eb22026 epoch measured 0.064-0.090 s in two runs).
BASELINE_EB22026 = {"sample 1e5": 5.779, "log_prob 1e5": 29.65, "train epoch": 0.090, "sample 1e6": 76.41}

#: Epochs timed beyond the first in the training case.
EXTRA_EPOCHS = 4

#: Validation rows per epoch: 1,000 held-out rows repeated to at least 4,096 draws (5,000).
VALIDATION_ROWS = 5000

if __name__ == "__main__":
    main()
