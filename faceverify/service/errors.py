"""Typed JSON errors: every failure is ``{"code", "message", "details"}`` with a stable ``code`` and
the right status (both from ``faceverify/errors.py``, the one table). Client mistakes are 4xx; only
overload/not-ready/store-unavailable are 503 (with Retry-After); a 500 names its request id."""

from __future__ import annotations

import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import CLIENT_CLOSED, HTTP_STATUS, FaceverifyError, OverloadedError
from .request_id import HEADER as REQUEST_ID_HEADER
from .request_id import request_id

log = logging.getLogger("faceverify.service")

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
    status = status or HTTP_STATUS.get(code, 500)
    body = {"code": code, "message": _clip_tokens(message), "details": _clean(details or {})}
    return JSONResponse(body, status_code=status, headers=headers)


async def faceverify_error_handler(request: Request, exc: FaceverifyError) -> JSONResponse:
    headers = None
    retry_after = getattr(exc, "retry_after", None)  # overloaded, not ready, gallery store unreachable
    if retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    status = exc.status
    if exc.code == "store_unavailable":  # its message names the database URL: the client gets none of it
        return error_response(exc.code, "the gallery database is unavailable; retry after the Retry-After delay.",
                              {}, status, headers)
    if status is None or (status >= 500 and not isinstance(exc, OverloadedError)):
        # a library error with no client meaning (e.g. bad_config at run time): a server bug, logged;
        # its message may name server files, so the client gets the generic internal_error
        log.error("unmapped error %s on %s %s (request id %s): %s", exc.code, request_method(request),
                  clip(request.url.path), request_id(request.scope), exc.message)
        return internal_error_response(request)
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


def internal_error_response(request: Request, headers: dict | None = None) -> JSONResponse:
    """500 internal_error naming the request id (body and header), which the log line names too."""
    rid = request_id(request.scope)
    return error_response("internal_error", f"internal server error; this is a bug, please report it with the request id {rid}.",
                          {"request_id": rid}, 500, {REQUEST_ID_HEADER: rid, **(headers or {})})


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
    # runs outside every middleware (Starlette's ServerErrorMiddleware): the response sets the
    # X-Request-ID header itself. The exception then reaches uvicorn, which drops the connection:
    # "Connection: close" tells the client not to send its next request on it.
    log.exception("unhandled error on %s %s (request id %s)", request_method(request), clip(request.url.path),
                  request_id(request.scope))
    return internal_error_response(request, {"Connection": "close"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FaceverifyError, faceverify_error_handler)
    app.add_exception_handler(ClientDisconnect, client_closed_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
