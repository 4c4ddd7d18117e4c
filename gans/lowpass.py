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
from functools import lru_cache

import numpy as np
import torch

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


@lru_cache(maxsize=64)
def _matrix(n: int, taps: tuple[float, ...], kind: str) -> torch.Tensor:
    """The 1-D resampling of ``n`` samples as a dense matrix (float64): ``up``, ``down`` or ``same`` rate.

    ``up`` (2n x n): zero insertion, zero padding k/2 before and k/2 - 1 after, then the taps with
    gain 2, so ``M[m, i] = 2 h[2i + k/2 - m]``; ``down`` (n/2 x n): padding k/2 - 1 on each side,
    the taps with gain 1, every second output, ``D[i, q] = h[q + k/2 - 1 - 2i]``; ``same`` (n x n):
    the taps with gain 1 and padding k/2 - 1 before, ``L[m, q] = h[q + k/2 - 1 - m]``. The taps
    are symmetric, so correlation and convolution agree. Feature maps here are small (4 to 128 px),
    so two small matrix products per image are much faster on a CPU than depthwise convolutions
    with 24-tap kernels (about 5x at 4-16 px, measured while writing this).
    """
    h = np.asarray(taps, dtype=np.float64)
    k = h.size
    if kind == "up":
        m, i = np.meshgrid(np.arange(2 * n), np.arange(n), indexing="ij")
        j, gain = 2 * i + k // 2 - m, 2.0
    elif kind == "down":
        m, i = np.meshgrid(np.arange(n // 2), np.arange(n), indexing="ij")
        j, gain = i + k // 2 - 1 - 2 * m, 1.0
    else:
        m, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        j, gain = i + k // 2 - 1 - m, 1.0
    inside = (j >= 0) & (j < k)
    return torch.from_numpy(np.where(inside, gain * h[np.clip(j, 0, k - 1)], 0.0))


def _separable(x: torch.Tensor, taps: torch.Tensor, kind: str) -> torch.Tensor:
    """Apply the ``kind`` resampling of :func:`_matrix` along H and W of (N, C, H, W)."""
    key = tuple(float(t) for t in taps.detach().cpu().double())
    if len(key) % 2:
        raise ValueError(f"2x resampling needs an even number of taps to keep pixel centres aligned, got {len(key)}.")
    return separable_matmul(x, _matrix(x.shape[-2], key, kind), _matrix(x.shape[-1], key, kind))


def separable_matmul(x: torch.Tensor, mh: torch.Tensor, mw: torch.Tensor) -> torch.Tensor:
    """``mh @ x @ mw.T`` for (N, C, H, W) ``x``: a separable linear resampling along H and W.

    The products run on the (N, H, W, C) view, so channels-last maps (what training uses) are
    read without a reordering copy: sinc steps of a DCGAN-32 (width 32, batch 32, one thread) took
    61 ms against 77 ms with ``torch.matmul`` on the NCHW view.
    """
    mh, mw = mh.to(dtype=x.dtype, device=x.device), mw.to(dtype=x.dtype, device=x.device)
    y = torch.einsum("pw,nhwc->nhpc", mw, x.permute(0, 2, 3, 1))
    return torch.einsum("qh,nhpc->nqpc", mh, y).permute(0, 3, 1, 2)


def upsample2x(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Zero insertion then the separable low-pass ``taps`` with gain 2 per axis: (N,C,H,W) -> (N,C,2H,2W).

    Output samples ``2i`` and ``2i+1`` sit symmetrically around input sample ``i`` (an even tap
    count centred by padding ``k/2`` before and ``k/2 - 1`` after, upfirdn2d's up=2 padding).
    """
    return _separable(x, taps, "up")


def downsample2x(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The separable low-pass ``taps`` (gain 1) then every second sample: (N,C,2H,2W) -> (N,C,H,W).

    Output sample ``i`` is centred between input samples ``2i`` and ``2i+1``, the inverse of
    :func:`upsample2x`'s alignment, so ``downsample2x(upsample2x(x))`` does not shift ``x``.
    """
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"2x downsampling needs even H and W, got {tuple(x.shape)}.")
    return _separable(x, taps, "down")


def lowpass(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The separable low-pass ``taps`` (gain 1) at the same rate; :func:`downsample2x` keeps its even samples."""
    return _separable(x, taps, "same")


def amplitude_response(taps: torch.Tensor | np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """|H(f)| of a 1-D filter at ``freqs`` in cycles per sample."""
    h = np.asarray(taps, dtype=np.float64)
    return np.abs(np.exp(-2j * np.pi * np.outer(freqs, np.arange(h.size))) @ h)
