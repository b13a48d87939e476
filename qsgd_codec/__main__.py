"""``python -m qsgd_codec``: the command line (see :mod:`qsgd_codec.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
