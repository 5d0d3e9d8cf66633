"""Principal component analysis, one implementation for evaluation (``faceverify eval lfw --pca``,
fitted on the training folds) and the gallery (``PCAProjection``, a compact index projection)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError


@dataclass
class Pca:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D): the principal axes, largest variance first
    explained_variance: float | None = None  # fraction of the fitted data's variance they keep

    @property
    def in_dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, x: np.ndarray, n: float) -> "Pca":
        """PCA of the rows of ``x``: ``n`` >= 1 keeps ``int(n)`` components, 0 < n < 1 keeps the fewest
        components that explain at least that fraction of the variance (e.g. 0.995 as in
        happynear/FaceVerification ``lfwPCA.m``). Components from the SVD of the centred data."""
        mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        variance = s**2  # along each axis, times (N - 1): only its fractions are used
        kept = np.cumsum(variance) / max(float(variance.sum()), 1e-12)
        if n >= 1:
            k = int(n)
            if k > vt.shape[0]:
                raise ConfigError(f"PCA dimension {k} exceeds the {vt.shape[0]} available components (feature dim / samples).")
        elif 0 < n < 1:
            k = int(np.searchsorted(kept, n - 1e-12) + 1)
        else:
            raise ConfigError(f"PCA must be a dimension >= 1 or a kept-variance fraction in (0, 1), got {n}")
        return cls(mean, vt[:k], float(kept[k - 1]))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Project rows: ``(x - mean) @ components.T``."""
        return (x - self.mean) @ self.components.T
