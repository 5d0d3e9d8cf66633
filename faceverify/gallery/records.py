"""What the gallery returns: collections, subjects, faces, search hits and subject matches."""

from __future__ import annotations

from dataclasses import dataclass, field


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
