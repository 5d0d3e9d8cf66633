"""``faceverify train``: train an identity model from a YAML recipe.

    faceverify train --config train/configs/smoke.yaml --out runs/smoke [--resume] [--set key=value ...]
    python -m train --config ... --out ...
    torchrun --nproc_per_node=2 -m train --config ... --out ...     (DDP: gloo on CPU, NCCL on GPUs)

The run itself is :func:`faceverify.training.loop.train`; this module only reads the command line.
"""

from __future__ import annotations

import argparse

from ..training.config import load_config
from ..training.loop import train
from . import run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceverify train", description="Train an identity model from a YAML recipe.")
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. train/configs/smoke.yaml")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, metrics, model.pt)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt at its step")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.steps=100 (value parsed as YAML); repeatable")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run("train", lambda: train_run(args))


def train_run(args: argparse.Namespace) -> None:
    train(load_config(args.config, args.overrides), args.out, resume=args.resume)  # its summary is in OUT
