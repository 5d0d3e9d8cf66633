"""``X-Request-ID`` on every response: the client's own id when it sends one (sanitised), else a
new one. A 500's body and its log line name it, so a report of a failure can be matched to the log."""

from __future__ import annotations

import re
import uuid

HEADER = "X-Request-ID"
SCOPE_KEY = "faceverify.request_id"
MAX_LENGTH = 64
# what survives of a client's id: enough for UUIDs, ULIDs, W3C trace ids and the like; nothing
# that could break a header, a log line or an HTML page that shows it
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def sanitise(value: str) -> str:
    """The safe characters of a client's id, clipped to MAX_LENGTH ("" when none are left)."""
    return _UNSAFE.sub("", value)[:MAX_LENGTH]


def request_id(scope) -> str:
    """The id of the request being served ("-" outside RequestIdMiddleware)."""
    return scope.get(SCOPE_KEY, "-")


class RequestIdMiddleware:
    """Pure ASGI middleware, the outermost of the app's own: every response through it carries the
    id, and the id is stored in the scope (in place, so the 500 handler, which runs outside every
    middleware, reads it too and sets the header itself)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
        rid = sanitise(given.decode("latin-1")) or uuid.uuid4().hex
        scope[SCOPE_KEY] = rid

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)
