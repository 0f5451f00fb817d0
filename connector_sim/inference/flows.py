"""Continuous normalizing flows trained by flow matching, in plain torch (theory section 3, step 3 and 3.5).

A CNF moves samples of a standard normal x_0 ~ N(0, I) at t = 0 to the data
distribution at t = 1 along the ODE dx/dt = v_theta(x, t [, c]). Flow
matching (Lipman et al., 2023) trains v_theta by regression on the
conditional optimal-transport (affine) path::

    x_t = (1 - t) x_0 + t x_1,   x_0 ~ N(0, I),  x_1 ~ data,  t ~ U(0, 1)
    loss = E | v_theta(x_t, t [, c]) - (x_1 - x_0) |^2

The data are standardised first (z = (x - mean) / std per coordinate; the
loadings of fitted networks have scales far from 1) and the samples mapped
back. Coordinates that are constant in the data (a bias that is zero for
every neuron, say) are held at their value and left out of the flow.

Sampling integrates the ODE from t = 0 to 1 with a fixed-step solver of
``n_steps`` steps of size h = 1 / n_steps (midpoint by default, as in the
paper)::

    euler:    x <- x + h v(x, t)
    midpoint: x <- x + h v(x + (h / 2) v(x, t), t + h / 2)
    rk4:      the classical four-stage Runge-Kutta step

``n_steps`` is validated: some ODE libraries given only the end points [0, 1]
silently take a single step of a fixed-step solver.

``log_prob`` solves the ODE backwards from the data point with the
instantaneous change of variables (Chen et al., 2018)::

    d/dt log p_t(x_t) = -div v(x_t, t)
    log p_1(x) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt

with the exact divergence (the trace of the Jacobian: the dimensions here
are small), plus the standardisation's log-determinant -sum_j log std_j.

How it is computed. For the package's :class:`VelocityMLP`, ``sample`` and
``log_prob`` evaluate the MLP on tiles of :data:`CPU_TILE` rows (activations
that stay in the L2 cache; on a GPU the whole batch) into buffers allocated
once, with the first layer split as x W_x^T + (t w_t + b) (one vector per
step), and the divergence in forward mode: the d columns dh/dx_j are carried
through the layers beside the activations (one (d * rows, H) x (H, H)
product per hidden layer; the first layer's columns are folded into the
second layer's weights), so a density costs (1 + d) evaluations of v and
equals the autograd trace to float32 round-off. On a CPU the hidden layers'
products go through oneDNN's linear with the SiLU fused
(:func:`_onednn_linear`) where torch has it: torch.mm on float32 calls MKL,
which runs its AVX2 code on AMD processors (on an AVX-512 EPYC, one thread:
82 GFLOP/s at 2048^2 against 181 through oneDNN). Any other velocity module
(an ``nn.Module`` called as ``model(x, t, condition)``) goes through its
forward and autograd. Training computes the gradient of the flow-matching
loss by hand (the products autograd forms) on weights held in one flat
tensor, so AdamW (its fused kernel) and the weight average take one call
each. ``torch.compile`` is not used: with torch 2.13 on a CPU (inductor and
gcc work offline) a compiled 4 x 128 MLP on 2,048-row tiles ran at 0.84x the
eager speed after 34 s of compilation.

Reduced precision (opt-in). ``sample`` and ``log_prob`` take
``precision="bfloat16"``: the hidden layers' weights are cast once, their
products run on bfloat16 tiles (float32 accumulation inside oneDNN's
kernels), while the ODE state x, the first layer (on [x, c, t]), the
velocity handed to the solver and the divergence integral stay float32.
Only where the hardware multiplies bfloat16 (:func:`bfloat16_supported`:
AVX512_BF16 or AMX on a CPU; CUDA GPUs with bfloat16); elsewhere it raises
ValueError rather than falling back, because emulated bfloat16 is slower
than float32 and less accurate. On a 4 x 128 flow of 4 coordinates trained
30 epochs, 20,000 bfloat16 samples differ from the float32 ones of the same
seed by 1e-3 rms and 6e-2 at most (units of each coordinate's standard
deviation); their mean and covariance by 2e-4 and 5e-4, 25-40x less than
two float32 draws of different seeds differ; log p by 7e-3 rms, 7e-2 at most.
"""

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import sys
import time

import numpy as np

from . import missing_dependency

try:
    import torch
    from torch import nn
except ImportError as exc:
    raise missing_dependency("torch") from exc

from .._files import json_safe, write_folder_atomic
from .._validation import (
    check_array,
    check_int,
    check_n_threads,
    check_nonnegative_scalar,
    check_positive_scalar,
    check_random_state,
)

#: Fixed-step ODE solvers, by name.
SOLVERS = ("euler", "midpoint", "rk4")

#: A coordinate whose standard deviation is below this fraction of its
#: magnitude (or of 1) is constant: held fixed, not modelled by the flow.
CONSTANT_RTOL = 1e-12

#: Bounds on the velocity MLP (hidden width, layers, and their weights n_layers * hidden * (hidden + 1)),
#: checked before it is built: the paper's 4 x 128 has 66,000 weights.
MAX_HIDDEN = 65_536
MAX_LAYERS = 1_000
MAX_PARAMETERS = 2**28

#: Rows per torch call when sampling or evaluating densities.
DEFAULT_BATCH = 65_536

#: The validation loss averages at least this many (x_0, t) draws, fixed
#: once, so that its epoch-to-epoch changes reflect the model, not the draws.
VALIDATION_DRAWS = 4096

_OWNER = "FlowMatchingCNF"


def resolve_device(device):
    """The torch device for ``device``: "auto" is CUDA when available, else the CPU."""
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'. Got {device!r}.") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for CUDA, which is not available here. Use device='auto' or 'cpu'.")
    return resolved


@contextlib.contextmanager
def torch_threads(n_threads):
    """Run a block with torch's intra-op pool and NumPy's BLAS / OpenMP pools set to ``n_threads`` (None: unchanged).

    The BLAS pools matter as much as torch's: the small SVDs and solves of
    the fits (LINT's initialisation, the ridge regressions) ran 10x slower
    with OpenBLAS's two threads than with one on a busy 2-core machine (32
    SVDs of 816 x 120: 4.2 s against 0.33 s; a 3-epoch LINT fit of 16
    trials x 120 neurons: 20 s against 1.6 s).
    """
    n_threads = check_n_threads(n_threads, "torch_threads", allow_none=True)
    if n_threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(n_threads):
            yield
    finally:
        torch.set_num_threads(previous)


def _torch_seed(rng):
    return int(rng.integers(0, 2**62))


class VelocityMLP(nn.Module):
    """The velocity field v_theta(x, t [, c]) of a CNF: an MLP on ``[x, c, t]``.

    ``n_layers`` hidden layers of width ``hidden`` with SiLU (Swish)
    activations and a linear output of size ``dim`` (paper: 4 layers of 128).

    Parameters
    ----------
    dim : int
        Dimension of x (and of the output velocity).
    condition_dim : int, default=0
        Dimension of the condition c (0: an unconditional flow).
    hidden : int, default=128
    n_layers : int, default=4

    Examples
    --------
    >>> import torch
    >>> field = VelocityMLP(dim=2, hidden=8, n_layers=2)
    >>> field(torch.zeros(5, 2), torch.zeros(5)).shape  # x and one time t per row
    torch.Size([5, 2])
    """

    def __init__(self, dim, condition_dim=0, hidden=128, n_layers=4):
        from .._memory import check_allocation

        super().__init__()
        width = int(dim) + int(condition_dim) + 1
        n_params = (width + 1) * hidden + max(int(n_layers) - 1, 0) * (hidden + 1) * hidden + (hidden + 1) * dim
        # float64 weights, gradients and two Adam moments, and ~16 kB of Python objects per layer
        check_allocation(32 * n_params + 16_000 * int(n_layers),
                         f"A velocity MLP of {n_layers} hidden layers of width {hidden} ({n_params:.3g} parameters)",
                         "Use fewer or narrower hidden layers (the Connector paper uses 4 layers of 128).")
        self.dim, self.condition_dim = dim, condition_dim
        layers, width = [], dim + condition_dim + 1
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x, t, condition=None):
        """v(x, t [, c]); ``t`` is a scalar or one time per row."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(x.shape[0]).reshape(-1, 1) if t.ndim == 0 else t.reshape(-1, 1)
        parts = [x] if condition is None else [x, condition]
        return self.net(torch.cat(parts + [t], dim=1))


def _ode_step(derivative, state, t, h, solver):
    """One fixed step of size h (negative: backwards) for a tuple-valued state.

    ``derivative(state, t)`` returns a tuple of the same structure; stages
    are combined elementwise, so an augmented state (x, log-density) is
    integrated consistently.
    """

    def add(base, increments, scale):
        return tuple(b + scale * k for b, k in zip(base, increments))

    if solver == "euler":
        return add(state, derivative(state, t), h)
    if solver == "midpoint":
        k1 = derivative(state, t)
        return add(state, derivative(add(state, k1, h / 2), t + h / 2), h)
    k1 = derivative(state, t)
    k2 = derivative(add(state, k1, h / 2), t + h / 2)
    k3 = derivative(add(state, k2, h / 2), t + h / 2)
    k4 = derivative(add(state, k3, h), t + h)
    return tuple(s + h / 6 * (a + 2 * b + 2 * c + d) for s, a, b, c, d in zip(state, k1, k2, k3, k4))


def check_solver(solver, n_steps, owner=_OWNER):
    """Validate an ODE solver name and its number of fixed steps (an int >= 1)."""
    if solver not in SOLVERS:
        raise ValueError(f"The 'solver' parameter of {owner} must be one of {list(SOLVERS)}. Got {solver!r} instead.")
    return check_int(n_steps, "n_steps", minimum=1, owner=owner)


# ---------------------------------------------------------------------- fast inference

#: Precisions of the velocity MLP's matrix products in sampling and densities.
PRECISIONS = ("float32", "bfloat16")


def check_precision(precision, owner=_OWNER):
    """Validate a ``precision`` name (one of :data:`PRECISIONS`)."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"The 'precision' parameter of {owner} must be one of {list(PRECISIONS)}. "
                         f"Got {precision!r} instead.")
    return precision


def bfloat16_supported(device="cpu"):
    """Whether ``device`` multiplies bfloat16 matrices in hardware.

    CPU: the AVX512_BF16 or AMX-BF16 instructions, as torch detects them
    (without them oneDNN emulates bfloat16, slower than float32). CUDA:
    ``torch.cuda.is_bf16_supported()``.

    Examples
    --------
    >>> bfloat16_supported("cpu") in (True, False)
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and bool(check()) for check in checks)


def check_bfloat16_hardware(device, owner=_OWNER):
    """Raise ValueError unless ``device`` has bfloat16 matrix products (:func:`bfloat16_supported`)."""
    if not bfloat16_supported(device):
        raise ValueError(f"precision='bfloat16' of {owner} needs a CPU with AVX512_BF16 or AMX instructions (or a "
                         f"CUDA GPU with bfloat16); this {torch.device(device).type} has neither, where bfloat16 "
                         f"would be emulated, slower than float32. Use precision='float32'.")

#: Rows per tile of the CPU sampler and density: the 128-wide float32 activations of 1,024 rows (512 KiB)
#: stay in the L2 cache, where the 65,536-row batches of earlier versions spilled to memory.
CPU_TILE = 1024

#: Rows per tile of the bfloat16 CPU sampler: its activations take half the bytes. Barely matters: 100,000
#: samples took 1.18 s with 4,096-row tiles, 1.17 s with 2,048 and 1.21 s with 1,024 (medians of 5
#: interleaved runs, AVX512_BF16 EPYC, one thread, load 3.6).
CPU_TILE_BFLOAT16 = 4096


#: Whether the CPU evaluator multiplies by oneDNN's linear (:func:`_onednn_linear`) where torch has it.
USE_ONEDNN = True

#: Whether float32 training on the CPU runs each step as one call to the compiled fused step
#: (:class:`_FusedTrainer`, connector_sim._ext._cnf_train_cpp) where it is built; otherwise, or when False,
#: :class:`_FastTrainer` and :class:`_AdamW` run it with torch operations.
USE_FUSED_TRAINING = True

#: Rows per tile of the float32 CPU density on oneDNN. The fused op returns a new tensor per product; the
#: (d * rows, H) Jacobian products of 1,024-row tiles (2 MiB) made the allocator fault pages in on every call
#: (the product ran at half speed), 256-row ones (512 KiB) do not: 5.7 against 8.3 us a row for 1,024-row tiles
#: on MKL (4 x 128 MLP, 4 coordinates, one thread). The cause is glibc's malloc handing freed blocks back to
#: the system (trimming the heap); with ``MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=268435456``
#: in the environment, 1,024-row tiles ran at 3.9 us a row and sampling at 0.80 instead of 1.0 us a row.
CPU_TILE_DENSITY = 256


def _onednn_linear(dtype=torch.float32):
    """torch's oneDNN linear with a fused activation for ``dtype``, or None.

    ``f(x, W, b, "none" | "swish", [], "")`` returns act(x W^T + b) (W as
    nn.Linear holds it, (out, in); "swish" is SiLU), a new tensor.

    Why: torch.mm and addmm on float32 CPU tensors call MKL, which takes its
    AVX2 code on AMD processors: on an AVX-512 EPYC, one thread, a 2048^2
    product ran at 82 GFLOP/s through torch.mm and 181 through oneDNN, and a
    (1024, 128) x (128, 128) one at 81 and 162. oneDNN (torch's bfloat16
    path already) uses the AVX-512 kernels and applies the SiLU ("swish") to
    the product while it is in cache. The op is the one torch.compile's CPU
    backend emits (``torch.ops.mkldnn._linear_pointwise``), not a documented
    API: it is looked up and checked against addmm once, and the evaluator
    falls back to addmm where it is missing or disagrees (per ``dtype``).
    """
    if dtype not in _ONEDNN:
        _ONEDNN[dtype] = False
        try:
            op = torch.ops.mkldnn._linear_pointwise
            generator = torch.Generator().manual_seed(0)
            x, weight, bias = (torch.randn(shape, generator=generator) for shape in ((5, 8), (3, 8), (3,)))
            atol = 1e-5 if dtype == torch.float32 else 0.1  # bfloat16: 8 significant bits of values ~1
            ok = torch.allclose(op(x.to(dtype), weight.to(dtype), bias.to(dtype), "swish", [], "").float(),
                                torch.nn.functional.silu(torch.addmm(bias, x, weight.t())), rtol=0, atol=atol)
            if ok and torch.backends.mkldnn.is_available():
                _ONEDNN[dtype] = op
        except (AttributeError, RuntimeError, TypeError, NotImplementedError):
            pass
    return _ONEDNN[dtype] or None


_ONEDNN = {}


class _FastMLP:
    """Inference-only evaluation of a :class:`VelocityMLP` on tiles of rows, with buffers allocated once.

    The same maps as ``VelocityMLP.forward`` with its own weights (views,
    never copies, so it follows the model), rearranged:

    - the first layer on ``[x, c, t]`` is split as ``x W_x^T + (c W_c^T + t w_t + b)``:
      the bracket is one vector per step (times the condition's term, fixed
      per tile), so no ``[x, c, t]`` matrix is built;
    - each layer is one ``torch.addmm(bias, a, W^T, out=buffer)`` and an
      in-place SiLU, into buffers reused for every step and tile, or on a
      CPU with oneDNN (:func:`_onednn_linear`) one fused linear + SiLU.

    ``velocity_and_divergence`` propagates the d Jacobian columns dh/dx_j in
    forward mode alongside the activations (one ``(d * rows, H) x (H, H)``
    product per hidden layer; the first layer's columns enter the second
    layer as silu'(h_1) (diag(W_x[:, j]) W_2^T), weights folded once) and
    returns the exact trace; the result equals the autograd divergence up to
    float32 round-off.
    """

    def __init__(self, model, rows, *, divergence=False, precision="float32"):
        linears = [module for module in model.net if isinstance(module, nn.Linear)]
        d, cd = model.dim, model.condition_dim
        first = linears[0]
        self.dim, self.condition_dim, self.rows = d, cd, rows
        self.w_x = first.weight[:, :d].t()
        self.w_c = first.weight[:, d:d + cd].t()
        self.w_t = first.weight[:, d + cd]
        self.b_first = first.bias
        self.w_first = first.weight.t()
        hidden = first.weight.shape[0]
        options = dict(dtype=first.weight.dtype, device=first.weight.device)
        # bfloat16: the weights after the first layer are cast once (copies), the activations after the first
        # layer are bfloat16 tiles; the first layer (K = d + c + 1), the velocity handed back and the
        # divergence are float32.
        self.low = precision == "bfloat16"
        low = dict(options, dtype=torch.bfloat16) if self.low else options
        self.layers = [(linear.weight.t().to(low["dtype"]), linear.bias.to(low["dtype"])) for linear in linears[1:]]
        # oneDNN's linear (on a CPU, where torch has it) for the hidden layers' products, SiLU fused: weights
        # (out, in), as nn.Linear holds them (float32: views of the model's).
        self.onednn = (_onednn_linear(low["dtype"]) if USE_ONEDNN and options["device"].type == "cpu"
                       and torch.backends.mkldnn.enabled else None)
        if self.onednn is not None:
            self.linear_weights = [linear.weight.to(low["dtype"]) for linear in linears[1:-1]]
        self.a = [torch.empty(rows, hidden, **low) for _ in range(2)]
        if self.low:
            self.h_first = torch.empty(rows, hidden, **options)
            self.v_low = torch.empty(rows, d, **low)
        self.shift = torch.empty(hidden, **options)
        self.c_term = None
        if divergence:
            self.jacobian = [torch.empty(d * rows * hidden, **low) for _ in range(2)]  # (d, rows, H) each
            self.ones = torch.ones(rows, hidden, **low)
            self.ds = torch.empty(rows, hidden, **low)
            self.w_out_rows = linears[-1].weight.unsqueeze(2).to(low["dtype"])  # (d, H, 1): the trace's rows
            self.trace = torch.empty(d * rows, **low)
            self.ds_first = torch.empty(rows, hidden, **options)
            self.ones_first = torch.ones(rows, hidden, **options)
            # The first layer's Jacobian columns dh_1/dx_j = silu'(h_1) * W_x[:, j] are never formed: they enter
            # the next product as silu'(h_1) (diag(W_x[:, j]) W_2^T), weights folded once per evaluator (d, H, H).
            # With a single hidden layer the trace itself is silu'(h_1) . sum_j W_x[:, j] W_out[j, :].
            if len(linears) > 2:
                self.folded = (self.w_x.unsqueeze(2) * linears[1].weight.t().unsqueeze(0)).to(low["dtype"])
                if self.onednn is not None:
                    self.folded_linear = self.folded.transpose(1, 2).contiguous()  # (d, out, in)
            else:
                self.folded_trace = (self.w_x * linears[1].weight).sum(0)

    def set_condition(self, c):
        """Fix the condition of the rows (standardised, (rows, condition_dim)) for the following calls."""
        self.c_term = None if c is None else torch.addmm(self.b_first, c, self.w_c)

    def _first_layer(self, x, t, out):
        n = len(x)
        torch.mul(self.w_t, t, out=self.shift)
        if self.c_term is None:
            self.shift.add_(self.b_first)
            return torch.addmm(self.shift, x, self.w_x, out=out[:n])
        torch.addmm(self.c_term[:n], x, self.w_x, out=out[:n])
        return out[:n].add_(self.shift)

    def velocity(self, x, t, out):
        """v(x, t [, c]) into ``out`` (rows, d)."""
        if self.low:
            first = self._first_layer(x, t, self.h_first)
            torch.nn.functional.silu(first, inplace=True)
            return self._rest(self.a[0][:len(x)].copy_(first), out, activated=True)
        return self._rest(self._first_layer(x, t, self.a[0]), out)

    def velocity_of_inputs(self, inputs, out):
        """The MLP on rows ``[x, c, t]`` (one time per row, as ``VelocityMLP.forward`` takes them) into ``out``."""
        first = torch.addmm(self.b_first, inputs, self.w_first, out=self.a[0][:len(inputs)])
        return self._rest(first, out)

    def _rest(self, first, out, activated=False):
        """The layers after the first one's affine map ``first`` (rows, H; already through SiLU if ``activated``)."""
        n = len(first)
        a = first if activated else torch.nn.functional.silu(first, inplace=True)
        for index, (weight, bias) in enumerate(self.layers[:-1]):
            if self.onednn is not None:
                a = self.onednn(a, self.linear_weights[index], bias, "swish", [], "")
                continue
            a = torch.nn.functional.silu(torch.addmm(bias, a, weight, out=self.a[(index + 1) % 2][:n]),
                                         inplace=True)
        weight, bias = self.layers[-1]
        if self.low:
            return out.copy_(torch.addmm(bias, a, weight, out=self.v_low[:n]))
        return torch.addmm(bias, a, weight, out=out)

    def _silu_and_slope(self, h, jacobian, n):
        """In place: h <- silu(h) and the Jacobian columns <- silu'(h) * columns."""
        # silu'(h) = s (1 + h (1 - s)), s = sigmoid(h): torch's SiLU backward of a gradient of ones.
        ds = torch.ops.aten.silu_backward.grad_input(self.ones[:n], h, grad_input=self.ds[:n])
        jacobian.mul_(ds)
        return torch.nn.functional.silu(h, inplace=True)

    def velocity_and_divergence(self, x, t, out, divergence):
        """v(x, t [, c]) into ``out`` and its exact divergence sum_j dv_j/dx_j into ``divergence`` (rows,)."""
        n, d = len(x), self.dim
        h = self._first_layer(x, t, self.h_first if self.low else self.a[0])
        hidden = h.shape[1]
        ds = torch.ops.aten.silu_backward.grad_input(self.ones_first[:n], h, grad_input=self.ds_first[:n])
        a = torch.nn.functional.silu(h, inplace=True)
        if len(self.layers) == 1:  # one hidden layer: the trace is silu'(h_1) . sum_j W_x[:, j] W_out[j, :]
            torch.mv(ds, self.folded_trace, out=divergence)
            return self._rest(self.a[0][:n].copy_(a) if self.low else a, out, activated=True)
        if self.low:
            a, ds = self.a[0][:n].copy_(a), self.ds[:n].copy_(ds)
        # oneDNN for float32 only: bfloat16's addmm already runs on oneDNN, into buffers (the fresh outputs of
        # the fused op cost more than they save there).
        onednn = None if self.low else self.onednn
        weight, bias = self.layers[0]
        jacobian = self.jacobian[1][:d * n * hidden].view(d, n, hidden)
        if onednn is None:
            h = torch.addmm(bias, a, weight, out=self.a[1][:n])
            for j in range(d):  # dh_2/dx_j = (silu'(h_1) * W_x[:, j]) W_2^T
                torch.mm(ds, self.folded[j], out=jacobian[j])
        else:
            h = onednn(a, self.linear_weights[0], bias, "none", [], "")
            for j in range(d):
                jacobian[j].copy_(onednn(ds, self.folded_linear[j], None, "none", [], ""))
        a = self._silu_and_slope(h, jacobian, n)
        for index, (weight, bias) in enumerate(self.layers[1:-1], start=1):
            following = (index + 1) % 2
            if onednn is None:
                h = torch.addmm(bias, a, weight, out=self.a[following][:n])
                next_jacobian = self.jacobian[following][:d * n * hidden].view(d, n, hidden)
                torch.mm(jacobian.view(d * n, hidden), weight, out=next_jacobian.view(d * n, hidden))
            else:
                h = onednn(a, self.linear_weights[index], bias, "none", [], "")
                next_jacobian = onednn(jacobian.view(d * n, hidden), self.linear_weights[index], None, "none", [],
                                       "").view(d, n, hidden)
            jacobian = next_jacobian
            a = self._silu_and_slope(h, jacobian, n)
        weight, bias = self.layers[-1]
        if self.low:
            out.copy_(torch.addmm(bias, a, weight, out=self.v_low[:n]))
        else:
            torch.addmm(bias, a, weight, out=out)
        trace = self.trace[:d * n].view(d, n, 1)
        torch.bmm(jacobian, self.w_out_rows, out=trace)  # row j: dv_j/dx_j
        if self.low:
            return torch.sum(trace.view(d, n), dim=0, dtype=divergence.dtype, out=divergence)
        return torch.sum(trace.view(d, n), dim=0, out=divergence)


def _fast_model(model):
    """Whether ``model`` is a VelocityMLP of the standard layout, which :class:`_FastMLP` evaluates.

    A model with forward hooks (on it or on every module) is called through
    its forward instead, so that the hooks see every evaluation.
    """
    if type(model) is not VelocityMLP:
        return False
    from torch.nn.modules import module as torch_module

    if (model._forward_hooks or model._forward_pre_hooks or torch_module._global_forward_hooks
            or torch_module._global_forward_pre_hooks):
        return False
    modules = list(model.net)
    return (len(modules) % 2 == 1 and all(isinstance(m, nn.Linear) for m in modules[::2])
            and all(type(m) is nn.SiLU for m in modules[1::2]))



def _flatten_parameters(model):
    """Make the parameters of ``model`` views of one flat tensor (returned), with gradients in one flat tensor.

    An optimizer or an average over the flat tensor then updates every
    weight with one call per operation instead of one per layer.
    """
    parameters = list(model.parameters())
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in parameters])
        gradient = torch.zeros_like(flat)
        offset = 0
        for p in parameters:
            size = p.numel()
            p.data = flat[offset:offset + size].view_as(p)
            p.grad = gradient[offset:offset + size].view_as(p)
            offset += size
    flat = nn.Parameter(flat)
    flat.grad = gradient
    return flat


def _unflatten_parameters(model):
    """Give every parameter of ``model`` its own storage again (undoes :func:`_flatten_parameters`)."""
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
            p.grad = None


class _FastTrainer:
    """The flow-matching loss of a :class:`VelocityMLP` and its gradient, by hand, into a flat gradient.

    For a batch (x_0, x_1, t [, c]) with x_t = (1 - t) x_0 + t x_1::

        forward:   h_1 = [x_t, c, t] W_1^T + b_1,  a_l = silu(h_l),  h_{l+1} = a_l W_{l+1}^T + b_{l+1}
                   loss = mean_rows |h_{L+1} - (x_1 - x_0)|^2
        backward:  g_{L+1} = 2 (h_{L+1} - (x_1 - x_0)) / B
                   dW_l = g_l^T a_{l-1} (a_0 = [x_t, c, t]),  db_l = sum_rows g_l
                   g_l = (g_{l+1} W_{l+1}) * silu'(h_l),  silu'(h) = s (1 + h (1 - s)), s = sigmoid(h)

    the products autograd would form, without its graph, and with buffers
    allocated once. The weights must be views of one flat tensor
    (:func:`_flatten_parameters`); the gradient goes into its ``.grad``.
    """

    def __init__(self, model, rows):
        self.linears = [module for module in model.net if isinstance(module, nn.Linear)]
        self.dim, self.condition_dim = model.dim, model.condition_dim
        options = dict(dtype=self.linears[0].weight.dtype, device=self.linears[0].weight.device)
        self.inputs = torch.empty(rows, self.linears[0].in_features, **options)
        self.h = [torch.empty(rows, linear.out_features, **options) for linear in self.linears[:-1]]
        self.a = [torch.empty(rows, linear.out_features, **options) for linear in self.linears[:-1]]
        self.out = torch.empty(rows, self.dim, **options)
        self.difference = torch.empty(rows, self.dim, **options)
        self.g = [torch.empty(rows, self.linears[0].out_features, **options) for _ in range(2)]
        # Views made once (the weights and gradients are views of the flat tensors, updated in place):
        # (weight, W^T, bias, weight gradient, bias gradient) per layer; the row slices per batch size.
        self.layers = [(linear.weight, linear.weight.t(), linear.bias, linear.weight.grad, linear.bias.grad)
                       for linear in self.linears]
        self._slices = {}

    def _buffers(self, n):
        """The buffers' first ``n`` rows (made once per batch size: a full one and the last, shorter one)."""
        if n not in self._slices:
            d = self.dim
            self._slices[n] = (self.inputs[:n], self.inputs[:n, :d], self.inputs[:n, -1], [h[:n] for h in self.h],
                               [a[:n] for a in self.a], self.out[:n], self.difference[:n], [g[:n] for g in self.g])
        return self._slices[n]

    def loss_and_gradient(self, x0, x1, t, condition=None):
        """The batch's loss (a 0-d tensor); the gradient is written into the parameters' ``.grad`` views."""
        with torch.no_grad():
            return self.squared_error_and_gradient(x0, x1, t, condition).div_(len(x0))

    def squared_error_and_gradient(self, x0, x1, t, condition=None):
        """The batch's summed squared error (loss times rows, a 0-d tensor) and the gradient (call without grad)."""
        n, d, cd = len(x0), self.dim, self.condition_dim
        inputs, x_t, t_column, h, a, out, difference, g_buffers = self._buffers(n)
        # x_t = (1 - t) x_0 + t x_1, as x_0 + t (x_1 - x_0): the target x_1 - x_0 is needed anyway.
        torch.sub(x1, x0, out=difference)
        torch.addcmul(x0, t[:, None], difference, out=x_t)
        if cd:
            inputs[:, d:d + cd] = condition
        t_column.copy_(t)
        previous = inputs
        for layer, (_, weight_t, bias, _, _) in enumerate(self.layers[:-1]):
            torch.addmm(bias, previous, weight_t, out=h[layer])
            previous = torch.ops.aten.silu.out(h[layer], out=a[layer])
        _, weight_t, bias, _, _ = self.layers[-1]
        residual = torch.addmm(bias, previous, weight_t, out=out).sub_(difference)
        squared_error = torch.dot(residual.view(-1), residual.view(-1))
        g = residual.mul_(2.0 / n)
        for layer in range(len(self.layers) - 1, -1, -1):
            weight, _, _, weight_grad, bias_grad = self.layers[layer]
            torch.mm(g.t(), inputs if layer == 0 else a[layer - 1], out=weight_grad)
            torch.sum(g, dim=0, out=bias_grad)
            if layer == 0:
                break
            g_a = torch.mm(g, weight, out=g_buffers[0])
            # g_a * silu'(h), silu'(h) = s (1 + h (1 - s)): torch's SiLU backward, as autograd computes it.
            g = torch.ops.aten.silu_backward.grad_input(g_a, h[layer - 1], grad_input=g_buffers[1])
        return squared_error


class _AdamW:
    """``torch.optim.AdamW(fused=True)``'s step on one flat tensor, by its kernel without the per-call overhead.

    ``step()`` does what ``optimizer.step()`` does for the single flat
    parameter (the same fused kernel on the same state tensors, so the same
    bits: tested), reading the learning rate the scheduler sets on
    ``optimizer.param_groups``; it takes 23 instead of 45 us for the 50,000
    weights of a 4 x 128 MLP. Where the kernel is missing (another torch)
    and off the CPU it calls ``optimizer.step()``.
    """

    def __init__(self, optimizer, parameter):
        self.optimizer, self.parameter = optimizer, parameter
        self.group = optimizer.param_groups[0]
        self.kernel = getattr(torch, "_fused_adamw_", None)
        self.state = None

    def step(self):
        if self.state is None:  # the first step makes the optimizer's state (and checks the settings)
            self.optimizer.step()
            state = self.optimizer.state[self.parameter]
            # CPU only: the direct call has not been run on a GPU, where optimizer.step() stays.
            direct = (self.kernel is not None and self.parameter.device.type == "cpu" and self.group.get("fused")
                      and not self.group["amsgrad"]
                      and not self.group["maximize"] and not self.group.get("capturable")
                      and all(name in state for name in ("step", "exp_avg", "exp_avg_sq")))
            self.state = ([state["exp_avg"]], [state["exp_avg_sq"]], [state["step"]]) if direct else False
            return
        if self.state is False:
            self.optimizer.step()
            return
        group = self.group
        exp_avg, exp_avg_sq, step = self.state
        step[0].add_(1)
        beta1, beta2 = group["betas"]
        try:
            self.kernel([self.parameter], [self.parameter.grad], exp_avg, exp_avg_sq, [], step, amsgrad=False,
                        lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                        eps=group["eps"], maximize=False)
        except (TypeError, RuntimeError):  # a torch whose kernel takes other arguments (checked before it runs)
            step[0].sub_(1)
            self.state = False
            self.optimizer.step()


def _fused_training_module(flat, device):
    """connector_sim._ext._cnf_train_cpp if the fused training step applies (CPU, float32, built, switched on)."""
    if not USE_FUSED_TRAINING or device.type != "cpu" or flat.dtype != torch.float32:
        return None
    try:
        from .._ext import _cnf_train_cpp
    except ImportError:
        return None
    # Its baseline x86-64 clone multiplies at ~20 GFLOP/s, below torch's own kernels: an epoch at the
    # Connector's defaults took 144 ms against ~35 with the torch step (CONNECTOR_SIM_ISA=default; the avx2
    # clone 30 ms, the avx512 one 14). So the fused step needs AVX2.
    if _cnf_train_cpp.kernel_isa() == "default":
        return None
    return _cnf_train_cpp


class _FusedTrainer:
    """A whole training step (forward, backward, AdamW, weight average) as one call to the compiled kernel.

    The kernel (``CnfTrainStep``, reference:
    :func:`connector_sim._kernels.cnf_train_step.cnf_train_step_reference`)
    updates, in place, the flat weights (:func:`_flatten_parameters`), their
    gradient, the optimizer's ``exp_avg`` and ``exp_avg_sq`` and the flat
    weight average, through NumPy views made once. The random draws stay
    torch's, in the order of the torch path (x1 = z[index], x0 = randn,
    t = rand), written into buffers allocated once, so the random stream is
    the same. The optimizer's state is torch's (made here as its first step
    would); its step count is written back by :meth:`sync`, so that
    ``optimizer.step()`` can carry on from it.
    """

    def __init__(self, module, model, flat, optimizer, averaged_flat, rows):
        group = optimizer.param_groups[0]
        state = optimizer.state[flat]
        if not state:  # what AdamW(fused=True)'s first step makes
            state["step"] = torch.zeros((), dtype=torch.float32, device=flat.device)
            state["exp_avg"] = torch.zeros_like(flat, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(flat, memory_format=torch.preserve_format)
        self.optimizer, self.group, self.state = optimizer, group, state
        self.n_steps = int(state["step"].item())
        beta1, beta2 = group["betas"]
        self.kernel = module.CnfTrainStep(
            flat.detach().numpy(), flat.grad.numpy(), state["exp_avg"].numpy(), state["exp_avg_sq"].numpy(),
            None if averaged_flat is None else averaged_flat.numpy(), dim=model.dim,
            condition_dim=model.condition_dim, hidden=model.net[0].out_features, n_layers=len(model.net) // 2,
            max_rows=rows, beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"])
        # The weights the validation evaluates: the average if there is one.
        self.evaluated = flat.detach().numpy() if averaged_flat is None else averaged_flat.numpy()
        self.x0 = torch.empty(rows, model.dim)
        self.x1 = torch.empty(rows, model.dim)
        self.t = torch.empty(rows)
        self.condition = torch.empty(rows, model.condition_dim) if model.condition_dim else None
        self._slices = {}

    def _buffers(self, n):
        """(x0, x1, t, condition) tensors of n rows and their NumPy views (made once per batch size)."""
        if n not in self._slices:
            tensors = (self.x0[:n], self.x1[:n], self.t[:n], None if self.condition is None else self.condition[:n])
            self._slices[n] = tensors, tuple(None if x is None else x.numpy() for x in tensors)
        return self._slices[n]

    def step(self, z_train, c_train, index, n, generator, ema_decay):
        """Draw the batch of the ``n`` rows ``index`` and take one step; returns its summed squared error (float)."""
        (x0, x1, t, condition), views = self._buffers(n)
        torch.index_select(z_train, 0, index, out=x1)
        torch.randn(x1.shape, generator=generator, out=x0)
        torch.rand(n, generator=generator, out=t)
        if condition is not None:
            torch.index_select(c_train, 0, index, out=condition)
        self.n_steps += 1
        return self.kernel.step(*views, self.group["lr"], self.n_steps, ema_decay)

    def validation_loss(self, inputs, target):
        """mean_rows |v(inputs) - target|^2 of the evaluated weights (NumPy float32 rows), by the kernel's forward."""
        return self.kernel.squared_error(self.evaluated, inputs, target) / len(inputs)

    def sync(self):
        """Write the step count into the optimizer's state (call before the schedule's step)."""
        self.state["step"].fill_(self.n_steps)
        # What the learning-rate schedule's wrapper of optimizer.step() records (it warns otherwise).
        self.optimizer._opt_called = True


def _integrate(derivative, state, t0, h, n_steps, solver):
    """``n_steps`` fixed steps of size h from t0, in place on the list of tensors ``state``.

    ``derivative(state, t, out)`` writes the derivative of each state tensor
    into the list ``out``. The arithmetic is that of :func:`_ode_step`
    (``base + scale * k`` as a product, then a sum), so the two agree to the
    last bit for the same derivative values; buffers are allocated once.
    """
    def stage():
        return [torch.empty_like(s) for s in state]

    k, trial = stage(), stage()

    def shifted(scale, increments):  # trial <- state + scale * increments
        for out, base, increment in zip(trial, state, increments):
            torch.mul(increment, scale, out=out)
            out.add_(base)
        return trial

    if solver == "rk4":
        k2, k3, k4 = stage(), stage(), stage()
    for step in range(n_steps):
        t = t0 + step * h
        derivative(state, t, k)
        if solver == "euler":
            increments, scale = k, h
        elif solver == "midpoint":
            derivative(shifted(h / 2, k), t + h / 2, k)
            increments, scale = k, h
        else:
            derivative(shifted(h / 2, k), t + h / 2, k2)
            derivative(shifted(h / 2, k2), t + h / 2, k3)
            derivative(shifted(h, k3), t + h, k4)
            for a, b, c, e in zip(k, k2, k3, k4):  # a <- a + 2 b + 2 c + e, left to right
                a.add_(b, alpha=2).add_(c, alpha=2).add_(e)
            increments, scale = k, h / 6
        for s, increment in zip(state, increments):
            s.add_(increment.mul_(scale))
    return state


class FlowMatchingCNF:
    """A continuous normalizing flow for p(x) or p(x | c), trained by flow matching.

    scikit-learn style: the constructor stores the settings, :meth:`fit`
    learns from data and returns ``self``, learned attributes end in ``_``.
    See the module docstring for the equations.

    Parameters
    ----------
    hidden : int, default=128
        Width of the hidden layers of the velocity MLP (paper: 128).
    n_layers : int, default=4
        Hidden layers (paper: 4).
    n_epochs : int, default=1000
        Passes over the training rows (paper: 1,000).
    batch_size : int, default=64
        Rows per optimizer step (paper: 64).
    learning_rate : float, default=1e-3
    weight_decay : float, default=1e-4
        AdamW's decoupled weight decay, a common flow-matching default. The
        official Connector code uses 1e-5 (``Connector.official``).
    validation_fraction : float in [0, 1), default=0.2
        Rows held out to pick the best epoch (paper: 4/5 train, 1/5 test).
        The state with the lowest validation loss is kept. 0, or too few rows
        to hold any out, trains on all rows and keeps the last state.
    patience : int, optional
        Stop when the validation loss has not improved for this many epochs.
    n_steps : int, default=10
        Fixed ODE steps for sampling and densities (the paper's text: 10,
        midpoint; the official code's ``step_size=0.05`` integrates 20).
    solver : {"midpoint", "euler", "rk4"}, default="midpoint"
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
        "auto" trains on CUDA when it is available.
    random_state : None, int or numpy.random.Generator
        Seeds the weights, the validation split and the training noise.
    verbose : bool or int, default=False
        Print progress to stderr: True every n_epochs / 10 epochs, an int k
        every k epochs.
    callback : callable, optional
        ``callback(estimator, epoch, {"train_loss": ..., "val_loss": ...})``
        after each epoch (``epoch`` counts from 1); a true return stops
        training. Not saved with the flow.
    sample_batch_size : int, default=65536
        Rows per batch in :meth:`sample` and :meth:`log_prob` (memory grows
        with it, not with the number of samples). Within a batch the MLP runs
        on tiles of 1,024 rows on a CPU (in cache) and on the whole batch on
        a GPU. On CUDA, when no ``batch_size`` is given to :meth:`sample` or
        :meth:`log_prob`, all rows go in one pass if their buffers take at
        most half of the free GPU memory (this path has not been run on a
        GPU yet).
    cosine : bool, default=True
        Anneal the learning rate to 0 over ``n_epochs`` along a cosine.
        Without it the weights keep the noise of the last steps: on 1,000
        rows of N(0, I2) (100 epochs, lr 2e-3) the sample variance came out
        1.22-1.27 for two of four seeds, against 0.97-1.09 with the schedule.
    ema_decay : float in [0, 1) or None, default=0.999
        Validate, keep and use the exponential moving average of the weights
        over optimizer steps (decay min(ema_decay, (1 + k) / (10 + k)) at
        step k, so short runs are not pinned to the random start); None or 0
        uses the raw weights. On 5,000 rows of N(0, I2) (200 epochs, five
        seeds) the sample variances were within 2% of the data's with the
        average and within 6% without.
    n_threads : int or None, default=1
        torch CPU threads (and NumPy's BLAS threads) while fitting, sampling
        and evaluating densities (restored afterwards); None leaves them as
        they are. The MLPs here
        are too small to gain from threads: a training step (batch 128,
        3 x 64) took 2 ms with one thread and 25-50 ms with two on a busy
        2-core machine, where threads oversubscribe the cores.

    Attributes
    ----------
    dim_ : int
        Dimension of x.
    condition_dim_ : int
        Dimension of c (0 for an unconditional flow).
    free_ : ndarray of bool, shape (``dim_``,)
        Coordinates modelled by the flow; the others are constant.
    mean_, scale_ : ndarray of shape (``dim_``,)
        Standardisation of x (scale 1 on constant coordinates).
    condition_mean_, condition_scale_ : ndarray of shape (``condition_dim_``,)
    model_ : VelocityMLP or None
        None when every coordinate is constant.
    history_ : dict
        "train_loss" and "val_loss" per epoch (val NaN without a validation
        set), "epoch_seconds", "best_epoch" and "device".

    Raises
    ------
    ValueError
        From :meth:`fit`: a parameter out of range or unknown, ``x`` not a
        finite 2-D array, a ``condition`` of the wrong shape, or too few rows
        for ``validation_fraction``; from :meth:`sample` / :meth:`log_prob`, a
        condition that does not match the fitted flow.
    TypeError
        From :meth:`fit`: a parameter of the wrong type.

    Notes
    -----
    On the CPU, where the compiled extension is built and the CPU has AVX2,
    each training step (forward, backward, AdamW, weight average) and the
    validation loss run in one compiled float32 kernel on one thread
    (``connector_sim._ext._cnf_train_cpp``; switch:
    ``connector_sim.inference.flows.USE_FUSED_TRAINING``); the random draws
    are torch's either way, and the result agrees with the torch step to
    float32 round-off.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 2))
    >>> flow = FlowMatchingCNF(hidden=16, n_layers=2, n_epochs=2, random_state=0, device="cpu").fit(x)
    >>> flow.dim_, flow.sample(10, random_state=0).shape, flow.log_prob(x[:3]).shape
    (2, (10, 2), (3,))
    """

    def __init__(self, *, hidden=128, n_layers=4, n_epochs=1000, batch_size=64, learning_rate=1e-3,
                 weight_decay=1e-4, validation_fraction=0.2, patience=None, n_steps=10, solver="midpoint",
                 device="auto", random_state=None, verbose=False, sample_batch_size=DEFAULT_BATCH, n_threads=1,
                 cosine=True, ema_decay=0.999, callback=None):
        self.hidden = hidden
        self.n_layers = n_layers
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.n_steps = n_steps
        self.solver = solver
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.sample_batch_size = sample_batch_size
        self.n_threads = n_threads
        self.cosine = cosine
        self.ema_decay = ema_decay
        self.callback = callback

    # ------------------------------------------------------------------ checks

    def _check_params(self):
        hidden = check_int(self.hidden, "hidden", minimum=1, maximum=MAX_HIDDEN, owner=_OWNER)
        n_layers = check_int(self.n_layers, "n_layers", minimum=1, maximum=MAX_LAYERS, owner=_OWNER)
        if n_layers * hidden * (hidden + 1) > MAX_PARAMETERS:
            raise ValueError(f"The velocity MLP of {_OWNER} would have about {n_layers * hidden * (hidden + 1):.3g} "
                             f"weights (n_layers={n_layers} x hidden={hidden}^2), more than {MAX_PARAMETERS:.3g} "
                             "(1 GiB of float32, several to train). Reduce hidden or n_layers (paper: 4 x 128).")
        check_int(self.n_epochs, "n_epochs", minimum=1, owner=_OWNER)
        check_int(self.batch_size, "batch_size", minimum=1, owner=_OWNER)
        check_positive_scalar(self.learning_rate, "learning_rate", owner=_OWNER)
        check_nonnegative_scalar(self.weight_decay, "weight_decay", owner=_OWNER)
        fraction = check_nonnegative_scalar(self.validation_fraction, "validation_fraction", owner=_OWNER)
        if fraction >= 1:
            raise ValueError(f"The 'validation_fraction' parameter of {_OWNER} must be in [0, 1). "
                             f"Got {self.validation_fraction!r} instead.")
        if self.patience is not None:
            check_int(self.patience, "patience", minimum=1, owner=_OWNER)
        check_solver(self.solver, self.n_steps)
        check_int(self.sample_batch_size, "sample_batch_size", minimum=1, owner=_OWNER)
        if self.ema_decay is not None:
            decay = check_nonnegative_scalar(self.ema_decay, "ema_decay", owner=_OWNER)
            if decay >= 1:
                raise ValueError(f"The 'ema_decay' parameter of {_OWNER} must be in [0, 1). Got {decay!r} instead.")
        check_n_threads(self.n_threads, _OWNER, allow_none=True)
        if not isinstance(self.verbose, (bool, int, np.integer)) or self.verbose < 0:
            raise TypeError(f"The 'verbose' parameter of {_OWNER} must be a bool or an int >= 0. Got {self.verbose!r}.")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"The 'callback' parameter of {_OWNER} must be callable or None. Got {self.callback!r}.")
        return resolve_device(self.device)

    def _check_fitted(self):
        if not hasattr(self, "dim_"):
            raise RuntimeError(f"This {_OWNER} is not fitted yet. Call fit(x) first.")

    def _check_condition(self, condition, n_rows, name="condition"):
        """condition as float64 (n_rows or any, condition_dim_), or None for an unconditional flow."""
        if self.condition_dim_ == 0:
            if condition is not None:
                raise ValueError(f"This {_OWNER} was fitted without a condition; pass condition=None. "
                                 f"Got an array of shape {np.shape(condition)}.")
            return None
        if condition is None:
            raise ValueError(f"This {_OWNER} is conditional (condition_dim = {self.condition_dim_}): pass "
                             f"condition of shape (n_rows, {self.condition_dim_}).")
        return check_array(condition, name, ndim=2, dtype=np.float64, shape=(n_rows, self.condition_dim_))

    # ------------------------------------------------------------------ training

    def fit(self, x, condition=None):
        """Learn p(x) (or p(x | c)) from rows of x (and their conditions).

        Parameters
        ----------
        x : array-like of shape (n_rows, dim)
            Samples; at least dim + 1 rows (the standardisation and the flow
            need more rows than dimensions).
        condition : array-like of shape (n_rows, condition_dim), optional
            Row i's condition c_i: the flow then learns p(x | c), input
            ``[x_t, c, t]``.

        Returns
        -------
        self
        """
        device = self._check_params()
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"x must be a 2-D array of shape (n_rows, dim). Got shape {x.shape}.")
        x = check_array(x, "x", ndim=2, dtype=np.float64)
        n_rows, dim = x.shape
        if dim < 1:
            raise ValueError(f"x must have at least one column. Got shape {x.shape}.")
        if n_rows < dim + 1:
            raise ValueError(
                f"{_OWNER}.fit needs more rows than dimensions (at least {dim + 1} for dim = {dim}) to estimate "
                f"a density. Got {n_rows} row(s). Give more samples, or fewer dimensions."
            )
        if condition is not None:
            condition = np.asarray(condition)
            if condition.ndim != 2:
                raise ValueError(f"condition must be a 2-D array of shape ({n_rows}, condition_dim). "
                                 f"Got shape {condition.shape}.")
            condition = check_array(condition, "condition", ndim=2, dtype=np.float64, shape=(n_rows, None))
        rng = check_random_state(self.random_state)

        self.dim_ = dim
        self.condition_dim_ = 0 if condition is None else condition.shape[1]
        mean, std = x.mean(axis=0), x.std(axis=0)
        self.free_ = std > CONSTANT_RTOL * np.maximum(1.0, np.abs(mean))
        # A constant coordinate keeps its exact value (a mean of copies can round).
        self.mean_ = np.where(self.free_, mean, x[0])
        self.scale_ = np.where(self.free_, std, 1.0)
        if condition is not None:
            c_mean, c_std = condition.mean(axis=0), condition.std(axis=0)
            self.condition_mean_ = c_mean
            self.condition_scale_ = np.where(c_std > CONSTANT_RTOL * np.maximum(1.0, np.abs(c_mean)), c_std, 1.0)
        else:
            self.condition_mean_ = np.zeros(0)
            self.condition_scale_ = np.ones(0)
        self.device_ = device
        self.history_ = {"train_loss": [], "val_loss": [], "epoch_seconds": [], "best_epoch": None,
                         "device": str(device)}
        n_free = int(self.free_.sum())
        if n_free == 0:
            self.model_ = None
            return self

        z = (x[:, self.free_] - self.mean_[self.free_]) / self.scale_[self.free_]
        c = None if condition is None else (condition - self.condition_mean_) / self.condition_scale_
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_torch_seed(rng))
            model = VelocityMLP(n_free, self.condition_dim_, self.hidden, self.n_layers)
        model = model.to(device)
        self.model_ = model
        with torch_threads(self.n_threads):
            try:
                self._train(z, c, rng, device)
            finally:  # also when interrupted: the weights own their storage again
                _unflatten_parameters(model)
        return self

    def _split(self, n_rows, rng):
        n_val = round(self.validation_fraction * n_rows)
        if n_val < 1 or n_rows - n_val < 2:
            return np.arange(n_rows), None
        order = rng.permutation(n_rows)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def _train(self, z, c, rng, device):
        model = self.model_
        generator = torch.Generator(device=device)
        generator.manual_seed(_torch_seed(rng))
        train_index, val_index = self._split(len(z), rng)

        def tensor(array):
            return torch.as_tensor(array, dtype=torch.float32, device=device)

        z_train = tensor(z[train_index])
        c_train = None if c is None else tensor(c[train_index])
        validation = None
        if val_index is not None:
            repeats = max(1, math.ceil(VALIDATION_DRAWS / len(val_index)))
            z_val = np.repeat(z[val_index], repeats, axis=0)
            x0_val = rng.standard_normal(z_val.shape)
            t_val = rng.random(len(z_val))
            c_val = None if c is None else tensor(np.repeat(c[val_index], repeats, axis=0))
            x1_val = tensor(z_val)
            x0_val = tensor(x0_val)
            t_val = tensor(t_val)
            xt_val = (1 - t_val[:, None]) * x0_val + t_val[:, None] * x1_val
            inputs_val = torch.cat([xt_val] + ([] if c_val is None else [c_val]) + [t_val[:, None]], dim=1)
            validation = (inputs_val, x1_val - x0_val)

        n_train, batch = len(z_train), min(self.batch_size, len(z_train))
        # All weights are views of one flat tensor: AdamW and the average below take one call per operation
        # (the same elementwise arithmetic as per layer); the gradient is computed by hand (_FastTrainer).
        flat = _flatten_parameters(model)
        fused_module = _fused_training_module(flat, device)
        # The fused kernel: one pass over the weights instead of ~10 (145 -> 57 us a step for 4 x 128 on one core),
        # called without optimizer.step()'s overhead (_AdamW: 23 us).
        optimizer = torch.optim.AdamW([flat], lr=self.learning_rate, weight_decay=self.weight_decay,
                                      fused=device.type in ("cpu", "cuda"))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.n_epochs) if self.cosine else None
        # The exponential moving average of the weights is what is validated and kept.
        averaged = averaged_flat = None
        if self.ema_decay:
            averaged = copy.deepcopy(model).requires_grad_(False).eval()
            averaged_flat = torch.cat([p.reshape(-1) for p in averaged.parameters()])
            offset = 0
            for p in averaged.parameters():
                p.data = averaged_flat[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
        if fused_module is not None:  # one compiled call per step
            fused = _FusedTrainer(fused_module, model, flat, optimizer, averaged_flat, batch)
            trainer = adamw = None
        else:
            fused, trainer, adamw = None, _FastTrainer(model, batch), _AdamW(optimizer, flat)
        evaluated = model if averaged is None else averaged

        def average_decay(step):
            # Warm-up: early on the average must not hold on to the random start.
            return min(self.ema_decay, (1 + step) / (10 + step))

        if fused is not None and validation is not None:
            validation_arrays = tuple(array.contiguous().numpy() for array in validation)
        n_steps_done = 0
        report_every = self._report_every()
        best_loss, best_state, best_epoch, stale = math.inf, None, None, 0
        history = self.history_
        start = time.perf_counter()
        for epoch in range(self.n_epochs):
            epoch_start = time.perf_counter()
            if fused is None or not model.training:  # (the fused step runs no module: one switch is enough)
                model.train()
            order = torch.randperm(n_train, generator=generator, device=device)
            with torch.no_grad():
                if fused is not None:
                    total = 0.0  # a float64 sum of the kernel's float64 batch sums
                    for first in range(0, n_train, batch):
                        n_steps_done += 1
                        decay = average_decay(n_steps_done) if averaged is not None else 0.0  # (0: ignored)
                        total += fused.step(z_train, c_train, order[first:first + batch],
                                            min(batch, n_train - first), generator, decay)
                else:
                    total = torch.zeros((), device=device)
                    for first in range(0, n_train, batch):
                        index = order[first:first + batch]
                        x1 = z_train[index]
                        x0 = torch.randn(x1.shape, generator=generator, device=device)
                        t = torch.rand(len(x1), generator=generator, device=device)
                        total += trainer.squared_error_and_gradient(x0, x1, t,
                                                                    None if c_train is None else c_train[index])
                        adamw.step()
                        n_steps_done += 1
                        if averaged is not None:
                            averaged_flat.lerp_(flat, 1.0 - average_decay(n_steps_done))
            if fused is not None:
                fused.sync()
            history["train_loss"].append(float(total) / n_train)
            if schedule is not None:
                schedule.step()
            if validation is not None:
                if fused is not None:  # runs no module, so no eval() switch (0.4 ms for a 4 x 128 MLP)
                    val_loss = fused.validation_loss(*validation_arrays)
                else:
                    evaluated.eval()
                    val_loss = self._validation_loss(evaluated, *validation)
                history["val_loss"].append(val_loss)
                if val_loss < best_loss:
                    best_loss, best_epoch, stale = val_loss, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
                else:
                    stale += 1
            else:
                history["val_loss"].append(float("nan"))
                best_epoch = epoch
            history["epoch_seconds"].append(time.perf_counter() - epoch_start)
            if report_every and ((epoch + 1) % report_every == 0 or epoch == 0):
                print(f"[{_OWNER}] epoch {epoch + 1}/{self.n_epochs}  train {history['train_loss'][-1]:.4f}  "
                      f"val {history['val_loss'][-1]:.4f}  best epoch {None if best_epoch is None else best_epoch + 1}"
                      f"  {time.perf_counter() - start:.1f} s on {device}", file=sys.stderr, flush=True)
            if self.callback is not None and self.callback(self, epoch + 1, {
                    "train_loss": history["train_loss"][-1], "val_loss": history["val_loss"][-1]}):
                break
            if self.patience is not None and validation is not None and stale >= self.patience:
                break
        if best_state is None and averaged is not None:
            best_state = averaged.state_dict()
        _unflatten_parameters(model)
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        history["best_epoch"] = best_epoch

    @staticmethod
    def _validation_loss(model, inputs, target):
        """mean_rows |v(x_t, t [, c]) - (x_1 - x_0)|^2 over the validation draws, by cache-sized tiles."""
        tile = len(inputs) if inputs.device.type != "cpu" else min(len(inputs), CPU_TILE)
        total = torch.zeros((), dtype=inputs.dtype, device=inputs.device)
        with torch.no_grad():
            evaluator = _FastMLP(model, tile)
            out = torch.empty(tile, target.shape[1], dtype=inputs.dtype, device=inputs.device)
            for first in range(0, len(inputs), tile):
                rows = inputs[first:first + tile]
                residual = evaluator.velocity_of_inputs(rows, out[:len(rows)]).sub_(target[first:first + tile])
                total += (residual**2).sum()
        return float(total) / len(inputs)

    def _report_every(self):
        if self.verbose is True:
            return max(1, self.n_epochs // 10)
        return int(self.verbose)

    # ------------------------------------------------------------------ inference

    def _batches(self, n_rows, batch_size):
        batch_size = self.sample_batch_size if batch_size is None else check_int(batch_size, "batch_size", minimum=1)
        return [(first, min(first + batch_size, n_rows)) for first in range(0, n_rows, batch_size)]

    def _standard_condition(self, condition, device):
        if condition is None:
            return None
        return torch.as_tensor((condition - self.condition_mean_) / self.condition_scale_, dtype=torch.float32,
                               device=device)

    def sample(self, n_samples=None, condition=None, random_state=None, *, n_steps=None, solver=None,
               batch_size=None, precision="float32", x0=None):
        """Draw samples by integrating dx/dt = v(x, t [, c]) from x_0 ~ N(0, I) at t = 0 to t = 1.

        Parameters
        ----------
        n_samples : int, optional
            Number of samples. For a conditional flow it defaults to (and
            must equal) the number of condition rows.
        condition : array-like of shape (n_samples, condition_dim), optional
            One condition per sample (conditional flows only).
        random_state : None, int or numpy.random.Generator
            x_0 is drawn with NumPy from this generator, so the same seed
            gives the same samples on any device and after save/load.
        n_steps : int, optional
            Fixed ODE steps; default the estimator's ``n_steps``.
        solver : {"midpoint", "euler", "rk4"}, optional
            Default the estimator's ``solver``.
        batch_size : int, optional
            Rows per batch (default ``sample_batch_size``; on CUDA, every row
            in one pass when it fits): 1e6 samples are drawn batch by batch in
            bounded memory. The samples do not depend on it beyond float32
            round-off (x_0 is drawn sequentially from ``random_state``).
        precision : {"float32", "bfloat16"}, default="float32"
            Precision of the velocity MLP's matrix products. ``"bfloat16"``
            (opt-in, CPUs with AVX512_BF16 or AMX, and CUDA GPUs with
            bfloat16) casts the hidden layers' weights once and runs their
            products on bfloat16 tiles with float32 accumulation; the ODE
            state, the first layer and the velocities are float32. 1.4-1.6x
            faster on an AVX512_BF16 CPU; elsewhere it raises ValueError.
            Package velocity MLPs only. bfloat16 keeps 8 significant bits:
            the samples differ from the float32 ones of the same seed by
            ~1e-3 rms (at most ~6e-2) of each coordinate's standard
            deviation, the distribution far less than the sampling noise
            (module docstring).
        x0 : array-like of shape (n_samples, n_free), optional
            The base points x_0 to integrate, in place of draws of N(0, I)
            from ``random_state``: e.g. randomised quasi-Monte Carlo points
            (Connector's regression rows). ``n_free = free_.sum()``, the
            coordinates that were not constant in the training data.

        Returns
        -------
        ndarray of shape (n_samples, dim), float64
        """
        self._check_fitted()
        solver = self.solver if solver is None else solver
        n_steps = check_solver(solver, self.n_steps if n_steps is None else n_steps)
        if self.condition_dim_ and n_samples is None and condition is not None:
            n_samples = len(np.asarray(condition))
        if n_samples is None:
            raise ValueError("Give n_samples, the number of samples to draw.")
        n_samples = check_int(n_samples, "n_samples", minimum=1, owner=f"{_OWNER}.sample")
        precision = self._check_precision(precision, f"{_OWNER}.sample")
        condition = self._check_condition(condition, n_samples)
        rng = check_random_state(random_state)
        if x0 is not None:
            x0 = check_array(np.asarray(x0), "x0", ndim=2, dtype=np.float64, shape=(n_samples, int(self.free_.sum())))
        from .._memory import check_allocation

        # The output and the ODE solver's float64 temporaries of one batch (at most 4 states alive).
        check_allocation(8 * self.dim_ * (n_samples + 4 * min(n_samples, self.sample_batch_size)),
                         f"Drawing {n_samples} samples of dimension {self.dim_}", "Draw fewer samples.")
        out = np.empty((n_samples, self.dim_))
        out[:] = self.mean_
        if self.model_ is None:
            return out
        with torch_threads(self.n_threads):
            self._sample_batches(out, condition, rng, n_steps, solver, batch_size, precision, x0)
        return out

    def _check_precision(self, precision, owner):
        """Validate ``precision``; "bfloat16" only for a VelocityMLP on hardware with bfloat16 products."""
        precision = check_precision(precision, owner)
        if precision != "float32" and self.model_ is not None:
            if not _fast_model(self.model_):
                raise ValueError(f"precision={precision!r} of {owner} needs the package's VelocityMLP (without "
                                 f"forward hooks); this flow's model is evaluated through its forward. Use "
                                 f"precision='float32'.")
            check_bfloat16_hardware(next(self.model_.parameters()).device, owner)
        return precision

    def _tile_rows(self, device, n_rows, tile=None):
        """Rows per evaluation tile: ``tile`` (default :data:`CPU_TILE`) on the CPU, the whole batch on a GPU."""
        return n_rows if device.type != "cpu" else min(n_rows, CPU_TILE if tile is None else tile)

    def _outer_batch(self, n_rows, batch_size, device, bytes_per_row):
        """The rows per outer batch: ``batch_size`` when given; on a GPU, every row at once when it fits.

        On a GPU (never run on one by the tests: the rule is checked with a
        stand-in for the free memory) all ``n_rows`` go in one pass when their
        buffers take at most half of the free memory; else ``sample_batch_size``.
        """
        if batch_size is None and device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if n_rows * bytes_per_row <= free // 2:
                return n_rows
        return batch_size

    def _gpu_bytes_per_row(self, divergence):
        """Bytes of the fast evaluator's and solver's buffers per row (float32)."""
        hidden, d = self.hidden, int(self.free_.sum())
        per_row = 2 * hidden + 10 * d + self.condition_dim_
        if divergence:
            per_row += (2 * d + 2) * hidden + d + 10
        return 4 * per_row + 16 * self.dim_

    def _sample_batches(self, out, condition, rng, n_steps, solver, batch_size, precision="float32", x0=None):
        free = self.free_
        n_free = int(free.sum())
        device = next(self.model_.parameters()).device
        h = 1.0 / n_steps
        fast = _fast_model(self.model_)
        batch_size = self._outer_batch(len(out), batch_size, device, self._gpu_bytes_per_row(False))
        for first, last in self._batches(len(out), batch_size):
            base = (rng.standard_normal((last - first, n_free)) if x0 is None else x0[first:last]).astype(np.float32)
            c = self._standard_condition(None if condition is None else condition[first:last], device)
            if fast:
                z = self._fast_sample(torch.as_tensor(base, device=device), c, n_steps, solver, device, precision)
            else:
                state = (torch.as_tensor(base, device=device),)

                def derivative(state_, t, c=c):
                    return (self.model_(state_[0], t, c),)

                with torch.no_grad():
                    for k in range(n_steps):
                        state = _ode_step(derivative, state, k * h, h, solver)
                z = state[0].double().cpu().numpy()
            out[first:last, free] = self.mean_[free] + self.scale_[free] * z

    def _fast_sample(self, x, c, n_steps, solver, device, precision="float32"):
        """The ODE solve of :meth:`sample` for a VelocityMLP, tile by tile (see :class:`_FastMLP`)."""
        tile = self._tile_rows(device, len(x), CPU_TILE_BFLOAT16 if precision == "bfloat16" else None)
        with torch.inference_mode():
            evaluator = _FastMLP(self.model_, tile, precision=precision)

            def derivative(state, t, out):
                evaluator.velocity(state[0], t, out[0])

            for first in range(0, len(x), tile):
                evaluator.set_condition(None if c is None else c[first:first + tile])
                _integrate(derivative, [x[first:first + tile]], 0.0, 1.0 / n_steps, n_steps, solver)
        return x.double().cpu().numpy()

    def log_prob(self, x, condition=None, *, n_steps=None, solver=None, batch_size=None, precision="float32"):
        """log p(x) (or log p(x | c)) by a reverse ODE solve with the exact divergence.

        ::

            log p(x) = log N(z_0; 0, I) - int_0^1 div v(z_t, t) dt - sum_j log scale_j

        with z_1 = (x - mean) / scale on the modelled coordinates, solved back
        to t = 0 with the fixed-step solver. Constant coordinates contribute
        nothing where x equals the constant and make log p = -inf elsewhere
        (the density is taken over the modelled coordinates).

        Parameters
        ----------
        x : array-like of shape (n_rows, dim)
        condition : array-like of shape (n_rows, condition_dim), optional
        n_steps, solver, batch_size
            As in :meth:`sample`. More steps than for sampling can make the
            divergence integral more accurate.
        precision : {"float32", "bfloat16"}, default="float32"
            As in :meth:`sample`: bfloat16 hidden-layer products (and
            Jacobian columns), float32 ODE state and divergence integral.

        Returns
        -------
        ndarray of shape (n_rows,)
        """
        self._check_fitted()
        solver = self.solver if solver is None else solver
        n_steps = check_solver(solver, self.n_steps if n_steps is None else n_steps)
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (n_rows, {self.dim_}). Got shape {x.shape}.")
        x = check_array(x, "x", ndim=2, dtype=np.float64, shape=(None, self.dim_))
        precision = self._check_precision(precision, f"{_OWNER}.log_prob")
        condition = self._check_condition(condition, len(x))
        free = self.free_
        off_support = np.any(x[:, ~free] != self.mean_[~free], axis=1)
        result = np.zeros(len(x))
        if self.model_ is not None:
            with torch_threads(self.n_threads):
                result += self._log_prob_batches(x, condition, n_steps, solver, batch_size, precision)
        result[off_support] = -np.inf
        return result

    def _log_prob_batches(self, x, condition, n_steps, solver, batch_size, precision="float32"):
        free = self.free_
        n_free = int(free.sum())
        device = next(self.model_.parameters()).device
        z = (x[:, free] - self.mean_[free]) / self.scale_[free]
        h = -1.0 / n_steps
        result = np.empty(len(x))
        fast = _fast_model(self.model_)
        batch_size = self._outer_batch(len(x), batch_size, device, self._gpu_bytes_per_row(True))
        for first, last in self._batches(len(x), batch_size):
            c = self._standard_condition(None if condition is None else condition[first:last], device)
            z1 = torch.as_tensor(z[first:last], dtype=torch.float32, device=device)
            if fast:
                z0, integral = self._fast_reverse(z1, c, n_steps, solver, device, precision)
            else:
                def derivative(state_, t, c=c):
                    return self._velocity_and_divergence(state_[0], t, c)

                state = (z1, torch.zeros(last - first, dtype=torch.float32, device=device))
                for k in range(n_steps):
                    state = _ode_step(derivative, state, 1.0 + k * h, h, solver)
                z0, integral = state[0].double().cpu().numpy(), state[1].double().cpu().numpy()
            # integral = int_1^0 div dt = -int_0^1 div dt.
            result[first:last] = -0.5 * (z0**2).sum(axis=1) - 0.5 * n_free * math.log(2 * math.pi) + integral
        return result - np.log(self.scale_[free]).sum()

    def _fast_reverse(self, z, c, n_steps, solver, device, precision="float32"):
        """The reverse solve of :meth:`log_prob` for a VelocityMLP: z_0 and int_1^0 div v dt, tile by tile."""
        onednn = (precision == "float32" and USE_ONEDNN and torch.backends.mkldnn.enabled
                  and _onednn_linear() is not None)
        tile = self._tile_rows(device, len(z), CPU_TILE_DENSITY if onednn else None)
        integral = torch.zeros(len(z), dtype=torch.float32, device=device)
        with torch.inference_mode():
            evaluator = _FastMLP(self.model_, tile, divergence=True, precision=precision)

            def derivative(state, t, out):
                evaluator.velocity_and_divergence(state[0], t, out[0], out[1])

            for first in range(0, len(z), tile):
                evaluator.set_condition(None if c is None else c[first:first + tile])
                state = [z[first:first + tile], integral[first:first + tile]]
                _integrate(derivative, state, 1.0, -1.0 / n_steps, n_steps, solver)
        return z.double().cpu().numpy(), integral.double().cpu().numpy()

    def _velocity_and_divergence(self, x, t, condition):
        """v(x, t) and its exact divergence sum_i dv_i/dx_i, by autograd (one pass per dimension)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            velocity = self.model_(x, t, condition)
            divergence = torch.zeros(len(x), dtype=x.dtype, device=x.device)
            for i in range(x.shape[1]):
                (gradient,) = torch.autograd.grad(velocity[:, i].sum(), x, retain_graph=i < x.shape[1] - 1)
                divergence = divergence + gradient[:, i]
        return velocity.detach(), divergence.detach()

    # ------------------------------------------------------------------ persistence

    _PARAMS = ("hidden", "n_layers", "n_epochs", "batch_size", "learning_rate", "weight_decay",
               "validation_fraction", "patience", "n_steps", "solver", "verbose", "sample_batch_size", "n_threads",
               "cosine", "ema_decay")

    def get_state(self):
        """The fitted flow as (JSON-able config, dict of tensors); see :meth:`from_state`."""
        self._check_fitted()
        config = {name: getattr(self, name) for name in self._PARAMS}
        config.update(dim=self.dim_, condition_dim=self.condition_dim_, has_model=self.model_ is not None,
                      history={k: v for k, v in self.history_.items()})
        tensors = {
            "mean": torch.as_tensor(self.mean_), "scale": torch.as_tensor(self.scale_),
            "free": torch.as_tensor(self.free_),
            "condition_mean": torch.as_tensor(self.condition_mean_),
            "condition_scale": torch.as_tensor(self.condition_scale_),
        }
        if self.model_ is not None:
            tensors.update({f"model.{k}": v.detach().cpu() for k, v in self.model_.state_dict().items()})
        return json_safe(config), tensors

    @classmethod
    def from_state(cls, config, tensors, device="auto"):
        """Rebuild a fitted flow from :meth:`get_state` output (no training data needed).

        Every value is checked before anything is allocated: the sizes in
        ``config`` must lie in sane ranges and agree with the shapes of the
        tensors (so a modified config cannot make the model allocate more
        than the weights file holds). Raises :class:`ModelFileError` otherwise.
        """
        device = resolve_device(device)
        if not isinstance(config, dict):
            raise ModelFileError(f"A flow's config must be a JSON object. Got {type(config).__name__}.")
        missing = [name for name in cls._PARAMS + ("dim", "condition_dim", "has_model") if name not in config]
        if missing:
            raise ModelFileError(f"The flow's config lacks {missing}.")
        dim = _config_int(config, "dim", 1, MAX_DIM)
        condition_dim = _config_int(config, "condition_dim", 0, MAX_DIM)
        hidden = _config_int(config, "hidden", 1, MAX_HIDDEN)
        n_layers = _config_int(config, "n_layers", 1, MAX_LAYERS)
        _config_int(config, "sample_batch_size", 1, MAX_SAMPLE_BATCH)
        _config_int(config, "n_steps", 1, MAX_STEPS)
        flow = cls(device=device, **{name: config[name] for name in cls._PARAMS})
        try:
            flow._check_params()
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"The flow's config holds an invalid parameter: {exc}") from None
        if not isinstance(config["has_model"], bool):
            raise ModelFileError(f"The flow's config: 'has_model' must be true or false. Got {config['has_model']!r}.")
        flow.dim_, flow.condition_dim_ = dim, condition_dim
        flow.mean_ = _state_array(tensors, "mean", (dim,))
        flow.scale_ = _state_array(tensors, "scale", (dim,))
        flow.free_ = _state_array(tensors, "free", (dim,), dtype=bool)
        flow.condition_mean_ = _state_array(tensors, "condition_mean", (condition_dim,))
        flow.condition_scale_ = _state_array(tensors, "condition_scale", (condition_dim,))
        if np.any(flow.scale_ <= 0) or np.any(flow.condition_scale_ <= 0):
            raise ModelFileError("The flow's standardisation scales must be > 0.")
        history = config.get("history", {})
        flow.history_ = dict(history) if isinstance(history, dict) else {}
        flow.device_ = device
        flow.model_ = None
        n_free = int(flow.free_.sum())
        if config["has_model"]:
            # The shapes VelocityMLP(n_free, condition_dim, hidden, n_layers) will have, checked before it exists.
            expected, width = {}, n_free + condition_dim + 1
            for layer in range(n_layers):
                expected[f"net.{2 * layer}.weight"], expected[f"net.{2 * layer}.bias"] = (hidden, width), (hidden,)
                width = hidden
            expected[f"net.{2 * n_layers}.weight"], expected[f"net.{2 * n_layers}.bias"] = (n_free, width), (n_free,)
            state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
            got = {k: tuple(v.shape) for k, v in state.items()}
            if got != expected:
                raise ModelFileError(f"The flow's weights do not match its config (hidden={hidden}, "
                                     f"n_layers={n_layers}, {n_free} modelled coordinate(s), condition_dim="
                                     f"{condition_dim}).")
            if not all(v.dtype.is_floating_point and bool(torch.isfinite(v).all()) for v in state.values()):
                raise ModelFileError("The flow's weights must be finite floating-point tensors.")
            model = VelocityMLP(n_free, condition_dim, hidden, n_layers)
            model.load_state_dict(state)
            flow.model_ = model.to(device).eval()
        return flow

    def save(self, path):
        """Write the fitted flow to the folder ``path`` (config.json + weights.pt), atomically."""
        config, tensors = self.get_state()
        save_bundle(path, {"kind": _OWNER, "flow": config}, tensors)

    @classmethod
    def load(cls, path, device="auto"):
        """Read a flow written by :meth:`save`; loads weights with ``torch.load(weights_only=True)``."""
        config, tensors = load_bundle(path, _OWNER)
        try:
            return cls.from_state(config.get("flow"), tensors, device=device)
        except ModelFileError as exc:
            raise ModelFileError(f"{os.fspath(path)!r} is not a valid {_OWNER} folder: {exc}") from None


# ---------------------------------------------------------------------- files

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
FORMAT_VERSION = 2

#: A config.json larger than this is not one written by save_bundle (a long training history is ~100 kB).
MAX_CONFIG_BYTES = 16 * 2**20


class ModelFileError(ValueError):
    """A model folder that is not a valid one (modified, truncated, or not written by ``save``).

    Examples
    --------
    >>> issubclass(ModelFileError, ValueError)  # caught by code that expects bad input as ValueError
    True
    """


#: Bounds on the sizes read from a model config (checked before anything is allocated).
MAX_DIM = 100_000
MAX_SAMPLE_BATCH = 2**24
MAX_STEPS = 1_000_000


def _config_int(config, name, minimum, maximum):
    value = config.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ModelFileError(f"The model config's {name!r} must be an int in [{minimum}, {maximum}]. Got {value!r}.")
    return value


def _state_array(tensors, name, shape, dtype=np.float64):
    """tensors[name] as a finite NumPy array of ``shape``, or a ModelFileError."""
    tensor = tensors.get(name)
    if tensor is None:
        raise ModelFileError(f"The model's weights lack the tensor {name!r}.")
    if tensor.ndim != len(shape) or any(want is not None and want != got for want, got in zip(shape, tensor.shape)):
        wanted = "(" + ", ".join("any" if want is None else str(want) for want in shape) + ")"
        raise ModelFileError(f"The model's tensor {name!r} must have shape {wanted}. Got {tuple(tensor.shape)}.")
    if tensor.is_complex() or not (tensor.dtype.is_floating_point or tensor.dtype == torch.bool):
        raise ModelFileError(f"The model's tensor {name!r} must be real floating point (or bool). Got {tensor.dtype}.")
    array = tensor.numpy().astype(dtype)
    if dtype is not bool and not np.all(np.isfinite(array)):
        raise ModelFileError(f"The model's tensor {name!r} holds non-finite values.")
    return array


def _canonical(config):
    """The bytes the config checksum covers: the config without its checksum, as canonical JSON."""
    body = {k: v for k, v in config.items() if k != "config_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def save_bundle(path, config, tensors):
    """Write ``tensors`` (torch.save of a dict of tensors) and ``config`` (JSON) as the folder ``path``.

    The folder is written as one unit (:func:`connector_sim._files.write_folder_atomic`:
    a hidden folder beside ``path``, then a swap), so an interrupted save
    leaves the previous model, or the new one, never a mixture. The config
    records the SHA-256 of the weights and of itself: :func:`load_bundle`
    rejects a folder whose config or weights were modified. An existing
    ``path`` may only hold an earlier save's files.
    """
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, buffer)
    weights = buffer.getvalue()
    config = json_safe(dict(config, format_version=FORMAT_VERSION,
                            weights_sha256=hashlib.sha256(weights).hexdigest(), torch_version=torch.__version__))
    config["config_sha256"] = hashlib.sha256(_canonical(config)).hexdigest()
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)  # as before: parents made
    write_folder_atomic(path, {WEIGHTS_FILE: weights, CONFIG_FILE: json.dumps(config, indent=1).encode()},
                        replaceable=(CONFIG_FILE, WEIGHTS_FILE))


def load_bundle(path, kind):
    """Read a folder written by :func:`save_bundle`: its kind, version and both checksums are checked.

    The weights are read with ``torch.load(weights_only=True)`` (no pickled
    code runs) after the checksums match.

    Raises
    ------
    FileNotFoundError
        When a file of the folder is missing.
    ModelFileError (a ValueError)
        When the folder was modified, truncated, or is not of ``kind``.
    """
    path = os.fspath(path)
    config_path, weights_path = os.path.join(path, CONFIG_FILE), os.path.join(path, WEIGHTS_FILE)
    for required in (config_path, weights_path):
        if not os.path.isfile(required):
            raise FileNotFoundError(f"{required} does not exist: {path!r} is not a folder written by save().")
    again = "Save the model again, or load a folder written by save()."
    if os.path.getsize(config_path) > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{config_path} is not a valid model config: it is larger than "
                             f"{MAX_CONFIG_BYTES // 2**20} MiB. {again}")
    with open(config_path, "rb") as stream:
        text = stream.read()
    try:
        config = json.loads(text.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelFileError(f"{config_path} is not a valid model config (not JSON). {again}") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{config_path} is not a valid model config (not a JSON object). {again}")
    if config.get("kind") != kind:
        raise ModelFileError(f"{path!r} holds a {config.get('kind')!r}, not a {kind}.")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path!r} has format version {config.get('format_version')!r}; this version of "
                             f"connector_sim reads version {FORMAT_VERSION}. Fit and save the model again.")
    try:
        canonical = _canonical(config)
    except ValueError:  # NaN or infinity: never written by save_bundle
        canonical = b""
    if hashlib.sha256(canonical).hexdigest() != config.get("config_sha256"):
        raise ModelFileError(f"{config_path} does not match its checksum: the config was modified after it was "
                             f"saved. Its values are not trusted. {again}")
    with open(weights_path, "rb") as stream:
        weights = stream.read()
    if hashlib.sha256(weights).hexdigest() != config.get("weights_sha256"):
        raise ModelFileError(f"{weights_path} does not match its config (SHA-256 differs): the folder was "
                             f"modified or a save was interrupted. {again}")
    try:
        tensors = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own message suggests weights_only=False, which would run the file's pickled code: never do that.
        raise ModelFileError(f"{weights_path} is not a valid model file: it does not hold plain tensors that load "
                             f"safely ({type(exc).__name__}). Do not load it with pickle. {again}") from None
    if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in tensors.items()):
        raise ModelFileError(f"{weights_path} is not a valid model file: it must hold a dict of named tensors. "
                             f"{again}")
    return config, tensors


__all__ = ["PRECISIONS", "SOLVERS", "FlowMatchingCNF", "ModelFileError", "VelocityMLP", "bfloat16_supported",
           "resolve_device"]
