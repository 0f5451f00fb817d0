"""The dynamic-compression comparison on every synthetic dataset: one Markdown table (where DCF wins, where not).

Runs :func:`connector_sim.inference.compression_compare.compare_compression`
(PCA, PCA + LDS, LINT, DCF at the ground truth's dimension) on each dataset
of :data:`connector_sim.compression_data.DATASETS` and writes
``compression_table.md`` and ``.json``::

    python benchmarks/compression_table.py --out compression_table --seeds 5 --epochs 200
    python benchmarks/compression_table.py --datasets van_der_pol lorenz --seeds 2 --epochs 60 --small

``--small`` uses the report's DCF widths (128 / 128, depth 3, midpoint solver)
instead of the paper's (256 / 512, depth 4, dopri5): about 8x cheaper per
epoch on a CPU. One thread; progress on stderr.
"""

import argparse
import sys
import time

from connector_sim.compression_data import DATASETS, make_dataset
from connector_sim.inference.compression_compare import compare_compression, comparison_markdown, write_comparison


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="compression_table", help="output prefix (.md and .json)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=["pca", "pca_lds", "lint", "dcf"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=200, help="DCF epochs")
    parser.add_argument("--lint-epochs", type=int, default=30)
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--n-times", type=int, default=150)
    parser.add_argument("--n-features", type=int, default=100, help="D of the SDE datasets (lrRNNs: N = 1000)")
    parser.add_argument("--small", action="store_true", help="the report's smaller DCF networks")
    parser.add_argument("--device", default="auto")
    arguments = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    dcf = {"n_epochs": arguments.epochs, "device": arguments.device}
    if arguments.small:
        dcf.update(compression_width=128, dynamics_width=128, depth=3, solver="midpoint")
    rows = []
    started = time.perf_counter()
    for name in arguments.datasets:
        size = {"n_neurons": 1000} if name.startswith("lrrnn") else {"n_features": arguments.n_features}
        data = make_dataset(name, n_trials=arguments.trials, n_times=arguments.n_times, **size)
        rows += compare_compression(data, methods=arguments.methods, n_seeds=arguments.seeds,
                                    k_max=min(8, data.n_features), lint_params={"n_epochs": arguments.lint_epochs},
                                    dcf_params=dcf,
                                    progress=lambda m: print(f"[{time.perf_counter() - started:.0f} s] {m}",
                                                             file=sys.stderr, flush=True))
        write_comparison(rows, arguments.out, title="Dynamic compression: every synthetic dataset")
    print(comparison_markdown(rows))
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
