"""ResNet SNGAN generator and discriminator (Miyato et al. 2018) for 32, 64 and 128 px.

Generator: z -> linear to a 4x4 base -> ``log2(R/4)`` residual up-blocks -> BN, ReLU,
conv3x3 to RGB, tanh. In the paper a block is ``BN, ReLU, upsample, conv3x3, BN, ReLU,
conv3x3`` with shortcut ``upsample, conv1x1``. The chosen upsampler kind builds the main
path's "upsample + conv3x3" (``make_upsampler(kind, in_ch, out_ch)``); ``shortcut`` chooses
the residual path:

* ``"1x1"`` (default, the paper's): the kind's own weight-free resampling (nearest,
  bilinear, bicubic, zero insertion, binomial FIR or sinc low-pass) followed by a 1x1 conv; the
  learned kinds (``transposed``, ``pixelshuffle``) have no fixed resampling, so their shortcut
  uses nearest, as the paper does. Fingerprint: for the fixed kinds both paths carry the same
  resampling, so the network's fingerprint is that kind's alone; for the learned kinds the
  shortcut adds nearest's (weak, low-pass) fingerprint beside the learned one, so their SNGAN
  fakes are "transposed (or pixelshuffle) + nearest on the skip path", as in every SNGAN. The
  1x1 conv is applied before the resampling: a 1x1 conv mixes channels per pixel and every
  resampling here acts on each channel alone, so both orders are the same linear map (the
  bias is added after the resampling, exactly as in the paper's order), at a quarter of the
  cost.
* ``"upsampler"``: a second full ``make_upsampler(kind, in_ch, out_ch)`` (a 3x3 conv after
  fixed resamplings, a 4x4 transposed conv, a 3x3 conv + pixel shuffle). Fingerprint: both
  paths carry exactly the chosen kind, so nothing else can be blamed for it, at the price of a
  larger model than the paper's (3x3 / 4x4 instead of 1x1 shortcut kernels).

``alias_free``: every ReLU of the generator (two per up-block, one before the RGB conv) is
StyleGAN3's filtered ReLU (:class:`gans.alias_free.FilteredReLU`); the tanh stays pointwise.

Discriminator: an optimised first block (conv3x3, ReLU, conv3x3, avgpool; shortcut avgpool,
conv1x1), residual down-blocks, ReLU, global *sum* pooling, linear head; spectral
normalisation on every convolution and linear layer.

Channel plans (``width=64`` reproduces the paper and torch-mimicry's SNGAN-32/64/128): 32 px
G 4w constant (256), D 2w constant (128) -- with the ``1x1`` shortcut and ``nearest`` this is
4,276,739 G and 1,053,825 D parameters, torch-mimicry's counts --; 64 px G 16w..w, D w..16w; 128 px G 16w,16w..w, D w..16w plus one block at 16w without
downsampling. Initialisation as in the authors' code: Xavier uniform, gain sqrt(2) on residual
paths and 1 on shortcuts, projections and heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from gans.alias_free import relu
from gans.dcgan import check_input
from gans.upsamplers import fixed_resampling, make_upsampler

DEFAULT_WIDTH = 64
# Residual shortcut of the generator's up-blocks: the paper's resampling + 1x1 conv, or a second
# copy of the chosen upsampler (see the module docstring for what each means for the fingerprint).
SHORTCUTS = ("1x1", "upsampler")
DEFAULT_SHORTCUT = "1x1"
# Training defaults of the paper's ResNet setting: hinge loss, Adam(2e-4, 0, 0.9), five D steps
# per G step, learning rate decayed linearly to zero over the run.
DEFAULTS = {"loss": "hinge", "lr": 2e-4, "betas": (0.0, 0.9), "n_dis": 5, "lr_decay": "linear"}

# Generator channels (multiples of width) at the 4x4 base and after each up-block.
G_CHANNELS = {32: (4, 4, 4, 4), 64: (16, 8, 4, 2, 1), 128: (16, 16, 8, 4, 2, 1)}
# Discriminator blocks (output channels as multiples of width, downsample?); the first block is
# the optimised one.
D_BLOCKS = {
    32: ((2, True), (2, True), (2, False), (2, False)),
    64: ((1, True), (2, True), (4, True), (8, True), (16, True)),
    128: ((1, True), (2, True), (4, True), (8, True), (16, True), (16, False)),
}


def n_upsampling_layers(resolution: int) -> int:
    """Number of residual up-blocks from the 4x4 base to ``resolution`` px."""
    return int(math.log2(resolution // 4))


def check_shortcut(shortcut: str) -> str:
    """Return ``shortcut`` if it is "1x1" or "upsampler", else raise a ValueError naming both."""
    if shortcut not in SHORTCUTS:
        raise ValueError(f"Unknown SNGAN shortcut {shortcut!r}; choose one of: {', '.join(SHORTCUTS)}.")
    return shortcut


class ResampleShortcut(nn.Module):
    """The paper's shortcut: a weight-free x2 resampling and a 1x1 conv (computed conv first)."""

    def __init__(self, in_ch: int, out_ch: int, kind: str):
        super().__init__()
        self.resample = fixed_resampling(kind)
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # resample(conv1x1(x)) without bias equals conv1x1(resample(x)) without bias (channel
        # mixing per pixel commutes with per-channel resampling); adding the bias afterwards keeps
        # the paper's order exactly, also for zero insertion and the FIR's borders.
        h = self.resample(F.conv2d(x, self.conv.weight))
        return h + self.conv.bias.view(1, -1, 1, 1)


def _xavier(module: nn.Module, gain: float) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class GBlock(nn.Module):
    """Residual up-block: the upsampler ``kind`` on the main path, ``shortcut`` on the skip path."""

    def __init__(self, in_ch: int, out_ch: int, kind: str, shortcut: str = DEFAULT_SHORTCUT,
                 alias_free: bool = False):
        super().__init__()
        self.kind = kind
        # Weight-free modules: the checkpoint keys are the same with and without alias_free.
        self.act1, self.act2 = relu(alias_free), relu(alias_free)
        self.shortcut_kind = check_shortcut(shortcut)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.up = make_upsampler(kind, in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if shortcut == "1x1":
            self.shortcut = ResampleShortcut(in_ch, out_ch, kind)
        else:
            self.shortcut = make_upsampler(kind, in_ch, out_ch)
        _xavier(self.up, math.sqrt(2))
        _xavier(self.conv, math.sqrt(2))
        _xavier(self.shortcut, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample (N, in_ch, H, W) to (N, out_ch, 2H, 2W)."""
        h = self.up(self.act1(self.bn1(x)))
        h = self.conv(self.act2(self.bn2(h)))
        return h + self.shortcut(x)


class Generator(nn.Module):
    """SNGAN ResNet generator: ``G(z: (N, z_dim)) -> (N, 3, R, R)`` in [-1, 1]."""

    def __init__(self, resolution: int, kinds: list[str], z_dim: int = 128, width: int = DEFAULT_WIDTH,
                 shortcut: str = DEFAULT_SHORTCUT, alias_free: bool = False):
        super().__init__()
        if resolution not in G_CHANNELS or len(kinds) != n_upsampling_layers(resolution):
            raise ValueError(
                f"A {resolution} px SNGAN needs one upsampler kind per up-block "
                f"({n_upsampling_layers(resolution)}), got {len(kinds)}."
            )
        self.z_dim = z_dim
        self.resolution = resolution
        self.kinds = tuple(kinds)
        self.shortcut = check_shortcut(shortcut)
        self.alias_free = alias_free
        ch = [m * width for m in G_CHANNELS[resolution]]
        self.upsample_channels = tuple(zip(ch[:-1], ch[1:], strict=True))
        self.project = nn.Sequential(nn.Linear(z_dim, ch[0] * 16), nn.Unflatten(1, (ch[0], 4, 4)))
        self.blocks = nn.Sequential(
            *(GBlock(cin, cout, kind, shortcut, alias_free) for kind, (cin, cout) in zip(kinds, self.upsample_channels, strict=True))
        )
        self.to_rgb = nn.Sequential(
            nn.BatchNorm2d(ch[-1]), relu(alias_free), nn.Conv2d(ch[-1], 3, 3, padding=1), nn.Tanh()
        )
        _xavier(self.project, 1.0)
        _xavier(self.to_rgb, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latent codes (N, z_dim) to images (N, 3, R, R) in [-1, 1]."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}.")
        return self.to_rgb(self.blocks(self.project(z)))


class _Float32SpectralNorm(_SpectralNorm):
    """torch's spectral-norm parametrization with its power iteration and sigma in float32.

    Under CUDA autocast ``mv`` runs in bf16, so sigma (and the u, v estimates) would carry ~3
    significant digits and the Lipschitz constraint would be a loose one. Autocast is switched
    off here; the layer's own matmul/conv still runs in bf16. State-dict keys are torch's.
    """

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=weight.device.type, enabled=False):
            return super().forward(weight.float()).to(weight.dtype)


def spectral_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """Spectral normalisation of ``module.name`` (one power iteration per forward, as in the paper), in float32."""
    weight = getattr(module, name)
    dim = 1 if isinstance(module, nn.ConvTranspose2d) else 0
    parametrize.register_parametrization(module, name, _Float32SpectralNorm(weight, 1, dim, 1e-12))
    return module


def _sn_conv(in_ch: int, out_ch: int, k: int, gain: float) -> nn.Module:
    conv = nn.Conv2d(in_ch, out_ch, k, padding=k // 2)
    _xavier(conv, gain)
    return spectral_norm(conv)


class DBlock(nn.Module):
    """Residual down-block with spectral norm; ``optimized`` is the paper's first block on RGB."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, optimized: bool = False):
        super().__init__()
        self.downsample = downsample
        self.optimized = optimized
        hidden = out_ch if optimized else in_ch
        self.conv1 = _sn_conv(in_ch, hidden, 3, math.sqrt(2))
        self.conv2 = _sn_conv(hidden, out_ch, 3, math.sqrt(2))
        learnable_sc = optimized or downsample or in_ch != out_ch
        self.conv_sc = _sn_conv(in_ch, out_ch, 1, 1.0) if learnable_sc else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, in_ch, H, W) to (N, out_ch, H', W'), H' = H/2 when downsampling."""
        # The optimised block sees raw pixels: no ReLU before its first conv.
        h = x if self.optimized else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self._shortcut(x)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_sc is None:
            return x
        if self.optimized:
            # Pool first on the 3-channel input: cheaper, and it is the paper's order.
            return self.conv_sc(F.avg_pool2d(x, 2))
        x = self.conv_sc(x)
        return F.avg_pool2d(x, 2) if self.downsample else x


class Discriminator(nn.Module):
    """SNGAN ResNet discriminator: ``D(x: (N, 3, R, R) in [-1, 1]) -> (N,)`` logits."""

    def __init__(self, resolution: int, width: int = DEFAULT_WIDTH):
        super().__init__()
        if resolution not in D_BLOCKS:
            raise ValueError(f"No SNGAN discriminator for {resolution} px; choose one of: 32, 64, 128.")
        self.resolution = resolution
        blocks: list[nn.Module] = []
        cin = 3
        for i, (mult, down) in enumerate(D_BLOCKS[resolution]):
            blocks.append(DBlock(cin, mult * width, down, optimized=i == 0))
            cin = mult * width
        self.blocks = nn.Sequential(*blocks)
        head = nn.Linear(cin, 1)
        _xavier(head, 1.0)
        self.head = spectral_norm(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one real-vs-fake logit per image, shape (N,)."""
        check_input(x, self.resolution)
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling, as in the paper
        return self.head(h).reshape(x.shape[0])


def build_generator(resolution: int, kinds: list[str], z_dim: int = 128, width: int = DEFAULT_WIDTH,
                    shortcut: str = DEFAULT_SHORTCUT, alias_free: bool = False) -> Generator:
    """SNGAN generator for ``resolution`` px with one upsampler kind per up-block."""
    return Generator(resolution, kinds, z_dim=z_dim, width=width, shortcut=shortcut, alias_free=alias_free)


def build_discriminator(resolution: int, width: int = DEFAULT_WIDTH) -> Discriminator:
    """SNGAN discriminator for ``resolution`` px."""
    return Discriminator(resolution, width=width)
