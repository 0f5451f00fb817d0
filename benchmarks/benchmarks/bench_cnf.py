"""Benchmarks of the flow-matching CNF behind the Connector (connector_sim/inference/flows.py).

A :class:`~connector_sim.inference.FlowMatchingCNF` with the paper's velocity
MLP (4 hidden layers of 128, SiLU) on 4 coordinates (the marginal of a rank-2
Connector with one input and a bias), fitted for one epoch in ``setup``.
Timed: ``sample`` of 1e5 rows (10 midpoint steps, 20 MLP evaluations a row),
``log_prob`` of 2e4 rows (reverse solve, exact divergence), one training
epoch on 5,000 rows (batch 64, AdamW, weight average). ``track_`` methods
give the fraction of this machine's float32 GEMM peak (``torch.mm`` of
2048^2 matrices, one thread) that sampling and densities reach, counting the
MLP's matrix-product FLOPs only (and the ratio of oneDNN's float32 rate to
torch.mm's: on AMD processors MKL runs its AVX2 code). bfloat16 cases are
skipped on CPUs without AVX512_BF16 / AMX. CPU, one thread, CPU time; the side-by-side
script with the numbers before and after is ``benchmarks/cnf_speed.py``.
"""

import time

import numpy as np

SEED = 0
DIM, HIDDEN, N_LAYERS, N_STEPS = 4, 128, 4, 10
#: Matrix-product FLOPs of one MLP evaluation of one row.
FORWARD_FLOPS = 2 * ((DIM + 1) * HIDDEN + (N_LAYERS - 1) * HIDDEN * HIDDEN + HIDDEN * DIM)


def _flow(n_epochs=1, rows=None):
    import torch

    from connector_sim.inference import FlowMatchingCNF

    torch.set_num_threads(1)
    data = np.random.default_rng(SEED).standard_normal((5000, DIM)) if rows is None else rows
    return FlowMatchingCNF(hidden=HIDDEN, n_layers=N_LAYERS, n_epochs=n_epochs, n_steps=N_STEPS, device="cpu",
                           random_state=SEED, n_threads=1).fit(data)


def _gemm_flops_per_second(library="torch.mm"):
    """float32 2048^2 product rate: torch.mm (MKL; its AVX2 code on AMD) or oneDNN's linear (the evaluator's)."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    out = torch.empty(2048, 2048)
    if library == "torch.mm":
        def product():
            torch.mm(a, b, out=out)
    else:
        def product():
            torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    best = float("inf")
    for _ in range(4):
        start = time.process_time()
        product()
        best = min(best, time.process_time() - start)
    return 2 * 2048**3 / best


def _bfloat16():
    from connector_sim.inference.flows import bfloat16_supported

    if not bfloat16_supported("cpu"):
        raise NotImplementedError("no AVX512_BF16 / AMX on this CPU")  # asv skips the benchmark


class TimeCNF:
    timer = time.process_time
    timeout = 600
    number = 1
    repeat = 3

    def setup(self):
        self.rows = np.random.default_rng(SEED).standard_normal((5000, DIM))
        self.flow = _flow(rows=self.rows)
        self.points = self.flow.sample(20_000, random_state=1)

    def time_sample_1e5(self):
        self.flow.sample(100_000, random_state=2)

    def time_log_prob_2e4(self):
        self.flow.log_prob(self.points)

    def time_sample_1e5_bfloat16(self):
        _bfloat16()
        self.flow.sample(100_000, random_state=2, precision="bfloat16")

    def time_log_prob_2e4_bfloat16(self):
        _bfloat16()
        self.flow.log_prob(self.points, precision="bfloat16")

    def time_fit_one_epoch(self):
        _flow(rows=self.rows)


class TrackCNFFractionOfGemmPeak:
    timeout = 600
    number = 1
    repeat = 1
    unit = "fraction of torch.mm float32 peak"

    def setup(self):
        self.flow = _flow()
        self.points = self.flow.sample(20_000, random_state=1)
        self.peak = _gemm_flops_per_second()
        try:
            self.peak_onednn = _gemm_flops_per_second("oneDNN")
        except (AttributeError, RuntimeError):
            self.peak_onednn = None

    def _fraction(self, function, flops):
        best = float("inf")
        for _ in range(2):
            start = time.process_time()
            function()
            best = min(best, time.process_time() - start)
        return flops / best / self.peak

    def track_sample(self):
        return self._fraction(lambda: self.flow.sample(50_000, random_state=2),
                              50_000 * 2 * N_STEPS * FORWARD_FLOPS)

    def track_log_prob(self):
        return self._fraction(lambda: self.flow.log_prob(self.points),
                              20_000 * 2 * N_STEPS * (1 + DIM) * FORWARD_FLOPS)

    def track_onednn_peak_over_torch_mm(self):
        """How much faster oneDNN multiplies float32 2048^2 matrices than torch.mm (MKL) here."""
        if self.peak_onednn is None:
            raise NotImplementedError("torch has no oneDNN linear here")
        return self.peak_onednn / self.peak
