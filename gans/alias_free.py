"""Alias-free nonlinearities for the generators (``--alias-free``), after StyleGAN3's filtered ReLU.

A pointwise nonlinearity applied to a sampled signal creates harmonics above the Nyquist
frequency, which fold back into the band as aliases: a grid-bound fingerprint of its own, beside
the upsampler's. Alias-Free GAN (Karras et al., NeurIPS 2021, Sec. 3.2, "filtered nonlinearities")
evaluates each nonlinearity at twice the sampling rate: upsample 2x with a low-pass, apply the
nonlinearity, low-pass again and decimate. :class:`FilteredReLU` does that with the filter of
:mod:`gans.lowpass` (cutoff at the feature map's Nyquist frequency, StyleGAN3's stopband of
critically sampled layers) for both filters, as StyleGAN3's critically sampled layers do.

Where this departs from StyleGAN3, and why: StyleGAN3 filters leaky ReLUs inside a network whose
feature maps carry extra margins and whose early layers are oversampled; forgelab keeps the
DCGAN and SNGAN networks as their papers have them (plain ReLU, zero-padded borders,
critically sampled maps) and only replaces each ReLU of the generator by its filtered version.
The generator's last nonlinearity, the tanh that maps to the image range, stays pointwise:
filtering it would let the low-pass's ringing leave [-1, 1], and StyleGAN3 likewise exempts its
ToRGB layer from the filtered nonlinearity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gans.lowpass import downsample2x, sinc_taps, upsample2x


class FilteredReLU(nn.Module):
    """ReLU at twice the rate: 2x sinc upsampling, ReLU, sinc low-pass, decimation; same (N,C,H,W) out."""

    def __init__(self):
        super().__init__()
        # Not persistent: constants of the design, so checkpoints with and without it share keys.
        self.register_buffer("taps", sinc_taps(2).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample2x(F.relu(upsample2x(x, self.taps)), self.taps)


def relu(alias_free: bool) -> nn.Module:
    """The generator's ReLU: :class:`FilteredReLU` when ``alias_free``, else ``nn.ReLU()``."""
    return FilteredReLU() if alias_free else nn.ReLU()
