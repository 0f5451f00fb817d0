"""The low-rank RNN model object (SPEC section 1).

    tau dx/dt = -x + (1/N) M Nm^T phi(x) + I u(t) + b
"""

import numpy as np

from ._validation import check_array, check_dtype, check_positive_scalar
from .activations import activation_name, check_activation


class LowRankRNN:
    """A sampled low-rank recurrent network.

    Row i of ``(m, n, I, b)`` is neuron i. The connectivity is
    ``J = m @ n.T / N``, so the dynamics are::

        tau dx/dt = -x + m (n^T phi(x)) / N + I u(t) + b

    The loadings are stored neuron-contiguous (one row of length N per
    latent dimension), the layout the kernels stream; ``m``, ``n`` and
    ``I`` are (N, R) / (N, D) views of that storage, not copies.

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
    activation : {"tanh", "relu", "identity"} or numba.njit function, default="tanh"
        phi, applied elementwise. A user function runs on the numba backend.
    dtype : {float32, float64}, default=float64
        Storage and simulation precision.

    Attributes
    ----------
    n_neurons, rank, n_inputs : int
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
        self.tau = check_positive_scalar(tau, "tau", owner="LowRankRNN")
        self.activation = check_activation(activation)
        self.dtype = dtype
        # Neuron-contiguous storage: row r of m_T is m[:, r].
        self.m_T = np.ascontiguousarray(m.T)
        self.n_T = np.ascontiguousarray(n.T)
        self.I_T = np.ascontiguousarray(I.T)
        # Contiguous like the loadings (a column of a larger array is strided).
        self.b = np.ascontiguousarray(b)

    @property
    def m(self):
        """Right factors, shape (n_neurons, rank) (a view)."""
        return self.m_T.T

    @property
    def n(self):
        """Left factors, shape (n_neurons, rank) (a view)."""
        return self.n_T.T

    @property
    def I(self):  # noqa: E743 - the SPEC's name for the input loadings
        """Input loadings, shape (n_neurons, n_inputs) (a view)."""
        return self.I_T.T

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
