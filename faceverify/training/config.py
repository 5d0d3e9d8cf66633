"""Training recipes: YAML files merged over :data:`DEFAULTS`, with ``--set key=value`` overrides.

Unknown keys are refused (a typo must not silently train the wrong thing).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
from pathlib import Path

import yaml

from ..align import TEMPLATES
from ..errors import ConfigError
from ..losses import head_class

DEFAULTS: dict = {
    "name": "run",
    "seed": 0,
    "data": {
        "packed": None,  # an already prepared packed set (faceverify prep); skips on-the-fly prep
        "sources": [],  # identity folders: names under the shared train root, or paths
        "cache_dir": None,  # on-the-fly prep goes to CACHE/<sources>-<template>-pad<pad>; default $FACEVERIFY_CACHE or ~/.cache/faceverify
        "template": "112x96",
        "pad": 2,  # stored margin: (112+2pad)x(96+2pad) crops, random 112x96 windows
        "min_score": 0.95,  # MTCNN score below which a training photo is dropped
        "prep_workers": 1,
        "workers": 2,  # DataLoader worker processes
        "flip": True,
        "random_crop": True,
        # where each source comes from, shown when one is missing: name -> "owner/repo@commit path"
        "origins": {},
        "select": [],  # train on these of the prepared sources only (default: all); the packed set stays shared
        "extra_root": None,  # folder of sources that are not under the shared train root; default $FACEVERIFY_EXTRA_FACES
    },
    # Distillation (faceverify.training.distill): a teacher embedder labels views of every face; the student
    # matches its centred targets, and the margin head (weight ``margin``) trains on labelled faces.
    "distill": {
        # load_embedder spec: "dlib", "arcface-mbf", a .onnx file, a faceverify model, or a list of
        # them (several teachers: the first is the primary, the others get projection heads); None = off
        "teacher": None,
        "teacher_kwargs": {},  # loader options (with a list of teachers: {spec: options})
        "teacher_weights": None,  # with a list of teachers: the weight of each one's loss (default 1 each)
        "views": 2,  # views per face the teacher labels (0: as detected, 1: mirrored, 2+: augmented)
        "workers": 2,  # processes computing teacher targets (once; cached beside the packed set)
        "cosine": 1.0,  # weight of 1 - cos(P s, t)
        "relational": 0.0,  # weight of the pairwise-similarity term
        "projection": None,  # a linear map s -> teacher dim (None: only when the dimensions differ)
        "margin": 1.0,  # weight of the margin loss on labelled faces (0: distillation only)
        "min_images": 3,  # identities with fewer faces have no class: distillation only
        "raw": 0.0,  # weight of regressing the teacher's raw unit vector (DistillLoss): keeps its geometry
        "crop_cache": True,  # cut every view at the template once (StudentCrops) instead of per step
    },
    # init_from: a model (e.g. "arcface-mbf") whose ONNX weights the student starts from (backbone onnx_graph)
    "model": {"backbone": "sphereface20", "embedding_dim": 512, "kwargs": {}, "init_from": None},
    "head": {
        "name": "asoftmax",
        "kwargs": {"m": 4},
        # A-Softmax / L-Softmax annealing; null: SphereFace's Caffe schedule (ANNEALING) for those heads.
        # Other heads take no lambda: a recipe that gives one is refused (validate)
        "lambda": None,
        "regularizer": 0.0,  # Kobayashi BMVC'19 lambda (0.3 in the paper); 0 = off
    },
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False, "grad_clip": 0.0},
    "schedule": {"kind": "multistep", "milestones": [16000, 24000], "gamma": 0.1, "warmup_steps": 0, "warmup_start": 0.1,
                 "power": 2.0, "min_lr": 0.0},
    "train": {
        "steps": 28000,
        "batch_size": 512,  # TOTAL over all processes; each process takes batch_size / world_size
        "amp": False,  # fp16 + GradScaler on CUDA, bf16 autocast on CPU
        "channels_last": False,  # NHWC memory format (oneDNN/cuDNN convolutions are faster with it)
        "device": "auto",
        "threads": 0,  # CPU threads of the node, split among its processes (0 = torch's default)
        "log_every": 10,
        "checkpoint_every": 1000,
        "keep_every": 0,  # also keep checkpoints/step_XXXXXXX.pt every N steps (0 = only last.pt)
        "tensorboard": True,
    },
    "val": {"every": 2000, "pairs": 400, "batch_size": 64},  # LFW View 1 pairsDevTest.txt; every 0 = off
}

# SphereFace's Caffe release: lambda = max(lambda_min, base * (1 + gamma * iter)^-power)
ANNEALING = {"base": 1000.0, "gamma": 0.12, "power": 1.0, "lambda_min": 5.0}

# keys whose values are free-form dicts (not checked against DEFAULTS)
FREE = {("model", "kwargs"), ("head", "kwargs"), ("head", "lambda"), ("data", "origins"), ("distill", "teacher_kwargs")}


def _merge(base: dict, new: dict, path: tuple = ()) -> dict:
    out = copy.deepcopy(base)
    for key, value in new.items():
        here = path + (key,)
        if key not in base:
            where = ".".join(path) or "the top level"
            raise ConfigError(f"unknown recipe key {'.'.join(here)!r} (allowed under {where}: {sorted(base)}).")
        if here in FREE or not isinstance(base[key], dict) or value is None:
            out[key] = copy.deepcopy(value)
        elif not isinstance(value, dict):
            raise ConfigError(f"recipe key {'.'.join(here)!r} must be a mapping, got {value!r}.")
        else:
            out[key] = _merge(base[key], value, here)
    return out


def apply_override(cfg: dict, item: str) -> dict:
    """``a.b.c=value`` (value parsed as YAML) -> a new config."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=100.")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw)
    nested: dict = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return _merge(cfg, nested)


def _read_recipe(path: Path, seen: tuple = ()) -> dict:
    """A recipe file merged over DEFAULTS, after the recipe it ``extends`` (a path relative to it)."""
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist; see train/configs/ for examples.")
    if path.resolve() in seen:
        raise ConfigError(f"recipe {path} extends itself (through {' -> '.join(map(str, seen))}).")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections (data, model, head, optim, schedule, train, val).")
    base = raw.pop("extends", None)
    parent = _read_recipe(path.parent / base, seen + (path.resolve(),)) if base else DEFAULTS
    return _merge(parent, raw)


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> dict:
    """A recipe (``extends: base.yaml`` inherits another, key by key) with ``--set`` overrides."""
    cfg = _read_recipe(Path(path))
    for item in overrides:
        cfg = apply_override(cfg, item)
    validate(cfg)
    if head_class(cfg["head"]["name"]).lamb_supported and cfg["head"]["lambda"] is None:
        cfg["head"]["lambda"] = dict(ANNEALING)
    return cfg


def validate_head(head: dict) -> None:
    """Head-specific keys: ``kwargs`` must be options of that head, and only the annealed heads
    (A-Softmax, L-Softmax) take ``lambda``, so no recipe carries a key its head ignores."""
    cls = head_class(head["name"])
    kwargs = head["kwargs"] or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"head.kwargs must be a mapping of {head['name']} options, got {kwargs!r}.")
    try:
        inspect.signature(cls).bind(1, 2, **kwargs)  # (embedding_dim, num_classes, **options)
    except TypeError as exc:
        options = [p for p in list(inspect.signature(cls).parameters)[2:]]
        raise ConfigError(f"head.kwargs {sorted(kwargs)} are not options of {head['name']!r} ({exc}); "
                          f"it takes {options}.") from None
    if head["lambda"] is not None:
        if not cls.lamb_supported:
            raise ConfigError(f"head.lambda is the A-Softmax/L-Softmax annealing; {head['name']!r} does not use it: "
                              "remove it from the recipe (or set it to null over a recipe it extends).")
        unknown = set(head["lambda"]) - set(ANNEALING)
        if unknown:
            raise ConfigError(f"head.lambda has unknown keys {sorted(unknown)}; it takes {sorted(ANNEALING)}.")


def template_size(template: str) -> tuple[int, int]:
    try:
        return TEMPLATES[template][1]
    except KeyError:
        raise ConfigError(f"unknown template {template!r}; choose one of {sorted(TEMPLATES)}.") from None


def validate(cfg: dict) -> None:
    data, train = cfg["data"], cfg["train"]
    validate_head(cfg["head"])
    template_size(data["template"])
    if not data["packed"] and not data["sources"]:
        raise ConfigError("the recipe needs data.packed (a prepared set) or data.sources (identity folders to prepare).")
    for key in ("steps", "batch_size", "log_every", "checkpoint_every"):
        if int(train[key]) < 1:
            raise ConfigError(f"train.{key} must be >= 1 (got {train[key]}).")
    if int(data["pad"]) < 0:
        raise ConfigError(f"data.pad must be >= 0 (got {data['pad']}).")
    distill = cfg["distill"]
    if cfg["model"].get("init_from") and cfg["model"]["backbone"] != "onnx_graph":
        raise ConfigError("model.init_from starts the student from an ONNX graph: set model.backbone: onnx_graph.")
    if isinstance(distill["teacher"], list) and distill["teacher_weights"] is not None \
            and len(distill["teacher_weights"]) != len(distill["teacher"]):
        raise ConfigError(f"distill.teacher_weights has {len(distill['teacher_weights'])} values for "
                          f"{len(distill['teacher'])} teachers.")
    if distill["teacher"]:
        if int(distill["views"]) < 1:
            raise ConfigError(f"distill.views must be >= 1 (got {distill['views']}).")
        if max(float(distill["cosine"]), float(distill["relational"]), float(distill["margin"])) <= 0:
            raise ConfigError("distill.cosine, distill.relational or distill.margin must be > 0.")


# keys that change where or how fast a run goes, not what it learns
_NOT_RECIPE = {("train", "device"), ("train", "channels_last"), ("train", "threads"), ("train", "log_every"), ("train", "checkpoint_every"),
               ("train", "keep_every"), ("train", "tensorboard"), ("data", "cache_dir"), ("data", "prep_workers"),
               ("data", "workers"), ("data", "origins"), ("data", "extra_root"), ("distill", "workers"),
               ("distill", "crop_cache")}


# keys added after recipes were first hashed: left out while they hold their "off" value, so an older
# recipe (and the checkpoints it made) keeps its hash
_OFF_BY_DEFAULT = {("data", "select"): [], ("data", "extra_root"): None, ("distill", "raw"): 0.0,
                   ("distill", "teacher_weights"): None, ("model", "init_from"): None}


def recipe_hash(cfg: dict) -> str:
    """sha256 of the merged recipe (canonical JSON) without its run-placement keys: two runs with
    the same hash trained the same thing, whatever their machine, threads or logging."""
    kept = {section: ({k: v for k, v in values.items() if (section, k) not in _NOT_RECIPE
                       and not ((section, k) in _OFF_BY_DEFAULT and v == _OFF_BY_DEFAULT[(section, k)])}
                      if isinstance(values, dict) else values) for section, values in cfg.items()
            if not (section == "distill" and not (values or {}).get("teacher"))}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
