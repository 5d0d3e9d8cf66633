"""``python -m eval`` from the repository root: the same command as ``faceverify eval``
(faceverify/commands/eval.py)."""

import sys

from faceverify.commands.eval import main

if __name__ == "__main__":
    sys.exit(main())
