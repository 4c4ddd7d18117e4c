"""Adversarial losses chosen by name: non-saturating BCE, hinge and least squares.

Each loss is a pair of functions on raw discriminator logits (no sigmoid applied):
``d(real_logits, fake_logits)`` for the discriminator and ``g(fake_logits)`` for the
generator. Both return a scalar mean over the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class GANLoss:
    """A discriminator loss and the generator loss that goes with it."""

    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]
    doc: str


LOSSES: dict[str, GANLoss] = {}


def register_loss(name: str, d, g, doc: str) -> None:
    """Add a (discriminator, generator) loss pair to the registry under ``name``."""
    LOSSES[name] = GANLoss(d=d, g=g, doc=doc)


# Non-saturating GAN (Goodfellow et al. 2014) in the softplus form:
# -log(sigmoid(x)) = softplus(-x) and -log(1 - sigmoid(x)) = softplus(x), stable for any logit.
register_loss(
    "bce",
    d=lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
    g=lambda fake: F.softplus(-fake).mean(),
    doc="non-saturating binary cross-entropy (DCGAN)",
)

# Hinge loss (Lim & Ye 2017; Miyato et al. 2018 use it for SNGAN).
register_loss(
    "hinge",
    d=lambda real, fake: F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean(),
    g=lambda fake: -fake.mean(),
    doc="hinge (SNGAN)",
)

# Least squares GAN (Mao et al. 2017) with targets a=0 (fake), b=c=1 (real).
register_loss(
    "lsgan",
    d=lambda real, fake: 0.5 * ((real - 1.0).square().mean() + fake.square().mean()),
    g=lambda fake: 0.5 * (fake - 1.0).square().mean(),
    doc="least squares (LSGAN)",
)


def check_loss(name: str) -> str:
    """Return ``name`` if it is a registered loss, else raise a ValueError listing the valid names."""
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; choose one of: {', '.join(LOSSES)}.")
    return name


def _logits(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.numel() == 0:
        raise ValueError(f"{what} must be a non-empty tensor of discriminator logits.")
    # Losses are computed in float32 even under bf16 autocast: the means of softplus terms
    # lose too many digits in bfloat16. float64 stays float64 (gradient checks use it).
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return x.reshape(-1)


def d_loss(name: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss ``name`` from logits on real and on generated images (scalar)."""
    loss = LOSSES[check_loss(name)]
    return loss.d(_logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits"))


def g_loss(name: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss ``name`` from the discriminator's logits on generated images (scalar)."""
    return LOSSES[check_loss(name)].g(_logits(fake_logits, "fake_logits"))
