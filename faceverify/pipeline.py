"""Image -> aligned face crop: the one path used by data_prep, training validation, eval, serve
and the verify CLI, so train and test crops always come out of the same code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .align import TEMPLATES, align_face
from .detect import Face, FaceDetector, select_face
from .errors import InvalidInputError, NoFaceError

# Median landmark positions of SphereFace's lfw_landmark.txt, as fractions of the image width
# and height (computed over its 13,233 entries). Used only by the "center_crop" fallback, for
# images in which no face is found: it aligns a face-centred photo (LFW-style) as if its face
# were where faces usually are, instead of dropping the image.
CENTRED_FACE_LANDMARKS = np.array(
    [[0.42, 0.452], [0.58, 0.448], [0.5, 0.548], [0.432, 0.628], [0.576, 0.628]], dtype=np.float32
)
FALLBACKS = ("error", "center_crop")


@dataclass
class AlignedFace:
    crop: np.ndarray  # (h + 2 pad, w + 2 pad, 3) uint8 RGB
    source: str  # "mtcnn" | "landmarks" | "center_crop"
    landmarks: np.ndarray  # (5, 2) float32 in the input image's coordinates
    face: Face | None = None  # the detection used (source "mtcnn")
    faces_found: int = 0  # how many faces the detector returned
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
    """

    def __init__(
        self,
        detector: FaceDetector | None = None,
        template: str = "112x96",
        pad: int = 0,
        policy: str = "largest_central",
        fallback: str = "error",
    ):
        if template not in TEMPLATES:
            raise InvalidInputError(f"unknown template {template!r}; choose one of {sorted(TEMPLATES)}")
        if fallback not in FALLBACKS:
            raise InvalidInputError(f"unknown fallback {fallback!r}; choose one of {FALLBACKS}")
        self._detector = detector
        self.template = template
        self.pad = pad
        self.policy = policy
        self.fallback = fallback

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:  # built on first use: landmark-only users never load MTCNN
            self._detector = FaceDetector()
        return self._detector

    def align(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> AlignedFace:
        return self.align_batch([image], None if landmarks is None else [landmarks])[0]

    def align_batch(self, images: list[np.ndarray], landmarks: list[np.ndarray | None] | None = None) -> list[AlignedFace]:
        """Align each image; images without given landmarks go through one batched detection."""
        landmarks = list(landmarks) if landmarks is not None else [None] * len(images)
        to_detect = [i for i, lm in enumerate(landmarks) if lm is None]
        detections = dict(zip(to_detect, self.detector.detect_batch([images[i] for i in to_detect]))) if to_detect else {}
        out = []
        for i, image in enumerate(images):
            if landmarks[i] is not None:
                lm = np.asarray(landmarks[i], dtype=np.float32).reshape(5, 2)
                out.append(AlignedFace(self._crop(image, lm), "landmarks", lm))
                continue
            faces = detections[i]
            try:
                face = select_face(faces, image.shape, self.policy)
            except NoFaceError:
                if self.fallback == "error":
                    raise
                lm = CENTRED_FACE_LANDMARKS * np.array([image.shape[1], image.shape[0]], dtype=np.float32)
                out.append(AlignedFace(self._crop(image, lm), "center_crop", lm, None, 0, self.policy))
                continue
            out.append(AlignedFace(self._crop(image, face.landmarks), "mtcnn", face.landmarks, face, len(faces), self.policy))
        return out

    def _crop(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return align_face(image, landmarks, self.template, self.pad)
