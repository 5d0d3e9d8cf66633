"""The face gallery: collections -> subjects -> faces.

SQLite is the source of truth (subjects, faces and their embeddings); FAISS is only a search
index over it, rebuilt from SQLite on start (or loaded from a snapshot that provably matches the
database). Every mutation is one SQLite transaction in WAL mode with ``synchronous=FULL``, so
when a method returns the change has been fsync'd: a ``kill -9`` at any moment loses no
acknowledged enrollment and leaves no half-state (the index is derived data and is never trusted
across a crash).

Index type by size, per collection: an exact inner-product ``flat`` index up to ``flat_max``
faces, an ``ivf`` index (inner product, trained on the collection's own vectors) past it. Its
codes (``ivf_codec``) are 4-bit product-quantised with FAISS's SIMD "fast scan" (``pq4fs``, the
default: d/2 bytes a vector, 43 MB at 1M x 512, ~10x faster to scan than 8-bit codes),
8-bit scalar-quantised (``sq8``, d bytes) or float32 (``flat``, 4d bytes). The index only proposes
candidates (``rerank`` of them at least); their order and similarity come from the exact stored
embeddings, so coarse codes cost little recall. ``nprobe=None`` searches a third of the IVF
lists (``AUTO_NPROBE_FRACTION``). Vectors are L2-normalised, so inner product = cosine similarity. An optional PCA projection
(:class:`PCAProjection`, fitted on training embeddings) makes the indexed vectors compact; the
database always keeps the full embedding, so the projection can be changed by restarting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import faiss
import numpy as np

from .errors import ConfigError, FaceverifyError

log = logging.getLogger(__name__)

DB_NAME = "gallery.sqlite3"
INDEX_DIR = "index"
SCHEMA_VERSION = "1"

# Identifiers (collection and subject names): letters, digits, "_", "-", "."; must start with a
# letter or digit (so never "." / ".." / "-flag"), at most 64 characters. They never reach the
# file system, but clients use them in URLs and file names, so path tricks are refused outright.
IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
FACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")

IVF_CODECS = ("pq4fs", "sq8", "flat")
# nprobe=None: this fraction of the IVF lists is searched. Measured (bench/gallery_search.py) on
# the hardest case, synthetic faces around random 512-d centres (no cluster structure): at 1M
# (nlist 1000, 4-bit codes re-scored exactly, 1,000 queries) recall@1 against exact search is
# 0.98 at 1/8 of the lists, 0.994 at 1/4 and 0.999 at 1/3 (0.8 ms a query); real embeddings
# cluster, so they need fewer.
AUTO_NPROBE_FRACTION = 1 / 3
# The IVF index may order near-ties wrongly (coarse cells, 8-bit codes): fetch at least this many
# candidates and let the exact re-scoring pick the best.
DEFAULT_RERANK = 16


class GalleryError(FaceverifyError):
    code = "gallery_error"


class NotFoundError(GalleryError):
    code = "not_found"


class ConflictError(GalleryError):
    code = "conflict"


class InvalidIdentifierError(GalleryError):
    code = "invalid_identifier"


class DimensionMismatchError(GalleryError):
    code = "dimension_mismatch"


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
class PCAProjection:
    """``y = normalize((x - mean) @ components.T)`` for L2-normalised embeddings ``x``."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (d, D)
    explained_variance: float | None = None  # fraction of the training variance kept (from fit)

    @property
    def in_dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, embeddings: np.ndarray, n_components: int) -> "PCAProjection":
        """Fit on (N, D) training embeddings (normalised first, as the gallery stores them)."""
        x = l2_normalize(embeddings).astype(np.float64)
        if not 1 <= n_components <= min(x.shape):
            raise ValueError(f"n_components must be in [1, {min(x.shape)}], got {n_components}")
        mean = x.mean(0)
        # principal axes = right singular vectors of the centred data; variance along each = s^2 / N
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        kept = float((s[:n_components] ** 2).sum() / max((s**2).sum(), 1e-12))
        return cls(mean.astype(np.float32), vt[:n_components].astype(np.float32), kept)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize((l2_normalize(vectors) - self.mean) @ self.components.T)

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


# ---------------------------------------------------------------------------------------------
# per-collection FAISS index


class _CollectionIndex:
    """One FAISS index over one collection's faces; ids are the SQLite face row ids."""

    def __init__(self, index: faiss.Index, kind: str, trained_on: int, codec: str | None = None):
        self.index = index
        self.kind = kind
        self.trained_on = trained_on
        self.codec = codec if kind == "ivf" else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, flat_max: int, nprobe: int | None,
              codec: str = "pq4fs") -> "_CollectionIndex":
        n = len(ids)
        if n <= flat_max:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            kind, codec = "flat", None
        else:
            nlist = int(min(4096, max(16, round(math.sqrt(n)))))
            if codec == "pq4fs" and dim % 8:
                codec = "sq8"  # fast scan wants d/8 sub-vectors of 8 dimensions
            codes = {"pq4fs": f"PQ{dim // 8}x4fs", "sq8": "SQ8", "flat": "Flat"}[codec]
            # index_factory owns its quantizer (no dangling SWIG reference)
            index = faiss.index_factory(dim, f"IVF{nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.niter = 10
            ivf.cp.max_points_per_centroid = 64  # k-means on a sample: seconds, not minutes, at 100k
            ivf.cp.seed = 1234
            # k-means samples 64 x nlist points anyway; the PQ codebooks and SQ8 ranges need no more
            # than ~100k, and training on all of 1M would encode every vector once more for nothing
            train = vectors
            if len(vectors) > max(64 * nlist, 100_000):
                rows = np.random.default_rng(1234).choice(len(vectors), max(64 * nlist, 100_000), replace=False)
                train = vectors[np.sort(rows)]
            index.train(train)
            ivf.nprobe = resolve_nprobe(nlist, nprobe)
            kind = "ivf"
        if n:
            index.add_with_ids(vectors, ids.astype(np.int64))
        return cls(index, kind, n, codec)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids.astype(np.int64))

    def remove(self, ids: Iterable[int]) -> None:
        ids = np.fromiter(ids, dtype=np.int64)
        if len(ids):
            self.index.remove_ids(ids)

    def search(self, queries: np.ndarray, k: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, self.size))
        # OpenMP's thread count is per calling thread: set it for this one. One query gains nothing
        # from a parallel scan, and on a busy CPU the OpenMP barrier costs 20x (measured: 10k x 512
        # flat, 2.3 ms with 1 thread vs 49 ms with 2 at load average 9 on 2 cores).
        faiss.omp_set_num_threads(threads)
        return self.index.search(queries, k)

    def describe(self) -> dict:
        out = {"type": self.kind, "size": self.size}
        if self.kind == "ivf":
            ivf = faiss.extract_index_ivf(self.index)
            out.update(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe), codec=self.codec, trained_on=self.trained_on)
        return out

    def set_nprobe(self, nprobe: int | None) -> None:
        if self.kind == "ivf":
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = resolve_nprobe(int(ivf.nlist), nprobe)


def resolve_nprobe(nlist: int, nprobe: int | None) -> int:
    """IVF lists searched per query: ``nprobe`` (at most ``nlist``), or a fixed fraction of them."""
    if nprobe is None:
        return max(1, min(nlist, math.ceil(AUTO_NPROBE_FRACTION * nlist)))
    return max(1, min(nlist, int(nprobe)))


# ---------------------------------------------------------------------------------------------
# the gallery


class Gallery:
    """A persistent face gallery in directory ``root``.

    ``dim``: the embedding size of the model that fills it (checked against the stored one);
    ``model_id``: a fingerprint of that model — embeddings of different models are not
    comparable, so a gallery refuses to open with another model. ``flat_max``: the largest
    collection kept in an exact index; ``ivf_codec``: how larger ones store vectors (``pq4fs``,
    ``sq8`` or ``flat``); ``nprobe``: IVF lists searched per query (None: ``AUTO_NPROBE_FRACTION`` of them);
    ``rerank``: candidates the index proposes at least, re-scored exactly. ``pca``: optional
    projection for the index.
    ``search_threads``: OpenMP threads per query (1: concurrency comes from concurrent requests).

    Thread-safe: one lock serialises database writes and index updates; searches take the same
    lock for the (sub-millisecond at flat sizes) index lookup.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        dim: int,
        model_id: str = "",
        *,
        flat_max: int = 20_000,
        nprobe: int | None = None,
        ivf_codec: str = "pq4fs",
        rerank: int = DEFAULT_RERANK,
        pca: PCAProjection | None = None,
        use_snapshot: bool = True,
        search_threads: int = 1,
    ):
        self.root = Path(root)
        self.dim = int(dim)
        self.model_id = model_id
        self.flat_max = int(flat_max)
        self.nprobe = None if nprobe is None else int(nprobe)
        if ivf_codec not in IVF_CODECS:
            raise ConfigError(f"unknown IVF codec {ivf_codec!r}; choose one of {IVF_CODECS}.")
        self.ivf_codec = ivf_codec
        self.rerank = max(1, int(rerank))
        self.pca = pca
        self.use_snapshot = use_snapshot
        self.search_threads = int(search_threads)
        if pca is not None and pca.in_dim != self.dim:
            raise ConfigError(f"the PCA projection expects {pca.in_dim}-d embeddings but the model gives {self.dim}-d.")
        self.index_dim = pca.out_dim if pca is not None else self.dim
        self._lock = threading.RLock()
        self._indexes: dict[int, _CollectionIndex] = {}
        self._dirty = False
        self._closed = False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the gallery directory {self.root} ({exc}).") from exc
        self._db = self._connect()
        self._check_meta()
        t0 = time.perf_counter()
        how = self._load_or_rebuild()
        log.info("gallery %s: %d faces, index %s in %.2fs", self.root, self.size, how, time.perf_counter() - t0)

    # -- database -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        path = self.root / DB_NAME
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: in WAL mode every COMMIT fsyncs the WAL, so a committed enrollment survives a crash.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(
                """
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
            )
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot open the gallery database {path} ({exc}); is it a faceverify gallery?") from exc
        return db

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _check_meta(self) -> None:
        with self._tx() as db:
            stored = {k: v for k, v in db.execute("SELECT key, value FROM meta")}
            if "dim" in stored and int(stored["dim"]) != self.dim:
                raise ConfigError(
                    f"the gallery {self.root} holds {stored['dim']}-d embeddings but the model gives {self.dim}-d; "
                    "use the model the gallery was built with, or a new --gallery directory."
                )
            if stored.get("model_id") and self.model_id and stored["model_id"] != self.model_id:
                raise ConfigError(
                    f"the gallery {self.root} was enrolled with model {stored['model_id']}, not {self.model_id}; "
                    "embeddings of different models are not comparable. Use that model or a new --gallery directory."
                )
            for key, value in (("schema", SCHEMA_VERSION), ("dim", str(self.dim)), ("seq", "0")):
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
            if self.model_id:
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('model_id', ?)", (self.model_id,))

    class _Tx:
        def __init__(self, gallery: "Gallery"):
            self.g = gallery

        def __enter__(self) -> sqlite3.Connection:
            self.g._lock.acquire()
            try:
                self.g._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.g._lock.release()
                raise
            return self.g._db

        def __exit__(self, exc_type, exc, tb):
            try:
                if exc_type is None:
                    self.g._db.execute("COMMIT")  # fsync'd (synchronous=FULL) before we return
                else:
                    self.g._db.execute("ROLLBACK")
            finally:
                self.g._lock.release()
            return False

    def _tx(self) -> "Gallery._Tx":
        if getattr(self, "_closed", False):
            raise GalleryError("the gallery is closed")
        return Gallery._Tx(self)

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'seq'")

    def _collection_id(self, db: sqlite3.Connection, name: str) -> int:
        validate_identifier(name, "collection")
        row = db.execute("SELECT id FROM collections WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"collection {name!r} does not exist; create it first (POST /collections).", collection=name)
        return int(row[0])

    # -- index ----------------------------------------------------------------------------

    def _index_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = l2_normalize(vectors)
        if self.pca is not None:
            vectors = self.pca.transform(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _build_collection(self, cid: int) -> _CollectionIndex:
        # Streamed into one preallocated array: at 1M x 512 the rows, a joined copy and a
        # normalised copy would each be 2 GB; this way the peak is the array plus one chunk.
        n = self._db.execute("SELECT COUNT(*) FROM faces WHERE collection_id=?", (cid,)).fetchone()[0]
        ids = np.empty(n, np.int64)
        vectors = np.empty((n, self.index_dim), np.float32)
        cursor = self._db.execute("SELECT id, embedding FROM faces WHERE collection_id=? ORDER BY id", (cid,))
        filled = 0
        while filled < n:
            rows = cursor.fetchmany(20_000)
            if not rows:
                break
            end = filled + len(rows)
            ids[filled:end] = [r[0] for r in rows]
            chunk = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
            vectors[filled:end] = self._index_vectors(chunk)
            filled = end
        ids, vectors = ids[:filled], vectors[:filled]  # a concurrent delete between COUNT and SELECT
        return _CollectionIndex.build(ids, vectors, self.index_dim, self.flat_max, self.nprobe, self.ivf_codec)

    def _params(self) -> dict:
        return {
            "dim": self.index_dim,
            "flat_max": self.flat_max,
            "nprobe": self.nprobe,
            "ivf_codec": self.ivf_codec,
            "pca": self.pca.fingerprint() if self.pca is not None else None,
        }

    def _load_or_rebuild(self) -> str:
        with self._lock:
            seq = self._meta("seq")
            cids = [int(r[0]) for r in self._db.execute("SELECT id FROM collections")]
            if self.use_snapshot and self._load_snapshot(seq, cids):
                return "loaded from snapshot"
            self._indexes = {cid: self._build_collection(cid) for cid in cids}
            self._dirty = True
            return "rebuilt from the database"

    def _snapshot_dir(self) -> Path:
        return self.root / INDEX_DIR

    def _load_snapshot(self, seq: str | None, cids: list[int]) -> bool:
        manifest_path = self._snapshot_dir() / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("seq") != seq or manifest.get("params") != self._params():
                return False
            entries = manifest["collections"]
            if sorted(int(k) for k in entries) != sorted(cids):
                return False
            indexes = {}
            for cid in cids:
                entry = entries[str(cid)]
                index = faiss.read_index(str(self._snapshot_dir() / entry["file"]))
                if index.ntotal != entry["size"]:
                    return False
                indexes[cid] = _CollectionIndex(index, entry["type"], entry["trained_on"], entry.get("codec"))
                indexes[cid].set_nprobe(self.nprobe)
            counts = dict(self._db.execute("SELECT collection_id, COUNT(*) FROM faces GROUP BY collection_id").fetchall())
            if any(indexes[cid].size != counts.get(cid, 0) for cid in cids):
                return False
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            return False
        self._indexes = indexes
        self._dirty = False
        return True

    def save_snapshot(self) -> None:
        """Write the index to ``root/index`` (tagged with the database's mutation counter, so a
        stale snapshot is never loaded). Optional: without it the next start rebuilds."""
        with self._lock:
            seq = self._meta("seq")
            snap = self._snapshot_dir()
            snap.mkdir(exist_ok=True)
            entries = {}
            for cid, cindex in self._indexes.items():
                name = f"c{cid}-s{seq}.faiss"
                faiss.write_index(cindex.index, str(snap / (name + ".tmp")))
                os.replace(snap / (name + ".tmp"), snap / name)
                entries[str(cid)] = {"file": name, "type": cindex.kind, "size": cindex.size, "trained_on": cindex.trained_on,
                                     "codec": cindex.codec}
            manifest = {"seq": seq, "params": self._params(), "collections": entries}
            tmp = snap / "manifest.json.tmp"
            tmp.write_text(json.dumps(manifest))
            os.replace(tmp, snap / "manifest.json")
            keep = {e["file"] for e in entries.values()} | {"manifest.json"}
            for p in snap.iterdir():
                if p.name not in keep:
                    p.unlink(missing_ok=True)
            self._dirty = False

    def _maybe_grow(self, cid: int) -> None:
        """Switch a collection to IVF when it outgrows ``flat_max``, and retrain an IVF index
        when it has grown to 4x the data it was trained on."""
        cindex = self._indexes[cid]
        if (cindex.kind == "flat" and cindex.size > self.flat_max) or (
            cindex.kind == "ivf" and cindex.size > 4 * max(cindex.trained_on, 1)
        ):
            t0 = time.perf_counter()
            self._indexes[cid] = self._build_collection(cid)
            log.info("gallery: collection %d re-indexed as %s (%d faces) in %.2fs", cid,
                     self._indexes[cid].kind, self._indexes[cid].size, time.perf_counter() - t0)

    # -- collections ----------------------------------------------------------------------

    def create_collection(self, name: str) -> CollectionInfo:
        validate_identifier(name, "collection")
        now = time.time()
        with self._lock:
            with self._tx() as db:
                try:
                    cur = db.execute("INSERT INTO collections(name, created_at) VALUES (?, ?)", (name, now))
                except sqlite3.IntegrityError:
                    raise ConflictError(f"collection {name!r} already exists.", collection=name) from None
                self._bump(db)
            self._indexes[int(cur.lastrowid)] = _CollectionIndex.build(
                np.zeros(0, np.int64), np.zeros((0, self.index_dim), np.float32), self.index_dim, self.flat_max, self.nprobe,
                self.ivf_codec,
            )
            self._dirty = True
        return CollectionInfo(name, 0, 0, now)

    def list_collections(self) -> list[CollectionInfo]:
        with self._lock:
            rows = self._db.execute(
                """SELECT c.name, c.created_at,
                          (SELECT COUNT(*) FROM subjects s WHERE s.collection_id = c.id),
                          (SELECT COUNT(*) FROM faces f WHERE f.collection_id = c.id)
                   FROM collections c ORDER BY c.name"""
            ).fetchall()
        return [CollectionInfo(name, subjects, faces, created) for name, created, subjects, faces in rows]

    def get_collection(self, name: str) -> CollectionInfo:
        with self._lock:
            cid = self._collection_id(self._db, name)
            created = self._db.execute("SELECT created_at FROM collections WHERE id=?", (cid,)).fetchone()[0]
            subjects = self._db.execute("SELECT COUNT(*) FROM subjects WHERE collection_id=?", (cid,)).fetchone()[0]
            faces = self._db.execute("SELECT COUNT(*) FROM faces WHERE collection_id=?", (cid,)).fetchone()[0]
        return CollectionInfo(name, subjects, faces, created)

    def delete_collection(self, name: str) -> int:
        """Delete a collection with all its subjects and faces; returns the number of faces."""
        with self._lock:
            with self._tx() as db:
                cid = self._collection_id(db, name)
                n = db.execute("SELECT COUNT(*) FROM faces WHERE collection_id=?", (cid,)).fetchone()[0]
                db.execute("DELETE FROM collections WHERE id=?", (cid,))
                self._bump(db)
            self._indexes.pop(cid, None)
            self._dirty = True
        return int(n)

    # -- subjects and faces ----------------------------------------------------------------

    def enroll(self, collection: str, subject: str, embedding: np.ndarray, info: dict | None = None) -> FaceRecord:
        """Add one face (its embedding) to ``subject`` (created if new). Durable when it returns."""
        return self.enroll_many(collection, [(subject, embedding, info or {})])[0]

    def enroll_many(self, collection: str, items: Sequence[tuple[str, np.ndarray, dict]]) -> list[FaceRecord]:
        """Add several faces in one transaction (all or nothing)."""
        for subject, _, _ in items:
            validate_identifier(subject, "subject")
        vectors = np.stack([np.asarray(e, dtype=np.float32).reshape(-1) for _, e, _ in items]) if items else np.zeros((0, self.dim), np.float32)
        if vectors.shape[1] != self.dim:
            raise DimensionMismatchError(f"embeddings must be {self.dim}-d, got {vectors.shape[1]}-d.")
        if not np.isfinite(vectors).all():
            raise GalleryError("embeddings contain NaN or infinity.")
        vectors = l2_normalize(vectors)
        now = time.time()
        records, ids = [], []
        with self._lock:
            with self._tx() as db:
                cid = self._collection_id(db, collection)
                subject_ids: dict[str, int] = {}
                for (subject, _, info), vec in zip(items, vectors):
                    sid = subject_ids.get(subject)
                    if sid is None:
                        db.execute("INSERT OR IGNORE INTO subjects(collection_id, name, created_at) VALUES (?, ?, ?)", (cid, subject, now))
                        sid = db.execute("SELECT id FROM subjects WHERE collection_id=? AND name=?", (cid, subject)).fetchone()[0]
                        subject_ids[subject] = sid
                    uid = uuid.uuid4().hex
                    cur = db.execute(
                        "INSERT INTO faces(uid, subject_id, collection_id, embedding, info, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (uid, sid, cid, vec.tobytes(), json.dumps(info or {}), now),
                    )
                    ids.append(int(cur.lastrowid))
                    records.append(FaceRecord(uid, collection, subject, now, dict(info or {})))
                self._bump(db)
            # Committed (fsync'd). The index is updated while we still hold the lock, so no reader
            # ever sees a committed face missing from search; if the index update fails, the
            # collection's index is rebuilt from the database, which already has the face.
            self._dirty = True
            try:
                self._indexes[cid].add(np.asarray(ids, np.int64), self._index_vectors(vectors))
                self._maybe_grow(cid)
            except Exception:
                log.exception("gallery: index update failed; rebuilding collection %d from the database", cid)
                self._indexes[cid] = self._build_collection(cid)
        return records

    def list_subjects(self, collection: str) -> list[SubjectInfo]:
        with self._lock:
            cid = self._collection_id(self._db, collection)
            rows = self._db.execute(
                """SELECT s.name, s.created_at, (SELECT COUNT(*) FROM faces f WHERE f.subject_id = s.id)
                   FROM subjects s WHERE s.collection_id=? ORDER BY s.name""",
                (cid,),
            ).fetchall()
        return [SubjectInfo(name, faces, created) for name, created, faces in rows]

    def list_faces(self, collection: str, subject: str | None = None) -> list[FaceRecord]:
        with self._lock:
            cid = self._collection_id(self._db, collection)
            sql = """SELECT f.uid, s.name, f.created_at, f.info FROM faces f JOIN subjects s ON s.id = f.subject_id
                     WHERE f.collection_id=?"""
            args: tuple = (cid,)
            if subject is not None:
                validate_identifier(subject, "subject")
                if self._db.execute("SELECT 1 FROM subjects WHERE collection_id=? AND name=?", (cid, subject)).fetchone() is None:
                    raise NotFoundError(f"subject {subject!r} does not exist in collection {collection!r}.", subject=subject)
                sql += " AND s.name=?"
                args = (cid, subject)
            rows = self._db.execute(sql + " ORDER BY f.id", args).fetchall()
        return [FaceRecord(uid, collection, name, created, json.loads(info)) for uid, name, created, info in rows]

    def delete_face(self, collection: str, face_id: str) -> FaceRecord:
        validate_face_id(face_id)
        with self._lock:
            with self._tx() as db:
                cid = self._collection_id(db, collection)
                row = db.execute(
                    """SELECT f.id, s.name, f.created_at, f.info FROM faces f JOIN subjects s ON s.id = f.subject_id
                       WHERE f.collection_id=? AND f.uid=?""",
                    (cid, face_id),
                ).fetchone()
                if row is None:
                    raise NotFoundError(f"face {face_id} does not exist in collection {collection!r}.", face_id=face_id)
                db.execute("DELETE FROM faces WHERE id=?", (row[0],))
                self._bump(db)
            self._indexes[cid].remove([row[0]])
            self._dirty = True
        return FaceRecord(face_id, collection, row[1], row[2], json.loads(row[3]))

    def delete_subject(self, collection: str, subject: str) -> int:
        """Delete a subject and all its faces; returns the number of faces removed."""
        validate_identifier(subject, "subject")
        with self._lock:
            with self._tx() as db:
                cid = self._collection_id(db, collection)
                row = db.execute("SELECT id FROM subjects WHERE collection_id=? AND name=?", (cid, subject)).fetchone()
                if row is None:
                    raise NotFoundError(f"subject {subject!r} does not exist in collection {collection!r}.", subject=subject)
                face_ids = [r[0] for r in db.execute("SELECT id FROM faces WHERE subject_id=?", (row[0],))]
                db.execute("DELETE FROM subjects WHERE id=?", (row[0],))
                self._bump(db)
            self._indexes[cid].remove(face_ids)
            self._dirty = True
        return len(face_ids)

    # -- search ---------------------------------------------------------------------------

    def search(self, collection: str, embedding: np.ndarray, k: int = 10) -> list[Hit]:
        """The ``k`` most similar faces, best first. The index (IVF and/or PCA: approximate)
        proposes the candidates; their similarity is the exact cosine of the full stored
        embeddings, so it is the same number /verify would give and the calibrated threshold applies."""
        query = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.dim:
            raise DimensionMismatchError(f"the query must be {self.dim}-d, got {query.shape[1]}-d.")
        if not np.isfinite(query).all():
            raise GalleryError("the query contains NaN or infinity.")
        full = l2_normalize(query)[0]
        indexed = self._index_vectors(query)
        with self._lock:
            cid = self._collection_id(self._db, collection)
            cindex = self._indexes[cid]
            if cindex.size == 0:
                return []
            approximate = cindex.kind != "flat" or self.pca is not None
            _, ids = cindex.search(indexed, max(k, self.rerank) if approximate else k, self.search_threads)
            candidates = [int(i) for i in ids[0] if i >= 0]
            if not candidates:
                return []
            marks = ",".join("?" * len(candidates))
            rows = self._db.execute(
                f"""SELECT f.uid, s.name, f.embedding FROM faces f JOIN subjects s ON s.id = f.subject_id
                    WHERE f.id IN ({marks})""",
                candidates,
            ).fetchall()
        if not rows:
            return []
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        scores = np.clip(vectors @ full, -1.0, 1.0)
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(rows[i][0], rows[i][1], float(scores[i])) for i in order]

    def identify(self, collection: str, embedding: np.ndarray, k: int = 5) -> list[SubjectMatch]:
        """The top-``k`` subjects, each scored by its best face. Searches ``max(4k, 50)`` faces, so a
        subject with very many near-duplicate faces cannot crowd the others out of the top-k."""
        hits = self.search(collection, embedding, k=max(4 * k, 50))
        best: dict[str, SubjectMatch] = {}
        for hit in hits:
            if hit.subject not in best:
                best[hit.subject] = SubjectMatch(hit.subject, hit.similarity, hit.face_id)
        return sorted(best.values(), key=lambda m: -m.similarity)[:k]

    # -- status ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def size(self) -> int:
        with self._lock:
            return sum(ci.size for ci in self._indexes.values())

    def index_bytes(self, collection: str) -> int:
        """Size of the collection's search index in memory (its serialised FAISS index: codes,
        ids, coarse centroids; the SQLite database is not counted)."""
        with self._lock:
            cindex = self._indexes[self._collection_id(self._db, collection)]
            return int(faiss.serialize_index(cindex.index).size)

    def db_face_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM faces").fetchone()[0])

    def describe(self) -> dict:
        """Index type per collection, for /health."""
        with self._lock:
            names = dict(self._db.execute("SELECT id, name FROM collections").fetchall())
            per = {names[cid]: ci.describe() for cid, ci in self._indexes.items() if cid in names}
        kinds = {d["type"] for d in per.values()}
        return {
            "index_type": (kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "flat")),
            "faces": sum(d["size"] for d in per.values()),
            "collections": per,
            "flat_max": self.flat_max,
            "pca": None if self.pca is None else {"in_dim": self.pca.in_dim, "out_dim": self.pca.out_dim},
            "dim": self.dim,
        }

    def integrity_check(self) -> str:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self, snapshot: bool = True) -> None:
        with self._lock:
            if self._closed:
                return
            if snapshot and self.use_snapshot and self._dirty:
                try:
                    self.save_snapshot()
                except (OSError, RuntimeError) as exc:  # a snapshot is an optimisation; the DB is the truth
                    log.warning("gallery: could not save the index snapshot (%s); the next start rebuilds it", exc)
            self._db.close()
            self._closed = True

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# command line: fit the optional PCA projection


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".webp", ".bmp"}


def fit_pca_main(argv: list[str] | None = None) -> int:
    """``python -m faceverify.gallery fit-pca IMAGES --model M --components 128 --out pca.npz``:
    embed photos of *training* identities (not the gallery's people) with the served model and fit
    the projection ``faceverify serve --pca`` uses."""
    import argparse
    import sys

    from .image import load_image
    from .verify import Verifier

    p = argparse.ArgumentParser(prog="python -m faceverify.gallery fit-pca", description=fit_pca_main.__doc__)
    p.add_argument("images", help="a folder of photos, searched recursively (e.g. a training set)")
    p.add_argument("--model", default=None, help="the model the service serves (default: models/default)")
    p.add_argument("--components", type=int, default=128)
    p.add_argument("--limit", type=int, default=5000, help="at most this many photos")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads while embedding")
    args = p.parse_args(argv)
    import torch

    previous_threads = torch.get_num_threads()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        verifier = Verifier.from_model(args.model)
        paths = sorted(q for q in Path(args.images).rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
        vectors, skipped = [], 0
        for start in range(0, len(paths), 32):
            batch = []
            for path in paths[start : start + 32]:
                try:
                    batch.append(load_image(path))
                except FaceverifyError:
                    skipped += 1
            for result in verifier.embed_faces(batch) if batch else []:
                if isinstance(result, FaceverifyError):
                    skipped += 1
                else:
                    vectors.append(result.vector)
        if len(vectors) <= args.components:
            raise ConfigError(f"{len(vectors)} faces embedded from {args.images}: need more than --components {args.components}.")
        pca = PCAProjection.fit(np.stack(vectors), args.components)
        pca.save(args.out)
    except FaceverifyError as exc:
        print(f"fit-pca: {exc.message}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(previous_threads)
    print(json.dumps({"out": args.out, "faces": len(vectors), "skipped": skipped, "in_dim": pca.in_dim,
                      "out_dim": pca.out_dim, "explained_variance": round(pca.explained_variance or 0.0, 4)}))
    return 0


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2 or sys.argv[1] != "fit-pca":
        print("usage: python -m faceverify.gallery fit-pca IMAGES --model M --components N --out pca.npz", file=sys.stderr)
        sys.exit(2)
    sys.exit(fit_pca_main(sys.argv[2:]))
