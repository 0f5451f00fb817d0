"""NumPy reference of the fused training step of a CNF's velocity MLP (the specification).

The compiled kernel (``connector_sim._ext._cnf_train_cpp.CnfTrainStep``,
cpp/include/connector_sim/cnf_train.hpp) runs one flow-matching step of
:class:`connector_sim.inference.flows.VelocityMLP` in float32:

- inputs ``[x_t, c, t]`` with ``x_t = x0 + t (x1 - x0)``, target ``x1 - x0``;
- forward through ``n_layers`` Linear + SiLU layers and a last Linear;
- the summed squared error of the batch (returned) and the gradient of its
  mean over rows with respect to the flat weights (nn.Linear layout: weight
  (out, in) row-major, then bias, layer after layer);
- torch.optim.AdamW's update: ``w *= 1 - lr wd``, ``m = beta1 m + (1 - beta1) g``,
  ``v = beta2 v + (1 - beta2) g^2``, ``w -= lr / (1 - beta1^step) m /
  (sqrt(v) / sqrt(1 - beta2^step) + eps)``;
- the weight average ``averaged += (1 - ema_decay) (w - averaged)``.

``cnf_train_step_reference`` does the same in float64; ``mlp_squared_error_reference`` is the
forward pass alone (``CnfTrainStep.squared_error``, the validation loss).
"""

import numpy as np


def layer_sizes(dim, condition_dim, hidden, n_layers):
    """(in, out) features of each Linear layer of the MLP."""
    widths = [dim + condition_dim + 1] + [hidden] * n_layers + [dim]
    return list(zip(widths[:-1], widths[1:]))


def n_parameters(dim, condition_dim, hidden, n_layers):
    return sum(out * (inp + 1) for inp, out in layer_sizes(dim, condition_dim, hidden, n_layers))


def unflatten(flat, sizes):
    """[(weight (out, in), bias (out,)), ...]: views of the flat vector."""
    layers, offset = [], 0
    for inp, out in sizes:
        weight = flat[offset:offset + out * inp].reshape(out, inp)
        offset += out * inp
        layers.append((weight, flat[offset:offset + out]))
        offset += out
    return layers


def mlp_squared_error_reference(flat, inputs, target, *, dim, condition_dim, hidden, n_layers):
    """sum_rows |v(inputs) - target|^2 of the MLP with flat weights ``flat`` (float64): a validation loss.

    ``inputs`` are the MLP's input rows [x_t, c, t]; ``CnfTrainStep.squared_error`` computes this.
    """
    layers = unflatten(np.asarray(flat, dtype=np.float64), layer_sizes(dim, condition_dim, hidden, n_layers))
    a = np.asarray(inputs, dtype=np.float64)
    for weight, bias in layers[:-1]:
        h = a @ weight.T + bias
        a = h / (1.0 + np.exp(-h))
    weight, bias = layers[-1]
    return float(np.sum((a @ weight.T + bias - np.asarray(target, dtype=np.float64)) ** 2))


def squared_error_and_gradient_reference(flat, x0, x1, t, condition, *, dim, condition_dim, hidden, n_layers):
    """The batch's summed squared error and the gradient of its mean over rows (float64)."""
    sizes = layer_sizes(dim, condition_dim, hidden, n_layers)
    layers = unflatten(np.asarray(flat, dtype=np.float64), sizes)
    x0, x1, t = (np.asarray(a, dtype=np.float64) for a in (x0, x1, t))
    target = x1 - x0
    parts = [x0 + t[:, None] * target] + ([] if condition_dim == 0 else [np.asarray(condition, np.float64)])
    activations = [np.concatenate(parts + [t[:, None]], axis=1)]
    pre_activations = []
    for weight, bias in layers[:-1]:
        h = activations[-1] @ weight.T + bias
        pre_activations.append(h)
        activations.append(h / (1.0 + np.exp(-h)))
    weight, bias = layers[-1]
    residual = activations[-1] @ weight.T + bias - target
    gradient_layers = []
    g = 2.0 * residual / len(x0)
    for layer in range(len(layers) - 1, -1, -1):
        weight, _ = layers[layer]
        gradient_layers.append((g.T @ activations[layer], g.sum(axis=0)))
        if layer > 0:
            h = pre_activations[layer - 1]
            s = 1.0 / (1.0 + np.exp(-h))
            g = (g @ weight) * s * (1.0 + h * (1.0 - s))
    gradient = np.concatenate([np.concatenate([w.ravel(), b]) for w, b in reversed(gradient_layers)])
    return float(np.sum(residual**2)), gradient


def cnf_train_step_reference(flat, exp_avg, exp_avg_sq, averaged, x0, x1, t, condition, *, dim, condition_dim,
                             hidden, n_layers, lr, step, ema_decay, beta1=0.9, beta2=0.999, eps=1e-8,
                             weight_decay=0.01):
    """One step; returns (squared_error, gradient, weights, exp_avg, exp_avg_sq, averaged), new float64 arrays.

    ``averaged`` may be None (no weight average; None is returned for it).
    ``step`` counts the updates including this one (1 for the first).
    """
    squared_error, g = squared_error_and_gradient_reference(flat, x0, x1, t, condition, dim=dim,
                                                            condition_dim=condition_dim, hidden=hidden,
                                                            n_layers=n_layers)
    w = np.asarray(flat, dtype=np.float64) * (1.0 - lr * weight_decay)
    m = beta1 * np.asarray(exp_avg, dtype=np.float64) + (1.0 - beta1) * g
    v = beta2 * np.asarray(exp_avg_sq, dtype=np.float64) + (1.0 - beta2) * g * g
    w = w - lr / (1.0 - beta1**step) * m / (np.sqrt(v) / np.sqrt(1.0 - beta2**step) + eps)
    if averaged is not None:
        averaged = np.asarray(averaged, dtype=np.float64)
        averaged = averaged + (1.0 - ema_decay) * (w - averaged)
    return squared_error, g, w, m, v, averaged
