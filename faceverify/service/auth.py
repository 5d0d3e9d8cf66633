"""API keys: ``X-API-Key: <key>`` (or ``Authorization: Bearer <key>``), compared in constant time.
Never from the query string (URLs end up in logs, proxies and browser history).

Gallery mutations always need a key; with ``auth_scope="all"`` every path but ``/health`` does,
the OpenAPI document, /docs, /redoc and the demo page included. With no key configured,
mutations are refused (never silently open)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers

from ..errors import UnauthorizedError
from .errors import error_response

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key from FACEVERIFY_API_KEY")
bearer = HTTPBearer(auto_error=False, description="the same API key as a bearer token")


def _digest(key: str) -> bytes:
    # hash first: compare_digest then compares equal-length values, so timing reveals neither
    # the key nor its length
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_matches(candidate: str, keys: list[str]) -> bool:
    """Constant-time membership: every configured key is compared, no early exit."""
    given = _digest(candidate)
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, _digest(key))
    return ok


def _presented(header_key: str | None, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if header_key:
        return header_key
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    return None


def _problem(keys: list[str], presented: str | None) -> str | None:
    """Why ``presented`` is refused, or None when it is accepted."""
    if not keys:
        return ("this server has no API key configured, so gallery changes are disabled; start it with "
                "FACEVERIFY_API_KEY set and send the key in the X-API-Key header.")
    if presented is None:
        return "missing API key: send it in the X-API-Key header (or Authorization: Bearer)."
    if not key_matches(presented, keys):
        return "invalid API key."
    return None


def _check(request: Request, presented: str | None) -> None:
    problem = _problem(request.app.state.settings.api_keys, presented)
    if problem:
        raise UnauthorizedError(problem)


async def require_key(
    request: Request,
    header_key: Annotated[str | None, Security(api_key_header)] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> None:
    """Dependency of every gallery mutation (and, with auth_scope "all", of every route but /health)."""
    _check(request, _presented(header_key, credentials))


WriteAuth = Depends(require_key)
ReadAuth = Depends(require_key)  # applied to the other routers only with auth_scope="all"


OPEN_PATHS = frozenset({"/health"})
WWW_AUTHENTICATE = 'ApiKey header="X-API-Key"'


class KeyRequiredMiddleware:
    """With auth_scope "all": the key is checked before routing, on every path but /health. The
    API routes check it again as a dependency (so their OpenAPI declares it); this also covers
    what has no dependency: /openapi.json, /docs, /redoc, the demo page and unknown paths."""

    def __init__(self, app, keys: list[str]):
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        presented = headers.get("x-api-key") or None
        if presented is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            presented = token.strip() or None if scheme.lower() == "bearer" else None
        problem = _problem(self.keys, presented)
        if problem is None:
            return await self.app(scope, receive, send)
        response = error_response("unauthorized", problem, {}, 401, {"WWW-Authenticate": WWW_AUTHENTICATE})
        await response(scope, receive, send)
