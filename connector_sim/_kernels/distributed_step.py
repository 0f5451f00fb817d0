"""One step of a slice of a dense network, with the latents' sums combined outside.

The distributed simulation (``connector_sim.distributed``) cannot run the
time loops of ``simulate_dense.py`` on a slice of neurons: every step needs
``krec = n^T phi(x) / N`` over all N neurons, which each process knows only
after the others have sent their part. These kernels do one step on a slice
and return its block sums; the caller combines them across processes. The
NumPy functions below are the specification of the compiled ones
(``full_path_step`` and ``latent_path_step`` in ``_simulate_dense_cpp``).

``full_path_step_reference`` (the slice holds units ``unit_offset`` ..
``unit_offset + n - 1`` of the network; ``unit_offset`` a multiple of
BLOCK_SIZE, so the blocks of the slice are blocks of the whole network)::

    krec None (pre-pass):  partial[blk] = sum over block blk of n^T phi(x)      (clamp at `step`)
    otherwise:             x = x + alpha ((krec @ m + u @ I + b) - x) + noise_scale xi
                           xi[b, i] = counter_rng draw of (seed, trial_offset + b, step, unit_offset + i)
                           record = x[:, record_idx]
                           partial[blk] = sum over block blk of n^T phi(x)      (clamp at step + 1)

``latent_path_step_reference``::

    z = kappa @ m + v @ I + b;  partial[blk] = sum over block blk of n^T phi(z)  (clamp at `step`)

``partial`` has shape (n_blocks, B, R), float64, one row per BLOCK_SIZE
neurons; the arithmetic on neurons runs in the dtype of the loadings, as in
the time loops (``krec``, ``kappa`` and ``v`` are cast to it).
"""

import numpy as np

from ..activations import apply_activation
from . import aligned, counter_rng
from .simulate_dense import BLOCK_SIZE, _cpp_clamp_arrays


def _active(clamp, t):
    mask, _, start, stop = clamp
    return mask is not None and start <= t < stop


def _block_sums(n_T, rates):
    """partial[blk, b, r] = sum over the neurons of block blk of n[r, i] rates[b, i] (float64)."""
    B, n = rates.shape
    R = n_T.shape[0]
    n_blocks = -(-n // BLOCK_SIZE)
    partial = np.empty((n_blocks, B, R))
    n64 = n_T.astype(np.float64)
    r64 = rates.astype(np.float64)
    for blk in range(n_blocks):
        window = slice(blk * BLOCK_SIZE, min((blk + 1) * BLOCK_SIZE, n))
        partial[blk] = r64[:, window] @ n64[:, window].T
    return partial


def _rates(activation, x, clamp, t):
    rates = apply_activation(activation, x)
    if _active(clamp, t):
        rates = np.where(clamp[0], clamp[1], rates)
    return rates


def unit_normals(seed, trial, step, first_unit, n_units):
    """``counter_rng.standard_normal(seed, trial, step, N)[first_unit : first_unit + n_units]``.

    Computed without the units before ``first_unit``: unit i takes the cosine
    (i % 128 < 64) or the sine output of pair ``(i // 128) * 64 + i % 64``.
    """
    units = np.arange(first_unit, first_unit + n_units, dtype=np.int64)
    key = counter_rng.step_key(seed, trial, step)
    with np.errstate(over="ignore"):
        bits = counter_rng.mix64(key + counter_rng.GOLDEN * (counter_rng.pair_index(units).astype(np.uint64)
                                                             + np.uint64(1)))
    cosine, sine = counter_rng.bits_to_normals(bits)
    return np.where(counter_rng.uses_sine(units), sine, cosine)


def full_path_step_reference(m_T, n_T, I_T, b, activation, x, u, alpha, noise_scale, seed, trial_offset, step,
                             unit_offset, krec, record_idx, record, clamp, partial):
    """One full-path step of a slice (see the module docstring); updates x, record and partial in place.

    Parameters
    ----------
    m_T, n_T, I_T, b, activation
        The slice's loadings (R, n), (R, n), (D, n), (n,).
    x : ndarray of shape (B, n), the slice's state at ``step`` (overwritten with the next one)
    u : ndarray of shape (1 or B, D), the inputs of ``step``
    alpha, noise_scale : float
    seed, trial_offset, step, unit_offset : int
        Noise keys: unit i of trial b draws (seed, trial_offset + b, step, unit_offset + i).
    krec : ndarray of shape (B, R), float64, or None (the pre-pass: no update)
    record_idx : ndarray of shape (K,), int64, local indices recorded after the update
    record : ndarray of shape (B, K), filled with x[:, record_idx] after the update
    clamp : tuple (mask (n,) or None, value (n,), start, stop), the window in global steps
    partial : ndarray of shape (n_blocks, B, R), float64, filled with the block sums
    """
    if unit_offset % BLOCK_SIZE:
        raise ValueError(f"unit_offset must be a multiple of {BLOCK_SIZE}. Got {unit_offset}.")
    dtype = x.dtype.type
    if krec is None:
        partial[:] = _block_sums(n_T, _rates(activation, x, clamp, step))
        return
    drive = krec.astype(dtype) @ m_T + u.astype(dtype) @ I_T + b
    x += dtype(alpha) * (drive - x)
    if noise_scale:
        for trial in range(x.shape[0]):
            xi = unit_normals(seed, trial_offset + trial, step, unit_offset, x.shape[1])
            x[trial] += (noise_scale * xi).astype(dtype)
    record[:] = x[:, record_idx]
    partial[:] = _block_sums(n_T, _rates(activation, x, clamp, step + 1))


def latent_path_step_reference(m_T, n_T, I_T, b, activation, kappa, v, step, clamp, partial):
    """Block sums of n^T phi(kappa @ m + v @ I + b) for a slice (see the module docstring).

    kappa (B, R) and v (B, D) are float64 and cast to the loadings' dtype;
    ``clamp`` as in :func:`full_path_step_reference`.
    """
    dtype = m_T.dtype.type
    z = kappa.astype(dtype) @ m_T + v.astype(dtype) @ I_T + b
    partial[:] = _block_sums(n_T, _rates(activation, z, clamp, step))


def _shifted(clamp, step):
    mask, value, start, stop = clamp
    return clamp if mask is None else (mask, value, start - step, stop - step)


def full_path_step_cpp(m_T, n_T, I_T, b, activation, x, u, alpha, noise_scale, seed, trial_offset, step,
                       unit_offset, krec, record_idx, record, clamp, partial, n_threads=1):
    """The compiled :func:`full_path_step_reference` (same arguments, plus ``n_threads``)."""
    from .._ext import _simulate_dense_cpp as ext
    from ..activations import activation_code

    m_T, n_T, I_T, b = aligned(m_T, n_T, I_T, b)
    B, K = x.shape[0], len(record_idx)
    u3 = np.ascontiguousarray(np.asarray(u, dtype=x.dtype).reshape(u.shape[0], 1, u.shape[1]))
    record_out = np.empty((B, 2, K), x.dtype)
    # The kernel's local step 0 is global step `step` (its clamp window and noise step).
    ext.full_path_step(m_T, n_T, I_T, b, activation_code(activation), x, u3, float(alpha), float(noise_scale),
                       int(seed) & 0xFFFFFFFFFFFFFFFF, int(trial_offset), int(step), int(unit_offset),
                       np.ascontiguousarray(record_idx, np.int64),
                       None if krec is None else np.ascontiguousarray(krec, np.float64), True, record_out,
                       *_cpp_clamp_arrays(_shifted(clamp, step), x.dtype), partial, int(n_threads))
    if krec is not None:
        record[:] = record_out[:, 1]


def latent_path_step_cpp(m_T, n_T, I_T, b, activation, kappa, v, step, clamp, partial, n_threads=1):
    """The compiled :func:`latent_path_step_reference` (same arguments, plus ``n_threads``)."""
    from .._ext import _simulate_dense_cpp as ext
    from ..activations import activation_code

    m_T, n_T, I_T, b = aligned(m_T, n_T, I_T, b)
    xperp = np.zeros((0, m_T.shape[1]), m_T.dtype)
    ext.latent_path_step(m_T, n_T, I_T, b, activation_code(activation), np.ascontiguousarray(kappa, np.float64),
                         np.ascontiguousarray(v, np.float64), xperp, 0.0,
                         *_cpp_clamp_arrays(_shifted(clamp, step), m_T.dtype), partial, int(n_threads))


def kernels(backend):
    """The (full_path_step, latent_path_step) pair of ``backend`` ("numpy" or "cpp")."""
    if backend == "numpy":
        def full(*args, n_threads=1):
            return full_path_step_reference(*args)

        def latent(*args, n_threads=1):
            return latent_path_step_reference(*args)

        return full, latent
    if backend == "cpp":
        return full_path_step_cpp, latent_path_step_cpp
    raise ValueError(f"The distributed simulation runs on the 'cpp' or 'numpy' backend. Got {backend!r}.")
