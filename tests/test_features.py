"""Spectral features against analytic spectra, scipy, and a slow per-image NumPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from detectors.features import EPS, FEATURES, LUMA, extract, n_radii, radial_profile

LOG_EPS = math.log(EPS)


def grating(h: int, w: int, ky: int, kx: int) -> torch.Tensor:
    """(1, 3, h, w) zero-mean float cosine grating with ky cycles down and kx cycles across."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    g = torch.cos(2 * math.pi * (ky * yy / h + kx * xx / w))
    return g.expand(1, 3, h, w).float().clone()


def reference_radial(img: np.ndarray) -> np.ndarray:
    """Slow per-image radial profile: full centred fft2, rounded radius from DC, argsort + bincount mean."""
    gray = np.tensordot(np.asarray(LUMA), img.astype(np.float64), axes=(0, 0))
    h, w = gray.shape
    f = np.fft.fftshift(np.fft.fft2(gray, norm="ortho"))
    logp = np.log(np.abs(f) ** 2 + EPS)
    yy, xx = np.indices((h, w))
    r = np.round(np.hypot(yy - h // 2, xx - w // 2)).astype(int).ravel()
    order = np.argsort(r, kind="stable")
    r_sorted, v_sorted = r[order], logp.ravel()[order]
    sums = np.bincount(r_sorted, weights=v_sorted)
    counts = np.bincount(r_sorted)
    return sums / counts


@pytest.mark.parametrize(("ky", "kx", "radius"), [(0, 5, 5), (7, 0, 7), (3, 4, 5), (6, 8, 10)])
def test_grating_peaks_at_its_radius(ky, kx, radius):
    prof = extract("radial", grating(32, 32, ky, kx))[0]
    assert int(prof.argmax()) == radius
    # Every other ring holds only numerical noise: the log of EPS.
    others = torch.cat([prof[:radius], prof[radius + 1 :]])
    assert torch.allclose(others, torch.full_like(others, LOG_EPS), atol=0.05)


def test_constant_image_has_energy_only_at_dc():
    img = torch.full((2, 3, 24, 24), 0.7)
    prof = extract("radial", img)
    assert (prof.argmax(dim=1) == 0).all()
    # DC of an orthonormal FFT of a constant c over n pixels is c * sqrt(n).
    assert torch.allclose(prof[:, 0], torch.full((2,), math.log((0.7 * 24) ** 2 + EPS)), atol=1e-4)
    assert torch.allclose(prof[:, 1:], torch.full_like(prof[:, 1:], LOG_EPS), atol=0.05)


def test_vertical_grating_shows_in_one_projection_only():
    h = w = 32
    k = 6
    proj = extract("xy", grating(h, w, 0, k))[0]
    over_rows, over_cols = proj[:w], proj[w:]  # indexed by column (fx), by row (fy)
    assert over_rows.shape == (w,) and over_cols.shape == (h,)
    peaks = set(torch.topk(over_rows, 2).indices.tolist())
    assert peaks == {w // 2 - k, w // 2 + k}
    # Along the other axis all energy sits in the DC row: no trace of frequency k.
    c = h // 2
    rest = torch.cat([over_cols[:c], over_cols[c + 1 :]])
    assert torch.allclose(rest, torch.full_like(rest, LOG_EPS), atol=0.05)
    assert over_cols[c] > rest.max() + 1


def test_horizontal_grating_is_the_transpose():
    a = extract("xy", grating(32, 32, 0, 5))[0]
    b = extract("xy", grating(32, 32, 5, 0))[0]
    assert torch.allclose(a[:32], b[32:], atol=1e-4) and torch.allclose(a[32:], b[:32], atol=1e-4)


@pytest.mark.parametrize("shape", [(16, 16), (17, 17), (12, 20), (15, 10)])
def test_radial_equals_slow_reference(shape):
    g = torch.Generator().manual_seed(sum(shape))
    imgs = torch.randint(0, 256, (3, 3, *shape), generator=g, dtype=torch.uint8)
    got = extract("radial", imgs).double().numpy()
    assert got.shape == (3, n_radii(*shape))
    for i in range(3):
        ref = reference_radial(imgs[i].numpy() / 255.0)
        np.testing.assert_allclose(got[i], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(16, 16), (17, 17), (12, 19), (15, 10)])
def test_xy_equals_full_spectrum_means(shape):
    imgs = torch.rand(2, 3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    gray = np.tensordot(np.asarray(LUMA), imgs.numpy(), axes=(0, 1))
    logp = np.log(np.abs(np.fft.fftshift(np.fft.fft2(gray, norm="ortho"), axes=(-2, -1))) ** 2 + EPS)
    ref = np.concatenate([logp.mean(axis=1), logp.mean(axis=2)], axis=1)
    np.testing.assert_allclose(extract("xy", imgs).numpy(), ref, atol=1e-10)


@pytest.mark.parametrize("shape", [(8, 8), (9, 6)])
def test_dct_equals_scipy(shape):
    g = torch.Generator().manual_seed(3)
    imgs = torch.rand(2, 3, *shape, generator=g, dtype=torch.float64)
    got = extract("dct", imgs, flatten=False).numpy()
    ref = np.log(np.abs(scipy.fft.dctn(imgs.numpy(), axes=(-2, -1), norm="ortho")) + 1e-6)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    assert extract("dct", imgs).shape == (2, 3 * shape[0] * shape[1])


def test_spectrum_is_the_centred_log_power():
    imgs = torch.rand(2, 3, 10, 12, dtype=torch.float64)
    gray = np.tensordot(np.asarray(LUMA), imgs.numpy(), axes=(0, 1))
    ref = np.log(np.abs(np.fft.fftshift(np.fft.fft2(gray, norm="ortho"), axes=(-2, -1))) ** 2 + EPS)
    np.testing.assert_allclose(extract("spectrum", imgs, flatten=False)[:, 0].numpy(), ref, atol=1e-10)
    assert extract("spectrum", imgs).shape == (2, 120)


@pytest.mark.parametrize("name", ["radial", "xy", "spectrum", "dct", "pixels"])
def test_uint8_is_scaled_like_float(name):
    imgs = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a = extract(name, imgs)
    b = extract(name, imgs.float() / 255.0)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_pixels_shapes():
    imgs = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    assert extract("pixels", imgs).shape == (2, 3, 5, 5)
    assert extract("pixels", imgs, flatten=True).shape == (2, 75)
    assert float(extract("pixels", imgs).max()) <= 1.0


def test_gradients_flow_and_match_finite_differences():
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: radial_profile(t, normalize="minmax"), (x,))
    for name in ("radial", "xy", "dct", "spectrum"):
        y = torch.rand(2, 3, 8, 8, requires_grad=True)
        out = extract(name, y)
        # The autograd path and the in-place no-grad path compute the same values.
        torch.testing.assert_close(out.detach(), extract(name, y.detach()))
        out.sum().backward()
        assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_length_resampling():
    imgs = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    full = extract("radial", imgs)
    assert torch.equal(extract("radial", imgs, length=full.shape[1]), full)
    short = extract("radial", imgs, length=10)
    assert short.shape == (2, 10)
    # Linear interpolation with aligned end points: compare with np.interp.
    xs = np.linspace(0, full.shape[1] - 1, 10)
    for i in range(2):
        np.testing.assert_allclose(short[i].numpy(), np.interp(xs, np.arange(full.shape[1]), full[i].numpy()), atol=1e-4)


def test_minmax_normalisation():
    prof = extract("radial", torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8), normalize="minmax")
    assert torch.allclose(prof.amin(1), torch.zeros(3)) and torch.allclose(prof.amax(1), torch.ones(3))
    xy = extract("xy", torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8), normalize="minmax")
    assert torch.allclose(xy.amax(1), torch.ones(3))


@pytest.mark.parametrize("name", list(FEATURES))
def test_batching_does_not_change_features(name):
    imgs = torch.randint(0, 256, (7, 3, 12, 12), dtype=torch.uint8)
    torch.testing.assert_close(extract(name, imgs, batch_size=3), extract(name, imgs), rtol=1e-5, atol=1e-5)


def test_grayscale_single_channel_input():
    one = torch.rand(2, 1, 12, 12)
    three = one.expand(2, 3, 12, 12)
    # LUMA sums to 1, so a grey RGB image equals its single-channel version.
    torch.testing.assert_close(extract("radial", one), extract("radial", three), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("images", "error", "words"),
    [
        (torch.zeros(3, 8, 8), ValueError, "shape"),
        (torch.zeros(2, 2, 8, 8), ValueError, "shape"),
        (torch.zeros(0, 3, 8, 8), ValueError, "empty"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.int32), TypeError, "uint8 or floating"),
        (np.zeros((2, 3, 8, 8)), TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_gives_clear_errors(images, error, words):
    with pytest.raises(error, match=words):
        extract("radial", images, batch_size=4)


def test_unknown_names_are_listed():
    with pytest.raises(ValueError, match="choose one of: .*radial"):
        extract("fourier", torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="normalize"):
        extract("radial", torch.zeros(1, 3, 8, 8), normalize="zscore")


def test_extract_chunks_large_sets_inside(monkeypatch):
    from detectors import features

    seen = []

    def spy(images):
        seen.append(images.shape[0])
        return images.float().mean(dim=(1, 2, 3))[:, None]

    monkeypatch.setitem(features.FEATURES, "spy", spy)
    x = torch.rand(2 * features.EXTRACT_CHUNK + 5, 3, 4, 4)
    out = extract("spy", x)
    assert seen == [features.EXTRACT_CHUNK, features.EXTRACT_CHUNK, 5]
    assert torch.allclose(out[:, 0], x.mean(dim=(1, 2, 3)))
    with pytest.raises(ValueError, match="batch_size must be a positive"):
        extract("spy", x, batch_size=0)


# -- colorprint: fingerprint of the luma plus the chroma planes' xy spectra ---------------------
def test_opponent_chroma_is_zero_on_grey_and_orthonormal_with_intensity():
    from detectors.features import opponent_chroma

    grey = torch.rand(2, 1, 6, 5).expand(2, 3, 6, 5)
    assert opponent_chroma(grey).abs().max() < 1e-7
    # Pure primaries at full value: O1 = (R - G)/sqrt(2), O2 = (R + G - 2B)/sqrt(6).
    prim = torch.eye(3).reshape(3, 3, 1, 1).expand(3, 3, 2, 2).contiguous()
    got = opponent_chroma(prim)[:, :, 0, 0]
    s2, s6 = math.sqrt(2.0), math.sqrt(6.0)
    torch.testing.assert_close(got, torch.tensor([[1 / s2, 1 / s6], [-1 / s2, 1 / s6], [0.0, -2 / s6]]))
    # With the intensity axis (1, 1, 1)/sqrt(3) the two chroma axes form an orthonormal basis of RGB.
    basis = torch.cat([opponent_chroma(prim)[:, :, 0, 0].T, torch.full((1, 3), 1 / math.sqrt(3.0))])
    torch.testing.assert_close(basis @ basis.T, torch.eye(3))
    with pytest.raises(ValueError, match="RGB"):
        opponent_chroma(torch.rand(1, 1, 4, 4))


def test_a_red_green_grating_peaks_at_its_frequency_in_the_chroma_projection_only():
    from detectors.features import colorprint, opponent_chroma, xy_profile

    h, w, f = 16, 32, 5
    t = 0.25 * torch.cos(2 * math.pi * f * torch.arange(w) / w).expand(h, w)
    img = torch.stack([0.5 + t, 0.5 - t, torch.full((h, w), 0.5)])[None]  # R - G varies, R + G - 2B = 0
    chroma = opponent_chroma(img)
    cols = xy_profile(chroma[:, 0])[0, :w]  # centred: fx = -16 .. 15, DC at index 16
    peaks = sorted(torch.topk(cols, 2).indices.tolist())
    assert peaks == [w // 2 - f, w // 2 + f]  # the grating's frequency and its mirror, not DC
    # The second chroma plane is flat: every one of its projection values is the power floor.
    flat = xy_profile(chroma[:, 1])
    assert float(flat.max() - flat.min()) < 1e-3
    # colorprint = fingerprint, then each chroma plane's xy projections, in that order.
    feat = colorprint(img)
    n_fp = extract("fingerprint", img).shape[1]
    assert feat.shape == (1, n_fp + 2 * (w + h))
    torch.testing.assert_close(feat[:, :n_fp], extract("fingerprint", img))
    torch.testing.assert_close(feat[:, n_fp : n_fp + w], cols[None])


def test_colorprint_chroma_projections_match_the_full_fft():
    from detectors.features import colorprint, opponent_chroma, xy_profile

    torch.manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 12, 20), dtype=torch.uint8)
    h, w = 12, 20
    chroma = opponent_chroma(imgs).double()
    # Reference from the full two-sided FFT: centred log power, mean over rows (cols) and columns (rows).
    full = torch.fft.fftshift(torch.log(torch.fft.fft2(chroma, norm="ortho").abs() ** 2 + 1e-8), dim=(-2, -1))
    ref_cols, ref_rows = full.mean(dim=-2), full.mean(dim=-1)  # (N, 2, W), (N, 2, H)
    expect = torch.cat([torch.cat([ref_cols[:, i], ref_rows[:, i]], 1) for i in (0, 1)], 1)
    got = colorprint(imgs)
    assert got.shape == (3, extract("fingerprint", imgs).shape[1] + 2 * (w + h))
    torch.testing.assert_close(got[:, -expect.shape[1] :].double(), expect, rtol=1e-4, atol=1e-4)
    # xy itself is unchanged by the refactoring into xy_profile: the profile of the luma plane.
    luma = torch.einsum("c,nchw->nhw", torch.tensor(LUMA), imgs.float() / 255)
    torch.testing.assert_close(extract("xy", imgs), xy_profile(luma), rtol=1e-5, atol=1e-5)


def test_a_trace_in_the_colour_differences_alone_is_seen_by_colorprint_and_not_by_fingerprint():
    """Fakes = real-like images plus white noise along an RGB direction the luma weights cancel.

    The luma of every image is exactly that of a real-like image, so ``fingerprint`` (luma only) scores the
    fakes like the reals; ``colorprint`` sees the chroma spectra. Both with ``deviation`` fitted on reals alone.
    """
    from sklearn.metrics import roc_auc_score

    from detectors.detector import Detector

    def photos(n: int, seed: int) -> torch.Tensor:
        from conftest import smooth_images

        g = torch.Generator().manual_seed(seed + 1000)
        return smooth_images(n, 16, seed=seed).float() / 255 * 0.9 + 0.05 + 0.01 * torch.randn(n, 3, 16, 16, generator=g)

    v = torch.tensor([LUMA[1], -LUMA[0], 0.0])  # LUMA . v = 0: no change of brightness
    assert abs(float(torch.tensor(LUMA) @ v)) < 1e-7
    real_train, real_test, base = photos(300, 0), photos(100, 1), photos(100, 2)
    chroma_noise = torch.randn(100, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    fake = base + 0.03 * v.view(1, 3, 1, 1) * chroma_noise  # raises the chroma spectra, not the luma one
    torch.testing.assert_close(extract("xy", fake), extract("xy", base), rtol=1e-4, atol=1e-4)  # luma unchanged
    y = np.r_[np.zeros(100), np.ones(100)]
    auc = {}
    for feature in ("fingerprint", "colorprint"):
        det = Detector(f"{feature}:deviation").fit(real_train, None)
        auc[feature] = roc_auc_score(y, np.r_[det.score(real_test), det.score(fake)])
    assert auc["colorprint"] > 0.99 and 0.35 < auc["fingerprint"] < 0.65, auc
