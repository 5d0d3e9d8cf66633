"""Verification: two photos -> faces -> embeddings -> cosine similarity -> verdict against the
model's calibrated threshold (``faceverify.calibration``). One ``Verifier`` serves the REST
service, the Python API and ``faceverify verify`` (``faceverify.commands.verify``).
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .calibration import Calibration, ThresholdChoice
from .detect import DEFAULT_POLICY
from .embedder import Embedder
from .errors import FaceverifyError, UnsupportedImageError
from .image import DEFAULT_MAX_PIXELS, load_image
from .loaders import load_embedder
from .models import ModelRef, model_id, resolve_model
from .face_aligner import AlignedFace, FaceAligner


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
        self.fingerprint = self.model.fingerprint(self.flip) if self.model is not None else embedder.name
        self.model_id = self.model.id if self.model is not None else model_id(embedder.name.split(":", 1)[-1])

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
        if ref.kind == "dlib":  # the card's serve options: MTCNN's five points -> dlib's chip -> dlib's descriptor
            embedder = load_embedder(ref, flip=flip, **ref.serve_options)  # the card's "serve" options
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
        """The cosine threshold a verdict uses (``Calibration.threshold``): ``override`` if given,
        else the calibrated one of ``operating_point`` (default: the model's), else the
        uncalibrated default 0.5 (said so in ``.source``). Raises ``UnknownOperatingPointError``
        for a name it does not know."""
        return self.calibration.threshold(override, operating_point)

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
