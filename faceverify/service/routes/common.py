"""Shared route helpers."""

from __future__ import annotations

from ...errors import FaceverifyError
from ...verify import FaceResult
from ..batching import InferenceResult
from ..schemas import ErrorResponse

# documented on every route that takes images; the codes are in docs/service.md
ERROR_RESPONSES: dict = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "unreadable_image, malformed_body",
        401: "unauthorized",
        404: "not_found",
        409: "conflict (the collection exists)",
        413: "payload_too_large, image_too_large",
        415: "unsupported_media_type",
        422: "validation_error, invalid_base64, invalid_identifier, image_too_small, no_face, multiple_faces, dimension_mismatch, "
             "invalid_embedding",
        503: "overloaded, not_ready (with Retry-After)",
    }.items()
}


def faces_or_raise(result: InferenceResult, names: list[str]) -> list[FaceResult]:
    """The inference results, or the first refused image's typed error (naming its field)."""
    for name, face in zip(names, result.faces):
        if isinstance(face, FaceverifyError):
            face.details.setdefault("field", name)
            raise face
    return list(result.faces)  # type: ignore[arg-type]

