"""The gallery's embedding vectors: unit length (so inner product = cosine similarity), and the
float32 bytes the stores keep them as."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def vectors_from_bytes(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
