"""
Silencing a cell type
=====================

Silencing a cell type removes its term from the mean-field flow (theory
section 2). Here each of the four cell types of the quadstable network is
silenced in turn: the flow field changes and attractors disappear.
"""

from matplotlib.figure import Figure

import connector_sim as cs
from connector_sim.synthetic import quadstable_mixture

distribution = quadstable_mixture()
box = [[-2.5, 2.5], [-2.5, 2.5]]
figure = Figure(figsize=(10, 2.8))
for k in range(4):
    flow = cs.perturbed_flow(distribution, cs.Perturbation(cell_types=[k], name=f"silence type {k}"))
    points = cs.find_fixed_points(flow, box, random_state=0)
    stable = sum(point.stability.startswith("stable") for point in points)
    print(f"type {k} silenced: {stable} stable fixed points")
    ax = figure.add_subplot(1, 4, k + 1)
    cs.plot_flow_field(flow, box, ax=ax, fixed_points=points, colorbar=False, resolution=25,
                       title=f"type {k} silenced")
figure
