"""Benchmarks of dynamic compression flows (connector_sim/inference/compression.py) and their baselines.

Data: the stochastic Van der Pol oscillator (rho = 2, tau = 15) embedded into
D dimensions by a random tanh map plus noise
(:func:`connector_sim.compression_data.van_der_pol_dataset`), 32 trials x 100
bins, built in ``setup`` from fixed seeds. Timed: one training epoch of
:class:`~connector_sim.inference.DynamicCompressionFlow` (the widths of the
paper, 256 / 512, depth 4; batch 256), ``transform`` of all frames, a
20-step ``generate``, and a PCA + LDS fit for scale. ``track_`` methods
report the R^2 of the latents after a 20-epoch fit, so a speed-up that
breaks the fit shows in the same table. CPU, one thread, CPU time.
"""

import time

import numpy as np

from connector_sim.compression_data import van_der_pol_dataset

SEED = 0
N_TRIALS, N_TIMES = 32, 100


def _estimator(**params):
    import torch

    from connector_sim.inference import DynamicCompressionFlow

    torch.set_num_threads(1)
    defaults = dict(k_max=4, k_target=2, n_epochs=1, n_components=2, device="cpu", random_state=SEED,
                    solver="midpoint", n_solver_steps=10)
    defaults.update(params)
    return DynamicCompressionFlow(**defaults)


class TimeCompression:
    params = [[50, 200, 1000]]
    param_names = ["n_features"]
    timer = time.process_time
    timeout = 600
    number = 1
    repeat = 3

    def setup(self, n_features):
        self.data = van_der_pol_dataset(n_trials=N_TRIALS, n_times=N_TIMES, n_features=n_features,
                                        random_state=SEED)
        self.fitted = _estimator().fit(self.data.X)

    def time_fit_one_epoch(self, n_features):
        _estimator().fit(self.data.X)

    def time_transform(self, n_features):
        self.fitted.transform(self.data.X)

    def time_generate_20_steps(self, n_features):
        self.fitted.generate(20, x0=self.data.X[:, 0])

    def time_pca_lds_fit(self, n_features):
        from connector_sim.inference.compression_compare import LinearDynamicsCompression

        LinearDynamicsCompression(2, k_max=4).fit(self.data.X)


class TrackCompressionAccuracy:
    params = [[100]]
    param_names = ["n_features"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, n_features):
        from connector_sim.inference.compression_compare import PCACompression

        data = van_der_pol_dataset(n_trials=N_TRIALS, n_times=N_TIMES, n_features=n_features, random_state=SEED)
        self.data = data
        self.dcf = _estimator(n_epochs=20).fit(data.X)
        self.pca = PCACompression(2, k_max=4).fit(data.X)

    def _r2(self, Z):
        from connector_sim.latents import align_latents

        valid = np.all(np.isfinite(Z), axis=-1)
        return align_latents(Z[valid], self.data.latents[valid], affine=True).r2

    def track_dcf_latent_r2(self, n_features):
        return self._r2(self.dcf.transform(self.data.X))

    def track_pca_latent_r2(self, n_features):
        return self._r2(self.pca.transform(self.data.X))
