"""DCGAN and SNGAN builders: shapes and ranges for every upsampler, layer placement of the
chosen kind, spectral normalisation, parameter counts from the channel plans, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gans.networks import (
    ARCH_DEFAULTS,
    ARCHITECTURES,
    RESOLUTIONS,
    build_discriminator,
    build_generator,
    check_arch,
    check_resolution,
    layer_kinds,
)
from gans.upsamplers import UPSAMPLERS, Interpolate

W = 4  # tiny width keeps every forward pass a few milliseconds on CPU
FIXED = ("nearest", "bilinear", "bicubic", "bed_of_nails")


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _interpolates(m: nn.Module) -> list[Interpolate]:
    return [x for x in m.modules() if isinstance(x, Interpolate)]


def _count(m: nn.Module, cls: type) -> int:
    return sum(isinstance(x, cls) for x in m.modules())


@pytest.mark.parametrize("arch", ["dcgan", "sngan"])
@pytest.mark.parametrize("kind", sorted(UPSAMPLERS))
@pytest.mark.parametrize("resolution", [32, 64])
def test_generator_and_discriminator_shapes(arch, kind, resolution):
    torch.manual_seed(0)
    g = build_generator(arch, resolution, kind, z_dim=16, width=W)
    d = build_discriminator(arch, resolution, width=W)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, 3, resolution, resolution)
    assert x.abs().max() <= 1.0 and x.std() > 0.01  # tanh range, and not a constant image
    assert g.z_dim == 16
    logits = d(x)
    assert logits.shape == (3,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("arch,kind", [("dcgan", "bilinear"), ("sngan", "bed_of_nails")])
def test_128px(arch, kind):
    g = build_generator(arch, 128, kind, upsample_layers="last", z_dim=8, width=2)
    x = g(torch.randn(2, 8))
    assert x.shape == (2, 3, 128, 128) and x.abs().max() <= 1.0
    assert build_discriminator(arch, 128, width=2)(x).shape == (2,)


@pytest.mark.parametrize("arch", ["dcgan", "sngan"])
def test_every_generator_parameter_gets_a_gradient(arch):
    # Catches dead paths (an unused shortcut, a layer skipped in forward).
    torch.manual_seed(0)
    g = build_generator(arch, 32, "pixelshuffle", z_dim=8, width=W)
    d = build_discriminator(arch, 32, width=W)
    d(g(torch.randn(4, 8))).sum().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_layer_kinds_policy():
    assert layer_kinds("dcgan", 32, "nearest", "all") == ["nearest"] * 3
    assert layer_kinds("dcgan", 64, "nearest", "last") == ["transposed"] * 3 + ["nearest"]
    assert layer_kinds("sngan", 128, "bicubic", "last") == ["transposed"] * 4 + ["bicubic"]


@pytest.mark.parametrize("kind", FIXED)
def test_dcgan_last_uses_kind_only_in_last_layer(kind):
    g = build_generator("dcgan", 64, kind, upsample_layers="last", width=W)
    assert [type(m) for m in g.ups[:-1]] == [nn.ConvTranspose2d] * 3
    assert [m.mode for m in _interpolates(g)] == [kind]
    assert [m.mode for m in _interpolates(g.ups[-1])] == [kind]
    # The last layer maps straight to RGB.
    assert g.ups[-1](torch.randn(1, W, 32, 32)).shape == (1, 3, 64, 64)
    g_all = build_generator("dcgan", 64, kind, upsample_layers="all", width=W)
    assert [m.mode for m in _interpolates(g_all)] == [kind] * 4
    assert _count(g_all, nn.ConvTranspose2d) == 0


def test_sngan_upsampler_shortcut_repeats_the_kind():
    g = build_generator("sngan", 64, "nearest", upsample_layers="last", width=W, shortcut="upsampler")
    *early, last = list(g.blocks)
    for block in early:
        assert isinstance(block.up, nn.ConvTranspose2d) and isinstance(block.shortcut, nn.ConvTranspose2d)
    assert [m.mode for m in _interpolates(last.up)] == ["nearest"]
    assert [m.mode for m in _interpolates(last.shortcut)] == ["nearest"]
    assert len(_interpolates(g)) == 2
    g_all = build_generator("sngan", 64, "pixelshuffle", width=W, shortcut="upsampler")
    assert _count(g_all, nn.PixelShuffle) == 2 * 4 and _count(g_all, nn.ConvTranspose2d) == 0


@pytest.mark.parametrize("kind", UPSAMPLERS)
def test_sngan_1x1_shortcut_is_the_kinds_resampling_then_1x1(kind):
    from gans.upsamplers import fixed_resampling

    g = build_generator("sngan", 32, kind, width=W)
    assert g.config["shortcut"] == "1x1"
    block = g.blocks[0]
    sc = block.shortcut
    assert sc.conv.kernel_size == (1, 1) and _n_params(sc) == 4 * W * 4 * W + 4 * W
    # The paper's order, computed directly: resample first, then the 1x1 conv with its bias.
    x = torch.randn(2, 4 * W, 4, 4, dtype=torch.float64)
    sc = sc.double()
    reference = nn.functional.conv2d(fixed_resampling(kind).double()(x), sc.conv.weight, sc.conv.bias)
    assert torch.allclose(sc(x), reference, atol=1e-12)
    expected = "nearest" if kind in ("transposed", "pixelshuffle") else kind
    assert getattr(sc.resample, "mode", kind) == expected


def test_sngan32_parameter_counts_match_the_paper_and_mimicry():
    # Miyato et al.'s ResNet for CIFAR-10 as torch-mimicry builds it (SNGANGenerator32, ngf=256;
    # SNGANDiscriminator32, ndf=128), counted by hand:
    # G: linear 128 -> 4*4*256 (528,384); per block two 3x3 convs 256->256 (2 * 590,080),
    #    a 1x1 shortcut (65,792), two BN (1,024); three blocks; final BN (512) and 3x3 conv to
    #    RGB (6,915): 4,276,739.
    # D: optimised block 3->128 (3,584 + 147,584 + 512), a downsampling block (2 * 147,584 +
    #    16,512), two plain blocks (2 * 147,584 each), linear head (129): 1,053,825.
    assert _n_params(build_generator("sngan", 32, "nearest")) == 4_276_739
    assert _n_params(build_discriminator("sngan", 32)) == 1_053_825
    # The fixed kinds cost the same; "upsampler" shortcuts are bigger (3x3 instead of 1x1).
    assert _n_params(build_generator("sngan", 32, "binomial")) == 4_276_739
    assert _n_params(build_generator("sngan", 32, "nearest", shortcut="upsampler")) == 4_276_739 + 3 * 256 * 256 * 8


def test_unknown_shortcut_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown SNGAN shortcut '3x3'; choose one of: 1x1, upsampler"):
        build_generator("sngan", 32, "nearest", width=W, shortcut="3x3")


# Parameters of one upsampling layer (weights + biases) from its definition:
# transposed 4x4 kernel; a 3x3 conv after fixed resampling; pixel shuffle 3x3 conv to 4*out.
def _layer_params(kind: str, cin: int, cout: int) -> int:
    if kind == "transposed":
        return cin * cout * 16 + cout
    if kind == "pixelshuffle":
        return cin * 4 * cout * 9 + 4 * cout
    return cin * cout * 9 + cout


# Channel plans documented in gans/dcgan.py and gans/sngan.py, at 32 px, as (in, out) per layer,
# and how many upsamplers each layer holds (SNGAN's default 1x1 shortcut holds none).
PLANS = {
    "dcgan": ([(4 * W, 2 * W), (2 * W, W), (W, 3)], 1),
    "sngan": ([(4 * W, 4 * W)] * 3, 1),
}


@pytest.mark.parametrize("arch", ["dcgan", "sngan"])
@pytest.mark.parametrize("policy", ["all", "last"])
def test_parameter_counts_differ_by_the_upsampling_layers(arch, policy):
    plan, per_layer = PLANS[arch]
    assert list(build_generator(arch, 32, "nearest", width=W).upsample_channels) == plan
    counts = {k: _n_params(build_generator(arch, 32, k, upsample_layers=policy, width=W)) for k in UPSAMPLERS}
    # The four fixed resamplers cost nothing: their generators are the same size.
    assert len({counts[k] for k in (*FIXED, "binomial", "sinc")}) == 1
    layers = plan if policy == "all" else plan[-1:]
    for kind in ("transposed", "pixelshuffle"):
        expected = per_layer * sum(
            _layer_params(kind, cin, cout) - _layer_params("nearest", cin, cout) for cin, cout in layers
        )
        assert counts[kind] - counts["nearest"] == expected


def test_sngan_discriminator_is_spectrally_normalised():
    torch.manual_seed(0)
    d = build_discriminator("sngan", 32, width=W)
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    # Two 3x3 convs per block, 1x1 shortcuts on the two downsampling blocks, the linear head.
    assert len(layers) == 4 * 2 + 2 + 1
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    with torch.no_grad():
        for _ in range(100):  # one power iteration per training-mode forward pass
            d(torch.randn(1, 3, 32, 32))
    for m in layers:
        w = m.weight.reshape(m.weight.shape[0], -1)
        raw = m.parametrizations.weight.original.reshape(w.shape[0], -1)
        assert torch.linalg.matrix_norm(w, 2).item() == pytest.approx(1.0, abs=5e-3)
        assert abs(torch.linalg.matrix_norm(raw, 2).item() - 1.0) > 0.05  # the norm did the work
    assert not any(
        parametrize.is_parametrized(m) for m in build_discriminator("dcgan", 32, width=W).modules()
    )


def test_dcgan_batchnorm_placement_follows_radford():
    # No BatchNorm on D's input layer nor on G's output layer; everywhere else it is used.
    d = build_discriminator("dcgan", 64, width=W)
    kinds = [type(m) for m in d.net]
    assert kinds[:2] == [nn.Conv2d, nn.LeakyReLU] and _count(d, nn.BatchNorm2d) == 3
    g = build_generator("dcgan", 64, "nearest", width=W)
    assert isinstance(g.acts[-1], nn.Tanh) and _count(g, nn.BatchNorm2d) == 1 + 3


def test_dcgan_init_follows_radford():
    torch.manual_seed(0)
    g = build_generator("dcgan", 64, "transposed")  # default width 64: large layers
    w = g.ups[1].weight
    assert abs(w.mean().item()) < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.02)
    bn = g.acts[0][0]
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01) and bn.bias.abs().max() == 0


@pytest.mark.parametrize("arch", ["dcgan", "sngan"])
def test_same_seed_same_weights_and_config_rebuilds(arch):
    torch.manual_seed(3)
    a = build_generator(arch, 32, "bicubic", upsample_layers="last", z_dim=8, width=W)
    torch.manual_seed(3)
    b = build_generator(**a.config)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert a.config == {
        "arch": arch, "resolution": 32, "upsampler": "bicubic", "upsample_layers": "last",
        "z_dim": 8, "width": W, "shortcut": "1x1", "alias_free": False,
    }


def test_arch_defaults_follow_the_papers():
    assert ARCH_DEFAULTS["sngan"] == {
        "loss": "hinge", "lr": 2e-4, "betas": (0.0, 0.9), "n_dis": 5, "lr_decay": "linear",
    }
    assert ARCH_DEFAULTS["dcgan"] == {
        "loss": "bce", "lr": 2e-4, "betas": (0.5, 0.999), "n_dis": 1, "lr_decay": None,
    }
    assert set(ARCH_DEFAULTS) == set(ARCHITECTURES) and RESOLUTIONS == (32, 64, 128)


def test_errors_name_the_problem_and_the_choices():
    with pytest.raises(ValueError, match="Unknown architecture 'stylegan'; choose one of: dcgan, sngan"):
        build_generator("stylegan", 32, "nearest")
    with pytest.raises(ValueError, match="Unknown architecture"):
        check_arch("biggan")
    for bad in (48, 256, "32", 32.0):
        with pytest.raises(ValueError, match="choose one of: 32, 64, 128"):
            build_discriminator("dcgan", bad)
    assert check_resolution(64) == 64
    with pytest.raises(ValueError, match="Unknown upsampler 'linear'.*bed_of_nails"):
        build_generator("sngan", 32, "linear")
    with pytest.raises(ValueError, match="Unknown upsample_layers 'first'; choose one of: all, last"):
        build_generator("dcgan", 32, "nearest", upsample_layers="first")
    with pytest.raises(ValueError, match="width must be a positive integer"):
        build_generator("dcgan", 32, "nearest", width=0)
    g = build_generator("dcgan", 32, "nearest", z_dim=8, width=W)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 8\)"):
        g(torch.randn(2, 16))
    d = build_discriminator("sngan", 32, width=W)
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        d(torch.randn(2, 3, 64, 64))
