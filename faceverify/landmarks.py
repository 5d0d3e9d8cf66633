"""Precomputed 5-point landmark files, in the format of SphereFace's ``lfw_landmark.txt``:
``Name/Name_0001.jpg<TAB>x1 y1 x2 y2 ... x5 y5`` (left eye, right eye, nose, left and right mouth
corners). Coordinates are multiplied by an explicit ``scale`` on reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataNotFoundError

# SphereFace's LFW landmarks are in the 250x250 coordinates of the original LFW images; the
# shared LFW images are the official 150x150 copies, so their landmarks scale by 150/250.
LFW_250_TO_150 = 150 / 250


def read_landmark_file(path: str | Path, scale: float = 1.0) -> dict[str, np.ndarray]:
    """``{relative image path: (5, 2) float32 landmarks * scale}``."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"landmark file {path} does not exist.")
    out: dict[str, np.ndarray] = {}
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 11:
                raise ValueError(f"{path}:{lineno}: expected a path and 10 numbers, got {len(fields)} fields")
            out[fields[0]] = np.array(fields[1:], dtype=np.float32).reshape(5, 2) * np.float32(scale)
    return out


def check_landmarks_fit(landmarks: np.ndarray, image_shape: tuple[int, ...], name: str, scale: float) -> None:
    """Raise if scaled landmarks fall outside the image: the usual sign of a wrong ``scale``."""
    height, width = image_shape[:2]
    lm = np.asarray(landmarks)
    if (lm < -0.5 * width).any() or (lm[:, 0] > 1.5 * width).any() or (lm[:, 1] > 1.5 * height).any():
        raise ValueError(
            f"{name}: landmarks {lm.round(1).tolist()} fall far outside the {width}x{height} image; "
            f"the landmark scale {scale} is probably wrong (SphereFace's lfw_landmark.txt on the shared "
            f"150x150 LFW needs --landmark-scale {LFW_250_TO_150})."
        )
