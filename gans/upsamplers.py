"""Registry of the seven upsampling layers whose spectral fingerprints forgelab studies.

Every upsampler doubles height and width and maps ``in_ch`` to ``out_ch`` channels.
``transposed`` and ``pixelshuffle`` learn the upsampling itself; the others apply a
fixed resampling and then a 3x3 convolution (Odena et al. 2016, Durall et al. 2020,
Chandrasegaran et al. 2021 compare exactly these families).

``filtered`` is the anti-aliased design that the frequency-bias literature points to
(StyleGAN2's upsampling, Karras et al. 2020/2021; Schwarz et al. 2021): zero insertion,
then a fixed low-pass FIR filter (the outer product of [1, 3, 3, 1], normalised, gain 4 so
that the mean survives the three zeros of each 2x2 cell, padded as in upfirdn2d), then a 3x3
convolution. The filter's response is exactly zero at the Nyquist frequency, where zero
insertion puts the spectral replica that makes ``bed_of_nails`` so easy to detect.

:func:`fixed_resampling` gives each kind's weight-free resampling (nearest for the learned
kinds), which SNGAN's ``1x1`` shortcut uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

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


class Interpolate(nn.Module):
    """Fixed x2 resampling (nearest, bilinear, bicubic or zero insertion) with no weights."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "bed_of_nails":
            return bed_of_nails(x)
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


@register_upsampler("filtered")
def _filtered(in_ch: int, out_ch: int) -> nn.Module:
    return nn.Sequential(FIRUpsample(), nn.Conv2d(in_ch, out_ch, 3, padding=1))


# Kinds whose upsampling is learned: they have no weight-free resampling of their own.
LEARNED = ("transposed", "pixelshuffle")


def fixed_resampling(kind: str) -> nn.Module:
    """The weight-free x2 resampling of ``kind``; nearest for the learned kinds (transposed, pixelshuffle)."""
    kind = check_upsampler(kind)
    if kind == "filtered":
        return FIRUpsample()
    return Interpolate("nearest" if kind in LEARNED else kind)


def check_upsampler(kind: str) -> str:
    """Return ``kind`` if it is registered, else raise a ValueError that lists the valid names."""
    if kind not in UPSAMPLERS:
        raise ValueError(
            f"Unknown upsampler {kind!r}; choose one of: {', '.join(UPSAMPLERS)}."
        )
    return kind


def make_upsampler(kind: str, in_ch: int, out_ch: int) -> nn.Module:
    """Build the ``kind`` upsampler that doubles H and W and maps ``in_ch`` to ``out_ch``."""
    return UPSAMPLERS[check_upsampler(kind)](in_ch, out_ch)
