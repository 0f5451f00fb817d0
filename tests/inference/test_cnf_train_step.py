"""The fused CNF training step (connector_sim._ext._cnf_train_cpp) against its NumPy reference and torch.

``CnfTrainStep.step`` runs forward, backward, AdamW and the weight average of
a VelocityMLP in float32; ``cnf_train_step_reference`` does the same in
float64. Every instruction-set clone the CPU supports is compared with it.

Tolerances. The kernel's products are float32 sums of at most 128 terms
(hidden, or the batch for the weight gradient): each errs by ~1e-6 of the
sum of the terms' magnitudes (unit round-off 6e-8 times a length-dependent
growth), and the errors of one layer pass through the next. The gradient is
compared with ``GRADIENT_RTOL`` times the largest |gradient| (measured <= 5e-7
on these shapes: x 20). AdamW normalises the gradient, so a relative error e
of a gradient entry moves its weight by ~lr e, and where the gradient is tiny
(|g| ~ eps) by up to ~lr: the updated weights are compared with an absolute
``lr * 1e-2`` plus float32 round-off of the weight (measured <= 1e-7 with
lr = 1e-3).
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backend_support import require_backend  # noqa: E402
from connector_sim._backends import KERNEL_ISAS, extension_built  # noqa: E402
from connector_sim._kernels.cnf_train_step import (  # noqa: E402
    cnf_train_step_reference,
    mlp_squared_error_reference,
    n_parameters,
    squared_error_and_gradient_reference,
)
from connector_sim.inference import flows  # noqa: E402
from connector_sim.inference.flows import FlowMatchingCNF, VelocityMLP, _flatten_parameters  # noqa: E402

#: Relative to the largest |gradient| entry (see the module docstring).
GRADIENT_RTOL = 1e-5
#: The squared error: a float64 sum of float32 squares of residuals with ~1e-6 relative error.
LOSS_RTOL = 1e-5
LR = 1e-3

SHAPES = [  # (dim, condition_dim, hidden, n_layers, rows)
    (4, 0, 128, 4, 64),  # the Connector's defaults
    (3, 2, 37, 1, 37),  # one hidden layer, widths not multiples of 16
    (2, 0, 20, 3, 1),  # one row
    (5, 2, 129, 2, 64),  # a width one past two tiles of 64
    (1, 0, 7, 2, 37),
]


@pytest.fixture
def ext():
    require_backend("cpp")
    if not extension_built("_cnf_train_cpp"):
        pytest.skip("connector_sim._ext._cnf_train_cpp is not built")
    from connector_sim._ext import _cnf_train_cpp

    return _cnf_train_cpp


@pytest.fixture
def widest(ext):
    """The kernel's widest clone, so that fits take the fused step (it is not used on the default clone)."""
    if ext.cpu_isa() == "default":
        pytest.skip("fits use the fused step only with AVX2 or AVX-512")
    previous = ext.kernel_isa()
    ext.set_kernel_isa(ext.cpu_isa())
    yield ext.cpu_isa()
    ext.set_kernel_isa(previous)


@pytest.fixture(params=KERNEL_ISAS)
def isa(request, ext, record_property):
    """Run the kernel's ``request.param`` clone (skipped where the CPU lacks it), then restore the previous one."""
    widest = ext.cpu_isa()
    if KERNEL_ISAS.index(request.param) < KERNEL_ISAS.index(widest):
        pytest.skip(f"this CPU lacks the {request.param} clone (widest: {widest})")
    previous = ext.kernel_isa()
    ext.set_kernel_isa(request.param)
    record_property("kernel_isa", request.param)
    try:
        yield request.param
    finally:
        ext.set_kernel_isa(previous)


def problem(dim, condition_dim, hidden, n_layers, rows, seed=0, averaged=True):
    """Random float32 weights, moments, average and batch of one step."""
    rng = np.random.default_rng(seed)
    size = n_parameters(dim, condition_dim, hidden, n_layers)
    weights = (rng.standard_normal(size) * 0.3).astype(np.float32)
    state = dict(weights=weights, gradient=np.zeros(size, np.float32),
                 exp_avg=(rng.standard_normal(size) * 1e-2).astype(np.float32),
                 exp_avg_sq=(rng.random(size) * 1e-3).astype(np.float32),
                 averaged=(weights + rng.standard_normal(size).astype(np.float32) * 0.01) if averaged else None)
    batch = dict(x0=rng.standard_normal((rows, dim)).astype(np.float32),
                 x1=(rng.standard_normal((rows, dim)) * 2 + 1).astype(np.float32),
                 t=rng.random(rows).astype(np.float32),
                 condition=rng.standard_normal((rows, condition_dim)).astype(np.float32) if condition_dim else None)
    return state, batch


def kernel(ext, state, dim, condition_dim, hidden, n_layers, max_rows=64, weight_decay=0.01):
    return ext.CnfTrainStep(state["weights"], state["gradient"], state["exp_avg"], state["exp_avg_sq"],
                            state["averaged"], dim=dim, condition_dim=condition_dim, hidden=hidden,
                            n_layers=n_layers, max_rows=max_rows, beta1=0.9, beta2=0.999, eps=1e-8,
                            weight_decay=weight_decay)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_average", [True, False])
def test_each_clone_matches_the_reference(ext, isa, shape, with_average):
    dim, condition_dim, hidden, n_layers, rows = shape
    state, batch = problem(*shape, averaged=with_average)
    before = {name: None if a is None else a.copy() for name, a in state.items()}
    step = kernel(ext, state, dim, condition_dim, hidden, n_layers)
    assert step.n_parameters == state["weights"].size and step.max_rows == 64
    squared_error = step.step(batch["x0"], batch["x1"], batch["t"], batch["condition"], LR, 3, 0.95)
    expected = cnf_train_step_reference(before["weights"], before["exp_avg"], before["exp_avg_sq"],
                                        before["averaged"], **batch, dim=dim, condition_dim=condition_dim,
                                        hidden=hidden, n_layers=n_layers, lr=LR, step=3, ema_decay=0.95)
    loss, gradient, weights, exp_avg, exp_avg_sq, averaged = expected
    assert squared_error == pytest.approx(loss, rel=LOSS_RTOL)
    scale = np.abs(gradient).max()
    np.testing.assert_allclose(state["gradient"], gradient, rtol=0, atol=GRADIENT_RTOL * scale)
    # Moments: linear in the gradient (exp_avg_sq quadratic), so the gradient's tolerance carries over.
    np.testing.assert_allclose(state["exp_avg"], exp_avg, rtol=0, atol=GRADIENT_RTOL * scale)
    np.testing.assert_allclose(state["exp_avg_sq"], exp_avg_sq, rtol=1e-4, atol=2 * GRADIENT_RTOL * scale**2 * 1e-3)
    weight_atol = LR * 1e-2 + 1e-6 * np.abs(weights).max()
    np.testing.assert_allclose(state["weights"], weights, rtol=0, atol=weight_atol)
    if with_average:
        np.testing.assert_allclose(state["averaged"], averaged, rtol=0, atol=weight_atol)
    else:
        assert averaged is None


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_each_clone_squared_error_matches_the_reference(ext, isa, shape):
    # The validation loss: the forward pass alone, by tiles of max_rows (64) rows: 150 rows = 2 full tiles + 22.
    dim, condition_dim, hidden, n_layers, _ = shape
    state, _ = problem(*shape)
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((150, dim + condition_dim + 1)).astype(np.float32)
    target = rng.standard_normal((150, dim)).astype(np.float32)
    step = kernel(ext, state, dim, condition_dim, hidden, n_layers)
    expected = mlp_squared_error_reference(state["weights"], inputs, target, dim=dim, condition_dim=condition_dim,
                                           hidden=hidden, n_layers=n_layers)
    assert step.squared_error(state["averaged"], inputs, target) != pytest.approx(expected, rel=LOSS_RTOL)
    assert step.squared_error(state["weights"], inputs, target) == pytest.approx(expected, rel=LOSS_RTOL)
    with pytest.raises(ValueError, match="target must have shape"):
        step.squared_error(state["weights"], inputs, target[:, :0])


@pytest.mark.parametrize("n", [1, 17, 64])
def test_kernel_product_matches_numpy(ext, isa, n):
    rng = np.random.default_rng(n)
    for m, k in [(128, 128), (6, 5), (7, 130), (1, 1)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        out = np.full((m, n), np.nan, np.float32)
        ext.matmul(a, b, out)
        # float32 sums of k products: ~k 6e-8 of the sum of |terms| at worst; 1e-6 of it covers k <= 130.
        bound = 1e-6 * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))
        assert np.all(np.abs(out - a.astype(np.float64) @ b) <= bound + 1e-30)


def test_shorter_batches_and_repeated_steps(ext):
    # A kernel bound for 64 rows takes a shorter batch; steps carry the moments and the average along.
    shape = (3, 2, 24, 2)
    state, _ = problem(*shape, rows=64)
    reference = {name: a.astype(np.float64) for name, a in state.items()}
    step = kernel(ext, state, *shape)
    for count, rows in enumerate([64, 37, 1, 64], start=1):
        _, batch = problem(*shape, rows=rows, seed=count)
        step.step(batch["x0"], batch["x1"], batch["t"], batch["condition"], LR, count, 0.9)
        _, _, *updated = cnf_train_step_reference(reference["weights"], reference["exp_avg"],
                                                  reference["exp_avg_sq"], reference["averaged"], **batch,
                                                  dim=3, condition_dim=2, hidden=24, n_layers=2, lr=LR, step=count,
                                                  ema_decay=0.9)
        reference.update(zip(["weights", "exp_avg", "exp_avg_sq", "averaged"], updated))
    # Four steps of at most ~lr 1e-2 each (module docstring).
    for name in ["weights", "averaged"]:
        np.testing.assert_allclose(state[name], reference[name], rtol=0, atol=4 * LR * 1e-2 + 1e-6)


@pytest.mark.parametrize("condition_dim", [0, 2])
def test_gradient_is_autograds(ext, condition_dim):
    torch.manual_seed(0)
    model = VelocityMLP(3, condition_dim, hidden=16, n_layers=3)
    twin = copy.deepcopy(model)
    flat = _flatten_parameters(model)
    x0, x1, t = torch.randn(37, 3), torch.randn(37, 3), torch.rand(37)
    c = torch.randn(37, condition_dim) if condition_dim else None
    state = dict(weights=flat.detach().numpy(), gradient=flat.grad.numpy(), exp_avg=np.zeros(flat.numel(), np.float32),
                 exp_avg_sq=np.zeros(flat.numel(), np.float32), averaged=None)
    # lr = 0: the step leaves the weights as they are (weight decay lr wd = 0 too), so the gradient is theirs.
    squared_error = kernel(ext, state, 3, condition_dim, 16, 3).step(
        x0.numpy(), x1.numpy(), t.numpy(), None if c is None else c.numpy(), 0.0, 1, 0.0)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    twin_loss = ((twin(xt, t, c) - (x1 - x0)) ** 2).sum(dim=1).mean()
    twin_loss.backward()
    gradient = torch.cat([p.grad.reshape(-1) for p in twin.parameters()]).numpy()
    assert squared_error / 37 == pytest.approx(float(twin_loss.detach()), rel=1e-6)
    # float32 against float32 (torch): both within ~1e-6 of the largest gradient.
    np.testing.assert_allclose(flat.grad.numpy(), gradient, rtol=0, atol=GRADIENT_RTOL * np.abs(gradient).max())
    # And the float64 reference agrees with autograd (it is the specification of both).
    _, reference = squared_error_and_gradient_reference(flat.detach().numpy(), x0.numpy(), x1.numpy(), t.numpy(),
                                                        None if c is None else c.numpy(), dim=3,
                                                        condition_dim=condition_dim, hidden=16, n_layers=3)
    np.testing.assert_allclose(reference, gradient, rtol=0, atol=GRADIENT_RTOL * np.abs(gradient).max())


@pytest.mark.parametrize("conditional", [False, True])
def test_fit_with_the_fused_step_follows_the_torch_path(widest, monkeypatch, conditional):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((700, 3)) @ rng.standard_normal((3, 3)) + [1.0, -2.0, 0.5]
    c = rng.standard_normal((700, 2)) if conditional else None
    histories, models = {}, {}
    for fused in [True, False]:
        monkeypatch.setattr(flows, "USE_FUSED_TRAINING", fused)
        flow = FlowMatchingCNF(hidden=32, n_layers=3, n_epochs=6, batch_size=64, learning_rate=1e-2, random_state=0,
                               device="cpu")
        flow.fit(x, c)
        histories[fused], models[fused] = flow.history_, flow.model_
    # Same start, same draws (the random stream is unchanged); the steps differ by float32 round-off only,
    # which grows over 54 steps to measured ~1e-6 relative in the losses: x 100.
    for key in ["train_loss", "val_loss"]:
        np.testing.assert_allclose(histories[True][key], histories[False][key], rtol=1e-4)
    assert histories[True]["best_epoch"] == histories[False]["best_epoch"]
    for (name, mine), theirs in zip(models[True].state_dict().items(), models[False].state_dict().values()):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=0, atol=1e-4, err_msg=name)
    # Both learn (measured: the validation loss falls by 9-12% in 6 epochs).
    for history in histories.values():
        assert history["val_loss"][-1] < 0.95 * history["val_loss"][0]


def test_fit_uses_the_fused_step_once_per_batch(widest, monkeypatch):
    calls = []
    original = flows._FusedTrainer.step
    monkeypatch.setattr(flows._FusedTrainer, "step", lambda self, *args: calls.append(args[3]) or original(self, *args))
    x = np.random.default_rng(0).standard_normal((300, 2))
    FlowMatchingCNF(hidden=8, n_layers=1, n_epochs=2, batch_size=64, random_state=0, device="cpu").fit(x)
    # 240 training rows: 3 batches of 64 and one of 48, per epoch.
    assert calls == [64, 64, 64, 48] * 2


def test_optimizer_state_is_torchs_after_fused_epochs(widest, monkeypatch):
    # The moments and step count the kernel kept are where torch's AdamW looks for them.
    seen = {}
    original = flows._FusedTrainer.sync

    def sync(self):
        original(self)
        seen["state"], seen["optimizer"] = self.state, self.optimizer

    monkeypatch.setattr(flows._FusedTrainer, "sync", sync)
    x = np.random.default_rng(0).standard_normal((300, 2))
    FlowMatchingCNF(hidden=8, n_layers=1, n_epochs=2, batch_size=64, random_state=0, device="cpu").fit(x)
    assert float(seen["state"]["step"]) == 8
    assert float(seen["state"]["exp_avg_sq"].abs().sum()) > 0
    # torch's own AdamW step carries on from that state (as the torch path would, were it needed).
    optimizer = seen["optimizer"]
    (parameter,) = optimizer.param_groups[0]["params"]
    parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    assert float(seen["state"]["step"]) == 9


def test_fits_take_the_torch_step_on_the_default_clone(ext, monkeypatch):
    # The default clone's products are slower than torch's (flows._fused_training_module).
    previous = ext.kernel_isa()
    ext.set_kernel_isa("default")
    try:
        flat = torch.zeros(3, requires_grad=True)
        assert flows._fused_training_module(flat, torch.device("cpu")) is None
        x = np.random.default_rng(0).standard_normal((100, 2))
        monkeypatch.setattr(flows, "_FusedTrainer", None)  # would raise if used
        FlowMatchingCNF(hidden=8, n_layers=1, n_epochs=1, random_state=0, device="cpu").fit(x)
    finally:
        ext.set_kernel_isa(previous)
    if previous != "default":
        assert flows._fused_training_module(flat, torch.device("cpu")) is ext
    monkeypatch.setattr(flows, "USE_FUSED_TRAINING", False)
    assert flows._fused_training_module(flat, torch.device("cpu")) is None


def test_bad_input_raises_value_error(ext):
    state, batch = problem(2, 1, 8, 2, rows=5)
    step = kernel(ext, state, 2, 1, 8, 2, max_rows=8)
    args = [batch["x0"], batch["x1"], batch["t"], batch["condition"]]

    def call(*changed, lr=LR, count=1, decay=0.9):
        return step.step(*changed, lr, count, decay)

    bad = [
        ([batch["x0"].astype(np.float64)] + args[1:], "x0 must have dtype float32"),
        ([np.ones((5, 1), np.float32)] + args[1:], "x0 must have shape"),
        ([args[0], np.asfortranarray(np.ones((5, 2), np.float32))[:, ::-1]] + args[2:], "x1 must be C-contiguous"),
        (args[:2] + [batch["t"][:4]] + args[3:], "t must have shape"),
        (args[:3] + [None], "condition must be an array"),
        ([np.ones((9, 2), np.float32)] + args[1:], "x0 must have 1 to max_rows"),
        ([np.ones((0, 2), np.float32)] + args[1:], "x0 must have 1 to max_rows"),
        ([np.ones(5, np.float32)] + args[1:], "x0 must have 2 dimensions"),
    ]
    for arguments, message in bad:
        with pytest.raises(ValueError, match=message):
            call(*arguments)
    with pytest.raises(ValueError, match="step must be >= 1"):
        call(*args, count=0)
    with pytest.raises(ValueError, match="lr must be finite"):
        call(*args, lr=float("nan"))
    with pytest.raises(ValueError, match="ema_decay must be in"):
        call(*args, decay=1.5)
    size = state["weights"].size
    options = dict(dim=2, condition_dim=1, hidden=8, n_layers=2, max_rows=8, beta1=0.9, beta2=0.999, eps=1e-8,
                   weight_decay=0.0)
    good = [state["weights"], state["gradient"], state["exp_avg"], state["exp_avg_sq"], state["averaged"]]
    with pytest.raises(ValueError, match="weights must have shape"):
        ext.CnfTrainStep(np.zeros(size + 1, np.float32), *good[1:], **options)
    with pytest.raises(ValueError, match="gradient must have dtype float32"):
        ext.CnfTrainStep(good[0], np.zeros(size), *good[2:], **options)
    read_only = state["exp_avg"].copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="exp_avg must be writeable"):
        ext.CnfTrainStep(*good[:2], read_only, *good[3:], **options)
    with pytest.raises(ValueError, match="averaged must be a NumPy array or None"):
        ext.CnfTrainStep(*good[:4], [1.0], **options)
    for name, value, message in [("n_layers", 0, "n_layers must be >= 1"), ("hidden", 0, "hidden must be >= 1"),
                                 ("max_rows", 0, "max_rows must be in"), ("beta2", 1.0, "beta2 must be in")]:
        with pytest.raises(ValueError, match=message):
            ext.CnfTrainStep(*good, **{**options, name: value})
    with pytest.raises(ValueError, match="b must have"):
        ext.matmul(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32), np.ones((2, 2), np.float32))
