"""Diversity of a fake set relative to the real set: analytic cases and the collapse warning."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import smooth_images

from detectors.diversity import (
    DIVERSITY_WARNING,
    collapsed,
    diversity,
    lowpass_pixels,
    mean_pairwise_distance,
)


def test_identical_samples_score_zero():
    real = smooth_images(16, 32, seed=1)
    same = real[3:4].expand(20, -1, -1, -1).contiguous()
    d = diversity(same, real)
    assert d["diversity"] == 0.0 and d["pairwise_fake"] == 0.0 and collapsed(d["diversity"])


def test_real_against_itself_scores_one():
    real = smooth_images(24, 32, seed=2)
    assert diversity(real, real)["diversity"] == 1.0
    # A subset of n drawn with the same seed is the same subset: still exactly 1.
    assert diversity(real, real, n=10)["diversity"] == 1.0


def test_mean_pairwise_distance_by_hand():
    # Three flat grey images at 0, 0.5 and 1 (uint8 0, ~127.5 -> use float): low-pass keeps them
    # flat; distances between flat images a, b over 3 * 8 * 8 values are |a - b| * sqrt(192).
    x = torch.stack([torch.full((3, 32, 32), v) for v in (0.0, 0.5, 1.0)])
    pairs = [0.5, 1.0, 0.5]
    assert mean_pairwise_distance(x) == pytest.approx(sum(pairs) / 3 * math.sqrt(192))


def test_lowpass_ignores_per_sample_checkerboards():
    # One layout plus a different high-frequency checkerboard per sample: raw pixels vary, the
    # 4x4 area means do not, so the set is (correctly) scored as collapsed.
    base = torch.full((3, 32, 32), 0.5)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((yy + xx) % 2).float() * 2 - 1
    fakes = torch.stack([base + 0.2 * s * checker for s in torch.linspace(-1, 1, 12)])
    assert lowpass_pixels(fakes).shape == (12, 3 * 8 * 8)
    real = smooth_images(16, 32, seed=3)
    assert diversity(fakes, real)["diversity"] < 1e-6
    assert mean_pairwise_distance(fakes, size=32) > 0.1  # plain pixels would call it diverse


def test_warning_level_and_errors():
    assert collapsed(DIVERSITY_WARNING - 1e-9) and not collapsed(DIVERSITY_WARNING)
    with pytest.raises(ValueError, match="at least 2 images"):
        mean_pairwise_distance(smooth_images(1, 32, seed=0))
    flat = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="real images are all identical"):
        diversity(smooth_images(4, 32, seed=0), flat)
