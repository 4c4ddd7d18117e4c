"""npr, dwt and periodicity against hand-made upsampled images and PyWavelets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import smooth_images

from detectors.detector import Detector, pair_is_valid
from detectors.features import FEATURES, extract
from detectors.residuals import PERIODICITY_EPS, predictor_residual


def photo_crops(n: int = 4, size: int = 64) -> torch.Tensor:
    """(n, 3, size, size) float crops of scikit-learn's sample photos at their own resolution (no resampling)."""
    from pipelines.data.images import _sample_photos

    out = []
    for _name, photo in _sample_photos():
        a = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255
        for k in range(n // 2):
            y, x = 60 + 90 * k, 120 + 70 * k
            out.append(a[:, y : y + size, x : x + size])
    return torch.stack(out)


def bed_of_nails(x: torch.Tensor) -> torch.Tensor:
    z = torch.zeros(*x.shape[:2], 2 * x.shape[2], 2 * x.shape[3], dtype=x.dtype)
    z[..., ::2, ::2] = x
    return z


def test_features_are_registered():
    assert {"npr", "dwt", "periodicity"} <= set(FEATURES)
    for f in ("npr", "dwt"):
        assert pair_is_valid(f, "smallcnn")
    assert not pair_is_valid("periodicity", "smallcnn")


def test_npr_of_nearest_upsampled_image_is_exactly_zero():
    x = smooth_images(5, 16, seed=3)
    up = x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    out = extract("npr", up)
    assert out.shape == (5, 3, 32, 32)
    assert torch.count_nonzero(out) == 0
    assert torch.count_nonzero(extract("npr", x)) > 0  # the source itself has a residual


def test_npr_of_bed_of_nails_is_minus_top_left_on_other_phases():
    x = torch.rand(3, 3, 8, 10)
    out = extract("npr", bed_of_nails(x))
    assert torch.equal(out[..., ::2, ::2], torch.zeros_like(x))
    for i, j in ((0, 1), (1, 0), (1, 1)):
        assert torch.equal(out[..., i::2, j::2], -x)


def test_npr_is_x_minus_nearest_down_up_also_for_odd_sizes():
    x = torch.rand(2, 3, 9, 7)
    ref = x - x[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :9, :7]
    assert torch.equal(extract("npr", x), ref)
    u8 = (torch.rand(2, 3, 8, 8) * 255).to(torch.uint8)
    assert torch.allclose(extract("npr", u8), extract("npr", u8.float() / 255))
    assert extract("npr", u8, flatten=True).shape == (2, 3 * 64)


@pytest.mark.parametrize("wavelet", ["haar", "bior1.3"])
@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 12, 20), (1, 3, 4, 4)])
def test_dwt_equals_pywavelets(wavelet, shape):
    pywt = pytest.importorskip("pywt")
    x = torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = extract("dwt", x, wavelet=wavelet)
    ref = pywt.dwt2(x.numpy(), wavelet, mode="periodization", axes=(-2, -1))[1][2]
    assert ours.shape == (shape[0], 3, shape[2] // 2, shape[3] // 2)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("wavelet", ["haar", "bior1.3"])
@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 12, 20), (1, 3, 4, 6), (1, 3, 2, 2)])
def test_dwt_symmetric_mode_equals_pywavelets(wavelet, shape):
    # SAFE's setting: bior1.3 with pywt's symmetric extension (also for bands shorter than the
    # filter, where the extension reflects more than once).
    pywt = pytest.importorskip("pywt")
    x = torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ours = extract("dwt", x, wavelet=wavelet, mode="symmetric")
    ref = pywt.dwt2(x.numpy(), wavelet, mode="symmetric", axes=(-2, -1))[1][2]
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_dwt_resize_brings_the_band_back_to_the_image_size():
    x = torch.rand(2, 3, 16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    band = extract("dwt", x, wavelet="bior1.3", mode="symmetric")
    resized = extract("dwt", x, wavelet="bior1.3", mode="symmetric", resize=True)
    assert resized.shape == (2, 3, 16, 12)
    ref = torch.nn.functional.interpolate(band, size=(16, 12), mode="bilinear", align_corners=False)
    assert torch.equal(resized, ref)
    # A constant image has no diagonal detail, whatever the mode: zero band, zero resized band.
    assert extract("dwt", torch.full((1, 3, 8, 8), 0.3), wavelet="bior1.3", mode="symmetric", resize=True).abs().max() < 1e-6


def test_dwt_bad_mode_and_resize_are_clear_errors():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="Unknown dwt mode 'zero'; choose one of: periodization, symmetric"):
        extract("dwt", x, mode="zero")
    with pytest.raises(ValueError, match="resize must be true or false"):
        extract("dwt", x, resize="yes")


def test_dwt_haar_hh_of_a_hand_made_cell():
    # One 2x2 cell [[a, b], [c, d]]: Haar HH = (a - b - c + d) / 2.
    x = torch.tensor([[1.0, 2.0], [4.0, 8.0]]).expand(1, 3, 2, 2)
    assert torch.allclose(extract("dwt", x), torch.full((1, 3, 1, 1), (1 - 2 - 4 + 8) / 2))
    with pytest.raises(ValueError, match="Unknown wavelet"):
        extract("dwt", x, wavelet="db4")


def test_predictor_residual_of_a_ramp_is_zero():
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(10.0), indexing="ij")
    ramp = (0.01 * yy + 0.02 * xx).expand(1, 3, 12, 10)
    r = predictor_residual(ramp)
    assert r.shape == (1, 3, 8, 6)
    assert r.abs().max() < 1e-6


def test_periodicity_entries_of_a_hand_made_image():
    # A checkerboard of +-1 around 0.5: residual r = +-2 * 0.5 everywhere, all power at the diagonal Nyquist.
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    board = 0.5 + 0.5 * ((yy + xx) % 2 * 2 - 1).float()
    v = extract("periodicity", board.expand(1, 3, 16, 16))[0]
    assert v.shape == (21,)
    assert torch.allclose(v[:12], torch.full((12,), float(np.log(1.0 + PERIODICITY_EPS))))
    nyq = v[12:].reshape(3, 3)
    # Diagonal bin holds all the power of a 12x12 residual: ratio 12 * 12; the others hold none.
    assert torch.allclose(nyq[:, 2], torch.full((3,), float(np.log(144.0))), atol=1e-4)
    assert torch.all(nyq[:, :2] < np.log(1e-6))


def test_periodicity_moves_both_ways_from_photos():
    o = photo_crops()
    f_o = extract("periodicity", o)
    f_bil = extract("periodicity", F.interpolate(o, scale_factor=2, mode="bilinear", align_corners=False))
    f_zero = extract("periodicity", bed_of_nails(o))
    # Bilinear: a lack. Every phase energy falls, every Nyquist ratio falls far below the photo's.
    assert torch.all(f_bil[:, :12] < f_o[:, :12] - 1.0)
    assert torch.all(f_bil[:, 12:] < f_o[:, 12:] - 3.0)
    # Zero insertion: an excess. The nail phase (0, 0) rises, the hole phase (1, 1) falls to zero energy,
    # every Nyquist ratio rises far above the photo's.
    phases = f_zero[:, :12].reshape(-1, 3, 4)
    base = f_o[:, :12].reshape(-1, 3, 4)
    assert torch.all(phases[..., 0] > base[..., 0] + 1.0)
    assert torch.all(phases[..., 3] < np.log(1e-9))
    assert torch.all(f_zero[:, 12:] > f_o[:, 12:] + 3.0)
    assert torch.all(f_zero[:, 12:] > 5.0)


def test_periodicity_rejects_tiny_images():
    with pytest.raises(ValueError, match="at least 8x8"):
        extract("periodicity", torch.rand(1, 3, 6, 6))


def _nearest_fakes(n: int, seed: int) -> torch.Tensor:
    """Nearest-2x-upsampled smooth images with a little noise (the fakes of the pair tests)."""
    g = torch.Generator().manual_seed(seed)
    up = smooth_images(n, 16, seed=seed).float().repeat_interleave(2, -2).repeat_interleave(2, -1)
    return (up + 2.0 * torch.randn(up.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)


def _smooth_reals(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = smooth_images(n, 32, seed=seed).float()
    return (x + 2.0 * torch.randn(x.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)


@pytest.mark.parametrize("spec", ["npr:svm", "periodicity:lr", "dwt:svm"])
def test_detectors_separate_nearest_upsampled_fakes(spec):
    from detectors.metrics import evaluate

    det = Detector(spec, device="cpu", seed=0).fit(_smooth_reals(60, 1), _nearest_fakes(60, 2))
    real_t, fake_t = _smooth_reals(40, 11), _nearest_fakes(40, 12)
    scores = np.concatenate([det.score(real_t), det.score(fake_t)])
    y = np.r_[np.zeros(40), np.ones(40)].astype(np.int64)
    assert evaluate(y, scores, det.threshold)["auc"] > 0.95
