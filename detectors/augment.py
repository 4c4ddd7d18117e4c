"""Training-time augmentation after Wang et al. (CVPR 2020), and the deterministic perturbations.

Wang et al., "CNN-generated images are surprisingly easy to spot... for now", train with
horizontal flips, Gaussian blur (sigma ~ U[0, 3]) and JPEG compression (quality ~ U{30..100}),
each applied with a probability p. Here all three work on whole batches of ``(N, 3, H, W)``
images, uint8 (0..255) or float in [0, 1], and return the same dtype on the same device.
They run on raw images *before* feature extraction, so a spectral classifier also learns
from blurred and compressed images.

:func:`blur` and :func:`jpeg` are the deterministic versions used for test-time robustness
checks (the transfer matrix's ``--jpeg``, ``pipelines.data.images.perturb``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

__all__ = ["Augmentation", "augment", "blur", "flip", "gaussian_kernels", "jpeg"]


def _check_batch(images: torch.Tensor) -> torch.Tensor:
    """Validate an (N, C, H, W) uint8 or floating-point batch and return it."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}.")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}.")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}.")
    return images


def _as_sequence(value: float | Sequence[float] | torch.Tensor, n: int, name: str) -> torch.Tensor:
    """Broadcast a scalar or per-image sequence to a float64 CPU tensor of length n."""
    t = torch.as_tensor(value, dtype=torch.float64).flatten().cpu()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{name} must be one value or one per image ({n}), got {t.numel()} values.")
    return t


def flip(images: torch.Tensor) -> torch.Tensor:
    """Mirror every image of the batch horizontally (left-right)."""
    return torch.flip(_check_batch(images), dims=(-1,))


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, 2*radius+1) normalised 1D Gaussian kernels, one per sigma; sigma 0 gives a unit impulse."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=sigma.device)
    # A tiny floor keeps the division finite; exp(-x^2 / tiny) is then exactly 0 off-centre,
    # so sigma = 0 yields an exact impulse and blurring with it is the identity.
    s = sigma.to(torch.float64).clamp_min(1e-8)[:, None]
    k = torch.exp(-(x[None, :] ** 2) / (2 * s**2))
    return k / k.sum(dim=1, keepdim=True)


def blur(images: torch.Tensor, sigma: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Gaussian blur with one sigma for the batch or one per image (separable, reflect padding)."""
    images = _check_batch(images)
    n, c, h, w = images.shape
    sig = _as_sequence(sigma, n, "sigma")
    if bool((sig < 0).any()) or not bool(torch.isfinite(sig).all()):
        raise ValueError("sigma must be finite and >= 0; 0 leaves an image unchanged.")
    if n == 0 or float(sig.max()) == 0.0:
        return images.clone()
    # Truncate at 3 sigma (as most libraries do), but reflect padding needs radius < size.
    radius = min(math.ceil(3 * float(sig.max())), h - 1, w - 1)
    if radius < 1:
        return images.clone()
    x = images.float() if images.dtype == torch.uint8 else images
    k = gaussian_kernels(sig.to(images.device), radius).to(x.dtype)  # (N, K)
    k = k.repeat_interleave(c, dim=0)  # (N*C, K): one kernel per image and channel
    # Each (image, channel) plane is its own group, so every image gets its own sigma in one conv.
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=n * c)
    y = y.reshape(n, c, h, w)
    if images.dtype == torch.uint8:
        return y.round().clamp(0, 255).to(torch.uint8)
    return y


def jpeg(images: torch.Tensor, quality: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """JPEG-compress and decode each image (libjpeg on CPU) at one quality or one per image (1..100)."""
    images = _check_batch(images)
    n = images.shape[0]
    if images.shape[1] not in (1, 3):
        raise ValueError(f"jpeg needs 1 or 3 channels, got {images.shape[1]}.")
    q = _as_sequence(quality, n, "quality")
    if bool(((q < 1) | (q > 100) | (q != q.round())).any()):
        raise ValueError("JPEG quality must be an integer between 1 and 100.")
    if n == 0:
        return images.clone()
    is_float = images.is_floating_point()
    u8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8) if is_float else images
    u8 = u8.cpu().contiguous()
    out = torch.empty_like(u8)
    q = q.long()
    # torchvision >= 0.29 warns that its codecs will move to torchcodec; they still work and
    # torchcodec is not a dependency, so the warning would only be noise for every batch.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        # encode_jpeg takes a list but one quality, so images are grouped by quality.
        for qual in torch.unique(q).tolist():
            idx = torch.nonzero(q == qual).flatten()
            encoded = encode_jpeg([u8[i] for i in idx.tolist()], quality=int(qual))
            out[idx] = torch.stack(decode_jpeg(encoded))
    out = out.to(images.device)
    return out.to(images.dtype) / 255.0 if is_float else out


@dataclass(frozen=True)
class Augmentation:
    """Wang et al. augmentation: flip, blur sigma ~ U[0, sigma_max], JPEG quality ~ U{lo..hi}, each with prob p.

    ``flip_p`` overrides the flip probability (Wang et al. flip with 0.5); by default it is ``p``,
    so ``p=0`` is the identity.
    """

    p: float = 0.1
    flip_p: float | None = None
    sigma_max: float = 3.0
    quality: tuple[int, int] = (30, 100)

    def __post_init__(self) -> None:
        for name, v in (("p", self.p), ("flip_p", self.p if self.flip_p is None else self.flip_p)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"Augmentation {name} must be a probability in [0, 1], got {v}.")
        if self.sigma_max < 0:
            raise ValueError(f"Augmentation sigma_max must be >= 0, got {self.sigma_max}.")
        lo, hi = self.quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"Augmentation quality must be a range 1 <= lo <= hi <= 100, got {self.quality}.")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch; draws come from ``generator`` (CPU) so a seed reproduces them."""
        images = _check_batch(images)
        n = images.shape[0]
        if n == 0:
            return images
        flip_p = self.p if self.flip_p is None else self.flip_p
        # All random draws happen up front on the CPU generator, so results do not depend
        # on the device or on which branches fire.
        u = torch.rand(3, n, generator=generator)
        sigma = torch.rand(n, generator=generator, dtype=torch.float64) * self.sigma_max
        lo, hi = self.quality
        qual = torch.randint(lo, hi + 1, (n,), generator=generator)
        do_flip, do_blur, do_jpeg = u[0] < flip_p, u[1] < self.p, u[2] < self.p

        out = images.clone()
        idx = torch.nonzero(do_flip).flatten().to(images.device)
        if idx.numel():
            out[idx] = flip(out[idx])
        sel = torch.nonzero(do_blur).flatten()
        if sel.numel():
            out[sel.to(images.device)] = blur(out[sel.to(images.device)], sigma[sel])
        sel = torch.nonzero(do_jpeg).flatten()
        if sel.numel():
            out[sel.to(images.device)] = jpeg(out[sel.to(images.device)], qual[sel])
        return out


def augment(
    images: torch.Tensor, p: float = 0.1, generator: torch.Generator | None = None, **options
) -> torch.Tensor:
    """Apply :class:`Augmentation` with probability ``p`` per transform (options: flip_p, sigma_max, quality)."""
    return Augmentation(p=p, **options)(images, generator)
