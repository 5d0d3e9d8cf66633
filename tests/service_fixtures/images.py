"""Image fixtures made in memory from real LFW photos (nothing is written to the repository)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from faceverify.image import load_image

from .model import lfw_image


def photo(name: str = "George_W_Bush", number: int = 49) -> bytes:
    return lfw_image(name, number).read_bytes()


def rgb(name: str = "George_W_Bush", number: int = 49) -> np.ndarray:
    return load_image(lfw_image(name, number))


def encode(img: Image.Image | np.ndarray, fmt: str, **kw) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(rgb()).convert("CMYK"), "JPEG", quality=95)


def png16_gray() -> bytes:
    gray = np.asarray(Image.fromarray(rgb()).convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    return encode(Image.fromarray(gray.astype(np.uint16)), "PNG")


def png_alpha() -> bytes:
    rgba = np.dstack([rgb(), np.full(rgb().shape[:2], 255, np.uint8)])
    rgba[:10, :, 3] = 0  # a transparent band at the top
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def grayscale_jpeg() -> bytes:
    return encode(Image.fromarray(rgb()).convert("L"), "JPEG", quality=95)


def exif_rotated_jpeg() -> bytes:
    """Pixels stored rotated 90 degrees counter-clockwise, EXIF Orientation=6 ("rotate 90 CW to
    display"): decoders that ignore EXIF see a sideways face."""
    img = Image.fromarray(rgb()).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def two_faces_jpeg() -> bytes:
    return encode(np.concatenate([rgb("George_W_Bush", 49), rgb("Donald_Rumsfeld", 49)], axis=1), "JPEG", quality=95)


def no_face_png() -> bytes:
    y, x = np.mgrid[0:160, 0:160]
    img = np.dstack([(x * 1.5) % 256, (y * 1.5) % 256, np.full_like(x, 128)]).astype(np.uint8)
    return encode(img, "PNG")


def tiny_png(side: int) -> bytes:
    return encode(np.full((side, side, 3), 128, np.uint8), "PNG")


def huge_png(side: int = 20000) -> bytes:
    """A real, valid 1-bit PNG of side x side pixels (~50 KB): a decompression bomb for naive
    decoders; the service must refuse it from the header (image_too_large)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = photo()
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    data = encode(rgb(), "PNG")
    return data[: len(data) // 2]


def gif() -> bytes:
    return encode(rgb(), "GIF")


def tiff() -> bytes:
    return encode(rgb(), "TIFF")


def webp() -> bytes:
    return encode(rgb(), "WEBP", quality=90)


def bmp() -> bytes:
    return encode(rgb(), "BMP")
