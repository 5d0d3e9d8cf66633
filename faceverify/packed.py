"""The packed aligned training set: uint8 crop shards that are memory-mapped on read.

Why shards of raw ``.npy`` arrays: a CASIA-scale set (494k crops of 116x100x3 = 34.8 kB) is
17 GB of pixels; ``np.load(mmap_mode="r")`` gives every DataLoader worker zero-copy random
access through the page cache, with no decoding (JPEG decode is the bottleneck of folder
datasets), no extra dependency (LMDB), and shards double as the unit of resumable preparation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .align import DOWNSCALED, downscale_crop
from .errors import ConfigError, DataNotFoundError

FORMAT = "faceverify-packed/1"


def write_json_atomic(path: Path, obj) -> None:
    # a per-process temporary name: two runs opening one cached set at once both rewrite its manifest
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    with tmp.open("wb") as fh:
        np.save(fh, np.ascontiguousarray(array))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_shard(root: Path, index: int, crops: np.ndarray, meta: dict, extra: dict[str, np.ndarray] | None = None) -> None:
    """Write shard ``index``: pixels (and ``extra`` arrays, ``NNNNNN.<name>.npy``) first, then its
    JSON, each atomically; a shard counts as done only when its JSON exists, so a kill at any
    moment leaves either a whole shard or none."""
    shard_dir = root / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    write_npy_atomic(shard_dir / f"{index:06d}.npy", crops.astype(np.uint8, copy=False))
    for name, array in (extra or {}).items():
        write_npy_atomic(shard_dir / f"{index:06d}.{name}.npy", array.astype(np.uint8, copy=False))
    write_json_atomic(shard_dir / f"{index:06d}.json", meta)


def shard_done(root: Path, index: int) -> bool:
    return (root / "shards" / f"{index:06d}.json").is_file()


def read_shard_meta(root: Path, index: int) -> dict:
    return json.loads((root / "shards" / f"{index:06d}.json").read_text())


class PackedFaces:
    """Random access to a packed set: ``faces[i] -> (uint8 crop (H+2pad, W+2pad, 3), label)``.

    Shards are opened lazily in each process, so the object can be handed to forked DataLoader
    workers without sharing file handles. ``as_template``: read a full-size set as a downscaled
    template of it (``align.DOWNSCALED``: 112x96 pad 2 -> 56x48 pad 1), identical to aligning
    at that template directly.
    """

    def __init__(self, root: str | os.PathLike, as_template: str | None = None):
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise DataNotFoundError(
                f"{self.root} is not a packed face set (no manifest.json); create one with "
                f"`faceverify prep SRC {self.root}` (an interrupted prep is finished by re-running it)."
            )
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise DataNotFoundError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}.")
        self.template: str = manifest["template"]
        self.pad: int = manifest["pad"]
        self.crop_size: tuple[int, int] = tuple(manifest["crop_size"])
        self.classes: list[str] = manifest["classes"]
        self._shards: list[int] = manifest["shards"]
        class_index = {name: i for i, name in enumerate(self.classes)}
        labels, offsets, self.paths, self.sha1 = [], [0], [], []
        self.has_wide = bool(manifest.get("wide"))
        self.sources: dict[str, str] = manifest.get("sources", {})
        for k in self._shards:
            meta = read_shard_meta(self.root, k)
            labels.extend(class_index.get(name, -1) for name in meta["identities"])  # "" (unlabelled) -> -1
            self.paths.extend(meta["paths"])
            self.sha1.extend(meta.get("sha1", [""] * len(meta["identities"])))
            offsets.append(offsets[-1] + len(meta["identities"]))
        self.labels = np.asarray(labels, dtype=np.int64)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._arrays: dict[int, np.ndarray] = {}
        self.downscale = 1
        if as_template and as_template != self.template:
            full, factor = DOWNSCALED.get(as_template, (None, 1))
            if full != self.template or not float(factor).is_integer() or self.pad % factor:
                raise ConfigError(f"{self.root} holds {self.template} crops (pad {self.pad}); they cannot be read as "
                                  f"{as_template} crops. Prepare the set at {as_template} instead.")
            factor = int(factor)
            self.template, self.pad, self.downscale = as_template, self.pad // factor, factor
            self.crop_size = (self.crop_size[0] // factor, self.crop_size[1] // factor)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _array(self, pos: int, kind: str = "") -> np.ndarray:
        arr = self._arrays.get((pos, kind))
        if arr is None:
            suffix = f".{kind}" if kind else ""
            arr = np.load(self.root / "shards" / f"{self._shards[pos]:06d}{suffix}.npy", mmap_mode="r")
            self._arrays[(pos, kind)] = arr
        return arr

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        pos = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return pos, int(i - self._offsets[pos])

    def wide(self, i: int) -> np.ndarray:
        """Face ``i`` on the 160x160 ``wide160`` canvas (sets prepared with ``--wide``)."""
        if not self.has_wide:
            raise DataNotFoundError(f"{self.root} was prepared without wide canvases; prepare it again with "
                                    f"`faceverify prep ... --wide` (needed by distillation).")
        pos, j = self._locate(i)
        return np.array(self._array(pos, "wide")[j])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        pos, j = self._locate(i)
        crop = np.array(self._array(pos)[j])
        if self.downscale > 1:
            crop = downscale_crop(crop, self.downscale)
        return crop, int(self.labels[i])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = {}  # each process maps its own shards
        return state
