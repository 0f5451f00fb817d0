"""White noise through the input loadings (``simulate(..., input_noise=S)``).

With input noise S (a D x D matrix, or per-channel standard deviations, or
one standard deviation for every channel), each Euler step is::

    x_{t+1} = x_t + alpha (-x_t + m n^T phi(x_t) / N + I u_t + b) + sqrt(alpha) I S eta_t

with eta_t ~ N(0, I_D) drawn by the counter-based generator keyed by
(seed, trial, step, input channel), on a stream of its own: the private
noise of the same seed is independent of it (:func:`input_noise_draws`
returns the draws). In continuous time this is::

    tau dx = (-x + m n^T phi(x) / N + I u + b) dt + sqrt(tau) I S dW

The noise enters exactly as the per-step input ``u_t + S eta_t / sqrt(alpha)``
would (``alpha (I S eta_t / sqrt(alpha)) = sqrt(alpha) I S eta_t``), so every
backend and both paths realise it: :func:`noisy_inputs` draws it in chunks of
steps and adds it to the inputs. The state stays on
x_t = m kappa_t + I v_t + b + (1 - alpha)^t xperp with the filtered input::

    v_{t+1} = (1 - alpha) v_t + alpha u_t + sqrt(alpha) S eta_t

so the latent path is exact (``SimulationResult.v`` holds this noisy v).

Noise inside the latent subspace. When the input loadings lie in span(m),
I = m A (A of shape (R, D)), the potentials are x_t = m (kappa_t + A v_t) + b,
and the latent z_t = kappa_t + A v_t follows::

    z_{t+1} = (1 - alpha) z_t + alpha n^T phi(m z_t + b) / N + alpha A u_t + sqrt(alpha) A S eta_t
    tau dz = (-z + n^T phi(m z + b) / N + A u) dt + sqrt(tau) A S dW

a diffusion with constant covariance A S S^T A^T / tau per unit of time.
This is how :class:`connector_sim.ddm.DriftDiffusionMatching` realises a
constant diffusion matrix.
"""

import math
import numbers

import numpy as np

from ._kernels import counter_rng
from ._validation import check_int
from .activations import apply_activation
from .noise import private_noise

#: Added to the seed before mixing: the input-noise stream's key. Any fixed
#: 64-bit constant that is not a small integer keeps it apart from the
#: private noise of every seed.
INPUT_NOISE_STREAM = 0x5DEECE66DA3B9F1D

#: Steps drawn per chunk: the temporaries of the generator stay below
#: ``n_trials * _CHUNK_STEPS * 128`` floats whatever the length of the run.
_CHUNK_STEPS = 2048


def input_noise_seed(seed):
    """The key of the input-noise stream of ``seed`` (a 64-bit int)."""
    with np.errstate(over="ignore"):
        key = counter_rng.mix64(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF) + np.uint64(INPUT_NOISE_STREAM))
    return int(key)


def input_noise_draws(seed, n_steps, n_inputs, n_trials=1, trial_offset=0, step_start=0):
    """The standard normals eta that ``simulate(..., input_noise=S, seed=seed)`` uses.

    ``eta[b, t, j]`` is the draw of trial ``trial_offset + b``, step
    ``step_start + t`` and input channel j: the private-noise generator
    (:func:`connector_sim.private_noise`) under the key
    :func:`input_noise_seed` ``(seed)``, with the input channels as its units.

    Returns
    -------
    eta : ndarray of shape (n_trials, n_steps, n_inputs), float64
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"The 'seed' parameter of input_noise_draws must be an int. Got {seed!r} instead.")
    n_inputs = check_int(n_inputs, "n_inputs", minimum=1, owner="input_noise_draws")
    return private_noise(input_noise_seed(seed), n_steps, n_inputs, n_trials, trial_offset, step_start)


def check_input_noise(input_noise, n_inputs, owner="simulate"):
    """The input-noise matrix S of shape (D, D) (float64), or None when there is none.

    Accepts a scalar sigma (S = sigma I_D), a vector of D standard
    deviations (S = diag) or a D x D matrix.
    """
    if input_noise is None:
        return None
    value = np.asarray(input_noise, dtype=np.float64) if not isinstance(input_noise, str) else None
    if value is None or value.ndim > 2:
        raise ValueError(
            f"The 'input_noise' parameter of {owner} must be a scalar, a vector of {n_inputs} standard deviations "
            f"or a ({n_inputs}, {n_inputs}) matrix. Got {input_noise!r} instead."
        )
    if n_inputs == 0:
        raise ValueError(
            f"input_noise needs a network with inputs (its noise enters through the input loadings I), but this "
            f"network has n_inputs = 0. Give the network input loadings, or use noise_std for private noise."
        )
    if not np.all(np.isfinite(value)):
        raise ValueError(f"The 'input_noise' parameter of {owner} must be finite. Got {input_noise!r} instead.")
    if value.ndim == 0:
        if value < 0:
            raise ValueError(f"The 'input_noise' parameter of {owner} must be >= 0. Got {float(value)} instead.")
        return float(value) * np.eye(n_inputs)
    if value.ndim == 1:
        if value.shape != (n_inputs,) or np.any(value < 0):
            raise ValueError(
                f"A vector input_noise holds one standard deviation (>= 0) per input channel: shape ({n_inputs},). "
                f"Got shape {value.shape} with minimum {value.min() if value.size else 'n/a'}."
            )
        return np.diag(value)
    if value.shape != (n_inputs, n_inputs):
        raise ValueError(
            f"A matrix input_noise S (the input gets S eta / sqrt(alpha), eta ~ N(0, I)) must have shape "
            f"({n_inputs}, {n_inputs}). Got shape {value.shape}."
        )
    return value.copy()


def noisy_inputs(inputs, S, seed, n_trials, n_steps, alpha):
    """Per-step inputs u_t + S eta_t / sqrt(alpha) for every trial, float64.

    Parameters
    ----------
    inputs : ndarray of shape (1 or n_trials, T, D), or None (zero)
    S : ndarray of shape (D, D)
    seed : int
    n_trials, n_steps : int
    alpha : float

    Returns
    -------
    ndarray of shape (n_trials, T, D)
    """
    D = S.shape[0]
    out = np.zeros((n_trials, n_steps, D))
    if inputs is not None:
        out[:] = inputs
    scale = S.T / math.sqrt(alpha)
    for start in range(0, n_steps, _CHUNK_STEPS):
        count = min(_CHUNK_STEPS, n_steps - start)
        eta = input_noise_draws(seed, count, D, n_trials, 0, start)
        out[:, start: start + count] += eta @ scale
    return out


def simulate_input_noise_reference(network, n_steps, dt, input_noise, seed, *, kappa0=None, inputs=None,
                                   n_trials=1):
    """Reference Euler-Maruyama loop of the network with input noise (small N; the specification).

    ::

        x_{t+1} = x_t + alpha (-x_t + m n^T phi(x_t) / N + I u_t + b) + sqrt(alpha) I S eta_t
        kappa_{t+1} = (1 - alpha) kappa_t + alpha n^T phi(x_t) / N

    from x_0 = m kappa0 + b, in float64, with eta from :func:`input_noise_draws`.

    Parameters
    ----------
    network : LowRankRNN
    n_steps : int
    dt : float
    input_noise : scalar, (D,) or (D, D)
        As in :func:`connector_sim.simulate`.
    seed : int
    kappa0 : array-like of shape (R,) or (n_trials, R), optional
    inputs : array-like of shape (T, D) or (n_trials, T, D), optional
    n_trials : int, default=1

    Returns
    -------
    kappa : ndarray of shape (n_trials, n_steps + 1, R)
    x : ndarray of shape (n_trials, n_steps + 1, N)
    """
    S = check_input_noise(input_noise, network.n_inputs, owner="simulate_input_noise_reference")
    alpha = dt / network.tau
    m, n, I, b = (np.asarray(a, dtype=np.float64) for a in (network.m, network.n, network.I, network.b))
    N, R = m.shape
    kappa = np.zeros((n_trials, R)) + (0.0 if kappa0 is None else np.asarray(kappa0, dtype=np.float64))
    u = np.zeros((n_trials, n_steps, I.shape[1])) + (0.0 if inputs is None else np.asarray(inputs, np.float64))
    eta = input_noise_draws(seed, n_steps, I.shape[1], n_trials)
    x = kappa @ m.T + b
    xs, kappas = [x.copy()], [kappa.copy()]
    for t in range(n_steps):
        krec = apply_activation(network.activation, x) @ n / N
        kappa = (1 - alpha) * kappa + alpha * krec
        x = x + alpha * (-x + krec @ m.T + u[:, t] @ I.T + b) + math.sqrt(alpha) * (eta[:, t] @ S.T) @ I.T
        xs.append(x.copy())
        kappas.append(kappa.copy())
    return np.stack(kappas, axis=1), np.stack(xs, axis=1)
