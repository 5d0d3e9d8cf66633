"""``faceverify train``: train an identity model from a YAML recipe.

    faceverify train --config train/configs/smoke.yaml --out runs/smoke [--resume] [--set key=value ...]
    python -m train --config ... --out ...
    torchrun --nproc_per_node=2 -m train --config ... --out ...     (DDP: gloo on CPU, NCCL on GPUs)

The run itself is :func:`faceverify.training.loop.train`; this module only reads the command line.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import FaceverifyError, exit_status
from .config import load_config
from .loop import train


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="faceverify train", description="Train an identity model from a YAML recipe.")
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. train/configs/smoke.yaml")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, metrics, model.pt)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt at its step")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.steps=100 (value parsed as YAML); repeatable")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(load_config(args.config, args.overrides), args.out, resume=args.resume)
    except FaceverifyError as exc:
        print(f"faceverify train: error: {exc.message}", file=sys.stderr)
        return exit_status(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
