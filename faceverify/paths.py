"""Where faceverify finds its models and the face data. Nothing is ever downloaded.

Models: the checkout's ``models/`` when running from a checkout, else the ``faceverify_models``
package that a wheel installs beside ``faceverify`` (the same folder, shipped; see the README,
"Install"). Data: ``$FACEVERIFY_DATA`` (or a command's own path options); in a checkout,
``../shared/data`` beside it is the default."""

from __future__ import annotations

import importlib.util
import os
import shlex
from pathlib import Path
from typing import Sequence

from .errors import DataNotFoundError

# The checkout holding this package, when it runs from one (else the site-packages folder).
REPO_ROOT = Path(__file__).resolve().parents[1]


def in_checkout() -> bool:
    """True when this ``faceverify`` is the package folder of a source checkout (a git clone or
    an editable install), not a copy installed from a wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "models").is_dir()


def _models_dir() -> Path:
    if in_checkout():
        return REPO_ROOT / "models"
    spec = importlib.util.find_spec("faceverify_models")  # installed with the wheel
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return REPO_ROOT / "faceverify_models"  # missing: models.py says what is absent when asked for it


# Named models (``--model NAME``): a folder MODELS_DIR/NAME holding a model card (MODEL.json).
MODELS_DIR = _models_dir()
# The shipped default model: used by verify, serve and eval when no --model is given.
DEFAULT_MODEL_DIR = MODELS_DIR / "default"
# dlib's descriptor served through faceverify: its calibration and card (weights: the [dlib] extra).
DLIB_MODEL_DIR = MODELS_DIR / "dlib"
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
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            return path.resolve()
        raise DataNotFoundError(f"FACEVERIFY_DATA={env} is not a folder. Point it at the folder that holds lfw/ and train/ "
                                "(the project's shared face data; it is never downloaded).")
    default = REPO_ROOT.parent / "shared" / "data"
    if in_checkout() and default.is_dir():  # only a checkout has a default place for the data
        return default.resolve()
    where = f"not in {default}, the checkout's default" if in_checkout() else "an installed faceverify has no default place for it"
    raise DataNotFoundError(
        f"face data not found ({where}). Set FACEVERIFY_DATA to the folder that holds lfw/ and train/, or give the "
        "command its paths as options (e.g. faceverify eval lfw --pairs FILE --images DIR); nothing is ever downloaded."
    )


def data_path(*parts: str) -> Path:
    """A path under the data root that must exist, e.g. ``data_path("lfw", "pairs.txt")``."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist under the data root {data_root()}: point FACEVERIFY_DATA at the "
                                "folder that holds lfw/ and train/, or give the command this path as an option.")
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
