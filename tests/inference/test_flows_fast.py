"""The fast CNF paths (tiled evaluator, forward-mode divergence, hand-written training step) against torch's own.

The references are the plain module calls the fast paths replace:
``VelocityMLP.forward`` integrated by ``_ode_step`` for sampling, the
autograd divergence for densities, and autograd + per-layer AdamW for
training. The fast paths rearrange float32 sums (the first layer split as
x W_x^T + (t w_t + b), forward-mode instead of reverse-mode Jacobians,
GEMM blocks of other sizes), so they agree to float32 round-off, not bit
for bit: each tolerance below is ~10x the largest difference measured.
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from connector_sim.inference import flows  # noqa: E402
from connector_sim.inference.flows import (  # noqa: E402
    FlowMatchingCNF,
    VelocityMLP,
    _FastTrainer,
    _flatten_parameters,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 3)) @ rng.standard_normal((3, 3)) + [1.0, -2.0, 0.5]
    x[:, 1] = np.tanh(x[:, 1])
    return x, rng.standard_normal((600, 2))


@pytest.fixture(scope="module")
def fitted(data):
    x, c = data
    options = dict(hidden=32, n_layers=3, n_epochs=2, random_state=0, device="cpu")
    return {False: FlowMatchingCNF(**options).fit(x), True: FlowMatchingCNF(**options).fit(x, c)}


def reference(monkeypatch):
    """Turn the fast paths off: every call goes through VelocityMLP.forward and autograd."""
    monkeypatch.setattr(flows, "_fast_model", lambda model: False)


#: The products of the fast paths: oneDNN's fused linear where torch has it (and it checks out), else addmm.
ONEDNN = [True, False] if flows._onednn_linear() is not None else [False]


@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("onednn", ONEDNN)
def test_fast_sampling_and_densities_match_the_module_path(fitted, data, monkeypatch, solver, conditional, onednn):
    x, c = data
    flow = fitted[conditional]
    condition = c[:450] if conditional else None
    monkeypatch.setattr(flows, "USE_ONEDNN", onednn)
    # Tiles of 100 rows: several full ones and a partial last one in each batch of 250.
    monkeypatch.setattr(flows, "CPU_TILE", 100)
    monkeypatch.setattr(flows, "CPU_TILE_DENSITY", 100)
    options = dict(condition=condition, solver=solver, n_steps=6)
    fast_samples = flow.sample(450, random_state=1, batch_size=250, **options)
    fast_log_p = flow.log_prob(x[:450], batch_size=250, **options)
    assert flow.model_ is not None and flows._fast_model(flow.model_)
    reference(monkeypatch)
    samples = flow.sample(450, random_state=1, batch_size=250, **options)
    log_p = flow.log_prob(x[:450], batch_size=250, **options)
    # Measured: at most 1.5e-6 (samples of size ~5) and 2e-6 (log densities ~10), i.e. float32 round-off
    # of 12-24 MLP evaluations: x 10.
    np.testing.assert_allclose(fast_samples, samples, rtol=0, atol=2e-5 * np.abs(samples).max())
    np.testing.assert_allclose(fast_log_p, log_p, rtol=0, atol=2e-5 * np.abs(log_p).max())


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("onednn", ONEDNN)
def test_fast_divergence_is_the_trace_of_the_autograd_jacobian(n_layers, onednn, monkeypatch):
    monkeypatch.setattr(flows, "USE_ONEDNN", onednn)
    # n_layers=1: the trace folded into one vector; 2: the first layer's columns folded into the output's
    # neighbour; 3: and one forward-mode product of the columns.
    torch.manual_seed(1)
    model = VelocityMLP(4, 1, hidden=24, n_layers=n_layers)
    x, c = torch.randn(37, 4), torch.randn(37, 1)
    jacobian = torch.func.vmap(torch.func.jacrev(lambda row, c_row: model(row[None], 0.3, c_row[None])[0]))(x, c)
    trace = jacobian.diagonal(dim1=1, dim2=2).sum(1).detach().numpy()
    precisions = ["float32"] + (["bfloat16"] if flows.bfloat16_supported("cpu") else [])
    for precision in precisions:
        with torch.inference_mode():
            evaluator = flows._FastMLP(model, 64, divergence=True, precision=precision)
            assert (evaluator.onednn is not None) == onednn
            evaluator.set_condition(c)
            velocity, divergence = torch.empty(37, 4), torch.empty(37)
            evaluator.velocity_and_divergence(x, 0.3, velocity, divergence)
        if precision == "float32":
            np.testing.assert_allclose(velocity.numpy(), model(x, 0.3, c).detach().numpy(), rtol=0, atol=1e-6)
            # Float32 round-off of sums over 24 hidden units (values ~0.1-1): measured 2e-8.
            np.testing.assert_allclose(divergence.numpy(), trace, rtol=0, atol=1e-6)
        else:
            # bfloat16 (unit round-off 2^-9) weights, activations and columns: measured at most 1e-2 of the
            # largest |trace| (6e-3 and 1e-2 for 2 and 3 layers; 1 layer keeps the trace float32): x 5.
            np.testing.assert_allclose(divergence.numpy(), trace, rtol=0, atol=5e-2 * np.abs(trace).max())


@pytest.mark.parametrize("condition_dim", [0, 2])
def test_hand_written_gradient_is_autograds(condition_dim):
    torch.manual_seed(0)
    model = VelocityMLP(3, condition_dim, hidden=16, n_layers=3)
    twin = copy.deepcopy(model)
    flat = _flatten_parameters(model)
    x0, x1, t = torch.randn(37, 3), torch.randn(37, 3), torch.rand(37)
    c = torch.randn(37, condition_dim) if condition_dim else None
    loss = _FastTrainer(model, 64).loss_and_gradient(x0, x1, t, c)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    twin_loss = ((twin(xt, t, c) - (x1 - x0)) ** 2).sum(dim=1).mean()
    twin_loss.backward()
    gradient = torch.cat([p.grad.reshape(-1) for p in twin.parameters()])
    assert float(loss) == pytest.approx(float(twin_loss.detach()), rel=1e-6)
    # Measured 1.5e-8 against gradients up to ~1.
    np.testing.assert_allclose(flat.grad.numpy(), gradient.numpy(), rtol=0, atol=1e-6)
    # The weights are views of the flat tensor, so an optimizer step on it moves the model.
    before = model.net[0].weight.detach().clone()
    torch.optim.AdamW([flat], lr=0.1).step()
    assert not torch.equal(model.net[0].weight.detach(), before)


def reference_training(flow, z, rng):
    """The training loop as the earlier, autograd-based version ran it (no validation, EMA on)."""
    model = flow.model_
    generator = torch.Generator()
    generator.manual_seed(flows._torch_seed(rng))
    z_train = torch.as_tensor(z, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=flow.learning_rate, weight_decay=flow.weight_decay)
    averaged = copy.deepcopy(model).requires_grad_(False)
    steps = 0
    for _ in range(flow.n_epochs):
        order = torch.randperm(len(z), generator=generator)
        for first in range(0, len(z), flow.batch_size):
            x1 = z_train[order[first:first + flow.batch_size]]
            x0 = torch.randn(x1.shape, generator=generator)
            t = torch.rand(len(x1), generator=generator)
            xt = (1 - t[:, None]) * x0 + t[:, None] * x1
            loss = ((model(xt, t) - (x1 - x0)) ** 2).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            decay = min(flow.ema_decay, (1 + steps) / (10 + steps))
            with torch.no_grad():
                for average, weight in zip(averaged.parameters(), model.parameters()):
                    average.lerp_(weight, 1.0 - decay)
    return averaged


@pytest.mark.parametrize("fused", [True, False])
def test_training_matches_the_autograd_loop(data, monkeypatch, fused):
    # fused: the compiled step where it is built (test_cnf_train_step.py), else the torch one either way.
    monkeypatch.setattr(flows, "USE_FUSED_TRAINING", fused)
    x, _ = data
    options = dict(hidden=16, n_layers=2, n_epochs=2, batch_size=64, validation_fraction=0.0, cosine=False,
                   random_state=3, device="cpu")
    flow = FlowMatchingCNF(**options).fit(x)
    twin = FlowMatchingCNF(**options)
    rng = np.random.default_rng(3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(flows._torch_seed(rng))
        twin.model_ = VelocityMLP(3, 0, 16, 2)
    z = (x - flow.mean_) / flow.scale_
    averaged = reference_training(twin, z, rng)
    # 20 AdamW steps of lr 1e-3 from the same start and draws; the gradients differ by float32 round-off
    # (~1e-8), which Adam's normalisation passes on at most ~lr per step: measured 3e-8.
    for (name, mine), theirs in zip(flow.model_.state_dict().items(), averaged.state_dict().values()):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=0, atol=1e-5, err_msg=name)
    # The trained weights own their storage again (a saved file holds each tensor alone).
    storages = {p.untyped_storage().data_ptr() for p in flow.model_.parameters()}
    assert len(storages) == len(list(flow.model_.parameters()))


def test_sampling_runs_with_the_flows_thread_count(fitted, monkeypatch):
    seen = []
    original = flows._integrate

    def spy(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    monkeypatch.setattr(flows, "_integrate", spy)
    flow = copy.deepcopy(fitted[False])
    flow.n_threads = 1
    flow.sample(10, random_state=0)
    flow.log_prob(flow.sample(5, random_state=0))
    assert seen and set(seen) == {1}


def test_gpu_batches_every_row_at_once_when_half_the_free_memory_holds_them(fitted, monkeypatch):
    # The CUDA rule, checked without a GPU: mem_get_info is a stand-in.
    flow = fitted[False]
    cuda = torch.device("cuda")
    per_row = flow._gpu_bytes_per_row(divergence=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * per_row * 10**6, 10**12))
    assert flow._outer_batch(10**6, None, cuda, per_row) == 10**6
    assert flow._outer_batch(10**6 + 1, None, cuda, per_row) is None  # then sample_batch_size
    assert flow._outer_batch(10**6, 500, cuda, per_row) == 500  # a batch_size given wins
    assert flow._outer_batch(10**6, None, torch.device("cpu"), per_row) is None
    assert flow._tile_rows(cuda, 10**6) == 10**6 and flow._tile_rows(torch.device("cpu"), 10**6) == flows.CPU_TILE


def test_fast_sampler_evaluates_the_mlp_twice_per_midpoint_step(fitted, monkeypatch):
    calls = []
    original = flows._FastMLP.velocity
    monkeypatch.setattr(flows._FastMLP, "velocity", lambda self, *args: calls.append(1) or original(self, *args))
    fitted[False].sample(50, random_state=0, n_steps=20, solver="midpoint")
    assert len(calls) == 40  # one tile


def test_a_model_with_forward_hooks_is_called_through_forward(fitted):
    flow = copy.deepcopy(fitted[False])
    calls = []
    hook = flow.model_.register_forward_hook(lambda *args: calls.append(1))
    assert not flows._fast_model(flow.model_)
    flow.sample(10, random_state=0, n_steps=3, solver="rk4")
    hook.remove()
    assert len(calls) == 12 and flows._fast_model(flow.model_)


def test_interrupted_training_leaves_weights_with_their_own_storage(data):
    def interrupt(flow, epoch, losses):
        raise KeyboardInterrupt

    flow = FlowMatchingCNF(hidden=8, n_layers=2, n_epochs=3, random_state=0, device="cpu", callback=interrupt)
    with pytest.raises(KeyboardInterrupt):
        flow.fit(data[0])
    parameters = list(flow.model_.parameters())
    assert len({p.untyped_storage().data_ptr() for p in parameters}) == len(parameters)
    assert all(p.grad is None for p in parameters)


def test_direct_adamw_step_is_the_optimizers_step():
    # _AdamW calls torch's fused AdamW kernel itself: the same bits as optimizer.step(), lr from the scheduler.
    torch.manual_seed(2)
    start = torch.randn(300)
    weights = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    optimizers = [torch.optim.AdamW([w], lr=1e-2, weight_decay=1e-4, fused=True) for w in weights]
    schedules = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5) for o in optimizers]
    direct = flows._AdamW(optimizers[1], weights[1])
    for step in range(12):
        gradient = torch.randn(300)
        for w in weights:
            w.grad = gradient.clone()
        with torch.no_grad():
            optimizers[0].step()
            direct.step()
        if step % 3 == 2:
            for schedule in schedules:
                schedule.step()
        assert torch.equal(weights[0], weights[1])
    assert direct.state  # the kernel was called directly, not through optimizer.step()


def test_direct_adamw_falls_back_to_the_optimizer_when_the_kernel_refuses():
    start = torch.randn(50)
    weights = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    optimizers = [torch.optim.AdamW([w], lr=1e-2, fused=True) for w in weights]
    direct = flows._AdamW(optimizers[1], weights[1])

    def refuse(*args, **kwargs):
        raise TypeError("other arguments")

    direct.kernel = refuse
    for _ in range(3):
        gradient = torch.randn(50)
        for w in weights:
            w.grad = gradient.clone()
        with torch.no_grad():
            optimizers[0].step()
            direct.step()
    assert direct.state is False and torch.equal(weights[0], weights[1])
