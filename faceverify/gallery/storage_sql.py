"""What the SQLite and PostgreSQL stores share: the schema's reads, written once with ``?``
placeholders (PostgreSQL's ``%s`` is a class attribute), the snapshot that builds the index, and
the check of the stored model."""

from __future__ import annotations

import json
from abc import abstractmethod
from contextlib import AbstractContextManager, closing
from typing import Iterator

import numpy as np

from ..errors import ConfigError, ModelMismatchError
from .identifiers import not_found
from .records import CollectionInfo, FaceRecord, SubjectInfo
from .storage import Snapshot, Storage

COUNT_FACES = "SELECT COUNT(*) FROM faces WHERE collection_id = ?"
STREAM_FACES = "SELECT id, embedding FROM faces WHERE collection_id = ? ORDER BY id"


def in_style(sql: str, placeholder: str) -> str:
    """``sql`` written with ``?`` placeholders, in the driver's ``placeholder`` style."""
    return sql if placeholder == "?" else sql.replace("?", placeholder)


class SqlSnapshot(Snapshot):
    """A consistent read through one connection, inside the transaction its store opened for it
    (SQLite: the write lock; PostgreSQL: REPEATABLE READ)."""

    def __init__(self, conn, seq: int, placeholder: str):
        self.conn, self.seq, self.placeholder = conn, seq, placeholder
        self.collections = dict(conn.execute("SELECT id, name FROM collections").fetchall())

    def face_count(self, collection_id: int) -> int:
        return int(self.conn.execute(in_style(COUNT_FACES, self.placeholder), (collection_id,)).fetchone()[0])

    def face_counts(self) -> dict[int, int]:
        counts = dict(self.conn.execute("SELECT collection_id, COUNT(*) FROM faces GROUP BY collection_id").fetchall())
        return {cid: int(counts.get(cid, 0)) for cid in self.collections}

    def _cursor(self, name: str, chunk: int) -> AbstractContextManager:
        """A cursor for one long read (PostgreSQL overrides it with a server-side one)."""
        return closing(self.conn.cursor())

    def stream(self, collection_id: int, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, list[bytes]]]:
        with self._cursor(f"faces_{collection_id}", chunk) as cur:
            cur.execute(in_style(STREAM_FACES, self.placeholder), (collection_id,))
            while rows := cur.fetchmany(chunk):
                yield np.fromiter((r[0] for r in rows), np.int64, len(rows)), [bytes(r[1]) for r in rows]


class SqlStorage(Storage):
    """The reads SQLite and PostgreSQL run alike. A subclass gives ``_read()``, a context manager
    yielding a connection whose ``execute(sql, params)`` returns a cursor, its ``placeholder``
    style, and ``seq_sql``, the statement that reads the change sequence."""

    placeholder = "?"
    seq_sql: str

    @abstractmethod
    def _read(self) -> AbstractContextManager: ...

    def _sql(self, text: str) -> str:
        return in_style(text, self.placeholder)

    def _seq(self, conn) -> int:
        return int(conn.execute(self.seq_sql).fetchone()[0])

    def _collection_id(self, conn, name: str, lock: str = "") -> int:
        """The collection's id (``lock``: a row-lock clause such as PostgreSQL's ``FOR UPDATE``)."""
        row = conn.execute(self._sql(f"SELECT id FROM collections WHERE name = ? {lock}"), (name,)).fetchone()
        if row is None:
            raise not_found(name)
        return int(row[0])

    def _subject_id(self, conn, collection_id: int, collection: str, subject: str, lock: str = "") -> int:
        row = conn.execute(self._sql(f"SELECT id FROM subjects WHERE collection_id = ? AND name = ? {lock}"),
                           (collection_id, subject)).fetchone()
        if row is None:
            raise not_found(collection, subject=subject)
        return int(row[0])

    def _face_count(self, conn, collection_id: int) -> int:
        return int(conn.execute(self._sql(COUNT_FACES), (collection_id,)).fetchone()[0])

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
            raise not_found(name)
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
                self._subject_id(conn, cid, collection, subject)
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
