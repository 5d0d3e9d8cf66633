"""The training set of a recipe: an existing packed set, or identity folders prepared on the fly
(``faceverify.prep.prepare_dataset``, resumable) into a cache directory."""

from __future__ import annotations

import math

import os
from pathlib import Path

from ..align import DOWNSCALED
from ..errors import DataNotFoundError
from ..packed import PackedFaces
from .. import paths
from ..paths import train_root


def recipe_cache_root(configured: str | None) -> Path:
    """The recipe's ``cache_dir``, else faceverify's cache (``paths.cache_root``)."""
    return Path(configured).expanduser() if configured else paths.cache_root()


def extra_root(configured: str | None = None) -> Path:
    """Where sources that are not in the shared data live (e.g. fetched public face sets)."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("FACEVERIFY_EXTRA_FACES")
    return Path(env).expanduser() if env else paths.cache_root() / "extra_faces"


def source_paths(sources: list[str], origins: dict | None = None, extra: str | None = None) -> list[Path]:
    """Names resolve under the shared train root (``pins`` -> DATA/train/pins), then under
    :func:`extra_root`; paths stay paths. A missing source names where it comes from."""
    out = []
    for s in sources:
        p = Path(s).expanduser()
        if not p.is_absolute() and not p.exists():
            p = train_root() / s
            if not p.exists():
                p = extra_root(extra) / s
        if not p.is_dir():
            origin = (origins or {}).get(s)
            how = (f" It comes from {origin}: bring that repository in (e.g. the search tool's fetch) and put "
                   f"those images in {p}, or set FACEVERIFY_EXTRA_FACES to the folder that holds {s}/.") if origin else ""
            raise DataNotFoundError(f"training source {s!r} is missing: {p} is not a folder of images.{how} "
                                    "Training does not go on with less data than its recipe names.")
        out.append(p)
    return out


def prepared_template(dcfg: dict) -> tuple[str, int]:
    """(template, pad) the set is prepared at: a downscaled template is read from full-size crops."""
    full, factor = DOWNSCALED.get(dcfg["template"], (dcfg["template"], 1))
    return full, math.ceil(int(dcfg["pad"]) * factor - 1e-6)


def packed_dir(dcfg: dict, wide: bool = False) -> Path:
    if dcfg["packed"]:
        return Path(dcfg["packed"]).expanduser()
    names = "+".join(Path(s).name for s in dcfg["sources"])
    template, pad = prepared_template(dcfg)
    return recipe_cache_root(dcfg["cache_dir"]) / "packed" / f"{names}-{template}-pad{pad}-s{dcfg['min_score']}{'-wide' if wide else ''}"


def open_training_set(dcfg: dict, progress: bool = True, prepare: bool = True, wide: bool = False) -> PackedFaces:
    """Open the packed set, preparing it first (or finishing an interrupted preparation); ``wide``:
    with the 160x160 canvases that distillation cuts its views from."""
    dst = packed_dir(dcfg, wide)
    # distillation cuts its crops from the wide canvases: the packed crops are read as prepared
    as_template = None if wide else dcfg["template"]
    if dcfg["packed"] or not prepare:
        return PackedFaces(dst, as_template=as_template)
    from ..prep import prepare_dataset

    template, pad = prepared_template(dcfg)
    summary = prepare_dataset([str(p) for p in source_paths(dcfg["sources"], dcfg.get("origins"), dcfg.get("extra_root"))],
                              dst, template=template, pad=pad, workers=int(dcfg["prep_workers"]),
                              min_score=float(dcfg["min_score"]), progress=progress, wide=wide)
    if progress and summary.get("images_processed_this_run"):
        print(f"prepared {dst}: {summary['images_kept']}/{summary['images_total']} images kept, "
              f"{summary['identities']} identities", flush=True)
    return PackedFaces(dst, as_template=as_template)
