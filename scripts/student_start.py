"""The student's starting point (``model.init_from``) as a servable model, and its cost.

Rebuilds ONNX teacher NAME in PyTorch at SIZE x SIZE (``faceverify.backbones.onnx_graph``: the
fully connected layer resampled to the smaller feature map), exports it with a card to OUT (a model
folder: ``faceverify eval lfw-view1 --model OUT`` measures it untrained), and prints the median
milliseconds per face of it and of the teacher on onnxruntime with one thread.

    python scripts/student_start.py 80 runs/mbf80_start [--teacher arcface-mbf]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def ms_per_face(onnx_file: Path, size: int, runs: int = 200) -> float:
    from faceverify.runtime import session_options
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), session_options(1), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    for _ in range(20):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("size", type=int)
    p.add_argument("out", type=Path)
    p.add_argument("--teacher", default="arcface-mbf")
    args = p.parse_args()
    import torch

    from faceverify.backbones.onnx_graph import OnnxGraphNet, graph_from_model, load_onnx_weights
    from faceverify.models import resolve_model

    ref = resolve_model(args.teacher)
    net = OnnxGraphNet(graph_from_model(ref), int(ref.manifest()["embedding_dim"]), (args.size, args.size)).eval()
    load_onnx_weights(net, str(ref.weights))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, torch.zeros(1, 3, args.size, args.size), str(args.out / "model.onnx"), input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "n"}, "embedding": {0: "n"}}, dynamo=False)
    card = {"model": f"{args.teacher}-{args.size}-start", "embedder": "onnx", "embedding_dim": net.feature_dim, "metric": "cosine",
            "description": f"{args.teacher} rebuilt at {args.size}x{args.size}, untrained (scripts/student_start.py)",
            "input": {"template": f"{args.size}x{args.size}", "colour": "RGB", "mean": 127.5, "std": 128.0},
            "evaluation": {"flip": "none", "metric": "cosine", "center": False}}
    (args.out / "MODEL.json").write_text(json.dumps(card, indent=1))
    print(json.dumps({"out": str(args.out), "ms_per_face": {f"start {args.size}x{args.size}": round(ms_per_face(args.out / "model.onnx", args.size), 2),
                                                             f"{args.teacher} 112x112": round(ms_per_face(ref.weights, 112), 2)}}))


if __name__ == "__main__":
    main()
