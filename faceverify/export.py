"""Export a trained backbone (the embedder's network) to TorchScript or ONNX, batch size dynamic.

Input: ``input`` (N, 3, H, W) float32 crops normalised by ``faceverify.transforms.crops_to_tensor``;
output: ``embedding`` (N, D) float32 (not L2-normalised). The ONNX file carries metadata
``faceverify.template``, ``faceverify.backbone`` and ``faceverify.embedding_dim`` (read by
``faceverify.loaders.OnnxEmbedder``). The command is ``faceverify export`` (``faceverify.commands.export``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import ModelInfo


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
    proto = strip_debug_info(onnx.load(str(path)))
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def strip_debug_info(proto):
    """The graph without the exporter's per-node debug records (stack traces and FX names, which
    name the exporting machine's paths): the shipped file is the same wherever it was exported."""
    for node in proto.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    proto.graph.doc_string = ""
    return proto


def onnx_metadata(info: ModelInfo) -> dict[str, str]:
    from .models import file_digest

    # source_sha256: the checkpoint it was exported from (a model directory's model.onnx is only
    # served in place of its model.pt while the two match; faceverify.verify.runtime_model)
    return {"faceverify.template": info.template, "faceverify.backbone": info.name,
            "faceverify.embedding_dim": str(info.embedding_dim), "faceverify.kwargs": json.dumps(info.kwargs),
            "faceverify.source_sha256": file_digest(Path(info.path))}


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
