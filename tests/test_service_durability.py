"""kill -9 in the middle of an enrollment burst loses no acknowledged enrollment and leaves no
half-state: after a restart every acknowledged face is listed and found by /identify."""

from __future__ import annotations

import itertools
import threading

import httpx
import pytest
from service_fixtures.server import LiveServer
from service_fixtures.model import IDENTITIES, PHOTOS_PER_ID, dim, lfw_image

from faceverify.gallery import Gallery

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # server start-ups

CLIENTS = 4
KILL_AFTER = 12  # acknowledged enrollments before the kill (requests are still in flight then)


def test_kill_9_mid_burst_keeps_every_acknowledged_enrollment(served_model, tmp_path):
    gallery_dir = tmp_path / "gallery"
    photos = [lfw_image(name, n) for n in range(1, PHOTOS_PER_ID + 1) for name in IDENTITIES]  # distinct photos
    acked: list[tuple[int, str]] = []  # (photo index, face_id) of every 201
    lock = threading.Lock()
    counter = itertools.count()
    enough = threading.Event()

    srv = LiveServer(served_model, gallery_dir).start()
    try:
        assert httpx.post(srv.url + "/collections", json={"name": "door"}, headers=srv.auth).status_code == 201

        def enroll_loop():
            with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as c:
                while True:
                    i = next(counter)
                    if i >= len(photos):
                        return
                    try:
                        r = c.post(f"/collections/door/subjects/p{i}/faces", data={"policy": "largest_central"},
                                   files={"image": ("p.jpg", photos[i].read_bytes(), "image/jpeg")})
                    except httpx.HTTPError:
                        return  # the server is gone
                    if r.status_code == 201:
                        with lock:
                            acked.append((i, r.json()["face_id"]))
                            if len(acked) >= KILL_AFTER:
                                enough.set()
                    else:
                        assert r.status_code == 422, r.text  # e.g. no_face on an odd photo; never a 5xx

        threads = [threading.Thread(target=enroll_loop) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        assert enough.wait(300), f"only {len(acked)} enrollments acknowledged"
        srv.kill9()  # mid-burst: the other clients have requests in flight
        for t in threads:
            t.join(60)
        in_flight_when_killed = next(counter) - len(acked)
    finally:
        srv.stop()
    assert len(acked) >= KILL_AFTER and in_flight_when_killed >= 1

    srv2 = LiveServer(served_model, gallery_dir).start()
    try:
        with httpx.Client(base_url=srv2.url, timeout=60) as c:
            faces = c.get("/collections/door/faces").json()["faces"]
            stored = {f["face_id"]: f["subject"] for f in faces}
            for i, face_id in acked:  # every acknowledged enrollment is there, under its subject
                assert stored.get(face_id) == f"p{i}", (i, face_id)
            health = c.get("/health").json()
            assert health["gallery"]["collections"]["door"]["size"] == len(stored)  # index == database
            subjects = c.get("/collections/door/subjects").json()["subjects"]
            assert all(s["faces"] >= 1 for s in subjects) and len(subjects) == len(stored)  # no orphan subject
            for i, face_id in acked:  # ... and searchable: its own photo finds it first
                r = c.post("/identify", data={"collection": "door", "k": "1", "policy": "largest_central"},
                           files={"image": ("q.jpg", photos[i].read_bytes(), "image/jpeg")})
                top = r.json()["matches"][0]
                assert top["face_id"] == face_id and top["similarity"] > 0.999, (i, top)
    finally:
        srv2.stop()
    with Gallery(gallery_dir, dim(), use_snapshot=False) as g:
        assert g.integrity_check() == "ok" and g.db_face_count() == len(stored)
