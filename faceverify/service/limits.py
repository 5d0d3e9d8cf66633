"""Request body limit, enforced before anything buffers the body."""

from __future__ import annotations

import json

from ..errors import PayloadTooLargeError

DRAIN_FACTOR = 4  # read (and discard) up to 4x the limit so the client gets its 413, then give up


class BodyLimitMiddleware:
    """Pure ASGI middleware.

    - ``Content-Length`` over the limit: 413 ``payload_too_large`` at once (the body is drained,
      up to ``DRAIN_FACTOR`` x the limit, so well-behaved clients read the answer instead of a reset).
    - chunked / unknown length: the body is counted as the app reads it; past the limit the read
      raises PayloadTooLargeError, which the app's error handler turns into the same 413.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > self.max_bytes:
            seen = 0
            while seen <= DRAIN_FACTOR * self.max_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    break
                seen += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            return await self._reject(send, declared)

        counted = 0
        limit = self.max_bytes

        async def limited_receive():
            nonlocal counted
            message = await receive()
            if message["type"] == "http.request":
                counted += len(message.get("body", b""))
                if counted > limit:
                    raise PayloadTooLargeError(
                        f"the request body exceeds the limit of {limit:,} bytes; send smaller images.", max_bytes=limit
                    )
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, send, declared: int) -> None:
        body = json.dumps({
            "code": "payload_too_large",
            "message": f"the request body ({declared:,} bytes) exceeds the limit of {self.max_bytes:,} bytes; send smaller images.",
            "details": {"max_bytes": self.max_bytes, "content_length": declared},
        }).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
