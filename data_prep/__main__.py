"""``python -m data_prep`` from the repository root: the same command as ``faceverify prep``
(faceverify/commands/prep.py)."""

import sys

from faceverify.commands.prep import main

if __name__ == "__main__":
    sys.exit(main())
