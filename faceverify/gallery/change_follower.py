"""Keeping an :class:`~.index_set.IndexSet` in step with its store: this replica's own committed
changes (applied before the write is acknowledged) and, with a shared store (PostgreSQL), the
other replicas' changes, replayed from the change log whenever LISTEN/NOTIFY or a poll says there
may be some. A change log that cannot be replayed (pruned, or a gap) means a rebuild."""

from __future__ import annotations

import logging
import threading

from ..errors import GalleryError
from .index_set import ChangeGap, IndexSet
from .storage import Change, Storage

log = logging.getLogger("faceverify.gallery")

CATCH_UP_BATCH = 10_000  # changes read from the log at a time


class ChangeFollower:
    """Applies every change of ``storage`` to ``indexes``, whoever made it, in sequence order.
    ``follow``: with a store other processes write to, follow them in a background thread."""

    def __init__(self, storage: Storage, indexes: IndexSet, follow: bool = True):
        self.storage = storage
        self.indexes = indexes
        self._stop = threading.Event()
        self._state: dict = {}  # the listener's: connected, reconnects
        self._thread: threading.Thread | None = None
        if storage.follows and follow:
            self._thread = threading.Thread(target=storage.listen, name="gallery-follower", daemon=True,
                                            args=(self._catch_up_unless_stopped, self._stop, self._state))
            self._thread.start()

    def committed(self, change: Change) -> None:
        """Our own committed change: apply it now (read-your-writes: the caller acknowledges the
        request only after this). Changes of other replicas committed before it come first."""
        indexes = self.indexes
        with indexes.lock:
            if change.seq <= indexes.seq:
                return
            if change.seq == indexes.seq + 1:
                indexes.apply([change])
                return
        self.catch_up()
        if indexes.seq < change.seq:  # cannot happen unless the log was pruned; be safe
            raise GalleryError(f"the gallery index is behind the store (at {indexes.seq}, need {change.seq}).")

    def catch_up(self) -> None:
        """Apply every change the store has after ours (other replicas' writes)."""
        while True:
            since = self.indexes.seq
            changes = self.storage.changes_since(since, CATCH_UP_BATCH)
            if changes is None:
                log.warning("gallery: the change log does not reach back to %d; rebuilding the index", since)
                self.indexes.rebuild()
                return
            if not changes:
                return
            try:
                self.indexes.apply(changes)
            except ChangeGap:
                self.indexes.rebuild()
                return
            if len(changes) < CATCH_UP_BATCH:
                return

    def _catch_up_unless_stopped(self) -> None:
        if not self._stop.is_set():
            self.catch_up()

    def status(self) -> dict:
        """For /health: whether a listener follows the other replicas, and its connection."""
        if self._thread is None:
            return {}
        return {"following": True, "connected": bool(self._state.get("connected")),
                "reconnects": int(self._state.get("reconnects", 0))}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
