"""The low-rank RNN model object (theory section 1).

    tau dx/dt = -x + (1/N) M Nm^T phi(x) + I u(t) + b
"""

import numpy as np

from ._memory import aligned_copy
from ._validation import check_array, check_dtype, check_positive_scalar
from .activations import activation_name, check_activation


def _frozen(array):
    """A read-only C-contiguous copy of an already validated array, starting on a 64-byte boundary.

    The kernels stream these arrays with 64-byte vector loads: see
    :func:`connector_sim._memory.aligned_empty`.
    """
    array = aligned_copy(array)
    array.flags.writeable = False
    return array


def _checked_T(value, name, shape, dtype, *, transpose=False, copy=True):
    """Validate ``value`` against a fixed ``shape`` (None: free axis) and store it read-only.

    Used by the constructor and by every attribute assignment of
    :class:`LowRankRNN`: the shape of a network (N, R, D) never changes after
    construction. ``transpose`` stores the transpose (``m`` -> ``m_T``).
    ``copy=False`` takes over an array that is already C-contiguous in
    ``dtype`` (the package's own freshly built arrays).
    """
    if isinstance(value, np.ndarray) or value is None:
        given = value
    else:
        try:
            given = np.asarray(value)
        except Exception:  # ragged lists: check_array names them
            given = value
    if isinstance(given, np.ndarray) and given.ndim == len(shape):
        for want, got in zip(shape, given.shape):
            if want is not None and want != got:
                raise ValueError(
                    f"The {name!r} attribute of LowRankRNN must have shape "
                    f"{tuple('any' if s is None else s for s in shape)}. Got shape {given.shape}. "
                    "Attributes keep the shape of the network; build a new LowRankRNN(m, n, I, b, ...) "
                    "to change the number of neurons, the rank or the number of inputs."
                )
    array = check_array(given, name, ndim=len(shape), dtype=dtype, shape=shape)
    if transpose:
        array = array.T
    if copy or not array.flags.c_contiguous or not array.flags.aligned or array.dtype != dtype:
        return _frozen(np.asarray(array, dtype=dtype))
    array.flags.writeable = False
    return array


class LowRankRNN:
    """A sampled low-rank recurrent network.

    Row i of ``(m, n, I, b)`` is neuron i. The connectivity is
    ``J = m @ n.T / N``, so the dynamics are::

        tau dx/dt = -x + m (n^T phi(x)) / N + I u(t) + b

    The loadings are stored neuron-contiguous (one row of length N per
    latent dimension), the layout the kernels stream; ``m``, ``n`` and
    ``I`` are (N, R) / (N, D) read-only views of that storage, not copies.

    Parameters
    ----------
    m : array-like of shape (n_neurons, rank)
        Right connectivity factors (the latent dimensions along which
        activity varies).
    n : array-like of shape (n_neurons, rank)
        Left connectivity factors (what each neuron sends to the latents).
    I : array-like of shape (n_neurons, n_inputs), optional
        Input loadings. None means no inputs (n_inputs = 0).
    b : array-like of shape (n_neurons,), optional
        Biases. None means zero.
    tau : float, default=1.0
        Time constant, in the same unit as the simulator's ``dt``.
    activation : {"tanh", "relu", "identity", "softplus", "sigmoid"} or numba.njit function, default="tanh"
        phi, applied elementwise. A user function runs on the numba backend.
    dtype : {float32, float64}, default=float64
        Storage and simulation precision.

    Attributes
    ----------
    n_neurons, rank, n_inputs : int
    m, n, I, b, m_T, n_T, I_T : ndarray (read-only)
    tau, activation, dtype

    Raises
    ------
    ValueError
        If an array has the wrong shape (``n`` not the shape of ``m``, ``I`` or
        ``b`` not N rows), holds NaN or inf, or ``m`` is empty; if ``tau`` is
        not a finite number > 0 or ``activation`` is unknown.
    TypeError
        If an array is not real-valued, ``dtype`` is not float32 or float64,
        or ``tau`` is not a number.

    Notes
    -----
    A network is always in a state its kernels can trust. The arrays are
    read-only copies (``flags.writeable`` is False; writing into them raises
    ``ValueError: assignment destination is read-only``), so changing the
    caller's arrays later does not change the network. Assigning an
    attribute (``net.b = new_b``, ``net.tau = 2.0``, ``net.activation =
    "relu"``) validates the new value as the constructor does (same shape,
    finite, converted to ``dtype``; tau a finite number > 0) and stores a new
    read-only copy. The shape (N, R, D) and the dtype are fixed: build a new
    ``LowRankRNN`` to change them, or use :meth:`astype`.

    Examples
    --------
    >>> import numpy as np
    >>> network = LowRankRNN(np.ones((4, 1)), np.full((4, 1), 2.0))  # J = m n^T / N = 0.5
    >>> network.n_neurons, network.rank, network.n_inputs
    (4, 1, 0)
    >>> network.m.flags.writeable
    False
    """

    def __init__(self, m, n, I=None, b=None, *, tau=1.0, activation="tanh", dtype=np.float64):
        dtype = check_dtype(dtype)
        m = check_array(m, "m", ndim=2, dtype=dtype, shape=(None, None))
        n_neurons, rank = m.shape
        if n_neurons < 1 or rank < 1:
            raise ValueError(f"m must have at least one neuron and rank >= 1. Got shape {m.shape}.")
        n = np.asarray(n) if n is not None else None
        if n is not None and n.ndim == 2 and n.shape[0] == n_neurons and n.shape[1] != rank:
            raise ValueError(
                f"m and n must have the same rank (number of columns). Got m with rank {rank} "
                f"and n with rank {n.shape[1]}."
            )
        n = check_array(n, "n", ndim=2, dtype=dtype, shape=(n_neurons, rank))
        if I is None:
            I = np.zeros((n_neurons, 0), dtype=dtype)
        I = check_array(I, "I", ndim=2, dtype=dtype, shape=(n_neurons, None))
        b = np.zeros(n_neurons, dtype=dtype) if b is None else b
        b = check_array(b, "b", ndim=1, dtype=dtype, shape=(n_neurons,))
        self.tau = tau
        self.activation = activation
        self._dtype = dtype
        # Neuron-contiguous storage: row r of m_T is m[:, r]. Read-only copies.
        self._m_T = _frozen(m.T)
        self._n_T = _frozen(n.T)
        self._I_T = _frozen(I.T)
        self._b = _frozen(b)

    @classmethod
    def _adopt(cls, m_T, n_T, I_T, b, *, tau=1.0, activation="tanh", dtype=np.float64):
        """A network that takes over freshly built neuron-contiguous arrays without copying them.

        For the package's samplers only: the arrays must be C-contiguous, of
        ``dtype``, and referenced nowhere else (they are made read-only).
        They are validated like the constructor's.
        """
        self = cls.__new__(cls)
        self._dtype = check_dtype(dtype)
        N = m_T.shape[1]
        self.tau = tau
        self.activation = activation
        self._m_T = _checked_T(m_T, "m_T", (None, N), self._dtype, copy=False)
        R = self._m_T.shape[0]
        if N < 1 or R < 1:
            raise ValueError(f"m must have at least one neuron and rank >= 1. Got shape {(N, R)}.")
        self._n_T = _checked_T(n_T, "n_T", (R, N), self._dtype, copy=False)
        self._I_T = _checked_T(I_T, "I_T", (None, N), self._dtype, copy=False)
        self._b = _checked_T(b, "b", (N,), self._dtype, copy=False)
        return self

    def __setstate__(self, state):
        # Copies (copy.deepcopy, pickle) rebuild the arrays writeable: make them read-only again.
        self.__dict__.update(state)
        for name in ("_m_T", "_n_T", "_I_T", "_b"):
            self.__dict__[name] = _checked_T(self.__dict__[name], name[1:], self.__dict__[name].shape, self._dtype,
                                             copy=False)

    # --- validated, read-only state ---------------------------------------------------
    # Every array the kernels read is a read-only C-contiguous copy in ``dtype``;
    # assigning an attribute validates the new value (same shape, finite values)
    # and stores a new read-only copy, so a network is never in a state its
    # kernels cannot trust. Build a new LowRankRNN to change N, R or D.

    @property
    def dtype(self):
        """Storage and simulation precision (change it with :meth:`astype`)."""
        return self._dtype

    @dtype.setter
    def dtype(self, value):
        raise AttributeError(
            "The dtype of a LowRankRNN cannot be assigned: its loadings are stored in it. "
            "Use network.astype(dtype), which returns a converted copy."
        )

    @property
    def tau(self):
        """Time constant (a finite number > 0)."""
        return self._tau

    @tau.setter
    def tau(self, value):
        self._tau = check_positive_scalar(value, "tau", owner="LowRankRNN")

    @property
    def activation(self):
        """phi: "tanh", "relu", "identity", "softplus", "sigmoid" or a numba function."""
        return self._activation

    @activation.setter
    def activation(self, value):
        self._activation = check_activation(value)

    @property
    def m_T(self):
        """Right factors, neuron-contiguous, shape (rank, n_neurons) (read-only)."""
        return self._m_T

    @m_T.setter
    def m_T(self, value):
        self._m_T = _checked_T(value, "m_T", self._m_T.shape, self._dtype)

    @property
    def n_T(self):
        """Left factors, neuron-contiguous, shape (rank, n_neurons) (read-only)."""
        return self._n_T

    @n_T.setter
    def n_T(self, value):
        self._n_T = _checked_T(value, "n_T", self._n_T.shape, self._dtype)

    @property
    def I_T(self):  # noqa: E743
        """Input loadings, neuron-contiguous, shape (n_inputs, n_neurons) (read-only)."""
        return self._I_T

    @I_T.setter
    def I_T(self, value):  # noqa: E743
        self._I_T = _checked_T(value, "I_T", self._I_T.shape, self._dtype)

    @property
    def b(self):
        """Biases, shape (n_neurons,) (read-only)."""
        return self._b

    @b.setter
    def b(self, value):
        self._b = _checked_T(value, "b", self._b.shape, self._dtype)

    @property
    def m(self):
        """Right factors, shape (n_neurons, rank) (a read-only view)."""
        return self._m_T.T

    @m.setter
    def m(self, value):
        self._m_T = _checked_T(value, "m", self._m_T.shape[::-1], self._dtype, transpose=True)

    @property
    def n(self):
        """Left factors, shape (n_neurons, rank) (a read-only view)."""
        return self._n_T.T

    @n.setter
    def n(self, value):
        self._n_T = _checked_T(value, "n", self._n_T.shape[::-1], self._dtype, transpose=True)

    @property
    def I(self):  # noqa: E743 - the theory page's name for the input loadings
        """Input loadings, shape (n_neurons, n_inputs) (a read-only view)."""
        return self._I_T.T

    @I.setter
    def I(self, value):  # noqa: E743
        self._I_T = _checked_T(value, "I", self._I_T.shape[::-1], self._dtype, transpose=True)

    @property
    def n_neurons(self):
        return self.m_T.shape[1]

    @property
    def rank(self):
        return self.m_T.shape[0]

    @property
    def n_inputs(self):
        return self.I_T.shape[0]

    @property
    def nbytes(self):
        """Bytes held by the loadings."""
        return self.m_T.nbytes + self.n_T.nbytes + self.I_T.nbytes + self.b.nbytes

    def astype(self, dtype):
        """A copy of the network stored in ``dtype`` (float32 or float64)."""
        return LowRankRNN(self.m, self.n, self.I, self.b, tau=self.tau, activation=self.activation, dtype=dtype)

    def connectivity(self):
        """The dense N x N matrix ``J = m n^T / N``; only for small networks."""
        if self.n_neurons > 20_000:
            raise ValueError(
                f"connectivity() builds a dense {self.n_neurons} x {self.n_neurons} matrix "
                f"({self.n_neurons**2 * 8 / 1e9:.1f} GB). It is meant for N <= 20000; "
                "use the loadings m and n directly instead."
            )
        return (self.m.astype(np.float64) @ self.n.T.astype(np.float64)) / self.n_neurons

    def rows(self):
        """The neuron rows ``[m, n, I, b]`` as one (n_neurons, 2R + D + 1) array."""
        return np.hstack([self.m, self.n, self.I, self.b[:, None]])

    def __repr__(self):
        return (
            f"LowRankRNN(n_neurons={self.n_neurons}, rank={self.rank}, n_inputs={self.n_inputs}, "
            f"tau={self.tau}, activation={activation_name(self.activation)!r}, dtype={self.dtype.name})"
        )
