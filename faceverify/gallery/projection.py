"""The optional PCA projection of the gallery's index: compact indexed vectors (the store keeps
the full embeddings, so the projection can be changed by restarting)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InvalidInputError
from ..pca import Pca
from .vectors import l2_normalize


@dataclass
class PCAProjection(Pca):
    """``y = normalize((x - mean) @ components.T)`` for L2-normalised embeddings ``x`` (the shared
    :class:`~faceverify.pca.Pca`, fitted on normalised embeddings and kept in float32)."""

    @classmethod
    def fit(cls, embeddings: np.ndarray, n_components: int) -> "PCAProjection":
        """Fit on (N, D) training embeddings (normalised first, as the gallery stores them)."""
        x = l2_normalize(embeddings).astype(np.float64)
        if not 1 <= n_components <= min(x.shape):
            raise InvalidInputError(f"n_components must be in [1, {min(x.shape)}], got {n_components}")
        pca = Pca.fit(x, n_components)
        return cls(pca.mean.astype(np.float32), pca.components.astype(np.float32), pca.explained_variance)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(self(l2_normalize(vectors)))

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, mean=self.mean, components=self.components,
                 explained_variance=np.float64(np.nan if self.explained_variance is None else self.explained_variance))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PCAProjection":
        try:
            with np.load(path) as z:
                explained = float(z["explained_variance"]) if "explained_variance" in z.files else float("nan")
                return cls(np.asarray(z["mean"], np.float32), np.asarray(z["components"], np.float32),
                           None if np.isnan(explained) else explained)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read the PCA projection {path} ({exc}); expected an .npz with 'mean' and 'components'.") from exc

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.mean.tobytes())
        h.update(self.components.tobytes())
        return h.hexdigest()[:16]
