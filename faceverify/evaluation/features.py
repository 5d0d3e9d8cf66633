"""The evaluation caches. Features: every image is embedded once (plain and mirrored crop), stored
by its relative path, and reused by every protocol and flip mode (LFW, MegaFace, re-runs with other
options); the cache file is rewritten atomically as work progresses, so an interrupted run resumes.
Detections: MTCNN's results depend on the pixels only, so one cache serves every model.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from ..detect import CachedDetector
from ..embedder import Embedder, combine_flip
from ..image import load_image
from ..paths import cache_root
from ..face_aligner import FaceAligner

CACHE_FORMAT = "faceverify-features/1"


@dataclass
class FeatureSet:
    paths: list[str]  # relative image paths, e.g. "Name/Name_0001.jpg"
    plain: np.ndarray  # (N, D) float32 features of the aligned crops
    flipped: np.ndarray | None  # (N, D) float32 features of the mirrored crops (None if not computed)
    sources: np.ndarray  # (N,) str: how each image was aligned (mtcnn | landmarks | center_crop | ...)

    def __post_init__(self):
        self._row = {p: i for i, p in enumerate(self.paths)}

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self._row[p] for p in paths), dtype=np.int64, count=len(paths))
        except KeyError as exc:
            raise KeyError(f"no features for image {exc.args[0]!r}") from None

    def vectors(self, paths: Sequence[str], flip: str = "none") -> np.ndarray:
        """Features of ``paths`` with flip TTA ``none`` / ``sum`` / ``concat`` applied."""
        r = self.rows(paths)
        return combine_flip(self.plain[r], None if self.flipped is None else self.flipped[r], flip)

    def source_counts(self, paths: Sequence[str] | None = None) -> dict[str, int]:
        src = self.sources if paths is None else self.sources[self.rows(paths)]
        values, counts = np.unique(src, return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts)}


def cache_key(config: dict) -> str:
    """A short stable name for a feature configuration (model identity + alignment options)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_cache(path: Path, config: dict) -> dict[str, tuple[np.ndarray, np.ndarray | None, str]]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != CACHE_FORMAT or meta.get("config") != json.loads(json.dumps(config, default=str)):
                return {}
            paths, plain, sources = z["paths"], z["plain"], z["sources"]
            flipped = z["flipped"] if "flipped" in z.files else None
    except (OSError, ValueError, KeyError):
        return {}  # unreadable or truncated cache: recompute
    def flip_row(i):
        return None if flipped is None or np.isnan(flipped[i]).any() else flipped[i]

    return {str(p): (plain[i], flip_row(i), str(sources[i])) for i, p in enumerate(paths)}


def _save_cache(path: Path, config: dict, entries: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    paths = list(entries)
    plain = np.stack([entries[p][0] for p in paths]).astype(np.float32)
    arrays = {
        "meta": np.array(json.dumps({"format": CACHE_FORMAT, "config": config}, default=str)),
        "paths": np.array(paths),
        "plain": plain,
        "sources": np.array([entries[p][2] for p in paths]),
    }
    if any(entries[p][1] is not None for p in paths):  # rows of NaN = mirrored features not computed
        nan = np.full(plain.shape[1], np.nan, np.float32)
        arrays["flipped"] = np.stack([nan if entries[p][1] is None else entries[p][1] for p in paths]).astype(np.float32)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def compute_features(
    embedder,
    root: str | Path,
    paths: Sequence[str],
    cache_file: str | Path | None = None,
    config: dict | None = None,
    landmarks: dict[str, np.ndarray] | None = None,
    batch_size: int = 64,
    desc: str = "embedding",
    save_every_s: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
    need_flipped: bool = False,
) -> FeatureSet:
    """Embed every image of ``paths`` (relative to ``root``) once, reusing ``cache_file``.

    ``embedder`` follows the Embedder protocol; its ``EmbedBatch.flipped`` (mirrored-crop features)
    is stored when present, so flip modes are chosen later without re-embedding. ``landmarks``
    maps a relative path to its (5, 2) landmarks (then the embedder skips detection).
    ``config`` describes the embedder and alignment; a cache written with another config is ignored.
    ``need_flipped``: cached images without mirrored-crop features are embedded again.
    """
    root = Path(root)
    paths = list(dict.fromkeys(paths))
    config = dict(config or {"embedder": getattr(embedder, "name", type(embedder).__name__)})
    cache_path = Path(cache_file) if cache_file else None
    entries = _load_cache(cache_path, config) if cache_path else {}
    todo = [p for p in paths if p not in entries or (need_flipped and entries[p][1] is None)]
    last_save = time.monotonic()
    with tqdm(total=len(paths), initial=len(paths) - len(todo), desc=desc, unit="img", dynamic_ncols=True) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            images = [load_image(root / p) for p in chunk]
            lms = None
            if landmarks is not None:
                missing = [p for p in chunk if p not in landmarks]
                if missing:
                    raise KeyError(f"the landmark file has no entry for {missing[0]!r} ({len(missing)} in this batch)")
                lms = [landmarks[p] for p in chunk]
            batch = embedder.embed(images, lms)
            plain = np.asarray(batch.plain, dtype=np.float32)
            flipped = None if batch.flipped is None else np.asarray(batch.flipped, dtype=np.float32)
            if need_flipped and flipped is None:
                raise ValueError(f"embedder {getattr(embedder, 'name', embedder)} returned no mirrored-crop features; "
                                 "construct it with a flip mode other than 'none'")
            for i, p in enumerate(chunk):
                entries[p] = (plain[i], None if flipped is None else flipped[i], batch.faces[i].source)
            bar.update(len(chunk))
            if on_progress:
                on_progress(len(chunk))
            if cache_path and time.monotonic() - last_save > save_every_s:
                _save_cache(cache_path, config, entries)
                last_save = time.monotonic()
    if cache_path and todo:
        _save_cache(cache_path, config, entries)
    plain = np.stack([entries[p][0] for p in paths]) if paths else np.zeros((0, 0), np.float32)
    has_flip = bool(paths) and all(entries[p][1] is not None for p in paths)
    flipped = np.stack([entries[p][1] for p in paths]) if has_flip else None
    sources = np.array([entries[p][2] for p in paths])
    return FeatureSet(paths, plain.astype(np.float32), flipped, sources)


def default_cache_dir() -> Path:
    """Where evaluation keeps features (CACHE/features, ``paths.cache_root``) and, in its
    ``detections``, MTCNN's results."""
    return cache_root() / "features"


def use_detection_cache(embedder: Embedder, directory: Path):
    """Put the embedder's face detector behind the detection cache in ``directory/detections``;
    returns the cache (to ``save`` after the run), or None for an embedder that finds its faces
    itself (``aligner`` None)."""
    a = embedder.aligner
    if a is None:
        return None
    detections = CachedDetector(Path(directory) / "detections")
    embedder.aligner = FaceAligner(detections, template=a.template, pad=a.pad, policy=a.policy, fallback=a.fallback)
    return detections


def feature_config(embedder: Embedder, alignment: dict, root: Path) -> dict:
    """What one cache file's features depend on: the embedder (``embedder.config``), how the crops
    are found (``alignment``) and the image root; ``cache_key`` names the file after it."""
    return {"model": dict(embedder.config), "alignment": alignment, "images": str(Path(root).resolve())}
