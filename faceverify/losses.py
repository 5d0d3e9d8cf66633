"""Classification heads for face-identity training and Kobayashi's large-margin regulariser.

A head maps embeddings ``x`` (N, D) and labels ``y`` (N,) to a :class:`HeadOutput`:
``logits`` — the (margin) logits that go into the cross-entropy — and ``cos_logits`` — the same
layer with the margin switched off (m = 1), which is what training accuracy is measured with
(wy1iu/sphereface#60: accuracy on margin logits is meaningless). The loss is
:class:`MarginLoss` = cross-entropy on ``logits`` (+ optionally Kobayashi's regulariser).

Heads (all bias-free unless stated):

* ``softmax``     — W^T x (+ b)
* ``lsoftmax``    — L-Softmax, Liu et al. ICML'16: target logit ||W|| ||x|| psi(theta)
* ``asoftmax``    — A-Softmax / SphereFace, Liu et al. CVPR'17: L-Softmax with ||W_j|| = 1
* ``normface``    — NormFace, Wang et al. MM'17: s cos(theta)
* ``cosface``     — CosFace / AM-Softmax: s (cos(theta_y) - m)
* ``arcface``     — ArcFace, Deng et al. CVPR'19: s cos(theta_y + m)

The heads compute in float32 even under autocast (margins on bf16 cosines are noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

__all__ = [
    "HeadOutput",
    "SoftmaxHead",
    "LSoftmaxHead",
    "ASoftmaxHead",
    "NormFaceHead",
    "CosFaceHead",
    "ArcFaceHead",
    "HEADS",
    "build_head",
    "cos_m_theta",
    "psi",
    "large_margin_regularizer",
    "MarginLoss",
]


@dataclass
class HeadOutput:
    logits: torch.Tensor  # (N, C) margin logits: the cross-entropy input
    cos_logits: torch.Tensor  # (N, C) the same logits with m = 1: training accuracy uses these


# ---------------------------------------------------------------------------------------------
# psi(theta) of L-Softmax / A-Softmax


def cos_m_theta(cos: torch.Tensor, m: int) -> torch.Tensor:
    """cos(m theta) as a polynomial in cos(theta) (L-Softmax eq. 7, the binomial expansion):
    sum_n (-1)^n C(m, 2n) cos^(m-2n)(theta) (1 - cos^2(theta))^n."""
    sin2 = 1.0 - cos * cos
    out = torch.zeros_like(cos)
    for n in range(m // 2 + 1):
        # L-Softmax eq. 7: (-1)^n C(m,2n) cos^(m-2n) sin^(2n)
        out = out + ((-1) ** n * math.comb(m, 2 * n)) * cos ** (m - 2 * n) * sin2**n
    return out


def margin_k(cos: torch.Tensor, m: int) -> torch.Tensor:
    """The piece index k of L-Softmax eq. 6: theta in [k pi/m, (k+1) pi/m], found by comparing
    cos(theta) with cos(j pi / m) (no arccos). k = 0 for theta <= pi/m."""
    k = torch.zeros_like(cos)
    for j in range(1, m):
        k = k + (cos < math.cos(j * math.pi / m)).to(cos.dtype)
    return k


def psi(cos: torch.Tensor, m: int) -> torch.Tensor:
    """psi(theta) = (-1)^k cos(m theta) - 2k on [k pi/m, (k+1) pi/m] (L-Softmax eq. 6) from cos(theta);
    monotonically decreasing on [0, pi], psi = cos for m = 1."""
    if m not in (1, 2, 3, 4):
        raise ConfigError(f"the angular margin m must be 1, 2, 3 or 4 (got {m}); eq. 7 is implemented for these.")
    if m == 1:
        return cos
    k = margin_k(cos, m).detach()
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)  # (-1)^k
    return sign * cos_m_theta(cos, m) - 2.0 * k  # L-Softmax eq. 6


# ---------------------------------------------------------------------------------------------
# heads


class _Head(nn.Module):
    """Holds the class weight matrix W (C, D), initialised as in SphereFace's fc6 (xavier)."""

    lamb_supported = False

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        if embedding_dim < 1 or num_classes < 2:
            raise ConfigError(f"a head needs embedding_dim >= 1 and num_classes >= 2 (got {embedding_dim}, {num_classes}).")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._forward(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, labels)

    def _forward(self, x: torch.Tensor, labels: torch.Tensor) -> HeadOutput:  # pragma: no cover
        raise NotImplementedError

    def _weight(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.to(x.dtype)

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}"


class SoftmaxHead(_Head):
    """Plain softmax classifier: logits = W x + b (bias optional)."""

    def __init__(self, embedding_dim: int, num_classes: int, bias: bool = True):
        super().__init__(embedding_dim, num_classes)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None

    def _forward(self, x, labels):
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        logits = F.linear(x, self._weight(x), bias)  # softmax: f_j = W_j^T x + b_j
        return HeadOutput(logits, logits)


class LSoftmaxHead(_Head):
    """L-Softmax (Liu et al., ICML'16). Target logit ||W_y|| ||x|| psi(theta_y) (eq. 4-6), others
    W_j^T x; with the annealing trick f_y = (lamb ||W|| ||x|| cos + ||W|| ||x|| psi) / (1 + lamb).

    ``lamb`` is set by the trainer every step (see :class:`faceverify.training.LambdaSchedule`);
    it defaults to 0 (the pure margin). m = 1 gives exactly the bias-free softmax.
    """

    lamb_supported = True
    normalize_weight = False

    def __init__(self, embedding_dim: int, num_classes: int, m: int = 4, lamb: float = 0.0):
        super().__init__(embedding_dim, num_classes)
        psi(torch.zeros(1), m)  # validates m
        self.m = int(m)
        self.lamb = float(lamb)

    def _forward(self, x, labels):
        w = self._weight(x)
        if self.normalize_weight:
            w = F.normalize(w, dim=1)  # A-Softmax: ||W_j|| = 1, no bias
        wx = F.linear(x, w)  # ||W_j|| ||x|| cos(theta_j)
        if self.m == 1:
            return HeadOutput(wx, wx)
        w_norm = w.norm(dim=1)[labels]
        x_norm = x.norm(dim=1)
        scale = (w_norm * x_norm).clamp_min(1e-12)
        wx_y = wx.gather(1, labels[:, None]).squeeze(1)
        cos_y = (wx_y / scale).clamp(-1.0, 1.0)
        # f_y = (lamb |W||x| cos + |W||x| psi) / (1 + lamb)  (L-Softmax sec. 5 / SphereFace Caffe layer),
        # written as wx_y + |W||x| (psi - cos) / (1 + lamb) so that m = 1 is exactly softmax.
        delta = scale * (psi(cos_y, self.m) - cos_y) / (1.0 + self.lamb)
        logits = wx.scatter_add(1, labels[:, None], delta[:, None])
        return HeadOutput(logits, wx)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}, lamb={self.lamb}"


class ASoftmaxHead(LSoftmaxHead):
    """A-Softmax / SphereFace (Liu et al., CVPR'17): L-Softmax with L2-normalised class weights and
    no bias, so f_j = ||x|| cos(theta_j) and f_y = ||x|| psi(theta_y) (SphereFace eq. 6-7)."""

    normalize_weight = True


class NormFaceHead(_Head):
    """NormFace (Wang et al., MM'17): f_j = s cos(theta_j) with normalised x and W (eq. 3)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 30.0):
        super().__init__(embedding_dim, num_classes)
        self.s = float(s)

    def cosine(self, x):
        return F.linear(F.normalize(x, dim=1), F.normalize(self._weight(x), dim=1))

    def _forward(self, x, labels):
        logits = self.s * self.cosine(x)  # NormFace eq. 3: s * cos(theta_j)
        return HeadOutput(logits, logits)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}"


class CosFaceHead(NormFaceHead):
    """CosFace / AM-Softmax (Wang et al., CVPR'18): f_y = s (cos(theta_y) - m), f_j = s cos(theta_j) (CosFace eq. 4)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 30.0, m: float = 0.35):
        super().__init__(embedding_dim, num_classes, s)
        self.m = float(m)

    def _forward(self, x, labels):
        cos = self.cosine(x)
        margin = F.one_hot(labels, self.num_classes).to(cos.dtype) * self.m
        return HeadOutput(self.s * (cos - margin), self.s * cos)  # CosFace eq. 4: s (cos(theta_y) - m)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}"


class ArcFaceHead(NormFaceHead):
    """ArcFace (Deng et al., CVPR'19): f_y = s cos(theta_y + m) (ArcFace eq. 3).

    cos(theta + m) stops decreasing once theta + m > pi. ``easy_margin=True`` applies the margin
    only where cos(theta) > 0; otherwise (insightface's default) for theta > pi - m the target
    logit falls back to the linear CosFace-like s (cos(theta) - m sin(m)), which keeps it monotonic.
    """

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5, easy_margin: bool = False):
        super().__init__(embedding_dim, num_classes, s)
        self.m = float(m)
        self.easy_margin = bool(easy_margin)

    def target_cos(self, cos: torch.Tensor) -> torch.Tensor:
        """The margin-adjusted target cosine for cos(theta_y)."""
        sin = (1.0 - cos * cos).clamp_min(1e-12).sqrt()
        phi = cos * math.cos(self.m) - sin * math.sin(self.m)  # cos(theta + m) = cos cos m - sin sin m
        if self.easy_margin:
            return torch.where(cos > 0, phi, cos)
        # theta + m > pi  <=>  cos(theta) < cos(pi - m): use cos(theta) - m sin(m)
        return torch.where(cos > math.cos(math.pi - self.m), phi, cos - self.m * math.sin(self.m))

    def _forward(self, x, labels):
        cos = self.cosine(x)
        cos_y = cos.gather(1, labels[:, None]).clamp(-1.0, 1.0)
        logits = cos.scatter(1, labels[:, None], self.target_cos(cos_y))
        return HeadOutput(self.s * logits, self.s * cos)  # ArcFace eq. 3: s cos(theta_y + m)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}, easy_margin={self.easy_margin}"


HEADS: dict[str, type[_Head]] = {
    "softmax": SoftmaxHead,
    "lsoftmax": LSoftmaxHead,
    "asoftmax": ASoftmaxHead,
    "sphereface": ASoftmaxHead,
    "normface": NormFaceHead,
    "cosface": CosFaceHead,
    "amsoftmax": CosFaceHead,
    "arcface": ArcFaceHead,
}


def head_class(name: str) -> type[_Head]:
    """The head class a recipe's ``head.name`` names."""
    try:
        return HEADS[name]
    except KeyError:
        raise ConfigError(f"unknown head {name!r}; choose one of {sorted(HEADS)}.") from None


def build_head(name: str, embedding_dim: int, num_classes: int, **kwargs) -> _Head:
    """A head by registry name, e.g. ``build_head("asoftmax", 512, 10572, m=4)``."""
    cls = head_class(name)
    try:
        return cls(embedding_dim, num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad options for head {name!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Kobayashi's regulariser and the loss


def large_margin_regularizer(logits: torch.Tensor, labels: torch.Tensor, lamb: float = 0.3) -> torch.Tensor:
    """Kobayashi (BMVC'19) eq. 8-11: (lamb/2) sum_{c != y} (q_c - 1/(C-1)) log q_c, averaged over the
    batch, with q the softmax over the non-target logits. It equals (lamb/2)(KL(q||u) + KL(u||q)) for
    u uniform over the C-1 non-target classes, so it is >= 0 and 0 iff the non-target logits are equal."""
    n, c = logits.shape
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    target = F.one_hot(labels, c).bool()
    masked = logits.masked_fill(target, float("-inf"))
    log_q = F.log_softmax(masked, dim=1).masked_fill(target, 0.0)
    q = log_q.exp().masked_fill(target, 0.0)
    reg = ((q - 1.0 / (c - 1)) * log_q).masked_fill(target, 0.0).sum(dim=1)  # Kobayashi eq. 11
    return 0.5 * lamb * reg.mean()


class MarginLoss(nn.Module):
    """Cross-entropy on a head's logits, plus Kobayashi's regulariser when ``reg_lambda > 0``
    (it only sees the non-target logits, so it composes with every head)."""

    def __init__(self, reg_lambda: float = 0.0):
        super().__init__()
        self.reg_lambda = float(reg_lambda)

    def forward(self, out: HeadOutput, labels: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(out.logits, labels)
        if self.reg_lambda > 0:
            loss = loss + large_margin_regularizer(out.logits, labels, self.reg_lambda)
        return loss
