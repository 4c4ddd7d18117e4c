"""Registry of the six upsampling layers whose spectral fingerprints forgelab studies.

Every upsampler doubles height and width and maps ``in_ch`` to ``out_ch`` channels.
``transposed`` and ``pixelshuffle`` learn the upsampling itself; the others apply a
fixed resampling and then a 3x3 convolution (Odena et al. 2016, Durall et al. 2020,
Chandrasegaran et al. 2021 compare exactly these families).
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
