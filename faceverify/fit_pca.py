"""``faceverify gallery fit-pca``: fit the optional PCA projection of the gallery's index
on embeddings of the served model. A command, not part of the gallery: the gallery never imports
the Verifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ConfigError, FaceverifyError, exit_status
from .gallery import PCAProjection
from .image import IMAGE_SUFFIXES, load_image



def fit_pca_main(argv: list[str] | None = None) -> int:
    """``faceverify gallery fit-pca IMAGES --model M --components 128 --out pca.npz``:
    embed photos of *training* identities (not the gallery's people) with the served model and fit
    the projection ``faceverify serve --pca`` uses."""
    import argparse
    import sys

    from .verify import Verifier

    p = argparse.ArgumentParser(prog="faceverify gallery fit-pca", description=fit_pca_main.__doc__)
    p.add_argument("images", help="a folder of photos, searched recursively (e.g. a training set)")
    p.add_argument("--model", default=None, help="the model the service serves (default: models/default)")
    p.add_argument("--components", type=int, default=128)
    p.add_argument("--limit", type=int, default=5000, help="at most this many photos")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads while embedding")
    args = p.parse_args(argv)
    import torch

    previous_threads = torch.get_num_threads()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        verifier = Verifier.from_model(args.model)
        paths = sorted(q for q in Path(args.images).rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
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
        if len(vectors) <= args.components:
            raise ConfigError(f"{len(vectors)} faces embedded from {args.images}: need more than --components {args.components}.")
        pca = PCAProjection.fit(np.stack(vectors), args.components)
        pca.save(args.out)
    except FaceverifyError as exc:
        print(f"fit-pca: {exc.message}", file=sys.stderr)
        return exit_status(exc)
    finally:
        torch.set_num_threads(previous_threads)
    print(json.dumps({"out": args.out, "faces": len(vectors), "skipped": skipped, "in_dim": pca.in_dim,
                      "out_dim": pca.out_dim, "explained_variance": round(pca.explained_variance or 0.0, 4)}))
    return 0
