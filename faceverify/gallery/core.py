"""The gallery: a store (the truth) plus one FAISS index per collection (derived data)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from ..errors import ConfigError
from .common import (
    CollectionInfo,
    DimensionMismatchError,
    FaceRecord,
    GalleryError,
    Hit,
    NotFoundError,
    PCAProjection,
    SubjectInfo,
    SubjectMatch,
    l2_normalize,
    validate_face_id,
    validate_identifier,
)
from .index import DEFAULT_RERANK, IVF_CODECS, CollectionIndex
from .storage import (
    COLLECTION_CREATED,
    COLLECTION_DELETED,
    FACES_ADDED,
    FACES_REMOVED,
    Change,
    NewFace,
    Storage,
    is_postgres_url,
    vectors_from_bytes,
)

log = logging.getLogger("faceverify.gallery")


def open_storage(location: str | os.PathLike) -> Storage:
    """``postgresql://USER@HOST:PORT/DB`` -> PostgreSQL; anything else is a SQLite directory."""
    if is_postgres_url(str(location)):
        from .storage_postgres import PostgresStorage

        return PostgresStorage(str(location))
    from .storage_sqlite import SQLiteStorage

    return SQLiteStorage(location)


class _Gap(Exception):
    """A change arrived out of order: replay the log (or rebuild) instead."""


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
    orders them); ``_lock`` guards the indexes and the applied change sequence ``_seq``. Every
    change is applied to the indexes exactly once, in sequence order, whoever made it.
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
        self.flat_max = int(flat_max)
        self.nprobe = None if nprobe is None else int(nprobe)
        if ivf_codec not in IVF_CODECS:
            raise ConfigError(f"unknown IVF codec {ivf_codec!r}; choose one of {IVF_CODECS}.")
        self.ivf_codec = ivf_codec
        self.rerank = max(1, int(rerank))
        self.pca = pca
        self.use_snapshot = use_snapshot and self.storage.snapshot_dir is not None
        self.search_threads = int(search_threads)
        if pca is not None and pca.in_dim != self.dim:
            raise ConfigError(f"the PCA projection expects {pca.in_dim}-d embeddings but the model gives {self.dim}-d.")
        self.index_dim = pca.out_dim if pca is not None else self.dim
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._indexes: dict[int, CollectionIndex] = {}
        self._names: dict[str, int] = {}
        self._seq = 0
        self._dirty = False
        self._closed = False
        self._follow_state: dict = {}
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.storage.open(self.dim, model_id)
        try:
            t0 = time.perf_counter()
            how = self._load_or_rebuild()
        except BaseException:
            self.storage.close()
            raise
        log.info("gallery %s: %d faces, index %s in %.2fs", self.storage.location, self.size, how, time.perf_counter() - t0)
        if self.storage.follows and follow:
            self._follower = threading.Thread(target=self.storage.listen, name="gallery-follower", daemon=True,
                                              args=(self._catch_up_quietly, self._stop, self._follow_state))
            self._follower.start()

    # -- index ----------------------------------------------------------------------------

    def _index_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = l2_normalize(vectors)
        if self.pca is not None:
            vectors = self.pca.transform(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _empty_index(self, seq: int) -> CollectionIndex:
        return CollectionIndex.build(np.zeros(0, np.int64), np.zeros((0, self.index_dim), np.float32), self.index_dim,
                                     self.flat_max, self.nprobe, self.ivf_codec, seq)

    def _build_from(self, snap, cid: int) -> CollectionIndex:
        # Streamed into one preallocated array: at 1M x 512 the rows, a joined copy and a
        # normalised copy would each be 2 GB; this way the peak is the array plus one chunk.
        n = snap.face_count(cid)
        ids = np.empty(n, np.int64)
        vectors = np.empty((n, self.index_dim), np.float32)
        filled = 0
        for chunk_ids, blobs in snap.stream(cid):
            end = filled + len(chunk_ids)
            ids[filled:end] = chunk_ids
            vectors[filled:end] = self._index_vectors(vectors_from_bytes(blobs, self.dim))
            filled = end
        return CollectionIndex.build(ids[:filled], vectors[:filled], self.index_dim, self.flat_max, self.nprobe,
                                     self.ivf_codec, snap.seq)

    def _build_collection(self, cid: int) -> CollectionIndex:
        """Re-index one collection from a consistent snapshot (tagged with its sequence number,
        so changes already in it are not applied twice)."""
        with self.storage.snapshot() as snap:
            return self._build_from(snap, cid)

    def _rebuild_all(self) -> None:
        # built outside _lock (searches go on meanwhile); indexes and cursor are swapped together
        with self.storage.snapshot() as snap:
            indexes = {cid: self._build_from(snap, cid) for cid in snap.collections}
            names, seq = {name: cid for cid, name in snap.collections.items()}, snap.seq
        with self._lock:
            self._indexes, self._names, self._seq, self._dirty = indexes, names, seq, True

    def _params(self) -> dict:
        return {
            "dim": self.index_dim,
            "flat_max": self.flat_max,
            "nprobe": self.nprobe,
            "ivf_codec": self.ivf_codec,
            "pca": self.pca.fingerprint() if self.pca is not None else None,
        }

    def _load_or_rebuild(self) -> str:
        if self.use_snapshot and self._load_snapshot():
            return "loaded from snapshot"
        self._rebuild_all()
        return "rebuilt from the database"

    def _load_snapshot(self) -> bool:
        snap_dir = self.storage.snapshot_dir
        try:
            manifest = json.loads((snap_dir / "manifest.json").read_text())
            with self.storage.snapshot() as snap:
                if manifest.get("seq") != str(snap.seq) or manifest.get("params") != self._params():
                    return False
                entries = manifest["collections"]
                if sorted(int(k) for k in entries) != sorted(snap.collections):
                    return False
                indexes = {}
                for cid in snap.collections:
                    entry = entries[str(cid)]
                    index = faiss.read_index(str(snap_dir / entry["file"]))
                    if index.ntotal != entry["size"]:
                        return False
                    indexes[cid] = CollectionIndex(index, entry["type"], entry["trained_on"], entry.get("codec"), snap.seq)
                    indexes[cid].set_nprobe(self.nprobe)
                counts = snap.face_counts()
                if any(indexes[cid].size != counts.get(cid, 0) for cid in snap.collections):
                    return False
                names = {name: cid for cid, name in snap.collections.items()}
                seq = snap.seq
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            return False
        with self._lock:
            self._indexes, self._names, self._seq, self._dirty = indexes, names, seq, False
        return True

    def save_snapshot(self) -> None:
        """Write the index to ``root/index`` (tagged with the store's change sequence, so a stale
        snapshot is never loaded). Optional: without it the next start rebuilds. SQLite only."""
        snap = self.storage.snapshot_dir
        if snap is None:
            return
        with self._lock:
            seq = str(self._seq)
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

    # -- applying changes -----------------------------------------------------------------

    def _apply(self, changes: Sequence[Change]) -> None:
        """Apply changes in sequence order (caller holds ``_lock``); those already applied are skipped."""
        for ch in changes:
            if ch.seq <= self._seq:
                continue
            if ch.seq != self._seq + 1:
                raise _Gap(ch.seq)
            self._apply_one(ch)
            self._seq = ch.seq
            self._dirty = True

    def _apply_one(self, ch: Change) -> None:
        cid = ch.collection_id
        if ch.kind == COLLECTION_CREATED:
            if cid not in self._indexes:
                self._indexes[cid] = self._empty_index(ch.seq)
            self._names[ch.name] = cid
            return
        if ch.kind == COLLECTION_DELETED:
            self._indexes.pop(cid, None)
            if self._names.get(ch.name) == cid:
                del self._names[ch.name]
            return
        cindex = self._indexes.get(cid)
        if cindex is None or ch.seq <= cindex.seq:  # collection gone since, or re-indexed with this change in it
            return
        if ch.kind == FACES_REMOVED:
            cindex.remove(ch.face_ids.tolist())
        elif ch.kind == FACES_ADDED and len(ch.face_ids):
            # the store already has the faces; if the index update fails, the collection is
            # rebuilt from the store, which then includes them
            try:
                cindex.add(ch.face_ids, self._index_vectors(ch.vectors))
                self._maybe_grow(cid)
            except Exception:
                log.exception("gallery: index update failed; rebuilding collection %d from the database", cid)
                self._indexes[cid] = self._build_collection(cid)

    def _committed(self, change: Change) -> None:
        """Our own committed change: apply it now (read-your-writes: the caller acknowledges the
        request only after this). Changes of other replicas committed before it come first."""
        with self._lock:
            if change.seq <= self._seq:
                return
            if change.seq == self._seq + 1:
                self._apply([change])
                return
        self._catch_up()
        with self._lock:
            if self._seq < change.seq:  # cannot happen unless the log was pruned; be safe
                raise GalleryError(f"the gallery index is behind the store (at {self._seq}, need {change.seq}).")

    def _catch_up(self) -> None:
        """Apply every change the store has after ours (other replicas' writes)."""
        limit = 10_000
        while True:
            with self._lock:
                since = self._seq
            changes = self.storage.changes_since(since, limit)
            if changes is None:
                log.warning("gallery: the change log does not reach back to %d; rebuilding the index", since)
                self._rebuild_all()
                return
            if not changes:
                return
            try:
                with self._lock:
                    self._apply(changes)
            except _Gap:
                self._rebuild_all()
                return
            if len(changes) < limit:
                return

    def _catch_up_quietly(self) -> None:
        if not self._closed:
            self._catch_up()

    def sync(self) -> int:
        """Apply every change already committed in the store; returns the applied sequence number."""
        self._catch_up()
        return self.seq

    @property
    def seq(self) -> int:
        with self._lock:
            return self._seq

    # -- collections ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError("the gallery is closed")

    def create_collection(self, name: str) -> CollectionInfo:
        validate_identifier(name, "collection")
        self._check_open()
        now = time.time()
        with self._write_lock:
            self._committed(self.storage.create_collection(name, now))
        return CollectionInfo(name, 0, 0, now)

    def list_collections(self) -> list[CollectionInfo]:
        return self.storage.list_collections()

    def get_collection(self, name: str) -> CollectionInfo:
        validate_identifier(name, "collection")
        return self.storage.get_collection(name)

    def require_collection(self, name: str) -> None:
        """NotFoundError unless this replica's index has the collection (cheap: no database)."""
        validate_identifier(name, "collection")
        with self._lock:
            if name not in self._names:
                raise NotFoundError(f"collection {name!r} does not exist; create it first (POST /collections).", collection=name)

    def delete_collection(self, name: str) -> int:
        """Delete a collection with all its subjects and faces; returns the number of faces."""
        validate_identifier(name, "collection")
        self._check_open()
        with self._write_lock:
            n, change = self.storage.delete_collection(name)
            self._committed(change)
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
            self._committed(change)
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
            self._committed(change)
        return record

    def delete_subject(self, collection: str, subject: str) -> int:
        """Delete a subject and all its faces; returns the number of faces removed."""
        validate_identifier(collection, "collection")
        validate_identifier(subject, "subject")
        self._check_open()
        with self._write_lock:
            n, change = self.storage.delete_subject(collection, subject)
            self._committed(change)
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
        indexed = self._index_vectors(query)
        self.require_collection(collection)
        with self._lock:
            cindex = self._indexes[self._names[collection]]
            if cindex.size == 0:
                return []
            approximate = cindex.kind != "flat" or self.pca is not None
            _, ids = cindex.search(indexed, max(k, self.rerank) if approximate else k, self.search_threads)
        candidates = [int(i) for i in ids[0] if i >= 0]
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
        with self._lock:
            return sum(ci.size for ci in self._indexes.values())

    def index_bytes(self, collection: str) -> int:
        """Size of the collection's search index in memory (its serialised FAISS index: codes,
        ids, coarse centroids; the database is not counted)."""
        self.require_collection(collection)
        with self._lock:
            return int(faiss.serialize_index(self._indexes[self._names[collection]].index).size)

    def db_face_count(self) -> int:
        return self.storage.face_count()

    def describe(self) -> dict:
        """Index type per collection, and the store (for /health). Needs no database round trip."""
        with self._lock:
            per = {name: self._indexes[cid].describe() for name, cid in self._names.items() if cid in self._indexes}
            seq = self._seq
        kinds = {d["type"] for d in per.values()}
        store = {**self.storage.status(), "seq": seq}
        if self._follower is not None:
            store.update(following=True, connected=bool(self._follow_state.get("connected")),
                         reconnects=int(self._follow_state.get("reconnects", 0)))
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
            self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=5)
        with self._lock:
            if snapshot and self.use_snapshot and self._dirty:
                try:
                    self.save_snapshot()
                except (OSError, RuntimeError) as exc:  # a snapshot is an optimisation; the DB is the truth
                    log.warning("gallery: could not save the index snapshot (%s); the next start rebuilds it", exc)
            self.storage.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
