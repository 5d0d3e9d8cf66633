"""IResNet (Deng et al., ArcFace CVPR'19, the "improved residual" unit of sec. 3.2 / insightface
arcface_torch): BN-Conv-BN-PReLU-Conv-BN units, stride 2 on the second conv, a BN-Dropout-FC-BN
"E" embedding output. IResNet-18: 2/2/2/2 units, IResNet-50: 3/4/14/3; widths 64/128/256/512."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import downsampled


class IBasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.PReLU(c_out),
            nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class IResNet(nn.Module):
    def __init__(self, units: Sequence[int], embedding_dim: int = 512, input_size: tuple[int, int] = (112, 112),
                 widths: Sequence[int] = (64, 128, 256, 512), dropout: float = 0.0):
        super().__init__()
        stem = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem)]
        c_in = stem
        for n, width in zip(units, widths):
            layers += [IBasicBlock(c_in if i == 0 else width, width, 2 if i == 0 else 1) for i in range(n)]
            c_in = width
        layers.append(nn.BatchNorm2d(c_in))
        self.features = nn.Sequential(*layers)
        h, w = downsampled(input_size, 4)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in * h * w, embedding_dim)
        self.bn = nn.BatchNorm1d(embedding_dim)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
        # zero-init the last BN of each unit: every unit starts as the identity
        for m in self.modules():
            if isinstance(m, IBasicBlock):
                nn.init.zeros_(m.body[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.bn(self.fc(self.dropout(x)))


def iresnet18(embedding_dim: int = 512, input_size=(112, 112), widths=(64, 128, 256, 512), dropout: float = 0.0) -> IResNet:
    return IResNet((2, 2, 2, 2), embedding_dim, input_size, widths, dropout)


def iresnet50(embedding_dim: int = 512, input_size=(112, 112), widths=(64, 128, 256, 512), dropout: float = 0.0) -> IResNet:
    return IResNet((3, 4, 14, 3), embedding_dim, input_size, widths, dropout)
