"""``nprnet``: the small network of the NPR detector (Tan et al., CVPR 2024), re-implemented from the paper.

The paper feeds its neighbouring-pixel residual to a ResNet-50 cut after its second stage:
stem, ``layer1`` and ``layer2`` (512 channels), global average pooling and one linear layer,
trained from scratch. The deeper stages are dropped on purpose: the artefact is local (a 2x2
cell), so a small receptive field suffices and the network stays light. Here:

* the trunk is ResNet-50's stem, ``layer1`` (3 Bottleneck blocks, 256 channels) and ``layer2``
  (4 blocks, stride 2, 512 channels), built from torchvision's Bottleneck block with
  torchvision's initialisation; no pretrained weights;
* the stem is the NPR code's at every input size: a 3x3 stride-2 convolution (64 channels),
  batch norm, ReLU, then 3x3 stride-2 max pooling (not torchvision's 7x7 stride-2 convolution).
  A 32 px input thus reaches ``layer1`` as an 8x8 map and ``layer2`` as 4x4. The stride-2
  convolution sees whole 2x2 cells of the residual at every output, so the grid the residual
  measures is not lost;
* it is registered as backbone ``nprnet`` and classifier ``nprnet``, so it takes any
  image-shaped feature: ``npr:nprnet`` (the paper's recipe), ``dwt:nprnet``, ``pixels:nprnet``.

Training: 20 epochs with early stopping (patience 4) on every device, Adam, batch 64. On a CPU
the network and its inputs use the channels-last layout, which oneDNN convolves faster (the
same numbers up to float rounding).

Until issue 16, inputs of at most 64 px got a small-input stem instead (3x3 stride-1
convolution, no max pooling, so ``layer1`` ran at full resolution) and the CPU trained only 3
epochs. That stem made the network 20x as costly: one training step of 64 images at 32 px took
2.63 s on the 2-core CPU (channels-last, 2 threads, otherwise idle) against 0.129 s with the
NPR code's stem (``benchmarks/nprnet_speed.py --steps 3 --stem small|paper``), and it bought
nothing measurable. On 1,600 images at 32 px (nearest-2x fakes; 1,280 to train, 320 to
validate) the NPR stem's fit took 8.5 s for 3 epochs and 25.0 s with the full schedule (9
epochs run, early stopping; issue 16 measured about 19 minutes for the small stem's 20 epochs), with validation
AP 1.000 from epoch 2 and test ROC-AUC 1.000 on held-out nearest fakes and 1.000 on bilinear
fakes it never saw (the small stem: 0.9999 and 0.9995 after 4 epochs).

Augmentation default, measured (with the small-input stem of that time) with ``benchmarks/nprnet_augment.py`` (native 32 px crops of
the embedded photos as reals, nearest-2x fakes for training; 96 images per class, 6 epochs,
seed 0, one CPU thread; ROC-AUC on 128 + 128 test images from disjoint photo regions):

==============  =======  =========  ==============  ================
augment_p       nearest  bilinear   nearest JPEG75  bilinear JPEG75
==============  =======  =========  ==============  ================
0 (default)     0.972    0.924      0.704           0.650
0.5 (Wang)      0.956    0.897      0.673           0.635
==============  =======  =========  ==============  ================

Blur/JPEG augmentation lost on every column, even on JPEG'd test images: blur and JPEG smear
exactly the 2x2 dependence the residual measures, and the NPR recipe trains without them. So
``augment_p`` defaults to 0 here (the lab's other CNNs use 0.1); it stays available. A
*resampling* augmentation (resize) would move the grid itself and is not offered. Horizontal
flips are kept (``flip_p=0.5``): mirroring an image of even width maps every 2x2 cell onto a
2x2 cell, so the grid survives. One seed on a small task: differences of 0.02-0.03 are a hint,
not a verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from detectors.backbones import Network, register_backbone
from detectors.base import register_classifier
from detectors.cnn import CNNClassifier

NPRNET_DIM = 512  # channels out of ResNet-50's layer2
# Inputs of at most this many pixels get the small-input stem (stride 1, no max-pool) that
# nprnet used at <= 64 px before issue 16; 0 (the default) gives the NPR code's stem at every
# size. benchmarks/nprnet_speed.py --stem small sets it to measure the old stem.
SMALL_STEM_MAX = 0


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` Bottleneck blocks, the first one changing width (and stride) through a 1x1 projection."""
    out = planes * Bottleneck.expansion
    project = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    return nn.Sequential(Bottleneck(inplanes, planes, stride, project), *(Bottleneck(out, planes) for _ in range(blocks - 1)))


@register_backbone("nprnet")
def nprnet_trunk(in_channels: int, input_size: int) -> tuple[nn.Module, int]:
    """NPR's stem, ResNet-50's layer1 and layer2, global average pooling: (N, C, H, W) -> (N, 512)."""
    if input_size <= SMALL_STEM_MAX:
        stem = [nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                nn.Identity()]
    else:  # the NPR code's stem: 3x3 stride-2 convolution, then max pooling
        stem = [nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1)]
    body = nn.Sequential(*stem, _stage(64, 64, 3, 1), _stage(256, 128, 4, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for m in body.modules():  # torchvision's ResNet initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return body, NPRNET_DIM


@register_classifier("nprnet")
class NPRNetClassifier(CNNClassifier):
    """NPR's ResNet cut after two stages (Tan et al. 2024), from scratch; no blur/JPEG augmentation by default."""

    name = "nprnet"
    arch = "nprnet"

    def __init__(
        self,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int = 4,
        augment_p: float = 0.0,
        flip_p: float | None = 0.5,
        input_norm: str = "channel",
        pretrained: str | Path | None = None,
        device: str = "auto",
        amp: bool = True,
        seed: int = 0,
        eval_batch_size: int = 256,
        progress: bool = False,
        feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(
            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
            augment_p=augment_p, flip_p=flip_p, input_norm=input_norm, pretrained=pretrained, device=device,
            amp=amp, seed=seed, eval_batch_size=eval_batch_size, progress=progress, feature_fn=feature_fn,
        )

    # channels-last on the CPU: the same numbers, faster oneDNN convolutions (see the module docstring).
    def _prepare(self, net: Network, X: torch.Tensor, y: np.ndarray, device: torch.device) -> None:
        super()._prepare(net, X, y, device)
        if device.type == "cpu":
            net.to(memory_format=torch.channels_last)

    def _features(self, xb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        feats = super()._features(xb, generator)
        return feats.contiguous(memory_format=torch.channels_last) if feats.device.type == "cpu" else feats
