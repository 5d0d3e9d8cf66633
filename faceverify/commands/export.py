"""``faceverify export MODEL (.pt or dir) OUT.onnx|OUT.ts [--opset 18] [--check]``: a trained
backbone as ONNX (dynamic batch, with faceverify's metadata) or TorchScript (``faceverify.export``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import load_backbone
from ..errors import ConfigError
from ..export import check_onnx, export_onnx, export_torchscript, onnx_metadata
from . import run

TORCHSCRIPT_SUFFIXES = (".ts", ".pt", ".jit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceverify export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint .pt or a model directory holding model.pt")
    parser.add_argument("out", help="output file: .onnx for ONNX, .ts / .pt / .jit for TorchScript")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with torch at batch 1 and 3")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run("export", lambda: export(args))


def export(args: argparse.Namespace) -> None:
    model, info = load_backbone(args.model)
    out = Path(args.out)
    if out.suffix == ".onnx":
        export_onnx(model, out, info.input_size, args.opset, onnx_metadata(info))
        if args.check:
            print(f"max |onnxruntime - torch| = {check_onnx(model, out, info.input_size):.2e}")
    elif out.suffix in TORCHSCRIPT_SUFFIXES:
        export_torchscript(model, out, info.input_size)
    else:
        raise ConfigError(f"unknown export format for {out}; use .onnx or .ts")
    print(f"wrote {out} ({info.name}, input {info.input_size[0]}x{info.input_size[1]}, embedding {info.embedding_dim})")
