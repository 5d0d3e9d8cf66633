"""Measurement tools for the dlib embedder's constants (``faceverify.dlib_embedder``): the chip
template of MTCNN's five points and the HOG centre box, both measured on LFW View 1 images.

    python -m bench.peers.dlib_adapter --chip-template
    python -m bench.peers.dlib_adapter --centre-box
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from faceverify.detect import select_face
from faceverify.dlib_embedder import CENTRE_BOX, CHIP_TEMPLATE_5, DlibEmbedder  # noqa: F401 (re-exported for bench)
from faceverify.errors import NoFaceError


def measure_chip_template(paths: Sequence[str], root) -> tuple[np.ndarray, int]:
    """Median MTCNN landmarks on dlib HOG/68-point chips of ``paths`` (-> CHIP_TEMPLATE_5)."""
    from pathlib import Path

    from tqdm import tqdm

    from faceverify.detect import FaceDetector
    from faceverify.image import load_image

    emb = DlibEmbedder(detector="hog", points=68, fallback="error")
    det = FaceDetector()
    found = []
    for p in tqdm(paths, desc="chip template"):
        try:
            chip = emb.align(load_image(Path(root) / p)).crop
        except NoFaceError:
            continue
        faces = det.detect(chip)
        if faces:
            found.append(select_face(faces, chip.shape, "largest_central").landmarks)
    return np.median(np.stack(found), axis=0), len(found)


def measure_centre_box(paths: Sequence[str], root) -> tuple[np.ndarray, int]:
    """Median HOG box (x1, y1, x2, y2) / image size over ``paths`` (-> CENTRE_BOX)."""
    from pathlib import Path

    from faceverify.image import load_image

    emb = DlibEmbedder(detector="hog", policy="central")
    boxes = []
    for p in paths:
        img = load_image(Path(root) / p)
        faces = emb._hog_faces(img)
        if faces:
            h, w = img.shape[:2]
            boxes.append(select_face(faces, img.shape, "central").box / np.array([w, h, w, h], np.float32))
    return np.median(np.stack(boxes), axis=0), len(boxes)


def _main(argv=None) -> int:
    import argparse

    from faceverify.evaluation.lfw import read_pairs
    from faceverify.paths import lfw_root

    ap = argparse.ArgumentParser(prog="python -m bench.peers.dlib_adapter")
    ap.add_argument("--chip-template", action="store_true", help="measure CHIP_TEMPLATE_5 on LFW View 1 images")
    ap.add_argument("--centre-box", action="store_true", help="measure CENTRE_BOX on LFW View 1 images")
    ap.add_argument("--limit", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.chip_template:
        images = read_pairs(lfw_root() / "pairsDevTrain.txt").images()[: args.limit]
        template, n = measure_chip_template(images, lfw_root() / "images")
        print(f"median MTCNN points on {n} dlib chips:")
        print(np.array2string(template, precision=2, separator=", "))
    if args.centre_box:
        images = read_pairs(lfw_root() / "pairsDevTrain.txt").images()[: args.limit]
        box, n = measure_centre_box(images, lfw_root() / "images")
        print(f"median HOG box / image size on {n} images: {np.array2string(box, precision=3, separator=', ')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
