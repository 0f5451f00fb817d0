"""Command line: ``connector-sim <subcommand>``."""

import argparse
import sys


def _demo(arguments):
    from .demo import run_demo

    run_demo(arguments.out, large_n=arguments.large_n, seed=arguments.seed, backend=arguments.backend)
    return 0


def _backends(arguments):
    from ._backends import available_backends, missing_extensions

    print("available backends:", ", ".join(available_backends()))
    for stem, role in missing_extensions().items():
        print(f"not built: {stem} ({role})")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="connector-sim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="simulate the embedded quadstable network and write a report folder")
    demo.add_argument("--out", default="report", help="report folder (default: report)")
    demo.add_argument("--large-n", type=int, default=1_000_000, help="size of the large sampled network")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--backend", default="auto", choices=["auto", "cpp", "numba", "numpy"])
    demo.set_defaults(run=_demo)
    backends = commands.add_parser("backends", help="list the simulation backends built here")
    backends.set_defaults(run=_backends)
    arguments = parser.parse_args(argv)
    try:
        return arguments.run(arguments)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
