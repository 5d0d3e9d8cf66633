"""Margin heads and Kobayashi's regulariser against their papers' formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from faceverify.errors import ConfigError
from faceverify.losses import (
    ArcFaceHead,
    ASoftmaxHead,
    CosFaceHead,
    LSoftmaxHead,
    MarginLoss,
    NormFaceHead,
    SoftmaxHead,
    build_head,
    cos_m_theta,
    large_margin_regularizer,
    psi,
)
from faceverify.training.schedules import LambdaSchedule

torch.manual_seed(0)


def psi_piecewise(theta: np.ndarray, m: int) -> np.ndarray:
    """L-Softmax eq. 6 written directly from theta: k = floor(m theta / pi)."""
    k = np.minimum(np.floor(m * theta / math.pi), m - 1)
    return (-1.0) ** k * np.cos(m * theta) - 2.0 * k


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_matches_piecewise_formula(m):
    theta = np.random.default_rng(m).uniform(0.0, math.pi, 2000)
    got = psi(torch.from_numpy(np.cos(theta)), m).numpy()
    np.testing.assert_allclose(got, psi_piecewise(theta, m), atol=1e-9)
    np.testing.assert_allclose(cos_m_theta(torch.from_numpy(np.cos(theta)), m).numpy(), np.cos(m * theta), atol=1e-9)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_is_monotonically_decreasing(m):
    theta = torch.linspace(0.0, math.pi, 20001, dtype=torch.float64)
    values = psi(torch.cos(theta), m)
    assert (values[1:] - values[:-1] < 0).all()
    assert values[0].item() == pytest.approx(1.0)
    assert values[-1].item() == pytest.approx(1.0 - 2.0 * m)  # psi(pi) = (-1)^(m-1) cos(m pi) - 2(m-1) = -(2m - 1)


def test_invalid_margin_is_a_config_error():
    with pytest.raises(ConfigError):
        LSoftmaxHead(8, 3, m=5)
    with pytest.raises(ConfigError):
        build_head("nope", 8, 3)


def test_lsoftmax_m1_equals_softmax_exactly():
    x, y = torch.randn(16, 8), torch.randint(0, 5, (16,))
    lsm = LSoftmaxHead(8, 5, m=1)
    sm = SoftmaxHead(8, 5, bias=False)
    sm.weight.data.copy_(lsm.weight.data)
    a, b = lsm(x, y), sm(x, y)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(F.cross_entropy(a.logits, y), F.cross_entropy(b.logits, y))
    assert torch.equal(a.cos_logits, b.logits)


def test_softmax_bias_is_used():
    head = SoftmaxHead(4, 3, bias=True)
    head.bias.data = torch.tensor([1.0, 2.0, 3.0])
    x = torch.randn(2, 4)
    assert torch.allclose(head(x, torch.zeros(2, dtype=torch.long)).logits, x @ head.weight.T + head.bias)


def test_lambda_trick_formula_and_accuracy_logits():
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 4, (32,))
    for lamb in (0.0, 5.0, 1000.0):
        head = ASoftmaxHead(6, 4, m=4, lamb=lamb).double()
        out = head(x, y)
        w = F.normalize(head.weight, dim=1)
        cos = F.normalize(x, dim=1) @ w.T
        xn = x.norm(dim=1)
        cos_y = cos[torch.arange(32), y]
        expected_y = (lamb * xn * cos_y + xn * psi(cos_y, 4)) / (1 + lamb)  # f_y with the lambda trick
        assert torch.allclose(out.logits[torch.arange(32), y], expected_y)
        mask = F.one_hot(y, 4).bool()
        assert torch.allclose(out.logits[~mask], (xn[:, None] * cos)[~mask])
        assert torch.allclose(out.cos_logits, xn[:, None] * cos)  # accuracy logits: m = 1
    # a margin always lowers the target logit: psi(theta) <= cos(theta)
    small = ASoftmaxHead(6, 4, m=4, lamb=0.0).double()
    out = small(x, y)
    assert (out.logits[torch.arange(32), y] <= out.cos_logits[torch.arange(32), y] + 1e-12).all()


def _all_heads():
    return [
        SoftmaxHead(5, 4, bias=True),
        SoftmaxHead(5, 4, bias=False),
        LSoftmaxHead(5, 4, m=2),
        LSoftmaxHead(5, 4, m=3, lamb=2.0),
        LSoftmaxHead(5, 4, m=4),
        ASoftmaxHead(5, 4, m=4, lamb=5.0),
        ASoftmaxHead(5, 4, m=2),
        NormFaceHead(5, 4, s=10.0),
        CosFaceHead(5, 4, s=10.0, m=0.35),
        ArcFaceHead(5, 4, s=10.0, m=0.5),
        ArcFaceHead(5, 4, s=10.0, m=0.5, easy_margin=True),
    ]


@pytest.mark.parametrize("head", _all_heads(), ids=lambda h: f"{type(h).__name__}({h.extra_repr()})")
@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_gradcheck_every_head(head, reg):
    head = head.double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    loss_fn = MarginLoss(reg_lambda=reg)

    w = head.weight.detach().clone().requires_grad_(True)

    def loss(x, w):
        saved = head.weight
        try:
            del head.weight
            head.weight = w  # plain tensor attribute so gradcheck can differentiate through it
            return loss_fn(head(x, y), y)
        finally:
            del head.weight
            head.weight = saved

    assert torch.autograd.gradcheck(loss, (x, w), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("theta_deg", [35.0, 70.0, 120.0, 160.0])
def test_m2_gradient_equals_paper_closed_form(theta_deg):
    """L-Softmax eq. 11-13 for m = 2: f = (-1)^k (2 (W^T x)^2 / (|W||x|) - |W||x|) - 2k |W||x|."""
    gen = torch.Generator().manual_seed(int(theta_deg))
    w = torch.randn(6, dtype=torch.float64, generator=gen) * 1.7
    u = torch.randn(6, dtype=torch.float64, generator=gen)
    u = u - (u @ w) / (w @ w) * w  # orthogonal to w
    theta = math.radians(theta_deg)
    x = (math.cos(theta) * w / w.norm() + math.sin(theta) * u / u.norm()) * 2.3
    x.requires_grad_(True)
    weight = torch.zeros(2, 6, dtype=torch.float64)
    weight[0] = w
    weight[1] = torch.randn(6, dtype=torch.float64, generator=gen)
    weight.requires_grad_(True)
    head = LSoftmaxHead(6, 2, m=2).double()
    del head.weight
    head.weight = weight
    f = head(x[None], torch.tensor([0])).logits[0, 0]
    gx, gw = torch.autograd.grad(f, (x, weight))

    xd, wd = x.detach(), w
    k = 0 if theta_deg <= 90 else 1  # eq. 6: theta in [k pi/2, (k+1) pi/2]
    nw, nx, wx = wd.norm(), xd.norm(), wd @ xd
    sign = (-1) ** k
    # eq. 12: d f / d x
    dfdx = sign * (4 * wx * wd / (nw * nx) - 2 * wx**2 * xd / (nw * nx**3) - nw * xd / nx) - 2 * k * nw * xd / nx
    # eq. 13: d f / d W
    dfdw = sign * (4 * wx * xd / (nw * nx) - 2 * wx**2 * wd / (nw**3 * nx) - nx * wd / nw) - 2 * k * nx * wd / nw
    assert torch.allclose(gx, dfdx, atol=1e-10)
    assert torch.allclose(gw[0], dfdw, atol=1e-10)
    assert torch.count_nonzero(gw[1]) == 0  # the non-target class does not enter the target logit


def test_lambda_schedule_matches_caffe_formula():
    sched = LambdaSchedule()  # base 1000, gamma 0.12, power 1, lambda_min 5
    assert sched.value_at(0) == 1000.0
    assert sched.value_at(500) == pytest.approx(1000.0 / 61.0)  # 16.39, the log in wy1iu/sphereface#103
    assert sched.value_at(1658) == pytest.approx(1000.0 / (1 + 0.12 * 1658))  # 5.001, still above the floor
    assert sched.value_at(1659) == 5.0  # 4.998 -> clamped
    assert sched.value_at(28000) == 5.0
    custom = LambdaSchedule(base=1500, gamma=0.1, power=2, lambda_min=1)
    assert custom.value_at(10) == pytest.approx(1500 / 2.0**2)
    for _ in range(500):
        sched.step()
    restored = LambdaSchedule(base=1.0)
    restored.load_state_dict(sched.state_dict())
    assert restored.iteration == 500 and restored.value == pytest.approx(1000.0 / 61.0)


def test_regularizer_gradient_matches_kobayashi_eq12():
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(7, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 0])
    lamb = 0.3
    (g,) = torch.autograd.grad(large_margin_regularizer(z, y, lamb), z)
    c = z.shape[1]
    expected = torch.zeros_like(g)
    for i in range(z.shape[0]):
        others = [j for j in range(c) if j != y[i]]
        q = torch.softmax(z[i, others].detach(), 0)
        neg_h = (q * q.log()).sum()
        # eq. 12: dR/dz_j = (lamb/2) [q_j (1 + log q_j - sum_c q_c log q_c) - 1/(C-1)], 0 for the target
        expected[i, others] = 0.5 * lamb * (q * (1 + q.log() - neg_h) - 1.0 / (c - 1)) / z.shape[0]
    assert torch.allclose(g, expected, atol=1e-12)
    assert g[torch.arange(7), y].abs().max() == 0


def test_regularizer_is_zero_iff_non_target_logits_are_equal():
    z = torch.tensor([[5.0, 1.0, 1.0, 1.0], [0.0, 2.0, -1.0, 3.0]])
    y = torch.tensor([0, 0])
    per_row = [large_margin_regularizer(z[i : i + 1], y[i : i + 1], 1.0).item() for i in range(2)]
    assert per_row[0] == pytest.approx(0.0, abs=1e-7)
    q = torch.softmax(torch.tensor([2.0, -1.0, 3.0]), 0)
    u = 1 / 3
    kl = (q * (q / u).log()).sum() + (u * (u / q).log()).sum()  # symmetric KL(q||u) + KL(u||q)
    assert per_row[1] == pytest.approx(0.5 * kl.item(), rel=1e-5)
    loss = MarginLoss(reg_lambda=0.3)
    out = SoftmaxHead(3, 4)(torch.randn(2, 3), y)
    assert loss(out, y) > F.cross_entropy(out.logits, y)


def _unit_case():
    """Embedding at angle 0; class 0 at 60 degrees, class 1 at 90, class 2 at 180."""
    x = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    w = torch.tensor([[0.5, math.sqrt(3) / 2], [0.0, 3.0], [-0.5, 0.0]], dtype=torch.float64)
    return x, w


def _with_weight(head, w):
    head = head.double()
    head.weight.data.copy_(w)
    return head


def test_normface_cosface_arcface_hand_computed():
    x, w = _unit_case()
    y = torch.tensor([0])
    nf = _with_weight(NormFaceHead(2, 3, s=10.0), w)(x, y)
    assert torch.allclose(nf.logits, torch.tensor([[5.0, 0.0, -10.0]], dtype=torch.float64))
    cf = _with_weight(CosFaceHead(2, 3, s=10.0, m=0.35), w)(x, y)
    assert torch.allclose(cf.logits, torch.tensor([[1.5, 0.0, -10.0]], dtype=torch.float64))  # 10 (0.5 - 0.35)
    assert torch.allclose(cf.cos_logits, nf.logits)
    af = _with_weight(ArcFaceHead(2, 3, s=10.0, m=0.5), w)(x, y)
    # 10 cos(pi/3 + 0.5) = 10 * 0.0235966
    assert torch.allclose(af.logits, torch.tensor([[0.2359658529090959, 0.0, -10.0]], dtype=torch.float64))
    assert torch.allclose(af.cos_logits, nf.logits)


def test_arcface_theta_plus_m_beyond_pi_and_easy_margin():
    theta = math.radians(170.0)  # theta + 0.5 rad > pi
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    w = torch.tensor([[math.cos(theta), math.sin(theta)], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0])
    hard = _with_weight(ArcFaceHead(2, 2, s=1.0, m=0.5), w)(x, y).logits[0, 0].item()
    assert hard == pytest.approx(-1.2245205223143096)  # cos(170 deg) - 0.5 sin(0.5)
    easy = _with_weight(ArcFaceHead(2, 2, s=1.0, m=0.5, easy_margin=True), w)(x, y).logits[0, 0].item()
    assert easy == pytest.approx(-0.984807753012208)  # cos(theta) < 0: no margin
    # the fallback keeps the target logit monotonic in theta
    head = ArcFaceHead(2, 2, s=1.0, m=0.5)
    cos = torch.cos(torch.linspace(0, math.pi, 5001, dtype=torch.float64))
    t = head.target_cos(cos)
    assert (t[1:] - t[:-1] <= 1e-12).all()


def test_heads_compute_in_float32_under_bf16_autocast():
    head = ASoftmaxHead(8, 5, m=4, lamb=5.0)
    x, y = torch.randn(4, 8), torch.randint(0, 5, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x.bfloat16(), y)
    assert out.logits.dtype == torch.float32
