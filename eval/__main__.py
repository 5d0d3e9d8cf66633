"""``python -m eval`` from the repository root: the same command as ``faceverify eval``
(faceverify/evaluation/cli.py)."""

import sys

from faceverify.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
