"""Same answers from both runtimes: MTCNN and the default model on onnxruntime vs on torch, over the
images of LFW View 1 (pairsDevTrain + pairsDevTest: 3,200 pairs, those whose images the shared copy holds).

For every image: every face MTCNN finds (any probability), matched by rank of score, and the
largest |difference| of their boxes and landmarks in pixels. For every pair: |cos_onnx - cos_torch|.
Goals: detections within 0.5 px, cosine differences within 1e-3.
tests/test_mtcnn_onnx.py runs the same function on a part of pairsDevTest.

    python -m bench.runtime_agreement [--pairs N] [--out FILE.json]
    python -m bench.runtime_agreement --explain Sim_Yong_0001.jpg   # where the runtimes part on one image
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from faceverify.errors import FaceverifyError

MAX_PX = 0.5
MAX_COSINE = 1e-3


def view1_pairs(files=("pairsDevTrain.txt", "pairsDevTest.txt"), n: int | None = None) -> list[tuple[str, str]]:
    """View 1's pairs as image paths; ``n``: that many, half same and half different, spread evenly."""
    from faceverify.evaluation.lfw import read_pairs
    from faceverify.paths import lfw_root

    root = lfw_root() / "images"
    out = []
    for name in files:
        pl = read_pairs(lfw_root() / name)
        idx = np.arange(len(pl.left))
        if n is not None:
            per_file = max(1, n // len(files))
            same, diff = idx[pl.same], idx[~pl.same]
            idx = np.concatenate([same[np.linspace(0, len(same) - 1, per_file // 2).round().astype(int)],
                                  diff[np.linspace(0, len(diff) - 1, per_file - per_file // 2).round().astype(int)]])
        out += [(str(root / pl.left[i]), str(root / pl.right[i])) for i in idx]
    # the shared copy lacks an image or two of View 1 (evaluation skips those pairs too)
    return [(a, b) for a, b in out if Path(a).is_file() and Path(b).is_file()]


def compare_detections(a: list, b: list) -> tuple[bool, float]:
    """(same number of faces, largest box/landmark difference in px) of two runtimes' faces."""
    if len(a) != len(b):
        return False, float("inf")
    worst = 0.0
    for fa, fb in zip(sorted(a, key=lambda f: -f.score), sorted(b, key=lambda f: -f.score)):
        worst = max(worst, float(np.abs(fa.box - fb.box).max()), float(np.abs(fa.landmarks - fb.landmarks).max()))
    return True, worst


def agreement(pairs: list[tuple[str, str]], model=None) -> dict:
    from faceverify.image import load_image
    from faceverify.verify import Verifier

    verifiers = {rt: Verifier.from_model(model, runtime=rt) for rt in ("onnx", "torch")}
    detections: dict[str, tuple[bool, float]] = {}
    cos_diff, refused_differently, pairs_over = [], 0, []
    t0 = time.perf_counter()
    for a, b in pairs:
        images = [load_image(a), load_image(b)]
        for path, image in zip((a, b), images):
            if path not in detections:
                found = {rt: v.aligner.detect(image, min_score=0.0) for rt, v in verifiers.items()}
                detections[path] = compare_detections(found["onnx"], found["torch"])
        results = {rt: v.embed_faces(images) for rt, v in verifiers.items()}
        if any(isinstance(r, FaceverifyError) for rs in results.values() for r in rs):
            refused_differently += any(isinstance(x, FaceverifyError) != isinstance(y, FaceverifyError)
                                       for x, y in zip(results["onnx"], results["torch"]))
            continue
        cosines = {rt: float(rs[0].vector @ rs[1].vector) for rt, rs in results.items()}
        cos_diff.append(abs(cosines["onnx"] - cosines["torch"]))
        if cos_diff[-1] > MAX_COSINE:
            pairs_over.append({"pair": [Path(a).name, Path(b).name], "cosine_diff": round(cos_diff[-1], 6)})
    px = np.array([d for ok, d in detections.values() if ok])
    # the exceptions by name, so each can be looked into (docs/service.md, "Two runtimes")
    images_over = [{"image": Path(path).name, "px": round(d, 3) if ok else "face counts differ"}
                   for path, (ok, d) in detections.items() if not ok or d > MAX_PX]
    return {
        "pairs": len(pairs), "images": len(detections),
        "images_with_different_face_counts": int(sum(not ok for ok, _ in detections.values())),
        "max_detection_diff_px": float(px.max()) if len(px) else 0.0,
        "p99_detection_diff_px": float(np.percentile(px, 99)) if len(px) else 0.0,
        "images_over_goal": images_over,
        "pairs_compared": len(cos_diff), "pairs_refused_differently": refused_differently,
        "pairs_over_goal": pairs_over,
        "max_cosine_diff": float(max(cos_diff)) if cos_diff else 0.0,
        "median_cosine_diff": float(np.median(cos_diff)) if cos_diff else 0.0,
        "goals": {"detections_within_px": MAX_PX, "cosine_within": MAX_COSINE},
        "model": verifiers["onnx"].public_name, "elapsed_s": round(time.perf_counter() - t0, 1),
    }


class _TorchSession:
    """A facenet-pytorch network behind onnxruntime's ``run`` call, so the numpy pipeline can drive it."""

    def __init__(self, net):
        self.net = net

    def run(self, _outputs, feeds: dict) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            return [o.numpy() for o in self.net(torch.from_numpy(feeds["input"]))]


def explain(image_name: str) -> dict:
    """Where the two runtimes part on one image: the numpy pipeline (pyramid, NMS, regression) run
    once with the ONNX networks and once with facenet-pytorch's, the first NMS whose kept set
    differs, and its candidates' scores under both. If the torch networks in the numpy pipeline give
    facenet-pytorch's own boxes, the pipeline is not the cause; the networks' last bits are."""
    from faceverify.detect import FaceDetector, torch_mtcnn_nets
    from faceverify.image import load_image
    from faceverify.mtcnn_onnx import OnnxMTCNN
    from faceverify.paths import lfw_root

    path = next((lfw_root() / "images").rglob(image_name), None)
    if path is None:
        raise FaceverifyError(f"{image_name} is not among the LFW images under {lfw_root() / 'images'}.")
    image = load_image(path)
    detector = FaceDetector(runtime="onnx")
    scales = detector.scales(*image.shape[:2])
    pipelines = {"onnx": OnnxMTCNN(), "torch": OnnxMTCNN(networks=tuple(_TorchSession(n) for n in torch_mtcnn_nets("cpu")))}
    traces, boxes = {}, {}
    for name, pipeline in pipelines.items():  # the same numpy pipeline, each runtime's networks
        traces[name] = []
        found = pipeline.detect(image[None], scales, detector.stage_thresholds, trace=traces[name])
        boxes[name] = found[0][0][:, :4].astype(float).round(2).tolist()
    reference = [f.box.astype(float).round(2).tolist() for f in FaceDetector(runtime="torch").detect(image, min_score=0.0)]
    result = {"image": path.name, "boxes": {**boxes, "facenet_pytorch": reference}, "first_differing_nms": None}
    for k, ((b, s_onnx, kept_onnx), (_, s_torch, kept_torch)) in enumerate(zip(traces["onnx"], traces["torch"])):
        kept = {"onnx": set(kept_onnx.tolist()), "torch": set(kept_torch.tolist())}
        if kept["onnx"] != kept["torch"]:
            order = np.argsort(-s_onnx, kind="stable")
            result["first_differing_nms"] = {"call": k, "candidates": [
                {"index": int(i), "box": b[i].astype(float).round(1).tolist(), "score_onnx": f"{s_onnx[i]:.9f}", "score_torch": f"{s_torch[i]:.9f}",
                 "kept_by": [n for n, ids in kept.items() if i in ids]} for i in order]}
            break
    return result


def met(result: dict) -> bool:
    return (result["images_with_different_face_counts"] == 0 and result["pairs_refused_differently"] == 0
            and result["max_detection_diff_px"] <= MAX_PX and result["max_cosine_diff"] <= MAX_COSINE)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=None, help="a spread subset of this many pairs (default: all 3,200)")
    p.add_argument("--out", default=None)
    p.add_argument("--explain", metavar="IMAGE", help="an LFW file name: where the runtimes part on it")
    args = p.parse_args(argv)
    if args.explain:
        print(json.dumps(explain(args.explain), indent=1))
        return 0
    result = agreement(view1_pairs(n=args.pairs))
    result["met"] = met(result)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
