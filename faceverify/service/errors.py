"""Typed JSON errors: every failure is ``{"code", "message", "details"}`` with a stable ``code`` and
the right status. Client mistakes are 4xx; only overload/not-ready are 503 (with Retry-After)."""

from __future__ import annotations

import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import FaceverifyError

log = logging.getLogger("faceverify.service")


class APIError(FaceverifyError):
    """An error raised by the service itself (not by the library)."""


class PayloadTooLargeError(APIError):
    code = "payload_too_large"


class UnauthorizedError(APIError):
    code = "unauthorized"


class OverloadedError(APIError):
    code = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0, **details):
        super().__init__(message, **details)
        self.retry_after = retry_after


class NotReadyError(OverloadedError):
    code = "not_ready"


class InvalidBase64Error(APIError):
    code = "invalid_base64"


class BadRequestError(APIError):
    code = "validation_error"


class MalformedBodyError(APIError):
    code = "malformed_body"


class MediaTypeError(APIError):
    code = "unsupported_media_type"


class RouteNotFoundError(APIError):
    code = "not_found"


class InvalidEmbeddingError(APIError):
    code = "invalid_embedding"


# nginx's "client closed request": never seen by the client, kept apart from 500 in /metrics
CLIENT_CLOSED = 499


# code -> HTTP status. The single table of what each code means on the wire (docs/service.md; a
# test checks the two agree). Codes not here (base classes such as gallery_error, start-up errors
# such as bad_config) are never sent: the handler answers internal_error and logs them.
STATUS = {
    "validation_error": 422,
    "invalid_base64": 422,
    "invalid_identifier": 422,
    "dimension_mismatch": 422,
    "invalid_embedding": 422,
    "unknown_operating_point": 422,
    "malformed_body": 400,
    "unreadable_image": 400,
    "unsupported_media_type": 415,
    "image_too_large": 413,
    "payload_too_large": 413,
    "image_too_small": 422,
    "no_face": 422,
    "multiple_faces": 422,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "overloaded": 503,
    "not_ready": 503,
    "store_unavailable": 503,
    "internal_error": 500,
    "client_closed": CLIENT_CLOSED,
}

# Echoed client input (paths, names, field keys) is clipped: a 70,000-character name must not
# come back as a 70 KB error body.
MAX_ECHO = 80
_LONG_TOKEN = re.compile(r"\S{%d,}" % (MAX_ECHO + 1))


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` if short, else its start and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit - 16]}…({len(text):,} chars)"


def _clip_tokens(text: str) -> str:
    """Every run of non-space characters longer than MAX_ECHO clipped (a message stays readable)."""
    return _LONG_TOKEN.sub(lambda m: clip(m.group(0)), text)


def _clean(obj):
    """JSON-safe details: numpy values become lists/floats, non-finite floats None, others str."""
    if hasattr(obj, "tolist"):
        obj = obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str):
        return _clip_tokens(obj)
    if obj is None or isinstance(obj, (int, bool)):
        return obj
    return _clip_tokens(str(obj))


def error_response(code: str, message: str, details: dict | None = None, status: int | None = None,
                   headers: dict | None = None) -> JSONResponse:
    status = status or STATUS.get(code, 500)
    body = {"code": code, "message": _clip_tokens(message), "details": _clean(details or {})}
    return JSONResponse(body, status_code=status, headers=headers)


async def faceverify_error_handler(request: Request, exc: FaceverifyError) -> JSONResponse:
    headers = None
    retry_after = getattr(exc, "retry_after", None)  # overloaded, not ready, gallery store unreachable
    if retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    status = STATUS.get(exc.code)
    if exc.code == "store_unavailable":  # its message names the database URL: the client gets none of it
        return error_response(exc.code, "the gallery database is unavailable; retry after the Retry-After delay.",
                              {}, status, headers)
    if status is None or (status >= 500 and not isinstance(exc, OverloadedError)):
        # a library error with no client meaning (e.g. bad_config at run time): a server bug, logged;
        # its message may name server files, so the client gets the generic internal_error
        log.error("unmapped error %s on %s %s: %s", exc.code, request_method(request), clip(request.url.path), exc.message)
        return error_response("internal_error", INTERNAL_MESSAGE, {}, 500)
    if status == 401:
        headers = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}
    return error_response(exc.code, exc.message, exc.details, status, headers)


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"]) or "request"
    return error_response("validation_error", f"{where}: {first['msg']}", {"errors": errors}, 422)


INTERNAL_MESSAGE = "internal server error; this is a bug, please report it with the request id."


def request_method(request: Request) -> str:
    """The client's method (HEAD is served as GET inside the app; see HeadMiddleware)."""
    return request.scope.get("faceverify.method") or request.method


async def client_closed_handler(request: Request, exc: ClientDisconnect) -> JSONResponse:
    """The client hung up before its request body was complete (or sent a body uvicorn could not
    parse, e.g. broken chunked encoding, and uvicorn closed the connection): not a server error.
    One log line, status 499 in /metrics; the response goes nowhere."""
    service = getattr(request.app.state, "service", None)
    if service is not None:
        service.metrics.rejected.labels("client_closed").inc()
    client = request.client.host if request.client else "?"
    log.warning("client_closed: %s %s from %s: the connection ended before the request body was complete",
                request_method(request), clip(request.url.path), client)
    return error_response("client_closed", "the client closed the connection before the request body was complete.",
                          {}, CLIENT_CLOSED)


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.__cause__, FaceverifyError):  # e.g. the body limit tripped inside FastAPI's body parsing
        return await faceverify_error_handler(request, exc.__cause__)
    if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI's own body parsing wraps it in a 400
        return await client_closed_handler(request, exc.__cause__)
    code = {400: "malformed_body", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
            415: "unsupported_media_type"}.get(exc.status_code, "validation_error" if exc.status_code < 500 else "internal_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    method, path = request_method(request), clip(request.url.path)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {method} {path}; see /docs for the API."
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        message = f"{method} is not allowed on {path} (allowed: {', '.join(allowed)}); see /docs for the API."
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return error_response(code, message, {}, exc.status_code, headers)


PROBED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts on this path, HEAD wherever GET is. Each method is probed
    through the routes' own matching, so routers included by FastAPI (which hides their routes
    behind one entry of ``app.router.routes``) and mounts (the demo's static files) count too."""
    from starlette.routing import Match, Mount

    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Mount):  # static files: GET and HEAD only
            if route.matches({**request.scope, "method": "GET"})[0] == Match.FULL:
                methods.add("GET")
            continue
        for method in PROBED_METHODS:
            if route.matches({**request.scope, "method": method})[0] == Match.FULL:
                methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request_method(request), clip(request.url.path))
    return error_response("internal_error", INTERNAL_MESSAGE, {}, 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FaceverifyError, faceverify_error_handler)
    app.add_exception_handler(ClientDisconnect, client_closed_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
