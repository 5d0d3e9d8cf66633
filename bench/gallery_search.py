"""Section 5 — gallery search at 10k / 100k / 1M enrolled 512-d unit vectors (SYNTHETIC):
faceverify's ``Gallery`` (SQLite + its FAISS index, as the service uses it) against numpy exact
search over the same vectors in memory.

Synthetic faces: subject k has 5 enrolled faces, noisy copies of a random unit centre (noise
0.6/sqrt(d) per dimension: cosine ~0.86 to the centre, ~0.74 between two faces of a subject).
Queries are realistic face-search queries: a *new* noisy copy of an enrolled subject's centre (a
fresh photo of someone enrolled), never an enrolled vector itself. Random centres have no cluster
structure, the hardest case for an IVF index; real embeddings cluster.

* query latency: ``Gallery.search(collection, q, k=1)`` one query at a time (index probe +
  exact re-scoring of the candidates from SQLite), 1 OpenMP thread as in the service; numpy:
  ``argmax(X @ q)`` with numpy's default BLAS threads.
* recall@1: the gallery's top-1 face is numpy exact search's top-1 face, on the same queries.
* build: re-opening the gallery without a snapshot = read SQLite + train + fill the index (what a
  service restart pays); enrollment time is reported apart.
* memory: the index's bytes (its serialised FAISS index: codes, ids, centroids; the SQLite file on
  disk is not counted; the float32 size of the vectors is given for comparison).

    python -m bench.gallery_search [--sizes 10000,100000,1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import percentiles_ms, progress, ratio

DIM = 512
FACES_PER_SUBJECT = 5


def synthetic_faces(n: int, dim: int = DIM, per_subject: int = FACES_PER_SUBJECT, n_queries: int = 200, seed: int = 0):
    """(faces (n, dim) float32, subject of each face, queries (q, dim), subject of each query)."""
    rng = np.random.default_rng(seed)
    n_subjects = n // per_subject
    centres = rng.standard_normal((n_subjects, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = np.float32(0.6 / math.sqrt(dim))
    faces = np.repeat(centres, per_subject, axis=0)
    for start in range(0, len(faces), 100_000):  # in chunks: no second n x dim temporary
        block = faces[start : start + 100_000]
        block += noise * rng.standard_normal(block.shape, dtype=np.float32)
    subjects = np.repeat(np.arange(n_subjects), per_subject)
    q_subjects = rng.choice(n_subjects, min(n_queries, n_subjects), replace=False)
    queries = centres[q_subjects] + noise * rng.standard_normal((len(q_subjects), dim), dtype=np.float32)
    return faces, subjects, queries, q_subjects


def exact_top1(x: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row of the most similar face for each query (x and queries L2-normalised), by chunks."""
    best = np.full(len(queries), -np.inf, np.float32)
    arg = np.zeros(len(queries), np.int64)
    for start in range(0, len(x), 200_000):
        s = x[start : start + 200_000] @ queries.T
        i = s.argmax(0)
        v = s[i, np.arange(len(queries))]
        better = v > best
        best[better], arg[better] = v[better], i[better] + start
    return arg


def measure_size(n: int, tmp: Path, n_queries: int, numpy_queries: int) -> dict:
    from faceverify.gallery import Gallery, l2_normalize

    faces, subjects, queries, q_subjects = synthetic_faces(n, n_queries=n_queries)
    gdir = tmp / f"gallery-{n}"
    t0 = time.perf_counter()
    uid_row: dict[str, int] = {}
    # loading only: no index work (a huge flat_max), no snapshot; the timed open below builds it
    with Gallery(gdir, DIM, "bench-synthetic", flat_max=10**9, use_snapshot=False) as g:
        g.create_collection("bench")
        for start in range(0, n, 10_000):
            recs = g.enroll_many("bench", [(f"s{subjects[i]}", faces[i], {}) for i in range(start, min(n, start + 10_000))])
            uid_row.update((r.face_id, start + j) for j, r in enumerate(recs))
    enroll_s = time.perf_counter() - t0
    x = l2_normalize(faces)
    del faces
    q = l2_normalize(queries)
    gc.collect()
    t0 = time.perf_counter()
    g = Gallery(gdir, DIM, "bench-synthetic", use_snapshot=False)  # the service's defaults
    build_s = time.perf_counter() - t0
    try:
        index = g.describe()["collections"]["bench"]
        index_bytes = g.index_bytes("bench")
        for i in range(min(5, len(q))):  # warm-up
            g.search("bench", q[i], k=1)
        lat, top = [], []
        for qi in q:
            t = time.perf_counter()
            hit = g.search("bench", qi, k=1)[0]
            lat.append(time.perf_counter() - t)
            top.append(uid_row[hit.face_id])
    finally:
        g.close(snapshot=False)
    exact = exact_top1(x, q)
    top = np.array(top)
    np_lat = []
    for qi in q[:numpy_queries]:
        t = time.perf_counter()
        int(np.argmax(x @ qi))
        np_lat.append(time.perf_counter() - t)
    ours, peer = percentiles_ms(lat), percentiles_ms(np_lat)
    return {
        "enrolled": n, "queries": len(q), "index": index,
        "p50_ms": ours["p50_ms"], "p95_ms": ours["p95_ms"], "p99_ms": ours["p99_ms"],
        "recall_at_1": round(float(np.mean(top == exact)), 4),
        "subject_rank1": round(float(np.mean(subjects[top] == q_subjects)), 4),
        "exact_subject_rank1": round(float(np.mean(subjects[exact] == q_subjects)), 4),
        "build_s": round(build_s, 2), "enroll_s": round(enroll_s, 2),
        "memory_gb": round(index_bytes / 1e9, 4), "memory_what": "index bytes (serialised FAISS index)",
        "float32_vectors_gb": round(n * DIM * 4 / 1e9, 3),
        "numpy": {**peer, "what": "argmax(X @ q), X in memory, numpy default threads"},
        "speedup_vs_numpy": ratio(peer["p50_ms"], ours["p50_ms"]),
    }


def run(opts: dict) -> dict:
    quick = bool(opts.get("quick"))
    sizes = [int(s) for s in (opts.get("sizes") or ([10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]))]
    n_queries = int(opts.get("queries") or (100 if quick else 1000))
    bar = progress(len(sizes), "5 gallery search")
    result = {"dim": DIM, "synthetic": True, "faces_per_subject": FACES_PER_SUBJECT,
              "queries_are": "new noisy copies of enrolled subjects' centres (not enrolled vectors)",
              "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="fv-bench-gallery-") as tmp:
        for n in sizes:
            # numpy exact takes ~0.1-0.5 s per query at 1M: fewer timed queries there
            numpy_queries = min(n_queries, 30 if n >= 500_000 else 100)
            result["sizes"][str(n)] = measure_size(n, Path(tmp), n_queries, numpy_queries)
            bar.update()
    bar.close()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sizes", help="comma-separated gallery sizes")
    p.add_argument("--queries", type=int)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    print(json.dumps(run({"quick": args.quick, "sizes": sizes, "queries": args.queries}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
