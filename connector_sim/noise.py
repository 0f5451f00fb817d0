"""The private noise of the simulator, drawn without running a simulation.

The noise is counter-based (``_kernels/counter_rng.py``): the standard normal
of trial b, step t and unit i depends on (seed, b, t, i) only, so any block of
it can be regenerated on its own, on any backend and thread count (bitwise
for one backend; across backends the random bits are the same and the normals
agree to 1e-14 in float64, 2e-6 in float32, see :func:`private_noise`).
"""

import numbers

import numpy as np

from ._backends import extension_built, load_extension
from ._kernels import counter_rng
from ._memory import check_allocation
from ._validation import check_int


def private_noise(seed, n_steps, n_units, n_trials=1, trial_offset=0, step_start=0):
    """The standard normals xi that :func:`simulate` adds as private noise.

    With ``noise_std=sigma`` and ``seed=seed``, each Euler step of
    :func:`connector_sim.simulate` adds ``sqrt(alpha) * sigma * xi[b, t]``::

        x_{t+1} = x_t + alpha (-x_t + m n^T phi(x_t) / N + I u_t + b) + sqrt(alpha) sigma xi_t

    where ``xi[b, t, i]`` is the counter-based draw keyed by (seed, trial
    ``trial_offset + b``, step ``step_start + t``, unit i). Uses the compiled
    generator when it was built, the NumPy reference otherwise.

    Exactness: every backend draws the same 64 random bits for a pair of
    units; the normals made from them (Box-Muller) use different log, cos and
    sin implementations (NumPy's here, libm's in the compiled generator, own
    vectorised polynomials in the numba and cpp kernels), so they agree to
    within 1e-14 in float64 (a few ulp of ``|xi| < 6.8``) and the cpp kernels'
    float32 draws to within 2e-6 of these float64 ones. One backend and dtype
    gives bitwise the same draws whatever the thread count, the batch of
    trials and the chunking of the steps.

    Parameters
    ----------
    seed : int
        The ``seed`` given to (or stored by) :func:`simulate`. Any Python int;
        it is taken modulo 2**64, so -1 and 2**64 - 1 are the same seed.
    n_steps : int
        Number of time steps T (>= 1).
    n_units : int
        Number of units N (>= 1): units 0 .. N - 1.
    n_trials : int, default=1
        Number of trials (>= 1).
    trial_offset : int, default=0
        Index of the first trial (>= 0).
    step_start : int, default=0
        Index of the first step (>= 0): xi_t for t = step_start, ...

    Returns
    -------
    xi : ndarray of shape (n_trials, n_steps, n_units), float64
        Standard normal draws, independent across trials, steps and units.

    Raises
    ------
    TypeError
        If an argument is not an int.
    ValueError
        If ``n_steps``, ``n_units`` or ``n_trials`` is < 1, or an offset < 0.
    TooLargeError
        If the draws would not fit in memory.

    Examples
    --------
    >>> from connector_sim import private_noise
    >>> xi = private_noise(seed=7, n_steps=100, n_units=1000, n_trials=2)
    >>> xi.shape
    (2, 100, 1000)
    >>> bool((private_noise(7, 10, 1000, trial_offset=1, step_start=90)[0] == xi[1, 90:]).all())
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"The 'seed' parameter of private_noise must be an int. Got {seed!r} instead.")
    n_steps = check_int(n_steps, "n_steps", minimum=1, owner="private_noise")
    n_units = check_int(n_units, "n_units", minimum=1, owner="private_noise")
    n_trials = check_int(n_trials, "n_trials", minimum=1, owner="private_noise")
    trial_offset = check_int(trial_offset, "trial_offset", minimum=0, owner="private_noise")
    step_start = check_int(step_start, "step_start", minimum=0, owner="private_noise")
    check_allocation(8 * n_trials * n_steps * n_units, f"private_noise of {n_trials} x {n_steps} x {n_units} draws",
                     "Ask for fewer trials, steps or units (or for blocks of steps, with step_start).")
    seed = int(seed)
    if extension_built("_counter_rng"):
        return load_extension("_counter_rng").noise_block(
            seed, trial_offset, n_trials, step_start, n_steps, n_units)
    xi = np.empty((n_trials, n_steps, n_units))
    for b in range(n_trials):
        for t in range(n_steps):
            xi[b, t] = counter_rng.standard_normal(seed, trial_offset + b, step_start + t, n_units)
    return xi
