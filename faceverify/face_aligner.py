"""``FaceAligner``: image -> aligned face crop (detect -> select -> align), the one path used by
prep, training validation, eval, serve and the verify CLI, so train and test crops always come out
of the same code. The warp itself is ``faceverify.align``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .align import TEMPLATES, align_face
from .detect import Face, FaceDetector, check_policy, select_face
from .errors import FaceverifyError, InvalidInputError, NoFaceError

# Median landmark positions of SphereFace's lfw_landmark.txt, as fractions of the image width
# and height (computed over its 13,233 entries). Used only by the "center_crop" fallback, for
# images in which no face is found: it aligns a face-centred photo (LFW-style) as if its face
# were where faces usually are, instead of dropping the image.
CENTRED_FACE_LANDMARKS = np.array(
    [[0.42, 0.452], [0.58, 0.448], [0.5, 0.548], [0.432, 0.628], [0.576, 0.628]], dtype=np.float32
)
FALLBACKS = ("error", "center_crop")
# MTCNN runs on a copy whose longest side is at most this; boxes and landmarks are scaled back and
# the face is aligned from the full-resolution image (a 6000 px photo costs ~ a 1280 px one).
DETECT_MAX_SIDE = 1280


@dataclass
class AlignedFace:
    crop: np.ndarray | None  # (h + 2 pad, w + 2 pad, 3) uint8 RGB; None when only the face was chosen
    source: str  # "mtcnn" | "landmarks" | "center_crop"
    landmarks: np.ndarray  # (5, 2) float32 in the input image's coordinates
    face: Face | None = None  # the detection used (source "mtcnn")
    faces_found: int = 0  # how many faces the detector returned (probability >= min_score)
    policy: str = ""  # the selection rule that chose the face

    def to_dict(self) -> dict:
        out = {"source": self.source, "landmarks": self.landmarks.astype(np.float64).round(2).tolist(), "faces_found": self.faces_found, "policy": self.policy}
        if self.face is not None:
            out.update(box=self.face.box.astype(np.float64).round(2).tolist(), score=round(self.face.score, 5))
        return out


class FaceAligner:
    """Detect (or take given landmarks), choose one face, align it onto a template.

    ``policy``: how to choose among several faces (see ``detect.select_face``).
    ``fallback``: ``"error"`` raises NoFaceError when no face is found; ``"center_crop"`` aligns
    with ``CENTRED_FACE_LANDMARKS`` instead (for evaluation, where no pair may be dropped).
    ``min_score``: faces with a lower MTCNN probability do not count (default: the detector's own).
    ``max_side``: detection runs on a copy shrunk to this longest side (0: never shrink).
    """

    def __init__(
        self,
        detector: FaceDetector | None = None,
        template: str = "112x96",
        pad: int = 0,
        policy: str = "largest_central",
        fallback: str = "error",
        min_score: float | None = None,
        max_side: int = DETECT_MAX_SIDE,
    ):
        if template not in TEMPLATES:
            raise InvalidInputError(f"unknown template {template!r}; choose one of {sorted(TEMPLATES)}")
        if fallback not in FALLBACKS:
            raise InvalidInputError(f"unknown fallback {fallback!r}; choose one of {FALLBACKS}")
        check_policy(policy)
        self._detector = detector
        self.template = template
        self.pad = pad
        self.policy = policy
        self.fallback = fallback
        self._min_score = min_score
        self.max_side = max_side

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:  # built on first use: landmark-only users never load MTCNN
            self._detector = FaceDetector()
        return self._detector

    @detector.setter
    def detector(self, detector: FaceDetector) -> None:  # e.g. the Verifier's, on its model's runtime
        self._detector = detector

    @property
    def min_score(self) -> float:
        return self.detector.min_score if self._min_score is None else self._min_score

    def detect(self, image: np.ndarray, min_score: float | None = None) -> list[Face]:
        return self.detect_batch([image], min_score)[0]

    def detect_batch(self, images: Sequence[np.ndarray], min_score: float | None = None) -> list[list[Face]]:
        """The faces of each image with probability >= ``min_score`` (default: the aligner's), in
        full-resolution coordinates. Images larger than ``max_side`` are detected on a shrunk copy
        (INTER_AREA) and their boxes and landmarks scaled back."""
        threshold = self.min_score if min_score is None else min_score
        small, scales = [], []
        for img in images:
            side = max(img.shape[:2])
            s = min(1.0, self.max_side / side) if self.max_side else 1.0
            scales.append(s)
            if s < 1.0:
                size = (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s)))
                small.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
            else:
                small.append(img)
        found = self.detector.detect_batch(small, min_score=threshold)
        return [
            faces if s == 1.0 else [Face(f.box / np.float32(s), f.score, f.landmarks / np.float32(s)) for f in faces]
            for faces, s in zip(found, scales)
        ]

    def align(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> AlignedFace:
        return self.align_batch([image], None if landmarks is None else [landmarks])[0]

    def align_batch(
        self,
        images: Sequence[np.ndarray],
        landmarks: Sequence[np.ndarray | None] | None = None,
        policies: Sequence[str] | None = None,
        errors: str = "raise",
        crop: bool = True,
    ) -> list[AlignedFace | FaceverifyError]:
        """Align each image; images without given landmarks go through one batched detection.

        ``policies``: a selection policy per image (default: the aligner's). ``errors="return"``
        puts an image's typed error (no_face, multiple_faces) in its place in the list instead of
        raising it (the service answers each image of a batch on its own). ``crop=False``: choose
        the face only (``crop`` None), for an embedder that cuts its own crop from the points.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
        policies = [self.policy] * len(images) if policies is None else list(policies)
        for policy in set(policies):
            check_policy(policy)
        landmarks = list(landmarks) if landmarks is not None else [None] * len(images)
        to_detect = [i for i, lm in enumerate(landmarks) if lm is None]
        # every face, whatever its probability: the ones below min_score are reported, not hidden
        detections = dict(zip(to_detect, self.detect_batch([images[i] for i in to_detect], min_score=0.0))) if to_detect else {}
        out = []
        for i, image in enumerate(images):
            try:
                out.append(self._align_one(image, landmarks[i], detections.get(i), policies[i], crop))
            except FaceverifyError as exc:
                if errors == "raise":
                    raise
                out.append(exc)
        return out

    def _align_one(self, image: np.ndarray, landmarks: np.ndarray | None, found: list[Face] | None, policy: str,
                   crop: bool = True) -> AlignedFace:
        cut = self._crop if crop else (lambda image, points: None)
        if landmarks is not None:
            lm = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
            return AlignedFace(cut(image, lm), "landmarks", lm)
        faces = [f for f in found if f.score >= self.min_score]
        try:
            face = select_face(faces, image.shape, policy)
        except NoFaceError as exc:
            if found:  # only faces below min_score: prep reports the image as low_score
                exc.details["best_score"] = max(f.score for f in found)
            if self.fallback == "error":
                raise
            lm = CENTRED_FACE_LANDMARKS * np.array([image.shape[1], image.shape[0]], dtype=np.float32)
            return AlignedFace(cut(image, lm), "center_crop", lm, None, 0, policy)
        return AlignedFace(cut(image, face.landmarks), "mtcnn", face.landmarks, face, len(faces), policy)

    def _crop(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return align_face(image, landmarks, self.template, self.pad)
