"""Checkpoints: atomic writes, loads that refuse damaged files, and the inference bundle.

A checkpoint is a ``torch.save`` zip of a dict (docs/architecture.md, "Model files")::

    {"format": "faceverify-checkpoint/1",
     "backbone": {"name": "sphereface20", "kwargs": {"embedding_dim": 512, "input_size": [112, 96]}},
     "input": {"template": "112x96"},
     "model": <backbone state_dict>,
     # training checkpoints only:
     "head", "optimizer", "scheduler", "scaler", "lambda_state", "step", "rng", "config"}

Writes go to a temporary file in the same directory, are fsync'ed, then ``os.replace``'d over the
target, so a crash leaves the previous checkpoint intact. Loads check every zip entry's CRC
before unpickling (torch itself does not: a flipped byte in a tensor loads silently) and use
``weights_only=True`` (no arbitrary code from a checkpoint file).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .models import CHECKPOINT_FILE, resolve_model

FORMAT = "faceverify-checkpoint/1"


@dataclass
class ModelInfo:
    """What a model file says about the network it holds."""

    path: Path
    name: str
    kwargs: dict
    template: str
    embedding_dim: int
    input_size: tuple[int, int]
    step: int | None = None
    extra: dict = field(default_factory=dict)  # e.g. the training config, when present


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    ``state`` must hold ``backbone`` ({"name", "kwargs"}) and ``model``; ``format`` is filled in.
    """
    path = Path(path)
    if not isinstance(state, dict) or "backbone" not in state or "model" not in state:
        raise CheckpointError("a checkpoint state needs at least 'backbone' ({'name', 'kwargs'}) and 'model' (a state_dict).")
    state = {"format": FORMAT, **state}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint a model spec names (a ``.pt`` file, or a directory's ``model.pt``), through
    the one resolver (``faceverify.models``)."""
    model = resolve_model(path)
    if model.kind != "torch":
        raise CheckpointError(f"{model} is {'dlib' if model.kind == 'dlib' else 'an ONNX model'}, not a faceverify "
                              f"checkpoint; give a checkpoint (.pt) or a directory holding {CHECKPOINT_FILE}.")
    return model.weights


def _check_zip(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the write was interrupted or the copy failed; "
                              "use an earlier checkpoint or copy the file again.")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} ({size} bytes) is truncated or not a torch.save zip file (no zip "
                              "directory at its end): it was cut off by a crash or an incomplete copy, or is another "
                              "kind of file; use an earlier checkpoint or copy the file again.")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # reads every entry and checks its CRC-32
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({exc}); use an earlier checkpoint or copy the file again.") from exc
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt: entry {bad!r} fails its CRC check (damaged on disk or in "
                              "transfer); use an earlier checkpoint or copy the file again.")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a faceverify checkpoint dict, or raise :class:`CheckpointError` saying what is wrong.

    Nothing is half-loaded: the file is verified whole (zip CRCs) before it is unpickled, and the
    result must be a dict in the ``faceverify-checkpoint/1`` format.
    """
    path = checkpoint_file(path)
    _check_zip(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError for damaged files
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                              "it is damaged or holds objects other than tensors and plain values.") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        hint = " (it looks like a bare state_dict)" if isinstance(state, dict) and "format" not in state else ""
        raise CheckpointError(f"{path} is not a faceverify checkpoint: format {found!r}{hint}, expected {FORMAT!r}. "
                              "Models are written by `faceverify train`; see docs/architecture.md for the format.")
    missing = [k for k in ("backbone", "model") if k not in state]
    backbone = state.get("backbone")
    if missing or not isinstance(backbone, dict) or "name" not in backbone:
        raise CheckpointError(f"{path} is missing {missing or ['backbone.name']}; the checkpoint is incomplete.")
    return state


def inference_state(backbone_name: str, backbone_kwargs: dict, template: str, model: nn.Module | dict, **extra) -> dict:
    """The inference bundle (no training state) for :func:`save_checkpoint`."""
    state_dict = model.state_dict() if isinstance(model, nn.Module) else model
    return {"format": FORMAT, "backbone": {"name": backbone_name, "kwargs": dict(backbone_kwargs)},
            "input": {"template": template}, "model": state_dict, **extra}


def load_backbone(path_or_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """The backbone of a checkpoint (``.pt`` or a directory with ``model.pt``) in eval mode, and its info."""
    from .backbones import build_backbone

    path = checkpoint_file(path_or_dir)
    state = load_checkpoint(path, map_location)
    spec = state["backbone"]
    kwargs = dict(spec.get("kwargs") or {})
    try:
        model = build_backbone(spec["name"], **kwargs)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot build backbone {spec['name']!r} with {kwargs} ({exc}).") from exc
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not fit backbone {spec['name']!r} {kwargs}: {str(exc)[:300]}") from exc
    model.eval()
    input_size = tuple(int(v) for v in kwargs.get("input_size", (112, 96)))
    template = (state.get("input") or {}).get("template") or f"{input_size[0]}x{input_size[1]}"
    embedding_dim = int(kwargs.get("embedding_dim", 512))
    info = ModelInfo(path=path, name=spec["name"], kwargs=kwargs, template=template, embedding_dim=embedding_dim,
                     input_size=input_size, step=state.get("step"), extra={"config": state.get("config")})
    return model, info
