"""Face backbones: ``build_backbone(name, embedding_dim=512, input_size=(112, 96), **options)``
returns an ``nn.Module`` mapping ``(N, 3, H, W)`` float crops to ``(N, embedding_dim)``.

Every builder works for 112x96 (SphereFace) and 112x112 (ArcFace) crops: the last feature map
is ``ceil(H/16) x ceil(W/16)`` and the embedding layer is sized from it. Extra options (e.g.
``widths`` for a narrow test model) are plain JSON values, so checkpoints can rebuild the model
from ``{"name", "kwargs"}``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import ConfigError
from .iresnet import iresnet18, iresnet50
from .lsoftmax_net import lsoftmax_lfw
from .mobilefacenet import mobilefacenet
from .onnx_graph import onnx_graph
from .sphereface import sphereface20, sphereface36, sphereface64

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "lsoftmax_lfw": lsoftmax_lfw,
    "sphereface20": sphereface20,
    "sphereface36": sphereface36,
    "sphereface64": sphereface64,
    "iresnet18": iresnet18,
    "iresnet50": iresnet50,
    "mobilefacenet": mobilefacenet,
    "onnx_graph": onnx_graph,  # a teacher's ONNX graph rebuilt in PyTorch (model.init_from)
}


def build_backbone(name: str, embedding_dim: int = 512, input_size: tuple[int, int] | list[int] = (112, 96), **kwargs) -> nn.Module:
    """The backbone ``name`` (one of :data:`BACKBONES`) for ``input_size`` = (H, W) crops."""
    try:
        builder = BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}.") from None
    height, width = (int(v) for v in input_size)
    if height < 32 or width < 32 or embedding_dim < 1:
        raise ConfigError(f"backbone input must be at least 32x32 and embedding_dim >= 1 (got {height}x{width}, {embedding_dim}).")
    try:
        return builder(embedding_dim=int(embedding_dim), input_size=(height, width), **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad options for backbone {name!r}: {exc}") from None


__all__ = ["BACKBONES", "build_backbone"]
