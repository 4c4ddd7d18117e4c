"""Alias-free nonlinearities for the generators (``--alias-free``), after StyleGAN3's filtered ReLU.

A pointwise nonlinearity applied to a sampled signal creates harmonics above the Nyquist
frequency, which fold back into the band as aliases: a grid-bound fingerprint of its own, beside
the upsampler's. Alias-Free GAN (Karras et al., NeurIPS 2021, Sec. 3.2, "filtered nonlinearities")
evaluates each nonlinearity at twice the sampling rate: upsample 2x with a low-pass, apply the
nonlinearity, low-pass again and decimate. :class:`FilteredReLU` does that with two Kaiser
sinc filters of :mod:`gans.lowpass`, 24 taps each at the 2x rate:

* up: the ``sinc`` upsampler's filter (cutoff at the feature map's Nyquist frequency ``s/2``,
  stopband ``2**0.3`` times higher, StyleGAN3's critically sampled layers);
* down: the same design with the same stopband/cutoff ratio, shifted so that its stopband starts
  at ``s/2`` (cutoff ``s/2 / 2**0.3``, about 0.41 cycles/px of the feature map).

Departure from StyleGAN3, and why: at its critically sampled last layers StyleGAN3 keeps the
cutoff at ``s/2`` for the down filter too, so what the nonlinearity creates between ``s/2`` and
``2**0.3 s/2`` still folds back (its stated compromise for image detail). With that filter a
band-limited input's ReLU output keeps only 13-21 dB less energy above ``s/2`` than a plain
ReLU's; with the stopband at ``s/2`` it keeps 47-53 dB less (``tests/test_alias_free.py``), so
decimation folds back almost nothing of what the 2x signal holds (harmonics beyond the 2x rate
still fold when the ReLU is computed, as in StyleGAN3), at the price of attenuating the top
fifth of each feature map's band.
The lab's question is whether *alias-free* activations remove the fingerprint, so it takes
the alias-free filter.

Further departures: StyleGAN3 filters leaky ReLUs inside a network whose
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

from gans.lowpass import activation_taps, downsample2x, sinc_taps, upsample2x


class FilteredReLU(nn.Module):
    """ReLU at twice the rate: 2x sinc upsampling, ReLU, sinc low-pass, decimation; same (N,C,H,W) out."""

    def __init__(self):
        super().__init__()
        # Not persistent: constants of the design, so checkpoints with and without it share keys.
        self.register_buffer("up_taps", sinc_taps(2).float(), persistent=False)
        self.register_buffer("down_taps", activation_taps(2).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample2x(F.relu(upsample2x(x, self.up_taps)), self.down_taps)


def relu(alias_free: bool) -> nn.Module:
    """The generator's ReLU: :class:`FilteredReLU` when ``alias_free``, else ``nn.ReLU()``."""
    return FilteredReLU() if alias_free else nn.ReLU()
