"""Milliseconds per face of an embedding network on onnxruntime, one thread, batch 1 (the median of
200 runs after 20 warm-ups): the cost column of the distillation ablation and of scripts/student_start.py.

A training run or checkpoint (``model.pt``) is exported to ONNX first (a temporary file); a model
folder with ``model.onnx`` or an ``.onnx`` file is timed as it is. ``--write`` stores the figure
as ``RUN/speed.json``, where ``faceverify eval ablation`` reads it.

    python -m bench.onnx_face_speed RUN [RUN ...] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def ms_per_face(onnx_file: str | Path, size: tuple[int, int] | None = None, runs: int = 200) -> tuple[float, tuple[int, int]]:
    """(median ms per face, the (H, W) timed): ``size`` defaults to the graph's own input size."""
    import onnxruntime as ort

    from faceverify.runtime import session_options

    session = ort.InferenceSession(str(onnx_file), session_options(1), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    size = tuple(size or feed.shape[2:4])
    x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    for _ in range(20):
        session.run(None, {feed.name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {feed.name: x})
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)), size


def measure(model: str | Path, runs: int = 200) -> dict:
    """{"ms_per_face", "input"} of a run, checkpoint, model folder or ONNX file."""
    path = Path(model)
    onnx_file = path if path.suffix == ".onnx" else path / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        if not onnx_file.is_file():
            from faceverify.checkpoint import load_backbone
            from faceverify.export import export_onnx

            net, info = load_backbone(path)
            onnx_file = export_onnx(net, Path(tmp) / "model.onnx", info.input_size)
        ms, size = ms_per_face(onnx_file, runs=runs)
    return {"ms_per_face": round(ms, 2), "input": f"{size[0]}x{size[1]}"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="training runs, checkpoints, model folders or .onnx files")
    p.add_argument("--write", action="store_true", help="store each run's figure as RUN/speed.json")
    args = p.parse_args(argv)
    for model in args.models:
        result = {"model": str(model), **measure(model), "runtime": "onnxruntime, 1 thread, batch 1",
                  "command": "python -m bench.onnx_face_speed " + str(model)}
        print(json.dumps(result))
        if args.write:
            (Path(model) / "speed.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
