"""
The spectrum of a sparse low-rank network
=========================================

A rank-one network P_ij = X_ij m_i n_j / N with C connections per row has one
outlier eigenvalue at (1 - s) sigma_mn and a bulk of radius
sigma^2 sqrt(s (1 - s) / N) (theory section 5). The eigenvalues of a sampled
network of N = 1,000 neurons match both.
"""

import numpy as np
from matplotlib.figure import Figure

import connector_sim as cs
from connector_sim import spectra

n_neurons, n_connections = 1000, 100
network = cs.rank_one_gaussian(n_neurons, variance=4.0, covariance=1.5, random_state=0)
sparse = cs.sparsify(network, n_connections=n_connections, seed=1, representation="stored")
values = spectra.eigenvalues(sparse)
theory = spectra.network_theory(sparse)
print("largest eigenvalue:", np.round(values[np.argmax(values.real)], 3), "theory:", theory)

figure = Figure(figsize=(4.5, 4.5))
ax = figure.add_subplot()
spectra.plot_spectrum(values, theory=theory, ax=ax)
figure
