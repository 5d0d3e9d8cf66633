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
import sys
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("size", type=int)
    p.add_argument("out", type=Path)
    p.add_argument("--teacher", default="arcface-mbf")
    args = p.parse_args()
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ of this checkout
    from bench.onnx_face_speed import ms_per_face
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
    print(json.dumps({"out": str(args.out), "ms_per_face": {f"start {args.size}x{args.size}": round(ms_per_face(args.out / "model.onnx")[0], 2),
                                                             f"{args.teacher} 112x112": round(ms_per_face(ref.weights, (112, 112))[0], 2)}}))


if __name__ == "__main__":
    main()
