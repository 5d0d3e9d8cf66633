"""Typed errors. Each has a stable ``code`` (used by the service's JSON errors and the CLI) and a
message that says what happened and what to do about it."""

from __future__ import annotations


class FaceverifyError(Exception):
    """Base class of every error faceverify raises on purpose."""

    code = "faceverify_error"

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details


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


class CheckpointError(FaceverifyError):
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


class StoreUnavailableError(FaceverifyError):
    """The gallery's database (PostgreSQL) cannot be reached right now; the request may be retried
    after ``retry_after`` seconds (HTTP 503 + Retry-After)."""

    code = "store_unavailable"

    def __init__(self, message: str, retry_after: float = 2.0, **details):
        super().__init__(message, **details)
        self.retry_after = retry_after
