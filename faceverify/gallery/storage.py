"""The gallery's storage interface: the source of truth (collections, subjects, faces with their
embeddings, the model fingerprint and a change sequence). Two implementations:
:class:`~.storage_sqlite.SQLiteStorage` (a directory, one process) and
:class:`~.storage_postgres.PostgresStorage` (a ``postgresql://`` URL, shared by several replicas).

Every mutation is one transaction that also advances the store's change sequence by exactly one,
in commit order, and returns a :class:`Change` describing it; the gallery applies changes to its
FAISS index in sequence order. PostgreSQL also keeps them in a change log (:meth:`Storage.changes_since`)
so a replica can replay what other replicas did. Both are :class:`SqlStorage`: the reads whose SQL is
the same live there once.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import ConfigError, ModelMismatchError
from .common import CollectionInfo, FaceRecord, NotFoundError, SubjectInfo

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


class SqlStorage(Storage):
    """The reads SQLite and PostgreSQL run alike (the same SQL; only the placeholder differs).
    A subclass gives ``_read()``, a context manager yielding a connection whose ``execute(sql,
    params)`` returns a cursor, and ``placeholder``; the shared SQL is written with ``?``."""

    placeholder = "?"

    @abstractmethod
    def _read(self) -> AbstractContextManager: ...

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _collection_id(self, conn, name: str, lock: str = "") -> int:
        """The collection's id (``lock``: a row-lock clause such as PostgreSQL's ``FOR UPDATE``)."""
        row = conn.execute(self._sql(f"SELECT id FROM collections WHERE name = ? {lock}"), (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"collection {name!r} does not exist; create it first (POST /collections).", collection=name)
        return int(row[0])

    def list_collections(self) -> list[CollectionInfo]:
        with self._read() as conn:
            rows = conn.execute(
                """SELECT c.name, c.created_at,
                          (SELECT COUNT(*) FROM subjects s WHERE s.collection_id = c.id),
                          (SELECT COUNT(*) FROM faces f WHERE f.collection_id = c.id)
                   FROM collections c ORDER BY c.name""").fetchall()
        return [CollectionInfo(name, int(subjects), int(faces), created) for name, created, subjects, faces in rows]

    def get_collection(self, name: str) -> CollectionInfo:
        with self._read() as conn:
            row = conn.execute(self._sql(
                """SELECT c.created_at,
                          (SELECT COUNT(*) FROM subjects s WHERE s.collection_id = c.id),
                          (SELECT COUNT(*) FROM faces f WHERE f.collection_id = c.id)
                   FROM collections c WHERE c.name = ?"""), (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"collection {name!r} does not exist; create it first (POST /collections).", collection=name)
        return CollectionInfo(name, int(row[1]), int(row[2]), row[0])

    def list_subjects(self, collection: str) -> list[SubjectInfo]:
        with self._read() as conn:
            cid = self._collection_id(conn, collection)
            rows = conn.execute(self._sql(
                """SELECT s.name, s.created_at, (SELECT COUNT(*) FROM faces f WHERE f.subject_id = s.id)
                   FROM subjects s WHERE s.collection_id = ? ORDER BY s.name"""), (cid,)).fetchall()
        return [SubjectInfo(name, int(faces), created) for name, created, faces in rows]

    def list_faces(self, collection: str, subject: str | None = None) -> list[FaceRecord]:
        with self._read() as conn:
            cid = self._collection_id(conn, collection)
            sql = """SELECT f.uid, s.name, f.created_at, f.info FROM faces f JOIN subjects s ON s.id = f.subject_id
                     WHERE f.collection_id = ?"""
            args: tuple = (cid,)
            if subject is not None:
                exists = conn.execute(self._sql("SELECT 1 FROM subjects WHERE collection_id = ? AND name = ?"), (cid, subject)).fetchone()
                if exists is None:
                    raise NotFoundError(f"subject {subject!r} does not exist in collection {collection!r}.", subject=subject)
                sql += " AND s.name = ?"
                args = (cid, subject)
            rows = conn.execute(self._sql(sql + " ORDER BY f.id"), args).fetchall()
        return [FaceRecord(uid, collection, name, created, json.loads(info)) for uid, name, created, info in rows]

    def face_count(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0])


def check_model(stored: dict, dim: int, model_id: str, where: str, instead: str) -> None:
    """The embedding size and model a store recorded (its ``meta``) against the serving model's:
    embeddings of different models are not comparable. ``where`` names the store, ``instead``
    the way out (e.g. "a new --gallery directory")."""
    if "dim" in stored and int(stored["dim"]) != dim:
        raise ConfigError(f"{where} holds {stored['dim']}-d embeddings but the model gives {dim}-d; "
                          f"use the model the gallery was built with, or {instead}.")
    if stored.get("model_id") and model_id and stored["model_id"] != model_id:
        raise ModelMismatchError(f"{where} was enrolled with model {stored['model_id']}, not {model_id}; embeddings "
                                 f"of different models are not comparable. Use that model, or {instead}.")


def info_json(info: dict | None) -> str:
    return json.dumps(info or {})


def vectors_from_bytes(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))
