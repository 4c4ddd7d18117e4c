"""The spectral floor of detectors.profiles against pure uint8 rounding noise; the DC ring's role."""

from __future__ import annotations

import math

import pytest
import torch

from detectors.features import radial_profile
from detectors.profiles import (
    LUMA_NOISE_GAIN,
    QUANTISATION_FLOOR,
    mean_log_power_of_noise,
    normalize_profile,
)


def _rounding_noise(n: int = 64, size: int = 64, seed: int = 0) -> torch.Tensor:
    """The error uint8 rounding adds to images in [0, 1]: round(255 x) / 255 - x, per channel."""
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.round(x * 255) / 255 - x


def test_floor_constants():
    assert LUMA_NOISE_GAIN == pytest.approx(0.299**2 + 0.587**2 + 0.114**2)
    assert LUMA_NOISE_GAIN == pytest.approx(0.447, abs=1e-3)
    # Without the EPS of log_power, the mean log of an exponential variable is log(mean) - gamma.
    assert mean_log_power_of_noise(2.0, eps=1e-30) == pytest.approx(math.log(2.0) - 0.5772157, abs=1e-6)
    assert QUANTISATION_FLOOR == pytest.approx(-14.87, abs=0.01)


def test_mean_log_power_of_noise_matches_sampling():
    p = torch.distributions.Exponential(torch.tensor(1 / 3e-7, dtype=torch.float64)).sample((400_000,))
    assert torch.log(p + 1e-8).mean().item() == pytest.approx(mean_log_power_of_noise(3e-7), abs=0.01)


def test_pure_rounding_noise_sits_at_the_floor_in_every_ring_but_dc():
    rings = radial_profile(_rounding_noise(), nyquist=True)[:, 1:]  # ring 0 is DC (one real bin)
    per_ring = rings.mean(0)
    # Each ring's mean over 64 images, and the mean over rings, at the floor.
    assert per_ring.mean().item() == pytest.approx(QUANTISATION_FLOOR, abs=0.02)
    assert (per_ring - QUANTISATION_FLOOR).abs().max().item() < 0.1
    # The floor before this release, log(q^2 / 12), lay 1.3 above where the noise is.
    old = math.log((1 / 255) ** 2 / 12)
    assert per_ring.mean().item() == pytest.approx(old - 1.30, abs=0.03)


def test_the_dc_ring_sets_the_scale_so_brightness_counts():
    # A smooth image and a darker copy (contrast kept: the same image minus a constant offset
    # changes only DC). Min-max maps DC to 1 in both, so the other rings move.
    g = torch.Generator().manual_seed(1)
    base = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 36, 36, generator=g, dtype=torch.float64), 5, 1)[..., :32, :32]
    bright, dark = base * 0.5 + 0.45, base * 0.5 + 0.05
    pb = normalize_profile(radial_profile(bright, nyquist=True))
    pd = normalize_profile(radial_profile(dark, nyquist=True))
    assert torch.allclose(pb[:, 0], torch.ones(4, dtype=pb.dtype)) and torch.allclose(pd[:, 0], torch.ones(4, dtype=pd.dtype))
    raw_b, raw_d = radial_profile(bright, nyquist=True), radial_profile(dark, nyquist=True)
    assert torch.allclose(raw_b[:, 1:], raw_d[:, 1:])  # same rings apart from DC ...
    # ... yet normalised they differ: rings / (DC - min), and the darker image's DC is lower.
    lo = raw_b.clamp_min(QUANTISATION_FLOOR).amin(1, keepdim=True)
    scale = (raw_b[:, :1] - lo) / (raw_d[:, :1] - lo)
    assert torch.allclose(pd[:, 1:], pb[:, 1:] * scale, atol=1e-9)
    assert (scale > 1.05).all()
