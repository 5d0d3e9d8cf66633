"""The one model resolver: what a model spec (``--model``, ``load_embedder(spec)``,
``Verifier.from_model(spec)``) names and where its files are.

A spec is one of
  - a faceverify checkpoint file (``.pt``; any file not ending in ``.onnx``),
  - an ONNX file exported by ``faceverify.export`` (``.onnx``),
  - a model directory holding ``model.pt`` (or ``model.onnx``), with its ``calibration.json`` and
    ``MODEL.json`` (e.g. ``models/default``),
  - ``"dlib"`` (or the ``models/dlib`` directory): dlib's descriptor, the ``[dlib]`` extra's
    weights with ``models/dlib``'s calibration and card,
  - None: the shipped ``models/default``.
Resolving only looks at the file system; loading is ``embedder.load_embedder``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, ConfigError
from .paths import DEFAULT_MODEL_DIR, DLIB_MODEL_DIR

CHECKPOINT_FILE = "model.pt"
ONNX_FILE = "model.onnx"
CALIBRATION_FILE = "calibration.json"
MANIFEST_FILE = "MODEL.json"
KINDS = ("torch", "onnx", "dlib")
SPEC_HELP = "a checkpoint (.pt), an .onnx file, a model directory (with model.pt or model.onnx) or 'dlib'"


@dataclass(frozen=True)
class ModelRef:
    """A resolved model spec."""

    kind: str  # "torch" | "onnx" | "dlib"
    path: Path  # what the spec named: the file or the directory (dlib: models/dlib)
    directory: Path  # where calibration.json and MODEL.json live

    def __str__(self) -> str:
        return "dlib" if self.kind == "dlib" else str(self.path)

    @property
    def weights(self) -> Path:
        """The weights file: the checkpoint or ONNX file (dlib: the [dlib] extra's descriptor)."""
        if self.kind == "dlib":
            from .dlib_embedder import weights_path  # a ConfigError naming the install when the extra is absent

            return Path(weights_path())
        if self.path.is_dir():
            return self.path / (CHECKPOINT_FILE if self.kind == "torch" else ONNX_FILE)
        return self.path

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
        h = hashlib.sha256()
        with self.weights.open("rb") as fp:
            for chunk in iter(lambda: fp.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


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
    if not path.exists():
        raise CheckpointError(f"model {path} does not exist; check the path, or give {SPEC_HELP}.")
    if path.is_dir():
        if path.resolve() == DLIB_MODEL_DIR.resolve():
            return ModelRef("dlib", DLIB_MODEL_DIR, DLIB_MODEL_DIR)
        for name, kind in ((CHECKPOINT_FILE, "torch"), (ONNX_FILE, "onnx")):
            if (path / name).is_file():
                return ModelRef(kind, path, path)
        raise CheckpointError(f"{path} is a directory without {CHECKPOINT_FILE} or {ONNX_FILE}; give {SPEC_HELP}.")
    return ModelRef("onnx" if path.suffix == ".onnx" else "torch", path, path.parent)
