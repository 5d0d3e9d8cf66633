"""The gallery's search indexes, one :class:`CollectionIndex` per collection, at one change
sequence: built from a consistent snapshot of the store, saved to and loaded from an on-disk
snapshot (SQLite), and changed one :class:`~.storage.Change` at a time, in sequence order."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Sequence

import faiss
import numpy as np

from ..errors import ConfigError
from .collection_index import DEFAULT_RERANK, IVF_CODECS, CollectionIndex
from .identifiers import not_found
from .projection import PCAProjection
from .storage import COLLECTION_CREATED, COLLECTION_DELETED, FACES_ADDED, FACES_REMOVED, Change, Snapshot, Storage
from .vectors import l2_normalize, vectors_from_bytes

log = logging.getLogger("faceverify.gallery")


class ChangeGap(Exception):
    """A change arrived out of order: replay the log (or rebuild) instead."""


class IndexSet:
    """The per-collection indexes of one store, with the change sequence ``seq`` they reflect.

    ``dim``: the stored embeddings' size; the other settings are :class:`~.core.Gallery`'s.
    ``lock`` guards the indexes, the collection names and ``seq`` (re-entrant: a change that
    re-indexes a collection builds it under the lock). Every change is applied exactly once."""

    def __init__(self, storage: Storage, dim: int, *, flat_max: int = 20_000, nprobe: int | None = None,
                 ivf_codec: str = "pq4fs", rerank: int = DEFAULT_RERANK, pca: PCAProjection | None = None,
                 use_snapshot: bool = True, search_threads: int = 1):
        if ivf_codec not in IVF_CODECS:
            raise ConfigError(f"unknown IVF codec {ivf_codec!r}; choose one of {IVF_CODECS}.")
        if pca is not None and pca.in_dim != dim:
            raise ConfigError(f"the PCA projection expects {pca.in_dim}-d embeddings but the model gives {dim}-d.")
        self.storage = storage
        self.dim = int(dim)
        self.flat_max = int(flat_max)
        self.nprobe = None if nprobe is None else int(nprobe)
        self.ivf_codec = ivf_codec
        self.rerank = max(1, int(rerank))
        self.pca = pca
        self.use_snapshot = use_snapshot and storage.snapshot_dir is not None
        self.search_threads = int(search_threads)
        self.index_dim = pca.out_dim if pca is not None else self.dim
        self.lock = threading.RLock()
        self._indexes: dict[int, CollectionIndex] = {}
        self._names: dict[str, int] = {}
        self._seq = 0
        self.dirty = False  # changed since the on-disk snapshot

    @property
    def seq(self) -> int:
        with self.lock:
            return self._seq

    # -- building ---------------------------------------------------------------------------

    def index_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Embeddings as the index holds them: unit length, projected if there is a PCA."""
        vectors = l2_normalize(vectors)
        if self.pca is not None:
            vectors = self.pca.transform(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _empty_index(self, seq: int) -> CollectionIndex:
        return CollectionIndex.build(np.zeros(0, np.int64), np.zeros((0, self.index_dim), np.float32), self.index_dim,
                                     self.flat_max, self.nprobe, self.ivf_codec, seq)

    def _build_from(self, snap: Snapshot, cid: int) -> CollectionIndex:
        # Streamed into one preallocated array: at 1M x 512 the rows, a joined copy and a
        # normalised copy would each be 2 GB; this way the peak is the array plus one chunk.
        n = snap.face_count(cid)
        ids = np.empty(n, np.int64)
        vectors = np.empty((n, self.index_dim), np.float32)
        filled = 0
        for chunk_ids, blobs in snap.stream(cid):
            end = filled + len(chunk_ids)
            ids[filled:end] = chunk_ids
            vectors[filled:end] = self.index_vectors(vectors_from_bytes(blobs, self.dim))
            filled = end
        return CollectionIndex.build(ids[:filled], vectors[:filled], self.index_dim, self.flat_max, self.nprobe,
                                     self.ivf_codec, snap.seq)

    def _build_collection(self, cid: int) -> CollectionIndex:
        """Re-index one collection from a consistent snapshot (tagged with its sequence number,
        so changes already in it are not applied twice)."""
        with self.storage.snapshot() as snap:
            return self._build_from(snap, cid)

    def rebuild(self) -> None:
        """Every collection afresh from the store."""
        # built outside the lock (searches go on meanwhile); indexes and cursor are swapped together
        with self.storage.snapshot() as snap:
            indexes = {cid: self._build_from(snap, cid) for cid in snap.collections}
            names, seq = {name: cid for cid, name in snap.collections.items()}, snap.seq
        with self.lock:
            self._indexes, self._names, self._seq, self.dirty = indexes, names, seq, True

    def load_or_rebuild(self) -> str:
        """Load the on-disk snapshot if it provably matches the store, else rebuild; says which."""
        if self.use_snapshot and self._load_snapshot():
            return "loaded from snapshot"
        self.rebuild()
        return "rebuilt from the database"

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

    # -- the on-disk snapshot (derived data: loaded only when it matches the store exactly) ---

    def _params(self) -> dict:
        return {
            "dim": self.index_dim,
            "flat_max": self.flat_max,
            "nprobe": self.nprobe,
            "ivf_codec": self.ivf_codec,
            "pca": self.pca.fingerprint() if self.pca is not None else None,
        }

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
        with self.lock:
            self._indexes, self._names, self._seq, self.dirty = indexes, names, seq, False
        return True

    def save_snapshot(self) -> None:
        """Write the indexes to the store's snapshot directory (tagged with the change sequence, so
        a stale snapshot is never loaded). Optional: without it the next start rebuilds. SQLite only."""
        snap = self.storage.snapshot_dir
        if snap is None:
            return
        with self.lock:
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
            self.dirty = False

    # -- applying changes ---------------------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply changes in sequence order; those already applied are skipped. ChangeGap when one
        is missing before them."""
        with self.lock:
            for ch in changes:
                if ch.seq <= self._seq:
                    continue
                if ch.seq != self._seq + 1:
                    raise ChangeGap(ch.seq)
                self._apply_one(ch)
                self._seq = ch.seq
                self.dirty = True

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
                cindex.add(ch.face_ids, self.index_vectors(ch.vectors))
                self._maybe_grow(cid)
            except Exception:
                log.exception("gallery: index update failed; rebuilding collection %d from the database", cid)
                self._indexes[cid] = self._build_collection(cid)

    # -- reads ----------------------------------------------------------------------------------

    def require(self, collection: str) -> None:
        """NotFoundError unless the collection is indexed here (cheap: no database)."""
        with self.lock:
            if collection not in self._names:
                raise not_found(collection)

    def _get(self, collection: str) -> CollectionIndex:
        with self.lock:
            self.require(collection)
            return self._indexes[self._names[collection]]

    def candidates(self, collection: str, query: np.ndarray, k: int) -> list[int]:
        """Face row ids the index proposes for one (1, dim) embedding, best first: ``k`` from an
        exact index, at least ``rerank`` from an approximate one (IVF and/or PCA)."""
        indexed = self.index_vectors(query)
        with self.lock:
            cindex = self._get(collection)
            if cindex.size == 0:
                return []
            approximate = cindex.kind != "flat" or self.pca is not None
            _, ids = cindex.search(indexed, max(k, self.rerank) if approximate else k, self.search_threads)
        return [int(i) for i in ids[0] if i >= 0]

    def face_ids(self, collection: str) -> set[int]:
        """The face row ids in the collection's index (what a search can propose)."""
        with self.lock:
            index = self._get(collection).index
            if isinstance(index, faiss.IndexIDMap2):
                return set(faiss.vector_to_array(index.id_map).tolist())
            invlists = faiss.extract_index_ivf(index).invlists
            return {int(i) for lst in range(invlists.nlist) for i in
                    faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst))}

    @property
    def size(self) -> int:
        with self.lock:
            return sum(ci.size for ci in self._indexes.values())

    def index_bytes(self, collection: str) -> int:
        """Size of the collection's search index in memory (its serialised FAISS index: codes,
        ids, coarse centroids; the database is not counted)."""
        with self.lock:
            return int(faiss.serialize_index(self._get(collection).index).size)

    def describe(self) -> tuple[dict, int]:
        """(each collection's index, by name; the applied change sequence), read together."""
        with self.lock:
            per = {name: self._indexes[cid].describe() for name, cid in self._names.items() if cid in self._indexes}
            return per, self._seq
