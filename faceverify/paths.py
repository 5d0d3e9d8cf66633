"""Where the shared face data lives: ``$FACEVERIFY_DATA``, else ``../shared/data`` beside the
checkout (or beside the current directory). Nothing is ever downloaded."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Sequence

from .errors import DataNotFoundError

REPO_ROOT = Path(__file__).resolve().parents[1]
# The shipped default model: used by verify, serve and eval when no --model is given.
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "default"
# dlib's descriptor served through faceverify: its calibration and card (weights: the [dlib] extra).
DLIB_MODEL_DIR = REPO_ROOT / "models" / "dlib"
# Named models (``--model NAME``): a folder models/NAME holding a model card (MODEL.json).
MODELS_DIR = REPO_ROOT / "models"
# MTCNN's P/R/O-nets as ONNX (``faceverify export-mtcnn``): the detector of the torch-free runtime.
MTCNN_DIR = MODELS_DIR / "mtcnn"


def cache_root() -> Path:
    """Where faceverify keeps what it computes or places (``$FACEVERIFY_CACHE``, else ~/.cache/faceverify)."""
    env = os.environ.get("FACEVERIFY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "faceverify"


def weights_root() -> Path:
    """Where ``scripts/get_teachers.sh`` places third-party model files (``$FACEVERIFY_WEIGHTS``,
    else CACHE/weights): files whose licences keep them out of this repository."""
    env = os.environ.get("FACEVERIFY_WEIGHTS")
    return Path(env).expanduser() if env else cache_root() / "weights"


def data_root() -> Path:
    """The data root; raises DataNotFoundError with the places it looked."""
    env = os.environ.get("FACEVERIFY_DATA")
    candidates = [Path(env)] if env else [REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates)
    raise DataNotFoundError(
        f"face data not found (looked in: {looked}). Set FACEVERIFY_DATA to the folder that holds "
        "lfw/ and train/ (the project's shared data; it is never downloaded)."
    )


def data_path(*parts: str) -> Path:
    """A path under the data root that must exist, e.g. ``data_path("lfw", "pairs.txt")``."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist under the data root {data_root()}; check FACEVERIFY_DATA.")
    return path


def lfw_root() -> Path:
    return data_path("lfw")


def train_root() -> Path:
    return data_path("train")


def require_path(path: str | os.PathLike, what: str = "input") -> Path:
    """``path`` as a Path if it exists, else a DataNotFoundError that names it."""
    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"{what} {p} does not exist; check the path.")
    return p


def display_path(path: str | os.PathLike) -> str:
    """A path for reports and responses without this machine's layout: relative to the repository,
    or ``$FACEVERIFY_DATA/...`` under the data root, else the file name alone."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        pass
    try:
        return "$FACEVERIFY_DATA/" + str(p.relative_to(data_root()))
    except (ValueError, DataNotFoundError):
        return p.name


def display_command(argv: Sequence[str]) -> str:
    """A command line for a report: every absolute path in it (``/x/y`` or ``--opt=/x/y``) shown
    as ``display_path`` shows it, so a report never records this machine's layout."""
    def shown(arg: str) -> str:
        option, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        return f"{option}{eq}{display_path(value)}" if os.path.isabs(value) else arg

    return " ".join(shlex.quote(shown(str(a))) for a in argv)
