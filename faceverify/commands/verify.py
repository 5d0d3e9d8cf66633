"""``faceverify verify a.jpg b.jpg [--model PATH] [--operating-point far_1e-3] [--threshold T]``

prints one JSON object (``similarity``, ``threshold``, ``same_person``, where the threshold came
from, the faces used and timings). Exit status 0 when the comparison was made (whatever the
verdict), 1 when an image was refused (the JSON then holds ``error`` with a stable ``code``), 2 for
usage errors (bad options, missing or broken model): ``faceverify.errors``, ``EXIT_*``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from ..calibration import DEFAULT_OPERATING_POINT, OPERATING_POINTS
from ..detect import DEFAULT_POLICY, SELECTION_POLICIES
from ..runtime import RUNTIMES
from ..embedder import FLIP_MODES
from ..errors import FaceverifyError, InvalidInputError
from ..image import load_image
from ..models import SPEC_HELP
from ..paths import DEFAULT_MODEL_DIR
from ..face_aligner import FaceAligner
from ..threads import apply_threads, latency_threads
from ..verify import Verifier
from . import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faceverify verify", description="Verify whether two photos show the same person; prints one JSON object.")
    p.add_argument("image1")
    p.add_argument("image2")
    p.add_argument("--model", default=None, help=f"{SPEC_HELP} (default: models/default)")
    p.add_argument("--operating-point", default=None, choices=OPERATING_POINTS,
                   help="which calibrated threshold to use (default: the model's, chosen on LFW View 1; "
                        f"{DEFAULT_OPERATING_POINT} when its calibration names none)")
    p.add_argument("--threshold", type=float, default=None, help="override the threshold (cosine similarity)")
    p.add_argument("--policy", default=DEFAULT_POLICY, choices=SELECTION_POLICIES, help="which face when there are several (default: %(default)s)")
    p.add_argument("--flip", default=None, choices=FLIP_MODES, help="flip test-time augmentation (default: the calibration's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="onnxruntime or torch for the network and MTCNN (default auto: onnx when the model directory holds a "
                        "current model.onnx)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="intra-op threads, torch or onnxruntime (default 1, env FACEVERIFY_TORCH_THREADS; docs/service.md, Threads)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run("verify", lambda: verify(args), json_errors=True)


def verify(args: argparse.Namespace) -> None:
    if args.threshold is not None and not np.isfinite(args.threshold):
        raise InvalidInputError("--threshold must be a finite number", field="threshold")
    if args.model is None and not DEFAULT_MODEL_DIR.exists():
        return describe_without_model(args.image1, args.image2, args.policy)
    threads = latency_threads(args.torch_threads)
    verifier = Verifier.from_model(args.model, flip=args.flip, device=args.device, runtime=args.runtime, threads=threads)
    apply_threads(threads)  # torch's, when its runtime was chosen
    result = verifier.verify(args.image1, args.image2, args.threshold, args.operating_point, args.policy)
    result["image1"], result["image2"] = args.image1, args.image2
    print(json.dumps(result))


def describe_without_model(image1: str, image2: str, policy: str) -> None:
    """No trained model ships yet: show what the pipeline sees — the detections and the aligned
    crops (saved as PNGs) it would compare — and say so, instead of inventing a verdict."""
    import tempfile

    from PIL import Image

    aligner = FaceAligner(policy=policy)
    out_dir = Path(tempfile.mkdtemp(prefix="faceverify-crops-"))
    report = {"note": f"no model given and {DEFAULT_MODEL_DIR} does not exist yet: no verdict. Showing the detections "
                      "and aligned crops; pass --model PATH to verify.", "faces": []}
    for i, path in enumerate((image1, image2), 1):
        try:
            aligned = aligner.align(load_image(path))
        except FaceverifyError as exc:
            report["faces"].append({"image": path, "error": {"code": exc.code, "message": exc.message}})
            continue
        crop_path = out_dir / f"image{i}_aligned_{aligner.template}.png"
        Image.fromarray(aligned.crop).save(crop_path)
        report["faces"].append({"image": path, **aligned.to_dict(), "aligned_crop": str(crop_path)})
    print(json.dumps(report))
