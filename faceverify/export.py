"""Export a trained backbone (the embedder's network) to TorchScript or ONNX, batch size dynamic.

Input: ``input`` (N, 3, H, W) float32 crops normalised by ``faceverify.transforms.crops_to_tensor``;
output: ``embedding`` (N, D) float32 (not L2-normalised). The ONNX file carries metadata
``faceverify.template``, ``faceverify.backbone`` and ``faceverify.embedding_dim`` (read by
``faceverify.embedder.OnnxEmbedder``).

    faceverify export MODEL (.pt or dir) OUT.onnx|OUT.ts [--opset 18] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import ModelInfo, load_backbone
from .errors import ConfigError, FaceverifyError, exit_status


def _example(input_size: tuple[int, int], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *input_size, generator=torch.Generator().manual_seed(0))


def export_torchscript(model: nn.Module, path: str | os.PathLike, input_size: tuple[int, int] = (112, 96)) -> Path:
    """Trace ``model`` (eval mode) and save a TorchScript file; loads with ``torch.jit.load``.
    (TorchScript is deprecated upstream in favour of torch.export; it is kept for C++/mobile users.)"""
    path = Path(path)
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.freeze(torch.jit.trace(model, _example(input_size), check_trace=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def export_onnx(model: nn.Module, path: str | os.PathLike, input_size: tuple[int, int] = (112, 96), opset: int = 18,
                metadata: dict[str, str] | None = None) -> Path:
    """Export ``model`` to a single ONNX file whose batch dimension is dynamic."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        torch.onnx.export(model, (_example(input_size),), str(path), input_names=["input"], output_names=["embedding"],
                          opset_version=opset, dynamo=True, external_data=False, dynamic_shapes=({0: batch},),
                          verbose=False)
    proto = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def onnx_metadata(info: ModelInfo) -> dict[str, str]:
    from .models import file_sha256

    # source_sha256: the checkpoint it was exported from (a model directory's model.onnx is only
    # served in place of its model.pt while the two match; faceverify.verify.runtime_model)
    return {"faceverify.template": info.template, "faceverify.backbone": info.name,
            "faceverify.embedding_dim": str(info.embedding_dim), "faceverify.kwargs": json.dumps(info.kwargs),
            "faceverify.source_sha256": file_sha256(Path(info.path))}


def check_onnx(model: nn.Module, path: str | os.PathLike, input_size: tuple[int, int], batches=(1, 3)) -> float:
    """Largest |onnxruntime - torch| over a few batch sizes (raises if the batch is not dynamic)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in batches:
        x = _example(input_size, n)
        with torch.no_grad():
            ref = model.eval()(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faceverify export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint .pt or a model directory holding model.pt")
    parser.add_argument("out", help="output file: .onnx for ONNX, .ts / .pt / .jit for TorchScript")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with torch at batch 1 and 3")
    args = parser.parse_args(argv)
    try:
        model, info = load_backbone(args.model)
        out = Path(args.out)
        if out.suffix == ".onnx":
            export_onnx(model, out, info.input_size, args.opset, onnx_metadata(info))
            if args.check:
                print(f"max |onnxruntime - torch| = {check_onnx(model, out, info.input_size):.2e}")
        elif out.suffix in (".ts", ".pt", ".jit"):
            export_torchscript(model, out, info.input_size)
        else:
            raise ConfigError(f"unknown export format for {out}; use .onnx or .ts")
    except FaceverifyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exit_status(exc)
    print(f"wrote {out} ({info.name}, input {info.input_size[0]}x{info.input_size[1]}, embedding {info.embedding_dim})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
