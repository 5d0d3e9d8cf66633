"""``python -m data_prep`` from the repository root: the same command as ``faceverify prep``
(faceverify/prep_cli.py)."""

import sys

from faceverify.prep_cli import main

if __name__ == "__main__":
    sys.exit(main())
