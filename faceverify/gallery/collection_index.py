"""One FAISS index per collection: exact ``flat`` up to ``flat_max`` faces, ``ivf`` beyond (see
the package docstring for codecs and nprobe). The index is derived data: it only proposes
candidates, whose scores come from the stored embeddings."""

from __future__ import annotations

import math
from typing import Iterable

import faiss
import numpy as np

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


class CollectionIndex:
    """One FAISS index over one collection's faces; ids are the store's face row ids.

    ``seq``: the store's change sequence the index was built at; it already contains every change
    up to it, so the gallery skips those when it replays the change log (a collection re-indexed
    while other changes are pending must not add their faces twice)."""

    def __init__(self, index: faiss.Index, kind: str, trained_on: int, codec: str | None = None, seq: int = 0):
        self.index = index
        self.kind = kind
        self.trained_on = trained_on
        self.codec = codec if kind == "ivf" else None
        self.seq = seq

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, flat_max: int, nprobe: int | None,
              codec: str = "pq4fs", seq: int = 0) -> "CollectionIndex":
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
        return cls(index, kind, n, codec, seq)

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

