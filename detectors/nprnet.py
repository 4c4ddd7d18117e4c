"""``nprnet``: the small network of the NPR detector (Tan et al., CVPR 2024), re-implemented from the paper.

The paper feeds its neighbouring-pixel residual to a ResNet-50 cut after its second stage:
stem, ``layer1`` and ``layer2`` (512 channels), global average pooling and one linear layer,
trained from scratch. The deeper stages are dropped on purpose: the artefact is local (a 2x2
cell), so a small receptive field suffices and the network stays light. Here:

* the trunk is ResNet-50's stem, ``layer1`` (3 Bottleneck blocks, 256 channels) and ``layer2``
  (4 blocks, stride 2, 512 channels), built from torchvision's Bottleneck block with
  torchvision's initialisation; no pretrained weights;
* above 64 px the stem is the NPR code's: a 3x3 stride-2 convolution (64 channels), batch norm,
  ReLU, then 3x3 stride-2 max pooling (not torchvision's 7x7 stride-2 convolution);
* for inputs of at most 64 px the stem is the small-input one of the lab's other backbones
  (3x3 stride-1 convolution, no max-pool), so ``layer2`` still sees a 16x16 map of a 32 px
  input — a departure from the paper, whose images are 224 px;
* it is registered as backbone ``nprnet`` and classifier ``nprnet``, so it takes any
  image-shaped feature: ``npr:nprnet`` (the paper's recipe), ``dwt:nprnet``, ``pixels:nprnet``.

Training at CPU speed (departures from the lab's other CNNs, not from the network): on a CPU,
``epochs`` and ``patience`` default to :data:`CPU_EPOCHS` and :data:`CPU_PATIENCE` (on a GPU
to 20 and 4, as before), and the network and its inputs use the channels-last memory layout,
which oneDNN's CPU convolutions run faster (the numbers are the same up to float rounding).
The network, its initialisation, the optimiser, the batch size and the learning rate are
unchanged; an explicit ``epochs=`` / ``patience=`` overrides the device default. Measured with
``benchmarks/nprnet_speed.py`` on 1,600 images at 32 px (1,280 to train, 320 to validate), 2
threads on the shared 2-core machine at a load average of 10-15: 4 epochs took 2,659 s
(665 s an epoch under that load; the GPU recipe's 20 epochs would take 5x as long), with
validation AP 0.800, 1.000, 0.999, 1.000 after epochs 1-4 and test ROC-AUC 0.9999 (nearest)
and 0.9995 (bilinear, never trained on). Validation AP had saturated after 2 epochs, so the CPU
default is 3. Channels-last: 29.9 s against 30.6 s a training step under the same load (no
clear gain there; it is kept because it never costs). On a quiet machine the fit is expected
to take about 3/20 of the GPU recipe's 19 minutes, i.e. about 3 minutes; not measured quietly.

Augmentation default, measured with ``benchmarks/nprnet_augment.py`` (native 32 px crops of
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
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from detectors.backbones import SMALL_INPUT, Network, register_backbone
from detectors.base import register_classifier
from detectors.cnn import CNNClassifier

NPRNET_DIM = 512  # channels out of ResNet-50's layer2
# Epochs and early-stopping patience of a fit on the CPU (on a GPU: 20 and 4); see the module docstring.
CPU_EPOCHS = 3
CPU_PATIENCE = 2
# Inputs of at most this many pixels get the small-input stem (stride 1, no max-pool); larger ones
# the NPR code's stem. benchmarks/nprnet_speed.py --stem paper sets it to 0 to measure the paper's
# stem at 32 px.
SMALL_STEM_MAX = SMALL_INPUT


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` Bottleneck blocks, the first one changing width (and stride) through a 1x1 projection."""
    out = planes * Bottleneck.expansion
    project = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    return nn.Sequential(Bottleneck(inplanes, planes, stride, project), *(Bottleneck(out, planes) for _ in range(blocks - 1)))


@register_backbone("nprnet")
def nprnet_trunk(in_channels: int, input_size: int) -> tuple[nn.Module, int]:
    """NPR's stem, ResNet-50's layer1 and layer2, global average pooling: (N, C, H, W) -> (N, 512); small stem for <= 64 px."""
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
    # epochs / patience left None: (CPU, CUDA) defaults.
    DEVICE_DEFAULTS: ClassVar[dict[str, tuple[int, int]]] = {"epochs": (CPU_EPOCHS, 20), "patience": (CPU_PATIENCE, 4)}

    def __init__(
        self,
        epochs: int | None = None,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int | None = None,
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
