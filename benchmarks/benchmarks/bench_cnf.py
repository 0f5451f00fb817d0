"""Benchmarks of the flow-matching CNF behind the Connector (connector_sim/inference/flows.py).

A :class:`~connector_sim.inference.FlowMatchingCNF` with the paper's velocity
MLP (4 hidden layers of 128, SiLU) on 4 coordinates (the marginal of a rank-2
Connector with one input and a bias), fitted for one epoch in ``setup``.
Timed: ``sample`` of 1e5 rows (10 midpoint steps, 20 MLP evaluations a row),
``log_prob`` of 2e4 rows (reverse solve, exact divergence), one training
epoch on 5,000 rows (batch 64, AdamW, weight average), with the fused
compiled training step (the default where it is built) and with the torch
step; the fused step alone per instruction-set clone (``TimeCNFTrainStep``,
and its product's GFLOP/s in ``TrackCNFTrainStepGflops``). ``track_`` methods
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

    def time_fit_one_epoch_torch_step(self):
        from connector_sim.inference import flows

        if not hasattr(flows, "USE_FUSED_TRAINING"):
            raise NotImplementedError("this version has no fused training step")
        flows.USE_FUSED_TRAINING = False
        try:
            _flow(rows=self.rows)
        finally:
            flows.USE_FUSED_TRAINING = True


ISAS = ["avx512", "avx2", "default"]
#: Batches of 64 rows in an epoch at the Connector's defaults (4,000 training rows).
STEPS_PER_EPOCH = 63


def _fused_module(isa):
    """connector_sim._ext._cnf_train_cpp set to its ``isa`` clone (NotImplementedError, i.e. skipped, if absent)."""
    try:
        from connector_sim._ext import _cnf_train_cpp
    except ImportError:
        raise NotImplementedError("the fused training step is not built") from None
    if ISAS.index(isa) < ISAS.index(_cnf_train_cpp.cpu_isa()):
        raise NotImplementedError(f"this CPU lacks the {isa} clone")
    _cnf_train_cpp.set_kernel_isa(isa)
    return _cnf_train_cpp


class TimeCNFTrainStep:
    """The fused training step alone (forward, backward, AdamW, average of a 4 x 128 MLP on 64 rows), per clone:
    an epoch's 63 steps, and the validation loss's forward pass of 5,000 rows."""

    timer = time.process_time
    number = 1
    repeat = 5
    params = ISAS
    param_names = ["isa"]

    def setup(self, isa):
        module = _fused_module(isa)
        from connector_sim._kernels.cnf_train_step import n_parameters

        rng = np.random.default_rng(SEED)
        size = n_parameters(DIM, 0, HIDDEN, N_LAYERS)
        self.weights = (rng.standard_normal(size) * 0.05).astype(np.float32)
        arrays = [self.weights] + [np.zeros_like(self.weights) for _ in range(3)] + [self.weights.copy()]
        self.step = module.CnfTrainStep(*arrays, dim=DIM, condition_dim=0, hidden=HIDDEN, n_layers=N_LAYERS,
                                        max_rows=64, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-4)
        self.batch = [rng.standard_normal((64, DIM)).astype(np.float32) for _ in range(2)]
        self.batch.append(rng.random(64).astype(np.float32))
        self.inputs = rng.standard_normal((5000, DIM + 1)).astype(np.float32)
        self.target = rng.standard_normal((5000, DIM)).astype(np.float32)

    def teardown(self, isa):
        from connector_sim._ext import _cnf_train_cpp

        _cnf_train_cpp.set_kernel_isa(_cnf_train_cpp.cpu_isa())

    def time_epoch_of_steps(self, isa):
        for count in range(1, STEPS_PER_EPOCH + 1):
            self.step.step(*self.batch, None, 1e-4, count, 0.999)

    def time_validation_forward(self, isa):
        self.step.squared_error(self.weights, self.inputs, self.target)


class TrackCNFTrainStepGflops:
    """GFLOP/s of the fused step's product at the training shape (128 x 128 weights times 128 x 64), per clone."""

    number = 1
    repeat = 1
    unit = "GFLOP/s"
    params = ISAS
    param_names = ["isa"]

    def setup(self, isa):
        self.module = _fused_module(isa)

    def teardown(self, isa):
        self.module.set_kernel_isa(self.module.cpu_isa())

    def track_product_64x128x128(self, isa):
        rng = np.random.default_rng(SEED)
        a = rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32)
        b = rng.standard_normal((HIDDEN, 64)).astype(np.float32)
        out = np.empty((HIDDEN, 64), np.float32)
        calls = 1000
        self.module.matmul(a, b, out)
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            self.module.matmul(a, b, out, calls)
            best = min(best, time.process_time() - start)
        return 2 * HIDDEN * HIDDEN * 64 * calls / best / 1e9


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
