"""Credentials kept out of the access log. uvicorn logs every request line with its query string,
so a key sent as ``?api_key=...`` (refused with 401: keys are read from headers only) would be
written to the log, and from there to log shippers and whoever reads them. A filter on the
``uvicorn.access`` logger replaces the value of every credential-looking query parameter with
``[redacted]``; the rest of the line is logged as the client sent it."""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "[redacted]"
# a parameter is credential-looking when its name (lower case, "-" as "_") ends with one of these:
# api_key, apikey, x-api-key, key, token, access_token, password, client_secret, auth, ...
CREDENTIAL_SUFFIXES = ("key", "token", "password", "passwd", "pwd", "secret", "auth", "authorization",
                       "credential", "credentials", "signature")


def is_credential(name: str) -> bool:
    normal = unquote_plus(name).strip().lower().replace("-", "_")
    return normal.endswith(CREDENTIAL_SUFFIXES)


def redact_query(target: str) -> str:
    """``/path?api_key=s3cret&k=5`` -> ``/path?api_key=[redacted]&k=5``; a target without a
    credential-looking parameter is returned unchanged."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if eq and is_credential(name) else part)
    return f"{path}?{'&'.join(parts)}"


class RedactCredentials(logging.Filter):
    """Redacts the request target in uvicorn's access records (``args``: client, method, target,
    HTTP version, status); any other string argument with a query string is redacted too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact_query(a) if isinstance(a, str) and "?" in a else a for a in record.args)
        return True


def install_redaction(logger_name: str = ACCESS_LOGGER) -> None:
    """Attach the filter to the access logger, once (called at app start-up, after the server has
    configured its logging)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactCredentials) for f in logger.filters):
        logger.addFilter(RedactCredentials())
