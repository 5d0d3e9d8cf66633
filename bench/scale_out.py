"""Section 8 — scaling out: the gallery in SQLite (1 replica) vs PostgreSQL (1 and 2 replicas),
measured in one run at 100k enrolled faces (``--quick``: 5k).

For each setup the base gallery is bulk-loaded straight into the store (synthetic labelled
vectors, ``bench.load_service.build_gallery``), real ``faceverify serve`` processes start on it
(each builds its own FAISS index from the store: timed), then:

* ``POST /identify`` by embedding (no inference: the gallery path only) at 1 and 8 clients —
  p50/p99 and req/s; with 2 replicas the clients alternate between them;
* ``POST /collections/../faces`` with a photo at 4 clients — the API enroll rate (detection +
  embedding + one committed transaction per face; inference dominates);
* store enroll rate: ``Gallery.enroll`` one face per transaction, in-process — the storage cost
  an API enrollment pays after inference;
* with 2 replicas: how long until an enrollment acknowledged by one is returned by /identify on the other.

PostgreSQL is a throw-away local cluster (``tests/service_fixtures/pg_cluster.py``; fsync on), or
``FACEVERIFY_BENCH_PG_URL`` (an empty database). Without either the PostgreSQL figures are
"skipped: <reason>".

    python -m bench.scale_out [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import bench_model, median, progress, ratio
from bench.load_service import (
    API_KEY,
    PAIRS,
    Server,
    build_gallery,
    enroll_photo_requests,
    identify_vector_requests,
    run_level,
)

LEVELS = (1, 8)
ENROLL_CLIENTS = 4
COLLECTION = "bench"


def postgres(tmp: Path):
    """(make_database, cleanup) or (None, reason)."""
    url = os.environ.get("FACEVERIFY_BENCH_PG_URL")
    if url:
        return (lambda: url), (lambda: None)
    from tests.service_fixtures.pg_cluster import PostgresCluster, find_bindir, missing_reason  # test-only code, in the checkout

    reason = missing_reason()
    if reason:
        return None, f"skipped: {reason} (or set FACEVERIFY_BENCH_PG_URL)"
    cluster = PostgresCluster(find_bindir()).init(fsync=True)  # as deployed: every commit durable
    return (lambda: cluster.new_database("bench")), cluster.destroy


def store_enroll_rate(location, dim: int, model_id: str, n: int) -> dict:
    """Faces/s through ``Gallery.enroll`` (one transaction each) on the loaded store."""
    from faceverify.gallery import Gallery

    rng = np.random.default_rng(99)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    with Gallery(location, dim, model_id, use_snapshot=False, follow=False) as g:
        t0 = time.perf_counter()
        for i in range(n):
            g.enroll(COLLECTION, f"store{i}", vecs[i])
        wall = time.perf_counter() - t0
    return {"faces": n, "per_s": round(n / wall, 1), "ms_per_face": round(1e3 * wall / n, 2)}


def follow_latency(a: Server, b: Server, photos: list[bytes], samples: int) -> dict:
    """Seconds from A's 201 to B's /identify returning the new face."""
    out = []
    with httpx.Client(base_url=a.url, headers={"X-API-Key": API_KEY}, timeout=120) as ca, \
            httpx.Client(base_url=b.url, timeout=120) as cb:
        for i in range(samples):
            image = photos[i % len(photos)]
            r = cb.post("/embed", data={"policy": "largest_central"}, files={"image": ("q.jpg", image, "image/jpeg")})
            query = r.json()["embedding"]
            r = ca.post(f"/collections/{COLLECTION}/subjects/follow{i}/faces", data={"policy": "largest_central"},
                        files={"image": ("p.jpg", image, "image/jpeg")})
            if r.status_code != 201:
                continue
            face_id, t0 = r.json()["face_id"], time.perf_counter()
            while time.perf_counter() - t0 < 10:
                # the same photo is enrolled under other subjects too (ties at similarity 1): look in the top 100
                m = cb.post("/identify", json={"collection": COLLECTION, "embedding": query, "k": 100}).json()["matches"]
                if any(x["face_id"] == face_id for x in m):
                    out.append(time.perf_counter() - t0)
                    break
    return {"samples": len(out), "p50_ms": round(1e3 * median(out), 1) if out else None,
            "max_ms": round(1e3 * max(out), 1) if out else None}


def measure(label: str, servers: list[Server], queries, labels, photos, duration: float, max_requests: int,
            enroll_requests: int) -> dict:
    urls = [s.url for s in servers]
    hits: list[bool] = []
    rows = []
    for c in LEVELS:
        r = asyncio.run(run_level(urls, identify_vector_requests(queries, labels, COLLECTION, hits), max(c, len(urls)),
                                  duration, max_requests))
        rows.append({k: r[k] for k in ("concurrency", "requests", "ok", "req_per_s", "p50_ms", "p95_ms", "p99_ms")})
    enroll = asyncio.run(run_level(urls, enroll_photo_requests(photos, COLLECTION, f"{label}-api"), ENROLL_CLIENTS,
                                   duration * 2, enroll_requests, warmup=1))
    index = servers[0].health()["gallery"]["collections"][COLLECTION]
    return {"replicas": len(servers), "index": index, "identify": rows,
            "rank1_synthetic": round(float(np.mean(hits)), 4) if hits else None,
            "api_enroll": {k: enroll[k] for k in ("requests", "ok", "statuses", "req_per_s", "p50_ms", "p99_ms")}}


def run(opts: dict) -> dict:
    from faceverify.paths import lfw_root
    from faceverify.calibration import Calibration
    from faceverify.models import resolve_model
    from faceverify.verify import Verifier

    quick = bool(opts.get("quick"))
    n = 5_000 if quick else 100_000
    duration = 3.0 if quick else 8.0
    max_requests = 100 if quick else 600
    enroll_requests = 12 if quick else 60
    store_faces = 50 if quick else 300
    images = lfw_root() / "images"
    photos = [(images / p).read_bytes() for pair in PAIRS for p in pair]
    threads = ["--torch-threads", str(opts["threads"])] if opts.get("threads") else []
    bar = progress(6, "8 scale-out")
    result: dict = {"enrolled": n, "faces_per_subject": 5, "levels": list(LEVELS), "duration_s": duration,
                    "max_requests": max_requests, "enroll_clients": ENROLL_CLIENTS, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="fv-bench-scale-") as tmp:
        tmp = Path(tmp)
        model, info = bench_model(tmp)
        result["model"] = info
        model_id = resolve_model(model).fingerprint(Calibration.for_model(model).flip or "none")  # as build_gallery and the server
        dim = Verifier.from_model(model).dim
        result["dim"] = dim

        synthetic: dict = {}  # the queries and their labels (the same vectors go into every store)

        def setup(label: str, location, replicas: int, load: bool) -> dict:
            entry: dict = {}
            if load:
                t0 = time.perf_counter()
                synthetic["queries"], synthetic["labels"] = build_gallery(location, model, dim, n, 5)
                entry["bulk_load_s"] = round(time.perf_counter() - t0, 1)
            servers = []
            try:
                for _ in range(replicas):
                    t0 = time.perf_counter()
                    servers.append(Server(model, location, *threads, log_dir=tmp))
                    entry.setdefault("start_s", []).append(round(time.perf_counter() - t0, 1))
                entry.update(measure(label, servers, synthetic["queries"], synthetic["labels"], photos, duration, max_requests,
                                     enroll_requests))
                if replicas > 1:
                    entry["follow_latency"] = follow_latency(servers[0], servers[1], photos, 3 if quick else 10)
            finally:
                for s in servers:
                    s.stop()
            entry["store_enroll"] = store_enroll_rate(location, dim, model_id, store_faces)
            bar.update()
            return entry

        result["sqlite_1"] = setup("sqlite1", tmp / "gallery", 1, load=True)
        make_db, cleanup = postgres(tmp)
        if make_db is None:
            result["postgres_1"] = result["postgres_2"] = {"skipped": cleanup}
        else:
            try:
                url = make_db()
                result["postgres_1"] = setup("pg1", url, 1, load=True)
                result["postgres_2"] = setup("pg2", url, 2, load=False)  # the same database, a second replica
            finally:
                cleanup()
    bar.close()
    s1, p1, p2 = result["sqlite_1"], result["postgres_1"], result["postgres_2"]
    if "identify" in p1:
        result["pg1_vs_sqlite_p50_1_client"] = ratio(p1["identify"][0]["p50_ms"], s1["identify"][0]["p50_ms"])
        result["pg2_vs_pg1_req_per_s_8_clients"] = ratio(p2["identify"][-1]["req_per_s"], p1["identify"][-1]["req_per_s"])
    result["note"] = ("2 replicas on one 2-core machine share the same cores with PostgreSQL and the load generator: "
                      "this shows that replicas serve one gallery consistently (follow latency, identical answers) and "
                      "what coordination costs, not throughput scaling, which needs replicas on separate cores/hosts.")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    print(json.dumps(run({"quick": args.quick}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
