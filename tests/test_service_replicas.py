"""Two real ``faceverify serve`` replicas (uvicorn subprocesses) sharing one gallery in a real
PostgreSQL cluster: a change acknowledged by one is seen by /identify on the other within 1 s;
kill -9 of a replica mid-burst loses no acknowledged enrollment while the other keeps answering;
a PostgreSQL restart under load gives 503 + Retry-After (never 500), then both reconnect and catch up."""

from __future__ import annotations

import itertools
import threading
import time

import httpx
import pytest
from service_fixtures.server import LiveServer
from service_fixtures.model import IDENTITIES, PHOTOS_PER_ID, lfw_image

pytestmark = pytest.mark.timeout(600)

FORM = {"policy": "largest_central"}


@pytest.fixture(scope="module")
def gallery_url(pg_cluster):
    return pg_cluster.new_database("replicas")


@pytest.fixture(scope="module")
def replicas(served_model, gallery_url, tmp_path_factory):
    logs = tmp_path_factory.mktemp("replica-logs")
    a = LiveServer(served_model, gallery_url, log_dir=logs).start()
    try:
        b = LiveServer(served_model, gallery_url, log_dir=logs).start()
    except BaseException:
        a.stop()
        raise
    r = httpx.post(a.url + "/collections", json={"name": "door"}, headers=a.auth)
    assert r.status_code == 201, r.text
    yield a, b
    a.stop()
    b.stop()


def photo(name: str, n: int) -> bytes:
    return lfw_image(name, n).read_bytes()


def embed(srv: LiveServer, image: bytes) -> list[float]:
    r = httpx.post(srv.url + "/embed", data=FORM, files={"image": ("q.jpg", image, "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["embedding"]


def identify(client: httpx.Client, embedding: list[float], k: int = 3) -> httpx.Response:
    return client.post("/identify", json={"collection": "door", "embedding": embedding, "k": k})


def enroll(client: httpx.Client, subject: str, image: bytes) -> httpx.Response:
    return client.post(f"/collections/door/subjects/{subject}/faces", data=FORM, files={"image": ("p.jpg", image, "image/jpeg")})


def seconds_until(predicate, timeout: float) -> float:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - t0


def top_face(client: httpx.Client, embedding: list[float], retry_503: bool = False) -> str | None:
    r = identify(client, embedding)
    if retry_503 and r.status_code == 503:
        return None
    assert r.status_code == 200, r.text
    matches = r.json()["matches"]
    return matches[0]["face_id"] if matches else None


def test_enroll_on_one_identify_on_the_other_and_delete(replicas):
    a, b = replicas
    image = photo(IDENTITIES[0], 49)
    query = embed(b, image)  # before the enrollment: nothing left to compute while we time
    with httpx.Client(base_url=a.url, headers=a.auth, timeout=60) as ca, httpx.Client(base_url=b.url, timeout=60) as cb:
        r = enroll(ca, "alice", image)
        assert r.status_code == 201, r.text
        face_id = r.json()["face_id"]
        seen = seconds_until(lambda: top_face(cb, query) == face_id, 5.0)  # fails outright past 5 s
        assert seen < 1.0, f"replica B saw the enrollment after {seen:.2f}s"
        top = identify(cb, query).json()["matches"][0]
        assert top["subject"] == "alice" and top["similarity"] > 0.999
        # delete on A: gone from B's /identify within 1 s
        assert ca.delete(f"/collections/door/faces/{face_id}").status_code == 200
        gone = seconds_until(lambda: top_face(cb, query) != face_id, 5.0)
        assert gone < 1.0, f"replica B still returned the deleted face after {gone:.2f}s"
        assert cb.get("/collections/door/faces").json()["faces"] == []  # the database agrees


def test_kill_9_one_replica_mid_burst(replicas, served_model, gallery_url, tmp_path):
    """Clients enroll through a third replica C and through B at once; C is killed -9 after a few
    acknowledgements. Every acknowledged enrollment is in the database and in B's index, and B
    keeps answering throughout."""
    _, b = replicas
    c = LiveServer(served_model, gallery_url, log_dir=tmp_path).start()
    photos = [photo(name, n) for n in range(1, PHOTOS_PER_ID + 1) for name in IDENTITIES]
    acked: list[tuple[int, str]] = []
    lock = threading.Lock()
    counter = itertools.count()
    enough = threading.Event()
    b_statuses: list[int] = []

    def enroll_loop(srv: LiveServer):
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as client:
            while not (srv is b and enough.is_set() and not c.alive()):
                i = next(counter)
                if i >= len(photos) or (srv is b and len(b_statuses) >= 8):
                    return
                try:
                    r = enroll(client, f"k{i}", photos[i])
                except httpx.HTTPError:
                    return  # C is gone
                if srv is b:
                    b_statuses.append(r.status_code)
                if r.status_code == 201:
                    with lock:
                        acked.append((i, r.json()["face_id"]))
                        if len(acked) >= 10:
                            enough.set()
                else:
                    assert r.status_code == 422, r.text  # an odd photo (no_face); never a 5xx

    threads = [threading.Thread(target=enroll_loop, args=(srv,)) for srv in (c, c, c, b)]
    try:
        for t in threads:
            t.start()
        assert enough.wait(300), f"only {len(acked)} enrollments acknowledged"
        c.kill9()
        for t in threads:
            t.join(120)
    finally:
        c.stop()
    assert not any(s >= 500 for s in b_statuses), b_statuses
    with httpx.Client(base_url=b.url, timeout=60) as cb:
        assert cb.get("/health").status_code == 200  # B keeps answering
        stored = {f["face_id"]: f["subject"] for f in cb.get("/collections/door/faces").json()["faces"]}
        for i, face_id in acked:  # 0 acknowledged enrollments lost
            assert stored.get(face_id) == f"k{i}", (i, face_id)
        # B's index has every stored face (including those C wrote just before dying)
        seconds_until(lambda: cb.get("/health").json()["gallery"]["collections"]["door"]["size"] == len(stored), 2.0)
        for i, face_id in acked[-2:]:
            r = cb.post("/identify", data={"collection": "door", "k": "1", **FORM},
                        files={"image": ("q.jpg", photos[i], "image/jpeg")})
            assert r.status_code == 200 and r.json()["matches"][0]["face_id"] == face_id


def test_postgres_restart_under_load(replicas, pg_cluster):
    a, b = replicas
    image = photo(IDENTITIES[1], 50)
    query = embed(a, image)
    seen: list[tuple[str, int, str | None, float, float]] = []  # (replica, status, Retry-After, sent, answered)
    stop = threading.Event()

    def load(srv: LiveServer):
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            while not stop.is_set():
                sent = time.monotonic()
                r = identify(client, query)
                seen.append((srv.url, r.status_code, r.headers.get("Retry-After"), sent, time.monotonic()))
                time.sleep(0.05)

    threads = [threading.Thread(target=load, args=(srv,)) for srv in (a, b)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        pg_cluster.stop("fast")
        down_from = time.monotonic()
        # a request waits up to 2 s for a connection before its 503: keep the store down until each
        # replica has answered one request sent during the outage (4 s on a quiet machine; longer
        # when the CPU is busy), at most 30 s
        time.sleep(4.0)
        while time.monotonic() < down_from + 30 and {x[0] for x in seen if x[3] > down_from + 0.2} != {a.url, b.url}:
            time.sleep(0.25)
    finally:
        down_until = time.monotonic()
        pg_cluster.start()
    try:
        with httpx.Client(base_url=a.url, headers=a.auth, timeout=60) as ca, httpx.Client(base_url=b.url, timeout=60) as cb:
            # back: A accepts an enrollment (retrying its 503s while its pool reconnects) ...
            deadline = time.monotonic() + 30
            while (r := enroll(ca, "after_restart", image)).status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert r.status_code == 201, r.text
            face_id = r.json()["face_id"]
            # ... and B, whose change feed and pool were cut too, reconnects and catches up with it
            # (its pool retries with a backoff, so it may still answer 503 for a few seconds)
            seconds_until(lambda: top_face(cb, query, retry_503=True) == face_id, 20.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    statuses = [x[1] for x in seen]
    assert 500 not in statuses and all(s in (200, 503) for s in statuses), sorted(set(statuses))
    while_down = [x for x in seen if x[3] > down_from + 0.2 and x[4] < down_until]  # sent and answered while down
    assert {x[0] for x in while_down} == {a.url, b.url} and all(x[1] == 503 for x in while_down), while_down
    assert all(ra and int(ra) >= 1 for _, s, ra, _, _ in seen if s == 503)  # every 503 says when to retry
    assert {x[0] for x in seen if x[3] > down_until and x[1] == 200} == {a.url, b.url}  # both answer again
