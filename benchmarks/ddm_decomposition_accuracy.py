"""Accuracy and cost of connector_sim.ddm's Fokker-Planck decomposition against closed forms.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/ddm_decomposition_accuracy.py

Prints, per grid size, the L1 error of the stationary density against the exact
one, the entropy production against its closed form, the largest irreversible
drift of gradient systems, and the solve time.
"""

import time

import numpy as np

from connector_sim import ddm
from connector_sim.ddm.decomposition import _mesh


def _l1(hh, sde):
    exact = sde.exact["stationary_density"](_mesh(hh.grid).reshape(hh.density.shape + (-1,)))
    return float(np.abs(hh.density - exact).sum() * hh.cell_volume)


def main():
    print("system                     cells    L1(p)      e_p        e_p exact  max|f_irr| (p>1e-3)  solve s")
    s = ddm.double_well()
    for n in (50, 100, 200, 400):
        t = time.perf_counter()
        hh = ddm.helmholtz_hodge(s, ddm.make_grid([(-3, 3)], n))
        el = time.perf_counter() - t
        core = hh.density > 1e-3 * hh.density.max()
        print(f"double_well                {n:6d}  {_l1(hh, s):9.2e}  {hh.entropy_production:9.2e}  {0:9.3f}  "
              f"{np.abs(hh.irreversible[core]).max():9.2e}            {el:.3f}")
    g_mw = ddm.multi_well()
    fine = ddm.make_grid([(-3, 3)] * 2, 600)
    Z = _mesh(fine)
    grad2 = (g_mw.drift(Z.reshape(-1, 2)) ** 2).sum(-1).reshape(Z.shape[:2])
    ep_level = float(np.sum(grad2 * g_mw.exact["stationary_density"](Z)) * (fine[0][1] - fine[0][0]) ** 2 / 0.125)
    for label, s, ep in (("multi_well (gradient)", g_mw, 0.0),
                         ("multi_well (level set 1)", ddm.multi_well(rotation=1.0, rotation_field="level_set"),
                          ep_level)):
        for n in (40, 80, 160):
            t = time.perf_counter()
            hh = ddm.helmholtz_hodge(s, ddm.make_grid([(-2.2, 2.2)] * 2, n))
            el = time.perf_counter() - t
            core = hh.density > 1e-3 * hh.density.max()
            firr = np.abs(hh.irreversible[core]).max() if ep == 0 else float("nan")
            print(f"{label:26s} {n:4d}^2  {_l1(hh, s):9.2e}  {hh.entropy_production:9.3e}  {ep:9.3f}  {firr:9.2e}"
                  f"            {el:.3f}")
    for label, s, box in (("OU rotation 1", ddm.ornstein_uhlenbeck(), 5.0),
                          ("OU general A, G", ddm.ornstein_uhlenbeck(np.array([[-1.0, 2.0], [-0.5, -2.0]]),
                                                                     np.array([[1.0, 0.0], [0.6, 0.8]])), 4.0)):
        for n in (40, 80, 160):
            t = time.perf_counter()
            hh = ddm.helmholtz_hodge(s, ddm.make_grid([(-box, box)] * 2, n))
            el = time.perf_counter() - t
            print(f"{label:26s} {n:4d}^2  {_l1(hh, s):9.2e}  {hh.entropy_production:9.4f}  "
                  f"{s.exact['entropy_production']:9.4f}  {'':9s}            {el:.3f}")
    s = ddm.multi_well(rotation=0.8)
    for n in (60, 100, 140):
        hh = ddm.helmholtz_hodge(s, ddm.make_grid([(-2.2, 2.2)] * 2, n))
        print(f"cycling rate FP {n}^2: {ddm.cycling_rate(hh):.5f} turns / time unit")
    t = time.perf_counter()
    z = ddm.euler_maruyama(s, [1.0, 0.0], 10000, 0.01, n_trials=64, seed=5)
    el = time.perf_counter() - t
    th = np.unwrap(np.arctan2(z[..., 1], z[..., 0]), axis=1)
    r = (th[:, -1] - th[:, 0]) / (2 * np.pi * 100.0)
    print(f"cycling rate EM (64 x 100 time units): {r.mean():.5f} +- {r.std(ddof=1) / 8:.5f}; "
          f"EM took {el:.2f} s ({el / 10000 * 1e6:.0f} us per step of 64 trials)")
    s = ddm.ornstein_uhlenbeck()
    z = ddm.euler_maruyama(s, [0.0, 0.0], 12000, 0.005, n_trials=16, seed=7)[:, 1000:]
    rate, per = ddm.entropy_production_from_paths(s, z, 0.005)
    print(f"OU e_p from paths: {rate:.3f} +- {per.std(ddof=1) / 4:.3f} (exact 2)")
    t = time.perf_counter()
    lam = ddm.largest_lyapunov_exponent(ddm.lorenz(), np.array([[1.0, 1.0, 20.0]]) + 0.3 * np.arange(8)[:, None],
                                        100.0, dt=0.01)
    print(f"Lorenz largest Lyapunov exponent: {lam.mean():.4f} +- {lam.std(ddof=1) / np.sqrt(8):.4f} "
          f"(reference 0.9056), {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
