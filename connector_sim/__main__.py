"""``python -m connector_sim``: the command line (see :mod:`connector_sim.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
