"""The data of a training run: the recipe's packed set (prepared on first use), each teacher's
cached targets and the student's crops when distilling, the dataset a step reads, and the
distillation loss built over the teachers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from ..errors import ConfigError
from . import dist as fdist
from .config import template_size
from .augment import AugmentedFaces
from .training_set import open_training_set
from .distill import (DistillFaces, DistillLoss, MultiTeacherLoss, StudentCrops, TeacherTargets, centred_targets,
                      select_training_faces, unit_targets, views_read)


@dataclass
class TeacherData:
    name: str  # the teacher's spec (e.g. "arcface-mbf"), for the loss's log columns
    dim: int  # its embedding dimension
    mean: np.ndarray | None = None  # raw mode: its unit targets' mean direction over the training views
    spread: float = 1.0  # raw mode: their spread around it


@dataclass
class RunData:
    dataset: Dataset  # items (crop tensor, label[, teacher targets, concatenated over the teachers])
    classes: list  # identity names of the head's classes
    num_classes: int
    teachers: list[TeacherData] = field(default_factory=list)  # empty: no distillation; [0] is the primary


def teacher_list(kcfg: dict) -> list[tuple[str, dict, float]]:
    """(spec, loader options, weight) of each teacher the recipe names (``distill.teacher``: one spec
    or a list; ``teacher_kwargs``: the options, per spec for a list; ``teacher_weights``: per teacher)."""
    specs = kcfg["teacher"] if isinstance(kcfg["teacher"], list) else ([kcfg["teacher"]] if kcfg["teacher"] else [])
    kwargs = kcfg["teacher_kwargs"] or {}
    weights = kcfg.get("teacher_weights") or [1.0] * len(specs)
    if len(weights) != len(specs):
        raise ConfigError(f"distill.teacher_weights has {len(weights)} values for {len(specs)} teachers.")
    per_spec = isinstance(kcfg["teacher"], list)
    return [(str(spec), dict(kwargs.get(str(spec), {}) if per_spec else kwargs), float(w)) for spec, w in zip(specs, weights)]


def open_run_data(cfg: dict, info: fdist.DistInfo, seed: int) -> RunData:
    """The recipe's training set: the main process prepares (or finds) the packed set and the
    teacher targets, the others wait and open what it made."""
    dcfg, kcfg = cfg["data"], cfg["distill"]
    teachers = teacher_list(kcfg)
    distilling = bool(teachers)
    views = int(kcfg["views"])
    if info.is_main:
        faces = open_training_set(dcfg, progress=True, wide=distilling)
        needed = None
        if distilling:
            selection = distilled_faces(faces, dcfg, kcfg)
            # targets for the (view, face) pairs this run's steps read: a short run pays for what it uses
            needed = views_read(selection[0], len(faces), views, seed, int(cfg["train"]["steps"]),
                                int(cfg["train"]["batch_size"]) // info.world_size, info.world_size)
        for spec, kwargs, _ in teachers:  # each teacher cuts its own crops of the same views, cached apart
            TeacherTargets(faces, spec, views, kwargs).build(int(kcfg["workers"]), needed=needed)
        if distilling and kcfg["crop_cache"]:
            StudentCrops(faces, dcfg["template"], views).build(int(kcfg["workers"]))
    fdist.barrier(info)
    if not info.is_main:
        faces = open_training_set(dcfg, progress=False, prepare=False, wide=distilling)
        selection = distilled_faces(faces, dcfg, kcfg) if distilling else None
    if not distilling:
        dataset = AugmentedFaces(faces, template_size(dcfg["template"]), flip=dcfg["flip"], random_crop=dcfg["random_crop"], seed=seed)
        return RunData(dataset, list(faces.classes), faces.num_classes)
    indices, labels, classes = selection
    parts, described = [], []
    for k, (spec, kwargs, _) in enumerate(teachers):
        raw_targets = np.asarray(TeacherTargets(faces, spec, views, kwargs).load())
        if float(kcfg["raw"]) or k > 0:  # raw unit targets; the loss centres them (and regresses the primary's raw vector)
            targets, mean, spread = unit_targets(raw_targets)
        else:
            (targets, _), mean, spread = centred_targets(raw_targets), None, 1.0
        parts.append(targets)
        described.append(TeacherData(spec, int(targets.shape[2]), mean, spread))
    targets = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
    crops = StudentCrops(faces, dcfg["template"], views).directory / "crops.npy" if kcfg["crop_cache"] else None
    dataset = DistillFaces(faces, targets, indices, labels, dcfg["template"], seed=seed, crops=crops)
    return RunData(dataset, classes, max(1, len(classes)), described)


def distilled_faces(faces, dcfg: dict, kcfg: dict) -> tuple[np.ndarray, np.ndarray, list]:
    """(face indices, head labels, class names) a distillation trains on: the recipe's sources, and
    only labelled faces when no distillation term would teach the others anything."""
    selected = [Path(s).name for s in (dcfg["select"] or dcfg["sources"])]
    indices, labels, classes = select_training_faces(faces, selected, int(kcfg["min_images"]))
    if float(kcfg["cosine"]) <= 0 and float(kcfg["relational"]) <= 0:  # margin only: unlabelled faces teach nothing
        indices, labels = indices[labels >= 0], labels[labels >= 0]
    return indices, labels, classes


def build_distill_loss(cfg: dict, teachers: list[TeacherData]) -> nn.Module | None:
    """The distillation loss of the recipe: one teacher's ``DistillLoss``, or a ``MultiTeacherLoss``."""
    if not teachers:
        return None
    kcfg, dim = cfg["distill"], int(cfg["model"]["embedding_dim"])
    weights = [w for _, _, w in teacher_list(kcfg)]
    first = teachers[0]
    primary = DistillLoss(dim, first.dim, float(kcfg["cosine"]), float(kcfg["relational"]), kcfg["projection"],
                          float(kcfg["raw"]), first.mean, first.spread)
    if len(teachers) == 1:
        return primary
    # the further teachers see the student's centred unit embedding through their own projection heads
    others = [DistillLoss(dim, t.dim, float(kcfg["cosine"]), float(kcfg["relational"]), True, 0.0, t.mean, t.spread)
              for t in teachers[1:]]
    return MultiTeacherLoss([primary, *others], [t.dim for t in teachers], weights, [short_name(t.name) for t in teachers])


def short_name(spec: str) -> str:
    return Path(spec).name.replace("-", "_")


def log_columns(distill_loss: nn.Module | None, raw_weight: float) -> tuple[str, ...]:
    """The distillation terms logged beside the loss (metrics.csv columns)."""
    return () if distill_loss is None else distill_loss.part_names(bool(raw_weight))
