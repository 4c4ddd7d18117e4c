"""Native-resolution patch scoring: grid positions, alignment, aggregation, fitting and scoring on patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_images

from detectors import features
from detectors.detector import Detector
from detectors.patches import aggregate, check_patches, crop_patches, grid_offsets


def test_grid_offsets_are_spread_evenly_and_aligned():
    assert grid_offsets(1024, 128, 4) == [0, 298, 596, 896]  # 0, 298.67, 597.33, 896 rounded down to even
    assert grid_offsets(1024, 128, 4, align=8) == [0, 296, 592, 896]
    assert grid_offsets(100, 32, 1) == [34] and grid_offsets(100, 32, 1, align=8) == [32]  # the aligned centre
    assert grid_offsets(33, 32, 3) == [0, 0, 0]
    for length, size, k, align in [(1000, 96, 5, 2), (517, 64, 3, 8), (129, 128, 2, 2)]:
        offs = grid_offsets(length, size, k, align)
        assert all(o % align == 0 and 0 <= o <= length - size for o in offs)
    with pytest.raises(ValueError, match="does not fit"):
        grid_offsets(100, 128, 2)


def test_crops_are_the_right_pixels_image_major():
    # Every pixel holds its own coordinates, so a crop says where it came from.
    h, w = 40, 50
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = torch.stack([yy, xx, yy * 0], 0)[None].repeat(2, 1, 1, 1).to(torch.uint8)
    img[1, 2] = 7  # tell the two images apart
    crops = crop_patches(img, 16, 4)
    assert crops.shape == (8, 3, 16, 16)
    rows, cols = grid_offsets(h, 16, 2), grid_offsets(w, 16, 2)
    assert rows == [0, 24] and cols == [0, 34]
    for i, (r, c) in enumerate([(r, c) for r in rows for c in cols]):
        for n in range(2):
            patch = crops[n * 4 + i]
            assert patch[0, 0, 0] == r and patch[1, 0, 0] == c and patch[2, 0, 0] == (7 if n else 0)


def test_aggregation_is_the_mean_of_logits_or_the_max():
    s = np.array([0.9, 0.5, 0.1, 0.5, 0.99, 0.2, 0.2, 0.2])
    logit = np.log(s / (1 - s))
    expected = 1 / (1 + np.exp(-logit.reshape(2, 4).mean(1)))
    np.testing.assert_allclose(aggregate(s, 4), expected)
    np.testing.assert_allclose(aggregate(s, 4)[0], 0.5)  # logits 2.197, 0, -2.197, 0 cancel
    np.testing.assert_allclose(aggregate(s, 4, "max"), [0.9, 0.99])
    np.testing.assert_allclose(aggregate(np.array([0.0, 1.0]), 2), 0.5)  # clipped, finite
    for bad, msg in [((3,), "square number"), ((4, "median"), "Unknown patch aggregation"), ((4, "mean", 0), "patch_align")]:
        with pytest.raises(ValueError, match=msg):
            check_patches(*bad)


def _upsampled(n: int, size: int, seed: int) -> torch.Tensor:
    """Nearest-2x upsampled smooth images plus a little noise: a 2x2-grid trace everywhere."""
    small = smooth_images(n, size // 2, seed=seed).float()
    up = small.repeat_interleave(2, -2).repeat_interleave(2, -1)
    g = torch.Generator().manual_seed(seed)
    return (up + 2 * torch.randn(up.shape, generator=g)).clamp(0, 255).to(torch.uint8)


def test_detector_fits_and_scores_on_patches_in_one_batched_feature_pass(monkeypatch, tmp_path):
    real, fake = smooth_images(40, 64, seed=1), _upsampled(40, 64, seed=2)
    det = Detector("periodicity:lr", patches=4, patch_size=32).fit(real[:30], fake[:30])
    assert det.resolution == (32, 32)
    calls = []
    original = features.FEATURES["periodicity"]

    def spy(images, **kw):
        calls.append(images.shape[0])
        return original(images, **kw)

    monkeypatch.setitem(features.FEATURES, "periodicity", spy)
    test = torch.cat([real[30:], fake[30:]])  # 20 images of 64 px -> 80 patches of 32 px
    s = det.score(test)
    assert s.shape == (20,) and sum(calls) == 80 and len(calls) == 2  # 64-image chunks, nothing recomputed
    # The image score is the mean-of-logits of the patch scores.
    plain = Detector("periodicity:lr")
    plain.classifier, plain.fitted, plain.resolution = det.classifier, True, (32, 32)
    per_patch = plain.score(crop_patches(test, 32, 4))
    np.testing.assert_allclose(s, aggregate(per_patch, 4), rtol=1e-6)
    assert (s[10:] > s[:10].max()).all()
    det.save(tmp_path / "d")
    np.testing.assert_allclose(Detector.load(tmp_path / "d").score(test), s)
    with pytest.raises(ValueError, match="at least 32 px"):
        det.score(real[:2, :, :16, :16])
    with pytest.raises(ValueError, match="patches needs patch_size"):
        Detector("periodicity:lr", patches=4)


def test_real_only_on_patches():
    real, fake = smooth_images(60, 64, seed=3), _upsampled(20, 64, seed=4)
    det = Detector("periodicity:deviation", patches=4, patch_size=32).fit(real[:40], None)
    assert det.validation["real_only"] and det.validation["n_real"] == 8
    s = det.score(torch.cat([real[40:], fake]))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(np.r_[np.zeros(20), np.ones(20)], s) > 0.9
