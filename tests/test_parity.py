"""Format parity guard: JPEG quality from quantisation tables, codec and size differences as warnings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images
from PIL import Image

from pipelines.data.parity import describe, file_format, ijg_tables, jpeg_quality, parity_warnings


def save_set(folder: Path, n: int, size: int, fmt: str, quality: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(smooth_images(n, size, seed=size + n)):
        arr = img.permute(1, 2, 0).numpy()
        if fmt == "JPEG":
            Image.fromarray(arr).save(folder / f"{i:03d}.jpg", quality=quality)
        else:
            Image.fromarray(arr).save(folder / f"{i:03d}.png")
    return folder


def test_ijg_table_at_50_is_the_standard_table():
    assert ijg_tables()[49][:8].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]
    assert ijg_tables()[99].tolist() == [1] * 64
    # Quality 10: scale 500, so 16 -> (16 * 500 + 50) // 100 = 80.
    assert ijg_tables()[9][0] == 80


@pytest.mark.parametrize("quality", [5, 20, 37, 50, 63, 75, 90, 95, 100])
def test_quality_of_pillow_jpegs_is_estimated_within_two(tmp_path, quality):
    path = tmp_path / "x.jpg"
    Image.fromarray((np.random.default_rng(quality).random((24, 24, 3)) * 255).astype(np.uint8)).save(path, quality=quality)
    fmt = file_format(path)
    assert fmt.codec == "JPEG" and (fmt.width, fmt.height) == (24, 24)
    assert abs(fmt.quality - quality) <= 2


def test_quality_of_a_scaled_table_is_exact():
    for q in (1, 30, 50, 80, 99):
        assert jpeg_quality(ijg_tables()[q - 1]) == q
    with pytest.raises(ValueError, match="64 entries"):
        jpeg_quality([1, 2, 3])


def test_png_has_no_quality(tmp_path):
    s = describe(save_set(tmp_path / "p", 3, 16, "PNG"), "p")
    assert s.codec == "PNG" and s.quality is None and s.sizes == {(16, 16): 3}


def test_jpeg_real_and_png_fake_warn_about_the_codec(tmp_path):
    real = save_set(tmp_path / "real", 4, 32, "JPEG", 90)
    fake = save_set(tmp_path / "fake", 4, 32, "PNG")
    warns = parity_warnings(real, {"nearest": fake})
    assert len(warns) == 1
    assert "JPEG (quality about 90)" in warns[0] and "'nearest' is PNG" in warns[0] and "--align" in warns[0]
    # --jpeg re-encodes both, but the reals' first compression survives: the warning stays, worded for it.
    (kept,) = parity_warnings(real, {"nearest": fake}, jpeg=75)
    assert "--jpeg 75 re-encodes both, but the first compression survives" in kept
    assert "JPEG (quality about 90, 4:2:0)" in kept and kept.endswith("--align to crop both on the JPEG grid and "
                                                                       "re-encode them at one quality no higher than 90.")
    # --align (native crops on the grid, one quality, one subsampling) leaves nothing to warn about.
    assert parity_warnings(real, {"nearest": fake}, jpeg=75, aligned=True) == []


def test_different_jpeg_qualities_warn(tmp_path):
    real = save_set(tmp_path / "real", 3, 32, "JPEG", 95)
    fake = save_set(tmp_path / "fake", 3, 32, "JPEG", 60)
    near = save_set(tmp_path / "near", 3, 32, "JPEG", 93)
    warns = parity_warnings(real, {"far": fake, "near": near})
    assert len(warns) == 1 and "quality about 95" in warns[0] and "'far' about 60" in warns[0]


def test_native_sizes_warn_unless_cropping(tmp_path):
    real = save_set(tmp_path / "real", 3, 64, "PNG")
    fake = save_set(tmp_path / "fake", 3, 32, "PNG")
    warns = parity_warnings(real, [fake], resolution=32)
    assert len(warns) == 1 and "natively 64 px" in warns[0] and "is 32 px" in warns[0] and "--preprocess crop" in warns[0]
    assert parity_warnings(real, [fake], preprocess="crop") == []


def test_same_storage_gives_no_warning_and_tensors_count_as_png(tmp_path):
    real = save_set(tmp_path / "real", 3, 32, "PNG")
    assert parity_warnings(real, {"mem": torch.zeros(5, 3, 32, 32, dtype=torch.uint8)}) == []
    assert parity_warnings(real, {"a": save_set(tmp_path / "a", 2, 32, "PNG")}) == []


def test_embedded_photos_are_described_by_their_jpeg_files():
    from pipelines.data.images import embedded_images

    s = describe(embedded_images(16, 4), "real")
    assert s.codec == "JPEG" and s.quality is not None and s.shorter_side == 427
    warns = parity_warnings(embedded_images(16, 4), {"dcgan": torch.zeros(2, 3, 16, 16, dtype=torch.uint8)})
    assert any("codec" in w for w in warns) and any("--preprocess crop" in w for w in warns)


def test_chroma_subsampling_is_read_and_compared(tmp_path):
    from PIL import Image

    def save(folder, subsampling):
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                folder / f"{i}.jpg", quality=90, subsampling=subsampling)
        return folder

    full, sub = save(tmp_path / "full", 0), save(tmp_path / "sub", 2)
    assert file_format(next(full.iterdir())).subsampling == "4:4:4"
    assert describe(sub, "s").subsampling == "4:2:0"
    (w,) = parity_warnings(full, {"sub": sub})
    assert "4:4:4 chroma subsampling but fake set 'sub' with 4:2:0" in w and "2x2 trace" in w
    assert parity_warnings(full, {"same": full}) == []
    assert parity_warnings(full, {"sub": sub}, aligned=True) == []
