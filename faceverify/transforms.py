"""uint8 crops -> the network's input tensor. One definition, used by training and inference."""

from __future__ import annotations

import numpy as np


def crops_to_numpy(crops: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32, (x - 127.5) / 128 (``crops_to_tensor`` without torch)."""
    batch = np.stack(crops) if isinstance(crops, list) else np.asarray(crops)
    return np.ascontiguousarray(((batch.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2))


def crops_to_tensor(crops: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32, (x - 127.5) / 128 as in SphereFace's Caffe data layer."""
    import torch

    batch = torch.from_numpy(np.ascontiguousarray(np.stack(crops) if isinstance(crops, list) else crops))
    return batch.permute(0, 3, 1, 2).float().sub_(127.5).div_(128.0)
