"""Backbones for the neural classifiers: a registry by name, a small CPU CNN, adapted torchvision ResNets.

A backbone maps ``(N, C, H, W)`` features to ``(N, D)`` embeddings; :class:`Network` puts input
standardisation in front of it and a linear head behind it. ResNets follow the CIFAR adaptation
for inputs of at most 64 px (3x3 stride-1 first convolution, no max-pool) and are trained from
scratch unless ``pretrained`` names a local torchvision ImageNet weights file, whose first
convolution is adapted to the input's channels and kernel size; nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights, resnet18, resnet50

__all__ = [
    "BACKBONES",
    "IMAGENET_URLS",
    "Network",
    "build_network",
    "check_backbone",
    "imagenet_weights_file",
    "load_pretrained",
    "read_state_dict",
    "register_backbone",
    "resolve_pretrained",
]

# Inputs up to this size get the CIFAR-style stem (no early downsampling).
SMALL_INPUT = 64

# name -> builder(in_channels, input_size) -> (body mapping (N, C, H, W) to (N, D), D)
BACKBONES: dict[str, Callable[[int, int], tuple[nn.Module, int]]] = {}

# torchvision's ImageNet files, named only so an offline user knows what to fetch.
IMAGENET_URLS = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1.url,
    "resnet50": ResNet50_Weights.IMAGENET1K_V2.url,
}


def register_backbone(name: str) -> Callable[[Callable], Callable]:
    """Add a backbone builder ``(in_channels, input_size) -> (module, embedding_dim)`` to the registry."""

    def wrap(fn):
        BACKBONES[name] = fn
        return fn

    return wrap


def check_backbone(name: str) -> str:
    """Return ``name`` if it is a registered backbone, else raise a ValueError listing them."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}.")
    return name


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@register_backbone("smallcnn")
def small_cnn(in_channels: int, input_size: int) -> tuple[nn.Module, int]:
    """Four 3x3 conv-BN-ReLU layers (first two at full resolution) and global average pooling."""
    body = nn.Sequential(
        # Full resolution first: upsampling artefacts live at the highest frequencies.
        _conv_bn_relu(in_channels, 32, 1),
        _conv_bn_relu(32, 32, 1),
        _conv_bn_relu(32, 64, 2),
        _conv_bn_relu(64, 128, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return body, 128


def _adapted_resnet(ctor: Callable[..., nn.Module], in_channels: int, input_size: int) -> tuple[nn.Module, int]:
    net = ctor(weights=None)
    if input_size <= SMALL_INPUT:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


@register_backbone("resnet18")
def resnet18_body(in_channels: int, input_size: int) -> tuple[nn.Module, int]:
    """torchvision ResNet-18 without its fc layer, small-input stem for inputs <= 64 px."""
    return _adapted_resnet(resnet18, in_channels, input_size)


@register_backbone("resnet50")
def resnet50_body(in_channels: int, input_size: int) -> tuple[nn.Module, int]:
    """torchvision ResNet-50 without its fc layer, small-input stem for inputs <= 64 px."""
    return _adapted_resnet(resnet50, in_channels, input_size)


class Network(nn.Module):
    """Per-channel (or per-element) input standardisation, a backbone to (N, D) embeddings, a linear head."""

    def __init__(
        self, backbone: str, input_shape: tuple[int, int, int], num_classes: int, input_norm: str = "channel"
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        self.body, self.dim = BACKBONES[check_backbone(backbone)](c, min(h, w))
        self.head = nn.Linear(self.dim, num_classes)
        shape = (1, c, 1, 1) if input_norm == "channel" else (1, c, h, w)
        # Buffers, so the training statistics travel with the state dict.
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) features -> (N, D) embeddings."""
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) features -> (N, K) logits."""
        return self.head(self.embed(x))


def imagenet_weights_file(arch: str) -> str:
    """File name of torchvision's ImageNet weights for ``arch`` (e.g. resnet18-f37072fd.pth)."""
    if arch not in IMAGENET_URLS:
        raise ValueError(f"No ImageNet weights exist for {arch!r}; pretrained weights are for: {', '.join(IMAGENET_URLS)}.")
    return IMAGENET_URLS[arch].rsplit("/", 1)[-1]


def resolve_pretrained(arch: str, pretrained: str | Path | None) -> Path | None:
    """Turn a ``pretrained`` option into a local weights file (or None); never downloads."""
    if pretrained is None or str(pretrained) == "":
        return None
    fname = imagenet_weights_file(arch)
    if str(pretrained).lower() == "imagenet":
        # torchvision's own cache is used when the file is already there; nothing is fetched.
        cached = Path(torch.hub.get_dir()) / "checkpoints" / fname
        if cached.is_file():
            return cached
        raise ValueError(
            f"ImageNet weights for {arch} are not on this machine and nothing is downloaded; fetch "
            f"torchvision's {fname} ({IMAGENET_URLS[arch]}) and pass its path with --pretrained PATH."
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Pretrained weights file {path} does not exist; pass the path of torchvision's {fname} with --pretrained PATH."
        )
    return path


def _adapt_first_conv(w: torch.Tensor, target: torch.Size) -> torch.Tensor:
    """Fit an ImageNet first-conv kernel (64, 3, k, k) to (64, C, k', k') keeping its response to flat input."""
    out_c, in_c, kh, kw = target
    if w.shape[1] != in_c:
        # Each new channel gets the channel-mean filter, scaled so a grey input gives the same response.
        w = w.sum(dim=1, keepdim=True).expand(-1, in_c, -1, -1) / in_c
    if w.shape[2:] != (kh, kw):
        total = w.sum(dim=(2, 3), keepdim=True)
        small = F.adaptive_avg_pool2d(w, (kh, kw))
        # Shift every tap equally so each filter's sum (its DC gain) is unchanged.
        small = small + (total - small.sum(dim=(2, 3), keepdim=True)) / (kh * kw)
        w = small
    return w.contiguous()


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """torch.load a plain state dict (weights_only) or raise one readable sentence."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; the user needs one sentence
        raise ValueError(f"{what} {path} is damaged or not a plain tensor file ({type(e).__name__}); save it again.") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} {path} does not hold a state dict of tensors; give a file written by torch.save(model.state_dict()).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(body: nn.Module, arch: str, path: Path) -> None:
    """Copy torchvision ImageNet weights from ``path`` into ``body`` (first conv adapted, fc dropped)."""
    state = read_state_dict(path, "Pretrained weights file")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    target = body.state_dict()
    if "conv1.weight" in state and "conv1.weight" in target and state["conv1.weight"].ndim == 4:
        state["conv1.weight"] = _adapt_first_conv(state["conv1.weight"], target["conv1.weight"].shape)
    # Old torchvision files predate BatchNorm's step counter; it carries no weights.
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    wrong = [k for k in state if k in target and state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        example = (missing + unexpected + wrong)[0]
        raise ValueError(
            f"Pretrained weights file {path} does not fit {arch} ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(wrong)} mis-shaped tensors, e.g. {example!r}); pass torchvision's "
            f"{imagenet_weights_file(arch)}."
        )
    body.load_state_dict(state, strict=False)


def build_network(
    backbone: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    input_norm: str = "channel",
    pretrained: str | Path | None = None,
) -> Network:
    """Build a :class:`Network`; ``pretrained`` (a local file or "imagenet" from torch's cache) seeds a ResNet."""
    check_backbone(backbone)
    if pretrained not in (None, "") and backbone not in IMAGENET_URLS:
        raise ValueError(f"Backbone {backbone!r} has no pretrained weights; drop --pretrained or use one of: {', '.join(IMAGENET_URLS)}.")
    path = resolve_pretrained(backbone, pretrained) if backbone in IMAGENET_URLS else None
    net = Network(backbone, input_shape, num_classes, input_norm)
    if path is not None:
        load_pretrained(net.body, backbone, path)
    return net
