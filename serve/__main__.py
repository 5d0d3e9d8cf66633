"""``python -m serve`` from the repository root: the same command as ``faceverify serve``
(faceverify/commands/serve.py)."""

import sys

from faceverify.commands.serve import main

if __name__ == "__main__":
    sys.exit(main())
