"""GAN losses against values worked out by hand and against torch's own BCE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gans.losses import LOSSES, check_loss, d_loss, g_loss

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_hinge_by_hand():
    # D: mean(relu(1 - [2, -1])) = mean(0, 2) = 1; mean(relu(1 + [0.5, -3])) = mean(1.5, 0) = 0.75.
    assert d_loss("hinge", REAL, FAKE).item() == pytest.approx(1.75)
    assert g_loss("hinge", FAKE).item() == pytest.approx(1.25)  # -mean(0.5, -3)


def test_bce_by_hand():
    # -log(sigmoid(x)) = log(1 + e^-x); -log(1 - sigmoid(x)) = log(1 + e^x).
    d = (_softplus(-2.0) + _softplus(1.0)) / 2 + (_softplus(0.5) + _softplus(-3.0)) / 2
    g = (_softplus(-0.5) + _softplus(3.0)) / 2
    assert d_loss("bce", REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert g_loss("bce", FAKE).item() == pytest.approx(g, rel=1e-6)


def test_lsgan_by_hand():
    # 0.5 * (mean((2-1)^2, (-1-1)^2) + mean(0.5^2, 3^2)) = 0.5 * (2.5 + 4.625)
    assert d_loss("lsgan", REAL, FAKE).item() == pytest.approx(3.5625)
    assert g_loss("lsgan", FAKE).item() == pytest.approx(0.5 * (0.25 + 16.0) / 2)


def test_bce_equals_torch_reference_and_stays_finite_for_extreme_logits():
    real = torch.tensor([-80.0, 0.3, 90.0])
    fake = torch.tensor([85.0, -0.7, -95.0])
    ref_d = F.binary_cross_entropy_with_logits(real, torch.ones(3)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros(3)
    )
    ref_g = F.binary_cross_entropy_with_logits(fake, torch.ones(3))
    assert torch.allclose(d_loss("bce", real, fake), ref_d)
    assert torch.allclose(g_loss("bce", fake), ref_g)
    assert torch.isfinite(d_loss("bce", real, fake))


def test_bce_generator_loss_is_non_saturating():
    # When D confidently rejects a fake (logit -20) the non-saturating loss still pushes with a
    # gradient of -sigmoid(20) / N ~ -1/N; the saturating log(1 - sigmoid) would give ~ 0.
    fake = torch.tensor([-20.0, -20.0], requires_grad=True)
    g_loss("bce", fake).backward()
    assert torch.allclose(fake.grad, torch.full((2,), -0.5), atol=1e-6)


def test_logit_shapes_n_and_n1_agree():
    assert d_loss("hinge", REAL[:, None], FAKE[:, None]).item() == pytest.approx(1.75)
    assert g_loss("bce", FAKE[:, None]).item() == pytest.approx(g_loss("bce", FAKE).item())


def test_unknown_loss_lists_names():
    with pytest.raises(ValueError, match="Unknown loss 'wgan-gp'") as err:
        g_loss("wgan-gp", FAKE)
    for name in LOSSES:
        assert name in str(err.value)
    assert check_loss("hinge") == "hinge"
    with pytest.raises(ValueError, match="non-empty"):
        d_loss("bce", torch.zeros(0), FAKE)
