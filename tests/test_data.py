"""pipelines.data.images: one preprocessing path, any image mode, skipped files, cache, embedded photos, splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images, write_pngs
from PIL import Image

from detectors import augment
from detectors.features import radial_profile
from pipelines.data import images as data
from pipelines.data.images import (
    IMAGEWOOF_CLASSES,
    embedded_images,
    imagewoof_split,
    load_data,
    load_images,
    perturb,
    preprocess_pil,
    resolve_data,
    scan_images,
    split_indices,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def imagewoof_class(file: str | os.PathLike) -> str | None:
    """The breed of an ImageWoof file from its <wnid> parent folder, or None when it is not one."""
    return IMAGEWOOF_CLASSES.get(Path(file).parent.name)


def _blocks(width_blocks: int, side: int, vertical: bool = False) -> Image.Image:
    """Three side x side blocks, red / green / blue, side by side (or stacked)."""
    w, h = (side, 3 * side) if vertical else (3 * side, side)
    img = Image.new("RGB", (w, h))
    for k, c in enumerate((RED, GREEN, BLUE)):
        box = (0, k * side, side, (k + 1) * side) if vertical else (k * side, 0, (k + 1) * side, side)
        img.paste(c, box)
    return img


def _rgb(t: torch.Tensor) -> tuple[int, ...]:
    """The single colour of a constant (3, H, W) image (asserts it is constant)."""
    flat = t.reshape(3, -1)
    assert bool((flat == flat[:, :1]).all()), "image is not constant"
    return tuple(int(v) for v in flat[:, 0])


# --------------------------------------------------------------------------------------------
# Preprocessing


def test_centre_crop_without_resize_is_exact_middle_block():
    # 30x10 at R=10: no scaling, the crop is exactly the middle (green) block.
    out = preprocess_pil(_blocks(3, 10), 10)
    assert out.dtype == torch.uint8 and out.shape == (3, 10, 10)
    assert _rgb(out) == GREEN
    # Portrait: the crop is the middle row block.
    assert _rgb(preprocess_pil(_blocks(3, 10, vertical=True), 10)) == GREEN


def test_resize_then_crop_keeps_middle_block():
    # 60x20 -> shorter side 20 to 10 (factor 2), centre crop = source columns 20..40 (green).
    out = preprocess_pil(_blocks(3, 20), 10)
    # Bicubic at factor 2 reaches 4 source pixels out, so columns 2..7 see only green.
    assert torch.equal(out[:, :, 2:8], torch.tensor(GREEN, dtype=torch.uint8).view(3, 1, 1).expand(3, 10, 6))
    means = out.float().mean(dim=(1, 2))
    assert means[1] > 220 and means[0] < 30 and means[2] < 30


def test_antialias_removes_checkerboard_when_downscaling():
    # A 1-pixel checkerboard is pure Nyquist energy; an antialiased 4x reduction averages it to grey.
    a = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    out = preprocess_pil(Image.fromarray(a, "L"), 16).float()
    assert abs(out.mean().item() - 127.5) < 2 and out.std().item() < 2


def test_image_at_resolution_passes_bit_exact(tmp_path: Path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    for i, a in enumerate(arr):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    s = load_images(tmp_path, 16, cache=False)
    assert torch.equal(s.images, torch.from_numpy(arr).permute(0, 3, 1, 2))


def _mode_images() -> dict[str, tuple[Image.Image, tuple[int, int, int], int]]:
    """name -> (image, expected RGB of its pixels, tolerance)."""
    rgba = Image.new("RGBA", (12, 8), (10, 20, 30, 0))  # fully transparent: white
    half = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
    p = Image.new("P", (8, 8), 3)
    p.putpalette([0, 0, 0, 1, 1, 1, 2, 2, 2, 200, 100, 50] + [0] * (256 * 3 - 12))
    pt = p.copy()
    pt.info["transparency"] = 3
    i16 = Image.fromarray(np.full((8, 10), 257 * 100, dtype=np.uint16))
    assert i16.mode.startswith("I;16")
    one = Image.new("1", (9, 8), 1)
    la = Image.new("LA", (8, 8), (50, 255))
    return {
        "L": (Image.new("L", (8, 8), 100), (100, 100, 100), 0),
        "LA": (la, (50, 50, 50), 0),
        "RGBA_transparent": (rgba, (255, 255, 255), 0),
        "RGBA_opaque": (half, (0, 0, 0), 0),
        "P": (p, (200, 100, 50), 0),
        "P_transparent": (pt, (255, 255, 255), 0),
        "I16": (i16, (100, 100, 100), 0),
        "1": (one, (255, 255, 255), 0),
        "CMYK": (Image.new("CMYK", (10, 8), (0, 255, 255, 0)), (255, 0, 0), 0),
        "tiny": (Image.new("RGB", (1, 1), (7, 8, 9)), (7, 8, 9), 0),
    }


@pytest.mark.parametrize("name", list(_mode_images()))
def test_every_mode_becomes_rgb_with_right_values(name: str):
    img, expected, tol = _mode_images()[name]
    out = preprocess_pil(img, 8)
    assert out.shape == (3, 8, 8) and out.dtype == torch.uint8
    got = np.asarray(_rgb(out))
    assert np.abs(got - np.asarray(expected)).max() <= tol, (name, got)


def test_files_of_every_format_and_mode_load(tmp_path: Path):
    modes = {k: v for k, v in _mode_images().items() if k != "CMYK"}  # PNG has no CMYK: JPEG below
    for name, (img, _, _) in modes.items():
        img.save(tmp_path / f"{name}.png")
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(tmp_path / "cmyk.JPG", quality=95)
    Image.new("RGB", (12, 9), (30, 60, 90)).save(tmp_path / "sub.WEBP", lossless=True)
    Image.new("RGB", (9, 12), (90, 60, 30)).save(tmp_path / "b.bmp")
    Image.new("L", (8, 8), 77).save(tmp_path / "gray.jpeg", quality=100)
    (tmp_path / "notes.txt").write_text("not an image, and not an image extension")
    s = load_images(tmp_path, 8, cache=False)
    assert s.skipped == []
    assert len(s) == len(modes) + 4
    by_name = {Path(f).name: s.images[i] for i, f in enumerate(s.files)}
    for name, (_, expected, _) in modes.items():
        assert _rgb(by_name[f"{name}.png"]) == expected, name
    assert np.abs(np.asarray(_rgb(by_name["cmyk.JPG"])) - RED).max() <= 3
    assert _rgb(by_name["sub.WEBP"]) == (30, 60, 90)
    assert _rgb(by_name["b.bmp"]) == (90, 60, 30)
    assert np.abs(np.asarray(_rgb(by_name["gray.jpeg"])) - 77).max() <= 1


def test_exif_orientation_is_applied(tmp_path: Path):
    img = _blocks(3, 10)  # landscape red|green|blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the stored landscape image is shown as portrait
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    s = load_images(tmp_path, 10, cache=False)
    # Shown upright it is portrait; the centre crop is still the middle (green) block.
    got = np.asarray(_rgb(s.images[0][:, 2:8, 2:8].contiguous()))
    assert np.abs(got - GREEN).max() <= 6


# --------------------------------------------------------------------------------------------
# Folders, bad files, errors


def _bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    write_pngs(smooth_images(4, 12, seed=3), folder / "good")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("hello, I am a text file")
    full = (folder / "good" / "img_0000.png").read_bytes()
    buf = Path(tmp_path / "big.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf)
    (folder / "truncated.png").write_bytes(buf.read_bytes()[: len(full) // 2 + 200])
    (folder / ".hidden.png").write_bytes(b"junk that must be ignored")
    return folder


def test_unreadable_files_are_skipped_with_reasons(tmp_path: Path):
    folder = _bad_folder(tmp_path)
    s = load_images(folder, 8, cache=False)
    assert len(s) == 4
    assert [Path(f).name for f, _ in s.skipped] == ["empty.png", "text.png", "truncated.png"]
    reasons = dict((Path(f).name, r) for f, r in s.skipped)
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["text.png"]
    assert "truncated" in reasons["truncated.png"].lower()


def test_strict_raises_on_first_bad_file_with_its_path(tmp_path: Path):
    folder = _bad_folder(tmp_path)
    with pytest.raises(ValueError, match=r"empty\.png.*--strict"):
        load_images(folder, 8, cache=False, strict=True)
    # Also when the set comes from the cache.
    load_images(folder, 8, cache=tmp_path / "c")
    with pytest.raises(ValueError, match=r"empty\.png"):
        load_images(folder, 8, cache=tmp_path / "c", strict=True)


def test_decompression_bomb_is_skipped(tmp_path: Path, monkeypatch):
    write_pngs(smooth_images(2, 8, seed=0), tmp_path / "f")
    Image.new("RGB", (100, 100)).save(tmp_path / "f" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    s = load_images(tmp_path / "f", 8, cache=False)
    assert len(s) == 2
    assert s.skipped[0][0].endswith("bomb.png") and "decompression bomb" in s.skipped[0][1]


def test_missing_empty_and_all_bad_folders_have_clear_messages(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_images(tmp_path / "nope", 8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"holds no images.*\.jpg.*\.png.*\.webp.*\.bmp"):
        load_images(tmp_path / "empty", 8)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("x")
    with pytest.raises(ValueError, match="None of the 1 image files"):
        load_images(tmp_path / "bad", 8, cache=False)
    with pytest.raises(NotADirectoryError):
        load_images(tmp_path / "bad" / "x.png", 8)
    with pytest.raises(ValueError, match="resolution"):
        load_images(tmp_path / "bad", 0)


def test_order_is_sorted_and_recursive(tmp_path: Path):
    imgs = smooth_images(3, 8, seed=5)
    write_pngs(imgs[2:], tmp_path / "b")
    write_pngs(imgs[:2], tmp_path / "a")
    s = load_images(tmp_path, 8, cache=False)
    assert [Path(f).relative_to(tmp_path).as_posix() for f in s.files] == [
        "a/img_0000.png", "a/img_0001.png", "b/img_0000.png"]
    assert torch.equal(s.images, imgs)


def test_limit_is_deterministic_sorted_subset_and_tops_up_past_bad_files(tmp_path: Path):
    folder = _bad_folder(tmp_path)
    write_pngs(smooth_images(12, 8, seed=9), folder / "more")
    full = load_images(folder, 8, cache=False)
    a = load_images(folder, 8, limit=9, cache=False)
    b = load_images(folder, 8, limit=9, cache=False)
    assert a.files == b.files and torch.equal(a.images, b.images)
    assert len(a) == 9 and a.files == sorted(a.files, key=lambda f: Path(f).relative_to(folder).as_posix())
    index = {f: i for i, f in enumerate(full.files)}
    assert torch.equal(a.images, full.images[[index[f] for f in a.files]])
    # 16 good files and 3 bad ones: asking for all 16 good ones must skip past every bad one.
    c = load_images(folder, 8, limit=16, cache=False)
    assert len(c) == 16 and len(c.skipped) == 3


# --------------------------------------------------------------------------------------------
# Cache


def test_second_load_hits_cache_without_decoding(image_folder: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FORGELAB_CACHE", str(tmp_path / "cache"))
    calls = []
    real = data._decode_file

    def counting(path, resolution, *args):
        calls.append(path)
        return real(path, resolution, *args)

    monkeypatch.setattr(data, "_decode_file", counting)
    first = load_images(image_folder, 32)
    assert len(calls) == 24 and not first.from_cache
    assert list((tmp_path / "cache" / "images").glob("*.npy"))
    second = load_images(image_folder, 32)
    assert len(calls) == 24 and second.from_cache
    assert torch.equal(first.images, second.images) and first.files == second.files
    # Another resolution or limit is another entry; a changed file invalidates the entry.
    load_images(image_folder, 16)
    assert len(calls) == 48
    f = Path(first.files[0])
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_images(image_folder, 32)
    assert len(calls) == 72
    # No temporary files are left behind by the atomic writes.
    assert not [p for p in (tmp_path / "cache" / "images").iterdir() if p.name.startswith(".")]


def test_damaged_cache_entry_is_a_miss(image_folder: Path, tmp_path: Path):
    first = load_images(image_folder, 32, cache=tmp_path)
    for npy in (tmp_path / "images").glob("*.npy"):
        npy.write_bytes(b"garbage")
    again = load_images(image_folder, 32, cache=tmp_path)
    assert not again.from_cache and torch.equal(first.images, again.images)


# --------------------------------------------------------------------------------------------
# Embedded photos, specs, ImageWoof


def test_embedded_images_are_deterministic_photo_like_crops():
    a = embedded_images(32, n=24, seed=0)
    b = embedded_images(32, n=24, seed=0)
    c = embedded_images(32, n=24, seed=1)
    assert a.images.shape == (24, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and a.files == b.files
    assert not torch.equal(a.images, c.images)
    assert len(set(a.files)) == 24 and {f.split("#")[0] for f in a.files} <= {
        "embedded:china.jpg", "embedded:flower.jpg"}
    x = a.images.float()
    assert (x.std(dim=(1, 2, 3)) > 5).all()  # no flat crops
    # Natural images: spectral power falls with frequency (low radii far above the highest).
    prof = radial_profile(a.images).mean(0)
    assert prof[1] > prof[-1] + 3


def test_resolve_and_load_data(tmp_path: Path, monkeypatch, image_folder: Path):
    monkeypatch.delenv("FORGELAB_DATA", raising=False)
    with pytest.raises(ValueError, match="FORGELAB_DATA"):
        resolve_data(None)
    assert resolve_data("embedded") == "embedded"
    monkeypatch.setenv("FORGELAB_DATA", str(image_folder))
    assert resolve_data(None) == image_folder
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data(tmp_path / "missing")
    s = load_data(None, 32, cache=False)
    assert len(s) == 24
    e = load_data("embedded", 16, limit=10, seed=3)
    assert torch.equal(e.images, embedded_images(16, 10, seed=3).images)


def test_imagewoof_layout(tmp_path: Path):
    root = tmp_path / "imagewoof2-160"
    wnid = next(iter(IMAGEWOOF_CLASSES))
    write_pngs(smooth_images(2, 8), root / "train" / wnid)
    write_pngs(smooth_images(2, 8), root / "val" / wnid)
    assert imagewoof_split(root, "train") == root / "train"
    assert imagewoof_class(root / "val" / wnid / "img_0000.png") == IMAGEWOOF_CLASSES[wnid]
    assert len(IMAGEWOOF_CLASSES) == 10
    with pytest.raises(FileNotFoundError, match=r"did you mean .*imagewoof2-160"):
        imagewoof_split(tmp_path, "train")
    with pytest.raises(ValueError, match="Unknown ImageWoof split"):
        imagewoof_split(root, "test")


# --------------------------------------------------------------------------------------------
# Splits and perturbations


@pytest.mark.parametrize("n", [0, 1, 7, 100, 101])
def test_split_indices_are_disjoint_covering_and_deterministic(n: int):
    parts = split_indices(n, (0.6, 0.2, 0.2), seed=4)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(n))
    for p, f in zip(parts, (0.6, 0.2, 0.2), strict=True):
        assert abs(len(p) - f * n) < 1 + 1e-9 and (np.diff(p) > 0).all()
    again = split_indices(n, (0.6, 0.2, 0.2), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    if n >= 100:
        assert not np.array_equal(parts[0], split_indices(n, (0.6, 0.2, 0.2), seed=5)[0])


def test_split_indices_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, (0.5, 0.2))
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, (1.2, -0.2))


def test_perturb_matches_augment_and_keeps_constants(real_images: torch.Tensor):
    assert torch.equal(perturb(real_images, jpeg=75), augment.jpeg(real_images, 75))
    assert torch.equal(perturb(real_images, blur=1.0), augment.blur(real_images, 1.0))
    flat = torch.full((2, 3, 32, 32), 90, dtype=torch.uint8)
    assert torch.equal(perturb(flat, resize=0.5), flat)
    # Down-up resizing removes high frequencies: the top of the radial spectrum drops.
    noise = torch.randint(0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    before = radial_profile(noise).mean(0)
    after = radial_profile(perturb(noise, resize=0.5)).mean(0)
    assert after[-4:].mean() < before[-4:].mean() - 2
    assert torch.equal(perturb(real_images), real_images)
    with pytest.raises(ValueError, match="JPEG quality"):
        perturb(real_images, jpeg=0)
    with pytest.raises(ValueError, match="Resize factor"):
        perturb(real_images, resize=2.0)


def test_scan_images_summarises_folder(tmp_path: Path):
    folder = _bad_folder(tmp_path)
    Image.new("L", (20, 10)).save(folder / "gray.png")
    info = scan_images(folder)
    assert info["files"] == 8 and info["readable"] == 5
    assert info["modes"] == {"RGB": 4, "L": 1}
    assert info["sizes"]["12x12"] == 4 and info["sizes"]["20x10"] == 1
    assert info["min_shorter_side"] == 10 and len(info["skipped"]) == 3


@pytest.mark.data
@pytest.mark.skipif(not os.environ.get("FORGELAB_DATA"), reason="FORGELAB_DATA is not set")
def test_real_data_subset_spans_classes():
    s = load_data(None, 32, limit=64, cache=False)
    assert s.images.shape == (64, 3, 32, 32) and s.skipped == []
    breeds = {imagewoof_class(f) for f in s.files} - {None}
    if breeds:  # an ImageWoof folder: the fixed-seed subset is not one breed's first files
        assert len(breeds) >= 5


def test_cache_key_names_the_mode_only_when_it_is_not_the_default(image_folder):
    """resize keeps the key of caches written before the mode existed; crop gets a key of its own."""
    import hashlib

    from pipelines.data.images import PREPROCESS_VERSION, fingerprint, list_images

    files = list_images(image_folder)
    h = hashlib.sha256()
    h.update(f"forgelab-images v{PREPROCESS_VERSION}\0{image_folder.resolve()}\0{32}\0{None}\n".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(image_folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    assert fingerprint(image_folder, files, 32, None) == h.hexdigest()[:24]
    assert fingerprint(image_folder, files, 32, None, "resize") == h.hexdigest()[:24]
    assert fingerprint(image_folder, files, 32, None, "crop") != h.hexdigest()[:24]
