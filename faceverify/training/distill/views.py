"""Views of a training face: deterministic augmentations of its 160x160 wide canvas
(``align.WIDE_160``, stored by ``faceverify prep --wide``): low resolution, blur, colour, grey, JPEG
quality, then a jittered similarity (scale, rotation, shift) applied to the face's five points, and
a mirror. View 0 is the face as detected, view 1 its mirror. The same view is cut for the student
(its template) and for each teacher (its own alignment), so all see one detection and one
augmentation."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import cv2
import numpy as np

from ...align import WIDE_160, align_face

VIEW_VERSION = 1  # bump when view_params/render_view change: cached targets are keyed by it
WIDE_IOD = 40.0  # eye distance on the wide canvas, px
WIDE_CENTRE = WIDE_160.mean(0)


# ---- views ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewParams:
    flip: bool = False
    scale: float = 1.0  # of the face (jittered points spread by this factor)
    angle: float = 0.0  # degrees
    shift: tuple[float, float] = (0.0, 0.0)  # px on the canvas
    lowres: float = 1.0  # < 1: downsample the canvas by this factor and back up
    blur: float = 0.0  # Gaussian sigma, px
    brightness: float = 0.0  # added, in [0, 255] units
    contrast: float = 1.0
    saturation: float = 1.0
    grey: bool = False
    jpeg: int = 0  # JPEG quality (0 = none)


def view_params(key: str, view: int) -> ViewParams:
    """The augmentation of view ``view`` of the face with content key ``key`` (its sha1)."""
    if view == 0:
        return ViewParams()
    if view == 1:
        return ViewParams(flip=True)
    seed = int.from_bytes(hashlib.sha1(f"{key}:{view}:{VIEW_VERSION}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    return ViewParams(
        flip=bool(rng.random() < 0.5),
        scale=float(math.exp(rng.uniform(math.log(0.9), math.log(1.1)))),
        angle=float(rng.uniform(-10.0, 10.0)),
        shift=(float(rng.uniform(-0.06, 0.06) * WIDE_IOD), float(rng.uniform(-0.06, 0.06) * WIDE_IOD)),
        lowres=float(rng.uniform(0.35, 0.75)) if rng.random() < 0.3 else 1.0,
        blur=float(rng.uniform(0.4, 1.4)) if rng.random() < 0.25 else 0.0,
        brightness=float(rng.uniform(-25.0, 25.0)),
        contrast=float(rng.uniform(0.75, 1.25)),
        saturation=float(rng.uniform(0.6, 1.4)),
        grey=bool(rng.random() < 0.1),
        jpeg=int(rng.integers(30, 91)) if rng.random() < 0.4 else 0,
    )


def render_view(canvas: np.ndarray, p: ViewParams) -> tuple[np.ndarray, np.ndarray]:
    """(augmented canvas, the face's five points on it) for view ``p`` of a wide canvas."""
    img = canvas
    if p.lowres < 1.0:
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(8, round(w * p.lowres)), max(8, round(h * p.lowres))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if p.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), p.blur)
    if p.brightness or p.contrast != 1.0 or p.saturation != 1.0 or p.grey:
        f = img.astype(np.float32)
        grey = f @ np.float32([0.299, 0.587, 0.114])
        f = grey[..., None] + (f - grey[..., None]) * (0.0 if p.grey else p.saturation)
        f = (f - 127.5) * p.contrast + 127.5 + p.brightness
        img = np.clip(f, 0, 255).astype(np.uint8)
    if p.jpeg:
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, p.jpeg])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    theta = math.radians(p.angle)
    rot = p.scale * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], np.float32)
    points = (WIDE_160 - WIDE_CENTRE) @ rot.T + WIDE_CENTRE + np.float32(p.shift)
    return np.ascontiguousarray(img), points.astype(np.float32)


def student_view(canvas: np.ndarray, p: ViewParams, template: str) -> np.ndarray:
    """The student's crop (``template``) of view ``p``."""
    img, points = render_view(canvas, p)
    crop = align_face(img, points, template)
    return np.ascontiguousarray(crop[:, ::-1]) if p.flip else crop


def teacher_view(canvas: np.ndarray, p: ViewParams, teacher) -> np.ndarray:
    """The teacher's own crop of view ``p`` (``teacher.crop_from_landmarks``)."""
    img, points = render_view(canvas, p)
    crop = teacher.crop_from_landmarks(img, points)
    return np.ascontiguousarray(crop[:, ::-1]) if p.flip else crop


# ---- teacher targets --------------------------------------------------------------------------
