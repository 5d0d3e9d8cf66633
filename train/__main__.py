"""``python -m train`` / ``torchrun -m train`` from the repository root: the same command as
``faceverify train`` (faceverify/commands/train.py; the loop is faceverify/training/loop.py)."""

import sys

from faceverify.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
