"""Request bodies: one route accepts ``multipart/form-data`` (image files + form fields) or
``application/json`` (base64 images + the same fields); both become one validated params model
plus the raw image bytes, and the images are decoded off the event loop, a few at a time."""

from __future__ import annotations

import base64
import binascii
import re
from typing import TypeVar

import anyio
import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import FaceverifyError, InvalidBase64Error, InvalidInputError, MalformedBodyError, MediaTypeError
from ..image import load_image
from .state import Service

P = TypeVar("P", bound=BaseModel)

# declared part types we refuse outright (the bytes are sniffed anyway; this catches clients that
# upload the wrong file, e.g. a text file, and say so)
_ACCEPTED_PART_TYPES = re.compile(r"^(image/[\w.+-]+|application/octet-stream|binary/octet-stream)$", re.I)
# RFC 2397: data:[<mediatype>][;param=value]*;base64, -- parameters may hold dots etc. (;name=a.jpg),
# never a comma, which base64 never holds either
_DATA_URL = re.compile(r"^data:[^,]{0,1024};base64,", re.I)


def body_doc(form_model: type[BaseModel], json_model: type[BaseModel]) -> dict:
    """``openapi_extra`` documenting both request encodings of a route."""
    def schema(model: type[BaseModel]) -> dict:
        return model.model_json_schema(ref_template="#/components/schemas/{model}")

    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": schema(form_model)},
                "application/json": {"schema": schema(json_model)},
            },
        }
    }


def _validation_error(exc: ValidationError, prefix: str) -> RequestValidationError:
    errors = []
    for e in exc.errors(include_url=False, include_context=False, include_input=False):
        e = dict(e)
        e["loc"] = (prefix, *e.get("loc", ()))
        errors.append(e)
    return RequestValidationError(errors)


def decode_base64(value: str, field: str) -> bytes:
    """Standard or URL-safe base64 (padding optional for URL-safe), whitespace and a data: URL
    prefix allowed; anything else is InvalidBase64Error."""
    text = re.sub(r"\s+", "", _DATA_URL.sub("", value.strip(), count=1))
    if len(text) % 4 == 0 and re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", text):
        return base64.b64decode(text)
    if re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        try:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            pass
    raise InvalidBase64Error(f"{field} is not valid base64; send the file's bytes base64-encoded.", field=field)


async def parse_body(request: Request, params_model: type[P], json_model: type[BaseModel],
                     image_fields: tuple[str, ...], optional_images: tuple[str, ...] = ()) -> tuple[P, dict[str, bytes]]:
    """Validated params and ``{field: image bytes}`` from a multipart or JSON request. For JSON the
    params are the ``json_model`` instance (a subclass of ``params_model`` with the extra fields)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=len(image_fields) + len(optional_images) + 2, max_fields=32)
        except StarletteHTTPException as exc:
            raise MalformedBodyError(f"malformed multipart body: {exc.detail}") from None
        except (ValueError, KeyError, AssertionError) as exc:  # python-multipart edge cases
            raise MalformedBodyError(f"malformed multipart body: {exc}") from None
        images: dict[str, bytes] = {}
        fields: dict[str, str] = {}
        try:
            for key, value in form.multi_items():
                if key in images or key in fields:
                    raise InvalidInputError(f"field {key!r} was sent more than once.", field=key)
                if isinstance(value, UploadFile):
                    if key not in image_fields + optional_images:
                        raise InvalidInputError(f"unexpected file field {key!r}; expected {list(image_fields + optional_images)}.", field=key)
                    part_type = (value.content_type or "").split(";")[0].strip()
                    if part_type and not _ACCEPTED_PART_TYPES.match(part_type):
                        raise MediaTypeError(f"{key} was sent as {part_type!r}; send an image (JPEG, PNG, PGM/PPM, WebP, BMP).", field=key)
                    images[key] = await value.read()
                elif key in image_fields + optional_images:
                    raise InvalidInputError(f"{key} must be a file part (multipart file upload), not a text field.", field=key)
                else:
                    fields[key] = value
        finally:
            await form.close()  # spooled upload files are deleted now, not at garbage collection
        try:
            params = params_model.model_validate(fields)
        except ValidationError as exc:
            raise _validation_error(exc, "body") from None
        missing = [f for f in image_fields if f not in images]
        if missing:
            raise RequestValidationError([{"loc": ("body", f), "msg": "Field required (an image file)", "type": "missing"} for f in missing])
        return params, images
    if ctype == "application/json" or ctype.endswith("+json"):
        raw = await request.body()
        try:
            model = json_model.model_validate_json(raw)
        except ValidationError as exc:
            raise _validation_error(exc, "body") from None
        images = {}
        for f in image_fields + optional_images:
            value = getattr(model, f, None)
            if value is not None:
                images[f] = decode_base64(value, f)
        return model, images  # type: ignore[return-value]  (json_model subclasses params_model)
    raise MediaTypeError(
        f"unsupported request content type {ctype or '(none)'!r}; send multipart/form-data (image files) or application/json (base64 images).",
        content_type=ctype,
    )


async def decode_images(service: Service, blobs: dict[str, bytes]) -> dict[str, np.ndarray]:
    """Decode images in worker threads (at most ``decode_concurrency`` at once, bounding memory);
    a refused image's error names its field."""
    out = {}
    for name, data in blobs.items():
        try:
            out[name] = await anyio.to_thread.run_sync(load_image, data, service.settings.max_pixels, limiter=service.decode_limiter)
        except FaceverifyError as exc:
            exc.details.setdefault("field", name)
            raise
    return out
