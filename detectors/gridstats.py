"""``haargrid``: Haar detail statistics of the 2x2 cells at all four grid offsets, for a density model of real images.

2x upsampling ties the four pixels of every cell of its own 2x2 grid (the cells anchored at
even rows and columns) together, and leaves the cells that straddle two grid cells alone. In a
photo, nothing marks the even grid: a cell's statistics are the same at any offset. This
feature measures the same statistics at the four offsets ``(dy, dx)`` in {0, 1}^2, so that the
*differences* between offsets — near zero for photos whatever their content — carry the
upsampling trace, while the *common level* carries content (sharpness, noise), which a density
model of real images learns to expect.

Per offset, the image (x in [0, 1], each RGB channel) is cut into 2x2 cells ``[[a, b], [c, d]]``
starting at row ``dy`` and column ``dx``; the one-level Haar detail coefficients of each cell are
``LH = (a + b - c - d) / 2`` (vertical change), ``HL = (a - b + c - d) / 2`` (horizontal) and
``HH = (a - b - c + d) / 2`` (diagonal) — SAFE's DWT bands (Li et al., KDD 2025) and the
information of NPR's residual (Tan et al., CVPR 2024), taken on the four grids instead of one.
For every (offset, channel, band): ``log(mean(coef^2) + 1e-10)`` and ``log(mean(|coef|) + 1e-10)``
(energy and a heavy-tail-sensitive level). All offsets use the same ``(H - 2) x (W - 2)`` window
(even size), so they average over the same number of cells. 72 numbers per image, at any
resolution (statistics pool over the whole image: native resolution, no resizing).

Layout, index ``24 * o + 8 * c + ...``: offset ``o = 2 * dy + dx``, channel ``c``; within it,
energies of LH, HL, HH then levels of LH, HL, HH — see :func:`haar_grid_stats`, which returns
them as (N, 4, 3, 2, 3) = (offset, channel, statistic, band) before flattening.

Paired with ``deviation`` fitted on real images alone (``haargrid:deviation``, real-only) this
is the lab's density model of wavelet statistics at native resolution; departures from the
papers: no network (SAFE and NPR train a ResNet on fakes), no fakes at all, and statistics of
four grids rather than a map of one.
"""

from __future__ import annotations

import torch

from detectors.batches import checked_float_batch

HAARGRID_EPS = 1e-10


def haar_grid_stats(images: torch.Tensor) -> torch.Tensor:
    """(N, 4, 3, 2, 3): per grid offset, channel, statistic (log energy, log mean |.|) and Haar band (LH, HL, HH)."""
    x = checked_float_batch(images)
    n, c, h, w = x.shape
    if h < 4 or w < 4:
        raise ValueError(f"haargrid needs images of at least 4x4 pixels, got {h}x{w}.")
    hh, ww = (h - 2) - (h - 2) % 2, (w - 2) - (w - 2) % 2
    out = []
    for dy in (0, 1):
        for dx in (0, 1):
            cells = x[..., dy : dy + hh, dx : dx + ww].reshape(n, c, hh // 2, 2, ww // 2, 2)
            a, b = cells[:, :, :, 0, :, 0], cells[:, :, :, 0, :, 1]
            cc, d = cells[:, :, :, 1, :, 0], cells[:, :, :, 1, :, 1]
            bands = torch.stack([(a + b - cc - d), (a - b + cc - d), (a - b - cc + d)], dim=2) / 2  # (N, C, 3, h, w)
            energy = bands.square().mean(dim=(-2, -1))
            level = bands.abs().mean(dim=(-2, -1))
            out.append(torch.stack([energy, level], dim=2))  # (N, C, 2, 3)
    return torch.stack(out, dim=1).add(HAARGRID_EPS).log()


def haargrid(images: torch.Tensor) -> torch.Tensor:
    """72 numbers per image: :func:`haar_grid_stats` flattened (see the module docstring)."""
    s = haar_grid_stats(images)
    return s.reshape(s.shape[0], -1)
