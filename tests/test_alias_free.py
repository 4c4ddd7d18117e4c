"""Alias-free activations: the filtered ReLU keeps a band-limited signal free of aliases, in both generators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gans.alias_free import FilteredReLU
from gans.lowpass import activation_taps, downsample2x, lowpass, sinc_taps, upsample2x
from gans.networks import build_generator

PERIOD = 64  # samples of one period of the test signal


def _band_limited(seed: int = 0, top: int = 9) -> torch.Tensor:
    """A random periodic row signal with content at 1..top cycles per PERIOD (below 0.15 cycles/px)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(PERIOD, dtype=torch.float64)
    amp, phase = torch.rand(top, generator=g, dtype=torch.float64), 2 * np.pi * torch.rand(top, generator=g, dtype=torch.float64)
    k = torch.arange(1, top + 1, dtype=torch.float64)
    return (amp[:, None] * torch.cos(2 * np.pi * k[:, None] * t[None, :] / PERIOD + phase[:, None])).sum(0)


def _ideal_relu_spectrum(x: np.ndarray, oversample: int = 32) -> np.ndarray:
    """DFT of the alias-free ReLU of a periodic band-limited ``x``: ReLU of its band-limited
    interpolation on a grid ``oversample`` times finer, then only the frequencies below Nyquist."""
    n = x.size
    spec = np.fft.rfft(x)
    fine = np.fft.irfft(spec, n * oversample) * oversample  # exact band-limited interpolation
    out = np.fft.rfft(np.maximum(fine, 0)) / oversample
    return out[: n // 2 + 1]


def _apply_periodic(act: nn.Module, row: torch.Tensor) -> np.ndarray:
    """``act`` on a 2D image made of the row (constant down the columns), three periods wide, so
    that the middle period of the middle row is free of border effects."""
    img = row.repeat(3).view(1, 1, 1, -1).expand(1, 1, 3 * PERIOD, 3 * PERIOD).contiguous()
    out = act(img)[0, 0]
    return out[PERIOD + PERIOD // 2, PERIOD: 2 * PERIOD].numpy()


def _alias_db(act: nn.Module, seed: int) -> float:
    """Energy of the aliases ``act`` leaves in the band up to 0.35 cycles/px, relative to the signal."""
    x = _band_limited(seed)
    ideal = _ideal_relu_spectrum(x.numpy())
    got = np.fft.rfft(_apply_periodic(act, x))
    band = np.arange(ideal.size) <= int(0.35 * PERIOD)  # the filter's pass band and below
    error = np.sum(np.abs(got[band] - ideal[band]) ** 2)
    return float(10 * np.log10(error / np.sum(np.abs(ideal[band]) ** 2)))


def _energy_above(signal: np.ndarray, cutoff: float) -> float:
    """Energy of a periodic 1-D signal at frequencies above ``cutoff`` cycles per sample."""
    spec = np.abs(np.fft.rfft(signal)) ** 2
    return float(spec[np.fft.rfftfreq(signal.size) > cutoff].sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filtered_relu_output_stays_band_limited_before_decimation(seed):
    # The input is band-limited below Nyquist (content below 0.15 cycles/px). At twice the rate
    # the input's Nyquist frequency is 0.25 cycles/sample: what lies above it folds back into the
    # band when the signal is decimated. The ReLU's harmonics put energy there; the filtered
    # ReLU's low-pass must remove at least 20 dB of it before decimating (measured: 47-53 dB).
    x = _band_limited(seed)
    img = x.repeat(3).view(1, 1, 1, -1).expand(1, 1, 3 * PERIOD, 3 * PERIOD).contiguous()
    up, down = sinc_taps(2).double(), activation_taps(2).double()
    plain = torch.relu(upsample2x(img, up))
    filtered = lowpass(plain, down)
    assert torch.equal(filtered[..., ::2, ::2], downsample2x(plain, down))  # what FilteredReLU returns
    assert torch.allclose(FilteredReLU().double()(img), downsample2x(plain, down))
    rows = slice(2 * PERIOD + PERIOD, 2 * PERIOD + PERIOD + 1)
    middle = slice(2 * PERIOD, 4 * PERIOD)  # one period at the 2x rate, free of border effects
    e_plain = _energy_above(plain[0, 0, rows, middle][0].numpy(), 0.25)
    e_filtered = _energy_above(filtered[0, 0, rows, middle][0].numpy(), 0.25)
    assert e_plain > 0
    assert 10 * np.log10(e_filtered / e_plain) <= -20
    # With StyleGAN3's choice for critically sampled layers (the down filter's cutoff at Nyquist,
    # its transition band above it), only 13-21 dB of that energy goes (gans/alias_free.py).
    stylegan3_like = lowpass(plain, up)
    e_s3 = _energy_above(stylegan3_like[0, 0, rows, middle][0].numpy(), 0.25)
    assert -23 < 10 * np.log10(e_s3 / e_plain) < -11


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filtered_relu_leaves_less_aliasing_than_plain_relu_at_the_feature_rate(seed):
    # The same input, measured after decimation against the alias-free reference (ReLU on a 32x
    # finer grid, kept below Nyquist), in the band up to 0.35 cycles/px: plain ReLU's folded
    # harmonics lie 32-40 dB below the signal, the filtered ReLU's 45-50 dB. The gain is limited
    # to ~8-15 dB here because the ReLU is evaluated at 2x only (StyleGAN3's choice): harmonics
    # above twice the rate still fold, and the pass band has a little ripple.
    plain = _alias_db(nn.ReLU().double(), seed)
    filtered = _alias_db(FilteredReLU().double(), seed)
    assert plain > -42  # the measure sees plain ReLU's aliases
    assert filtered <= plain - 7 and filtered < -44


@pytest.mark.parametrize("arch", ["dcgan", "sngan"])
def test_alias_free_generators_use_only_filtered_relus_and_keep_their_weights(arch):
    torch.manual_seed(0)
    plain = build_generator(arch, 32, "sinc", width=4, z_dim=8)
    torch.manual_seed(0)
    af = build_generator(arch, 32, "sinc", width=4, z_dim=8, alias_free=True)
    assert af.config["alias_free"] is True and plain.config["alias_free"] is False
    n_relus = sum(isinstance(m, nn.ReLU) for m in plain.modules())
    assert n_relus > 0 and not any(isinstance(m, nn.ReLU) for m in af.modules())
    assert sum(isinstance(m, FilteredReLU) for m in af.modules()) == n_relus
    # Same parameters and checkpoint keys: a plain checkpoint's weights load into either.
    assert list(plain.state_dict()) == list(af.state_dict())
    af.load_state_dict(plain.state_dict())
    z = torch.randn(3, 8)
    y_plain, y_af = plain.eval()(z), af.eval()(z)
    assert y_af.shape == y_plain.shape == (3, 3, 32, 32) and y_af.abs().max() <= 1
    assert not torch.allclose(y_plain, y_af)


def test_alias_free_must_be_a_boolean():
    with pytest.raises(ValueError, match="alias_free must be true or false"):
        build_generator("dcgan", 32, "sinc", alias_free="yes")
