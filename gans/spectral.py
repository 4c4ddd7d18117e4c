"""Spectral losses for generator training: a spectral discriminator and a spectral regulariser.

Both look at the same differentiable 1D spectrum: the azimuthal mean of the grayscale log
power spectrum up to the Nyquist radius, computed by :func:`detectors.features.radial_profile`
(the one implementation shared with the detectors and reports), floored at the uint8
quantisation noise and min-max scaled per image by :func:`detectors.profiles.normalize_profile`
(the rule of the spectral-fidelity metric). Departure from Jung & Keuper and Durall et al.,
whose profiles run to the corner of the spectrum and have no floor: the rings beyond Nyquist
hold 1-4 frequencies each at 32 px and power below the quantisation floor is not in any saved
image, so both would anchor the per-image scaling on noise.

* :class:`SpectralDiscriminator` (Jung & Keuper, AAAI 2021): a classifier on that profile,
  trained beside the image discriminator with its own optimiser; by default a single linear
  layer (their "linear" variant), with ``hidden`` an MLP (their "nonlinear" variant).
* :func:`spectral_regularization` (Durall et al., CVPR 2020): binary cross-entropy between
  the generated batch's mean profile and the real data's mean profile.

Gradients flow from both losses through ``torch.fft.rfft2`` into the generator; nothing here
detaches the generated images (tests/test_spectral.py checks it against finite differences).
The spectra are computed with autocast disabled, in float32 (float64 input stays float64),
because a bf16 log power spectrum loses the high-frequency detail these losses exist to match.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from detectors.features import n_radii, radial_profile
from detectors.profiles import normalize_profile

EPS = 1e-6


def spectral_profile(x: torch.Tensor, nyquist: bool = True) -> torch.Tensor:
    """Floored, min-max scaled radial log power profile (N, n_radii) of images in [-1, 1] (or uint8).

    ``nyquist=False`` keeps the rings beyond the Nyquist radius (the papers' full profile).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (N, 3, H, W), got {type(x).__name__}.")
    with torch.autocast(device_type=x.device.type, enabled=False):
        # Map [-1, 1] to [0, 1] so that the spectrum matches the detectors' (uint8 / 255) one;
        # radial_profile scales uint8 itself.
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x01 = x if x.dtype == torch.uint8 else (x + 1.0) * 0.5
        return normalize_profile(radial_profile(x01, nyquist=nyquist))


def profile_length(resolution: int, nyquist: bool = True) -> int:
    """Length of the spectral profile of a ``resolution`` x ``resolution`` image."""
    return n_radii(resolution, resolution, nyquist=nyquist)


@torch.no_grad()
def real_mean_profile(images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Mean spectral profile (n_radii,) of a real image set (uint8, or float in [-1, 1]), once."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError("real_mean_profile needs a non-empty (N, 3, H, W) image tensor.")
    total = None
    for i in range(0, images.shape[0], batch_size):
        s = spectral_profile(images[i : i + batch_size]).double().sum(0)
        total = s if total is None else total + s
    return (total / images.shape[0]).float()


def spectral_regularization(fake_images: torch.Tensor, real_mean_profile: torch.Tensor) -> torch.Tensor:
    """Durall et al.'s spectral loss: BCE between the fake batch's mean profile and the real one."""
    with torch.autocast(device_type=fake_images.device.type, enabled=False):
        p = spectral_profile(fake_images).mean(0)
        if real_mean_profile.shape != p.shape:
            raise ValueError(
                f"real_mean_profile has shape {tuple(real_mean_profile.shape)} but images of "
                f"{tuple(fake_images.shape[-2:])} px give profiles of shape {tuple(p.shape)}; "
                "compute it with real_mean_profile() on real images of the same resolution."
            )
        t = real_mean_profile.to(device=p.device, dtype=p.dtype).clamp(0.0, 1.0)
        # Entries where every image attains its min or max sit at exactly 0 or 1; clamping keeps
        # the log finite there (their gradient is zero anyway, the per-image min-max pins them).
        p = p.clamp(EPS, 1.0 - EPS)
        return -(t * torch.log(p) + (1.0 - t) * torch.log1p(-p)).mean()


class SpectralDiscriminator(nn.Module):
    """Jung & Keuper's spectral discriminator: ``forward(images in [-1, 1]) -> (N,)`` logits."""

    def __init__(self, resolution: int, hidden: int | None = None):
        super().__init__()
        if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or resolution < 4:
            raise ValueError(f"resolution must be an integer >= 4, got {resolution!r}.")
        resolution = int(resolution)
        if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"hidden must be None (linear classifier) or a positive integer, got {hidden!r}.")
        self.resolution = resolution
        self.hidden = hidden
        n = profile_length(resolution)
        if hidden is None:
            self.net = nn.Linear(n, 1)
        else:
            self.net = nn.Sequential(nn.Linear(n, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return one real-vs-fake logit per image from its spectral profile, shape (N,)."""
        r = self.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(
                f"SpectralDiscriminator({r}) expects images of shape (N, 3, {r}, {r}), "
                f"got {tuple(images.shape)}."
            )
        return self.net(spectral_profile(images)).reshape(images.shape[0])
