"""Distillation losses: one teacher's ``DistillLoss`` and several teachers' ``MultiTeacherLoss``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError

class DistillLoss(nn.Module):
    """``cosine``: mean (1 - cos(P s, t)) over the batch, P a linear projection onto the teacher's
    dimension (identity when the dimensions agree and ``projection`` is off).
    ``relational``: mean squared difference of the off-diagonal cosine-similarity matrices of the
    student's embeddings and of the targets (Park et al., CVPR 2019, eq. 3-4 with cosine).
    ``raw``: the student's unit embedding s regresses the teacher's raw unit vector t (its mean
    included), mean ||s - t||^2 / E||t - mean||^2 (FitNets-style L2 hint, Romero et al., ICLR 2015, eq. 3): the
    cosine terms then act on s - mean, and the served embedding keeps the teacher's own geometry,
    which the centred direction alone loses (the length of each face's deviation from the mean).

    ``mean`` (the teacher's mean unit vector over the training views) given: targets are the raw
    unit vectors and are centred here; without it, targets arrive centred (``centred_targets``)."""

    def __init__(self, embedding_dim: int, teacher_dim: int, cosine: float = 1.0, relational: float = 0.0,
                 projection: bool | None = None, raw: float = 0.0, mean: np.ndarray | None = None, spread: float = 1.0):
        super().__init__()
        if projection is None:
            projection = embedding_dim != teacher_dim
        if not projection and embedding_dim != teacher_dim:
            raise ConfigError(f"the student's {embedding_dim}-d embedding cannot match {teacher_dim}-d teacher "
                              "targets without distill.projection: true.")
        if raw and (projection or mean is None):
            raise ConfigError("distill.raw needs the student's embedding in the teacher's space (same dimension, no "
                              "projection) and the teacher's mean.")
        self.project = nn.Linear(embedding_dim, teacher_dim, bias=False) if projection else nn.Identity()
        self.w_cosine, self.w_relational, self.w_raw = float(cosine), float(relational), float(raw)
        self.register_buffer("mean", None if mean is None else torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.spread = float(spread)

    @staticmethod
    def part_names(raw: bool) -> tuple[str, ...]:
        """The terms ``forward`` reports (metrics.csv columns)."""
        return ("distill_cos", "distill_rel") + (("distill_raw",) if raw else ())

    def forward(self, embedding: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        embedding = embedding.float()
        parts = {}
        loss = embedding.new_zeros(())
        if self.mean is not None:
            if self.w_raw:  # on the unit embedding: the served geometry is that of unit vectors
                embedding = F.normalize(embedding, dim=1)
                raw = (embedding - target).pow(2).sum(1).mean() / self.spread
                parts["distill_raw"] = raw.detach()
                loss = loss + self.w_raw * raw
                embedding = embedding - self.mean
            target = F.normalize(target - self.mean, dim=1)
        if self.w_cosine:
            cos = F.cosine_similarity(self.project(embedding), target, dim=1)
            parts["distill_cos"] = cos.mean().detach()
            loss = loss + self.w_cosine * (1.0 - cos).mean()
        if self.w_relational:
            s = F.normalize(embedding, dim=1)
            sim_s, sim_t = s @ s.T, target @ target.T
            off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
            rel = (sim_s - sim_t)[off].pow(2).mean()
            parts["distill_rel"] = rel.detach()
            loss = loss + self.w_relational * rel
        return loss, parts


class MultiTeacherLoss(nn.Module):
    """Several teachers in one distillation: one ``DistillLoss`` per teacher on its own slice of the
    concatenated targets, summed with the teachers' weights. The first teacher is the primary: the
    student's embedding lives in its space (same dimension; ``raw`` keeps its geometry). Every
    further teacher is reached through its own linear projection head (s -> its dimension) with the
    cosine and relational terms on its centred targets: the served embedding learns what the other
    teachers see without being forced into their coordinates (one projection head per teacher, as
    in multi-teacher feature distillation; the weights are chosen on LFW View 1)."""

    def __init__(self, losses: list[DistillLoss], dims: list[int], weights: list[float], names: list[str]):
        super().__init__()
        if not (len(losses) == len(dims) == len(weights) == len(names)):
            raise ConfigError("one loss, dimension, weight and name per teacher.")
        self.losses = nn.ModuleList(losses)
        self.dims, self.weights, self.names = list(dims), [float(w) for w in weights], list(names)

    @property
    def w_raw(self) -> float:
        return self.losses[0].w_raw

    @property
    def mean(self):
        return self.losses[0].mean

    def part_names(self, raw: bool) -> tuple[str, ...]:
        further = DistillLoss.part_names(raw=False)  # the other teachers have no raw term
        return DistillLoss.part_names(raw) + tuple(f"{p}_{n}" for n in self.names[1:] for p in further)

    def forward(self, embedding: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        loss, parts, start = embedding.new_zeros((), dtype=torch.float32), {}, 0
        primary_mean = self.losses[0].mean
        centred = F.normalize(embedding.float(), dim=1) - primary_mean if primary_mean is not None else embedding
        for k, (fn, dim, weight) in enumerate(zip(self.losses, self.dims, self.weights)):
            part_loss, part = fn(embedding if k == 0 else centred, target[:, start : start + dim])
            start += dim
            loss = loss + weight * part_loss
            parts.update(part if k == 0 else {f"{key}_{self.names[k]}": v for key, v in part.items()})
        return loss, parts
