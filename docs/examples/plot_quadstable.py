"""
Four attractors in a low-rank RNN
=================================

The quadstable network of the Connector paper: a rank-2 network whose neurons
come from a mixture of four Gaussian cell types. Its mean-field flow field has
four stable fixed points; a sampled network of N = 1,000 neurons, started from a
grid of latent states, settles into them.
"""

import numpy as np
from matplotlib.figure import Figure

import connector_sim as cs
from connector_sim.synthetic import latent_grid, quadstable_mixture, quadstable_network

network, cell_types = quadstable_network(1000, random_state=0)
result = cs.simulate(network, 200, dt=0.1, kappa0=latent_grid(6))
print("latent trajectories:", result.kappa.shape)

# The flow field of the distribution (mean field, theory eq. 4) with its fixed points
distribution = quadstable_mixture()
fixed_points = cs.find_fixed_points(cs.latent_flow(distribution), [[-2.5, 2.5], [-2.5, 2.5]], random_state=0)
print("stable fixed points:", sum(point.stability.startswith("stable") for point in fixed_points))

figure = Figure(figsize=(5, 4.5))
ax = figure.add_subplot()
cs.plot_flow_field(distribution, [[-2.5, 2.5], [-2.5, 2.5]], ax=ax, fixed_points=fixed_points,
                   trajectories=result.kappa, title="quadstable: mean field + N = 1,000")
figure
