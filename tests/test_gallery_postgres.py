"""Several galleries (as several service replicas would) on one real PostgreSQL database: each
follows the others' changes, and concurrent writes are made safe by the database's constraints
and transactions."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest

from faceverify.errors import ModelMismatchError, SchemaVersionError, StoreUnavailableError
from faceverify.gallery import ConflictError, Gallery, NotFoundError

DIM = 32
pytestmark = pytest.mark.timeout(300)


def unit(rng, n=1):
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def index_ids(g: Gallery, collection: str) -> set[int]:
    """The face row ids in this gallery's index for ``collection``."""
    return g.indexes.face_ids(collection)


def db_ids(url: str, collection: str) -> set[int]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT f.id FROM faces f JOIN collections c ON c.id = f.collection_id WHERE c.name = %s", (collection,))}


def wait_until(predicate, timeout: float = 5.0) -> float:
    """Seconds until ``predicate()`` held (AssertionError after ``timeout``)."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not reached in {timeout}s")
        time.sleep(0.002)
    return time.monotonic() - t0


@pytest.fixture
def url(pg_cluster):
    return pg_cluster.new_database()


@pytest.fixture
def pair(url):
    a, b = Gallery(url, DIM, "m"), Gallery(url, DIM, "m")
    yield a, b
    a.close()
    b.close()


def test_each_replica_sees_the_others_changes_within_a_second(pair):
    a, b = pair
    rng = np.random.default_rng(0)
    a.create_collection("c")
    wait_until(lambda: "c" in b.describe()["collections"], 1.0)
    vecs = unit(rng, 3)
    rec = a.enroll("c", "alice", vecs[0])
    assert a.search("c", vecs[0], k=1)[0].face_id == rec.face_id  # read-your-writes on the writer
    took = wait_until(lambda: [h.face_id for h in b.search("c", vecs[0], k=1)] == [rec.face_id], 1.0)
    rec_b = b.enroll("c", "bob", vecs[1])  # and the other way round
    wait_until(lambda: [h.face_id for h in a.search("c", vecs[1], k=1)] == [rec_b.face_id], 1.0)
    a.delete_face("c", rec.face_id)
    wait_until(lambda: rec.face_id not in {h.face_id for h in b.search("c", vecs[0], k=5)}, 1.0)
    b.delete_collection("c")
    wait_until(lambda: "c" not in a.describe()["collections"], 1.0)
    with pytest.raises(NotFoundError):
        a.search("c", vecs[0])
    assert took < 1.0
    assert a.seq == b.seq == 5  # one change number per committed write, the same on both


def test_two_replicas_enroll_into_one_subject_at_once(pair, url):
    a, b = pair
    a.create_collection("c")
    b.sync()
    rng = np.random.default_rng(1)
    vecs = unit(rng, 80)
    start = threading.Barrier(4)
    errors: list[BaseException] = []
    acked: list[str] = []

    def writer(g: Gallery, part: range):
        start.wait()
        try:
            for i in part:  # everyone into "shared", plus a batch naming it with a new subject
                acked.extend(r.face_id for r in g.enroll_many("c", [("shared", vecs[i], {}), (f"own{i}", vecs[i], {})]))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(g, range(k, 80, 4))) for k, g in enumerate((a, b, a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    subjects = {s.name: s.faces for s in a.list_subjects("c")}
    assert subjects["shared"] == 80 and len(subjects) == 81  # one "shared" subject, every face in it
    assert len(acked) == 160 and {f.face_id for f in a.list_faces("c")} == set(acked)
    a.sync(), b.sync()
    assert index_ids(a, "c") == index_ids(b, "c") == db_ids(url, "c")


def test_subject_deleted_on_one_replica_while_another_enrolls_into_it(pair, url):
    a, b = pair
    a.create_collection("c")
    b.sync()
    rng = np.random.default_rng(2)
    vecs = unit(rng, 200)
    stop = threading.Event()
    unexpected: list[BaseException] = []
    enrolled, deletions = [], []

    def enroller():
        for i in range(200):
            try:
                enrolled.append(a.enroll("c", "victim", vecs[i]).face_id)
            except BaseException as exc:  # noqa: BLE001
                unexpected.append(exc)
        stop.set()

    def deleter():
        while not stop.is_set():
            try:
                deletions.append(b.delete_subject("c", "victim"))
            except NotFoundError:
                pass  # deleted already and not re-created yet
            except BaseException as exc:  # noqa: BLE001
                unexpected.append(exc)

    threads = [threading.Thread(target=enroller), threading.Thread(target=deleter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not unexpected, unexpected  # no foreign-key violation, no orphan, no 500
    assert len(deletions) >= 2, "the deletes should have interleaved with the enrollments"
    remaining = {f.face_id for f in a.list_faces("c")}
    # every enrollment either survives or was removed by one of the deletes: none lost, none invented
    assert sum(deletions) + len(remaining) == len(enrolled) == 200
    assert remaining <= set(enrolled)
    with psycopg.connect(url) as conn:  # a subject exists iff it has faces (no empty leftover from a race)
        (orphans,) = conn.execute("SELECT COUNT(*) FROM subjects s WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.subject_id = s.id)").fetchone()
    assert orphans == 0
    a.sync(), b.sync()
    assert index_ids(a, "c") == index_ids(b, "c") == db_ids(url, "c")


def test_the_same_collection_created_twice_at_once(pair):
    a, b = pair
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def create(g: Gallery):
        start.wait()
        try:
            g.create_collection("dup")
            outcomes.append("created")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=create, args=(g,)) for g in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["created"]
    assert [c.name for c in b.list_collections()] == ["dup"]
    wait_until(lambda: "dup" in a.describe()["collections"] and "dup" in b.describe()["collections"], 1.0)


def test_follower_catches_up_after_losing_its_connection(pair, url):
    a, b = pair
    a.create_collection("c")
    rng = np.random.default_rng(3)
    vecs = unit(rng, 30)
    wait_until(lambda: b.describe()["store"]["connected"], 5.0)
    for i in range(30):  # kill b's LISTEN connection again and again while a writes: notifications are lost
        if i % 5 == 0:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' "
                             "AND datname = current_database() AND pid <> pg_backend_pid()")
        a.enroll("c", f"s{i}", vecs[i])
    wait_until(lambda: b.describe()["store"]["connected"] and b.size == 30, 5.0)
    assert b.describe()["store"]["reconnects"] >= 1
    assert index_ids(b, "c") == db_ids(url, "c")


def test_schema_version_and_model_are_checked_on_open(url):
    with Gallery(url, DIM, "model-A") as g:
        g.create_collection("c")
    with pytest.raises(ModelMismatchError, match="model-A"):
        Gallery(url, DIM, "model-B")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        Gallery(url, DIM, "model-A")


def test_unreachable_database_is_a_typed_retryable_error(pg_cluster, url):
    with Gallery(url, DIM, "m") as g:
        g.create_collection("c")
        rec = g.enroll("c", "x", np.ones(DIM, np.float32))
        pg_cluster.stop()
        try:
            with pytest.raises(StoreUnavailableError) as info:
                g.search("c", np.ones(DIM, np.float32))
            assert info.value.retry_after > 0
            with pytest.raises(StoreUnavailableError):
                g.enroll("c", "x", np.ones(DIM, np.float32))
        finally:
            pg_cluster.start()
        # back: the pool replaces its broken connections, the follower reconnects
        wait_until(lambda: g.describe()["store"]["connected"], 10.0)
        assert g.search("c", np.ones(DIM, np.float32), k=1)[0].face_id == rec.face_id
        g.enroll("c", "y", -np.ones(DIM, np.float32))
        assert g.size == g.db_face_count() == 2
