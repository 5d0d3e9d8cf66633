"""Export MTCNN's P/R/O-nets (facenet-pytorch's weights, MIT) to ONNX for the torch-free detector
(``faceverify.mtcnn_onnx``). Batch dynamic everywhere; P-net also dynamic in height and width (it
runs on every level of the image pyramid). Needs the ``[train]`` extra (torch, facenet-pytorch, onnx).

    faceverify export-mtcnn [--out models/mtcnn] [--opset 18]     (faceverify/commands/export_mtcnn.py)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .mtcnn_onnx import NET_FILES
from .paths import MTCNN_DIR

# name -> (example input shape, outputs, dynamic dimensions of the input)
NETS = {
    "pnet": ((2, 3, 24, 30), ("reg", "prob"), ("batch", "height", "width")),
    "rnet": ((2, 3, 24, 24), ("reg", "prob"), ("batch",)),
    "onet": ((2, 3, 48, 48), ("reg", "landmarks", "prob"), ("batch",)),
}


def _nets():
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        raise ConfigError("exporting MTCNN needs torch and facenet-pytorch: pip install 'faceverify[train]'.") from exc
    mtcnn = MTCNN(device="cpu")
    return {"pnet": mtcnn.pnet.eval(), "rnet": mtcnn.rnet.eval(), "onet": mtcnn.onet.eval()}


def export_mtcnn(out: str | Path = MTCNN_DIR, opset: int = 18) -> list[Path]:
    """Write pnet.onnx, rnet.onnx and onet.onnx to ``out``; each is checked against torch on two
    input shapes (a ConfigError if they differ by more than 1e-4)."""
    import onnx
    import onnxruntime as ort
    import torch

    from .export import strip_debug_info

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (name, net), file in zip(_nets().items(), NET_FILES):
        shape, outputs, dynamic = NETS[name]
        dims = {0: torch.export.Dim("batch", min=1, max=65536)}
        if "height" in dynamic:
            dims.update({2: torch.export.Dim("height", min=12, max=16384), 3: torch.export.Dim("width", min=12, max=16384)})
        path = out / file
        example = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), str(path), input_names=["input"], output_names=list(outputs), opset_version=opset,
                              dynamo=True, external_data=False, dynamic_shapes=(dims,), verbose=False)
        onnx.save(strip_debug_info(onnx.load(str(path))), str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        checks = [(1, 3, 37, 51), (3, 3, 12, 12)] if "height" in dynamic else [(1, *shape[1:]), (5, *shape[1:])]
        for check in checks:
            x = torch.randn(*check, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                ref = [t.numpy() for t in net(x)]
            got = session.run(None, {"input": x.numpy()})
            worst = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
            if worst > 1e-4:
                raise ConfigError(f"{path}: onnxruntime differs from torch by {worst:.2e} on input {check}.")
        written.append(path)
    return written

