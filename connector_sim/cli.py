"""Command line: ``connector-sim <subcommand>``."""

import argparse
import sys


def _demo(arguments):
    from .demo import run_demo

    from .pipeline import run_connector_pipeline

    if not arguments.skip_simulation:
        run_demo(arguments.out, large_n=1000 if arguments.quick else arguments.large_n, seed=arguments.seed,
                 backend=arguments.backend)
    run_connector_pipeline(arguments.out, quick=arguments.quick, seed=arguments.seed)
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
    demo = commands.add_parser("demo", help="the embedded quadstable network: large-N simulation, then LINT -> Connector pipeline; writes a report folder")
    demo.add_argument("--out", default="report", help="report folder (default: report)")
    demo.add_argument("--large-n", type=int, default=1_000_000, help="size of the large sampled network")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--backend", default="auto", choices=["auto", "cpp", "numba", "numpy"])
    demo.add_argument("--quick", action="store_true", help="small sizes and few epochs (under two minutes)")
    demo.add_argument("--skip-simulation", action="store_true",
                      help="only the Connector pipeline, not the large-N simulation report")
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
