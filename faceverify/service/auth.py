"""API keys: ``X-API-Key: <key>`` (or ``Authorization: Bearer <key>``), compared in constant time.

Gallery mutations always need a key; with ``auth_scope="all"`` every route but ``/health`` does.
With no key configured, mutations are refused (never silently open)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .errors import UnauthorizedError

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


def _check(request: Request, presented: str | None) -> None:
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        raise UnauthorizedError(
            "this server has no API key configured, so gallery changes are disabled; start it with "
            "FACEVERIFY_API_KEY set and send the key in the X-API-Key header."
        )
    if presented is None:
        raise UnauthorizedError("missing API key: send it in the X-API-Key header (or Authorization: Bearer).")
    if not key_matches(presented, keys):
        raise UnauthorizedError("invalid API key.")


async def require_key(
    request: Request,
    header_key: Annotated[str | None, Security(api_key_header)] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
) -> None:
    """Dependency of every gallery mutation (and, with auth_scope "all", of every route but /health)."""
    _check(request, _presented(header_key, credentials))


WriteAuth = Depends(require_key)
ReadAuth = Depends(require_key)  # applied to the other routers only with auth_scope="all"
