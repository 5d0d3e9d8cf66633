"""The training set of a distillation: faces with their views' cached crops and teacher targets,
and which faces (and identity labels) a recipe's sources select."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import ConfigError, DataNotFoundError
from ...packed import PackedFaces
from ...transforms import crops_to_tensor
from .views import student_view, view_params

class DistillFaces(Dataset):
    """(student crop of a random view, label or -1, the teacher's centred target for that view).

    ``indices`` select faces of ``faces``; ``labels`` are the margin head's classes (-1: the face
    takes part through the distillation term only). Views are drawn per (seed, epoch, index), so
    batches are the same with any number of workers and after ``--resume``.
    """

    def __init__(self, faces: PackedFaces, targets: np.ndarray, indices: np.ndarray, labels: np.ndarray,
                 template: str, seed: int = 0, views: int | None = None, crops: str | Path | None = None):
        self.faces, self.targets, self.template, self.seed = faces, targets, template, int(seed)
        self.crops_path, self._crops = (str(crops) if crops else None), None  # StudentCrops file, mapped per process
        self.indices = np.asarray(indices, np.int64)
        self.labels = np.asarray(labels, np.int64)
        self.views = int(views or targets.shape[0])
        if self.views > targets.shape[0]:
            raise ConfigError(f"{self.views} views asked for, the teacher targets have {targets.shape[0]}.")

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self):
        return {**self.__dict__, "_crops": None}  # each DataLoader worker maps the file itself

    def __getitem__(self, key):
        position, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        index = int(self.indices[position])
        view = drawn_view(self.seed, epoch, index, self.views)
        if self.crops_path:
            if self._crops is None:
                self._crops = np.load(self.crops_path, mmap_mode="r")
            crop = np.array(self._crops[view, index])
        else:
            crop = student_view(self.faces.wide(index), view_params(self.faces.sha1[index], view), self.template)
        target = np.array(self.targets[view, index], np.float32)
        if not np.isfinite(target).all():  # a sparse target cache built for a shorter schedule
            raise DataNotFoundError(f"no teacher target for face {index}, view {view}: the cached targets were built for "
                                    "a shorter run; start the run again (it computes the missing ones first).")
        return crops_to_tensor(crop[None])[0], int(self.labels[position]), torch.from_numpy(target)


def drawn_view(seed: int, epoch: int, index: int, views: int) -> int:
    """The view face ``index`` is shown in at ``epoch``: a function of (seed, epoch, index) alone."""
    return int(np.random.default_rng((seed, epoch, index)).integers(views))


def views_read(indices: np.ndarray, n_faces: int, views: int, seed: int, steps: int, batch: int, world_size: int = 1) -> np.ndarray:
    """(views, n_faces) bool: the (view, face) pairs that ``steps`` steps of ``batch`` per process read,
    replaying the run's own sampler, so teacher targets can be computed for exactly those."""
    from ..augment import ResumableSampler

    read = np.zeros((views, n_faces), bool)
    for rank in range(world_size):
        sampler = ResumableSampler(range(len(indices)), world_size, rank, seed=seed)
        per_epoch = len(sampler) // batch
        if per_epoch < 1:
            return read
        for epoch in range(-(-steps // per_epoch)):
            sampler.set_epoch(epoch)
            taken = min(per_epoch, steps - epoch * per_epoch) * batch
            for position, _ in list(sampler)[:taken]:
                face = int(indices[position])
                read[drawn_view(seed, epoch, face, views), face] = True
    return read


def select_training_faces(faces: PackedFaces, sources: list[str], min_images: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Faces of the named sources (first path component), byte-identical duplicates dropped, and
    head labels: identities with at least ``min_images`` faces get a class, the rest -1."""
    wanted = set(sources)
    known = {p.split("/", 1)[0] for p in faces.paths}
    missing = wanted - known
    if missing:
        raise DataNotFoundError(f"the packed set {faces.root} has no faces from {sorted(missing)} (it has {sorted(known)}).")
    seen, keep = set(), []
    for i, (path, digest) in enumerate(zip(faces.paths, faces.sha1)):
        if path.split("/", 1)[0] in wanted and digest not in seen:
            seen.add(digest)
            keep.append(i)
    keep = np.asarray(keep, np.int64)
    raw = faces.labels[keep]
    counts = np.bincount(raw[raw >= 0], minlength=faces.num_classes)
    classes = np.flatnonzero(counts >= max(1, min_images))
    remap = np.full(faces.num_classes + 1, -1, np.int64)
    remap[classes] = np.arange(classes.size)
    labels = np.where(raw >= 0, remap[raw], -1)
    return keep, labels, [faces.classes[c] for c in classes]


# ---- losses -----------------------------------------------------------------------------------
