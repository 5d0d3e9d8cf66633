"""``faceverify export-mtcnn [--out models/mtcnn] [--opset 18]``: MTCNN's P/R/O-nets as ONNX, the
torch-free detector (``faceverify.export_mtcnn``); prints the files written."""

from __future__ import annotations

import argparse

from ..export_mtcnn import export_mtcnn
from ..paths import MTCNN_DIR, display_path
from . import run

DESCRIPTION = ("Export MTCNN's P/R/O-nets (facenet-pytorch's weights, MIT) to ONNX for the torch-free detector "
               "(faceverify.mtcnn_onnx). Needs the [train] extra (torch, facenet-pytorch, onnx).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceverify export-mtcnn", description=DESCRIPTION)
    parser.add_argument("--out", default=str(MTCNN_DIR), help="output directory (default: models/mtcnn)")
    parser.add_argument("--opset", type=int, default=18)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run("export-mtcnn", lambda: export(args))


def export(args: argparse.Namespace) -> None:
    for path in export_mtcnn(args.out, args.opset):
        print(f"wrote {display_path(path)} ({path.stat().st_size:,} bytes)")
