"""Kaiser-windowed sinc low-pass filters and separable 2x up/down-sampling with them.

The design follows Alias-Free GAN (StyleGAN3; Karras et al., NeurIPS 2021, Sec. 3.2 and the
official ``design_lowpass_filter``): a separable 1-D windowed sinc with cutoff ``fc``, a
transition band of half-width ``fh = max(ft, s/2) - fc`` ending at the stopband edge ``ft``, and
a Kaiser window whose beta comes from Kaiser's formulas for the attenuation that ``numtaps`` and
the transition width allow (the formulas of ``scipy.signal.firwin(..., width=...)``, written out
here and checked against scipy in the tests).

forgelab's generators are critically sampled at every layer (a feature map of H x W pixels
carries content up to H/2 cycles), like StyleGAN3's last layers, so the parameters are those of
its critically sampled layers:

* cutoff ``fc = s/2``, the Nyquist frequency of the lower rate ``s`` (the input of an
  upsampler, the feature map of an activation);
* stopband ``ft = 2**0.3 * fc``, StyleGAN3's stopband of its last (critically sampled) layer;
* **taps**: StyleGAN3 uses 6 taps per up/down factor (12 for 2x). Here the default is 12 per
  factor (24 for 2x). Departure, and why: with 12 taps this cutoff and stopband give only about
  30 dB of attenuation from 0.35 cycles/px (of the 2x rate) to Nyquist, where the lab asks for
  at least 40 dB so that no spectral replica of zero insertion is left for a detector; 24 taps
  give about 52 dB (``tests/test_lowpass.py`` pins both numbers). StyleGAN3 can afford 6 per
  factor because its early layers are oversampled and its filters' leakage there falls above
  the cutoff of the next layer; ours have no such margin.

Even tap counts, as in StyleGAN3: the 2x grid's samples ``2i`` and ``2i+1`` lie symmetrically
around input sample ``i`` (pixel centres, as ``F.interpolate(..., align_corners=False)``), so the
filter is centred between two taps. Borders are zero-padded, like the convolutions around them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# StyleGAN3's filter_size: taps per up/down factor (its networks_stylegan3.py default).
STYLEGAN3_TAPS_PER_FACTOR = 6
# forgelab's choice (see the module docstring for why it departs from StyleGAN3's 6).
TAPS_PER_FACTOR = 12
# StyleGAN3's stopband of the last, critically sampled layers, relative to the cutoff.
STOPBAND_REL = 2**0.3


def kaiser_attenuation(numtaps: int, width: float) -> float:
    """Kaiser's estimate of the stopband attenuation in dB; ``width`` is the transition width / Nyquist."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def kaiser_beta(attenuation: float) -> float:
    """Kaiser's window parameter for a stopband attenuation in dB."""
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def lowpass_taps(numtaps: int, cutoff: float, stopband: float, fs: float) -> np.ndarray:
    """1-D Kaiser-windowed sinc low-pass (float64, taps summing to 1), frequencies in the units of ``fs``.

    ``cutoff`` is the -6 dB point and ``stopband`` the edge of the stopband: the transition band
    runs from ``cutoff - fh`` to ``cutoff + fh = stopband`` (StyleGAN3's half-width ``fh``).
    """
    if numtaps < 2 or not 0 < cutoff < stopband <= fs / 2:
        raise ValueError(
            f"A low-pass needs numtaps >= 2 and 0 < cutoff < stopband <= fs/2, got numtaps={numtaps}, "
            f"cutoff={cutoff}, stopband={stopband}, fs={fs}."
        )
    nyq = fs / 2
    width = 2 * (stopband - cutoff) / nyq  # full transition width, as a fraction of Nyquist
    beta = kaiser_beta(kaiser_attenuation(numtaps, width))
    m = np.arange(numtaps) - (numtaps - 1) / 2
    h = (cutoff / nyq) * np.sinc((cutoff / nyq) * m) * np.kaiser(numtaps, beta)
    return h / h.sum()


def sinc_taps(factor: int = 2, taps_per_factor: int = TAPS_PER_FACTOR) -> torch.Tensor:
    """The 1-D filter of 2x resampling: cutoff at the lower rate's Nyquist, StyleGAN3's stopband."""
    # Frequencies in cycles per pixel of the lower rate (s = 1), at the higher rate fs = factor.
    cutoff = 0.5
    return torch.from_numpy(lowpass_taps(taps_per_factor * factor, cutoff, cutoff * STOPBAND_REL, factor))


def activation_taps(factor: int = 2, taps_per_factor: int = TAPS_PER_FACTOR) -> torch.Tensor:
    """The 1-D filter that brings a nonlinearity's output back down: stopband at the lower rate's Nyquist.

    StyleGAN3's ratio of stopband to cutoff (2**0.3), placed so that the stopband starts at the
    Nyquist frequency of the lower rate (cutoff 0.5 / 2**0.3 = 0.406 cycles/px of that rate):
    everything the nonlinearity creates above Nyquist is removed before decimation instead of
    folding back (see :mod:`gans.alias_free` for why this departs from StyleGAN3's last layers).
    """
    return torch.from_numpy(lowpass_taps(taps_per_factor * factor, 0.5 / STOPBAND_REL, 0.5, factor))


def _filter_axis(x: torch.Tensor, taps: torch.Tensor, dim: int, pad: tuple[int, int], stride: int) -> torch.Tensor:
    """Depthwise 1-D convolution of every channel with ``taps`` along H (dim 2) or W (dim 3)."""
    c, k = x.shape[1], taps.numel()
    # taps are symmetric, so correlation (conv2d) is convolution
    w = taps.to(dtype=x.dtype, device=x.device)
    if dim == 3:
        x = F.pad(x, (pad[0], pad[1], 0, 0))
        return F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), stride=(1, stride), groups=c)
    x = F.pad(x, (0, 0, pad[0], pad[1]))
    return F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), stride=(stride, 1), groups=c)


def upsample2x(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Zero insertion then the separable low-pass ``taps`` with gain 2 per axis: (N,C,H,W) -> (N,C,2H,2W).

    Output samples ``2i`` and ``2i+1`` sit symmetrically around input sample ``i`` (an even tap
    count centred by padding ``k/2`` before and ``k/2 - 1`` after, upfirdn2d's up=2 padding).
    """
    n, c, h, w = x.shape
    k = taps.numel()
    if k % 2:
        raise ValueError(f"2x resampling needs an even number of taps to keep pixel centres aligned, got {k}.")
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    pad = (k // 2, k // 2 - 1)
    up = _filter_axis(up, 2 * taps, 3, pad, 1)
    return _filter_axis(up, 2 * taps, 2, pad, 1)


def downsample2x(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The separable low-pass ``taps`` (gain 1) then every second sample: (N,C,2H,2W) -> (N,C,H,W).

    Output sample ``i`` is centred between input samples ``2i`` and ``2i+1``, the inverse of
    :func:`upsample2x`'s alignment, so ``downsample2x(upsample2x(x))`` does not shift ``x``.
    """
    k = taps.numel()
    if k % 2 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"2x downsampling needs an even number of taps and even H, W, got {k} taps, {tuple(x.shape)}.")
    pad = (k // 2 - 1, k // 2 - 1)
    x = _filter_axis(x, taps, 3, pad, 2)
    return _filter_axis(x, taps, 2, pad, 2)


def lowpass(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The separable low-pass ``taps`` (gain 1) at the same rate; :func:`downsample2x` keeps its even samples."""
    k = taps.numel()
    pad = (k // 2 - 1, k // 2)
    return _filter_axis(_filter_axis(x, taps, 3, pad, 1), taps, 2, pad, 1)


def amplitude_response(taps: torch.Tensor | np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """|H(f)| of a 1-D filter at ``freqs`` in cycles per sample."""
    h = np.asarray(taps, dtype=np.float64)
    return np.abs(np.exp(-2j * np.pi * np.outer(freqs, np.arange(h.size))) @ h)
