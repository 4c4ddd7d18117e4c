"""Wang et al. augmentation and the deterministic blur/JPEG perturbations, checked against known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_images
from scipy.ndimage import gaussian_filter

from detectors.augment import Augmentation, augment, blur, flip, gaussian_kernels, jpeg
from detectors.features import radial_profile


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).square().mean()
    return float(10 * torch.log10(255.0**2 / mse))


def _grey(n: int = 16, size: int = 32) -> torch.Tensor:
    """Photo-like images with little chroma detail (JPEG subsamples chroma, as real photos allow)."""
    g = smooth_images(n, size, seed=3)[:, :1].float()
    tint = torch.tensor([1.0, 0.9, 0.8]).view(1, 3, 1, 1)
    return (g * tint).round().to(torch.uint8)


def test_gaussian_kernels_are_normalised_and_sigma0_is_an_impulse():
    k = gaussian_kernels(torch.tensor([0.0, 1.0, 2.5]), radius=6)
    assert torch.allclose(k.sum(1), torch.ones(3, dtype=k.dtype))
    assert k[0, 6] == 1.0 and k[0].count_nonzero() == 1
    assert torch.equal(k[1], k[1].flip(0))  # symmetric


def test_blur_sigma0_is_identity(real_images):
    assert torch.equal(blur(real_images, 0.0), real_images)
    x = real_images.float() / 255
    assert torch.equal(blur(x, 0.0), x)
    # per-image sigmas: the zero-sigma images stay untouched
    sig = torch.tensor([0.0, 2.0] * 32)
    out = blur(real_images, sig)
    assert torch.equal(out[0::2], real_images[0::2])
    assert not torch.equal(out[1::2], real_images[1::2])


def test_blur_keeps_a_constant_image_constant():
    x = torch.full((2, 3, 20, 24), 137, dtype=torch.uint8)
    assert torch.equal(blur(x, 2.7), x)
    xf = torch.full((2, 3, 20, 24), 0.3)
    assert torch.allclose(blur(xf, 1.3), xf, atol=1e-6)


def test_blur_matches_scipy_gaussian_filter():
    x = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = blur(x, 1.0)
    # torch 'reflect' padding is scipy's 'mirror'; both truncate at 3 sigma (radius 3).
    ref = gaussian_filter(x.numpy(), sigma=(0, 0, 1.0, 1.0), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-10)


def test_blur_removes_high_frequency_energy():
    noise = torch.randint(0, 256, (8, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    hi = slice(12, None)  # radii above 3/4 of Nyquist
    p0 = radial_profile(noise)[:, hi].mean()
    p1 = radial_profile(blur(noise, 1.0))[:, hi].mean()
    p2 = radial_profile(blur(noise, 2.0))[:, hi].mean()
    # log power: a Gaussian with sigma 1 damps radius >= 12 of 32 by far more than e^2
    assert p1 < p0 - 2.0
    assert p2 < p1
    # low frequencies are kept (the lowest non-DC radii barely move)
    lo0, lo1 = radial_profile(noise)[:, 1:3].mean(), radial_profile(blur(noise, 1.0))[:, 1:3].mean()
    assert abs(float(lo1 - lo0)) < 0.5


def test_blur_per_image_sigma_equals_separate_calls(real_images):
    x = real_images[:4]
    sig = [0.5, 1.0, 2.0, 3.0]
    together = blur(x, sig)
    # radius depends on the largest sigma, so compare with the float path at a tolerance of one level
    for i, s in enumerate(sig):
        assert (together[i].int() - blur(x[i : i + 1], s)[0].int()).abs().max() <= 1


def test_blur_rejects_negative_sigma(real_images):
    with pytest.raises(ValueError, match="sigma"):
        blur(real_images, -1.0)


def test_jpeg_quality_100_is_near_identity_and_30_is_lossier():
    x = _grey()
    q100, q90, q30 = jpeg(x, 100), jpeg(x, 90), jpeg(x, 30)
    assert q100.dtype == torch.uint8 and q100.shape == x.shape
    assert _psnr(q100, x) > 40
    assert _psnr(q30, x) < _psnr(q90, x) < _psnr(q100, x)
    assert _psnr(q30, x) < 40


def test_jpeg_float_input_gives_float_in_unit_range():
    x = _grey(4)
    xf = x.float() / 255
    out = jpeg(xf, 50)
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert torch.equal((out * 255).round().to(torch.uint8), jpeg(x, 50))


def test_jpeg_per_image_quality_equals_separate_calls():
    x = _grey(4)
    q = [30, 100, 30, 75]
    out = jpeg(x, q)
    for i, qi in enumerate(q):
        assert torch.equal(out[i], jpeg(x[i : i + 1], qi)[0])


@pytest.mark.parametrize("bad", [0, 101, 50.5])
def test_jpeg_rejects_bad_quality(bad):
    with pytest.raises(ValueError, match="quality"):
        jpeg(_grey(1), bad)


def test_flips_are_exact(real_images):
    f = flip(real_images)
    assert torch.equal(f[..., 0], real_images[..., -1])
    assert torch.equal(f[..., 5], real_images[..., 32 - 1 - 5])
    assert torch.equal(flip(f), real_images)
    # flip only, with certainty
    out = augment(real_images, p=0.0, flip_p=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, f)


def test_p0_is_identity(real_images):
    assert torch.equal(augment(real_images, p=0.0, generator=torch.Generator().manual_seed(0)), real_images)
    x = real_images.float() / 255
    assert torch.equal(augment(x, p=0.0), x)


def test_seeded_augmentation_is_reproducible_and_hits_about_p(real_images):
    x = smooth_images(120, 32, seed=5)
    a = augment(x, p=0.5, generator=torch.Generator().manual_seed(7))
    b = augment(x, p=0.5, generator=torch.Generator().manual_seed(7))
    c = augment(x, p=0.5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # flip, blur and JPEG each with p = 0.5: an image stays unchanged with probability 1/8
    # (almost: JPEG at high quality or a tiny sigma can leave an image as it was).
    changed = (a != x).flatten(1).any(1).float().mean()
    assert 0.75 < float(changed) < 0.97
    assert a.dtype == torch.uint8 and a.shape == x.shape


def test_float_batch_stays_in_range_and_dtype():
    x = smooth_images(8, 32, seed=2).float() / 255
    out = augment(x, p=1.0, generator=torch.Generator().manual_seed(0))
    assert out.dtype == x.dtype and out.shape == x.shape
    assert 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize("kw", [{"p": 1.5}, {"p": -0.1}, {"flip_p": 2.0}, {"quality": (0, 100)}, {"sigma_max": -1}])
def test_augmentation_rejects_bad_settings(kw):
    with pytest.raises(ValueError):
        Augmentation(**kw)
