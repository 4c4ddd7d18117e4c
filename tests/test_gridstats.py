"""haargrid / gridprint: Haar detail statistics of 2x2 cells at the four grid offsets, on hand-made images."""

from __future__ import annotations

import math

import torch

from detectors.features import extract
from detectors.gridstats import HAARGRID_EPS, haar_grid_stats


def test_a_horizontal_ramp_has_only_the_horizontal_band_with_a_known_value():
    # x[c, i, j] = j / 255: in every cell a - b = c - d = -1/255, so HL = -1/255 and LH = HH = 0, at any offset.
    ramp = torch.arange(16, dtype=torch.float64).expand(1, 3, 16, 16) / 255
    s = haar_grid_stats((ramp * 255).round().to(torch.uint8))  # (N, offset, channel, statistic, band)
    assert s.shape == (1, 4, 3, 2, 3)
    torch.testing.assert_close(s[0, :, :, 0, 1], torch.full((4, 3), math.log(1 / 255**2 + HAARGRID_EPS)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s[0, :, :, 1, 1], torch.full((4, 3), math.log(1 / 255 + HAARGRID_EPS)), rtol=1e-5, atol=1e-5)
    assert (s[0, :, :, :, 0] < -20).all() and (s[0, :, :, :, 2] < -20).all()  # LH, HH: zero up to float rounding


def test_nearest_upsampling_empties_its_own_grid_only():
    g = torch.Generator().manual_seed(0)
    small = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8)
    up = small.repeat_interleave(2, -2).repeat_interleave(2, -1)
    s = haar_grid_stats(up)
    assert torch.allclose(s[:, 0], torch.tensor(math.log(HAARGRID_EPS)))  # offset (0, 0): every cell is constant
    assert (s[:, 3] > -10).all()  # offset (1, 1): cells straddle four source pixels


def test_white_noise_looks_the_same_at_every_offset():
    g = torch.Generator().manual_seed(1)
    noise = torch.randint(0, 256, (8, 3, 128, 128), generator=g, dtype=torch.uint8)
    s = haar_grid_stats(noise).mean(0)  # over 8 images of 4,096 cells each
    assert (s - s[:1]).abs().max() < 0.05  # log energies and levels within 5 % of each other


def test_feature_lengths():
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    assert extract("haargrid", x).shape == (2, 72)
    assert extract("gridprint", x).shape == (2, extract("xy", x).shape[1] + 72)
