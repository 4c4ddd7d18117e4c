"""DCGAN generator and discriminator (Radford et al. 2016) for 32, 64 and 128 px.

Generator: z -> linear projection to a 4x4 base (the paper's "project and reshape") ->
``log2(R/4)`` upsampling layers, each followed by BatchNorm + ReLU except the last, which
maps straight to RGB and ends in tanh. Every upsampling layer is built by
:func:`gans.upsamplers.make_upsampler` with the kind given for that layer, so the
last-layer-only variant of Chandrasegaran et al. (2021) is a list of kinds such as
``["transposed", "transposed", "nearest"]`` (``gans.networks`` builds that list).

Channels at the 4x4 base are ``width * min(8, 2**(n-1))`` and halve with each layer, capped
at ``8 * width`` as in the paper's 64 px model (``width=128`` there; 64 is the common choice).

Discriminator: strided 4x4 convolutions with LeakyReLU(0.2) and BatchNorm on every layer but
the first, then a 4x4 valid convolution to one logit. BatchNorm is kept because the paper
uses it (it is part of the DCGAN whose fingerprints we study); the paper leaves it off the
input layer because normalising the raw image made training oscillate. Consequence for
training: real and fake images must be fed to D in separate batches, as in the paper.

``alias_free``: every ReLU of the generator is StyleGAN3's filtered ReLU
(:class:`gans.alias_free.FilteredReLU`), evaluated at twice the rate; the output tanh stays
pointwise (see :mod:`gans.alias_free`). Same weights, same checkpoint keys.

Weights are initialised from N(0, 0.02) (BatchNorm scales from N(1, 0.02)) as in the paper;
the draw uses torch's global generator, so ``torch.manual_seed`` makes it reproducible.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gans.alias_free import relu
from gans.upsamplers import make_upsampler

DEFAULT_WIDTH = 64
# Training defaults from Radford et al.: Adam lr 2e-4, beta1 0.5; one D step per G step.
DEFAULTS = {"loss": "bce", "lr": 2e-4, "betas": (0.5, 0.999), "n_dis": 1, "lr_decay": None}


def n_upsampling_layers(resolution: int) -> int:
    """Number of x2 upsampling layers from the 4x4 base to ``resolution`` px."""
    return int(math.log2(resolution // 4))


def generator_channels(resolution: int, width: int) -> list[int]:
    """Channels at the 4x4 base and after each upsampling layer (the last is 3, RGB)."""
    n = n_upsampling_layers(resolution)
    return [width * min(8, 2 ** (n - 1 - i)) for i in range(n)] + [3]


def discriminator_channels(resolution: int, width: int) -> list[int]:
    """Output channels of each strided convolution of the discriminator."""
    return [width * min(8, 2**i) for i in range(n_upsampling_layers(resolution))]


def init_weights(module: nn.Module) -> None:
    """Radford et al.'s initialisation: conv/linear weights N(0, 0.02), BatchNorm scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """DCGAN generator: ``G(z: (N, z_dim)) -> (N, 3, R, R)`` in [-1, 1]."""

    def __init__(self, resolution: int, kinds: list[str], z_dim: int = 128, width: int = DEFAULT_WIDTH,
                 alias_free: bool = False):
        super().__init__()
        if len(kinds) != n_upsampling_layers(resolution):
            raise ValueError(
                f"A {resolution} px DCGAN has {n_upsampling_layers(resolution)} upsampling layers, "
                f"got {len(kinds)} upsampler kinds."
            )
        self.z_dim = z_dim
        self.resolution = resolution
        self.kinds = tuple(kinds)
        self.alias_free = alias_free
        ch = generator_channels(resolution, width)
        self.upsample_channels = tuple(zip(ch[:-1], ch[1:], strict=True))
        # No bias before BatchNorm: the normalisation would remove it anyway.
        self.project = nn.Sequential(
            nn.Linear(z_dim, ch[0] * 16, bias=False),
            nn.Unflatten(1, (ch[0], 4, 4)),
            nn.BatchNorm2d(ch[0]),
            relu(alias_free),
        )
        self.ups = nn.ModuleList(
            make_upsampler(kind, cin, cout)
            for kind, (cin, cout) in zip(kinds, self.upsample_channels, strict=True)
        )
        # The output layer gets no BatchNorm (Radford et al.: it made samples oscillate).
        self.acts = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(cout), relu(alias_free))
            for _, cout in self.upsample_channels[:-1]
        )
        self.acts.append(nn.Tanh())
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latent codes (N, z_dim) to images (N, 3, R, R) in [-1, 1]."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}.")
        x = self.project(z)
        for up, act in zip(self.ups, self.acts, strict=True):
            x = act(up(x))
        return x


class Discriminator(nn.Module):
    """DCGAN discriminator: ``D(x: (N, 3, R, R) in [-1, 1]) -> (N,)`` logits."""

    def __init__(self, resolution: int, width: int = DEFAULT_WIDTH):
        super().__init__()
        self.resolution = resolution
        ch = discriminator_channels(resolution, width)
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in zip(ch[:-1], ch[1:], strict=True):
            layers += [
                nn.Conv2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ch[-1], 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one real-vs-fake logit per image, shape (N,)."""
        check_input(x, self.resolution)
        return self.net(x).reshape(x.shape[0])


def check_input(x: torch.Tensor, resolution: int) -> None:
    """Raise a ValueError unless ``x`` is an (N, 3, resolution, resolution) float batch."""
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, resolution, resolution):
        raise ValueError(
            f"The discriminator expects images of shape (N, 3, {resolution}, {resolution}), "
            f"got {tuple(x.shape)}; resize the images to the network's resolution."
        )


def build_generator(resolution: int, kinds: list[str], z_dim: int = 128, width: int = DEFAULT_WIDTH,
                    alias_free: bool = False) -> Generator:
    """DCGAN generator for ``resolution`` px with one upsampler kind per upsampling layer."""
    return Generator(resolution, kinds, z_dim=z_dim, width=width, alias_free=alias_free)


def build_discriminator(resolution: int, width: int = DEFAULT_WIDTH) -> Discriminator:
    """DCGAN discriminator for ``resolution`` px."""
    return Discriminator(resolution, width=width)
