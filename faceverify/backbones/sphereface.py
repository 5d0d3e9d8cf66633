"""SphereFace-20/36/64 (Liu et al., CVPR'17, Table 2): four stages, each a stride-2 3x3 conv then
residual units of two 3x3 convs, widths 64/128/256/512, PReLU, a 512-d FC ("fc5").

Units per stage follow the paper's Table 2: 20 -> 1/2/4/1, 36 -> 2/4/8/2, 64 -> 3/8/16/3. (The
released Caffe ``sphereface_64_model.prototxt`` has 3/7/16/3, i.e. 62 conv layers; we follow the
paper.) Like the Caffe models there is no BatchNorm unless ``bn=True``; initialisation as in the
prototxt: stride-2 convs and the FC xavier, residual convs gaussian std 0.01, PReLU 0.25.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import downsampled

UNITS = {20: (1, 2, 4, 1), 36: (2, 4, 8, 2), 64: (3, 8, 16, 3)}


def _conv(c_in: int, c_out: int, stride: int, bn: bool, bias: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias and not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.PReLU(c_out))
    return layers


class ResidualUnit(nn.Module):
    """x + PReLU(conv(PReLU(conv(x)))) — SphereFace's residual unit (identity shortcut)."""

    def __init__(self, channels: int, bn: bool):
        super().__init__()
        self.body = nn.Sequential(*_conv(channels, channels, 1, bn, False), *_conv(channels, channels, 1, bn, False))
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SphereNet(nn.Module):
    def __init__(self, units: Sequence[int], embedding_dim: int = 512, input_size: tuple[int, int] = (112, 96),
                 widths: Sequence[int] = (64, 128, 256, 512), bn: bool = False):
        super().__init__()
        if len(units) != 4 or len(widths) != 4:
            raise ValueError(f"SphereNet needs 4 stages (units {list(units)}, widths {list(widths)})")
        layers: list[nn.Module] = []
        c_in = 3
        for n, width in zip(units, widths):
            stride_conv = _conv(c_in, width, 2, bn, True)
            nn.init.xavier_uniform_(stride_conv[0].weight)
            if stride_conv[0].bias is not None:
                nn.init.zeros_(stride_conv[0].bias)
            layers += stride_conv
            layers += [ResidualUnit(width, bn) for _ in range(n)]
            c_in = width
        self.features = nn.Sequential(*layers)
        h, w = downsampled(input_size, 4)
        self.fc = nn.Linear(c_in * h * w, embedding_dim)  # fc5
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def sphereface20(embedding_dim: int = 512, input_size=(112, 96), widths=(64, 128, 256, 512), bn: bool = False) -> SphereNet:
    return SphereNet(UNITS[20], embedding_dim, input_size, widths, bn)


def sphereface36(embedding_dim: int = 512, input_size=(112, 96), widths=(64, 128, 256, 512), bn: bool = False) -> SphereNet:
    return SphereNet(UNITS[36], embedding_dim, input_size, widths, bn)


def sphereface64(embedding_dim: int = 512, input_size=(112, 96), widths=(64, 128, 256, 512), bn: bool = False) -> SphereNet:
    return SphereNet(UNITS[64], embedding_dim, input_size, widths, bn)
