"""Spectral profile, spectral discriminator and Durall et al.'s regulariser: analytic values,
invariances, and gradients that reach the generator through the FFT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import smooth_images

from detectors.features import radial_profile
from detectors.fidelity import normalize_profile
from detectors.profiles import QUANTISATION_FLOOR
from gans.losses import d_loss, g_loss
from gans.networks import build_generator
from gans.spectral import (
    SpectralDiscriminator,
    profile_length,
    real_mean_profile,
    spectral_profile,
    spectral_regularization,
)
from gans.upsamplers import Interpolate

EPS = 1e-8  # detectors.features adds it to the power before the log


def _grating(n: int, fy: int, fx: int, amp: float = 0.8) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    img = amp * torch.cos(2 * math.pi * (fy * yy + fx * xx) / n)
    return img.expand(1, 3, n, n)  # grey: every channel equal, values in [-1, 1]


def test_profile_of_a_grating_matches_the_analytic_spectrum():
    n = 32
    p = spectral_profile(_grating(n, 3, 4))[0].numpy()  # frequency (3, 4): radius exactly 5
    # In [0, 1] the image is 0.5 + 0.4 cos(...). Orthonormal DFT: DC = 0.5 * n, the two peaks at
    # +-(3, 4) have magnitude 0.4 * n / 2, every other bin is 0 (log EPS). Ring means average
    # log power over all bins of the same rounded radius; the profile stops at the Nyquist
    # radius n / 2 and is floored at the uint8 quantisation noise (detectors.profiles.QUANTISATION_FLOOR).
    f = np.fft.fftfreq(n, 1.0 / n)
    radius = np.round(np.hypot(f[:, None], f[None, :]))
    n5 = int((radius == 5).sum())
    raw = np.full(n // 2 + 1, np.log(EPS))
    raw[0] = np.log((0.5 * n) ** 2 + EPS)
    raw[5] = (2 * np.log((0.2 * n) ** 2 + EPS) + (n5 - 2) * np.log(EPS)) / n5
    raw = np.maximum(raw, QUANTISATION_FLOOR)
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    assert p.shape == (profile_length(n),) == (17,)
    assert np.allclose(p, expected, atol=1e-5)
    # Ring 5 holds two peak bins among ~30 empty ones: its mean log power lies below the
    # quantisation floor, so it is floored like every other ring (the DC term alone stands out).
    ring5 = (2 * np.log((0.2 * n) ** 2 + EPS) + (n5 - 2) * np.log(EPS)) / n5
    assert ring5 < QUANTISATION_FLOOR and p[0] == 1.0 and np.allclose(p[1:], 0.0, atol=1e-6)


def test_profile_is_in_unit_range_and_shift_invariant():
    x = smooth_images(6, 32, seed=3).float() / 127.5 - 1
    p = spectral_profile(x)
    assert p.shape == (6, profile_length(32))
    assert torch.allclose(p.amin(1), torch.zeros(6)) and torch.allclose(p.amax(1), torch.ones(6))
    # The power spectrum ignores circular shifts.
    shifted = torch.roll(x, shifts=(5, -11), dims=(2, 3))
    assert torch.allclose(spectral_profile(shifted), p, atol=1e-4)


def test_float_and_uint8_inputs_agree_with_the_detector_feature():
    u8 = smooth_images(4, 32, seed=4)
    x = u8.float() / 127.5 - 1  # the generator's [-1, 1] range
    # One rule for the loss and the fidelity metric: the detectors' radial profile to Nyquist,
    # floored at the uint8 quantisation noise and min-max scaled by the metric's function.
    expected = normalize_profile(radial_profile(u8, nyquist=True))
    # float32 rounding differs between the two paths; min-max scaling of log power of nearly
    # empty bins magnifies it to ~1e-5.
    assert torch.allclose(spectral_profile(x), expected, atol=1e-4)
    assert torch.allclose(spectral_profile(u8), expected)


def test_profile_is_float32_under_bf16_autocast():
    x = smooth_images(4, 32, seed=5).float() / 127.5 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = spectral_profile(x)
    assert p.dtype == torch.float32 and torch.allclose(p, spectral_profile(x))


def test_profile_gradient_matches_finite_differences_on_pixels():
    # float64 end to end (features follow the input dtype) so central differences are exact to
    # ~1e-8. White-noise images keep every frequency bin away from zero power.
    torch.manual_seed(0)
    x = (torch.rand(2, 3, 16, 16, dtype=torch.float64) - 0.5).requires_grad_(True)
    w = torch.randn(profile_length(16), dtype=torch.float64)

    def loss(img):  # a known quadratic of the profile
        return ((spectral_profile(img) - 0.3) ** 2 * w).sum()

    assert spectral_profile(x).dtype == torch.float64
    loss(x).backward()
    h = 1e-6
    for idx in [(0, 0, 3, 5), (1, 2, 10, 1), (0, 1, 15, 15)]:
        e = torch.zeros_like(x)
        e[idx] = h
        with torch.no_grad():
            fd = (loss(x + e) - loss(x - e)).item() / (2 * h)
        assert x.grad[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)
    assert x.grad.abs().min() > 0


def _flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in params])


def _directional_fd(params: list[torch.Tensor], direction: torch.Tensor, fn, h: float) -> float:
    """Central difference of ``fn`` along ``direction`` in the flattened parameter space."""
    chunks = direction.split([p.numel() for p in params])
    with torch.no_grad():
        for p, d in zip(params, chunks, strict=True):
            p.add_(h * d.view_as(p))
        plus = fn().item()
        for p, d in zip(params, chunks, strict=True):
            p.sub_(2 * h * d.view_as(p))
        minus = fn().item()
        for p, d in zip(params, chunks, strict=True):
            p.add_(h * d.view_as(p))
    return (plus - minus) / (2 * h)


def _check_generator_gradient(g: torch.nn.Module, fn) -> None:
    """d(loss)/d(generator weights) is non-zero in every upsampling layer and matches finite
    differences: the FFT did not cut the graph (the bug of versions that detach)."""
    params = list(g.parameters())
    g.zero_grad()
    fn().backward()
    for name, p in g.named_parameters():
        if name.startswith(("ups.", "blocks.")) and name.endswith("weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    grad = _flat_grad(params)
    norm = grad.norm().item()
    assert math.isfinite(norm) and norm > 0
    # Along the gradient direction the directional derivative equals the gradient norm; along
    # a random direction v it equals grad . v. In float64 with a tiny step, the per-image
    # min-max (piecewise smooth) does not switch its argmin/argmax.
    assert _directional_fd(params, grad / norm, fn, h=1e-6) == pytest.approx(norm, rel=1e-3)
    v = torch.randn(grad.shape, generator=torch.Generator().manual_seed(0), dtype=grad.dtype)
    v /= v.norm()
    assert _directional_fd(params, v, fn, h=1e-6) == pytest.approx((grad @ v).item(), rel=1e-3)


def test_spectral_regularization_sends_gradient_into_the_generator():
    torch.manual_seed(0)
    g = build_generator("dcgan", 32, "bed_of_nails", z_dim=16, width=4).double()
    z = torch.randn(16, 16, dtype=torch.float64)
    target = real_mean_profile(smooth_images(32, 32, seed=0)).double()
    _check_generator_gradient(g, lambda: spectral_regularization(g(z), target))


def test_spectral_discriminator_sends_gradient_into_the_generator():
    torch.manual_seed(0)
    g = build_generator("sngan", 32, "nearest", z_dim=16, width=2).double()
    sd = SpectralDiscriminator(32).double()
    z = torch.randn(16, 16, dtype=torch.float64)
    _check_generator_gradient(g, lambda: g_loss("bce", sd(g(z))))


def test_float32_generator_gets_spectral_gradients_in_training_precision():
    torch.manual_seed(0)
    g = build_generator("dcgan", 32, "transposed", z_dim=16, width=4)
    sd = SpectralDiscriminator(32, hidden=8)
    target = real_mean_profile(smooth_images(16, 32, seed=1))
    fake = g(torch.randn(8, 16))
    (spectral_regularization(fake, target) + g_loss("hinge", sd(fake))).backward()
    last = g.ups[-1].weight.grad
    assert last is not None and torch.isfinite(last).all() and last.abs().sum() > 0


def test_spectral_regularization_is_bce_and_minimal_at_the_target():
    x = (smooth_images(8, 32, seed=7).float() / 127.5 - 1).requires_grad_(True)
    own = spectral_profile(x).mean(0).detach()
    target = real_mean_profile(smooth_images(16, 32, seed=8))
    # Value: the binary cross-entropy of the mean profile against the real one, by numpy.
    p = np.clip(own.double().numpy(), 1e-6, 1 - 1e-6)
    t = target.double().numpy()
    bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert spectral_regularization(x, target).item() == pytest.approx(bce, rel=1e-4)
    # BCE(p, t) is minimised at p = t: with the batch's own mean profile as the target the
    # gradient vanishes (it would not if prediction and target were swapped).
    spectral_regularization(x, own).backward()
    assert x.grad.abs().max().item() < 1e-4
    x.grad = None
    spectral_regularization(x, target).backward()
    assert x.grad.abs().max().item() > 1e-3


def test_real_mean_profile_is_the_mean_over_batches():
    u8 = smooth_images(10, 32, seed=9)
    whole = spectral_profile(u8).mean(0)
    assert torch.allclose(real_mean_profile(u8, batch_size=3), whole, atol=1e-6)
    assert torch.allclose(real_mean_profile(u8.float() / 127.5 - 1), whole, atol=1e-5)


def test_spectral_discriminator_separates_zero_insertion_from_bilinear():
    # Zero insertion copies the baseband spectrum to the high frequencies; bilinear damps them.
    # A spectral classifier must learn this from a few steps and generalise to new images.
    # (100 steps: floored at the quantisation noise and cut at Nyquist -- where zero insertion's
    # strongest replica, the DC copy at the corner (16, 16), is no longer seen -- the profiles
    # differ by ~0.1 instead of ~0.5, so a linear classifier needs more steps than with the
    # papers' full, unfloored profile.)
    small = smooth_images(48, 16, seed=2).float() / 127.5 - 1
    nails = Interpolate("bed_of_nails")(small)
    smooth = Interpolate("bilinear")(small)
    torch.manual_seed(0)
    sd = SpectralDiscriminator(32)
    opt = torch.optim.Adam(sd.parameters(), lr=0.05)
    start = d_loss("bce", sd(smooth[:32]), sd(nails[:32])).item()
    for _ in range(100):
        loss = d_loss("bce", sd(smooth[:32]), sd(nails[:32]))  # bilinear plays "real"
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * start
    with torch.no_grad():
        assert (sd(smooth[32:]) > 0).all() and (sd(nails[32:]) < 0).all()


def test_spectral_discriminator_mlp_and_errors():
    x = smooth_images(3, 32, seed=10).float() / 127.5 - 1
    mlp = SpectralDiscriminator(32, hidden=16)
    assert mlp(x).shape == (3,)
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 3, 64, 64\)"):
        SpectralDiscriminator(64)(x)
    with pytest.raises(ValueError, match="hidden must be None"):
        SpectralDiscriminator(32, hidden=0)
    with pytest.raises(ValueError, match="same resolution"):
        spectral_regularization(x, real_mean_profile(smooth_images(2, 64)))
    with pytest.raises(ValueError, match="non-empty"):
        real_mean_profile(torch.zeros(0, 3, 32, 32, dtype=torch.uint8))


def test_profile_stops_at_nyquist_radius():
    # Reference: numpy's full 2D FFT, ring means of log power by rounded radius, radii 0..16.
    n = 32
    u8 = smooth_images(3, n, seed=11)
    gray = (u8.double().numpy() / 255.0 * np.array([0.299, 0.587, 0.114])[None, :, None, None]).sum(1)
    power = np.log(np.abs(np.fft.fft2(gray, norm="ortho")) ** 2 + EPS)
    f = np.fft.fftfreq(n, 1.0 / n)
    radius = np.round(np.hypot(f[:, None], f[None, :])).astype(int)
    ref = np.stack([[power[i][radius == r].mean() for r in range(n // 2 + 1)] for i in range(3)])
    ours = radial_profile(u8, nyquist=True)
    assert ours.shape == (3, 17) and radial_profile(u8).shape == (3, 24)  # the corner ring: 23
    assert np.allclose(ours.double().numpy(), ref, atol=1e-4)
    assert torch.equal(radial_profile(u8)[:, :17], ours)
    # A grating at the Nyquist frequency (0, 16): one bin of power (0.25 n)^2 in ring 16, the
    # rest of that ring empty (log EPS).
    img = _grating(n, 0, n // 2, amp=0.5)
    count = int((radius == 16).sum())
    expected = (math.log((0.25 * n) ** 2 + EPS) + (count - 1) * math.log(EPS)) / count
    raw = radial_profile((img + 1) / 2, nyquist=True)
    assert raw.shape == (1, 17) and raw[0, 16].item() == pytest.approx(expected, rel=1e-5)
    # The spectral losses use the profile to Nyquist: so does the spectral discriminator's input.
    assert profile_length(n) == 17 and SpectralDiscriminator(n).net.in_features == 17
    assert spectral_profile(img).shape == (1, 17) and spectral_profile(img, nyquist=False).shape == (1, 24)
