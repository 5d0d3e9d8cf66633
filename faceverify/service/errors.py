"""Typed JSON errors: every failure is ``{"code", "message", "details"}`` with a stable ``code`` and
the right status. Client mistakes are 4xx; only overload/not-ready are 503 (with Retry-After)."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


# code -> HTTP status. The single table of what each code means on the wire (docs/service.md).
STATUS = {
    "validation_error": 422,
    "invalid_base64": 422,
    "invalid_identifier": 422,
    "dimension_mismatch": 422,
    "unknown_operating_point": 422,
    "malformed_body": 400,
    "unreadable_image": 400,
    "image_error": 400,
    "unsupported_media_type": 415,
    "image_too_large": 413,
    "payload_too_large": 413,
    "image_too_small": 422,
    "no_face": 422,
    "multiple_faces": 422,
    "face_error": 422,
    "gallery_error": 422,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "overloaded": 503,
    "not_ready": 503,
    "store_unavailable": 503,
    "internal_error": 500,
}


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
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def error_response(code: str, message: str, details: dict | None = None, status: int | None = None,
                   headers: dict | None = None) -> JSONResponse:
    status = status or STATUS.get(code, 500)
    body = {"code": code, "message": message, "details": _clean(details or {})}
    return JSONResponse(body, status_code=status, headers=headers)


async def faceverify_error_handler(request: Request, exc: FaceverifyError) -> JSONResponse:
    headers = None
    retry_after = getattr(exc, "retry_after", None)  # overloaded, not ready, gallery store unreachable
    if retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    status = STATUS.get(exc.code)
    if status is None:  # a library error with no client meaning: a server bug, logged
        log.error("unmapped error %s: %s", exc.code, exc.message)
        status = 500
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


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.__cause__, FaceverifyError):  # e.g. the body limit tripped inside FastAPI's body parsing
        return await faceverify_error_handler(request, exc.__cause__)
    code = {400: "malformed_body", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
            415: "unsupported_media_type"}.get(exc.status_code, "validation_error" if exc.status_code < 500 else "internal_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}; see /docs for the API."
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        message = f"{request.method} is not allowed on {request.url.path} (allowed: {', '.join(allowed)}); see /docs for the API."
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return error_response(code, message, {}, exc.status_code, headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method any route accepts on this path (Starlette's own 405 names only the first
    matching route's methods, e.g. GET but not DELETE on /collections/{collection})."""
    from starlette.routing import Match

    methods: set[str] = set()
    scope = {**request.scope, "method": "GET"}
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods is None:
            continue
        for method in route_methods:
            match, _ = route.matches({**scope, "method": method})
            if match == Match.FULL:
                methods.add(method)
    return sorted(methods)


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response("internal_error", "internal server error; this is a bug, please report it with the request id.", {}, 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FaceverifyError, faceverify_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)
