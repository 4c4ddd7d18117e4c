"""The EMA generator: a moving average of the generator's weights, with BatchNorm statistics of its own.

Averaging the weights is not enough for a generator with BatchNorm. Its running statistics
describe the activations of the network they were measured on; copied from the online
generator, they normalise the EMA network's activations with another network's means and
variances, so every fake set sampled from EMA weights in eval mode is subtly (at short runs,
badly) off. BigGAN (Brock et al. 2019, "standing statistics") re-estimates them on the network
that is sampled; so do we:

* :func:`update_ema` moves the parameters only; buffers are left alone.
* :func:`standing_bn_statistics` resets every BatchNorm layer's running mean and variance and
  re-estimates them as the plain average over a fixed set of latent batches run through the
  network in training mode (BatchNorm's cumulative mode, ``momentum=None``). The latents come
  from their own seed, so the statistics are a function of the weights alone: reproducible,
  identical on every rank, and untouched by (and not touching) the training RNG streams.

The training loop recomputes them before it writes samples and at every checkpoint, so any
generator loaded from a checkpoint carries statistics that belong to its weights.
"""

from __future__ import annotations

import torch
from torch import nn

from gans.sampling import derive_seed, latents

# Batches of latents the standing statistics average over (each of the training batch size).
STANDING_BATCHES = 16

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def update_ema(ema: nn.Module, online: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * online`` for every parameter; buffers are not touched."""
    targets, sources = list(ema.parameters()), [p.detach() for p in online.parameters()]
    if len(targets) != len(sources):
        raise ValueError(f"The EMA network has {len(targets)} parameters and the online one {len(sources)}; "
                         "build both from the same config.")
    # One multi-tensor kernel for all parameters (per-parameter lerp_ launched one kernel each);
    # the same arithmetic, so the same numbers.
    torch._foreach_lerp_(targets, sources, 1.0 - decay)


def standing_latents(seed: int, z_dim: int, batch_size: int, n_batches: int = STANDING_BATCHES) -> torch.Tensor:
    """The fixed latents (n_batches, batch_size, z_dim) that standing statistics are measured on."""
    z = latents(derive_seed(seed, "standing-bn"), range(n_batches * batch_size), z_dim)
    return z.reshape(n_batches, batch_size, z_dim)


@torch.no_grad()
def standing_bn_statistics(G: nn.Module, z_batches: torch.Tensor) -> nn.Module:
    """Replace G's BatchNorm running statistics by their average over ``z_batches`` (B, N, z_dim).

    Each BatchNorm layer ends with the mean over the B batches of its batch means and of its
    (unbiased) batch variances, exactly what ``momentum=None`` accumulates. G's training flag
    and every layer's momentum are restored; G is returned for chaining.
    """
    bns = [m for m in G.modules() if isinstance(m, _BN)]
    if not bns:
        return G
    was_training = G.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average instead of an exponential one
    device = next(G.parameters()).device
    G.train()
    try:
        # float32 regardless of any autocast around the caller: these are statistics to keep.
        with torch.autocast(device_type=device.type, enabled=False):
            for z in z_batches:
                G(z.to(device))
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        G.train(was_training)
    return G
