"""Step-indexed schedules: the A-Softmax lambda annealing and learning rates with warm-up.

Both are small stateful objects with ``state_dict``/``load_state_dict`` so a resumed run continues
exactly where it stopped (lambda does not restart at 1000, the learning rate does not re-warm).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch

from ..errors import ConfigError


class LambdaSchedule:
    """lambda = max(lambda_min, base (1 + gamma iter)^(-power)) — the annealing of SphereFace's Caffe
    MarginInnerProduct layer (defaults from sphereface_model.prototxt: base 1000, gamma 0.12,
    power 1, lambda_min 5). ``iteration`` counts forward passes, as in Caffe."""

    def __init__(self, base: float = 1000.0, gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0, iteration: int = 0):
        if base < 0 or gamma < 0 or lambda_min < 0:
            raise ConfigError(f"lambda schedule needs base, gamma, lambda_min >= 0 (got {base}, {gamma}, {lambda_min}).")
        self.base, self.gamma, self.power, self.lambda_min = float(base), float(gamma), float(power), float(lambda_min)
        self.iteration = int(iteration)

    def value_at(self, iteration: int) -> float:
        # SphereFace margin_inner_product_layer.cpp: lambda = max(base * (1 + gamma * iter)^(-power), lambda_min)
        return max(self.lambda_min, self.base * (1.0 + self.gamma * iteration) ** (-self.power))

    @property
    def value(self) -> float:
        return self.value_at(self.iteration)

    def step(self) -> float:
        """Advance one iteration; returns the new lambda."""
        self.iteration += 1
        return self.value

    def state_dict(self) -> dict:
        return {"base": self.base, "gamma": self.gamma, "power": self.power, "lambda_min": self.lambda_min, "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.base, self.gamma, self.power = float(state["base"]), float(state["gamma"]), float(state["power"])
        self.lambda_min, self.iteration = float(state["lambda_min"]), int(state["iteration"])


class WarmupLR:
    """Learning rate per step: linear warm-up from ``warmup_start`` x lr over ``warmup_steps``, then

    * ``multistep``: lr * gamma^(number of milestones <= step)   (SphereFace: x0.1 at 16K, 24K)
    * ``cosine``:    min_lr + (lr - min_lr) (1 + cos(pi t)) / 2, t = progress after warm-up
    * ``poly``:      min_lr + (lr - min_lr) (1 - t)^power        (insightface PolynomialLRWarmup)
    * ``constant``.

    Call :meth:`step` after each optimizer step; it writes the next lr into the optimizer.
    """

    KINDS = ("multistep", "cosine", "poly", "constant")

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str = "multistep", total_steps: int = 1,
                 warmup_steps: int = 0, warmup_start: float = 0.1, milestones: Sequence[int] = (),
                 gamma: float = 0.1, power: float = 2.0, min_lr: float = 0.0):
        if kind not in self.KINDS:
            raise ConfigError(f"unknown lr schedule {kind!r}; choose one of {list(self.KINDS)}.")
        if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
            raise ConfigError(f"lr schedule needs 0 <= warmup_steps <= total_steps, total >= 1 (got {warmup_steps}, {total_steps}).")
        self.optimizer = optimizer
        self.kind, self.total_steps, self.warmup_steps = kind, int(total_steps), int(warmup_steps)
        self.warmup_start, self.milestones = float(warmup_start), sorted(int(m) for m in milestones)
        self.gamma, self.power, self.min_lr = float(gamma), float(power), float(min_lr)
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self, step: int) -> float:
        """lr multiplier at ``step`` relative to the base lr (min_lr handled in :meth:`lr_at`)."""
        if step < self.warmup_steps:
            return self.warmup_start + (1.0 - self.warmup_start) * step / self.warmup_steps
        if self.kind == "multistep":
            return self.gamma ** bisect.bisect_right(self.milestones, step)
        t = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))  # SGDR eq. 5 (Loshchilov & Hutter 2017)
        if self.kind == "poly":
            return (1.0 - t) ** self.power
        return 1.0

    def lr_at(self, step: int, base_lr: float | None = None) -> float:
        base = self.base_lrs[0] if base_lr is None else base_lr
        f = self.factor(step)
        if self.kind in ("cosine", "poly") and step >= self.warmup_steps:
            return self.min_lr + (base - self.min_lr) * f
        return base * f

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(self.last_step, base)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state: dict, position_only: bool = False) -> None:
        """Restore everything, or (``position_only``) just the step, keeping this schedule's shape."""
        if position_only:
            self.last_step = int(state["last_step"])
        else:
            self.__dict__.update(state)
        self._apply()
