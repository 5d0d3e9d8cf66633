"""Service hardening, against a real ``faceverify serve`` on 127.0.0.1 with the shipped
default model, real MTCNN and real LFW photos: HTTP semantics (405 + Allow, HEAD), client hang-ups are
not server errors, every error code is documented and precise, nothing discloses server paths or
echoes huge input, ``--auth all`` covers the docs and the demo page, keys never come from the
query string, and the thread policy is in effect."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import zlib

import httpx
import numpy as np
import pytest
from service_fixtures import images as im
from service_fixtures.server import API_KEY, LiveServer, free_port
from service_fixtures.model import dim

from faceverify.paths import REPO_ROOT

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # server start-ups

DOCS = REPO_ROOT / "docs" / "service.md"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")  # X-Request-ID when the client sends none


@pytest.fixture(scope="module")
def server(served_model, tmp_path_factory):
    srv = LiveServer(served_model, tmp_path_factory.mktemp("hard") / "gallery").start()
    with httpx.Client(base_url=srv.url, timeout=60.0) as c:
        assert c.post("/collections", json={"name": "c1"}, headers=srv.auth).status_code == 201
        r = c.post("/collections/c1/subjects/gwb/faces", headers=srv.auth, data={"policy": "largest_central"},
                   files={"image": ("f.jpg", im.photo("George_W_Bush", 49), "image/jpeg")})
        assert r.status_code == 201, r.text
    yield srv
    assert srv.stop() in (0, -15), srv.log_tail()
    assert "Traceback" not in srv.log_tail(10_000), srv.log_tail()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


@pytest.fixture(scope="module")
def locked_server(served_model, tmp_path_factory):
    srv = LiveServer(served_model, tmp_path_factory.mktemp("locked") / "gallery", "--auth", "all")
    yield srv.start()
    srv.stop()


def embedding(client, name="George_W_Bush", n=50) -> list[float]:
    r = client.post("/embed", files={"image": ("q.jpg", im.photo(name, n), "image/jpeg")})
    assert r.status_code == 200, r.text
    return r.json()["embedding"]


def metric(client, route: str, method: str, status: str) -> float:
    pattern = rf'faceverify_requests_total{{method="{method}",route="{re.escape(route)}",status="{status}"}} ([0-9.e+]+)'
    m = re.search(pattern, client.get("/metrics").text)
    return float(m.group(1)) if m else 0.0


# -- 1. HTTP semantics ---------------------------------------------------------------------------

WRONG_METHODS = [
    ("PUT", "/verify", {"POST"}),
    ("DELETE", "/identify", {"POST"}),
    ("GET", "/embed", {"POST"}),
    ("PATCH", "/collections", {"GET", "HEAD", "POST"}),
    ("PUT", "/collections/c1", {"GET", "HEAD", "DELETE"}),
    ("POST", "/collections/c1/subjects", {"GET", "HEAD"}),
    ("PATCH", "/collections/c1/subjects/gwb", {"GET", "HEAD", "DELETE"}),
    ("GET", "/collections/c1/subjects/gwb/faces", {"POST"}),
    ("PUT", "/collections/c1/faces", {"GET", "HEAD"}),
    ("GET", "/collections/c1/faces/" + "0" * 32, {"DELETE"}),
    ("POST", "/health", {"GET", "HEAD"}),
    ("DELETE", "/metrics", {"GET", "HEAD"}),
    ("POST", "/demo/", {"GET", "HEAD"}),
    ("HEAD", "/verify", {"POST"}),
]


@pytest.mark.parametrize("method,path,allowed", WRONG_METHODS, ids=[f"{m} {p}" for m, p, _ in WRONG_METHODS])
def test_405_carries_the_real_allow_header(client, server, method, path, allowed):
    r = client.request(method, path, headers=server.auth)
    assert r.status_code == 405, r.text
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed
    if method == "HEAD":
        assert r.content == b""
        return
    body = r.json()
    assert body["code"] == "method_not_allowed"
    listed = re.search(r"\(allowed: ([^)]*)\)", body["message"]).group(1)
    assert {m.strip() for m in listed.split(",")} == allowed and method in body["message"]


HEAD_PATHS = ["/health", "/metrics", "/collections", "/collections/c1", "/collections/c1/subjects",
              "/collections/c1/subjects/gwb", "/collections/c1/faces", "/openapi.json", "/docs", "/redoc", "/demo/",
              "/demo/app.js"]


@pytest.mark.parametrize("path", HEAD_PATHS)
def test_head_works_wherever_get_does(client, path):
    get, head = client.get(path), client.head(path)
    assert get.status_code == 200 and head.status_code == 200, (path, head.status_code, head.text)
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    if path not in ("/health", "/metrics"):  # those two change between the calls
        assert head.headers["content-length"] == get.headers["content-length"]


def test_head_is_counted_as_head(client):
    client.head("/collections")
    assert metric(client, "/collections", "HEAD", "200") >= 1


# -- 2. client faults are not server errors --------------------------------------------------------


def _raw(server, head: bytes, body: bytes, pause: float = 0.3) -> None:
    """Send a request's head and part of its body, wait, hang up."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head + body)
        time.sleep(pause)


def _multipart_head(path: str, length: int | None) -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n{size}\r\n").encode()


PART = b'--b0undary\r\nContent-Disposition: form-data; name="image1"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'


def test_client_hangups_and_broken_chunked_bodies_are_not_500(client, server):
    before_500 = sum(metric(client, r, "POST", "500") for r in ("/verify", "/identify", "/collections"))
    before_499 = metric(client, "/verify", "POST", "499") + metric(client, "/collections", "POST", "499")
    stalled, broken, json_stalled = 6, 3, 2
    jpeg = im.photo()
    for _ in range(stalled):  # declared 200 kB, sent 5 kB, hung up
        _raw(server, _multipart_head("/verify", 200_000), PART + jpeg[:5000])
    for _ in range(broken):  # chunked, one good chunk, then a chunk size that is not hex
        chunk = PART + jpeg[:2000]
        _raw(server, _multipart_head("/verify", None), b"%x\r\n" % len(chunk) + chunk + b"\r\nzz-not-hex\r\n")
    for _ in range(json_stalled):  # FastAPI's own body parsing (a JSON route), hung up
        head = (f"POST /collections HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: {API_KEY}\r\n"
                "Content-Length: 5000\r\n\r\n").encode()
        _raw(server, head, b'{"name": "')
    expected = stalled + broken + json_stalled
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        closed = metric(client, "/verify", "POST", "499") + metric(client, "/collections", "POST", "499") - before_499
        if closed >= expected:
            break
        time.sleep(0.2)
    assert closed == expected, client.get("/metrics").text
    assert sum(metric(client, r, "POST", "500") for r in ("/verify", "/identify", "/collections")) == before_500
    assert 'status="500"' not in client.get("/metrics").text
    assert 'faceverify_rejected_total{reason="client_closed"}' in client.get("/metrics").text
    log = server.log_tail(100_000)
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert len(re.findall(r"client_closed: POST ", log)) == expected  # one line each
    assert client.get("/health").status_code == 200  # and the server serves on


# -- 3. every error code documented and precise ---------------------------------------------------


def _documented_codes() -> set[str]:
    section = DOCS.read_text().split("## Errors", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_]+)` \| \d{3} \|", section, flags=re.M))


def test_every_code_the_server_can_emit_is_documented():
    """Codes collected from the code itself: the status table, and every FaceverifyError subclass
    (all in faceverify/errors.py: tests/test_errors.py checks that none is defined elsewhere).
    Codes without a status are never sent (the handler answers internal_error and logs them):
    e.g. bad_config at run time."""
    import faceverify.errors
    import faceverify.service.app  # noqa: F401  (everything the server imports)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    codes = {c.code for c in subclasses(faceverify.errors.FaceverifyError)}
    emitted = set(faceverify.errors.HTTP_STATUS)
    never_sent = codes - emitted
    # base classes the service never raises as such, and start-up errors (refused before the port is bound)
    assert never_sent <= {"faceverify_error", "image_error", "face_error", "gallery_error", "bad_checkpoint",
                          "data_not_found", "bad_config", "schema_mismatch", "model_mismatch"}, never_sent
    documented = _documented_codes()
    assert emitted - documented == set(), f"codes missing from docs/service.md: {emitted - documented}"
    assert documented - emitted == set(), f"documented codes the server never sends: {documented - emitted}"
    statuses = dict(re.findall(r"^\| `([a-z0-9_]+)` \| (\d{3}) \|", DOCS.read_text(), flags=re.M))
    assert {c: int(s) for c, s in statuses.items()} == faceverify.errors.HTTP_STATUS  # and with the right status


def _png_header_only(with_ihdr: bool) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    sig = b"\x89PNG\r\n\x1a\n"
    return sig + (chunk(b"IHDR", struct.pack(">IIBBBBB", 150, 150, 8, 2, 0, 0, 0)) if with_ihdr else b"")


def _verify_files(a: bytes, b: bytes) -> dict:
    return {"image1": ("a.png", a, "image/png"), "image2": ("b.jpg", b, "image/jpeg")}


@pytest.mark.parametrize("data", [_png_header_only(True), _png_header_only(False), b"\xff\xd8\xff\xe0\x00\x10JFIF"],
                         ids=["png_ihdr_no_data", "png_signature_only", "jpeg_header_only"])
def test_image_header_without_data_is_unreadable_not_unsupported(client, data):
    r = client.post("/verify", files=_verify_files(data, im.photo()))
    assert r.status_code == 400 and r.json()["code"] == "unreadable_image", r.text
    assert r.json()["details"]["field"] == "image1"


def test_data_url_with_parameters_is_accepted(client):
    a, b = im.photo("Colin_Powell", 49), im.photo("Colin_Powell", 50)
    plain = client.post("/verify", json={"image1": base64.b64encode(a).decode(), "image2": base64.b64encode(b).decode()})
    for prefix in ("data:image/jpeg;name=a.jpg;base64,", "data:image/jpeg;charset=binary;filename=\"x y.jpg\";base64,",
                   "DATA:;base64,"):
        r = client.post("/verify", json={"image1": prefix + base64.b64encode(a).decode(), "image2": base64.b64encode(b).decode()})
        assert r.status_code == 200, (prefix, r.text)
        assert r.json()["similarity"] == pytest.approx(plain.json()["similarity"], abs=1e-6)


@pytest.mark.parametrize("body", [{"k": True}, {"k": False}, {"k": 2.0}, {"k": "lots"}, {"threshold": True}],
                         ids=["k_true", "k_false", "k_float", "k_text", "threshold_true"])
def test_numbers_are_numbers_not_booleans(client, body):
    r = client.post("/identify", json={"collection": "c1", "embedding": [0.1] * dim(), **body})
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    assert list(body)[0] in r.json()["message"]


def test_integer_k_still_works_in_json_and_forms(client):
    assert client.post("/identify", json={"collection": "c1", "embedding": [0.1] * dim(), "k": 1}).status_code == 200
    r = client.post("/identify", data={"collection": "c1", "k": "1"},
                    files={"image": ("q.jpg", im.photo("George_W_Bush", 50), "image/jpeg")})
    assert r.status_code == 200 and len(r.json()["matches"]) == 1, r.text


@pytest.mark.parametrize("raw", [
    '{"collection": "c1", "embedding": [%s]}' % ", ".join(["0"] * dim()),
    '{"collection": "c1", "embedding": [%s]}' % ", ".join(["0.0"] * (dim() - 1) + ["-0.0"]),
    '{"collection": "c1", "embedding": [NaN%s]}' % (", 0.1" * (dim() - 1)),
    '{"collection": "c1", "embedding": [Infinity%s]}' % (", 0.1" * (dim() - 1)),
    '{"collection": "c1", "embedding": [1e400%s]}' % (", 0.1" * (dim() - 1)),
], ids=["zeros", "signed_zeros", "nan", "infinity", "overflow"])
def test_unusable_query_embedding_is_invalid_embedding(client, raw):
    r = client.post("/identify", content=raw.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_embedding", r.text
    assert r.json()["details"]["field"] == "embedding"


def test_query_embedding_scale_does_not_matter(client):
    """Huge and tiny (but finite, non-zero) vectors are normalised without over/underflow."""
    e = np.array(embedding(client))
    ref = client.post("/identify", json={"collection": "c1", "embedding": e.tolist()}).json()["matches"][0]
    for scale in (1e300, 1e-300, 3e38):
        r = client.post("/identify", json={"collection": "c1", "embedding": (e * scale).tolist()})
        assert r.status_code == 200, (scale, r.text)
        top = r.json()["matches"][0]
        assert top["face_id"] == ref["face_id"] and top["similarity"] == pytest.approx(ref["similarity"], abs=1e-5)


# -- 4. no information disclosure ------------------------------------------------------------------


def test_no_response_names_a_server_path(client, server, served_model):
    a, b = im.photo("Tony_Blair", 49), im.photo("Tony_Blair", 50)
    responses = {
        "health": client.get("/health"),
        "verify": client.post("/verify", files={"image1": ("a.jpg", a, "image/jpeg"), "image2": ("b.jpg", b, "image/jpeg")}),
        "embed": client.post("/embed", files={"image": ("a.jpg", a, "image/jpeg")}),
        "identify": client.post("/identify", data={"collection": "c1"}, files={"image": ("a.jpg", a, "image/jpeg")}),
        "identify_by_vector": client.post("/identify", json={"collection": "c1", "embedding": embedding(client)}),
        "openapi": client.get("/openapi.json"),
        "unknown_collection": client.get("/collections/nope"),
    }
    secrets = [str(served_model), str(server.gallery), str(REPO_ROOT), "/tmp/", "/home/", "/work/", "model.pt"]
    for name, r in responses.items():
        assert r.status_code in (200, 404), (name, r.text)
        leaked = [s for s in secrets if s in r.text]
        assert not leaked, (name, leaked, r.text[:500])
    sha = hashlib.sha256((served_model / "model.pt").read_bytes()).hexdigest()[:16]
    model = responses["health"].json()["model"]
    assert model["sha256"] == sha and model["id"] == served_model.name and model["calibration_file"] == "calibration.json"
    assert model["name"] == f"{served_model.name}@sha256:{sha}"
    for name in ("verify", "embed"):
        assert responses[name].json()["model"] == model["name"]
    assert responses["verify"].json()["threshold_source"]["file"] == "calibration.json"
    assert responses["identify"].json()["threshold_source"]["file"] == "calibration.json"


LONG = "x" * 70_000


def raw_request(server, method: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """One request over a plain socket (httpx refuses URLs over 64 KiB): status and body."""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("method,path,code", [
    ("GET", f"/collections/{LONG}", "invalid_identifier"),
    ("DELETE", f"/collections/c1/subjects/{LONG}", "invalid_identifier"),
    ("GET", f"/{LONG}", "not_found"),
    ("PUT", f"/collections/{LONG}", "method_not_allowed"),
], ids=["collection", "subject", "route", "405"])
def test_long_path_segments_are_not_echoed_in_full(server, method, path, code):
    status, body = raw_request(server, method, path, {"X-API-Key": API_KEY})
    assert 400 <= status < 500, (status, body[:300])
    assert len(body) < 4096 and b"x" * 200 not in body, (status, len(body))
    assert json.loads(body)["code"] == code and b"70,0" in body  # clipped, and says how long it was


@pytest.mark.parametrize("request_kw", [
    {"method": "POST", "url": "/identify", "json": {"collection": "c1", "embedding": [0.1] * dim(), LONG: 1}},
    {"method": "POST", "url": "/collections", "json": {"name": "ok", LONG: 1}, "headers": {"X-API-Key": API_KEY}},
    {"method": "POST", "url": "/verify", "data": {LONG[:900]: "1"}, "files": _verify_files(im.photo(), im.photo())},
], ids=["json_key", "json_key_fastapi_body", "form_field"])
def test_long_field_names_are_not_echoed_in_full(client, request_kw):
    r = client.request(**request_kw)
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text[:300]
    assert len(r.content) < 4096 and "x" * 200 not in r.text, len(r.content)


def test_keys_are_never_taken_from_the_query_string(client):
    for query in ("api_key", "key", "X-API-Key", "apikey", "token", "access_token"):
        r = client.post(f"/collections?{query}={API_KEY}", json={"name": "by_query"})
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", (query, r.text)
    assert client.get("/collections/by_query").status_code == 404


# -- --auth all: the docs, the schema and the demo page are behind the key too ---------------------

LOCKED = ["/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/demo/", "/demo/app.js", "/", "/metrics",
          "/collections", "/nope"]


def test_auth_all_locks_docs_schema_and_demo(locked_server):
    with httpx.Client(base_url=locked_server.url, timeout=60) as c:
        assert c.get("/health").status_code == 200 and c.head("/health").status_code == 200
        for path in LOCKED:
            for method in ("GET", "HEAD"):
                r = c.request(method, path)
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.headers["www-authenticate"].startswith("ApiKey")
                assert GENERATED_ID.fullmatch(r.headers["x-request-id"])  # answered before any route, still named
                if method == "GET":
                    assert r.json()["code"] == "unauthorized"
            assert c.get(path, params={"api_key": API_KEY}).status_code == 401  # not from the query string
            assert c.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
        for headers in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}):
            assert c.get("/openapi.json", headers=headers).json()["info"]["title"] == "faceverify"
            assert "swagger" in c.get("/docs", headers=headers).text.lower()
            assert "redoc" in c.get("/redoc", headers=headers).text.lower()
            assert c.get("/demo/", headers=headers).status_code == 200
            assert c.get("/", headers=headers, follow_redirects=True).status_code == 200
            assert c.get("/nope", headers=headers).json()["code"] == "not_found"


# -- 5. the thread policy is in effect ---------------------------------------------------------------


def test_default_thread_policy(served_model, tmp_path):
    """Started like production (no --torch-threads, nothing in the environment): one intra-op
    thread, and passive OpenMP waits that reached the OpenMP runtime itself (set before torch
    loaded it: libgomp reports a spin count of 0 instead of its default 300,000).
    FACEVERIFY_TORCH_THREADS overrides the thread count; an OMP_WAIT_POLICY of the user's own is kept."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "FACEVERIFY_TORCH_THREADS")}
    clean["OMP_DISPLAY_ENV"] = "VERBOSE"  # each OpenMP runtime prints its settings when it loads
    runtime, stderr = _runtime_of(served_model, tmp_path / "g0", clean)  # the default runtime, onnxruntime: torch never loads
    assert runtime == {"torch_threads": None, "omp_wait_policy": "PASSIVE", "kmp_blocktime": "0"}
    clean["FACEVERIFY_RUNTIME"] = "torch"
    runtime, stderr = _runtime_of(served_model, tmp_path / "g1", clean)
    assert runtime == {"torch_threads": 1, "omp_wait_policy": "PASSIVE", "kmp_blocktime": "0"}
    spin = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", stderr)
    assert spin and set(spin) == {"0"}, stderr[-2000:]
    runtime, stderr = _runtime_of(served_model, tmp_path / "g2", {**clean, "FACEVERIFY_TORCH_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"})
    assert runtime == {"torch_threads": 2, "omp_wait_policy": "ACTIVE", "kmp_blocktime": "0"}
    assert "0" not in set(re.findall(r"GOMP_SPINCOUNT = '(\d+)'", stderr))


def _runtime_of(model, gallery, env: dict) -> tuple[dict, str]:
    """/health's runtime block and the stderr of a ``faceverify serve`` started exactly as given
    (LiveServer always passes --torch-threads 1)."""
    port = free_port()
    cmd = [sys.executable, "-m", "faceverify", "serve", "--model", str(model), "--gallery", str(gallery),
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    err_path = gallery.parent / f"{gallery.name}.stderr"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                assert proc.poll() is None, err_path.read_text(errors="replace")[-2000:]
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                    if r.status_code == 200:
                        return r.json()["runtime"], err_path.read_text(errors="replace")
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            raise AssertionError("the server did not start")
        finally:
            proc.terminate()
            proc.wait(30)


# -- 6. request ids: on every response; a 500 names its id --------------------------------------------


def test_every_response_carries_a_request_id(client, server):
    """200, HEAD, 4xx from the routes, the framework (404 route, 405, 422) and the middlewares
    (401 key, 413 body limit, both answered before any route): each has its own fresh id."""
    responses = {
        "200": client.get("/health"),
        "head": client.head("/collections"),
        "401": client.post("/collections", json={"name": "no_key"}),
        "404_collection": client.get("/collections/nope"),
        "404_route": client.get("/nope"),
        "405": client.put("/verify"),
        "413": client.post("/verify", content=b"\0" * (16 * 1024 * 1024 + 1), headers={"content-type": "image/jpeg"}),
        "415": client.post("/verify", content=b"hello", headers={"content-type": "text/plain"}),
        "422": client.post("/identify", json={"collection": "c1", "embedding": [0.1] * 3}),
        "demo": client.get("/demo/app.js"),
    }
    statuses = {name: r.status_code for name, r in responses.items()}
    assert statuses == {"200": 200, "head": 200, "401": 401, "404_collection": 404, "404_route": 404, "405": 405,
                        "413": 413, "415": 415, "422": 422, "demo": 200}
    ids = {name: r.headers.get("x-request-id", "") for name, r in responses.items()}
    assert all(GENERATED_ID.fullmatch(i) for i in ids.values()), ids
    assert len(set(ids.values())) == len(ids)  # one per request


def test_a_client_request_id_is_echoed_and_sanitised(client):
    for rid in ("0f8e2a4c-9b1d-4e6f-a3c5-7d9e1b2f4a6c", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "job.42:step_7"):
        for r in (client.get("/health", headers={"X-Request-ID": rid}), client.get("/collections/nope", headers={"X-Request-ID": rid})):
            assert r.headers["x-request-id"] == rid
    hostile = '<script>alert("x")</script> \' OR 1=1; ' + "A" * 500
    r = client.get("/health", headers={"X-Request-ID": hostile})
    assert r.headers["x-request-id"] == "scriptalertxscriptOR11" + "A" * 42  # safe characters, 64 at most
    for nothing_safe in (b"<>\"'", b"{} ()", "é€".encode()):  # no safe character left: a fresh id instead
        r = client.get("/health", headers={"X-Request-ID": nothing_safe})
        assert GENERATED_ID.fullmatch(r.headers["x-request-id"]), nothing_safe


def test_a_500_names_its_request_id_in_body_header_and_log(served_model, tmp_path):
    """A real 500: the gallery database changed under the running server by another process (a
    table renamed), so the next read fails inside SQLite. The client gets internal_error with the
    request id (no server detail), and the log line with the traceback names the same id."""
    import sqlite3

    from faceverify.gallery import DB_NAME

    srv = LiveServer(served_model, tmp_path / "gallery").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60.0) as c:
            assert c.post("/collections", json={"name": "c1"}, headers=srv.auth).status_code == 201
            assert c.get("/collections/c1/subjects").status_code == 200
            with sqlite3.connect(srv.gallery / DB_NAME) as db:
                db.execute("ALTER TABLE subjects RENAME TO subjects_gone")
            generated = c.get("/collections/c1/subjects")
            given = c.get("/collections/c1/subjects", headers={"X-Request-ID": "client-trace-42"})
            assert c.get("/health").status_code == 200  # and the server serves on
        log = srv.log_tail(10_000)
    finally:
        srv.stop()
    for r, expected in ((generated, None), (given, "client-trace-42")):
        assert r.status_code == 500, r.text
        assert r.headers["connection"] == "close"  # the server drops the connection after an unhandled error
        rid = r.headers["x-request-id"]
        assert (rid == expected) if expected else GENERATED_ID.fullmatch(rid)
        body = r.json()
        assert body["code"] == "internal_error" and body["details"] == {"request_id": rid}
        assert f"request id {rid}" in body["message"] and "subjects" not in r.text  # no server detail
        assert f"unhandled error on GET /collections/c1/subjects (request id {rid})" in log, log[-3000:]
    assert "no such table: subjects" in log
