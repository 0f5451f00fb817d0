"""connector_sim side by side with what a user would write instead (NumPy, SciPy, torch).

One topic per kernel family, each in its own module ``compare_<topic>.py``
with a ``main(argv)``; every topic runs single-threaded and prints medians,
ratios and PASS/FAIL against the project's speed targets.

    python benchmarks/compare.py                          # every topic, full runs
    python benchmarks/compare.py --quick                  # every topic, short runs
    python benchmarks/compare.py simulate_dense [--quick] [--json out.json]
    python benchmarks/compare.py flow_field [--quick]
    python benchmarks/compare.py sparse [--quick]
    python benchmarks/compare.py public_paths [--quick]
    python benchmarks/compare.py isa [--quick]           # each AVX-512/AVX2/default clone against its limit
"""

import os

# One thread everywhere, set before numpy / torch / numba load their thread pools.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"

import importlib  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

#: topic -> module in this folder
TOPICS = {
    "simulate_dense": "compare_simulate_dense",
    "flow_field": "compare_flow_field",
    "sparse": "compare_sparse",
    # Public paths against their kernels: latent_velocity dtype, short simulate calls, auto choices.
    "public_paths": "compare_public_paths",
    "isa": "compare_isa",
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if argv and not argv[0].startswith("-"):
        topic = argv.pop(0)
        if topic not in TOPICS:
            raise SystemExit(f"unknown topic {topic!r}: expected one of {sorted(TOPICS)}")
        topics = [topic]
    else:
        topics = list(TOPICS)
    for topic in topics:
        try:
            module = importlib.import_module(TOPICS[topic])
        except ModuleNotFoundError as error:
            if error.name != TOPICS[topic]:
                raise
            print(f"== {topic}: no {TOPICS[topic]}.py yet, skipped\n")
            continue
        print(f"== {topic}")
        module.main([arg for arg in argv if len(topics) == 1 or arg == "--quick"])
        print()


if __name__ == "__main__":
    main()
