"""nprnet: NPR's ResNet cut after two stages, as a backbone and as the classifier of npr / dwt / pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smooth_images
from torch import nn

from detectors.base import CLASSIFIERS
from detectors.detector import Detector, valid_pairs


def test_trunk_is_resnet50_up_to_layer2():
    from detectors.backbones import BACKBONES
    from detectors.nprnet import NPRNetClassifier

    body, dim = BACKBONES["nprnet"](3, 32)
    assert dim == 512
    names = [type(m).__name__ for m in body]
    assert names == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Sequential", "Sequential", "AdaptiveAvgPool2d", "Flatten"]
    assert len(body[4]) == 3 and len(body[5]) == 4  # ResNet-50's stage sizes
    # The NPR code's stem at 32 px too: 32 -> 16 (conv) -> 8 (pool) into layer1, 4x4 out of layer2.
    assert body[0].stride == (2, 2) and body[0].kernel_size == (3, 3)
    assert body[:5](torch.zeros(1, 3, 32, 32)).shape == (1, 256, 8, 8)
    assert body[:6](torch.zeros(1, 3, 32, 32)).shape == (1, 512, 4, 4)
    assert body(torch.zeros(2, 3, 16, 16)).shape == (2, 512)
    # torchvision's ResNet-50 has 215,808 parameters in layer1 and 1,219,584 in layer2.
    assert [sum(p.numel() for p in body[i].parameters()) for i in (4, 5)] == [215_808, 1_219_584]
    big, _ = BACKBONES["nprnet"](3, 128)
    # The NPR code's stem: a 3x3 stride-2 convolution, then 3x3 stride-2 max pooling.
    assert big[0].kernel_size == (3, 3) and big[0].stride == (2, 2) and big[0].padding == (1, 1)
    assert isinstance(big[3], nn.MaxPool2d) and big[3].kernel_size == 3 and big[3].stride == 2
    assert big[:4](torch.zeros(1, 3, 128, 128)).shape == (1, 64, 32, 32)
    assert CLASSIFIERS["nprnet"] is NPRNetClassifier
    assert NPRNetClassifier().augment_p == 0.0 and NPRNetClassifier().flip_p == 0.5


def test_epochs_default_by_device_and_channels_last_gives_the_same_numbers():
    from detectors.nprnet import NPRNetClassifier

    clf = NPRNetClassifier()
    # One schedule on every device (the NPR stem made the CPU's shortened one unnecessary).
    assert clf._schedule(torch.device("cpu")) == clf._schedule(torch.device("cuda")) == (20, 4)
    assert NPRNetClassifier(epochs=3, patience=1)._schedule(torch.device("cpu")) == (3, 1)
    with pytest.raises(ValueError, match="epochs must be an integer"):
        NPRNetClassifier(epochs=0).validate_params()
    from detectors.backbones import BACKBONES

    torch.manual_seed(0)
    body, _ = BACKBONES["nprnet"](3, 32)
    body.eval()
    x = torch.randn(2, 3, 32, 32)
    ref = body(x)
    body.to(memory_format=torch.channels_last)
    np.testing.assert_allclose(body(x.contiguous(memory_format=torch.channels_last)).detach(), ref.detach(), atol=1e-4)


def test_pairs_are_listed():
    pairs = valid_pairs()
    assert {"npr:nprnet", "dwt:nprnet", "pixels:nprnet"} <= set(pairs)
    assert "periodicity:nprnet" not in pairs and "radial:nprnet" not in pairs


def test_npr_nprnet_fits_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    real = smooth_images(24, 16, seed=1)
    g = torch.Generator().manual_seed(2)
    fake = smooth_images(24, 8, seed=2).repeat_interleave(2, -2).repeat_interleave(2, -1)
    fake = (fake.float() + 3 * torch.randn(fake.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    det = Detector("npr:nprnet", device="cpu", epochs=2, batch_size=16, seed=0).fit(real, fake)
    s = det.score(torch.cat([real[:4], fake[:4]]))
    assert s.shape == (8,) and np.all((0 <= s) & (s <= 1))
    det.save(tmp_path / "m")
    again = Detector.load(tmp_path / "m", device="cpu")
    assert again.classifier.backbone_name() == "nprnet"
    np.testing.assert_allclose(again.score(torch.cat([real[:4], fake[:4]])), s, atol=1e-5)
    with pytest.raises(ValueError, match="no pretrained weights"):
        Detector("npr:nprnet", device="cpu", pretrained="imagenet").fit(real, fake)
