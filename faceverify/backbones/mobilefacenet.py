"""MobileFaceNet (Chen et al., CCBR'18, Table 1): conv3x3/2 64, depthwise 3x3 64, inverted-residual
bottlenecks (t, c, n, s) = (2,64,5,2) (4,128,1,2) (2,128,6,1) (4,128,1,2) (2,128,2,1), conv1x1 512,
a global depthwise conv (GDConv) over the whole last map, a linear 1x1 conv to the embedding, BN.
PReLU throughout. The paper's embedding is 128-d; here it is ``embedding_dim`` (512 by default)."""

from __future__ import annotations

import torch
from torch import nn

from .common import downsampled

SETTINGS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


def conv_bn(c_in: int, c_out: int, kernel, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    padding = (kernel - 1) // 2 if isinstance(kernel, int) else 0
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.PReLU(c_out))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise (stride), linear 1x1 project."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int):
        super().__init__()
        hidden = c_in * expansion
        self.body = nn.Sequential(
            conv_bn(c_in, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, c_out, 1, act=False),
        )
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    def __init__(self, embedding_dim: int = 512, input_size: tuple[int, int] = (112, 112), width: int = 64, last: int = 512):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, width, 3, 2), conv_bn(width, width, 3, 1, groups=width)]
        c_in = width
        for t, c, n, s in SETTINGS:
            c = c * width // 64
            for i in range(n):
                layers.append(Bottleneck(c_in, c, s if i == 0 else 1, t))
                c_in = c
        layers.append(conv_bn(c_in, last, 1))
        h, w = downsampled(input_size, 4)
        layers.append(conv_bn(last, last, (h, w), 1, groups=last, act=False))  # linear GDConv
        layers.append(nn.Conv2d(last, embedding_dim, 1, bias=False))  # linear 1x1 conv
        layers.append(nn.BatchNorm2d(embedding_dim))
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)


def mobilefacenet(embedding_dim: int = 512, input_size=(112, 112), width: int = 64, last: int = 512) -> MobileFaceNet:
    return MobileFaceNet(embedding_dim, input_size, width, last)
