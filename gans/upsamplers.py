"""Registry of the upsampling layers whose spectral fingerprints forgelab studies.

Every upsampler doubles height and width and maps ``in_ch`` to ``out_ch`` channels.
``transposed`` and ``pixelshuffle`` learn the upsampling itself; the others apply a
fixed resampling and then a 3x3 convolution (Odena et al. 2016, Durall et al. 2020,
Chandrasegaran et al. 2021 compare exactly these families).

``binomial`` is StyleGAN2's upsampling (Karras et al. 2020): zero insertion, then the fixed
FIR filter outer([1, 3, 3, 1]) (normalised, gain 4 so that the mean survives the three zeros of
each 2x2 cell, padded as in upfirdn2d), then a 3x3 convolution. That filter *is* bilinear
interpolation: away from the one-pixel border it equals ``F.interpolate(..., "bilinear",
align_corners=False)`` (StyleGAN 2019 calls it bilinear sampling; a test pins the equality), so
it is not an anti-aliased design. Its response is zero at Nyquist but only about 20 dB down at
0.35 cycles/px. Until this release the kind was called ``filtered``; checkpoints that carry that
name load as ``binomial`` (:data:`RENAMED`).

``sinc`` is the anti-aliased kind, after Alias-Free GAN (StyleGAN3, Karras et al. 2021): zero
insertion, then a separable Kaiser-windowed sinc low-pass with its cutoff at the input's Nyquist
frequency and StyleGAN3's stopband of critically sampled layers (:mod:`gans.lowpass`, where
the one departure from the paper, 24 instead of 12 taps, is explained), then a 3x3 convolution.
It attenuates everything from 0.35 cycles/px of the output to Nyquist by at least 40 dB
(measured in ``tests/test_upsamplers.py`` beside bilinear's ~20 dB).

:func:`fixed_resampling` gives each kind's weight-free resampling (nearest for the learned
kinds), which SNGAN's ``1x1`` shortcut uses.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gans.lowpass import separable_matmul, sinc_taps, upsample2x

UPSAMPLERS: dict[str, Callable[[int, int], nn.Module]] = {}


def register_upsampler(name: str):
    """Add a factory ``(in_ch, out_ch) -> nn.Module`` to the registry under ``name``."""

    def wrap(factory: Callable[[int, int], nn.Module]):
        UPSAMPLERS[name] = factory
        return factory

    return wrap


def bed_of_nails(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Zero insertion: each value at the top-left of a factor x factor cell, zeros elsewhere."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h * factor, w * factor)
    out[:, :, ::factor, ::factor] = x
    return out


# StyleGAN2's default resampling filter: binomial [1, 3, 3, 1], separable.
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)


def fir_kernel(taps: tuple[float, ...] = FIR_TAPS, gain: float = 4.0) -> torch.Tensor:
    """2D FIR kernel: outer product of ``taps`` with itself, scaled so its entries sum to ``gain``."""
    t = torch.tensor(taps, dtype=torch.float64)
    k = torch.outer(t, t)
    return (k * (gain / k.sum())).float()


def fir_upsample(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """upfirdn2d with up=2: zero insertion, pad, then a depthwise FIR filter (same for every channel).

    Padding follows upfirdn2d's ``upsample2d``: with a k-tap kernel, (k + 1) // 2 zeros before
    and (k - 2) // 2 after each spatial dim, so the output is exactly 2H x 2W and the filter is
    centred on the inserted samples. The kernel is flipped to make this a true convolution (the
    binomial kernel is symmetric, so it makes no difference here).
    """
    n, c, h, w = x.shape
    k = kernel.shape[-1]
    lo, hi = (k + 1) // 2, (k - 2) // 2
    up = F.pad(bed_of_nails(x), (lo, hi, lo, hi))
    weight = kernel.flip(-2, -1).to(dtype=x.dtype, device=x.device).expand(c, 1, k, k)
    return F.conv2d(up, weight, groups=c)


class FIRUpsample(nn.Module):
    """Zero insertion followed by a fixed low-pass FIR filter (no weights; the kernel is a buffer)."""

    def __init__(self, taps: tuple[float, ...] = FIR_TAPS, gain: float = 4.0):
        super().__init__()
        # Not persistent: the kernel is a constant of the kind, not state to checkpoint.
        self.register_buffer("kernel", fir_kernel(taps, gain), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fir_upsample(x, self.kernel)


class SincUpsample(nn.Module):
    """Zero insertion followed by the separable Kaiser-windowed sinc low-pass of :mod:`gans.lowpass`."""

    def __init__(self):
        super().__init__()
        # Not persistent: the taps are a constant of the kind, not state to checkpoint.
        self.register_buffer("taps", sinc_taps(2).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x(x, self.taps)


# PyTorch's cubic convolution coefficient (Keys 1981 with a = -0.75, as in OpenCV).
CUBIC_A = -0.75


def _keys_cubic(d: np.ndarray, a: float = CUBIC_A) -> np.ndarray:
    """Keys' cubic convolution kernel at distances ``d`` (zero from 2 on)."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


@lru_cache(maxsize=64)
def bicubic_matrix(n: int) -> torch.Tensor:
    """``F.interpolate(..., scale_factor=2, mode="bicubic", align_corners=False)`` along one axis of
    ``n`` samples, as a dense (2n x n) float64 matrix.

    Output ``o`` reads the input at ``(o + 0.5) / 2 - 0.5`` from its four neighbours with Keys'
    weights, their *indices* clamped to ``[0, n - 1]`` (replicated borders), exactly as PyTorch's
    kernel does (``tests/test_upsamplers.py`` compares them in float64, gradients included).
    """
    out = np.zeros((2 * n, n))
    rows = np.arange(2 * n)
    src = (rows + 0.5) / 2 - 0.5
    lo = np.floor(src).astype(int)
    t = src - lo
    for k in (-1, 0, 1, 2):
        np.add.at(out, (rows, np.clip(lo + k, 0, n - 1)), _keys_cubic(k - t))
    return torch.from_numpy(out)


def bicubic2x(x: torch.Tensor) -> torch.Tensor:
    """Bicubic x2 upsampling of (N, C, H, W), equal to ``F.interpolate`` with ``align_corners=False``,
    as two small matrix products (:func:`gans.lowpass.separable_matmul`).

    Measured on one CPU thread, channels-last DCGAN-32 with width 32 (G and D forward and
    backward, batch 32): 74 ms a step against ``F.interpolate``'s 156 ms. (Bilinear written the
    same way was slower than ``F.interpolate``'s, 84 against 62 ms, so bilinear stays on it.)
    """
    return separable_matmul(x, bicubic_matrix(x.shape[-2]), bicubic_matrix(x.shape[-1]))


class Interpolate(nn.Module):
    """Fixed x2 resampling (nearest, bilinear, bicubic or zero insertion) with no weights."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "bed_of_nails":
            return bed_of_nails(x)
        if self.mode == "bicubic":  # as matrices: the same numbers, about twice as fast (bicubic2x)
            return bicubic2x(x)
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.interpolate(x, scale_factor=2, mode=self.mode, align_corners=False)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def _fixed_then_conv(mode: str, in_ch: int, out_ch: int) -> nn.Module:
    return nn.Sequential(Interpolate(mode), nn.Conv2d(in_ch, out_ch, 3, padding=1))


@register_upsampler("transposed")
def _transposed(in_ch: int, out_ch: int) -> nn.Module:
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1)


@register_upsampler("nearest")
def _nearest(in_ch: int, out_ch: int) -> nn.Module:
    return _fixed_then_conv("nearest", in_ch, out_ch)


@register_upsampler("bilinear")
def _bilinear(in_ch: int, out_ch: int) -> nn.Module:
    return _fixed_then_conv("bilinear", in_ch, out_ch)


@register_upsampler("bicubic")
def _bicubic(in_ch: int, out_ch: int) -> nn.Module:
    return _fixed_then_conv("bicubic", in_ch, out_ch)


@register_upsampler("pixelshuffle")
def _pixelshuffle(in_ch: int, out_ch: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_ch, 4 * out_ch, 3, padding=1), nn.PixelShuffle(2))


@register_upsampler("bed_of_nails")
def _bed_of_nails(in_ch: int, out_ch: int) -> nn.Module:
    return _fixed_then_conv("bed_of_nails", in_ch, out_ch)


@register_upsampler("binomial")
def _binomial(in_ch: int, out_ch: int) -> nn.Module:
    return nn.Sequential(FIRUpsample(), nn.Conv2d(in_ch, out_ch, 3, padding=1))


@register_upsampler("sinc")
def _sinc(in_ch: int, out_ch: int) -> nn.Module:
    return nn.Sequential(SincUpsample(), nn.Conv2d(in_ch, out_ch, 3, padding=1))


# Kinds renamed since checkpoints were written: old name -> current name. A checkpoint or run
# folder that carries an old name loads under the new one (gans.checkpoint.upgrade_config); a
# config or command line that asks for it by the old name gets an error naming the new one.
RENAMED = {"filtered": "binomial"}
# Why each kind was renamed, for that error.
_RENAMED_WHY = {"filtered": "zero insertion + [1, 3, 3, 1] is bilinear interpolation, not an anti-aliased filter"}


# Kinds whose upsampling is learned: they have no weight-free resampling of their own.
LEARNED = ("transposed", "pixelshuffle")


def fixed_resampling(kind: str) -> nn.Module:
    """The weight-free x2 resampling of ``kind``; nearest for the learned kinds (transposed, pixelshuffle)."""
    kind = check_upsampler(kind)
    if kind == "binomial":
        return FIRUpsample()
    if kind == "sinc":
        return SincUpsample()
    return Interpolate("nearest" if kind in LEARNED else kind)


def check_upsampler(kind: str) -> str:
    """Return ``kind`` if it is registered, else raise a ValueError that lists the valid names."""
    if kind in RENAMED:
        raise ValueError(
            f"Upsampler {kind!r} was renamed {RENAMED[kind]!r} ({_RENAMED_WHY[kind]}); "
            f"ask for {RENAMED[kind]!r}, or 'sinc' for the anti-aliased kind."
        )
    if kind not in UPSAMPLERS:
        raise ValueError(
            f"Unknown upsampler {kind!r}; choose one of: {', '.join(UPSAMPLERS)}."
        )
    return kind


def make_upsampler(kind: str, in_ch: int, out_ch: int) -> nn.Module:
    """Build the ``kind`` upsampler that doubles H and W and maps ``in_ch`` to ``out_ch``."""
    return UPSAMPLERS[check_upsampler(kind)](in_ch, out_ch)
