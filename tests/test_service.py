"""The REST service end to end: a real ``faceverify serve`` (uvicorn subprocess on 127.0.0.1)
serving the shipped default model (a fixed artefact: verdicts do not depend on the machine), real
LFW photos."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest
from service_fixtures import images as im
from service_fixtures.server import API_KEY, LiveServer
from service_fixtures.model import IDENTITIES, crop_shape, default_operating_point, dim

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # server start-ups


@pytest.fixture(scope="module")
def server(served_model, tmp_path_factory):
    srv = LiveServer(served_model, tmp_path_factory.mktemp("svc") / "gallery").start()
    yield srv
    # graceful shutdown on SIGTERM (uvicorn re-raises the signal after shutting down: -15)
    assert srv.stop() in (0, -15), srv.log_tail()
    assert (srv.gallery / "index" / "manifest.json").is_file()  # the index snapshot was written on the way out
    assert "Traceback" not in srv.log_tail(1000), srv.log_tail()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


@pytest.fixture(scope="module")
def calibration(served_model):
    return json.loads((served_model / "calibration.json").read_text())["thresholds"]


def files(a: bytes, b: bytes | None = None, ctype: str = "image/jpeg") -> dict:
    out = {"image1": ("a.jpg", a, ctype)}
    if b is not None:
        out["image2"] = ("b.jpg", b, ctype)
    return out


def verify(client, a: bytes, b: bytes, **data) -> httpx.Response:
    return client.post("/verify", files=files(a, b), data={k: str(v) for k, v in data.items()})


# -- health, verify, embed ------------------------------------------------------------------------


def test_health_reports_ready_model_and_index(client, calibration):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["live"] is True and body["status"] == "ok"
    assert body["model"]["calibrated"] is True and body["model"]["thresholds"] == pytest.approx(calibration)
    # what a client offers and preselects: the calibrated points in order, the model's default
    points = body["model"]["operating_points"]
    assert [p["name"] for p in points] == [n for n in ("far_1e-2", "far_1e-3", "far_1e-4", "best_accuracy") if n in calibration]
    assert {p["name"]: p["threshold"] for p in points} == pytest.approx(calibration)
    assert body["model"]["default_operating_point"] == default_operating_point()
    far3 = next(p for p in points if p["name"] == "far_1e-3")
    assert far3["far"] == 1e-3 and 0 < far3["tar"] <= 1 and next(p for p in points if p["name"] == "best_accuracy")["far"] is None
    assert body["gallery"]["index_type"] == "flat"


def test_verify_same_person_accepted_different_rejected(client, calibration):
    gwb49, gwb50, dr49 = im.photo("George_W_Bush", 49), im.photo("George_W_Bush", 50), im.photo("Donald_Rumsfeld", 49)
    same = verify(client, gwb49, gwb50, operating_point="best_accuracy")
    diff = verify(client, gwb49, dr49, operating_point="best_accuracy")
    assert same.status_code == diff.status_code == 200, (same.text, diff.text)
    s, d = same.json(), diff.json()
    assert s["same_person"] is True and d["same_person"] is False
    assert s["similarity"] > s["threshold"] >= d["similarity"]
    assert s["threshold"] == pytest.approx(calibration["best_accuracy"])
    assert s["threshold_source"]["source"] == "calibration" and s["threshold_source"]["operating_point"] == "best_accuracy"
    assert s["threshold_source"]["file"].endswith("calibration.json")
    # the faces used: a box inside the 150x150 photo, 5 landmarks, an MTCNN score
    for face in s["faces"]:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= 150 and 0 <= y1 < y2 <= 150
        assert len(face["landmarks"]) == 5 and face["score"] > 0.9 and face["source"] == "mtcnn"
    assert set(s["timings_ms"]) >= {"decode", "queue", "inference", "total"} and s["timings_ms"]["total"] > 0


def test_verify_on_pairs_of_every_identity(client, calibration):
    """Photos 49/50 of each identity (LFW: none in the model's training data) vs another identity,
    at the model's default operating point: every verdict right (the fixed model's closest pair is
    ~0.007 from the threshold)."""
    wrong = []
    for i, name in enumerate(IDENTITIES):
        other = IDENTITIES[(i + 1) % len(IDENTITIES)]
        same = verify(client, im.photo(name, 49), im.photo(name, 50)).json()
        diff = verify(client, im.photo(name, 51), im.photo(other, 52)).json()
        wrong += [(name, same["similarity"])] * (not same["same_person"]) + [(name, other, diff["similarity"])] * diff["same_person"]
    assert not wrong, wrong


def test_default_threshold_is_the_models_and_override_wins(client, calibration):
    a, b = im.photo("Tony_Blair", 49), im.photo("Tony_Blair", 50)
    default = verify(client, a, b).json()
    assert default["threshold"] == pytest.approx(calibration[default_operating_point()])
    assert default["threshold_source"]["operating_point"] == default_operating_point()
    low = verify(client, a, b, threshold=-0.99).json()
    high = verify(client, a, b, threshold=0.9999).json()
    assert low["threshold_source"]["source"] == "request" and low["threshold"] == -0.99
    assert low["same_person"] is True and high["same_person"] is False
    assert low["similarity"] == pytest.approx(default["similarity"], abs=1e-5)


def test_verify_json_base64_matches_multipart(client):
    a, b = im.photo("Colin_Powell", 49), im.photo("Colin_Powell", 50)
    multipart = verify(client, a, b).json()
    body = {"image1": base64.b64encode(a).decode(), "image2": "data:image/jpeg;base64," + base64.b64encode(b).decode(),
            "include_crops": True}
    r = client.post("/verify", json=body)
    assert r.status_code == 200, r.text
    js = r.json()
    assert js["similarity"] == pytest.approx(multipart["similarity"], abs=1e-5)
    crop = base64.b64decode(js["faces"][0]["crop_png"])
    assert crop.startswith(b"\x89PNG") and im.load_image(crop).shape == (*crop_shape(), 3)


def test_embed_returns_normalised_vector_and_face(client):
    r = client.post("/embed", files={"image": ("x.jpg", im.photo(), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    v = np.array(body["embedding"])
    assert body["dim"] == v.size == dim() and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)
    assert body["face"]["faces_found"] >= 1


def test_micro_batching_groups_concurrent_requests(server):
    async def burst():
        async with httpx.AsyncClient(base_url=server.url, timeout=120.0) as c:
            a, b = im.photo("Ariel_Sharon", 49), im.photo("Ariel_Sharon", 50)
            return await asyncio.gather(*[c.post("/verify", files=files(a, b)) for _ in range(8)])

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    sims = {round(r.json()["similarity"], 4) for r in responses}
    assert len(sims) == 1  # batching does not change results
    assert max(r.json()["batch_images"] for r in responses) > 2  # some requests shared a batch


# -- gallery ---------------------------------------------------------------------------------------


def test_enroll_identify_delete(client, server):
    auth = server.auth
    assert client.post("/collections", json={"name": "lfw"}, headers=auth).status_code == 201
    enrolled = {}
    for name in IDENTITIES:
        r = client.post(f"/collections/lfw/subjects/{name}/faces", files={"image": ("f.jpg", im.photo(name, 49), "image/jpeg")},
                        data={"policy": "largest_central"}, headers=auth)
        assert r.status_code == 201, r.text
        enrolled[name] = r.json()["face_id"]
    second = client.post("/collections/lfw/subjects/George_W_Bush/faces", json={
        "image": base64.b64encode(im.photo("George_W_Bush", 52)).decode(), "policy": "largest_central"}, headers=auth)
    assert second.status_code == 201
    subjects = client.get("/collections/lfw/subjects").json()["subjects"]
    assert {s["name"]: s["faces"] for s in subjects}["George_W_Bush"] == 2 and len(subjects) == len(IDENTITIES)
    assert client.get("/collections/lfw").json()["faces"] == len(IDENTITIES) + 1

    def identify(name, n, **extra):
        r = client.post("/identify", files={"image": ("q.jpg", im.photo(name, n), "image/jpeg")},
                        data={"collection": "lfw", "k": "3", **extra})  # the model's default operating point
        assert r.status_code == 200, r.text
        return r.json()

    res = identify("George_W_Bush", 50)
    assert res["matches"][0]["subject"] == "George_W_Bush" and res["matches"][0]["above_threshold"] is True
    assert len(res["matches"]) == 3 and res["index"]["type"] == "flat" and res["timings_ms"]["search"] > 0
    assert [m["similarity"] for m in res["matches"]] == sorted((m["similarity"] for m in res["matches"]), reverse=True)
    # the embedding route gives the same answer as the image route
    emb = client.post("/embed", files={"image": ("q.jpg", im.photo("George_W_Bush", 50), "image/jpeg")}).json()["embedding"]
    by_vec = client.post("/identify", json={"collection": "lfw", "embedding": emb, "k": 3}).json()
    assert [m["subject"] for m in by_vec["matches"]] == [m["subject"] for m in res["matches"]]

    # delete one face: the subject keeps its other face
    r = client.delete(f"/collections/lfw/faces/{second.json()['face_id']}", headers=auth)
    assert r.status_code == 200 and r.json()["faces_removed"] == 1
    # delete the subject: it is gone from search
    r = client.delete("/collections/lfw/subjects/George_W_Bush", headers=auth)
    assert r.status_code == 200 and r.json()["faces_removed"] == 1
    after = identify("George_W_Bush", 50, k="10")
    assert "George_W_Bush" not in {m["subject"] for m in after["matches"]}
    assert len(after["matches"]) == len(IDENTITIES) - 1
    assert client.get("/collections/lfw/subjects/George_W_Bush").status_code == 404
    # delete the collection
    assert client.delete("/collections/lfw", headers=auth).json()["faces_removed"] == len(IDENTITIES) - 1
    assert client.post("/identify", json={"collection": "lfw", "embedding": emb}).json()["code"] == "not_found"


def test_metrics_expose_requests_inference_and_gallery(client):
    client.get("/health")
    text = client.get("/metrics").text
    assert 'faceverify_requests_total{method="POST",route="/verify",status="200"}' in text
    assert 'faceverify_requests_total{method="GET",route="/health",status="200"}' in text
    assert "faceverify_inference_seconds_count" in text and "faceverify_gallery_faces" in text
    assert 'route="/collections/{collection}/subjects/{subject}/faces"' in text  # templates, not raw paths


# -- the bad-input corpus ------------------------------------------------------------------------
# (name, request kwargs builder, expected status, expected code or None for success)

GOOD = im.photo  # noqa: E731


def _mp(a, b=None, ctype="image/jpeg", **data):
    return {"method": "POST", "url": "/verify", "files": files(a, b, ctype), "data": data}


def _json(body, url="/verify"):
    return {"method": "POST", "url": url, "content": body if isinstance(body, bytes) else json.dumps(body).encode(),
            "headers": {"content-type": "application/json"}}


def _chunked_multipart(size: int, head: bytes | None = None):
    """A body without Content-Length (chunked): a multipart file part that never ends."""
    yield head if head is not None else (b'--b0undary\r\nContent-Disposition: form-data; name="image1"; filename="a.jpg"\r\n'
                                         b"Content-Type: image/jpeg\r\n\r\n")
    for _ in range(size // 65536 + 1):
        yield b"\x00" * 65536


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


CORPUS = [
    # undecodable or wrong bytes
    ("zero_bytes", lambda: _mp(b"", GOOD()), 400, "unreadable_image"),
    ("truncated_jpeg", lambda: _mp(im.truncated_jpeg(), GOOD()), 400, "unreadable_image"),
    ("truncated_png", lambda: _mp(GOOD(), im.truncated_png()), 400, "unreadable_image"),
    ("text_renamed_jpg", lambda: _mp(b"hello, I am not a photo\n" * 20, GOOD()), 415, "unsupported_media_type"),
    ("html_as_image", lambda: _mp(b"<html><body>x</body></html>", GOOD(), ctype="application/octet-stream"), 415, "unsupported_media_type"),
    ("gif", lambda: _mp(im.gif(), GOOD()), 415, "unsupported_media_type"),
    ("tiff", lambda: _mp(im.tiff(), GOOD()), 415, "unsupported_media_type"),
    ("part_declared_text_plain", lambda: _mp(GOOD(), GOOD(), ctype="text/plain"), 415, "unsupported_media_type"),
    # sizes
    ("one_by_one", lambda: _mp(im.tiny_png(1), GOOD()), 422, "image_too_small"),
    ("ten_by_ten", lambda: _mp(im.tiny_png(10), GOOD()), 422, "no_face"),
    ("huge_20000x20000", lambda: _mp(im.huge_png(), GOOD()), 413, "image_too_large"),
    # faces
    ("no_face", lambda: _mp(im.no_face_png(), GOOD()), 422, "no_face"),
    ("two_faces_reject", lambda: _mp(im.two_faces_jpeg(), GOOD(), policy="reject"), 422, "multiple_faces"),
    ("two_faces_largest", lambda: _mp(im.two_faces_jpeg(), GOOD(), policy="largest"), 200, None),
    # unusual but valid encodings are decoded, not refused
    ("cmyk_jpeg", lambda: _mp(im.cmyk_jpeg(), GOOD()), 200, None),
    ("png_16bit", lambda: _mp(im.png16_gray(), GOOD()), 200, None),
    ("png_alpha", lambda: _mp(im.png_alpha(), GOOD()), 200, None),
    ("grayscale_jpeg", lambda: _mp(im.grayscale_jpeg(), GOOD()), 200, None),
    ("exif_rotated", lambda: _mp(im.exif_rotated_jpeg(), GOOD()), 200, None),
    ("webp", lambda: _mp(im.webp(), GOOD()), 200, None),
    ("bmp", lambda: _mp(im.bmp(), GOOD()), 200, None),
    # request shape
    ("missing_image2", lambda: _mp(GOOD()), 422, "validation_error"),
    ("missing_everything", lambda: {"method": "POST", "url": "/verify", "files": {"other": ("x", b"1")}}, 422, "validation_error"),
    ("image_as_text_field", lambda: {"method": "POST", "url": "/verify", "files": {"image1": ("a.jpg", GOOD(), "image/jpeg")},
                                     "data": {"image2": "not a file"}}, 422, "validation_error"),
    ("unknown_form_field", lambda: _mp(GOOD(), GOOD(), treshold="0.5"), 422, "validation_error"),
    ("threshold_out_of_range", lambda: _mp(GOOD(), GOOD(), threshold="2.5"), 422, "validation_error"),
    ("threshold_nan", lambda: _mp(GOOD(), GOOD(), threshold="nan"), 422, "validation_error"),
    ("threshold_not_number", lambda: _mp(GOOD(), GOOD(), threshold="high"), 422, "validation_error"),
    ("unknown_operating_point", lambda: _mp(GOOD(), GOOD(), operating_point="far_1e-9"), 422, "validation_error"),
    ("unknown_policy", lambda: _mp(GOOD(), GOOD(), policy="smallest"), 422, "validation_error"),
    ("wrong_content_type", lambda: {"method": "POST", "url": "/verify", "content": GOOD(), "headers": {"content-type": "image/jpeg"}}, 415, "unsupported_media_type"),
    ("text_plain_body", lambda: {"method": "POST", "url": "/verify", "content": b"image1=x", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
    ("no_content_type", lambda: {"method": "POST", "url": "/verify", "content": b"{}"}, 415, "unsupported_media_type"),
    ("multipart_without_boundary", lambda: {"method": "POST", "url": "/verify", "content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, "malformed_body"),
    ("malformed_json", lambda: _json(b'{"image1": "abc",'), 422, "validation_error"),
    ("json_array", lambda: _json([1, 2, 3]), 422, "validation_error"),
    ("json_missing_image2", lambda: _json({"image1": _b64(GOOD())}), 422, "validation_error"),
    ("bad_base64", lambda: _json({"image1": "this is *not* base64!!", "image2": _b64(GOOD())}), 422, "invalid_base64"),
    ("base64_of_text", lambda: _json({"image1": _b64(b"just text"), "image2": _b64(GOOD())}), 415, "unsupported_media_type"),
    ("json_wrong_type", lambda: _json({"image1": 12, "image2": _b64(GOOD())}), 422, "validation_error"),
    ("oversized_body", lambda: _mp(b"\xff\xd8" + b"\x00" * (17 * 1024 * 1024), GOOD()), 413, "payload_too_large"),
    ("oversized_chunked_body", lambda: {"method": "POST", "url": "/verify", "content": _chunked_multipart(17 * 1024 * 1024),
                                        "headers": {"content-type": "multipart/form-data; boundary=b0undary"}}, 413, "payload_too_large"),
    ("oversized_chunked_json", lambda: {"method": "POST", "url": "/collections", "content": _chunked_multipart(17 * 1024 * 1024, b"{"),
                                        "headers": {"content-type": "application/json", "X-API-Key": API_KEY}}, 413, "payload_too_large"),
    # routes and methods
    ("get_on_verify", lambda: {"method": "GET", "url": "/verify"}, 405, "method_not_allowed"),
    ("unknown_route", lambda: {"method": "GET", "url": "/nope"}, 404, "not_found"),
    # gallery
    ("identify_unknown_collection", lambda: {"method": "POST", "url": "/identify", "files": {"image": ("q.jpg", GOOD(), "image/jpeg")},
                                             "data": {"collection": "no_such_collection"}}, 404, "not_found"),
    ("enroll_unknown_collection", lambda: {"method": "POST", "url": "/collections/nope/subjects/x/faces", "headers": {"X-API-Key": API_KEY},
                                           "files": {"image": ("q.jpg", GOOD(), "image/jpeg")}}, 404, "not_found"),
    ("list_unknown_collection", lambda: {"method": "GET", "url": "/collections/nope/subjects"}, 404, "not_found"),
    ("enroll_without_key", lambda: {"method": "POST", "url": "/collections/corpus/subjects/x/faces",
                                    "files": {"image": ("q.jpg", GOOD(), "image/jpeg")}}, 401, "unauthorized"),
    ("enroll_bad_key", lambda: {"method": "POST", "url": "/collections/corpus/subjects/x/faces", "headers": {"X-API-Key": "wrong"},
                                "files": {"image": ("q.jpg", GOOD(), "image/jpeg")}}, 401, "unauthorized"),
    ("create_collection_bad_bearer", lambda: {"method": "POST", "url": "/collections", "json": {"name": "zz"},
                                              "headers": {"Authorization": "Bearer nope"}}, 401, "unauthorized"),
    ("delete_collection_without_key", lambda: {"method": "DELETE", "url": "/collections/corpus"}, 401, "unauthorized"),
    ("collection_name_path_trick", lambda: {"method": "POST", "url": "/collections", "json": {"name": "../../etc"},
                                            "headers": {"X-API-Key": API_KEY}}, 422, "validation_error"),
    ("subject_dotdot", lambda: {"method": "POST", "url": "/collections/corpus/subjects/a..b/faces", "headers": {"X-API-Key": API_KEY},
                                "files": {"image": ("q.jpg", GOOD(), "image/jpeg")}}, 422, "invalid_identifier"),
    ("subject_encoded_slash", lambda: {"method": "DELETE", "url": "/collections/corpus/subjects/..%2F..%2Fetc", "headers": {"X-API-Key": API_KEY}}, 404, "not_found"),
    ("subject_too_long", lambda: {"method": "DELETE", "url": "/collections/corpus/subjects/" + "x" * 65, "headers": {"X-API-Key": API_KEY}}, 422, "invalid_identifier"),
    ("face_id_not_hex", lambda: {"method": "DELETE", "url": "/collections/corpus/faces/not-a-face-id", "headers": {"X-API-Key": API_KEY}}, 422, "invalid_identifier"),
    ("face_id_unknown", lambda: {"method": "DELETE", "url": "/collections/corpus/faces/" + "0" * 32, "headers": {"X-API-Key": API_KEY}}, 404, "not_found"),
    ("collection_exists", lambda: {"method": "POST", "url": "/collections", "json": {"name": "corpus"}, "headers": {"X-API-Key": API_KEY}}, 409, "conflict"),
    ("identify_embedding_wrong_dim", lambda: _json({"collection": "corpus", "embedding": [0.1] * 7}, "/identify"), 422, "dimension_mismatch"),
    ("identify_image_and_embedding", lambda: _json({"collection": "corpus", "embedding": [0.1] * dim(), "image": _b64(GOOD())}, "/identify"), 422, "validation_error"),
    ("identify_k_zero", lambda: _json({"collection": "corpus", "embedding": [0.1] * dim(), "k": 0}, "/identify"), 422, "validation_error"),
    ("identify_k_huge", lambda: _json({"collection": "corpus", "embedding": [0.1] * dim(), "k": 100000}, "/identify"), 422, "validation_error"),
    ("enroll_two_faces_default_reject", lambda: {"method": "POST", "url": "/collections/corpus/subjects/x/faces", "headers": {"X-API-Key": API_KEY},
                                                 "files": {"image": ("q.jpg", im.two_faces_jpeg(), "image/jpeg")}}, 422, "multiple_faces"),
]


@pytest.fixture(scope="module")
def corpus_collection(client, server):
    r = client.post("/collections", json={"name": "corpus"}, headers=server.auth)
    assert r.status_code == 201
    return "corpus"


def test_bad_input_corpus_is_large_enough():
    assert len(CORPUS) >= 40 and len({c[0] for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("name,build,status,code", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input(name, build, status, code, client, corpus_collection):
    r = client.request(**build())
    assert r.status_code == status, (name, r.status_code, r.text[:500])
    body = r.json()
    if code is None:
        assert body["same_person"] is (body["similarity"] > body["threshold"]) and -1.0 <= body["similarity"] <= 1.0
    else:
        assert body["code"] == code and body["message"], body
    if status == 401:
        assert "WWW-Authenticate" in r.headers


def test_unusual_encodings_find_the_same_face(client, calibration):
    """EXIF-rotated, CMYK, 16-bit, alpha and grayscale versions of one photo are decoded upright and
    to RGB: each is (nearly) the same face as the original."""
    ref = verify(client, GOOD(), GOOD()).json()
    assert ref["similarity"] == pytest.approx(1.0, abs=1e-4)
    rotated = verify(client, im.exif_rotated_jpeg(), GOOD(), threshold=0.0).json()
    assert rotated["similarity"] > calibration["far_1e-4"], rotated
    assert rotated["faces"][0]["box"] == pytest.approx(ref["faces"][0]["box"], abs=4.0)  # upright coordinates
    for variant in (im.cmyk_jpeg(), im.png16_gray(), im.png_alpha(), im.grayscale_jpeg()):
        out = verify(client, variant, GOOD(), threshold=0.0).json()
        assert out["faces"][0]["box"] == pytest.approx(ref["faces"][0]["box"], abs=4.0)
        # grey versions lose the colour, but are still the same face: above the strictest threshold
        assert out["similarity"] > calibration["far_1e-4"], out


def test_server_keeps_serving_after_the_corpus(client, server):
    assert server.alive()
    assert client.get("/health").status_code == 200
    r = verify(client, GOOD(), im.photo("George_W_Bush", 50))
    assert r.status_code == 200
    text = client.get("/metrics").text
    assert 'status="500"' not in text


# -- limits: a second server with small limits, key-for-everything, tiny queue --------------------


@pytest.fixture(scope="module")
def pca_file(served_model, tmp_path_factory):
    """A PCA projection fitted on photos of training identities (PINS, no LFW people)."""
    from faceverify.commands.gallery import fit_pca_main
    from faceverify.paths import train_root

    out = tmp_path_factory.mktemp("pca") / "pca.npz"
    pins = train_root() / "pins"
    subset = tmp_path_factory.mktemp("pins_subset")
    for person in sorted(pins.iterdir())[:8]:  # symlinks, never copies of the data
        (subset / person.name).mkdir()
        for photo in sorted(person.iterdir())[:8]:
            (subset / person.name / photo.name).symlink_to(photo)
    assert fit_pca_main([str(subset), "--model", str(served_model), "--components", "16", "--out", str(out),
                         "--threads", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def strict_server(served_model, pca_file, tmp_path_factory):
    srv = LiveServer(served_model, tmp_path_factory.mktemp("strict") / "gallery", "--auth", "all", "--max-body-mb", "1",
                     "--max-queue", "1", "--max-batch", "2", "--batch-wait-ms", "0", "--pca", str(pca_file)).start()
    yield srv
    srv.stop()


def test_gallery_with_pca_projection(strict_server):
    with httpx.Client(base_url=strict_server.url, timeout=60, headers=strict_server.auth) as c:
        assert c.get("/health").json()["gallery"]["pca"] == {"in_dim": dim(), "out_dim": 16}
        assert c.post("/collections", json={"name": "pca"}).status_code == 201
        for name in IDENTITIES[:4]:
            r = c.post(f"/collections/pca/subjects/{name}/faces", data={"policy": "largest_central"},
                       files={"image": ("f.jpg", im.photo(name, 49), "image/jpeg")})
            assert r.status_code == 201, r.text
        for name in IDENTITIES[:4]:  # the enrolled photo itself is found first through the 16-d index
            r = c.post("/identify", data={"collection": "pca", "k": "2", "policy": "largest_central"},
                       files={"image": ("q.jpg", im.photo(name, 49), "image/jpeg")}).json()
            assert r["matches"][0]["subject"] == name and r["matches"][0]["similarity"] > 0.999


def test_auth_all_protects_reads_but_not_health(strict_server):
    with httpx.Client(base_url=strict_server.url, timeout=60) as c:
        assert c.get("/health").status_code == 200
        r = c.post("/verify", files=files(GOOD(), GOOD()))
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert c.get("/metrics").status_code == 401
        ok = c.post("/verify", files=files(GOOD(), GOOD()), headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200


def test_body_limit_is_configurable(strict_server):
    with httpx.Client(base_url=strict_server.url, timeout=60, headers=strict_server.auth) as c:
        r = c.post("/verify", files=files(b"\xff\xd8" + b"\x00" * (1200 * 1024), GOOD()))
        assert r.status_code == 413 and r.json()["details"]["max_bytes"] == 1024 * 1024
        assert c.post("/verify", files=files(GOOD(), GOOD())).status_code == 200


def test_overload_gives_503_with_retry_after(strict_server):
    async def burst():
        async with httpx.AsyncClient(base_url=strict_server.url, timeout=120, headers=strict_server.auth) as c:
            a, b = GOOD(), im.photo("George_W_Bush", 50)
            return await asyncio.gather(*[c.post("/verify", files=files(a, b)) for _ in range(16)])

    responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.json()["code"] == "overloaded" and int(busy.headers["Retry-After"]) >= 1
    with httpx.Client(base_url=strict_server.url, timeout=60, headers=strict_server.auth) as c:
        assert c.get("/health").status_code == 200
        assert c.post("/verify", files=files(GOOD(), GOOD())).status_code == 200
