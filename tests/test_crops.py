"""Native-resolution crops (--preprocess crop) and the disjoint embedded pools, on hand-made images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.data import images as data
from pipelines.data.images import (
    embedded_images,
    even_centre_offset,
    load_data,
    load_images,
    preprocess_pil,
)


def coordinate_image(w: int, h: int) -> np.ndarray:
    """(h, w, 3) uint8 whose pixel (y, x) holds (x % 256, y % 256, (x // 256) * 16 + y // 256): its own address."""
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([xx % 256, yy % 256, (xx // 256) * 16 + yy // 256], axis=-1).astype(np.uint8)


def address(t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) source coordinates of every pixel of a (3, R, R) crop of a coordinate image."""
    a = t.numpy().astype(np.int64)
    return a[0] + 256 * (a[2] // 16), a[1] + 256 * (a[2] % 16)


@pytest.mark.parametrize(("w", "h", "r"), [(40, 40, 32), (41, 39, 32), (43, 37, 32), (35, 34, 32), (32, 32, 32),
                                           (300, 200, 64)])
def test_crop_is_centred_native_pixels_at_even_offset(w, h, r):
    img = Image.fromarray(coordinate_image(w, h))
    out = preprocess_pil(img, r, "crop")
    xs, ys = address(out)
    x0, y0 = int(xs[0, 0]), int(ys[0, 0])
    assert x0 % 2 == 0 and y0 % 2 == 0
    assert (x0, y0) == (((w - r) // 2) & ~1, ((h - r) // 2) & ~1)
    # Centred to within the one pixel the even rounding may take.
    assert abs(x0 - (w - r) / 2) <= 1.5 and abs(y0 - (h - r) / 2) <= 1.5
    # Every pixel is the source pixel at the same place: no resampling.
    assert np.array_equal(xs, x0 + np.arange(r)[None, :].repeat(r, 0))
    assert np.array_equal(ys, y0 + np.arange(r)[:, None].repeat(r, 1))
    assert torch.equal(out, torch.from_numpy(coordinate_image(w, h)[y0 : y0 + r, x0 : x0 + r].transpose(2, 0, 1).copy()))


def test_even_offsets_keep_a_nearest_upsampled_grid():
    # A nearest-2x image: its npr residual is exactly zero only if the crop keeps the 2x2 grid.
    from detectors.features import extract

    small = (np.random.default_rng(0).random((21, 23, 3)) * 255).astype(np.uint8)
    up = small.repeat(2, 0).repeat(2, 1)  # 42 x 46: centred offsets 5 and 7 round down to 4 and 6
    assert (even_centre_offset(46, 32), even_centre_offset(42, 32)) == (6, 4)
    crop = preprocess_pil(Image.fromarray(up), 32, "crop")
    assert torch.count_nonzero(extract("npr", crop[None])) == 0
    resized = preprocess_pil(Image.fromarray(up), 32, "resize")
    assert torch.count_nonzero(extract("npr", resized[None])) > 0


def test_crop_mode_skips_small_images_with_size_and_fixes(tmp_path: Path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, (w, h) in enumerate([(40, 40), (30, 50), (64, 36), (33, 33)]):
        Image.fromarray(coordinate_image(w, h)).save(folder / f"img_{i}.png")
    s = load_images(folder, 34, preprocess="crop", cache=False)
    assert len(s) == 2 and s.preprocess == "crop"
    assert [Path(f).name for f in s.files] == ["img_0.png", "img_2.png"]
    assert [Path(f).name for f, _ in s.skipped] == ["img_1.png", "img_3.png"]
    reasons = {Path(f).name: r for f, r in s.skipped}
    assert reasons["img_1.png"].startswith("30x50 is smaller than the 34x34 crop")
    assert "--resolution" in reasons["img_1.png"] and "--preprocess resize" in reasons["img_1.png"]
    # resize mode keeps them all.
    assert len(load_images(folder, 34, cache=False)) == 4
    with pytest.raises(ValueError, match=re.escape("img_1.png is too small: 30x50 is smaller than the 34x34 crop")) as e:
        load_images(folder, 34, preprocess="crop", strict=True, cache=False)
    assert "--preprocess resize" in str(e.value)


def test_cache_key_includes_the_mode(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FORGELAB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(coordinate_image(50, 44)).save(folder / f"img_{i}.png")
    a = load_images(folder, 32)
    b = load_images(folder, 32, preprocess="crop")
    assert a.fingerprint != b.fingerprint and not b.from_cache
    again = load_images(folder, 32, preprocess="crop")
    assert again.from_cache and again.preprocess == "crop" and torch.equal(again.images, b.images)
    assert not torch.equal(a.images, b.images)
    with pytest.raises(ValueError, match="Unknown preprocess mode 'zoom'"):
        load_images(folder, 32, preprocess="zoom")


def _columns(s) -> list[tuple[str, int, int]]:
    """(photo, first column, last column + 1) of every embedded crop."""
    out = []
    for f in s.files:
        m = re.match(r"embedded:(\S+)#x=(\d+),y=\d+,w=(\d+)", f)
        out.append((m.group(1), int(m.group(2)), int(m.group(2)) + int(m.group(3))))
    return out


@pytest.mark.parametrize("preprocess", ["resize", "crop"])
def test_embedded_train_and_test_pools_share_no_pixel(preprocess):
    train = embedded_images(32, 40, seed=0, region="train", preprocess=preprocess)
    test = embedded_images(32, 40, seed=1, region="test", preprocess=preprocess)
    width = {name: p.size[0] for name, p in data._sample_photos()}
    for name, x0, x1 in _columns(train):
        assert 0 <= x0 < x1 <= width[name] // 2
    for name, x0, x1 in _columns(test):
        assert width[name] // 2 <= x0 < x1 <= width[name]
    assert train.fingerprint != test.fingerprint
    assert load_data("embedded", 32, limit=40, seed=0, region="train", preprocess=preprocess).fingerprint == train.fingerprint


def test_embedded_crop_mode_is_native_pixels():
    s = embedded_images(32, 6, seed=3, preprocess="crop")
    photos = dict(data._sample_photos())
    for img, f in zip(s.images, s.files, strict=True):
        name, x0, y0 = re.match(r"embedded:(\S+)#x=(\d+),y=(\d+)", f).groups()
        x0, y0 = int(x0), int(y0)
        assert x0 % 2 == 0 and y0 % 2 == 0
        ref = np.asarray(photos[name])[y0 : y0 + 32, x0 : x0 + 32].transpose(2, 0, 1)
        assert np.array_equal(img.numpy(), ref)


def test_embedded_default_pool_is_unchanged():
    s = embedded_images(16, 4, seed=0)
    assert s.fingerprint == "embedded-16-4-0"
    with pytest.raises(ValueError, match="Unknown embedded region"):
        embedded_images(16, 4, region="val")
    with pytest.raises(ValueError, match="smaller than the 512x512 crop"):
        embedded_images(512, 1, region="train", preprocess="crop")
