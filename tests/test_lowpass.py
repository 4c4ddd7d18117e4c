"""Kaiser-windowed sinc design (against scipy) and the 2x up/down-sampling built on it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from gans.lowpass import (
    STOPBAND_REL,
    STYLEGAN3_TAPS_PER_FACTOR,
    TAPS_PER_FACTOR,
    amplitude_response,
    downsample2x,
    lowpass,
    lowpass_taps,
    sinc_taps,
    upsample2x,
)


@pytest.mark.parametrize(("numtaps", "cutoff", "stopband", "fs"), [(12, 0.5, 0.5 * 2**0.3, 2.0), (24, 0.5, 0.6, 2.0),
                                                                   (16, 3.0, 4.0, 16.0), (40, 0.25, 0.5, 2.0)])
def test_design_is_scipy_firwin_with_a_kaiser_transition_width(numtaps, cutoff, stopband, fs):
    # scipy.signal.firwin(width=...) picks beta with Kaiser's formulas for that transition width:
    # StyleGAN3's design_lowpass_filter for separable filters.
    reference = scipy.signal.firwin(numtaps, cutoff, width=2 * (stopband - cutoff), fs=fs)
    assert np.allclose(lowpass_taps(numtaps, cutoff, stopband, fs), reference, atol=1e-15)


def test_the_papers_parameters_and_the_tap_count_departure():
    # StyleGAN3: 6 taps per factor, stopband 2**0.3 * cutoff at critically sampled layers.
    assert STYLEGAN3_TAPS_PER_FACTOR == 6 and STOPBAND_REL == pytest.approx(1.2311, abs=1e-4)
    assert TAPS_PER_FACTOR == 12 and sinc_taps(2).numel() == 24
    f = np.linspace(0, 0.5, 4001)  # cycles per sample of the 2x rate
    band, stop = f < 0.15, f >= 0.35

    def attenuation(taps):
        h = amplitude_response(taps, f)
        return 20 * np.log10(h[band].mean() / h[stop].max())

    # With the paper's 12 taps the lab's 40 dB from 0.35 cycles/px is not reached; 24 taps do.
    assert attenuation(sinc_taps(2, STYLEGAN3_TAPS_PER_FACTOR)) == pytest.approx(30.0, abs=0.5)
    assert attenuation(sinc_taps(2)) == pytest.approx(51.8, abs=0.5)
    # The -6 dB point sits at the cutoff, the input's Nyquist frequency (0.25 of the 2x rate).
    assert amplitude_response(sinc_taps(2), np.array([0.25]))[0] == pytest.approx(0.5, abs=0.01)


def test_taps_are_symmetric_even_and_sum_to_one():
    h = sinc_taps(2)
    assert h.numel() % 2 == 0 and torch.allclose(h, h.flip(0)) and h.sum().item() == pytest.approx(1.0)


def test_up_then_down_returns_a_band_limited_signal_unshifted():
    t = torch.arange(64, dtype=torch.float64)
    x = (torch.cos(2 * np.pi * 5 * t / 64)[:, None] * torch.sin(2 * np.pi * 3 * t / 64)[None, :]).view(1, 1, 64, 64)
    h = sinc_taps(2).double()
    y = downsample2x(upsample2x(x, h), h)
    assert y.shape == x.shape
    # Interior (away from the zero-padded border): pass-band ripple of two passes on two axes
    # only, ~1 %; half a pixel of shift would cost 2 * pi * 5/64 * 0.5 ~ 0.25 here.
    assert (y - x)[..., 16:48, 16:48].abs().max() < 0.02


def test_down_keeps_a_constant_and_up_keeps_it_with_gain_one():
    h = sinc_taps(2).double()
    x = torch.full((1, 2, 32, 32), 3.0, dtype=torch.float64)
    assert torch.allclose(upsample2x(x, h)[..., 24:40, 24:40], torch.full((1, 2, 16, 16), 3.0, dtype=torch.float64))
    assert torch.allclose(downsample2x(x, h)[..., 6:10, 6:10], torch.full((1, 2, 4, 4), 3.0, dtype=torch.float64))


def test_odd_taps_and_bad_designs_are_refused():
    with pytest.raises(ValueError, match="even number of taps"):
        upsample2x(torch.zeros(1, 1, 4, 4), torch.ones(5) / 5)
    with pytest.raises(ValueError, match="0 < cutoff < stopband <= fs/2"):
        lowpass_taps(12, 0.6, 0.5, 2.0)


def test_resampling_equals_numpy_convolution_of_the_zero_inserted_signal():
    # Separable: an outer product a b^T comes out as the outer product of the 1-D results, each
    # computed here with numpy's convolution on the zero-inserted, zero-padded signal.
    h = sinc_taps(2).double().numpy()
    k = h.size

    def up_1d(v):
        u = np.zeros(2 * v.size)
        u[::2] = v
        return np.convolve(np.pad(u, (k // 2, k // 2 - 1)), 2 * h, mode="valid")

    def down_1d(v):
        return np.convolve(np.pad(v, (k // 2 - 1, k // 2 - 1)), h, mode="valid")[::2]

    def same_1d(v):
        return np.convolve(np.pad(v, (k // 2 - 1, k // 2)), h, mode="valid")

    rng = np.random.default_rng(0)
    taps = torch.from_numpy(h)
    for fn, ref, (m, n) in ((upsample2x, up_1d, (6, 10)), (downsample2x, down_1d, (12, 20)), (lowpass, same_1d, (8, 14))):
        a, b = rng.standard_normal(m), rng.standard_normal(n)
        img = torch.from_numpy(np.outer(a, b)).view(1, 1, m, n)
        np.testing.assert_allclose(fn(img, taps)[0, 0].numpy(), np.outer(ref(a), ref(b)), atol=1e-12)
