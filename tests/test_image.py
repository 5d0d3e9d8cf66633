"""Image loading: every supported kind of input decodes to HxWx3 uint8 RGB; every bad input gets
its typed error."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from faceverify.errors import ImageTooLargeError, ImageTooSmallError, UnreadableImageError, UnsupportedImageError
from faceverify.image import load_image


@pytest.fixture(scope="module")
def photo(lfw_images):
    path = lfw_images / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
    return path, np.asarray(Image.open(path).convert("RGB"))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_jpeg_from_path_and_bytes_agree(photo):
    path, rgb = photo
    from_path = load_image(path)
    assert from_path.dtype == np.uint8 and from_path.shape == (150, 150, 3)
    assert np.array_equal(from_path, load_image(path.read_bytes()))
    assert np.array_equal(from_path, rgb)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "PPM"])
def test_other_formats_decode(photo, fmt):
    _, rgb = photo
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = load_image(encode(Image.fromarray(rgb), fmt, **kw))
    assert out.shape == rgb.shape and np.abs(out.astype(int) - rgb).max() <= 1


def test_pgm_grayscale_becomes_three_equal_channels(data_dir):
    out = load_image(data_dir / "train" / "att_orl" / "s1" / "1.pgm")
    assert out.shape == (112, 92, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_cmyk_jpeg_becomes_rgb(photo):
    _, rgb = photo
    out = load_image(encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 12  # JPEG + CMYK round trip, not a colour swap


def test_sixteen_bit_png_is_scaled_not_clipped():
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)  # 0 .. 65520
    out = load_image(encode(Image.fromarray(ramp), "PNG"))
    assert out.shape == (64, 64, 3)
    assert out[..., 0].max() >= 250 and out[..., 0].min() == 0  # clipping would saturate almost everything
    assert 100 < out[..., 0].mean() < 155


def test_alpha_is_composited_on_white(photo):
    _, rgb = photo
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    out = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (out[:10, :10] == 255).all() and np.array_equal(out[20:, 20:], rgb[20:, 20:])


def test_exif_orientation_is_applied(photo):
    _, rgb = photo
    rotated = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)  # stored turned 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = load_image(encode(rotated, "JPEG", quality=98, exif=exif.tobytes()))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 4


def test_empty_input():
    with pytest.raises(UnreadableImageError, match="empty"):
        load_image(b"")


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


def test_text_renamed_jpg(tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not an image")
    with pytest.raises(UnsupportedImageError):
        load_image(fake)


def test_truncated_jpeg(photo):
    path, _ = photo
    data = path.read_bytes()
    with pytest.raises(UnreadableImageError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_unsupported_format(photo):
    _, rgb = photo
    with pytest.raises(UnsupportedImageError, match="GIF"):
        load_image(encode(Image.fromarray(rgb), "GIF"))


def test_decompression_bomb_refused_before_decoding():
    # A PNG whose header claims 20000x20000 (400 Mpx) but carries almost no data: the limit must
    # trip on the header, without allocating the pixels.
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(ImageTooLargeError, match="20000x20000"):
        load_image(png)


@pytest.mark.parametrize("size", [(1, 1), (5, 40)])
def test_tiny_images(size):
    with pytest.raises(ImageTooSmallError):
        load_image(encode(Image.new("RGB", size), "PNG"))


def test_errors_have_stable_codes():
    assert UnreadableImageError("x").code == "unreadable_image"
    assert UnsupportedImageError("x").code == "unsupported_media_type"
    assert ImageTooLargeError("x").code == "image_too_large"
