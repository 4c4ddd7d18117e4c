"""Architecture registry: build a generator or discriminator by name, resolution and upsampler.

Each architecture is a module (``gans.dcgan``, ``gans.sngan``) exposing
``build_generator(resolution, kinds, z_dim, width)``, ``build_discriminator(resolution,
width)``, ``n_upsampling_layers(resolution)``, ``DEFAULT_WIDTH`` and ``DEFAULTS`` (training
hyper-parameters of its paper). This module turns the user's choice of upsampler and
``upsample_layers`` policy into one kind per upsampling layer, validates every argument with an
error a person can act on, and records how a network was built in ``net.config`` so a
checkpoint can rebuild it with ``build_generator(**G.config)``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from types import ModuleType

from torch import nn

from gans import dcgan, sngan
from gans.sngan import check_shortcut
from gans.upsamplers import check_upsampler

ARCHITECTURES: dict[str, ModuleType] = {"dcgan": dcgan, "sngan": sngan}
RESOLUTIONS = (32, 64, 128)
ARCH_DEFAULTS: dict[str, dict] = {name: dict(mod.DEFAULTS) for name, mod in ARCHITECTURES.items()}


def _all_layers(kind: str, n: int) -> list[str]:
    return [kind] * n


def _last_layer(kind: str, n: int) -> list[str]:
    # Chandrasegaran et al. 2021: keep transposed convolutions, swap only the last layer.
    return ["transposed"] * (n - 1) + [kind]


# upsample_layers policy -> (kind, number of layers) -> kind of each layer
UPSAMPLE_LAYERS: dict[str, Callable[[str, int], list[str]]] = {"all": _all_layers, "last": _last_layer}


def check_arch(name: str) -> str:
    """Return ``name`` if it is a registered architecture, else raise a ValueError listing them."""
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}.")
    return name


def check_resolution(resolution: int) -> int:
    """Return ``resolution`` if the networks support it, else raise a ValueError listing 32, 64, 128."""
    try:
        value = operator.index(resolution)  # accepts numpy integers, rejects 32.0 and "32"
    except TypeError:
        value = None
    if value not in RESOLUTIONS:
        raise ValueError(
            f"Unsupported resolution {resolution!r}; choose one of: {', '.join(map(str, RESOLUTIONS))}."
        )
    return value


def check_upsample_layers(policy: str) -> str:
    """Return ``policy`` if it is "all" or "last", else raise a ValueError naming both."""
    if policy not in UPSAMPLE_LAYERS:
        raise ValueError(
            f"Unknown upsample_layers {policy!r}; choose one of: {', '.join(UPSAMPLE_LAYERS)}."
        )
    return policy


def _check_positive(value: int, name: str) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        n = 0
    if isinstance(value, bool) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return n


def layer_kinds(arch: str, resolution: int, upsampler: str, upsample_layers: str = "all") -> list[str]:
    """The upsampler kind of each upsampling layer of ``arch`` at ``resolution``, first to last."""
    n = ARCHITECTURES[check_arch(arch)].n_upsampling_layers(check_resolution(resolution))
    return UPSAMPLE_LAYERS[check_upsample_layers(upsample_layers)](check_upsampler(upsampler), n)


def build_generator(
    arch: str,
    resolution: int,
    upsampler: str,
    upsample_layers: str = "all",
    z_dim: int = 128,
    width: int | None = None,
    shortcut: str = "1x1",
    alias_free: bool = False,
) -> nn.Module:
    """Generator ``G(z: (N, z_dim)) -> (N, 3, R, R)`` in [-1, 1] with the chosen upsampler.

    ``shortcut`` ("1x1", the paper's, or "upsampler") is SNGAN's residual shortcut; DCGAN has
    none and ignores it. ``alias_free`` makes every ReLU of G StyleGAN3's filtered ReLU
    (:mod:`gans.alias_free`).
    """
    resolution = check_resolution(resolution)
    kinds = layer_kinds(arch, resolution, upsampler, upsample_layers)
    z_dim = _check_positive(z_dim, "z_dim")
    shortcut = check_shortcut(shortcut)
    mod = ARCHITECTURES[arch]
    width = mod.DEFAULT_WIDTH if width is None else _check_positive(width, "width")
    extra = {"shortcut": shortcut} if arch == "sngan" else {}
    if not isinstance(alias_free, bool):
        raise ValueError(f"alias_free must be true or false, got {alias_free!r}.")
    g = mod.build_generator(resolution, kinds, z_dim=z_dim, width=width, alias_free=alias_free, **extra)
    g.arch = arch
    g.upsampler = upsampler
    g.upsample_layers = upsample_layers
    g.config = {
        "arch": arch,
        "resolution": resolution,
        "upsampler": upsampler,
        "upsample_layers": upsample_layers,
        "z_dim": z_dim,
        "width": width,
        "shortcut": shortcut,
        "alias_free": alias_free,
    }
    return g


def build_discriminator(arch: str, resolution: int, width: int | None = None) -> nn.Module:
    """Discriminator ``D(x: (N, 3, R, R) in [-1, 1]) -> (N,)`` logits for ``arch``."""
    mod = ARCHITECTURES[check_arch(arch)]
    resolution = check_resolution(resolution)
    width = mod.DEFAULT_WIDTH if width is None else _check_positive(width, "width")
    d = mod.build_discriminator(resolution, width=width)
    d.arch = arch
    d.config = {"arch": arch, "resolution": resolution, "width": width}
    return d
