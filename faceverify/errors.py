"""Every typed error faceverify raises, in one place: the library's, the gallery's and the service's.

Each error has a stable ``code`` (in the service's JSON errors and the CLI's) and a message that
says what happened and what to do about it. ``HTTP_STATUS`` is the one table of what each code
means on the wire (docs/service.md lists the same; a test checks the two agree), and ``EXIT_*``
the one table of what a command's exit status means (docs/architecture.md, "Exit status").
"""

from __future__ import annotations


class FaceverifyError(Exception):
    """Base class of every error faceverify raises on purpose."""

    code = "faceverify_error"

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def status(self) -> int | None:
        """The HTTP status the service answers this error with; None: never sent as such (the
        service answers ``internal_error`` and logs it, e.g. ``bad_config`` at run time)."""
        return HTTP_STATUS.get(self.code)


# -- the caller's input ----------------------------------------------------------------------------


class InvalidInputError(FaceverifyError, ValueError):
    """A value the caller chose is not one faceverify accepts: a face selection policy, a template
    name, a flip mode, a pad, landmarks, a threshold, a request field. Also a ``ValueError``, which
    is what callers caught before these errors were typed."""

    code = "validation_error"


class UnknownOperatingPointError(FaceverifyError):
    code = "unknown_operating_point"


class ImageError(FaceverifyError):
    code = "image_error"


class UnreadableImageError(ImageError):
    code = "unreadable_image"


class UnsupportedImageError(ImageError):
    code = "unsupported_media_type"


class ImageTooLargeError(ImageError):
    code = "image_too_large"


class ImageTooSmallError(ImageError):
    code = "image_too_small"


class FaceError(FaceverifyError):
    code = "face_error"


class NoFaceError(FaceError):
    code = "no_face"


class MultipleFacesError(FaceError):
    code = "multiple_faces"


# -- models, data and configuration (start-up errors: a command exits, the server does not start) ---


class CheckpointError(FaceverifyError):
    """A model that cannot be used: a missing path, a damaged file, not a faceverify checkpoint."""

    code = "bad_checkpoint"


class DataNotFoundError(FaceverifyError):
    code = "data_not_found"


class ConfigError(FaceverifyError):
    code = "bad_config"


class SchemaVersionError(ConfigError):
    """The gallery store was written by another faceverify version (its schema is newer than this
    code knows, or unreadable)."""

    code = "schema_mismatch"


class ModelMismatchError(ConfigError):
    """The gallery was enrolled with another model: embeddings of different models are not comparable."""

    code = "model_mismatch"


# -- the gallery ------------------------------------------------------------------------------------


class GalleryError(FaceverifyError):
    code = "gallery_error"


class NotFoundError(GalleryError):
    code = "not_found"


class ConflictError(GalleryError):
    code = "conflict"


class InvalidIdentifierError(GalleryError):
    code = "invalid_identifier"


class DimensionMismatchError(GalleryError):
    code = "dimension_mismatch"


class StoreUnavailableError(FaceverifyError):
    """The gallery's database (PostgreSQL) cannot be reached right now; the request may be retried
    after ``retry_after`` seconds (HTTP 503 + Retry-After)."""

    code = "store_unavailable"

    def __init__(self, message: str, retry_after: float = 2.0, **details):
        super().__init__(message, **details)
        self.retry_after = retry_after


# -- raised by the service itself -------------------------------------------------------------------


class APIError(FaceverifyError):
    """An error raised by the service (not by the library)."""


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


class MalformedBodyError(APIError):
    code = "malformed_body"


class MediaTypeError(APIError):
    """A request body, or a file part, declared as something other than an image."""

    code = "unsupported_media_type"


class InvalidEmbeddingError(APIError):
    code = "invalid_embedding"


# nginx's "client closed request": never seen by the client, kept apart from 500 in /metrics
CLIENT_CLOSED = 499

# code -> HTTP status: the one table of what each code means on the wire (docs/service.md; a test
# checks the two agree). Codes not here (base classes such as gallery_error, start-up errors such
# as bad_config) are never sent: the service answers internal_error and logs them. The last four
# have no class: the service makes them from the web framework's own errors.
HTTP_STATUS = {
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
    "conflict": 409,
    "overloaded": 503,
    "not_ready": 503,
    "store_unavailable": 503,
    "method_not_allowed": 405,
    "internal_error": 500,
    "client_closed": CLIENT_CLOSED,
}

# Exit status of every ``faceverify`` command (docs/architecture.md, "Exit status").
EXIT_OK = 0  # done; for ``faceverify verify``: the comparison was made, whatever the verdict
EXIT_REFUSED = 1  # an input was refused: an image unreadable or without a usable face (the typed error says which)
EXIT_USAGE = 2  # nothing was done: bad options, a missing or broken model, configuration or data


def exit_status(exc: FaceverifyError) -> int:
    """The exit status of a command that stopped on ``exc``."""
    return EXIT_REFUSED if isinstance(exc, (ImageError, FaceError)) else EXIT_USAGE
