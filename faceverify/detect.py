"""Face detection with MTCNN: boxes, probabilities and the 5 landmarks as float32 arrays.

Two runtimes give the same answers (tests/test_mtcnn_onnx.py): ``onnx``, facenet-pytorch's weights
exported to ``models/mtcnn`` and run on onnxruntime (``faceverify.mtcnn_onnx``; no torch), the
default when those files exist; and ``torch``, facenet-pytorch itself (the ``[train]`` extra).
Nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, InvalidInputError, MultipleFacesError, NoFaceError
from .runtime import RUNTIMES

SELECTION_POLICIES = ("largest_central", "largest", "central", "highest_score", "reject")
DEFAULT_POLICY = "largest_central"
# The pyramid's finest levels only find faces smaller than this fraction of the image's short side;
# they are skipped (faceverify.mtcnn_onnx.pyramid_scales). A verification photo's face is larger: on
# 662 LFW images (every 20th) the chosen face is the same to 0.5 px as with the full pyramid, and
# detection costs 23% less (docs/service.md, "Detector").
MIN_FACE_FRACTION = 1 / 6
# ... and levels that only find faces under this many pixels: the aligned crop of such a face is
# blown up well past its pixels at the default model's 84x72 input (its eyes 26 px apart), and more
# at 112. On LFW's 150x150 photos this drops the 28 px level (the fraction's floor there is 25 px)
# and 21% of detection's time; on View 1 it moved the chosen face of 229 of 4,991 images by more
# than 0.5 px and changed 1 of 999 DevTest verdicts of the 80x80 model before it (98.80% -> 98.70%):
# docs/service.md, "Detector".
# Photos with a short side above 216 px are unaffected: their fraction floor is higher.
MIN_FACE_PX = 36


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) float32 x1, y1, x2, y2
    score: float  # MTCNN O-Net probability
    landmarks: np.ndarray  # (5, 2) float32: left eye, right eye, nose, left/right mouth corner

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    def to_dict(self) -> dict:
        return {"box": self.box.astype(np.float64).round(2).tolist(), "score": round(self.score, 5), "landmarks": self.landmarks.astype(np.float64).round(2).tolist()}


class FaceDetector:
    """MTCNN with a final probability threshold.

    ``stage_thresholds`` are MTCNN's P/R/O-Net thresholds; ``min_score`` drops faces whose final
    O-Net probability is lower (hands, glasses and textures come back at ~0.86; real faces at
    > 0.99). ``detect_batch`` runs one pyramid for many images of the same size.

    ``min_face_size``: the pyramid's geometry (its first scale is 12 / min_face_size);
    ``min_face_fraction``: levels that only find faces smaller than this fraction of the short side
    are skipped, and so are levels that only find faces under ``min_face_px`` pixels (both 0: the
    full pyramid). ``runtime``: ``onnx`` (onnxruntime, ``threads`` intra-op
    threads), ``torch`` (facenet-pytorch on ``device``), or ``auto``: onnx when ``models/mtcnn``
    holds the networks and the device is the CPU.
    """

    def __init__(
        self,
        min_score: float = 0.95,
        min_face_size: int = 20,
        stage_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        device: str = "cpu",
        runtime: str = "auto",
        min_face_fraction: float = MIN_FACE_FRACTION,
        threads: int = 1,
        min_face_px: float = MIN_FACE_PX,
    ):
        from .mtcnn_onnx import have_mtcnn_onnx

        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown detector runtime {runtime!r}; choose one of {RUNTIMES}")
        if runtime == "auto":
            runtime = "onnx" if have_mtcnn_onnx() and str(device) == "cpu" else "torch"
        self.runtime = runtime
        self.min_score = min_score
        self.min_face_size = min_face_size
        self.min_face_fraction = float(min_face_fraction)
        self.min_face_px = float(min_face_px)
        self.stage_thresholds = list(stage_thresholds)
        self.scale_factor = scale_factor
        self.device = str(device)
        if runtime == "onnx":
            from .mtcnn_onnx import OnnxMTCNN

            self._onnx = OnnxMTCNN(threads=threads)
        else:
            self._nets = torch_mtcnn_nets(self.device)
        self._lock = threading.Lock()  # neither runtime's networks are shared across threads safely

    def detect(self, image: np.ndarray, min_score: float | None = None) -> list[Face]:
        """Faces in one HxWx3 uint8 RGB image, best score first."""
        return self.detect_batch([image], min_score)[0]

    def detect_batch(self, images: list[np.ndarray] | np.ndarray, min_score: float | None = None) -> list[list[Face]]:
        """Faces in each of several images; images of one size share one MTCNN pass.
        ``min_score`` overrides the detector's final probability threshold for this call."""
        threshold = self.min_score if min_score is None else min_score
        results: list[list[Face]] = [[] for _ in range(len(images))]
        by_shape: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(tuple(img.shape), []).append(i)
        for shape, idx in by_shape.items():
            if min(shape[:2]) < 12:  # smaller than P-Net's receptive field: nothing to find
                continue
            batch = np.stack([images[i] for i in idx])
            scales = self.scales(shape[0], shape[1])
            if not scales:  # too small for the smallest face: nothing to find
                continue
            with self._lock:
                if self.runtime == "onnx":
                    found = self._onnx.detect(batch, scales, self.stage_thresholds)
                else:  # one image per call: facenet-pytorch's batched NMS lets one photo's boxes suppress another's
                    found = [_torch_detect(self._nets, batch[k:k + 1], scales[0], self.scale_factor, self.stage_thresholds,
                                           self.device)[0] for k in range(len(batch))]
            for i, (b, p) in zip(idx, found):
                results[i] = _to_faces(b, p, threshold)
        return results

    def scales(self, height: int, width: int) -> list[float]:
        """The pyramid for an image of this size: min_face_size's, less the levels whose faces
        (12 / scale px) are below min_face_fraction of the short side or below min_face_px (the
        last level is kept)."""
        from .mtcnn_onnx import pyramid_scales

        scales = pyramid_scales(height, width, self.min_face_size, self.scale_factor)
        smallest = max(self.min_face_fraction * min(height, width), self.min_face_px)
        kept = [s for s in scales if 12.0 / s >= smallest - 1e-9]
        return kept or scales[-1:]


def torch_mtcnn_nets(device: str):
    """facenet-pytorch's P-, R- and O-nets, in eval mode (the torch runtime's networks)."""
    try:
        from facenet_pytorch import MTCNN  # imported here: it is slow to import and only this runtime needs it
    except ImportError as exc:
        raise ConfigError("the torch MTCNN runtime needs torch and facenet-pytorch: pip install 'faceverify[train]', "
                          "or use the onnx runtime (models/mtcnn).") from exc
    mtcnn = MTCNN(device=device)
    return mtcnn.pnet.eval(), mtcnn.rnet.eval(), mtcnn.onet.eval()


def _torch_detect(nets, batch: np.ndarray, first_scale: float, factor: float, thresholds, device: str):
    """facenet-pytorch's detect_face. Its pyramid runs from 12 / minsize down to the image's 12 px,
    so minsize = 12 / first_scale gives the same levels as ``FaceDetector.scales``. Give it one image:
    its NMS over a batch separates the images by shifting their boxes (torchvision's coordinate
    trick), which assumes boxes start at x, y >= 0; MTCNN's boxes of faces at an edge do not, so in a
    batch one photo's faces can suppress another's."""
    import torch
    from facenet_pytorch.models.utils.detect_face import detect_face

    with torch.inference_mode():
        boxes, points = detect_face(batch, 12.0 / first_scale, *nets, thresholds, factor, device)
    return list(zip(boxes, points))


def _to_faces(boxes, points, min_score: float) -> list[Face]:
    # numpy 2 + facenet-pytorch give object/ragged arrays; normalise to float32 per face
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
    faces = [Face(box=b[:4].copy(), score=float(b[4]), landmarks=p.copy()) for b, p in zip(boxes, points) if b[4] >= min_score]
    return sorted(faces, key=lambda f: -f.score)


def check_policy(policy: str) -> None:
    if policy not in SELECTION_POLICIES:
        raise InvalidInputError(f"unknown face selection policy {policy!r}; choose one of {SELECTION_POLICIES}", field="policy")


def select_face(faces: list[Face], image_shape: tuple[int, ...], policy: str = "largest_central") -> Face:
    """Choose "the" face of an image.

    - ``largest_central`` (default): largest box area, discounted by the distance of the box
      centre from the image centre (area * (1 - d / half-diagonal)) — the photographed person,
      not a large face at the edge;
    - ``largest``: largest box; ``central``: box centre closest to the image centre (SphereFace's
      rule); ``highest_score``: highest MTCNN probability;
    - ``reject``: exactly one face is required, else MultipleFacesError.
    """
    if not faces:
        raise NoFaceError(
            "no face found (MTCNN found no face with probability >= the detector's min_score); "
            "use a photo with a visible frontal face of at least ~20 px."
        )
    check_policy(policy)
    if len(faces) == 1:
        return faces[0]
    if policy == "reject":
        raise MultipleFacesError(
            f"{len(faces)} faces found and the policy is 'reject'; send a photo with one face, or "
            "choose the policy 'largest'.",
            faces=[f.to_dict() for f in faces],
        )
    height, width = image_shape[:2]
    centre = np.array([width / 2.0, height / 2.0], dtype=np.float32)
    half_diagonal = float(np.hypot(width, height) / 2.0)

    def distance(f: Face) -> float:
        return float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2.0 - centre))

    key = {
        "largest": lambda f: f.area,
        "central": lambda f: -distance(f),
        "highest_score": lambda f: f.score,
        "largest_central": lambda f: f.area * max(0.0, 1.0 - distance(f) / half_diagonal),
    }[policy]
    return max(faces, key=key)


def detector_config(d) -> dict:
    """What a detector's faces depend on (cache keys): either runtime gives the same detections, so
    the runtime is not part of it; the full pyramid keeps its old key."""
    config = {"mtcnn": "facenet-pytorch", "min_face_size": d.min_face_size, "stage_thresholds": d.stage_thresholds,
              "scale_factor": d.scale_factor}
    if d.min_face_fraction:
        config["min_face_fraction"] = round(d.min_face_fraction, 6)
    if d.min_face_px:
        config["min_face_px"] = float(d.min_face_px)
    return config


class CachedDetector:
    """A ``FaceDetector`` that remembers its results per image content (sha1 of the pixels) in one
    file per detector configuration under ``directory``: evaluating many models on one image set
    runs MTCNN once. Every face is kept; ``min_score`` filters on lookup, as the detector would."""

    def __init__(self, directory: str | os.PathLike, detector: FaceDetector | None = None, save_every_s: float = 30.0):
        self.detector = detector or FaceDetector()
        self.min_score = self.detector.min_score
        digest = hashlib.sha1(json.dumps(detector_config(self.detector), sort_keys=True).encode()).hexdigest()[:12]
        self.path = Path(directory) / f"detections-{digest}.npz"
        self.save_every_s = save_every_s
        self._faces: dict[str, list[Face]] = self._load()
        self._dirty, self._last_save = False, time.monotonic()

    @staticmethod
    def image_key(image: np.ndarray) -> str:
        image = np.ascontiguousarray(image)
        return hashlib.sha1(repr(image.shape).encode() + image.tobytes()).hexdigest()

    def detect(self, image: np.ndarray, min_score: float | None = None) -> list[Face]:
        return self.detect_batch([image], min_score)[0]

    def detect_batch(self, images, min_score: float | None = None) -> list[list[Face]]:
        threshold = self.min_score if min_score is None else min_score
        keys = [self.image_key(img) for img in images]
        missing = [i for i, k in enumerate(keys) if k not in self._faces]
        if missing:
            found = self.detector.detect_batch([images[i] for i in missing], min_score=0.0)
            for i, faces in zip(missing, found):
                self._faces[keys[i]] = faces
            self._dirty = True
            if time.monotonic() - self._last_save > self.save_every_s:
                self.save()
        return [[f for f in self._faces[k] if f.score >= threshold] for k in keys]

    def save(self) -> None:
        """Write the cache atomically (a killed run keeps the previous file), merged with the file's
        current entries (several evaluations may share one cache)."""
        if not self._dirty:
            return
        for key, faces in self._load().items():  # keep what a concurrent run saved meanwhile
            self._faces.setdefault(key, faces)
        keys = list(self._faces)
        counts = np.array([len(self._faces[k]) for k in keys], dtype=np.int32)
        faces = [f for k in keys for f in self._faces[k]]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=np.array(keys), counts=counts,
                 boxes=np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4),
                 scores=np.array([f.score for f in faces], dtype=np.float32),
                 landmarks=np.array([f.landmarks for f in faces], dtype=np.float32).reshape(-1, 5, 2))
        os.replace(tmp, self.path)
        self._dirty, self._last_save = False, time.monotonic()

    def _load(self) -> dict[str, list[Face]]:
        try:
            with np.load(self.path) as z:
                keys, counts, boxes, scores, landmarks = (z[n] for n in ("keys", "counts", "boxes", "scores", "landmarks"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError):
            return {}  # unreadable or truncated: detect again
        out, start = {}, 0
        for key, n in zip(keys.tolist(), counts.tolist()):
            out[key] = [Face(boxes[j].copy(), float(scores[j]), landmarks[j].copy()) for j in range(start, start + n)]
            start += n
        return out
