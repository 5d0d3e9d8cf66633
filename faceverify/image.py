"""Image decoding: every input becomes an HxWx3 uint8 RGB array, or a typed error.

JPEG, PNG, PGM/PPM, WebP and BMP; EXIF orientation applied; grayscale, 16-bit, palette, CMYK and
alpha images converted to RGB (alpha composited on white); a pixel-count limit checked from the
header *before* decoding, against decompression bombs.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageTooLargeError, ImageTooSmallError, UnreadableImageError, UnsupportedImageError

SUPPORTED_FORMATS = {"JPEG", "PNG", "PPM", "WEBP", "BMP", "MPO"}  # PPM covers PGM; MPO = multi-picture JPEG
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".webp", ".bmp"}  # the files a folder scan takes for images
DEFAULT_MAX_PIXELS = 40_000_000  # ~ a 6300x6300 photo; far above any face photo, far below a bomb
MIN_SIDE = 8

# We enforce our own limit from the header; PIL's bomb warning would only duplicate it.
Image.MAX_IMAGE_PIXELS = None


def load_image(src: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``src`` (a path or the file's bytes) to an HxWx3 uint8 RGB array."""
    name = "<bytes>" if isinstance(src, (bytes, bytearray, memoryview)) else str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise UnreadableImageError("the image is empty (0 bytes); send the file's contents.")
        fp = io.BytesIO(bytes(src))
    else:
        path = Path(src)
        if not path.is_file():
            raise UnreadableImageError(f"{path}: no such file; check the path.")
        if path.stat().st_size == 0:
            raise UnreadableImageError(f"{path}: the file is empty (0 bytes).")
        fp = path.open("rb")
    try:
        return _decode(fp, name, max_pixels)
    finally:
        fp.close()


def _supported_signature(head: bytes) -> bool:
    """The bytes start like a format we read, so a failure to open them is damage (400
    unreadable_image: e.g. a PNG header with no image data), not a wrong format (415)."""
    return (head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"))
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or (head[:2] == b"BM" and head[6:10] == b"\0\0\0\0")  # BMP: reserved fields are zero
            or (len(head) > 2 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace()))


def _decode(fp, name: str, max_pixels: int) -> np.ndarray:
    try:
        img = Image.open(fp)
    except UnidentifiedImageError as exc:
        fp.seek(0)
        if _supported_signature(fp.read(16)):
            raise UnreadableImageError(f"{name}: the image data is missing, corrupt or truncated.") from exc
        raise UnsupportedImageError(
            f"{name}: not an image format faceverify reads (JPEG, PNG, PGM/PPM, WebP, BMP)."
        ) from exc
    except (OSError, ValueError) as exc:
        raise UnreadableImageError(f"{name}: cannot be read as an image ({exc}).") from exc
    if img.format not in SUPPORTED_FORMATS:
        raise UnsupportedImageError(
            f"{name}: {img.format} images are not supported; use JPEG, PNG, PGM/PPM, WebP or BMP."
        )
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,}; "
            "downscale the image first.",
            width=width, height=height, max_pixels=max_pixels,
        )
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmallError(
            f"{name}: {width}x{height} is too small to hold a face (each side must be >= {MIN_SIDE} px).",
            width=width, height=height,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the pixels are still fine
            img.load()
            img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImageError(f"{name}: the image data is corrupt or truncated ({exc}).") from exc


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits, not clip
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGB" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)
