"""SQLite storage: one directory, one process. WAL mode with ``synchronous=FULL``, so when a
mutation returns it has been fsync'd: a ``kill -9`` at any moment loses no acknowledged
enrollment and leaves no half-state."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import ConfigError, ConflictError, GalleryError, SchemaVersionError
from .identifiers import not_found
from .records import FaceRecord
from .storage import COLLECTION_CREATED, COLLECTION_DELETED, FACES_ADDED, FACES_REMOVED, Change, NewFace, Snapshot
from .storage_sql import SqlSnapshot, SqlStorage, check_model, info_json

DB_NAME = "gallery.sqlite3"
INDEX_DIR = "index"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS subjects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    name TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE(collection_id, name));
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT UNIQUE NOT NULL,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL, info TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS faces_collection ON faces(collection_id);
CREATE INDEX IF NOT EXISTS faces_subject ON faces(subject_id);
"""


class SQLiteStorage(SqlStorage):
    kind = "sqlite"
    seq_sql = "SELECT value FROM meta WHERE key = 'seq'"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.location = str(self.root)
        self.snapshot_dir = self.root / INDEX_DIR
        self._lock = threading.RLock()  # one connection, shared by the service's threads
        self._db: sqlite3.Connection | None = None

    # -- connection, schema -----------------------------------------------------------------

    def open(self, dim: int, model_id: str) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the gallery directory {self.root} ({exc}).") from exc
        path = self.root / DB_NAME
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: in WAL mode every COMMIT fsyncs the WAL, so a committed enrollment survives a crash.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot open the gallery database {path} ({exc}); is it a faceverify gallery?") from exc
        self._db = db
        with self._tx() as db:
            stored = {k: v for k, v in db.execute("SELECT key, value FROM meta")}
            if str(stored.get("schema", SCHEMA_VERSION)) != str(SCHEMA_VERSION):
                raise SchemaVersionError(
                    f"the gallery {self.root} has schema version {stored['schema']}, this faceverify reads version "
                    f"{SCHEMA_VERSION}; use the faceverify version that wrote it.")
            check_model(stored, dim, model_id, f"the gallery {self.root}", "a new --gallery directory")
            for key, value in (("schema", str(SCHEMA_VERSION)), ("dim", str(dim)), ("seq", "0")):
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
            if model_id:
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('model_id', ?)", (model_id,))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise GalleryError("the gallery is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")  # fsync'd (synchronous=FULL) before we return

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise GalleryError("the gallery is closed")
            yield self._db

    def _bump(self, db: sqlite3.Connection) -> int:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'seq'")
        return self._seq(db)

    def seq(self) -> int:
        with self._read() as db:
            return self._seq(db)

    # -- mutations --------------------------------------------------------------------------

    def create_collection(self, name: str, now: float) -> Change:
        with self._tx() as db:
            try:
                cur = db.execute("INSERT INTO collections(name, created_at) VALUES (?, ?)", (name, now))
            except sqlite3.IntegrityError:
                raise ConflictError(f"collection {name!r} already exists.", collection=name) from None
            return Change(self._bump(db), COLLECTION_CREATED, int(cur.lastrowid), name)

    def delete_collection(self, name: str) -> tuple[int, Change]:
        with self._tx() as db:
            cid = self._collection_id(db, name)
            n = self._face_count(db, cid)
            db.execute("DELETE FROM collections WHERE id=?", (cid,))
            return n, Change(self._bump(db), COLLECTION_DELETED, cid, name)

    def enroll(self, collection: str, faces: Sequence[NewFace], now: float) -> tuple[list[str], Change]:
        uids, ids = [], []
        with self._tx() as db:
            cid = self._collection_id(db, collection)
            subject_ids: dict[str, int] = {}
            for face in faces:
                sid = subject_ids.get(face.subject)
                if sid is None:
                    db.execute("INSERT OR IGNORE INTO subjects(collection_id, name, created_at) VALUES (?, ?, ?)",
                               (cid, face.subject, now))
                    sid = self._subject_id(db, cid, collection, face.subject)
                    subject_ids[face.subject] = sid
                uid = uuid.uuid4().hex
                cur = db.execute(
                    "INSERT INTO faces(uid, subject_id, collection_id, embedding, info, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (uid, sid, cid, face.embedding, info_json(face.info), now),
                )
                ids.append(int(cur.lastrowid))
                uids.append(uid)
            return uids, Change(self._bump(db), FACES_ADDED, cid, face_ids=np.asarray(ids, np.int64))

    def delete_face(self, collection: str, uid: str) -> tuple[FaceRecord, Change]:
        with self._tx() as db:
            cid = self._collection_id(db, collection)
            row = db.execute(
                """SELECT f.id, s.name, f.created_at, f.info FROM faces f JOIN subjects s ON s.id = f.subject_id
                   WHERE f.collection_id=? AND f.uid=?""",
                (cid, uid),
            ).fetchone()
            if row is None:
                raise not_found(collection, face_id=uid)
            db.execute("DELETE FROM faces WHERE id=?", (row[0],))
            change = Change(self._bump(db), FACES_REMOVED, cid, face_ids=np.asarray([row[0]], np.int64))
        return FaceRecord(uid, collection, row[1], row[2], json.loads(row[3])), change

    def delete_subject(self, collection: str, subject: str) -> tuple[int, Change]:
        with self._tx() as db:
            cid = self._collection_id(db, collection)
            sid = self._subject_id(db, cid, collection, subject)
            face_ids = [r[0] for r in db.execute("SELECT id FROM faces WHERE subject_id=?", (sid,))]
            db.execute("DELETE FROM subjects WHERE id=?", (sid,))
            return len(face_ids), Change(self._bump(db), FACES_REMOVED, cid, face_ids=np.asarray(face_ids, np.int64))

    # -- reads ------------------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        with self._tx() as db:  # a write lock: nothing changes while the index is built from it
            yield SqlSnapshot(db, self._seq(db), self.placeholder)

    def changes_since(self, seq: int, limit: int = 10_000) -> list[Change] | None:
        # no change log: one process owns the file and applies its own changes as it makes them
        return [] if self.seq() == seq else None

    def candidates(self, face_ids: Sequence[int]) -> list[tuple[int, str, str, bytes]]:
        marks = ",".join("?" * len(face_ids))
        with self._read() as db:
            return db.execute(
                f"""SELECT f.id, f.uid, s.name, f.embedding FROM faces f JOIN subjects s ON s.id = f.subject_id
                    WHERE f.id IN ({marks})""",
                list(face_ids),
            ).fetchall()

    def integrity_check(self) -> str:
        with self._read() as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0]
