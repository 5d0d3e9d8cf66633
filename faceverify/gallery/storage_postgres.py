"""PostgreSQL storage, shared by several service replicas (psycopg 3 with a connection pool).

Concurrency is enforced by the database, never by check-then-insert:

* collection names are ``UNIQUE``: creating one twice at once gives one row and one 409;
* a subject is upserted (``INSERT .. ON CONFLICT DO UPDATE .. RETURNING id``), which locks its row
  until commit: two replicas enrolling into one subject serialise on it and both faces land in the
  one subject; a delete of that subject (``SELECT .. FOR UPDATE`` first) waits for the enrollment
  and removes its face too, or runs first, and the enrollment then creates the subject afresh;
* faces reference ``(subject_id, collection_id)`` of their subject (composite foreign key), so a
  face can never sit in another collection than its subject, nor outlive it;
* the change sequence is one counter row, updated as the *last* statement of every write
  transaction: its row lock orders commits, so sequence numbers are gap-free and in commit order,
  and a follower reading ``changes WHERE seq > cursor`` can never skip a slower transaction's change.
  The same transaction sends ``NOTIFY faceverify_changes`` (delivered on commit).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import ConfigError, ConflictError, SchemaVersionError, StoreUnavailableError
from .identifiers import not_found
from .records import FaceRecord
from .storage import COLLECTION_CREATED, COLLECTION_DELETED, FACES_ADDED, FACES_REMOVED, Change, NewFace, Snapshot
from .storage_sql import SqlSnapshot, SqlStorage, check_model, info_json
from .vectors import vectors_from_bytes

try:  # an optional dependency: only a postgresql:// gallery needs it
    import psycopg
    from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
except ImportError:  # pragma: no cover - reported when such a gallery is opened
    psycopg = None

log = logging.getLogger(__name__)

CHANNEL = "faceverify_changes"
# keep this many changes in the log; a replica further behind than that rebuilds its index
CHANGE_LOG_KEEP = 200_000
SCHEMA_LOCK = 0x66616365  # pg_advisory_xact_lock key: two replicas starting at once migrate one at a time

# MIGRATIONS[v] takes the schema from version v to v + 1; the last index + 1 is this code's version.
MIGRATIONS = [
    """
    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE change_seq (id int PRIMARY KEY CHECK (id = 1), value bigint NOT NULL);
    INSERT INTO change_seq VALUES (1, 0);
    CREATE TABLE collections (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE,
        created_at double precision NOT NULL);
    CREATE TABLE subjects (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        collection_id bigint NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        name text NOT NULL,
        created_at double precision NOT NULL,
        UNIQUE (collection_id, name),
        UNIQUE (id, collection_id));
    CREATE TABLE faces (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        uid text NOT NULL UNIQUE,
        subject_id bigint NOT NULL,
        collection_id bigint NOT NULL,
        embedding bytea NOT NULL,
        info text NOT NULL,
        created_at double precision NOT NULL,
        FOREIGN KEY (subject_id, collection_id) REFERENCES subjects(id, collection_id) ON DELETE CASCADE);
    CREATE INDEX faces_collection ON faces(collection_id, id);
    CREATE INDEX faces_subject ON faces(subject_id);
    CREATE TABLE changes (
        seq bigint PRIMARY KEY,
        kind text NOT NULL,
        collection_id bigint NOT NULL,
        name text,
        face_ids bigint[] NOT NULL DEFAULT '{}',
        at timestamptz NOT NULL DEFAULT now());
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


class _PostgresSnapshot(SqlSnapshot):
    def _cursor(self, name: str, chunk: int) -> "psycopg.ServerCursor":
        # a server-side cursor in binary: 100k x 512-d is 200 MB, fetched a chunk at a time
        cur = self.conn.cursor(name=name, binary=True)
        cur.itersize = chunk
        return cur


class PostgresStorage(SqlStorage):
    kind = "postgresql"
    follows = True
    placeholder = "%s"
    seq_sql = "SELECT value FROM change_seq WHERE id = 1"

    def __init__(self, url: str, *, pool_size: int = 8, wait_timeout: float = 2.0):
        if psycopg is None:
            raise ConfigError('a postgresql:// gallery needs psycopg 3: pip install "psycopg[binary,pool]" '
                              '(a dependency of faceverify: bash scripts/setup.sh installs it).')
        self.url = url
        self.location = redact(url)
        self.pool_size = pool_size
        # how long a request waits for a connection when the database is gone, before its 503
        self.wait_timeout = wait_timeout
        self._pool: ConnectionPool | None = None
        self.dim = 0

    # -- connection, schema -----------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(f"the gallery database {self.location} is unavailable ({type(exc).__name__}: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}); retry shortly.")

    def _make_pool(self) -> "ConnectionPool":
        return ConnectionPool(
            self.url, min_size=1, max_size=self.pool_size, timeout=self.wait_timeout, open=False,
            kwargs={"autocommit": True, "connect_timeout": 5},
            check=ConnectionPool.check_connection,  # a connection broken by a server restart is replaced, not used
            name="faceverify-gallery",
        )

    def _renew_pool(self) -> None:
        """A fresh pool once the database is reachable again: the old one may be waiting out an
        exponential reconnect back-off (seconds to minutes after a long outage)."""
        old, self._pool = self._pool, self._make_pool()
        self._pool.open(wait=False)
        if old is not None:
            old.close(timeout=1.0)  # requests still waiting on it get a 503 and retry

    def open(self, dim: int, model_id: str) -> None:
        self.dim = dim
        self._pool = self._make_pool()
        try:
            self._pool.open(wait=True, timeout=15.0)
        except PoolTimeout as exc:
            self._pool.close()
            raise ConfigError(f"cannot connect to the gallery database {self.location}; is PostgreSQL running and the URL right?") from exc
        try:
            with self._pool.connection() as conn, conn.transaction():
                self._migrate(conn, dim, model_id)
        except psycopg.OperationalError as exc:
            self._pool.close()
            raise ConfigError(f"cannot open the gallery database {self.location} ({exc}).") from exc
        except BaseException:
            self._pool.close()
            raise

    def _migrate(self, conn: "psycopg.Connection", dim: int, model_id: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
        version = 0
        if exists:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the gallery database {self.location} has schema version {version}, newer than this faceverify "
                f"knows ({SCHEMA_VERSION}); upgrade faceverify on this replica.")
        for v in range(version, SCHEMA_VERSION):
            log.info("gallery %s: migrating the schema to version %d", self.location, v + 1)
            conn.execute(MIGRATIONS[v])
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                     (str(SCHEMA_VERSION),))
        stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        check_model(stored, dim, model_id, f"the gallery database {self.location}", "another database")
        conn.execute("INSERT INTO meta(key, value) VALUES ('dim', %s) ON CONFLICT DO NOTHING", (str(dim),))
        if model_id:
            conn.execute("INSERT INTO meta(key, value) VALUES ('model_id', %s) ON CONFLICT DO NOTHING", (model_id,))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @contextmanager
    def _conn(self) -> Iterator["psycopg.Connection"]:
        """A pooled connection; an unreachable database becomes StoreUnavailableError (503)."""
        if self._pool is None:
            raise StoreUnavailableError("the gallery is closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout, PoolClosed) as exc:
            if isinstance(exc, psycopg.errors.TransactionRollback):
                raise
            raise self._unavailable(exc) from exc

    def _read(self) -> Iterator["psycopg.Connection"]:
        return self._conn()

    def _write(self, body: Callable[["psycopg.Connection"], tuple[object, Change]]) -> tuple[object, Change]:
        """Run ``body`` in a transaction that ends by taking the next change number, logging the
        change and notifying the other replicas; deadlocks/serialisation failures are retried."""
        for attempt in range(5):
            try:
                with self._conn() as conn, conn.transaction():
                    result, change = body(conn)
                    seq = conn.execute("UPDATE change_seq SET value = value + 1 WHERE id = 1 RETURNING value").fetchone()[0]
                    conn.execute("INSERT INTO changes(seq, kind, collection_id, name, face_ids) VALUES (%s, %s, %s, %s, %s)",
                                 (seq, change.kind, change.collection_id, change.name, change.face_ids.tolist()))
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(seq)))
                    if seq % 1000 == 0:  # bounded log; a replica that far behind rebuilds instead
                        conn.execute("DELETE FROM changes WHERE seq <= %s", (seq - CHANGE_LOG_KEEP,))
                change.seq = int(seq)
                return result, change
            except psycopg.errors.TransactionRollback:
                if attempt == 4:
                    raise
                log.info("gallery: write transaction rolled back (deadlock/serialisation), retrying")
        raise AssertionError("unreachable")

    # -- mutations --------------------------------------------------------------------------

    def create_collection(self, name: str, now: float) -> Change:
        def body(conn):
            row = conn.execute("INSERT INTO collections(name, created_at) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
                               (name, now)).fetchone()
            if row is None:  # the unique constraint decided (a concurrent create waits for ours, then lands here)
                raise ConflictError(f"collection {name!r} already exists.", collection=name)
            return None, Change(0, COLLECTION_CREATED, int(row[0]), name)

        return self._write(body)[1]

    def delete_collection(self, name: str) -> tuple[int, Change]:
        def body(conn):
            cid = self._collection_id(conn, name, "FOR UPDATE")  # waits for enrollments holding KEY SHARE
            n = self._face_count(conn, cid)
            conn.execute("DELETE FROM collections WHERE id = %s", (cid,))
            return n, Change(0, COLLECTION_DELETED, cid, name)

        n, change = self._write(body)
        return int(n), change

    def enroll(self, collection: str, faces: Sequence[NewFace], now: float) -> tuple[list[str], Change]:
        uids = [uuid.uuid4().hex for _ in faces]

        def body(conn):
            # KEY SHARE: the collection cannot be deleted under us (its delete waits for our commit)
            cid = self._collection_id(conn, collection, "FOR KEY SHARE")
            # upsert every subject in one statement, in name order (a fixed lock order: no deadlock
            # between two batches naming the same subjects); DO UPDATE locks each row until commit
            names = sorted({f.subject for f in faces})
            rows = conn.execute(
                """INSERT INTO subjects(collection_id, name, created_at)
                   SELECT %s, n, %s FROM unnest(%s::text[]) AS n ORDER BY n
                   ON CONFLICT (collection_id, name) DO UPDATE SET name = EXCLUDED.name
                   RETURNING name, id""",
                (cid, now, names)).fetchall()
            sid = dict(rows)
            with conn.cursor(binary=True) as cur:
                cur.execute(
                    """INSERT INTO faces(uid, subject_id, collection_id, embedding, info, created_at)
                       SELECT u, s, %s, e, i, %s FROM unnest(%s::text[], %s::bigint[], %s::bytea[], %s::text[]) AS t(u, s, e, i)
                       RETURNING uid, id""",
                    (cid, now, uids, [sid[f.subject] for f in faces], [f.embedding for f in faces],
                     [info_json(f.info) for f in faces]))
                by_uid = dict(cur.fetchall())
            ids = np.asarray([by_uid[u] for u in uids], np.int64)
            return None, Change(0, FACES_ADDED, cid, face_ids=ids)

        return uids, self._write(body)[1]

    def delete_face(self, collection: str, uid: str) -> tuple[FaceRecord, Change]:
        def body(conn):
            cid = self._collection_id(conn, collection, "FOR KEY SHARE")
            row = conn.execute(
                """DELETE FROM faces f USING subjects s
                   WHERE f.collection_id = %s AND f.uid = %s AND s.id = f.subject_id
                   RETURNING f.id, s.name, f.created_at, f.info""", (cid, uid)).fetchone()
            if row is None:
                raise not_found(collection, face_id=uid)
            record = FaceRecord(uid, collection, row[1], row[2], json.loads(row[3]))
            return record, Change(0, FACES_REMOVED, cid, face_ids=np.asarray([row[0]], np.int64))

        return self._write(body)

    def delete_subject(self, collection: str, subject: str) -> tuple[int, Change]:
        def body(conn):
            cid = self._collection_id(conn, collection, "FOR KEY SHARE")
            # lock the subject first: an enrollment into it (which holds the row lock from its
            # upsert) commits before we list its faces, so its face is deleted and logged too
            sid = self._subject_id(conn, cid, collection, subject, "FOR UPDATE")
            face_ids = [r[0] for r in conn.execute("DELETE FROM faces WHERE subject_id = %s RETURNING id", (sid,))]
            conn.execute("DELETE FROM subjects WHERE id = %s", (sid,))
            return len(face_ids), Change(0, FACES_REMOVED, cid, face_ids=np.asarray(face_ids, np.int64))

        n, change = self._write(body)
        return int(n), change

    # -- reads ------------------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        with self._conn() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one consistent view, at one seq
            try:
                yield _PostgresSnapshot(conn, self._seq(conn), self.placeholder)
            finally:
                if not conn.closed:
                    conn.execute("ROLLBACK")

    def changes_since(self, seq: int, limit: int = 10_000) -> list[Change] | None:
        with self._conn() as conn:
            # the head first: the log read after it holds at least every change up to it
            head = self._seq(conn)
            rows = conn.execute("SELECT seq, kind, collection_id, name, face_ids FROM changes WHERE seq > %s ORDER BY seq LIMIT %s",
                                (seq, limit)).fetchall()
            if rows and rows[0][0] != seq + 1:
                return None  # pruned past our cursor
            if not rows:
                return [] if head <= seq else None
            changes = [Change(int(s), kind, int(cid), name, np.asarray(ids or [], np.int64)) for s, kind, cid, name, ids in rows]
            wanted = [int(i) for c in changes if c.kind == FACES_ADDED for i in c.face_ids]
            vectors: dict[int, bytes] = {}
            if wanted:
                with conn.cursor(binary=True) as cur:
                    cur.execute("SELECT id, embedding FROM faces WHERE id = ANY(%s::bigint[])", (wanted,))
                    vectors = {int(i): bytes(e) for i, e in cur.fetchall()}
        for c in changes:
            if c.kind == FACES_ADDED:
                # faces deleted since are simply absent (their faces- change follows)
                present = [i for i in c.face_ids.tolist() if i in vectors]
                c.face_ids = np.asarray(present, np.int64)
                c.vectors = vectors_from_bytes([vectors[i] for i in present], self.dim) if present else np.zeros((0, self.dim), np.float32)
        return changes

    def candidates(self, face_ids: Sequence[int]) -> list[tuple[int, str, str, bytes]]:
        with self._conn() as conn, conn.cursor(binary=True) as cur:
            cur.execute("""SELECT f.id, f.uid, s.name, f.embedding FROM faces f JOIN subjects s ON s.id = f.subject_id
                           WHERE f.id = ANY(%s::bigint[])""", ([int(i) for i in face_ids],))
            return [(int(i), uid, name, bytes(e)) for i, uid, name, e in cur.fetchall()]

    def integrity_check(self) -> str:
        # the constraints hold by construction; check the change counter matches the log's head
        with self._conn() as conn:
            seq = self._seq(conn)
            head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        return "ok" if head == seq else f"change log head {head} != change sequence {seq}"

    # -- following other replicas -----------------------------------------------------------

    def listen(self, on_change: Callable[[], None], stop: threading.Event, state: dict, poll: float = 2.0) -> None:
        """Run until ``stop``: LISTEN for changes and call ``on_change`` on each notification, every
        ``poll`` seconds anyway, and right after every (re)connect, so changes made while this
        replica was disconnected are caught up from the change sequence. ``state`` gets
        ``connected`` and ``reconnects`` (for /health)."""
        backoff, lost = 0.1, False
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if lost:  # the database is back: do not wait for the request pool's back-off
                        self._renew_pool()
                        lost = False
                    state["connected"], backoff = True, 0.1
                    on_change()  # after LISTEN: anything committed from here on is notified or in this catch-up
                    idle = 0.0
                    while not stop.is_set():
                        got = any(True for _ in conn.notifies(timeout=0.25, stop_after=1))
                        idle = 0.0 if got else idle + 0.25
                        if got or idle >= poll:
                            idle = 0.0
                            on_change()
            except Exception as exc:  # the follower must outlive any failure: reconnect and catch up
                if not isinstance(exc, (psycopg.Error, StoreUnavailableError)):
                    log.exception("gallery: change follower failed")
                elif state.get("connected"):
                    log.warning("gallery: lost the change feed from %s (%s); reconnecting", self.location, exc)
                state["connected"], lost = False, True
                state["reconnects"] = state.get("reconnects", 0) + 1
                stop.wait(backoff)
                backoff = min(2.0, backoff * 2)

    def status(self) -> dict:
        return {"kind": self.kind, "url": self.location, "schema": SCHEMA_VERSION}
