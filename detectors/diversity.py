"""Sample diversity of a fake set relative to the real set: a mode-collapse alarm that needs no weights.

The figure is the mean pairwise L2 distance between the low-pass images of N fakes divided by
the same mean over N real images: 1 when the fakes vary as much as the real images, 0 when
every fake is the same image.

Why low-pass pixels: LPIPS (or any learned feature) needs pretrained weights that an offline
machine does not have. Plain pixel L2 is fooled by exactly the failure it must catch: a
collapsed GAN often emits one layout overlaid with per-sample high-frequency noise or
checkerboard texture (the upsamplers' artefacts), which keeps raw pixel distances high. Area
averaging each image down to ``LOWPASS_SIZE`` x ``LOWPASS_SIZE`` (8 x 8, i.e. 4 x 4 blocks at
32 px) keeps the colours and composition that differ between real photos and removes those
textures, so the distance measures *what* is drawn, not its fine-grained noise.

``DIVERSITY_WARNING`` = 0.3: the quickstart's generators that visibly collapsed to one grey
pattern (transposed, transposed + spectral D, before the fixes of issue 10) scored 0.06 and
0.16, blurry but varied ones 0.47-0.99. Below 0.3 a set varies less than a third as much as
the photos it imitates, which no working generator does; the report flags it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detectors.batches import checked_float_batch, validate_batch

LOWPASS_SIZE = 8
DIVERSITY_WARNING = 0.3
DEFAULT_SAMPLES = 512


def lowpass_pixels(images: torch.Tensor, size: int = LOWPASS_SIZE) -> torch.Tensor:
    """(N, C*size*size) area-averaged images in [0, 1] (uint8 scaled; float used as given)."""
    x = checked_float_batch(images)
    if x.shape[-1] > size or x.shape[-2] > size:
        x = F.adaptive_avg_pool2d(x, size)
    return x.reshape(x.shape[0], -1).double()


def _subsample(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    if images.shape[0] <= n:
        return images
    idx = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx.sort().values]


def mean_pairwise_distance(images: torch.Tensor, n: int = DEFAULT_SAMPLES, seed: int = 0,
                           size: int = LOWPASS_SIZE) -> float:
    """Mean L2 distance over all pairs of ``n`` images (a seeded subset) after low-pass filtering."""
    x = _subsample(validate_batch(images), n, seed)
    if x.shape[0] < 2:
        raise ValueError(f"Diversity needs at least 2 images, got {x.shape[0]}; generate more fakes.")
    f = lowpass_pixels(x, size)
    d = torch.cdist(f, f)
    m = f.shape[0]
    return float(d.sum() / (m * (m - 1)))  # the diagonal is 0: mean over the m(m-1) ordered pairs


def diversity(fake: torch.Tensor, real: torch.Tensor, n: int = DEFAULT_SAMPLES, seed: int = 0) -> dict[str, float]:
    """``diversity`` = fakes' mean pairwise low-pass distance / the real set's, and both distances."""
    d_real = mean_pairwise_distance(real, n, seed)
    if d_real <= 0:
        raise ValueError("The real images are all identical, so diversity has no scale; give varied real images.")
    d_fake = mean_pairwise_distance(fake, n, seed)
    return {"diversity": d_fake / d_real, "pairwise_fake": d_fake, "pairwise_real": d_real}


def collapsed(value: float, level: float = DIVERSITY_WARNING) -> bool:
    """True when a diversity figure lies below the warning level (likely mode collapse)."""
    return value < level
