"""Verification: two photos -> faces -> embeddings -> cosine similarity -> verdict against the
model's calibrated threshold. One ``Verifier`` serves the REST service and the CLI::

    faceverify verify a.jpg b.jpg [--model PATH] [--operating-point far_1e-3] [--threshold T]

prints one JSON object (``similarity``, ``threshold``, ``same_person``, where the threshold came
from, the faces used and timings). Exit status 0 when the comparison was made (whatever the
verdict), 1 when an image was refused (the JSON then holds ``error`` with a stable ``code``), 2 for
usage errors (bad options, missing or broken model): ``faceverify.errors``, ``EXIT_*``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .detect import SELECTION_POLICIES
from .embedder import Embedder, load_embedder
from .errors import EXIT_OK, EXIT_USAGE, ConfigError, FaceverifyError, InvalidInputError, UnknownOperatingPointError, UnsupportedImageError, exit_status
from .image import DEFAULT_MAX_PIXELS, load_image
from .models import CALIBRATION_FILE, ModelRef, resolve_model
from .paths import DEFAULT_MODEL_DIR
from .pipeline import AlignedFace, FaceAligner

log = logging.getLogger(__name__)

OPERATING_POINTS = ("far_1e-2", "far_1e-3", "far_1e-4", "best_accuracy")
DEFAULT_OPERATING_POINT = "far_1e-3"
# Used only when a model has no calibration.json: a cosine threshold with no statistical meaning,
# reported as source "uncalibrated_default" so nobody mistakes it for a calibrated one.
UNCALIBRATED_THRESHOLD = 0.5
DEFAULT_POLICY = "largest_central"


# ---------------------------------------------------------------------------------------------
# model files and calibration


def default_model_path() -> Path:
    return DEFAULT_MODEL_DIR


def model_fingerprint(model: str | Path | ModelRef, flip: str = "none", sha256: str | None = None) -> str:
    """sha256 of the weights file (+ flip mode): galleries refuse embeddings of another model."""
    return f"{(sha256 or resolve_model(model).sha256())[:16]}:flip={flip}"


def model_id(model: str | Path) -> str:
    """A model's name without where it lives: the directory's name for a model directory or its
    ``model.pt``/``model.onnx``, else the file's stem (``models/default/model.pt`` -> ``default``)."""
    path = Path(model)
    if path.suffix in (".pt", ".onnx", ".pth"):
        return path.parent.name if path.stem == "model" and path.parent.name else path.stem
    return path.name or "model"


@dataclass
class Calibration:
    """Thresholds on the cosine similarity (``calibration.json`` beside the model file,
    written by ``faceverify eval lfw``). Accept when similarity > threshold."""

    thresholds: dict[str, float] = field(default_factory=dict)
    metric: str = "cosine"
    flip: str | None = None
    path: Path | None = None
    default: str | None = None  # the operating point chosen on View 1 (``default_operating_point``)

    @classmethod
    def for_model(cls, model: str | Path | ModelRef) -> "Calibration":
        path = resolve_model(model).calibration_file
        if not path.is_file():
            log.warning("model %s has no %s: verdicts use the uncalibrated default threshold %.2f",
                        model, CALIBRATION_FILE, UNCALIBRATED_THRESHOLD)
            return cls()
        try:
            data = json.loads(path.read_text())
            thresholds = {str(k): float(v) for k, v in data["thresholds"].items() if v is not None}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: not a valid calibration file ({exc}); expected "
                              '{"metric": "cosine", "thresholds": {"far_1e-3": t, ...}}.') from exc
        if data.get("metric", "cosine") != "cosine":
            raise ConfigError(f"{path}: metric {data.get('metric')!r} is not supported (the service compares cosine similarities).")
        if not all(np.isfinite(v) for v in thresholds.values()):
            raise ConfigError(f"{path}: thresholds must be finite numbers.")
        default = data.get("default_operating_point")
        if default is not None and default not in thresholds:
            raise ConfigError(f"{path}: default_operating_point {default!r} has no threshold in the file.")
        return cls(thresholds, "cosine", data.get("flip"), path, default)


@dataclass
class ThresholdChoice:
    value: float
    source: str  # "calibration" | "request" | "uncalibrated_default"
    operating_point: str | None = None
    file: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "operating_point": self.operating_point, "file": self.file}


# ---------------------------------------------------------------------------------------------
# faces and verdicts


@dataclass
class FaceResult:
    """One image's chosen face: its normalised embedding and how it was found and aligned."""

    vector: np.ndarray  # (dim,) float32, L2-normalised
    aligned: AlignedFace

    def to_dict(self, include_crop: bool = False) -> dict:
        out = {k: _round(v) for k, v in self.aligned.to_dict().items()}
        if include_crop:
            out["crop_png"] = crop_to_png_base64(self.aligned.crop)
        return out


def _round(value):
    """float32 lists -> float64 rounded to 0.01 px (no float32 noise like 49.08000183105469)."""
    if isinstance(value, list):
        return np.round(np.asarray(value, dtype=np.float64), 2).tolist()
    if isinstance(value, float):
        return round(value, 5)
    return value


def crop_to_png_base64(crop: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(crop)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """cos(a, b) of L2-normalised vectors, clipped to [-1, 1]."""
    return float(np.clip(np.dot(a, b), -1.0, 1.0))


def as_rgb(image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A path or the file's bytes decoded (``load_image``), or an HxWx3 uint8 RGB array as it is."""
    if not isinstance(image, np.ndarray):
        return load_image(image, max_pixels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UnsupportedImageError(f"an image array must be HxWx3 uint8 RGB, not {image.shape} {image.dtype}; "
                                    "pass the file's path or bytes to have it decoded.", shape=list(image.shape))
    return image


def _normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class Verifier:
    """Detect -> choose a face (policy) -> align -> embed -> compare -> verdict.

    The Python API (README, "Python API")::

        from faceverify import Verifier
        verifier = Verifier.from_model()              # models/default, with its calibration
        verifier.verify("a.jpg", "b.jpg")             # -> dict: similarity, threshold, same_person, ...
        verifier.embed("a.jpg").vector                # -> (verifier.dim,) float32, unit length

    Images are a path, the file's bytes, or an HxWx3 uint8 RGB array. A photo that cannot be used
    raises a ``FaceverifyError`` subclass with a stable ``code`` (``no_face``, ``multiple_faces``,
    ``unreadable_image``, ...).

    Thread-safety: call ``embed``/``verify``/``embed_faces`` from one thread at a time (the service
    funnels all inference through one micro-batching worker); ``threshold``/``compare`` are pure.
    """

    def __init__(self, embedder: Embedder, calibration: Calibration | None = None, aligner: FaceAligner | None = None,
                 model_path: str | Path | ModelRef | None = None):
        self.embedder = embedder
        self.calibration = calibration or Calibration()
        # detect -> select on the shared path; the embedder cuts its own crop from the chosen points
        # (the same crop for our models, whose aligner this is; dlib's chip for dlib)
        self.aligner = aligner or embedder.aligner or FaceAligner()
        self.model = resolve_model(model_path) if model_path is not None else None
        self.flip = embedder.flip
        self.sha256 = self.model.sha256() if self.model is not None else None
        self.fingerprint = model_fingerprint(self.model, self.flip, self.sha256) if self.model is not None else embedder.name
        self.model_id = model_id(self.model.path if self.model is not None else embedder.name.split(":", 1)[-1])

    @classmethod
    def from_model(cls, model: str | Path | ModelRef | None = None, flip: str | None = None, device: str = "cpu",
                   runtime: str = "auto", threads: int | None = 1) -> "Verifier":
        """Load a model once, with its calibrated thresholds.

        ``model``: None for the shipped ``models/default``; a checkpoint ``.pt``, a model directory
        (``model.pt`` + ``calibration.json``), an ``.onnx`` file, or ``"dlib"`` (the ``[dlib]`` extra)
        — any spec ``faceverify.models.resolve_model`` takes. ``flip``: test-time flip mode
        (``none``/``sum``/``concat``); default: the one the calibration was measured with.
        ``runtime``: ``auto`` (onnxruntime for the network and MTCNN when the model directory holds
        a current ``model.onnx``; see ``faceverify.runtime``), ``onnx`` or ``torch``. ``threads``:
        onnxruntime intra-op threads per session (None: one per core). Raises
        ``ConfigError``/``CheckpointError`` for a missing or broken model."""
        from .detect import FaceDetector
        from .runtime import runtime_model

        ref = resolve_model(model)
        calibration = Calibration.for_model(ref)
        flip = flip or calibration.flip or "none"
        run = runtime_model(ref, runtime, device)
        # MTCNN on the model's runtime: onnxruntime unless torch was asked for (or is all there is)
        detector = FaceDetector(device=device, runtime="torch" if runtime == "torch" else "auto", threads=threads or 1)
        if ref.kind == "dlib":  # MTCNN's five points -> dlib's chip -> dlib's descriptor, compared by cosine
            embedder = load_embedder(ref, flip=flip, detector="mtcnn_points")
        elif run.kind == "onnx":
            embedder = load_embedder(run, flip=flip, threads=threads)
        else:
            embedder = load_embedder(run, flip=flip, device=device)
        aligner = embedder.aligner or FaceAligner()
        aligner.detector = detector
        return cls(embedder, calibration, aligner=aligner, model_path=ref)

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def public_name(self) -> str:
        """The model as a server shows it: id and weights fingerprint, never a file system path."""
        return f"{self.model_id}@sha256:{self.sha256[:16]}" if self.sha256 else self.model_id

    @property
    def dim(self) -> int:
        """Length of an embedding (``FaceResult.vector``)."""
        return int(self.embedder.dim)

    # -- thresholds -----------------------------------------------------------------------

    def threshold(self, override: float | None = None, operating_point: str | None = None) -> ThresholdChoice:
        """The cosine threshold a verdict uses: ``override`` if given, else the calibrated one of
        ``operating_point`` (default: the calibration's ``default_operating_point``, else
        ``far_1e-3``), else the uncalibrated default 0.5 (said so in ``.source``). Raises
        ``UnknownOperatingPointError`` for a name it does not know."""
        if override is not None:
            if not isinstance(override, (int, float, np.number)) or not np.isfinite(override):
                raise InvalidInputError(f"threshold {override!r} is not a finite number.", field="threshold")
            return ThresholdChoice(float(override), "request")
        point = operating_point or self.calibration.default or DEFAULT_OPERATING_POINT
        if point not in OPERATING_POINTS and point not in self.calibration.thresholds:
            raise UnknownOperatingPointError(f"unknown operating point {point!r}; choose one of {list(OPERATING_POINTS)}.")
        if point in self.calibration.thresholds:
            file = self.calibration.path.name if self.calibration.path else None  # a name, never a server path
            return ThresholdChoice(self.calibration.thresholds[point], "calibration", point, file)
        return ThresholdChoice(UNCALIBRATED_THRESHOLD, "uncalibrated_default", point, None)

    # -- faces ----------------------------------------------------------------------------

    def embed_faces(self, images: Sequence[np.ndarray], policies: Sequence[str] | str = DEFAULT_POLICY) -> list[FaceResult | FaceverifyError]:
        """For each image, its chosen face's embedding, or the typed error (no_face, multiple_faces)
        that refused it. All accepted faces go through the network as one batch."""
        if isinstance(policies, str):
            policies = [policies] * len(images)
        # one warp per face: an embedder whose aligner this is (our models) takes these very crops;
        # one that cuts its own (dlib's chip) gets only the chosen points, and nothing is cropped here
        own_crops = self.aligner is self.embedder.aligner and hasattr(self.embedder, "embed_aligned")
        results: list[FaceResult | FaceverifyError] = self.aligner.align_batch(images, policies=policies, errors="return",
                                                                               crop=own_crops)
        chosen = [i for i, r in enumerate(results) if isinstance(r, AlignedFace)]
        if chosen:
            if own_crops:
                batch = self.embedder.embed_aligned([results[i] for i in chosen])
            else:
                batch = self.embedder.embed([images[i] for i in chosen], landmarks=[results[i].landmarks for i in chosen])
            vectors = batch.vectors
            for row, i in enumerate(chosen):
                aligned = replace(results[i], crop=batch.faces[row].crop)
                results[i] = FaceResult(_normalize(vectors[row]), aligned)
        return results

    def embed(self, image, policy: str = DEFAULT_POLICY, max_pixels: int = DEFAULT_MAX_PIXELS) -> FaceResult:
        """One photo -> its chosen face's embedding.

        ``image``: a path, the file's bytes, or an HxWx3 uint8 RGB array. ``policy``: which face
        when there are several (``largest_central``, ``largest``, ``central``, ``highest_score``,
        or ``reject`` to refuse them). Returns a ``FaceResult``: ``.vector`` is the L2-normalised
        embedding (``self.dim`` float32 values; the cosine of two is ``vector @ other.vector``),
        ``.aligned`` the face it came from (box, landmarks, score, the aligned crop). Raises the
        image's typed error (``NoFaceError``, ``MultipleFacesError``, ``UnreadableImageError``, ...)."""
        result = self.embed_faces([as_rgb(image, max_pixels)], [policy])[0]
        if isinstance(result, FaceverifyError):
            raise result
        return result

    # -- verdicts -------------------------------------------------------------------------

    def compare(self, a: FaceResult, b: FaceResult, threshold: float | ThresholdChoice | None = None,
                operating_point: str | None = None) -> dict:
        """The verdict on two embedded faces -- built here only, for the CLI, the Python API and the
        service: ``similarity`` (cosine), ``threshold``, ``same_person`` (similarity > threshold)
        and ``threshold_source`` (source, operating point, calibration file name). ``threshold``:
        an override, or a ``ThresholdChoice`` already made by ``threshold``."""
        choice = threshold if isinstance(threshold, ThresholdChoice) else self.threshold(threshold, operating_point)
        similarity = cosine(a.vector, b.vector)
        return {
            "similarity": similarity,
            "threshold": choice.value,
            "same_person": bool(similarity > choice.value),
            "threshold_source": choice.to_dict(),
        }

    def verify(self, image1, image2, threshold: float | None = None, operating_point: str | None = None,
               policy: str = DEFAULT_POLICY, max_pixels: int = DEFAULT_MAX_PIXELS, include_crops: bool = False) -> dict:
        """Do two photos show the same person?

        ``image1``, ``image2``: paths, the files' bytes, or HxWx3 uint8 RGB arrays. ``threshold``
        overrides the calibrated one; ``operating_point`` picks it (``far_1e-2``, ``far_1e-3``,
        ``far_1e-4``, ``best_accuracy``; default: the model's, see ``threshold``); ``policy``
        chooses the face (see ``embed``).
        Returns a dict: ``similarity`` (cosine in [-1, 1]), ``threshold``, ``same_person``,
        ``threshold_source`` (where the threshold came from), ``faces`` (the two faces used; with
        ``include_crops`` their aligned crops as base64 PNG), ``model`` and ``timings_ms``.
        Raises the typed error of the first unusable image."""
        t0 = time.perf_counter()
        choice = self.threshold(threshold, operating_point)  # fail fast on a bad operating point
        imgs = [as_rgb(im, max_pixels) for im in (image1, image2)]
        t1 = time.perf_counter()
        results = self.embed_faces(imgs, [policy, policy])
        t2 = time.perf_counter()
        for which, r in enumerate(results, 1):
            if isinstance(r, FaceverifyError):
                r.details.setdefault("image", f"image{which}")
                raise r
        out = self.compare(results[0], results[1], choice)
        out["faces"] = [r.to_dict(include_crops) for r in results]
        out["model"] = self.name
        out["timings_ms"] = {"decode": 1e3 * (t1 - t0), "inference": 1e3 * (t2 - t1), "total": 1e3 * (time.perf_counter() - t0)}
        return out


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faceverify verify", description="Verify whether two photos show the same person; prints one JSON object.")
    p.add_argument("image1")
    p.add_argument("image2")
    p.add_argument("--model", default=None,
                   help="checkpoint (.pt), model directory, .onnx, or 'dlib' (dlib's descriptor, the [dlib] extra; "
                        "default: models/default)")
    p.add_argument("--operating-point", default=None, choices=OPERATING_POINTS,
                   help="which calibrated threshold to use (default: the model's, chosen on LFW View 1; "
                        f"{DEFAULT_OPERATING_POINT} when its calibration names none)")
    p.add_argument("--threshold", type=float, default=None, help="override the threshold (cosine similarity)")
    p.add_argument("--policy", default=DEFAULT_POLICY, choices=SELECTION_POLICIES, help="which face when there are several (default: %(default)s)")
    p.add_argument("--flip", default=None, choices=("none", "sum", "concat"), help="flip test-time augmentation (default: the calibration's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runtime", default="auto", choices=("auto", "onnx", "torch"),
                   help="onnxruntime or torch for the network and MTCNN (default auto: onnx when the model directory holds a "
                        "current model.onnx)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="intra-op threads, torch or onnxruntime (default 1, env FACEVERIFY_TORCH_THREADS; docs/service.md, Threads)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threshold is not None and not np.isfinite(args.threshold):
        print(json.dumps({"error": {"code": "validation_error", "message": "--threshold must be a finite number"}}))
        return EXIT_USAGE
    if args.model is None and not default_model_path().exists():
        return describe_without_model(args.image1, args.image2, args.policy)
    try:
        from .threads import apply_threads, latency_threads

        threads = latency_threads(args.torch_threads)
        verifier = Verifier.from_model(args.model, flip=args.flip, device=args.device, runtime=args.runtime, threads=threads)
        apply_threads(threads)  # torch's, when its runtime was chosen
        result = verifier.verify(args.image1, args.image2, args.threshold, args.operating_point, args.policy)
    except FaceverifyError as exc:
        print(json.dumps({"error": {"code": exc.code, "message": exc.message, "details": _jsonable(exc.details)}}))
        return exit_status(exc)
    result["image1"], result["image2"] = args.image1, args.image2
    print(json.dumps(result))
    return EXIT_OK


def describe_without_model(image1: str, image2: str, policy: str) -> int:
    """No trained model ships yet: show what the pipeline sees — the detections and the aligned
    crops (saved as PNGs) it would compare — and say so, instead of inventing a verdict."""
    import tempfile

    from PIL import Image

    from .image import load_image
    from .pipeline import FaceAligner

    aligner = FaceAligner(policy=policy)
    out_dir = Path(tempfile.mkdtemp(prefix="faceverify-crops-"))
    report = {"note": f"no model given and {default_model_path()} does not exist yet: no verdict. Showing the detections "
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
    return 0


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


if __name__ == "__main__":
    sys.exit(main())
