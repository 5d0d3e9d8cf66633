"""``python -m serve`` from the repository root: the same command as ``faceverify serve``
(faceverify/service/cli.py)."""

import sys

from faceverify.service.cli import main

if __name__ == "__main__":
    sys.exit(main())
