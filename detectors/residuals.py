"""Features of the local pixel dependence that 2x upsampling leaves on the 2x2 grid: npr, dwt, periodicity.

They are registered as features by :mod:`detectors.features`. The spectral features there measure the *amount* of high-frequency
power, which moves one way for transposed / pixel-shuffle / zero-insertion upsamplers (excess)
and the other way for nearest / bilinear / bicubic ones (lack). These features look at the
2x2 grid itself, so both families leave a mark (Tan et al., CVPR 2024; Li et al., KDD 2025;
Popescu & Farid 2005; Kirchner 2008).

All take ``(N, 3, H, W)`` uint8 (scaled to [0, 1]) or float batches and are batched torch code on
the images' device. The 2x2 grid is anchored at the image origin: phase ``(i, j)`` is the set of
pixels with ``row % 2 == i`` and ``col % 2 == j``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from detectors.batches import checked_float_batch

# Analysis filters of pywt's wavelets (pywt.Wavelet(name).dec_lo / dec_hi), written out so no
# PyWavelets is needed at run time. bior1.3: Cohen-Daubechies-Feauveau, 1 / 3 vanishing moments.
_S = 1.0 / math.sqrt(2.0)
WAVELETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "haar": ((_S, _S), (-_S, _S)),
    "bior1.3": (
        (-_S / 8, _S / 8, _S, _S, _S / 8, -_S / 8),
        (0.0, 0.0, -_S, _S, 0.0, 0.0),
    ),
}
PERIODICITY_EPS = 1e-10


def _flatten(x: torch.Tensor, flatten: bool) -> torch.Tensor:
    return x.reshape(x.shape[0], -1) if flatten else x


def _even(x: torch.Tensor) -> torch.Tensor:
    """Drop a last odd row / column so the 2x2 grid tiles the image."""
    h, w = x.shape[-2:]
    return x[..., : h - h % 2, : w - w % 2]


def npr(images: torch.Tensor, flatten: bool = False) -> torch.Tensor:
    """Neighbouring-pixel residual: each pixel minus the top-left pixel of its 2x2 cell, per channel (Tan et al. 2024).

    Equal to ``x - nearest_up(nearest_down(x))`` with factor 2 and the grid anchored at the
    origin; phase (0, 0) is always zero. Returns (N, 3, H, W) floats in [-1, 1] for uint8 input
    (an odd last row / column is compared with the cell's top-left pixel as well).
    """
    x = checked_float_batch(images)
    n, c, h, w = x.shape
    if h % 2 == 0 and w % 2 == 0:
        cells = x.reshape(n, c, h // 2, 2, w // 2, 2)
        out = (cells - cells[:, :, :, :1, :, :1]).reshape(n, c, h, w)
    else:
        anchor = x[..., ::2, ::2].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :h, :w]
        out = x - anchor
    return _flatten(out, flatten)


DWT_MODES = ("periodization", "symmetric")


@lru_cache(maxsize=8)
def _dwt_kernel(wavelet: str, device: str, dtype: torch.dtype) -> torch.Tensor:
    """(1, 1, L, L) correlation kernel of the diagonal (high-high) band."""
    _, hi = WAVELETS[wavelet]
    k = torch.tensor(hi, dtype=torch.float64).flip(0)  # pywt convolves with dec_hi: correlate with its reverse
    return torch.outer(k, k)[None, None].to(device=device, dtype=dtype)


@lru_cache(maxsize=32)
def _symmetric_index(n: int, length: int) -> torch.Tensor:
    """Indices of pywt's ``symmetric`` extension (edge sample repeated) as its dwt reads them.

    pywt extends by ``L - 1`` samples on each side and output ``k`` reads extended samples
    ``2k + 1 ... 2k + L``; this returns the extended signal from its second sample on, so that a
    stride-2 correlation gives pywt's ``floor((n + L - 1) / 2)`` coefficients (checked against pywt).
    """
    pad = length - 1
    i = torch.arange(-pad, n + pad)
    period = 2 * n
    i = torch.remainder(i, period)
    i = torch.where(i >= n, period - 1 - i, i)
    return i[1:]


def dwt_hh(images: torch.Tensor, wavelet: str = "haar", mode: str = "periodization", resize: bool = False,
           flatten: bool = False) -> torch.Tensor:
    """The diagonal (high-high) band of a one-level 2D DWT per channel (Li et al. 2025, SAFE, use bior1.3).

    Equals ``pywt.dwt2(x, wavelet, mode=mode)[1][2]`` per channel, for ``wavelet`` ``"haar"`` or
    ``"bior1.3"`` and ``mode`` ``"periodization"`` (the default: (N, 3, H/2, W/2); for Haar every
    boundary mode agrees) or ``"symmetric"`` (pywt's default mode, the edge sample repeated:
    (N, 3, (H+L-1)//2, (W+L-1)//2) for an L-tap wavelet). An odd last row / column is dropped first.

    SAFE's settings are ``wavelet="bior1.3", mode="symmetric", resize=True``
    (``-o wavelet=bior1.3 -o mode=symmetric -o resize=true``); the defaults, Haar with
    periodisation, are this lab's, kept so that earlier results stay comparable. ``resize``
    brings the band back to the (even) input size, as SAFE feeds its classifier the HH band at
    the image's size; the interpolation here is bilinear (half-pixel centres), a choice of this
    lab, not taken from SAFE.
    """
    if wavelet not in WAVELETS:
        raise ValueError(f"Unknown wavelet {wavelet!r}; choose one of: {', '.join(WAVELETS)}.")
    if mode not in DWT_MODES:
        raise ValueError(f"Unknown dwt mode {mode!r}; choose one of: {', '.join(DWT_MODES)}.")
    if not isinstance(resize, bool):
        raise ValueError(f"dwt option resize must be true or false, got {resize!r}.")
    x = _even(checked_float_batch(images))
    n, c, h, w = x.shape
    if h < 2 or w < 2:
        raise ValueError(f"dwt needs images of at least 2x2 pixels, got {h}x{w}.")
    kernel = _dwt_kernel(wavelet, str(x.device), x.dtype)
    length = kernel.shape[-1]
    flat = x.reshape(n * c, 1, h, w)
    if mode == "symmetric":
        rows, cols = _symmetric_index(h, length).to(x.device), _symmetric_index(w, length).to(x.device)
        flat = flat.index_select(2, rows).index_select(3, cols)
    elif length > 2:
        # With periodisation, output k of pywt reads inputs 2k - (L/2 - 1) ... 2k + L/2 (checked against pywt).
        pad = length // 2 - 1
        if pad > min(h, w):
            raise ValueError(f"dwt with {wavelet} needs images of at least {2 * pad}x{2 * pad} pixels, got {h}x{w}.")
        flat = F.pad(flat, (pad, pad, pad, pad), mode="circular")
    out = F.conv2d(flat, kernel, stride=2)
    if resize:
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    return _flatten(out.reshape(n, c, *out.shape[-2:]), flatten)


def predictor_residual(x: torch.Tensor) -> torch.Tensor:
    """Residual of the fixed linear predictor ``mean of the 4 neighbours`` (Kirchner 2008), inner pixels only.

    Its frequency response is ``1 - (cos wx + cos wy) / 2``: 0 at DC, 1 at the horizontal and
    vertical Nyquist frequencies, 2 at the diagonal one. A border of 2 pixels is dropped, so no
    pixel is predicted from outside the image (upsamplers clamp at the border, which a circular
    predictor would read as broadband noise) and the 2x2 phases keep their anchor at the origin:
    (H, W) -> (H - 4, W - 4).
    """
    c = x[..., 2:-2, 2:-2]
    neighbours = x[..., 1:-3, 2:-2] + x[..., 3:-1, 2:-2] + x[..., 2:-2, 1:-3] + x[..., 2:-2, 3:-1]
    return c - 0.25 * neighbours


def periodicity(images: torch.Tensor) -> torch.Tensor:
    """21 numbers of 2x2-grid periodicity with no learned weights: phase energies and Nyquist ratios of a predictor residual.

    ``r`` is :func:`predictor_residual` of each channel (x in [0, 1]; an odd last row / column
    is dropped; the 2-pixel border is not predicted), size (H - 4) x (W - 4). Entries, channel-major (R, G, B):

    * ``[0:12]``, index ``4 * c + 2 * i + j``: ``log(mean(r**2 over phase (i, j)) + 1e-10)``
      for channel c, phases (0,0), (0,1), (1,0), (1,1);
    * ``[12:21]``, index ``12 + 3 * c + k``: ``log(|R(f_k)|**2 / mean(|R|**2) + 1e-10)`` with R the
      orthonormal 2D DFT of r, so the denominator is ``mean(r**2)`` (Parseval), and f_k the
      horizontal ``(0, W/2)``, vertical ``(H/2, 0)`` and diagonal ``(H/2, W/2)`` Nyquist bins.

    Directions, against the image the upsampling started from (tested):

    * bilinear 2x (and nearest) upsampling: every phase energy falls (interpolated pixels are
      predicted well) and all three Nyquist ratios fall far below those of photos, since both
      interpolation kernels are zero at Nyquist: a *lack* of high frequencies, log-ratios of
      about -10 to -23 where photos give about -4 to +3 (bicubic's kernel is not zero there,
      so only its phase energies fall reliably);
    * zero insertion (bed of nails): phase (0, 0) energy rises (a nail is predicted from four
      zeros, so ``r = x`` there) and phase (1, 1) falls to zero (a hole is surrounded by holes);
      the Nyquist bins receive the original's DC power, so all three ratios rise far above
      those of photos: an *excess* of high frequencies.
    """
    x = _even(checked_float_batch(images))
    n, c, h, w = x.shape
    if h < 8 or w < 8:
        raise ValueError(f"periodicity needs images of at least 8x8 pixels, got {images.shape[-2]}x{images.shape[-1]}.")
    r = predictor_residual(x)
    h, w = r.shape[-2:]
    sq = r.square().reshape(n, c, h // 2, 2, w // 2, 2)
    phases = sq.mean(dim=(2, 4)).reshape(n, c * 4)
    spec = torch.fft.rfft2(r, norm="ortho")  # (N, C, H, W//2 + 1); column W//2 is the Nyquist column
    power = spec.real.square() + spec.imag.square()
    nyq = torch.stack([power[..., 0, w // 2], power[..., h // 2, 0], power[..., h // 2, w // 2]], dim=-1)
    mean = r.square().mean(dim=(-2, -1))[..., None]
    ratios = (nyq / mean.clamp_min(PERIODICITY_EPS)).reshape(n, c * 3)
    return torch.cat([phases.add(PERIODICITY_EPS).log(), ratios.add(PERIODICITY_EPS).log()], dim=1)
