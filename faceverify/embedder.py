"""The Embedder protocol: images in, float vectors out, batched, and the flip modes. Evaluation,
distillation and the service talk only to this interface. The implementations are loaded by
``faceverify.loaders.load_embedder(spec)`` (a checkpoint, an ONNX file or card, dlib), a layer
above: this module imports no loader, no torch and no model file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .errors import ConfigError, InvalidInputError
from .face_aligner import AlignedFace, FaceAligner

FLIP_MODES = ("none", "sum", "concat")


def combine_flip(plain: np.ndarray, flipped: np.ndarray | None, mode: str) -> np.ndarray:
    """Flip test-time augmentation: none, sum (insightface/opensphere) or concat (SphereFace)."""
    if mode not in FLIP_MODES:
        raise InvalidInputError(f"unknown flip mode {mode!r}; choose one of {FLIP_MODES}")
    if mode == "none":
        return plain
    if flipped is None:
        raise InvalidInputError(f"flip mode {mode!r} needs the flipped features (embed with a flip mode other than 'none')")
    if mode == "sum":
        return plain + flipped
    return np.concatenate([plain, flipped], axis=1)


@dataclass
class EmbedBatch:
    plain: np.ndarray  # (N, D) float32 features of the aligned crops, not normalised
    faces: list[AlignedFace]  # how each image was aligned
    flipped: np.ndarray | None = None  # (N, D) features of the mirrored crops, when flip != "none"
    flip: str = "none"

    @property
    def vectors(self) -> np.ndarray:
        """The features with the embedder's flip mode applied ((N, D) or (N, 2D) for concat)."""
        return combine_flip(self.plain, self.flipped, self.flip)


@runtime_checkable
class Embedder(Protocol):
    """What callers (Verifier, evaluation, distillation) use of an embedder, and nothing more."""

    name: str  # what it is, for reports and cache keys (e.g. "faceverify:models/default", "dlib:hog:68pt:up1:jit0")
    feature_dim: int  # length of one crop's features (embed_crops rows)
    dim: int  # length of EmbedBatch.vectors rows: feature_dim, or twice it for flip "concat"
    flip: str  # "none" | "sum" | "concat"
    # the shared detect -> select -> align path, for embedders that use it (the Verifier takes its
    # detector, evaluation its template and policy); None for dlib, which cuts its own chips
    aligner: FaceAligner | None

    @property
    def config(self) -> dict:
        """What its features depend on (weights, crop, face choice): a feature cache's key."""
        ...

    @property
    def alignment(self) -> dict:
        """How it finds and aligns a face when given no landmarks, as reports state it."""
        ...

    def embed(self, images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None) -> EmbedBatch:
        """Images (HxWx3 uint8 RGB) -> features; ``landmarks`` (five points each) skip detection."""
        ...

    def crop_from_landmarks(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The embedder's own aligned crop for five given points (e.g. a teacher view)."""
        ...

    def embed_crops(self, crops) -> np.ndarray:
        """Aligned crops -> (N, feature_dim) float32 features (no flip)."""
        ...


def check_flip(flip: str) -> str:
    """``flip`` if it is a flip mode, else a ConfigError naming them (an embedder's start-up check)."""
    if flip not in FLIP_MODES:
        raise ConfigError(f"unknown flip mode {flip!r}; choose one of {FLIP_MODES}")
    return flip
