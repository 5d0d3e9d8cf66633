"""Names of the gallery's things (collections, subjects, faces): which are valid, and the one
error for a name that names nothing."""

from __future__ import annotations

import re

from ..errors import InvalidIdentifierError, NotFoundError

# Identifiers (collection and subject names): letters, digits, "_", "-", "."; must start with a
# letter or digit (so never "." / ".." / "-flag"), at most 64 characters. They never reach the
# file system, but clients use them in URLs and file names, so path tricks are refused outright.
IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
FACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def validate_identifier(value: str, what: str = "identifier") -> str:
    """``value`` if it is a valid collection/subject name, else InvalidIdentifierError."""
    if not isinstance(value, str) or not IDENTIFIER_RE.fullmatch(value) or ".." in value:
        raise InvalidIdentifierError(
            f"invalid {what} {value!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit (no '..', '/', spaces or other characters).",
            field=what,
        )
    return value


def validate_face_id(value: str) -> str:
    if not isinstance(value, str) or not FACE_ID_RE.fullmatch(value):
        raise InvalidIdentifierError(f"invalid face id {value!r}: face ids are 32 lowercase hex digits.", field="face_id")
    return value


def not_found(collection: str, *, subject: str | None = None, face_id: str | None = None) -> NotFoundError:
    """The error (to raise) for a collection that does not exist, or a subject or face not in it."""
    if subject is not None:
        return NotFoundError(f"subject {subject!r} does not exist in collection {collection!r}.", subject=subject)
    if face_id is not None:
        return NotFoundError(f"face {face_id} does not exist in collection {collection!r}.", face_id=face_id)
    return NotFoundError(f"collection {collection!r} does not exist; create it first (POST /collections).", collection=collection)
