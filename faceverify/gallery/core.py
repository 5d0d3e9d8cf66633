"""The gallery: a store (the truth) plus one FAISS index per collection (derived data)."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DimensionMismatchError, GalleryError
from .change_follower import ChangeFollower
from .collection_index import DEFAULT_RERANK
from .identifiers import validate_face_id, validate_identifier
from .index_set import IndexSet
from .projection import PCAProjection
from .records import CollectionInfo, FaceRecord, Hit, SubjectInfo, SubjectMatch
from .storage import NewFace, Storage, is_postgres_url
from .vectors import l2_normalize, vectors_from_bytes

log = logging.getLogger("faceverify.gallery")


def open_storage(location: str | os.PathLike) -> Storage:
    """``postgresql://USER@HOST:PORT/DB`` -> PostgreSQL; anything else is a SQLite directory."""
    if is_postgres_url(str(location)):
        from .storage_postgres import PostgresStorage

        return PostgresStorage(str(location))
    from .storage_sqlite import SQLiteStorage

    return SQLiteStorage(location)


class Gallery:
    """A persistent face gallery stored in ``root``: a directory (SQLite, one process) or a
    ``postgresql://`` URL (shared by several service replicas, each following the others'
    changes through LISTEN/NOTIFY and the change sequence).

    ``dim``: the embedding size of the model that fills it (checked against the stored one);
    ``model_id``: a fingerprint of that model — embeddings of different models are not
    comparable, so a gallery refuses to open with another model. ``flat_max``: the largest
    collection kept in an exact index; ``ivf_codec``: how larger ones store vectors (``pq4fs``,
    ``sq8`` or ``flat``); ``nprobe``: IVF lists searched per query (None: ``AUTO_NPROBE_FRACTION`` of them);
    ``rerank``: candidates the index proposes at least, re-scored exactly. ``pca``: optional
    projection for the index. ``use_snapshot``: load/save the index snapshot (SQLite only).
    ``search_threads``: OpenMP threads per query (1: concurrency comes from concurrent requests).
    ``follow``: with PostgreSQL, follow other replicas' changes in a background thread.

    Thread-safe: writes are serialised per process (``_write_lock``; across replicas the database
    orders them). The indexes are an :class:`IndexSet` (``indexes``, which builds, snapshots and
    changes them) kept in step with the store by a :class:`ChangeFollower`; this class checks the
    input, passes each write to the store and its change to the follower, and re-scores searches.
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
        follow: bool = True,
    ):
        self.storage = open_storage(root)
        self.root = Path(root) if self.storage.kind == "sqlite" else self.storage.location
        self.dim = int(dim)
        self.model_id = model_id
        self.indexes = IndexSet(self.storage, self.dim, flat_max=flat_max, nprobe=nprobe, ivf_codec=ivf_codec,
                                rerank=rerank, pca=pca, use_snapshot=use_snapshot, search_threads=search_threads)
        self._write_lock = threading.Lock()
        self._closed = False
        self.storage.open(self.dim, model_id)
        try:
            t0 = time.perf_counter()
            how = self.indexes.load_or_rebuild()
        except BaseException:
            self.storage.close()
            raise
        log.info("gallery %s: %d faces, index %s in %.2fs", self.storage.location, self.size, how, time.perf_counter() - t0)
        self.follower = ChangeFollower(self.storage, self.indexes, follow)

    # the index settings (the IndexSet owns them)
    flat_max = property(lambda self: self.indexes.flat_max)
    nprobe = property(lambda self: self.indexes.nprobe)
    ivf_codec = property(lambda self: self.indexes.ivf_codec)
    rerank = property(lambda self: self.indexes.rerank)
    pca = property(lambda self: self.indexes.pca)
    use_snapshot = property(lambda self: self.indexes.use_snapshot)
    search_threads = property(lambda self: self.indexes.search_threads)
    index_dim = property(lambda self: self.indexes.index_dim)

    def save_snapshot(self) -> None:
        """Write the index to ``root/index`` (see :meth:`IndexSet.save_snapshot`). SQLite only."""
        self.indexes.save_snapshot()

    def sync(self) -> int:
        """Apply every change already committed in the store; returns the applied sequence number."""
        self.follower.catch_up()
        return self.seq

    @property
    def seq(self) -> int:
        return self.indexes.seq

    # -- collections ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError("the gallery is closed")

    def create_collection(self, name: str) -> CollectionInfo:
        validate_identifier(name, "collection")
        self._check_open()
        now = time.time()
        with self._write_lock:
            self.follower.committed(self.storage.create_collection(name, now))
        return CollectionInfo(name, 0, 0, now)

    def list_collections(self) -> list[CollectionInfo]:
        return self.storage.list_collections()

    def get_collection(self, name: str) -> CollectionInfo:
        validate_identifier(name, "collection")
        return self.storage.get_collection(name)

    def require_collection(self, name: str) -> None:
        """NotFoundError unless this replica's index has the collection (cheap: no database)."""
        validate_identifier(name, "collection")
        self.indexes.require(name)

    def delete_collection(self, name: str) -> int:
        """Delete a collection with all its subjects and faces; returns the number of faces."""
        validate_identifier(name, "collection")
        self._check_open()
        with self._write_lock:
            n, change = self.storage.delete_collection(name)
            self.follower.committed(change)
        return n

    # -- subjects and faces ----------------------------------------------------------------

    def enroll(self, collection: str, subject: str, embedding: np.ndarray, info: dict | None = None) -> FaceRecord:
        """Add one face (its embedding) to ``subject`` (created if new). Durable when it returns."""
        return self.enroll_many(collection, [(subject, embedding, info or {})])[0]

    def enroll_many(self, collection: str, items: Sequence[tuple[str, np.ndarray, dict]]) -> list[FaceRecord]:
        """Add several faces in one transaction (all or nothing)."""
        validate_identifier(collection, "collection")
        for subject, _, _ in items:
            validate_identifier(subject, "subject")
        vectors = np.stack([np.asarray(e, dtype=np.float32).reshape(-1) for _, e, _ in items]) if items else np.zeros((0, self.dim), np.float32)
        if vectors.shape[1] != self.dim:
            raise DimensionMismatchError(f"embeddings must be {self.dim}-d, got {vectors.shape[1]}-d.")
        if not np.isfinite(vectors).all():
            raise GalleryError("embeddings contain NaN or infinity.")
        self._check_open()
        vectors = l2_normalize(vectors)
        now = time.time()
        faces = [NewFace(subject, vec.tobytes(), dict(info or {})) for (subject, _, info), vec in zip(items, vectors)]
        with self._write_lock:
            uids, change = self.storage.enroll(collection, faces, now)
            # Committed (durable). The index is updated before we return, so the caller never
            # acknowledges a face its own search cannot find yet.
            change.vectors = vectors
            self.follower.committed(change)
        return [FaceRecord(uid, collection, f.subject, now, f.info) for uid, f in zip(uids, faces)]

    def list_subjects(self, collection: str) -> list[SubjectInfo]:
        validate_identifier(collection, "collection")
        return self.storage.list_subjects(collection)

    def list_faces(self, collection: str, subject: str | None = None) -> list[FaceRecord]:
        validate_identifier(collection, "collection")
        if subject is not None:
            validate_identifier(subject, "subject")
        return self.storage.list_faces(collection, subject)

    def delete_face(self, collection: str, face_id: str) -> FaceRecord:
        validate_identifier(collection, "collection")
        validate_face_id(face_id)
        self._check_open()
        with self._write_lock:
            record, change = self.storage.delete_face(collection, face_id)
            self.follower.committed(change)
        return record

    def delete_subject(self, collection: str, subject: str) -> int:
        """Delete a subject and all its faces; returns the number of faces removed."""
        validate_identifier(collection, "collection")
        validate_identifier(subject, "subject")
        self._check_open()
        with self._write_lock:
            n, change = self.storage.delete_subject(collection, subject)
            self.follower.committed(change)
        return n

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
        validate_identifier(collection, "collection")
        candidates = self.indexes.candidates(collection, query, k)
        if not candidates:
            return []
        # a candidate deleted since the index lookup is simply not returned
        rows = self.storage.candidates(candidates)
        if not rows:
            return []
        vectors = vectors_from_bytes([r[3] for r in rows], self.dim)
        scores = np.clip(vectors @ full, -1.0, 1.0)
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(rows[i][1], rows[i][2], float(scores[i])) for i in order]

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
        return self.indexes.size

    def index_bytes(self, collection: str) -> int:
        """Size of the collection's search index in memory (see :meth:`IndexSet.index_bytes`)."""
        validate_identifier(collection, "collection")
        return self.indexes.index_bytes(collection)

    def db_face_count(self) -> int:
        return self.storage.face_count()

    def describe(self) -> dict:
        """Index type per collection, and the store (for /health). Needs no database round trip."""
        per, seq = self.indexes.describe()
        kinds = {d["type"] for d in per.values()}
        store = {**self.storage.status(), "seq": seq, **self.follower.status()}
        return {
            "index_type": (kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "flat")),
            "faces": sum(d["size"] for d in per.values()),
            "collections": per,
            "flat_max": self.flat_max,
            "pca": None if self.pca is None else {"in_dim": self.pca.in_dim, "out_dim": self.pca.out_dim},
            "dim": self.dim,
            "store": store,
        }

    def integrity_check(self) -> str:
        return self.storage.integrity_check()

    def close(self, snapshot: bool = True) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
        self.follower.stop()
        with self.indexes.lock:
            if snapshot and self.use_snapshot and self.indexes.dirty:
                try:
                    self.indexes.save_snapshot()
                except (OSError, RuntimeError) as exc:  # a snapshot is an optimisation; the DB is the truth
                    log.warning("gallery: could not save the index snapshot (%s); the next start rebuilds it", exc)
            self.storage.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
