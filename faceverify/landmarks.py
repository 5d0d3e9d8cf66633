"""Precomputed 5-point landmark files, in the format of SphereFace's ``lfw_landmark.txt``:
``Name/Name_0001.jpg<TAB>x1 y1 x2 y2 ... x5 y5`` (left eye, right eye, nose, left and right mouth
corners). Coordinates are multiplied by an explicit ``scale`` on reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError, DataNotFoundError

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
                raise ConfigError(f"{path}:{lineno}: expected a path and 10 numbers, got {len(fields)} fields")
            try:
                points = np.array(fields[1:], dtype=np.float32).reshape(5, 2)
            except ValueError:
                raise ConfigError(f"{path}:{lineno}: expected a path and 10 numbers, got {' '.join(fields[1:])[:80]!r}") from None
            out[fields[0]] = points * np.float32(scale)
    return out


def check_landmark_scale(table: dict[str, np.ndarray], image_root: str | Path, detector, scale: float, samples: int = 6) -> None:
    """Compare a scaled landmark table with MTCNN on a few of its images; raise ConfigError when the
    two disagree in size (the sign of a wrong ``scale``), naming the scale that would fit."""
    from .image import load_image

    ratios = []
    for rel, points in table.items():
        path = Path(image_root) / rel
        if not path.is_file():
            continue
        faces = detector.detect(load_image(path))
        if faces:
            ratios.append(np.linalg.norm(faces[0].landmarks[0] - faces[0].landmarks[1]) / max(1e-6, np.linalg.norm(points[0] - points[1])))
        if len(ratios) >= samples:
            break
    if not ratios:
        return  # nothing to compare with: no listed image under this root, or no face found
    ratio = float(np.median(ratios))
    if not 0.8 < ratio < 1.25:
        raise ConfigError(
            f"the landmark file does not fit the images under {image_root}: its eye distance is {1 / ratio:.2f}x "
            f"MTCNN's at --landmark-scale {scale}; a scale of about {scale * ratio:.2f} would fit "
            f"(SphereFace's lfw_landmark.txt on the shared 150x150 LFW needs --landmark-scale {LFW_250_TO_150})."
        )


def check_landmarks_fit(landmarks: np.ndarray, image_shape: tuple[int, ...], name: str, scale: float) -> None:
    """Raise ConfigError if scaled landmarks fall far outside the image (a cheap check, no detector needed;
    ``check_landmark_scale`` is the thorough one)."""
    height, width = image_shape[:2]
    lm = np.asarray(landmarks)
    if (lm < -0.5 * width).any() or (lm[:, 0] > 1.5 * width).any() or (lm[:, 1] > 1.5 * height).any():
        raise ConfigError(
            f"{name}: landmarks {lm.round(1).tolist()} fall far outside the {width}x{height} image; "
            f"the landmark scale {scale} is probably wrong (SphereFace's lfw_landmark.txt on the shared "
            f"150x150 LFW needs --landmark-scale {LFW_250_TO_150})."
        )
