"""Upsampler registry: hand-computed resampling, the zero-insertion spectrum, frequency responses, shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gans.upsamplers import (
    RENAMED,
    UPSAMPLERS,
    FIRUpsample,
    Interpolate,
    SincUpsample,
    bed_of_nails,
    bicubic2x,
    check_upsampler,
    fir_kernel,
    fixed_resampling,
    make_upsampler,
)

KINDS = ("transposed", "nearest", "bilinear", "bicubic", "pixelshuffle", "bed_of_nails", "binomial", "sinc")
FIXED = ("nearest", "bilinear", "bicubic", "bed_of_nails")


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_holds_the_eight_kinds():
    assert set(UPSAMPLERS) == set(KINDS)


def test_nearest_on_2x2_gives_block_pattern():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    expected = torch.tensor(
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], dtype=torch.float32
    )
    assert torch.equal(Interpolate("nearest")(x)[0, 0], expected)


def test_bilinear_matches_half_pixel_hand_values():
    # align_corners=False: output j samples input position (j + 0.5) / 2 - 0.5, clamped at the
    # borders. For u = [0, 1, 4, 9] the positions are -0.25 (->0), 0.25, 0.75, 1.25, ... 3.25 (->3).
    u = torch.tensor([0.0, 1.0, 4.0, 9.0])
    hand = torch.tensor([0.0, 0.25, 0.75, 1.75, 3.25, 5.25, 7.75, 9.0])
    # An image that is u along x and v along y: bilinear is separable and linear, so the result
    # is hand[x] + hand_v[y].
    v = torch.tensor([2.0, 0.0])
    hand_v = torch.tensor([2.0, 1.5, 0.5, 0.0])  # positions -0.25 (->0), 0.25, 0.75, 1.25 (->1)
    x = (v[:, None] + u[None, :]).view(1, 1, 2, 4)
    out = Interpolate("bilinear")(x)[0, 0]
    assert torch.allclose(out, hand_v[:, None] + hand[None, :], atol=1e-6)


def _keys_cubic(d: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel with torch's a = -0.75."""
    d = abs(d)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def test_bicubic_matches_keys_kernel_in_the_interior():
    u = torch.tensor([0.0, 1.0, 4.0, 9.0, 16.0, 25.0])
    x = u.expand(3, 6).reshape(1, 1, 3, 6)  # constant along y, so each row is a 1D bicubic
    out = Interpolate("bicubic")(x)[0, 0]
    # Output 5 samples position 2.25 and output 6 position 2.75: both have four valid neighbours.
    # Weights worked by hand: t = 0.25 -> (-0.10546875, 0.87890625, 0.26171875, -0.03515625).
    assert [_keys_cubic(d) for d in (1.25, 0.25, 0.75, 1.75)] == pytest.approx(
        [-0.10546875, 0.87890625, 0.26171875, -0.03515625]
    )
    assert out[1, 5].item() == pytest.approx(5.203125, abs=1e-5)  # 1, 4, 9, 16 weighted
    assert out[1, 6].item() == pytest.approx(7.234375, abs=1e-5)  # weights reversed
    assert torch.allclose(out[0], out[2])


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 2, 1, 1), (1, 1, 2, 5), (2, 2, 7, 3), (1, 1, 16, 16)])
def test_bicubic_as_matrices_equals_torch_interpolate_borders_included(shape):
    # Bicubic runs as two matrix products (faster on a CPU); it must be F.interpolate's resampling
    # exactly, replicated borders, odd or non-square sizes and the channels-last layout included.
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    want = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    for got in (bicubic2x(x), Interpolate("bicubic")(x), bicubic2x(x.contiguous(memory_format=torch.channels_last))):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-12, rtol=0)


def test_matrix_interpolation_gradient_equals_torch_interpolate():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    (ours,) = torch.autograd.grad((Interpolate("bicubic")(x) * g).sum(), x)
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    (theirs,) = torch.autograd.grad((ref * g).sum(), x)
    assert torch.allclose(ours, theirs, atol=1e-12, rtol=0)


def test_bed_of_nails_places_values_top_left():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    expected = torch.tensor(
        [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]], dtype=torch.float32
    )
    assert torch.equal(bed_of_nails(x)[0, 0], expected)


def test_zero_insertion_spectrum_is_periodic_replica_1d():
    # y[2k] = x[k], y[2k+1] = 0  =>  Y[m] = X[m mod N]: the spectrum repeats (an image of the
    # baseband appears at the high frequencies, the fingerprint the study looks for).
    x = torch.randn(1, 1, 1, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = bed_of_nails(x)[0, 0, 0]  # first row: the zero-inserted 1D signal
    X = np.fft.fft(x[0, 0, 0].numpy())
    Y = np.fft.fft(y.numpy())
    assert np.allclose(Y, np.concatenate([X, X]), atol=1e-10)


def test_zero_insertion_spectrum_is_periodic_replica_2d():
    x = torch.randn(1, 1, 5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    X = np.fft.fft2(x[0, 0].numpy())
    Y = np.fft.fft2(bed_of_nails(x)[0, 0].numpy())
    assert np.allclose(Y, np.tile(X, (2, 2)), atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_doubles_size_and_maps_channels(kind):
    up = make_upsampler(kind, 5, 7)
    x = torch.randn(2, 5, 6, 10)
    y = up(x)
    assert y.shape == (2, 7, 12, 20)
    y.sum().backward()  # the whole layer is differentiable w.r.t. its parameters
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in up.parameters())


@pytest.mark.parametrize("kind", FIXED)
def test_fixed_kinds_are_parameter_free_resampling_then_conv(kind):
    up = make_upsampler(kind, 4, 6)
    resample = [m for m in up.modules() if isinstance(m, Interpolate)]
    assert len(resample) == 1 and resample[0].mode == kind
    assert _n_params(resample[0]) == 0
    conv = [m for m in up.modules() if isinstance(m, nn.Conv2d)]
    assert len(conv) == 1 and conv[0].kernel_size == (3, 3)
    # Only the 3x3 convolution learns: 4 * 6 * 9 weights + 6 biases.
    assert _n_params(up) == 4 * 6 * 9 + 6
    x = torch.randn(1, 4, 5, 5)
    assert torch.allclose(up(x), conv[0](resample[0](x)))


def test_learned_kinds_parameter_counts():
    # Transposed conv 4x4 kernel; pixel shuffle: a 3x3 conv to 4 * out_ch channels.
    assert _n_params(make_upsampler("transposed", 4, 6)) == 4 * 6 * 16 + 6
    assert _n_params(make_upsampler("pixelshuffle", 4, 6)) == 4 * 24 * 9 + 24
    for kind in ("transposed", "pixelshuffle"):
        assert not any(isinstance(m, Interpolate) for m in make_upsampler(kind, 4, 6).modules())


def test_unknown_kind_lists_every_name():
    with pytest.raises(ValueError, match="Unknown upsampler 'foo'") as err:
        make_upsampler("foo", 3, 3)
    for name in KINDS:
        assert name in str(err.value)
    assert check_upsampler("bicubic") == "bicubic"


def test_fir_kernel_is_the_normalised_binomial_outer_product_with_gain_4():
    k = fir_kernel()
    assert torch.allclose(k, torch.tensor([1.0, 3, 3, 1]).outer(torch.tensor([1.0, 3, 3, 1])) / 16)
    assert k.sum().item() == pytest.approx(4.0)


def test_binomial_upsample_on_2x2_matches_hand_values():
    # 1D: zero insertion [a, 0, b, 0], pad 2 before and 1 after, taps [1, 3, 3, 1] / 4 (gain 2
    # per axis) give [3a, 3a + b, a + 3b, 3b] / 4. In 2D the result is M X M^T with
    # 4M = [[3, 0], [3, 1], [1, 3], [0, 3]]; for X = [[1, 2], [3, 4]], 16 * M X M^T is:
    hand = torch.tensor(
        [[9, 15, 21, 18], [18, 28, 36, 30], [30, 44, 52, 42], [27, 39, 45, 36]], dtype=torch.float32
    ) / 16
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    assert torch.allclose(FIRUpsample()(x)[0, 0], hand)
    # Every channel is filtered alike and independently.
    assert torch.allclose(FIRUpsample()(torch.cat([x, 2 * x], 1))[0, 1], 2 * hand)


def test_binomial_upsample_preserves_the_mean_away_from_borders():
    y = FIRUpsample()(torch.full((1, 2, 8, 8), 2.0))
    assert torch.allclose(y[..., 1:-1, 1:-1], torch.full_like(y[..., 1:-1, 1:-1], 2.0))


def test_binomial_removes_the_zero_insertion_replica_at_nyquist():
    # A zero-inserted impulse has a flat spectrum (the replica at Nyquist is as strong as DC);
    # after the [1, 3, 3, 1] filter the response is (1 - 3 + 3 - 1) = 0 at Nyquist on each axis.
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    nails = torch.fft.fft2(bed_of_nails(x))[0, 0].abs()
    filt = torch.fft.fft2(FIRUpsample()(x))[0, 0].abs()
    assert torch.allclose(nails, torch.ones_like(nails))
    assert filt[0, 0].item() == pytest.approx(4.0)  # gain 4 at DC
    for fy, fx in ((16, 0), (0, 16), (16, 16)):
        assert filt[fy, fx].item() < 1e-5
    # Attenuated across the upper band, not only at one bin: the radial mean near Nyquist
    # is far below DC, while zero insertion keeps it at DC's level.
    f = torch.fft.fftfreq(32, d=1 / 32).abs()
    high = (f[:, None] >= 12) | (f[None, :] >= 12)
    assert filt[high].mean() < 0.15 * filt[0, 0]
    assert nails[high].mean() == pytest.approx(nails[0, 0].item())


def test_binomial_upsampler_is_fir_then_3x3_conv():
    m = make_upsampler("binomial", 4, 6)
    assert isinstance(m[0], FIRUpsample) and m[1].kernel_size == (3, 3)
    assert _n_params(m) == 4 * 6 * 9 + 6  # the FIR kernel is a buffer, not a weight
    assert "kernel" not in m.state_dict() and "0.kernel" not in m.state_dict()
    assert m(torch.randn(2, 4, 5, 7)).shape == (2, 6, 10, 14)


def test_fixed_resampling_of_each_kind():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    for kind in ("transposed", "pixelshuffle", "nearest"):
        assert torch.equal(fixed_resampling(kind)(x), Interpolate("nearest")(x))
    assert torch.equal(fixed_resampling("bed_of_nails")(x), bed_of_nails(x))
    assert torch.equal(fixed_resampling("binomial")(x), FIRUpsample()(x))
    assert torch.equal(fixed_resampling("sinc")(x), SincUpsample()(x))
    assert fixed_resampling("bicubic").mode == "bicubic"
    assert not list(fixed_resampling("binomial").parameters())
    assert not list(fixed_resampling("sinc").parameters())


# --------------------------------------------------------------------------- frequency responses


def _attenuation_db(resample: nn.Module, n: int = 32) -> float:
    """Stopband attenuation of a weight-free 2x resampling, its conv set to identity.

    The resampling is linear and the same around every input pixel, so its output for one
    impulse is the interpolation filter; the magnitude of that output's DFT is the filter's
    frequency response on the 2n x 2n grid of the output. Attenuation: the mean response in the
    pass band (both frequencies below 0.15 cycles/px of the output) over the largest response
    anywhere from 0.35 cycles/px to Nyquist (either frequency at least 0.35), in dB.
    """
    x = torch.zeros(1, 1, n, n, dtype=torch.float64)
    x[0, 0, n // 2, n // 2] = 1.0
    response = np.abs(np.fft.fft2(resample.double()(x)[0, 0].numpy()))
    f = np.abs(np.fft.fftfreq(2 * n))
    band = np.maximum(f[:, None], f[None, :])
    return float(20 * np.log10(response[band < 0.15].mean() / response[band >= 0.35].max()))


def test_attenuation_measure_on_the_classic_kinds():
    # Check of the measuring code on filters known in closed form, per axis at 0.35 cycles/px
    # over a pass band whose mean response is close to DC's: nearest [1, 1] -> |cos(pi f)|,
    # ~7 dB; bilinear = binomial [1, 3, 3, 1] -> |cos(pi f)|^3, ~20 dB; Keys' bicubic (a = -0.75)
    # in between the two and sinc, ~28 dB here; zero insertion is all-pass: 0 dB.
    measured = {k: _attenuation_db(fixed_resampling(k)) for k in ("nearest", "bilinear", "bicubic", "bed_of_nails", "binomial")}
    pass_mean = 0.96  # mean of cos(pi f)^3 over the pass band, to two digits (see the bilinear bound below)
    assert measured["nearest"] == pytest.approx(6.75, abs=0.3)
    assert measured["bilinear"] == pytest.approx(-20 * np.log10(np.cos(0.35 * np.pi) ** 3 / pass_mean), abs=0.4)
    assert measured["binomial"] == pytest.approx(measured["bilinear"], abs=1e-9)
    assert 24 < measured["bicubic"] < 30
    assert measured["bed_of_nails"] == pytest.approx(0.0, abs=1e-9)


def test_sinc_attenuates_at_least_40_db_from_035_cycles_to_nyquist():
    assert _attenuation_db(fixed_resampling("sinc")) >= 40.0
    # ... and passes the band below the cutoff: within 0.5 dB of unity gain (4 in 2D) below 0.15.
    x = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    x[0, 0, 16, 16] = 1.0
    response = np.abs(np.fft.fft2(SincUpsample().double()(x)[0, 0].numpy()))
    f = np.abs(np.fft.fftfreq(64))
    low = np.maximum(f[:, None], f[None, :]) < 0.15
    assert np.all(np.abs(20 * np.log10(response[low] / 4.0)) < 0.5)


def test_sinc_differs_from_bilinear_in_the_interior_and_binomial_does_not():
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bilinear = Interpolate("bilinear")(x)[..., 1:-1, 1:-1]
    assert (FIRUpsample().double()(x)[..., 1:-1, 1:-1] - bilinear).abs().max() < 1e-12
    assert (SincUpsample().double()(x)[..., 1:-1, 1:-1] - bilinear).abs().max() > 0.3


def test_sinc_keeps_pixel_centres_where_bilinear_has_them():
    # A slow cosine (well inside both pass bands) comes out of both the same up to bilinear's own
    # small attenuation; half an output pixel of shift would cost 2 * pi * f * 0.5 ~ 0.1 here.
    t = torch.arange(64, dtype=torch.float64)
    x = torch.cos(2 * np.pi * 3 * t / 64).view(1, 1, 1, 64).expand(1, 1, 64, 64).contiguous()
    sinc, bilinear = SincUpsample().double()(x), Interpolate("bilinear")(x)
    assert (sinc - bilinear)[..., 32:96, 32:96].abs().max() < 0.02


def test_old_name_filtered_is_refused_with_its_new_name():
    assert RENAMED == {"filtered": "binomial"}
    with pytest.raises(ValueError, match="Upsampler 'filtered' was renamed 'binomial'.*bilinear"):
        check_upsampler("filtered")
