"""Section 6 — the REST service: ``POST /verify`` p50/p95/p99 and req/s at 1, 8 and 32 concurrent
clients on loopback, with the service's load script (``bench.load_service``: a real
``faceverify serve`` subprocess, httpx clients cycling 4 LFW photo pairs). Each level is run
``repeats`` times; every figure is the median over the runs. Peer: the same pairs verified
in-process (``Verifier.verify`` on the JPEG bytes), so the ratio is the cost of HTTP, multipart
parsing and the micro-batching queue.

    python -m bench.service_speed [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import bench_model, median, percentiles_ms, progress, ratio
from bench.load_service import PAIRS, Server, run_level, verify_requests

LEVELS = (1, 8, 32)


def in_process_latency(model: Path, pairs: list[tuple[bytes, bytes]], rounds: int) -> dict:
    from faceverify.verify import Verifier

    verifier = Verifier.from_model(model)
    verifier.verify(*pairs[0])  # warm-up
    lat = []
    for _ in range(rounds):
        for a, b in pairs:
            t0 = time.perf_counter()
            verifier.verify(a, b)
            lat.append(time.perf_counter() - t0)
    del verifier
    gc.collect()
    return percentiles_ms(lat)


def run(opts: dict) -> dict:
    from faceverify.paths import lfw_root

    quick = bool(opts.get("quick"))
    repeats = int(opts.get("repeats") or (1 if quick else 3))
    duration = 2.0 if quick else 6.0
    max_requests = 60 if quick else 300
    images = lfw_root() / "images"
    pairs = [((images / a).read_bytes(), (images / b).read_bytes()) for a, b in PAIRS]
    bar = progress(2 + len(LEVELS) * repeats, "6 service")
    result = {"levels": list(LEVELS), "repeats": repeats, "duration_s": duration, "max_requests": max_requests,
              "pairs": "4 LFW photo pairs, cycled", "server": "faceverify serve (uvicorn, 1 process) on 127.0.0.1"}
    with tempfile.TemporaryDirectory(prefix="fv-bench-service-") as tmp:
        tmp = Path(tmp)
        model, info = bench_model(tmp)
        result["model"] = info
        result["in_process"] = in_process_latency(model, pairs, 2 if quick else 5)
        bar.update()
        t0 = time.perf_counter()
        srv = Server(model, tmp / "gallery", *(["--torch-threads", str(opts["threads"])] if opts.get("threads") else []))
        result["server_start_s"] = round(time.perf_counter() - t0, 2)
        bar.update()
        rows = []
        try:
            for c in LEVELS:
                runs = []
                for _ in range(repeats):
                    runs.append(asyncio.run(run_level(srv.url, verify_requests(pairs), c, duration, max_requests)))
                    bar.update()
                row = {"concurrency": c, "requests": sum(r["requests"] for r in runs), "ok": sum(r["ok"] for r in runs),
                       "statuses": runs[-1]["statuses"]}
                for key in ("req_per_s", "p50_ms", "p95_ms", "p99_ms"):
                    row[key] = round(median([r[key] for r in runs]), 2)
                row["runs"] = [{k: r[k] for k in ("requests", "req_per_s", "p50_ms", "p95_ms", "p99_ms")} for r in runs]
                rows.append(row)
        finally:
            srv.stop()
    bar.close()
    result["verify"] = rows
    one = rows[0]
    # HTTP + queue overhead: the served p50 at one client over the in-process p50 of the same pairs
    result["service_vs_in_process_p50"] = ratio(one["p50_ms"], result["in_process"]["p50_ms"])
    result["throughput_32_vs_1_clients"] = ratio(rows[-1]["req_per_s"], one["req_per_s"])
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    print(json.dumps(run({"quick": args.quick}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
