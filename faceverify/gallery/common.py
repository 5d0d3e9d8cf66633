"""Identifiers, records, and the optional PCA projection (shared by the
storage back-ends, the index and the gallery)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import (  # noqa: F401  (the gallery's typed errors, re-exported by faceverify.gallery)
    ConfigError,
    ConflictError,
    DimensionMismatchError,
    GalleryError,
    InvalidIdentifierError,
    InvalidInputError,
    NotFoundError,
)
from ..pca import Pca

# Identifiers (collection and subject names): letters, digits, "_", "-", "."; must start with a
# letter or digit (so never "." / ".." / "-flag"), at most 64 characters. They never reach the
# file system, but clients use them in URLs and file names, so path tricks are refused outright.
IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
FACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def validate_identifier(value: str, what: str = "identifier") -> str:
    """``value`` if it is a valid collection/subject name, else InvalidIdentifierError."""
    if not isinstance(value, str) or not IDENTIFIER_RE.fullmatch(value) or ".." in value:
        raise InvalidIdentifierError(
            f"invalid {what} {value!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit (no '..', '/', spaces or other characters).",
            field=what,
        )
    return value


def validate_face_id(value: str) -> str:
    if not isinstance(value, str) or not FACE_ID_RE.fullmatch(value):
        raise InvalidIdentifierError(f"invalid face id {value!r}: face ids are 32 lowercase hex digits.", field="face_id")
    return value


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------------------------------------
# PCA projection


@dataclass
class PCAProjection(Pca):
    """``y = normalize((x - mean) @ components.T)`` for L2-normalised embeddings ``x`` (the shared
    :class:`~faceverify.pca.Pca`, fitted on normalised embeddings and kept in float32)."""

    @classmethod
    def fit(cls, embeddings: np.ndarray, n_components: int) -> "PCAProjection":
        """Fit on (N, D) training embeddings (normalised first, as the gallery stores them)."""
        x = l2_normalize(embeddings).astype(np.float64)
        if not 1 <= n_components <= min(x.shape):
            raise InvalidInputError(f"n_components must be in [1, {min(x.shape)}], got {n_components}")
        pca = Pca.fit(x, n_components)
        return cls(pca.mean.astype(np.float32), pca.components.astype(np.float32), pca.explained_variance)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(self(l2_normalize(vectors)))

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, mean=self.mean, components=self.components,
                 explained_variance=np.float64(np.nan if self.explained_variance is None else self.explained_variance))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PCAProjection":
        try:
            with np.load(path) as z:
                explained = float(z["explained_variance"]) if "explained_variance" in z.files else float("nan")
                return cls(np.asarray(z["mean"], np.float32), np.asarray(z["components"], np.float32),
                           None if np.isnan(explained) else explained)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read the PCA projection {path} ({exc}); expected an .npz with 'mean' and 'components'.") from exc

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.mean.tobytes())
        h.update(self.components.tobytes())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# records


@dataclass
class CollectionInfo:
    name: str
    subjects: int
    faces: int
    created_at: float


@dataclass
class SubjectInfo:
    name: str
    faces: int
    created_at: float


@dataclass
class FaceRecord:
    face_id: str
    collection: str
    subject: str
    created_at: float
    info: dict = field(default_factory=dict)


@dataclass
class Hit:
    face_id: str
    subject: str
    similarity: float


@dataclass
class SubjectMatch:
    subject: str
    similarity: float  # best similarity over the subject's faces
    face_id: str  # the face that gave it
