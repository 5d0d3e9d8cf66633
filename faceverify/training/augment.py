"""What a training step reads from a packed aligned set: augmented crops (``AugmentedFaces``) and
the resumable distributed sampler (``ResumableSampler``) that hands out their keys.

Every random choice of an item is drawn from ``np.random.default_rng((seed, epoch, index))``, and
the sampler hands ``(index, epoch)`` keys to the dataset, so the augmented batches depend only on
the seed: the same with any number of DataLoader workers, and the same after ``--resume``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from ..errors import ConfigError
from ..packed import PackedFaces
from ..transforms import crops_to_tensor


class AugmentedFaces(Dataset):
    """``PackedFaces`` -> (normalised float (3, h, w) tensor, label), with a random ``crop`` = (h, w)
    window of the padded crop (SphereFace ports: 116x100 -> 112x96) and a random horizontal flip.
    Without augmentation the window is the centre one, i.e. exactly the template crop."""

    def __init__(self, faces: PackedFaces, crop: tuple[int, int] = (112, 96), flip: bool = True,
                 random_crop: bool = True, seed: int = 0):
        self.faces = faces
        self.crop = (int(crop[0]), int(crop[1]))
        self.flip, self.random_crop, self.seed = bool(flip), bool(random_crop), int(seed)
        height, width = faces.crop_size if hasattr(faces, "crop_size") else faces[0][0].shape[:2]
        if height < self.crop[0] or width < self.crop[1]:
            raise ConfigError(f"training crop {self.crop} is larger than the packed crops {height}x{width}.")
        self.stored = (int(height), int(width))

    def __len__(self) -> int:
        return len(self.faces)

    @property
    def labels(self) -> np.ndarray:
        return self.faces.labels

    @property
    def num_classes(self) -> int:
        return self.faces.num_classes

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        image, label = self.faces[index]
        rng = np.random.default_rng((self.seed, epoch, index))
        (height, width), (h, w) = image.shape[:2], self.crop
        if self.random_crop:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        else:
            top, left = (height - h) // 2, (width - w) // 2
        window = image[top : top + h, left : left + w]
        if self.flip and rng.random() < 0.5:
            window = window[:, ::-1]
        return crops_to_tensor(np.ascontiguousarray(window)[None])[0], label


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (each rank a disjoint shard of a per-epoch shuffle) that yields
    ``(index, epoch)`` keys and can start an epoch part-way (``set_position``) after a resume."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Begin at sample ``start`` of this rank's share of ``epoch``."""
        self.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start :]
        epoch = self.epoch
        self.start = 0  # only the first epoch after a resume is partial
        return iter([(i, epoch) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start
