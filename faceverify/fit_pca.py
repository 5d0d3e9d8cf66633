"""Fitting the optional PCA projection of the gallery's index on embeddings of the served model
(``faceverify gallery fit-pca``: faceverify/commands/gallery.py). Not part of the gallery: the
gallery never imports the Verifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError, FaceverifyError
from .gallery import PCAProjection
from .image import IMAGE_SUFFIXES, load_image


def fit_pca(images: str | Path, model: str | None = None, components: int = 128,
            limit: int = 5000, threads: int | None = None) -> tuple[PCAProjection, int, int]:
    """Embed up to ``limit`` photos found under ``images`` (of *training* identities, not the
    gallery's people) with ``model`` and fit a ``components``-dimensional projection; returns the
    projection, the faces embedded and the photos skipped (unreadable, or no usable face).
    ``threads``: intra-op threads of the model's runtime (onnxruntime on the base install)."""
    from .verify import Verifier

    verifier = Verifier.from_model(model, threads=threads)
    paths = sorted(q for q in Path(images).rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    vectors, skipped = [], 0
    for start in range(0, len(paths), 32):
        batch = []
        for path in paths[start : start + 32]:
            try:
                batch.append(load_image(path))
            except FaceverifyError:
                skipped += 1
        for result in verifier.embed_faces(batch) if batch else []:
            if isinstance(result, FaceverifyError):
                skipped += 1
            else:
                vectors.append(result.vector)
    if len(vectors) <= components:
        raise ConfigError(f"{len(vectors)} faces embedded from {images}: need more than --components {components}.")
    return PCAProjection.fit(np.stack(vectors), components), len(vectors), skipped
