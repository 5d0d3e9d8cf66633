"""5-point face alignment: one least-squares similarity transform (Umeyama) onto a template.

Coordinates are 0-based pixel centres (OpenCV's convention: the centre of the top-left pixel is
(0, 0)). SphereFace's Matlab code (cp2tform/imtransform with XData=[1 96]) uses the same numbers
in 1-based coordinates, so its crops sit ~1 px off ours; we train and test with this one function,
so train and test crops always agree.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import InvalidInputError

# SphereFace 112x96 template (wy1iu/sphereface preprocess/code/face_align_demo.m), order:
# left eye, right eye, nose, left mouth corner, right mouth corner.
SPHEREFACE_112x96 = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
    dtype=np.float32,
)
# ArcFace 112x112 (insightface arcface_dst) = the SphereFace points shifted by (112 - 96) / 2 in x.
ARCFACE_112x112 = SPHEREFACE_112x96 + np.array([8.0, 0.0], dtype=np.float32)

# The "wide" canvas: the SphereFace points scaled to a 40 px eye distance and centred in 160x160.
# It holds both the 112x96 field of view and dlib's 150x150 chip (padding 0.25), so a training view
# (a jittered similarity, colour, blur, JPEG) is made once on the canvas and cut from it for the
# student and for a teacher alike: one detection, one augmentation, two alignments.
WIDE_SCALE = 40.0 / float(np.linalg.norm(SPHEREFACE_112x96[1] - SPHEREFACE_112x96[0]))
WIDE_160 = ((SPHEREFACE_112x96 - np.float32([47.5, 55.5])) * np.float32(WIDE_SCALE) + np.float32([79.5, 79.5])).astype(np.float32)

# Templates rendered at a fraction of a full-size one: name -> (full-size template, factor). The
# crop is warped at full size (with pad * factor) and then area-averaged down, so it is
# anti-aliased and equals a downscaled full-size crop: training can reuse full-size packed crops.
# LFW's 150x150 images have a median eye distance of 24 px: 17.6 px at 56x48, 26.4 px at 84x72
# (LFW's own resolution), 35.2 px at 112x96. A factor may be fractional (84x72 = 112x96 / (4/3)).
# 80x80 and 96x96 are ArcFace's 112x112 at 1/1.4 and 6/7 (eye distance 25.1 and 30.2 px), for
# students that start from a 112x112 teacher's weights.
DOWNSCALED: dict[str, tuple[str, float]] = {"56x48": ("112x96", 2), "84x72": ("112x96", 4 / 3),
                                            "80x80": ("112x112", 1.4), "96x96": ("112x112", 7 / 6)}

# name -> (template points, (height, width)); a downscaled template's points are its full-size
# points in its own pixel-centre coordinates ((p + 0.5) / factor - 0.5)
TEMPLATES: dict[str, tuple[np.ndarray, tuple[int, int]]] = {
    "112x96": (SPHEREFACE_112x96, (112, 96)),
    "112x112": (ARCFACE_112x112, (112, 112)),
    "56x48": ((SPHEREFACE_112x96 + 0.5) / 2 - 0.5, (56, 48)),
    "84x72": ((SPHEREFACE_112x96 + 0.5) * 0.75 - 0.5, (84, 72)),
    "80x80": ((ARCFACE_112x112 + 0.5) / 1.4 - 0.5, (80, 80)),
    "96x96": ((ARCFACE_112x112 + 0.5) * 6 / 7 - 0.5, (96, 96)),
    "wide160": (WIDE_160, (160, 160)),
}


def template_points(template: str, pad: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """Template points and output (height, width) for ``template`` with ``pad`` px on every side."""
    try:
        points, (height, width) = TEMPLATES[template]
    except KeyError:
        raise InvalidInputError(f"unknown template {template!r}; choose one of {sorted(TEMPLATES)}") from None
    return points + np.float32(pad), (height + 2 * pad, width + 2 * pad)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the similarity (rotation, uniform scale, translation) that maps ``src`` onto
    ``dst`` with least squared error — Umeyama (1991), eqs. 40-42, without reflection."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c**2).sum() / n
    cov = dst_c.T @ src_c / n  # eq. 38
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # eq. 39: no reflections
        s[-1] = -1.0
    rotation = u @ np.diag(s) @ vt  # eq. 40
    scale = (d * s).sum() / var_src  # eq. 42
    translation = mu_dst - scale * rotation @ mu_src  # eq. 41
    return np.hstack([scale * rotation, translation[:, None]]).astype(np.float32)


def align_face(image: np.ndarray, landmarks: np.ndarray, template: str = "112x96", pad: int = 0) -> np.ndarray:
    """Warp ``image`` (HxWx3 uint8 RGB) so that ``landmarks`` ((5, 2) x, y) land on the template.

    Returns a ``(h + 2 pad) x (w + 2 pad) x 3`` uint8 crop; pixels outside the image are black.
    """
    landmarks = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    if not np.isfinite(landmarks).all():
        raise InvalidInputError("landmarks contain NaN or infinity")
    if template in DOWNSCALED:
        full, factor = DOWNSCALED[template]
        full_pad = pad * factor
        if abs(full_pad - round(full_pad)) > 1e-6:
            raise InvalidInputError(f"{template} pad {pad} is {full_pad:g} px at {full}; choose a pad that is whole there")
        return downscale_crop(align_face(image, landmarks, full, round(full_pad)), factor)
    points, (height, width) = template_points(template, pad)
    matrix = similarity_transform(landmarks, points)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def downscale_crop(crop: np.ndarray, factor: float) -> np.ndarray:
    """Area-average a crop down by ``factor`` (a full-size crop -> a DOWNSCALED one); both sides
    must divide into whole pixels."""
    height, width = crop.shape[:2]
    out_h, out_w = height / factor, width / factor
    if abs(out_h - round(out_h)) > 1e-6 or abs(out_w - round(out_w)) > 1e-6:
        raise InvalidInputError(f"a {height}x{width} crop cannot be downscaled by {factor:g}")
    return cv2.resize(crop, (round(out_w), round(out_h)), interpolation=cv2.INTER_AREA)
