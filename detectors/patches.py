"""Native-resolution patch scoring: K crops per image on an aligned grid, one score per image.

A detector fitted at R px reads a 1,024 px image through one R px crop: 1.6 % of its pixels at
128 px. With ``patches=K`` (K = k * k, a square), a detector crops a k x k grid of R px patches
from each image larger than R, scores every patch, and aggregates the K scores into one:

* **positions**: along each axis, k offsets spread evenly from 0 to ``L - R`` and rounded down
  to a multiple of ``align``: 2 keeps every patch on the image's 2x2 grid (the upsampling grid
  that ``npr``, ``dwt``, ``haargrid`` and ``periodicity`` read); 8 also keeps it on the 8x8 block
  grid of a JPEG source. k = 1 is the aligned centre crop;
* **aggregation**: ``mean`` (default) averages the patches' logits, ``log(p / (1 - p))``, and maps
  the mean back through the sigmoid (evidence adds up over the image); ``max`` takes the largest
  patch score (one fake region suffices);
* **cost**: the image is decoded once and the crops are views gathered into one batch, so the
  feature runs on N * K patches of R px in the same batched calls as N * K single crops would.
"""

from __future__ import annotations

import math

import numpy as np
import torch

PATCH_REDUCTIONS = ("mean", "max")
LOGIT_EPS = 1e-6


def check_patches(k: int | None, reduce: str = "mean", align: int = 2) -> None:
    """Raise a ValueError naming the first bad patch parameter."""
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or math.isqrt(k) ** 2 != k:
            raise ValueError(f"patches must be a square number of crops per image (1, 4, 9, 16, ...), got {k!r}.")
    if reduce not in PATCH_REDUCTIONS:
        raise ValueError(f"Unknown patch aggregation {reduce!r}; choose one of: {', '.join(PATCH_REDUCTIONS)}.")
    if isinstance(align, bool) or not isinstance(align, int) or align < 1:
        raise ValueError(f"patch_align must be a positive number of pixels (2 for the 2x2 grid, 8 for JPEG), got {align!r}.")


def check_patch_options(patches: int | None, patch_size: int | None, reduce: str, resolution: int) -> None:
    """The command-line check of ``--patches K --patch-size R --patch-reduce``: one sentence for the first bad one."""
    check_patches(patches, reduce)
    if patches is not None and (patch_size is None or not 4 <= patch_size <= resolution):
        raise ValueError(f"--patches needs --patch-size, a crop side between 4 and the image size ({resolution} px), "
                         f"got {patch_size}.")


def grid_offsets(length: int, size: int, per_side: int, align: int = 2) -> list[int]:
    """``per_side`` crop offsets along an axis of ``length`` pixels: evenly spread, rounded down to multiples of ``align``."""
    if size > length:
        raise ValueError(f"A {size} px patch does not fit in {length} px; give images of at least {size} px or a smaller patch size.")
    room = length - size
    if per_side == 1:
        spots = [room / 2]
    else:
        spots = [i * room / (per_side - 1) for i in range(per_side)]
    return [int(s // align) * align for s in spots]


def crop_patches(images: torch.Tensor, size: int, k: int, align: int = 2) -> torch.Tensor:
    """(N, C, H, W) -> (N * k, C, size, size): a sqrt(k) x sqrt(k) grid of crops per image, image-major."""
    side = math.isqrt(k)
    rows = grid_offsets(int(images.shape[-2]), size, side, align)
    cols = grid_offsets(int(images.shape[-1]), size, side, align)
    crops = [images[..., r : r + size, c : c + size] for r in rows for c in cols]
    return torch.stack(crops, dim=1).reshape(-1, images.shape[1], size, size)


def aggregate(scores: np.ndarray, k: int, reduce: str = "mean") -> np.ndarray:
    """(N * k,) patch fakeness scores, image-major -> (N,) image scores: mean of logits, or max."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1, k)
    if reduce == "max":
        return s.max(axis=1)
    p = np.clip(s, LOGIT_EPS, 1.0 - LOGIT_EPS)
    z = np.log(p) - np.log1p(-p)
    return 1.0 / (1.0 + np.exp(-z.mean(axis=1)))
