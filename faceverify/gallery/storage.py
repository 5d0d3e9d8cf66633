"""The gallery's storage interface: the source of truth (collections, subjects, faces with their
embeddings, the model fingerprint and a change sequence). Two implementations:
:class:`~.storage_sqlite.SQLiteStorage` (a directory, one process) and
:class:`~.storage_postgres.PostgresStorage` (a ``postgresql://`` URL, shared by several replicas).

Every mutation is one transaction that also advances the store's change sequence by exactly one,
in commit order, and returns a :class:`Change` describing it; the gallery applies changes to its
FAISS index in sequence order. PostgreSQL also keeps them in a change log (:meth:`Storage.changes_since`)
so a replica can replay what other replicas did. Both are :class:`~.storage_sql.SqlStorage`: the
SQL they share is written there once.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .records import CollectionInfo, FaceRecord, SubjectInfo

# change kinds
COLLECTION_CREATED = "collection+"
COLLECTION_DELETED = "collection-"
FACES_ADDED = "faces+"
FACES_REMOVED = "faces-"


@dataclass
class Change:
    seq: int
    kind: str
    collection_id: int
    name: str | None = None  # the collection's name (collection+)
    face_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    vectors: np.ndarray | None = None  # faces+: their unit embeddings, row i for face_ids[i]


@dataclass
class NewFace:
    subject: str
    embedding: bytes  # float32, L2-normalised
    info: dict


class Snapshot(ABC):
    """A consistent read of the whole store at change sequence ``seq`` (to build indexes)."""

    seq: int
    collections: dict[int, str]  # id -> name

    @abstractmethod
    def face_count(self, collection_id: int) -> int: ...

    @abstractmethod
    def stream(self, collection_id: int, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, list[bytes]]]:
        """The collection's faces in id order: (ids, embedding bytes) per chunk."""

    def face_counts(self) -> dict[int, int]:
        return {cid: self.face_count(cid) for cid in self.collections}


class Storage(ABC):
    kind: str  # "sqlite" | "postgresql"
    location: str  # for messages (no password)
    snapshot_dir: Path | None = None  # where an index snapshot may be kept (single-process stores only)
    follows: bool = False  # other processes write too: the gallery must follow the change log

    @abstractmethod
    def open(self, dim: int, model_id: str) -> None:
        """Create or migrate the schema, check its version, the embedding size and the model."""

    @abstractmethod
    def close(self) -> None: ...

    # -- mutations: one transaction each, returning the Change (with its sequence number) -----

    @abstractmethod
    def create_collection(self, name: str, now: float) -> Change: ...

    @abstractmethod
    def delete_collection(self, name: str) -> tuple[int, Change]:
        """-> (faces removed, change)"""

    @abstractmethod
    def enroll(self, collection: str, faces: Sequence[NewFace], now: float) -> tuple[list[str], Change]:
        """Add faces (subjects created as needed), all or nothing -> (their uids, change)."""

    @abstractmethod
    def delete_face(self, collection: str, uid: str) -> tuple[FaceRecord, Change]: ...

    @abstractmethod
    def delete_subject(self, collection: str, subject: str) -> tuple[int, Change]: ...

    # -- reads ------------------------------------------------------------------------------

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[Snapshot]: ...

    @abstractmethod
    def changes_since(self, seq: int, limit: int = 10_000) -> list[Change] | None:
        """Changes after ``seq`` in order (faces+ with their vectors), at most ``limit``; None when
        the store cannot replay from there (no log, or pruned past it): rebuild from a snapshot."""

    @abstractmethod
    def candidates(self, face_ids: Sequence[int]) -> list[tuple[int, str, str, bytes]]:
        """(id, uid, subject, embedding) of those of ``face_ids`` that still exist."""

    @abstractmethod
    def list_collections(self) -> list[CollectionInfo]: ...

    @abstractmethod
    def get_collection(self, name: str) -> CollectionInfo: ...

    @abstractmethod
    def list_subjects(self, collection: str) -> list[SubjectInfo]: ...

    @abstractmethod
    def list_faces(self, collection: str, subject: str | None = None) -> list[FaceRecord]: ...

    @abstractmethod
    def face_count(self) -> int: ...

    @abstractmethod
    def integrity_check(self) -> str: ...

    def status(self) -> dict:
        """For /health."""
        return {"kind": self.kind}

    def listen(self, on_change: Callable[[], None], stop: threading.Event, state: dict, poll: float = 2.0) -> None:
        """Stores written by other processes too (``follows``): call ``on_change`` whenever they may
        have committed something, until ``stop``."""
        raise NotImplementedError(f"{self.kind} storage has a single writer: nothing to follow")


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))
