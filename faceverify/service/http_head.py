"""HEAD wherever GET works: FastAPI routes declare GET only (and the OpenAPI stays that way)."""

from __future__ import annotations


class HeadMiddleware:
    """Pure ASGI middleware: a HEAD request runs as GET on a *copy* of the scope (uvicorn decides
    from its own scope whether to write a body, so that one must keep saying HEAD), and the body is
    dropped here; status and headers (Content-Length included) are the GET's. The client's method
    stays visible to the metrics and the 405 handler as ``scope["faceverify.method"]``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_headers_only(message):
            if message["type"] == "http.response.body":
                message = {"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)}
            await send(message)

        await self.app({**scope, "method": "GET", "faceverify.method": "HEAD"}, receive, send_headers_only)
