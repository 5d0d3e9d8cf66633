"""The LFW network of the L-Softmax paper (Liu et al., ICML'16, Table 1, LFW column):
Conv0 [3x3, 64] stride 2; Conv1.x [3x3, 64] x4; max-pool 2x2/2; Conv2.x [3x3, 256] x4; pool;
Conv3.x [3x3, 256] x4; pool; Conv4.x [3x3, 256] x4; FC 512. Each conv is conv-BN-PReLU (the
paper uses BN and PReLU for this network)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import downsampled


def _block(c_in: int, c_out: int, n: int, first_stride: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, first_stride if i == 0 else 1, 1, bias=False),
                   nn.BatchNorm2d(c_out), nn.PReLU(c_out)]
    return layers


class LSoftmaxLFWNet(nn.Module):
    def __init__(self, embedding_dim: int = 512, input_size: tuple[int, int] = (112, 96),
                 widths: Sequence[int] = (64, 64, 256, 256, 256), depth: int = 4):
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.features = nn.Sequential(
            *_block(3, w0, 1, first_stride=2),  # Conv0
            *_block(w0, w1, depth),  # Conv1.x
            nn.MaxPool2d(2, 2),
            *_block(w1, w2, depth),  # Conv2.x
            nn.MaxPool2d(2, 2),
            *_block(w2, w3, depth),  # Conv3.x
            nn.MaxPool2d(2, 2),
            *_block(w3, w4, depth),  # Conv4.x
        )
        h, w = downsampled(input_size, 1)
        for _ in range(3):
            h, w = h // 2, w // 2
        self.fc = nn.Linear(w4 * h * w, embedding_dim)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def lsoftmax_lfw(embedding_dim: int = 512, input_size=(112, 96), widths=(64, 64, 256, 256, 256), depth: int = 4) -> LSoftmaxLFWNet:
    return LSoftmaxLFWNet(embedding_dim, input_size, widths, depth)
