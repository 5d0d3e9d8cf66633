"""MTCNN on onnxruntime: facenet-pytorch's P/R/O-nets exported to ONNX (``faceverify export-mtcnn``,
shipped in ``models/mtcnn``), with the image pyramid, non-maximum suppression, box regression and
landmark decoding in numpy. It reproduces ``facenet_pytorch.models.utils.detect_face`` step by step
(same resampling, same NMS rules, same thresholds), so it finds the same boxes and points as the
torch path without torch (tests/test_mtcnn_onnx.py holds them within 0.5 px on LFW).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .paths import MTCNN_DIR
from .runtime import session_options

NET_FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")
_NORM = np.float32(0.0078125)  # (x - 127.5) / 128, MTCNN's input scaling


def mtcnn_files(directory: str | Path = MTCNN_DIR) -> list[Path]:
    return [Path(directory) / name for name in NET_FILES]


def have_mtcnn_onnx(directory: str | Path = MTCNN_DIR) -> bool:
    return all(p.is_file() for p in mtcnn_files(directory))


class OnnxMTCNN:
    """The three networks on onnxruntime; ``detect`` mirrors facenet-pytorch's ``detect_face``.

    ``networks`` replaces them with any three objects that answer onnxruntime's
    ``run(outputs, {"input": x})`` (bench.runtime_agreement drives facenet-pytorch's through it)."""

    def __init__(self, directory: str | Path = MTCNN_DIR, threads: int = 1, networks: tuple | None = None):
        if networks is not None:
            self.pnet, self.rnet, self.onet = networks
            return
        import onnxruntime as ort

        files = mtcnn_files(directory)
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise ConfigError(f"MTCNN's ONNX files are missing ({', '.join(missing)}); they ship in models/mtcnn. "
                              "Re-create them with `faceverify export-mtcnn --out models/mtcnn` (needs the [train] extra).")
        options = session_options(threads)
        self.pnet, self.rnet, self.onet = (ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in files)

    def detect(self, images: np.ndarray, scales: list[float], thresholds,
               trace: list | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(N, H, W, 3) uint8 RGB images of one size, the pyramid's scales (``pyramid_scales``) ->
        per image (boxes (k, 5): x1, y1, x2, y2, probability; points (k, 5, 2)), float32, in
        facenet-pytorch's conventions. ``trace``, if given, receives each NMS call's
        (boxes, scores, indices kept), in order: where two runs part, it shows which candidate."""

        def traced_nms(boxes, scores, groups, threshold, method="union"):
            kept = batched_nms(boxes, scores, groups, threshold, method)
            if trace is not None:
                trace.append((boxes.copy(), scores.copy(), kept))
            return kept

        images = np.ascontiguousarray(images)
        n, h, w = images.shape[:3]
        # integral images (exact, int64) of every image: each area resampling is two look-ups
        integral = _integral(images)
        empty = [(np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)) for _ in range(n)]

        # stage 1: P-net over the pyramid; NMS 0.5 per scale and image, then 0.7 per image
        candidates = []
        for scale in scales:
            size = (int(h * scale + 1), int(w * scale + 1))
            data = (area_resize(integral, (0, 0, h, w), size) - np.float32(127.5)) * _NORM
            reg, prob = self.pnet.run(None, {"input": data})
            boxes, inds = _generate_boxes(reg, prob[:, 1], scale, thresholds[0])
            keep = traced_nms(boxes[:, :4], boxes[:, 4], inds, 0.5)
            candidates.append((boxes[keep], inds[keep]))
        boxes = np.concatenate([c[0] for c in candidates]) if candidates else np.zeros((0, 9), np.float32)
        inds = np.concatenate([c[1] for c in candidates]) if candidates else np.zeros((0,), np.int64)
        keep = traced_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        boxes, inds = boxes[keep], inds[keep]
        if len(boxes) == 0:
            return empty
        regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = np.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                          boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]], axis=1)
        boxes = _rerec(boxes)

        # stage 2: R-net on 24x24 crops; threshold, NMS 0.7 per image, regression
        reg, prob = _run_crops(self.rnet, integral, boxes, inds, 24, w, h)
        score = prob[:, 1]
        ok = score > thresholds[1]
        boxes = np.concatenate([boxes[ok, :4], score[ok, None]], axis=1)
        inds, reg = inds[ok], reg[ok]
        keep = traced_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        boxes, inds, reg = boxes[keep], inds[keep], reg[keep]
        if len(boxes) == 0:
            return empty
        boxes = _rerec(_bbreg(boxes, reg))

        # stage 3: O-net on 48x48 crops; threshold, landmarks, regression, NMS "Min" 0.7 per image
        reg, marks, prob = _run_crops(self.onet, integral, boxes, inds, 48, w, h)
        score = prob[:, 1]
        ok = score > thresholds[2]
        boxes = np.concatenate([boxes[ok, :4], score[ok, None]], axis=1)
        inds, reg, marks = inds[ok], reg[ok], marks[ok]
        bw = boxes[:, 2:3] - boxes[:, 0:1] + 1
        bh = boxes[:, 3:4] - boxes[:, 1:2] + 1
        points = np.stack([bw * marks[:, :5] + boxes[:, 0:1] - 1, bh * marks[:, 5:] + boxes[:, 1:2] - 1], axis=2)
        boxes = _bbreg(boxes, reg)
        keep = traced_nms(boxes[:, :4], boxes[:, 4], inds, 0.7, method="min")
        boxes, inds, points = boxes[keep], inds[keep], points[keep]
        return [(boxes[inds == i].astype(np.float32), points[inds == i].astype(np.float32)) for i in range(n)]


def pyramid_scales(h: int, w: int, min_face_size: float, factor: float) -> list[float]:
    """The scales at which P-net (12 px receptive field) sees faces from ``min_face_size`` up to the
    whole image."""
    m = 12.0 / min_face_size
    minl = min(h, w) * m
    scales, scale = [], m
    while minl >= 12:
        scales.append(scale)
        scale *= factor
        minl *= factor
    return scales


def _integral(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, H + 1, W + 1, C) summed-area tables, exact: int32 while 255 H W
    fits (any image up to 8.4 megapixels), else int64."""
    n, h, w, c = images.shape
    dtype = np.int32 if 255 * h * w < 2**31 else np.int64
    out = np.zeros((n, h + 1, w + 1, c), dtype)
    np.cumsum(np.cumsum(images, axis=1, dtype=dtype), axis=2, out=out[:, 1:, 1:])
    return out


@lru_cache(maxsize=256)
def _bins(start: int, length: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive average pooling windows (``interpolate(mode="area")``): output i averages
    input [floor(i L / out), ceil((i + 1) L / out)), offset by ``start``."""
    i = np.arange(out)
    lo = (i * length) // out
    hi = -((-(i + 1) * length) // out)
    return start + lo, start + hi


def area_resize(integral: np.ndarray, window: tuple[int, int, int, int], size: tuple[int, int], index=slice(None)) -> np.ndarray:
    """The pixels ``window`` = (y0, x0, y1, x1) of the images ``index``, area-resampled to ``size``
    (oh, ow) exactly as torch does it: (N, C, oh, ow) float32."""
    y0, x0, y1, x1 = window
    ylo, yhi = _bins(y0, y1 - y0, size[0])
    xlo, xhi = _bins(x0, x1 - x0, size[1])
    s = integral[index]
    rows_hi, rows_lo = s[..., yhi, :, :], s[..., ylo, :, :]
    total = (rows_hi[..., xhi, :] - rows_hi[..., xlo, :]) - (rows_lo[..., xhi, :] - rows_lo[..., xlo, :])
    count = ((yhi - ylo)[:, None] * (xhi - xlo)[None, :])[..., None]
    axes = (0, 3, 1, 2) if total.ndim == 4 else (2, 0, 1)  # -> channels first, the networks' layout
    return np.ascontiguousarray((total / count).astype(np.float32).transpose(axes))


def _generate_boxes(reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """P-net cells with probability >= threshold -> (k, 9) boxes (x1, y1, x2, y2, score, 4 offsets)
    in image coordinates, and the image each comes from. float32 like the torch path."""
    inds, ys, xs = np.nonzero(prob >= threshold)
    score = prob[inds, ys, xs]
    offsets = reg[inds, :, ys, xs]
    bb = np.stack([xs, ys], axis=1).astype(np.float32)
    s = np.float32(scale)
    q1 = np.floor((np.float32(2) * bb + np.float32(1)) / s)
    q2 = np.floor((np.float32(2) * bb + np.float32(12)) / s)
    return np.concatenate([q1, q2, score[:, None], offsets], axis=1).astype(np.float32), inds.astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy NMS; indices kept, best first. ``union`` is torchvision's ``nms`` (areas without +1,
    drop IoU > threshold); ``min`` is facenet-pytorch's ``nms_numpy(..., 'Min')`` (areas with +1,
    overlap over the smaller box, keep <= threshold)."""
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    plus = 1.0 if method == "min" else 0.0
    area = (x2 - x1 + plus) * (y2 - y1 + plus)
    order = np.argsort(scores)[::-1] if method == "min" else np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + plus)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + plus)
        inter = w * h
        overlap = inter / np.minimum(area[i], area[rest]) if method == "min" else inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.array(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """NMS within each group (image) separately; indices kept, in order of the groups."""
    out = [np.flatnonzero(groups == g)[nms(boxes[groups == g], scores[groups == g], threshold, method)] for g in np.unique(groups)]
    return np.concatenate(out) if out else np.zeros((0,), np.int64)


def _rerec(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square around their centres (side = the longer side)."""
    boxes = boxes.copy()
    h, w = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] += w * 0.5 - side * 0.5
    boxes[:, 1] += h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, 0:2] + side[:, None]
    return boxes


def _bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Box regression: offsets are fractions of the box's (+1) width and height."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] += reg[:, :4] * np.stack([w, h, w, h], axis=1)
    return boxes


def _run_crops(session, integral: np.ndarray, boxes: np.ndarray, inds: np.ndarray, size: int, w: int, h: int):
    """Each box's pixels (clipped to the image as facenet-pytorch clips them), area-resampled to
    size x size (all boxes in one gather), through ``session``. A box wholly outside the image gets
    probability 0."""
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x0, y0 = np.maximum(b[:, 0], 1) - 1, np.maximum(b[:, 1], 1) - 1
    x1, y1 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    valid = (y1 > y0) & (x1 > x0)
    # invalid boxes get a 1-pixel window (any pixel: their result is discarded below)
    x0, y0 = np.where(valid, x0, 0), np.where(valid, y0, 0)
    x1, y1 = np.where(valid, x1, 1), np.where(valid, y1, 1)
    ylo, yhi = _crop_bins(y0, y1, size)
    xlo, xhi = _crop_bins(x0, x1, size)
    # one flat index per corner: a 1-D take is several times faster than 3-array fancy indexing
    n_img, rows, cols, channels = integral.shape
    flat = integral.reshape(-1, channels)
    base = (inds * rows)[:, None, None]

    def corner(ys, xs):
        return flat.take(((base + ys[:, :, None]) * cols + xs[:, None, :]).ravel(), axis=0).reshape(len(inds), size, size, channels)

    total = corner(yhi, xhi) - corner(yhi, xlo) - corner(ylo, xhi) + corner(ylo, xlo)
    count = ((yhi - ylo)[:, :, None] * (xhi - xlo)[:, None, :])[..., None]
    data = (total / count).astype(np.float32).transpose(0, 3, 1, 2)
    outputs = session.run(None, {"input": np.ascontiguousarray((data - np.float32(127.5)) * _NORM)})
    outputs[-1][~valid] = 0.0  # the probability output is last
    return outputs


def _crop_bins(start: np.ndarray, stop: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray]:
    """``_bins`` for many windows at once: (n, out) first and past-the-end rows of each bin."""
    i = np.arange(out)[None, :]
    length = (stop - start)[:, None]
    return start[:, None] + (i * length) // out, start[:, None] - (-(i + 1) * length) // out
