"""Load test of the REST service on loopback (asyncio + httpx): p50/p95/p99 latency and throughput
for ``POST /verify`` at 1, 8 and 32 concurrent clients, and for ``POST /identify`` against
galleries of 10k and 100k enrolled vectors (synthetic, labelled: ``--faces-per-subject`` noisy
copies of each subject's random centre, so rank-1 accuracy of the index is reported too).

    .venv/bin/python -m bench.load_service [--model PATH] [--duration 15] [--out bench/results/service.json]

Without ``--model`` (and no ``models/default``) an *untrained* network of the default recipe's
architecture is made in a temporary directory (``bench.common.bench_model``): the latencies are
those of the default architecture; the verdicts mean nothing. Every server is a real ``faceverify serve`` subprocess on 127.0.0.1; each level runs for
``--duration`` seconds or ``--max-requests`` requests, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a script too
    sys.path.insert(0, str(REPO))

from bench.common import bench_model  # noqa: E402
from bench.gallery_search import synthetic_faces  # noqa: E402
from faceverify.gallery import Gallery  # noqa: E402
from faceverify.models import resolve_model  # noqa: E402
from faceverify.paths import lfw_root  # noqa: E402
from faceverify.calibration import Calibration  # noqa: E402

PAIRS = [  # (image1, image2) LFW photos, cycled by the clients
    ("George_W_Bush/George_W_Bush_0001.jpg", "George_W_Bush/George_W_Bush_0002.jpg"),
    ("Colin_Powell/Colin_Powell_0001.jpg", "Serena_Williams/Serena_Williams_0001.jpg"),
    ("Tony_Blair/Tony_Blair_0001.jpg", "Tony_Blair/Tony_Blair_0002.jpg"),
    ("Donald_Rumsfeld/Donald_Rumsfeld_0001.jpg", "Gerhard_Schroeder/Gerhard_Schroeder_0001.jpg"),
]
API_KEY = "bench-key"


# -- server -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path | None, gallery: Path | str, *args: str, log_dir: Path | None = None,
                 command: list[str] | None = None, cwd: Path = REPO, env: dict | None = None, timeout: float = 600):
        """``gallery``: a directory or a postgresql:// URL (then the log goes to ``log_dir``).
        ``model`` None: the server's default. ``command``: how to run ``faceverify`` (default: this
        interpreter's ``-m faceverify``), in ``cwd`` with ``env`` (default: this process's)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**(os.environ if env is None else env), "FACEVERIFY_API_KEY": API_KEY}
        self.log = open(Path(log_dir or Path(gallery).parent) / f"server-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [*(command or [sys.executable, "-m", "faceverify"]), "serve", *(["--model", str(model)] if model else []),
             "--gallery", str(gallery), "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *args],
            cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server did not become ready in {timeout:.0f} s; see {self.log.name}")

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10, trust_env=False).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


# -- load -------------------------------------------------------------------------------------------


async def run_level(url: str | list[str], make_request, concurrency: int, duration: float, max_requests: int,
                    warmup: int = 2) -> dict:
    """``concurrency`` clients send requests back to back until ``duration`` s or ``max_requests``.
    Several ``url`` (replicas): client k talks to ``url[k % len(url)]`` (client-side round robin)."""
    urls = [url] if isinstance(url, str) else list(url)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=300, limits=limits,
                                                                     headers={"X-API-Key": API_KEY})) for u in urls]
        for i in range(warmup):
            for client in clients:
                await make_request(client, i)
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        counter = 0
        deadline = time.perf_counter() + duration

        async def worker(client: httpx.AsyncClient):
            nonlocal counter
            while time.perf_counter() < deadline and counter < max_requests:
                i = counter
                counter += 1
                t = time.perf_counter()
                r = await make_request(client, i)
                latencies.append(time.perf_counter() - t)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*[worker(clients[k % len(clients)]) for k in range(concurrency)])
        wall = time.perf_counter() - start
    lat = np.array(latencies) * 1e3
    ok = statuses.get(200, 0) + statuses.get(201, 0)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "wall_s": round(wall, 2),
        "req_per_s": round(ok / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "mean_ms": round(float(lat.mean()), 1),
    }


def verify_requests(pairs: list[tuple[bytes, bytes]]):
    async def make(client: httpx.AsyncClient, i: int) -> httpx.Response:
        a, b = pairs[i % len(pairs)]
        return await client.post("/verify", files={"image1": ("a.jpg", a, "image/jpeg"), "image2": ("b.jpg", b, "image/jpeg")})
    return make


def identify_photo_requests(photos: list[bytes], collection: str):
    async def make(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post("/identify", data={"collection": collection, "k": "5"},
                                 files={"image": ("q.jpg", photos[i % len(photos)], "image/jpeg")})
    return make


def enroll_photo_requests(photos: list[bytes], collection: str, prefix: str):
    """Each request enrolls one photo as a new subject (``{prefix}{i}``): detection + embedding +
    one committed transaction."""
    async def make(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(f"/collections/{collection}/subjects/{prefix}{i}/faces", data={"policy": "largest_central"},
                                 files={"image": ("p.jpg", photos[i % len(photos)], "image/jpeg")})
    return make


def identify_vector_requests(queries: np.ndarray, labels: np.ndarray, collection: str, hits: list):
    async def make(client: httpx.AsyncClient, i: int) -> httpx.Response:
        j = i % len(queries)
        r = await client.post("/identify", json={"collection": collection, "embedding": queries[j].tolist(), "k": 5})
        if r.status_code == 200:
            top = r.json()["matches"]
            hits.append(bool(top) and top[0]["subject"] == f"s{labels[j]}")
        return r
    return make


# -- synthetic gallery ------------------------------------------------------------------------------


def build_gallery(path: Path | str, model: Path, dim: int, n_vectors: int, faces_per_subject: int, seed: int = 0):
    """A gallery (directory or postgresql:// URL) of ``n_vectors`` labelled synthetic faces: subject
    ``s{k}`` has ``faces_per_subject`` noisy copies of a random unit centre, loaded straight into
    the store. Returns (queries, labels): fresh noisy copies of 200 subjects' centres (not enrolled themselves)."""
    faces, subjects, queries, labels = synthetic_faces(n_vectors, dim, faces_per_subject, 200, seed)
    calibration = Calibration.for_model(model)
    # no index work while loading (huge flat_max, no snapshot): the server builds its index on start
    with Gallery(path, dim, resolve_model(model).fingerprint(calibration.flip or "none"), flat_max=10**9, use_snapshot=False) as g:
        g.create_collection("bench")
        for start in range(0, len(faces), 10_000):
            stop = min(len(faces), start + 10_000)
            g.enroll_many("bench", [(f"s{subjects[i]}", faces[i], {}) for i in range(start, stop)])
    return queries, labels


# -- main -------------------------------------------------------------------------------------------


def table(title: str, rows: list[dict], extra: tuple[str, ...] = ()) -> str:
    cols = ("concurrency", "requests", "ok", "req_per_s", "p50_ms", "p95_ms", "p99_ms", *extra)
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model to serve (default: models/default, else an untrained default architecture)")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--sizes", default="10000,100000", help="gallery sizes for /identify")
    p.add_argument("--faces-per-subject", type=int, default=5)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per level")
    p.add_argument("--max-requests", type=int, default=400, help="requests per level at most")
    p.add_argument("--skip-photo-identify", action="store_true", help="identify by embedding only (no inference)")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    levels = [int(c) for c in args.concurrency.split(",")]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    images = lfw_root() / "images"
    pairs = [((images / a).read_bytes(), (images / b).read_bytes()) for a, b in PAIRS]
    photos = [x for pair in pairs for x in pair]
    server_args = ["--torch-threads", str(args.torch_threads)] if args.torch_threads else []
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "settings": vars(args),
    }
    report = []
    with tempfile.TemporaryDirectory(prefix="fv-bench-") as tmp:
        tmp = Path(tmp)
        if args.model is None:
            model, info = bench_model(tmp)
            results["model"] = str(model) if info["trained"] else info["note"]
        else:
            model = resolve_model(args.model).path
            results["model"] = str(model)

        srv = Server(model, tmp / "verify-gallery", *server_args)
        try:
            health = srv.health()
            dim = health["model"]["dim"]
            results["model_dim"] = dim
            rows = []
            for c in levels:
                rows.append(asyncio.run(run_level(srv.url, verify_requests(pairs), c, args.duration, args.max_requests)))
                print(f"verify c={c}: {rows[-1]}", flush=True)
            results["verify"] = rows
            report.append(table(f"POST /verify (2 LFW photos per request, model dim {dim})", rows))
        finally:
            srv.stop()

        results["identify"] = {}
        for size in sizes:
            gdir = tmp / f"gallery-{size}"
            t0 = time.perf_counter()
            queries, labels = build_gallery(gdir, model, dim, size, args.faces_per_subject)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            srv = Server(model, gdir, *server_args)
            start_s = time.perf_counter() - t0
            try:
                index = srv.health()["gallery"]["collections"]["bench"]
                entry = {"enrolled": size, "index": index, "build_gallery_s": round(build_s, 1), "server_start_s": round(start_s, 1)}
                hits: list[bool] = []
                vec_rows = []
                for c in levels:
                    vec_rows.append(asyncio.run(run_level(srv.url, identify_vector_requests(queries, labels, "bench", hits),
                                                          c, args.duration, args.max_requests)))
                    print(f"identify[{size}] embedding c={c}: {vec_rows[-1]}", flush=True)
                entry["by_embedding"] = vec_rows
                entry["rank1_accuracy_synthetic"] = round(float(np.mean(hits)), 4) if hits else None
                report.append(table(f"POST /identify by embedding, {size:,} enrolled vectors ({index['type']} index, "
                                    f"rank-1 on synthetic labels {entry['rank1_accuracy_synthetic']})", vec_rows))
                if not args.skip_photo_identify:
                    photo_rows = []
                    for c in levels:
                        photo_rows.append(asyncio.run(run_level(srv.url, identify_photo_requests(photos, "bench"), c,
                                                                args.duration, args.max_requests)))
                        print(f"identify[{size}] photo c={c}: {photo_rows[-1]}", flush=True)
                    entry["by_photo"] = photo_rows
                    report.append(table(f"POST /identify by photo (detect + embed + search), {size:,} enrolled vectors", photo_rows))
                results["identify"][str(size)] = entry
            finally:
                srv.stop()
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print("\n".join(report))
    print(f"load average at start {results['machine']['loadavg_start']}, at end {results['machine']['loadavg_end']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
