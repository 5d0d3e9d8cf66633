"""Backbone registry: every network maps (N, 3, H, W) crops to (N, D) for both crop templates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from faceverify.backbones import BACKBONES, build_backbone
from faceverify.errors import ConfigError

EXPECTED = {"lsoftmax_lfw", "sphereface20", "sphereface36", "sphereface64", "iresnet18", "iresnet50", "mobilefacenet"}


def test_registry_names():
    assert EXPECTED <= set(BACKBONES)
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_backbone("resnet9000")
    with pytest.raises(ConfigError, match="bad options"):
        build_backbone("sphereface20", no_such_option=1)


DEEPEST = {"iresnet50", "sphereface64"}  # seconds each on a CPU: the full tier only


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEPEST else n for n in sorted(EXPECTED)])
@pytest.mark.parametrize("size", [(112, 96), (112, 112)])
def test_shape_and_gradient(name, size):
    torch.manual_seed(0)
    model = build_backbone(name, embedding_dim=128, input_size=size)
    x = torch.randn(2, 3, *size)
    if size == (112, 96):  # gradients reach the first layer (train mode)
        y = model(x)
        y.pow(2).sum().backward()
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        y = model(x)
        single = model(x[:1])
    assert y.shape == (2, 128) and torch.isfinite(y).all()
    assert torch.allclose(single, y[:1], atol=1e-4)  # eval mode: an embedding does not depend on its batch


@pytest.mark.parametrize("name,convs", [("sphereface20", 20), ("sphereface36", 36), ("sphereface64", 64)])
def test_sphereface_depth_follows_paper_table2(name, convs):
    model = build_backbone(name)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # Caffe SphereFace has no BN
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) == convs
    assert model.fc.in_features == 512 * 7 * 6 and model.fc.out_features == 512


def test_lsoftmax_lfw_table1_layout():
    model = build_backbone("lsoftmax_lfw")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 4 * 4
    assert convs[0].stride == (2, 2) and convs[0].out_channels == 64
    assert [c.out_channels for c in convs[1:]] == [64] * 4 + [256] * 12
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3


def test_narrow_option_for_tests():
    model = build_backbone("sphereface20", embedding_dim=32, widths=[8, 16, 16, 32], bn=True)
    assert model(torch.randn(3, 3, 112, 96)).shape == (3, 32)
    assert sum(p.numel() for p in model.parameters()) < 200_000
