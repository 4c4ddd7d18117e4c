"""Image sets: folders of any image format become uint8 RGB tensors through one preprocessing path.

Format parity is the point of this module: real photographs and generated fakes reach a
detector through exactly the same steps, so no detector can tell them apart by codec, size
or value range.

Preprocessing (:func:`preprocess_pil`), for every image from every source:

1. EXIF orientation is applied (photos taken in portrait are shown upright).
2. Conversion to RGB: palette, grayscale, 1-bit and CMYK images are converted by Pillow;
   16-bit grayscale (``I;16*`` and ``I``) is scaled to 8 bits (value / 257), not clipped;
   images with transparency (RGBA, LA, P/L/RGB with a transparent colour) are composited
   on white, the way a browser shows them, so hidden colour under transparent pixels never
   leaks into the data.
3. ``preprocess="resize"`` (default): the centred square whose side is the shorter side is
   resized to ``R x R`` with Pillow's bicubic filter, which widens its support when shrinking
   (that is its antialiasing). An image that already is ``R x R`` passes through bit for bit,
   so lossless fakes at the working resolution are not touched.
   ``preprocess="crop"``: the centred ``R x R`` square at the image's own resolution, no
   resampling, at an *even* offset so the source's 2x2 grid (where upsamplers leave their
   traces) is kept; antialiased resizing erases exactly those traces. Step 1 is skipped in
   this mode (a 90-degree EXIF rotation would move the grid by one pixel). An image smaller
   than ``R`` on either side is skipped with a reason that names its size and the two fixes.
   ``preprocess="align"``: as "crop", at the centred offset rounded down to a multiple of
   :data:`ALIGN_GRID` (16), so a JPEG source's 8x8 blocks and 4:2:0 chroma blocks stay on the
   grid a later re-encoding uses (see :mod:`pipelines.data.align`).
4. uint8 ``(3, R, R)``.

Folders are read recursively (``.jpg .jpeg .png .webp .bmp`` in any letter case; hidden files
and folders are ignored), in sorted order, decoded in a thread pool (Pillow releases the GIL
while decoding and resizing). Unreadable files are skipped and listed with a reason, or stop
the load with ``strict=True``. Decoded sets are cached as ``.npy`` arrays keyed by a
fingerprint of the file list (names, sizes, modification times), the resolution, the limit and
the preprocessing mode.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from detectors import augment
from pipelines.runfolder import atomic_path
from plumbing.progress import progress_bar

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
RESAMPLE = Image.Resampling.BICUBIC
# Bump when preprocessing changes, so stale caches are never read back.
PREPROCESS_VERSION = 1
EMBEDDED = "embedded"
DEFAULT_EMBEDDED_COUNT = 512
# How images become R x R: "resize" (antialiased, the default), "crop" (native pixels) or "align"
# (native pixels on the JPEG grid; the first step of pipelines.data.align).
PREPROCESS_MODES = ("resize", "crop", "align")
# Crop offsets of "align" are multiples of this: the 16x16 MCU of 4:2:0 JPEG, so both the 8x8 luma
# blocks and the subsampled chroma blocks of a JPEG source stay where its encoder put them.
ALIGN_GRID = 16
# The embedded photos are split at this fraction of their width: crops of region "train" lie
# left of it, crops of region "test" right of it, so the two pools share no pixel.
EMBEDDED_REGIONS = ("train", "test")
EMBEDDED_SPLIT = 0.5

# fast.ai's ImageWoof: ten dog breeds from ImageNet, by WordNet id.
IMAGEWOOF_CLASSES: dict[str, str] = {
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "Beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "Golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "Dingo",
}
IMAGEWOOF_SPLITS = ("train", "val")

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass
class ImageSet:
    """A set of images as one uint8 tensor (N, 3, R, R), with where each came from."""

    images: torch.Tensor
    files: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""
    fingerprint: str = ""
    from_cache: bool = False
    preprocess: str = "resize"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def resolution(self) -> int:
        """Side length R of the square images."""
        return int(self.images.shape[-1])

    def subset(self, indices: Sequence[int] | np.ndarray, source: str | None = None) -> ImageSet:
        """The images at ``indices`` (in that order) as a new set; skipped files are not carried."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageSet(
            images=self.images[idx],
            files=[self.files[i] for i in idx.tolist()],
            source=self.source if source is None else source,
            fingerprint=self.fingerprint,
            preprocess=self.preprocess,
        )


class UnreadableImage(ValueError):
    """An image file that cannot be decoded; the message is the reason."""


class TooSmallImage(UnreadableImage):
    """An image smaller than the crop in ``preprocess="crop"`` mode; the message names its size and the fixes."""


def check_preprocess(mode: str) -> str:
    """Return ``mode`` if it is a preprocessing mode ("resize" or "crop"), else raise a ValueError."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"Unknown preprocess mode {mode!r}; choose one of: {', '.join(PREPROCESS_MODES)}.")
    return mode


def too_small_reason(width: int, height: int, resolution: int) -> str:
    """The sentence that says an image is too small to crop and how to fix it."""
    return (f"{width}x{height} is smaller than the {resolution}x{resolution} crop; "
            "pass a smaller --resolution or --preprocess resize")


def even_centre_offset(size: int, resolution: int) -> int:
    """Offset of a centred ``resolution`` window in ``size`` pixels, rounded down to an even number."""
    return ((size - resolution) // 2) & ~1


def grid_centre_offset(size: int, resolution: int, grid: int = ALIGN_GRID) -> int:
    """Offset of a centred ``resolution`` window in ``size`` pixels, rounded down to a multiple of ``grid``."""
    return ((size - resolution) // 2) // grid * grid


# ---------------------------------------------------------------------------------------------
# One preprocessing path


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a Pillow image of any mode to RGB (16-bit scaled, transparency composited on white)."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        a = np.asarray(img).astype(np.float64)
        a = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    if mode == "RGB":
        return img
    return img.convert("RGB")


def preprocess_pil(img: Image.Image, resolution: int, preprocess: str = "resize") -> torch.Tensor:
    """Turn one Pillow image into uint8 (3, R, R): RGB, then resize (antialiased) or crop (native pixels, even offset)."""
    resolution = check_resolution(resolution)
    check_preprocess(preprocess)
    rgb = to_rgb(img)
    w, h = rgb.size
    if w < 1 or h < 1:
        raise UnreadableImage(f"image has no pixels ({w}x{h})")
    if preprocess in ("crop", "align"):
        if w < resolution or h < resolution:
            raise TooSmallImage(too_small_reason(w, h, resolution))
        offset = even_centre_offset if preprocess == "crop" else grid_centre_offset
        x0, y0 = offset(w, resolution), offset(h, resolution)
        arr = np.asarray(rgb, dtype=np.uint8)[y0 : y0 + resolution, x0 : x0 + resolution]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    s = min(w, h)
    # The centred square of side s, in source pixel coordinates, resized straight to R x R:
    # the same as "shorter side to R, then centre crop" without rounding the intermediate size.
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    if (w, h) != (resolution, resolution):
        rgb = rgb.resize((resolution, resolution), RESAMPLE, box=box)
    arr = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def check_resolution(resolution: int) -> int:
    """Return ``resolution`` if it is a positive int, else raise a ValueError."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer number of pixels, got {resolution!r}.")
    return int(resolution)


def _pixel_limit() -> int | None:
    # Pillow's own decompression-bomb threshold; a user who raised it knowingly is respected.
    return Image.MAX_IMAGE_PIXELS


def _decode_file(path: str, resolution: int, preprocess: str = "resize") -> np.ndarray:
    """Decode and preprocess one file into uint8 (3, R, R); raise UnreadableImage with a reason."""
    try:
        if os.path.getsize(path) == 0:
            raise UnreadableImage("empty file (0 bytes)")
        with Image.open(path) as img:
            w, h = img.size
            limit = _pixel_limit()
            if limit is not None and w * h > limit:
                raise UnreadableImage(
                    f"decompression bomb: {w}x{h} = {w * h} pixels exceeds the limit of {limit}"
                )
            img.load()
            if preprocess == "resize":  # crop keeps the stored pixel grid (see the module docstring)
                img = ImageOps.exif_transpose(img)
            return preprocess_pil(img, resolution, preprocess).numpy()
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as e:
        raise UnreadableImage(f"decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage("not an image Pillow can read (unknown or damaged format)") from None
    except MemoryError:
        raise
    except Exception as e:  # any decoder failure means "unreadable"; the reason says which
        raise UnreadableImage(f"{type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Folders


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, by extension, hidden entries ignored), sorted."""
    folder = Path(folder)
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            p = Path(dirpath) / name
            found.append((p.relative_to(folder).as_posix(), p))
    found.sort(key=lambda t: t[0])
    return [p for _, p in found]


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise FileNotFoundError(
            f"Image folder {folder} does not exist; check the path (or use 'embedded' for the bundled sample photos)."
        )
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder of images; pass the folder that holds the images.")


def _no_images_error(folder: Path) -> ValueError:
    return ValueError(
        f"{folder} holds no images; put files ending in {', '.join(IMAGE_EXTENSIONS)} in it "
        "(subfolders are searched too)."
    )


def cache_root() -> Path:
    """Where decoded sets are cached: $FORGELAB_CACHE, else ~/.cache/forgelab."""
    env = os.environ.get("FORGELAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "forgelab"


def fingerprint(folder: Path, files: Sequence[Path], resolution: int, limit: int | None,
                preprocess: str = "resize") -> str:
    """Hash of the folder, its file names, sizes and mtimes, the resolution, the limit, the mode and the preprocessing version."""
    h = hashlib.sha256()
    # The default mode adds nothing, so caches written before the mode existed are still found.
    mode = "" if preprocess == "resize" else f"\0{preprocess}"
    h.update(f"forgelab-images v{PREPROCESS_VERSION}\0{folder.resolve()}\0{resolution}\0{limit}{mode}\n".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    base = cache_dir / "images"
    return base / f"{key}.npy", base / f"{key}.json"


def _read_cache(cache_dir: Path, key: str, folder: Path, resolution: int, preprocess: str = "resize") -> ImageSet | None:
    npy, meta_path = _cache_paths(cache_dir, key)
    if not (npy.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        arr = np.load(npy, allow_pickle=False)
        files = [str(folder / f) for f in meta["files"]]
        skipped = [(str(folder / f), str(r)) for f, r in meta["skipped"]]
    except (OSError, ValueError, KeyError, TypeError):  # a damaged cache entry is a miss, not an error
        return None
    if arr.dtype != np.uint8 or arr.shape[1:] != (3, resolution, resolution) or arr.shape[0] != len(files):
        return None
    return ImageSet(images=torch.from_numpy(arr), files=files, skipped=skipped, source=str(folder),
                    fingerprint=key, from_cache=True, preprocess=preprocess)


def _write_cache(cache_dir: Path, key: str, folder: Path, s: ImageSet) -> None:
    npy, meta_path = _cache_paths(cache_dir, key)
    try:
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, s.images.numpy(), allow_pickle=False)
        meta = {
            "folder": str(folder.resolve()),
            "resolution": s.resolution,
            "preprocess": s.preprocess,
            "files": [Path(f).relative_to(folder).as_posix() for f in s.files],
            "skipped": [[Path(f).relative_to(folder).as_posix(), r] for f, r in s.skipped],
        }
        # The JSON is written last: its presence marks a complete entry.
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps(meta), encoding="utf-8")
    except OSError as e:  # a read-only or full cache disk must not stop the run
        warnings.warn(f"Could not write the image cache in {cache_dir} ({e}); continuing without it.", stacklevel=3)


def default_workers() -> int:
    """Threads for decoding: a few per core, since Pillow releases the GIL while it decodes."""
    return max(2, min(16, 2 * (os.cpu_count() or 1)))


def _decode_many(paths: Sequence[Path], resolution: int, workers: int, bar,
                 preprocess: str = "resize") -> Iterable[tuple[np.ndarray | None, str]]:
    """Decode ``paths`` in a thread pool, yielding (array or None, reason) in input order."""

    def one(p: Path) -> tuple[np.ndarray | None, str]:
        try:
            return _decode_file(str(p), resolution, preprocess), ""
        except UnreadableImage as e:
            return None, str(e)

    with warnings.catch_warnings():
        # Pillow warns about large images before we skip them with a reason of our own.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(one, paths):
                bar.advance(1)
                yield result


def load_images(path: str | os.PathLike, resolution: int, *, limit: int | None = None, strict: bool = False,
                cache: bool | str | os.PathLike = True, progress: bool = False,
                workers: int | None = None, preprocess: str = "resize") -> ImageSet:
    """Load every image under a folder as uint8 (N, 3, R, R) through the one preprocessing path.

    ``limit`` keeps N images chosen by a fixed-seed shuffle of the sorted file list (so a limited
    ImageWoof set spans all breeds), topped up past unreadable files, and returned in sorted
    order. ``cache`` is True (default folder), False, or a folder to cache in. ``preprocess`` is
    ``"resize"`` or ``"crop"`` (see the module docstring); in crop mode images smaller than R are
    skipped like unreadable ones (or stop the load with ``strict=True``).
    """
    resolution = check_resolution(resolution)
    check_preprocess(preprocess)
    folder = Path(path).expanduser()
    _check_folder(folder)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive number of images, got {limit!r}.")
    files = list_images(folder)
    if not files:
        raise _no_images_error(folder)
    limit = None if limit is None or limit >= len(files) else int(limit)
    key = fingerprint(folder, files, resolution, limit, preprocess)
    cache_dir = None if cache is False else (cache_root() if cache is True else Path(cache).expanduser())

    result = _read_cache(cache_dir, key, folder, resolution, preprocess) if cache_dir is not None else None
    if result is None:
        result = _decode_folder(folder, files, resolution, limit, strict, progress, workers or default_workers(),
                                preprocess)
        result.fingerprint = key
        if cache_dir is not None:
            _write_cache(cache_dir, key, folder, result)
    if strict and result.skipped:
        bad, reason = result.skipped[0]
        raise _strict_error(bad, reason)
    if len(result) == 0:
        bad, reason = result.skipped[0]
        raise ValueError(
            f"None of the {len(result.skipped)} image files in {folder} could be read "
            f"(first: {bad}: {reason}); check the files."
        )
    return result


def _strict_error(path: str, reason: str) -> ValueError:
    if " crop; pass a smaller --resolution" in reason:  # a TooSmallImage reason
        return ValueError(f"{path} is too small: {reason} (or drop --strict to skip such images).")
    return ValueError(f"Cannot read {path} ({reason}); remove or fix it, or drop --strict to skip unreadable files.")


def _decode_folder(folder: Path, files: list[Path], resolution: int, limit: int | None, strict: bool,
                   progress: bool, workers: int, preprocess: str = "resize") -> ImageSet:
    """Decode ``files`` (all, or ``limit`` of them in fixed-seed order) into an ImageSet."""
    n_want = len(files) if limit is None else limit
    # Shuffle with a fixed seed only when a subset is asked for; files are tried in that order
    # until enough decode, then put back in sorted order.
    order = np.arange(len(files)) if limit is None else np.random.default_rng(0).permutation(len(files))
    out = np.empty((n_want, 3, resolution, resolution), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[tuple[int, str]] = []
    pos = 0
    with progress_bar(progress, f"Decoding {folder.name}", n_want) as bar:
        while len(kept) < n_want and pos < len(order):
            need = n_want - len(kept)
            chunk = order[pos : pos + need]
            pos += len(chunk)
            for i, (arr, reason) in zip(chunk.tolist(), _decode_many([files[i] for i in chunk], resolution, workers, bar, preprocess),
                                        strict=True):
                if arr is None:
                    if strict:
                        raise _strict_error(str(files[i]), reason)
                    skipped.append((i, reason))
                    continue
                out[len(kept)] = arr
                kept.append(i)
    by_name = np.argsort(np.asarray(kept, dtype=np.int64), kind="stable")
    images = torch.from_numpy(out[: len(kept)][by_name] if limit is not None else out[: len(kept)])
    kept_sorted = sorted(kept)
    return ImageSet(
        images=images,
        files=[str(files[i]) for i in kept_sorted],
        skipped=[(str(files[i]), r) for i, r in sorted(skipped)],
        source=str(folder),
        preprocess=preprocess,
    )


def scan_images(path: str | os.PathLike, *, progress: bool = False, workers: int | None = None) -> dict[str, Any]:
    """Decode every image under a folder (no resizing) and summarise counts, modes, formats, sizes and failures."""
    folder = Path(path).expanduser()
    _check_folder(folder)
    files = list_images(folder)
    if not files:
        raise _no_images_error(folder)

    def one(p: Path) -> tuple[str, str, tuple[int, int], str]:
        try:
            if p.stat().st_size == 0:
                return "", "", (0, 0), "empty file (0 bytes)"
            with Image.open(p) as img:
                w, h = img.size
                limit = _pixel_limit()
                if limit is not None and w * h > limit:
                    return img.mode, img.format or "", (w, h), f"decompression bomb: {w}x{h} pixels exceeds {limit}"
                img.load()
                return img.mode, img.format or "", (w, h), ""
        except MemoryError:
            raise
        except Image.UnidentifiedImageError:
            return "", "", (0, 0), "not an image Pillow can read (unknown or damaged format)"
        except Exception as e:  # any decoder failure means "unreadable"
            return "", "", (0, 0), f"{type(e).__name__}: {e}"

    modes: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    sizes: Counter[tuple[int, int]] = Counter()
    skipped: list[tuple[str, str]] = []
    with warnings.catch_warnings(), progress_bar(progress, f"Scanning {folder.name}", len(files)) as bar:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
            for p, (mode, fmt, size, reason) in zip(files, pool.map(one, files), strict=True):
                bar.advance(1)
                if reason:
                    skipped.append((str(p), reason))
                    continue
                modes[mode] += 1
                formats[fmt] += 1
                sizes[size] += 1
    shorter = [min(s) for s in sizes.elements()]
    return {
        "folder": str(folder),
        "files": len(files),
        "readable": len(files) - len(skipped),
        "modes": dict(modes.most_common()),
        "formats": dict(formats.most_common()),
        "sizes": {f"{w}x{h}": c for (w, h), c in sizes.most_common()},
        "min_shorter_side": min(shorter) if shorter else None,
        "max_shorter_side": max(shorter) if shorter else None,
        "skipped": skipped,
    }


# ---------------------------------------------------------------------------------------------
# Embedded photos, data specs, ImageWoof


@lru_cache(maxsize=1)
def _sample_photos() -> tuple[tuple[str, Image.Image], ...]:
    """The photographs bundled with scikit-learn (china.jpg, flower.jpg), decoded once."""
    import sklearn.datasets  # lazy for start-up time: only the embedded data need it

    folder = Path(sklearn.datasets.__file__).parent / "images"
    paths = sorted(folder.glob("*.jpg"))
    if not paths:
        raise FileNotFoundError(
            f"scikit-learn's sample photos are missing from {folder}; reinstall scikit-learn or pass --data DIR."
        )
    photos = []
    for p in paths:
        with Image.open(p) as img:
            img.load()
            photos.append((p.name, to_rgb(ImageOps.exif_transpose(img)).copy()))
    return tuple(photos)


def embedded_region(width: int, region: str | None) -> tuple[int, int]:
    """Columns ``[x0, x1)`` of an embedded photo that crops of ``region`` (None: the whole photo) may use."""
    if region is None:
        return 0, width
    if region not in EMBEDDED_REGIONS:
        raise ValueError(f"Unknown embedded region {region!r}; choose one of: {', '.join(EMBEDDED_REGIONS)} (or None).")
    split = int(width * EMBEDDED_SPLIT) & ~1  # even, so crop mode's even offsets stay even in both regions
    return (0, split) if region == "train" else (split, width)


def embedded_images(resolution: int, n: int = DEFAULT_EMBEDDED_COUNT, seed: int = 0, *,
                    region: str | None = None, preprocess: str = "resize") -> ImageSet:
    """``n`` real-photo crops of scikit-learn's sample photographs, preprocessed like any folder image.

    ``region`` picks the pool: ``"train"`` crops lie in the left part of each photo and ``"test"``
    crops in the right part (split at :data:`EMBEDDED_SPLIT` of the width), so the two pools
    share no pixel and a pixel CNN cannot pass a test by having memorised training crops;
    ``None`` (default) draws from the whole photo, as before.

    With ``preprocess="resize"`` crops have random sizes (from about 1.5x the resolution up to
    8x, capped by the region), aspect ratios between 3:4 and 4:3, positions and horizontal flips,
    all drawn from ``seed``, and are resized to R. With ``preprocess="crop"`` each is an R x R
    window of native pixels at a random *even* position, never flipped (a flip of an even-sized
    window moves the 2x2 grid by one pixel).
    """
    resolution = check_resolution(resolution)
    check_preprocess(preprocess)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of images, got {n!r}.")
    photos = _sample_photos()
    rng = np.random.default_rng(seed)
    out = torch.empty((n, 3, resolution, resolution), dtype=torch.uint8)
    files = []
    for i in range(n):
        name, photo = photos[int(rng.integers(len(photos)))]
        x_lo, x_hi = embedded_region(photo.size[0], region)
        w, h = x_hi - x_lo, photo.size[1]
        if preprocess in ("crop", "align"):
            if w < resolution or h < resolution:
                where = f"the {region} region of {name}" if region else name
                raise ValueError(f"{where} is {w}x{h} pixels, smaller than the {resolution}x{resolution} crop; "
                                 "pass a smaller --resolution or --preprocess resize.")
            step = 2 if preprocess == "crop" else ALIGN_GRID
            x = x_lo + step * int(rng.integers(0, (w - resolution) // step + 1))
            y = step * int(rng.integers(0, (h - resolution) // step + 1))
            arr = np.asarray(photo, dtype=np.uint8)[y : y + resolution, x : x + resolution]
            out[i] = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
            files.append(f"{EMBEDDED}:{name}#x={x},y={y},w={resolution},h={resolution}")
            continue
        short = min(w, h)
        lo = min(max(int(1.5 * resolution), 48), short)
        hi = max(lo, min(short, 8 * resolution))
        side = int(rng.integers(lo, hi + 1))
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = min(w, max(1, round(side * math.sqrt(aspect))))
        ch = min(h, max(1, round(side / math.sqrt(aspect))))
        x = x_lo + int(rng.integers(0, w - cw + 1))
        y = int(rng.integers(0, h - ch + 1))
        flip = bool(rng.random() < 0.5)
        crop = photo.crop((x, y, x + cw, y + ch))
        if flip:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = preprocess_pil(crop, resolution)
        files.append(f"{EMBEDDED}:{name}#x={x},y={y},w={cw},h={ch}{',flip' if flip else ''}")
    key = f"{EMBEDDED}-{resolution}-{n}-{seed}"
    # The default pool and mode keep their old fingerprint, so existing run folders still match.
    key += f"-{region}" if region else ""
    key += f"-{preprocess}" if preprocess != "resize" else ""
    return ImageSet(images=out, files=files, source=EMBEDDED, fingerprint=key, preprocess=preprocess)


def resolve_data(spec: str | os.PathLike | None) -> str | Path:
    """Turn a data spec into ``"embedded"`` or an existing folder; None means $FORGELAB_DATA."""
    if spec is None or str(spec).strip() == "":
        env = os.environ.get("FORGELAB_DATA", "").strip()
        if not env:
            raise ValueError(
                "No image data given; pass --data DIR (or --data embedded for the bundled sample photos) "
                "or set the environment variable FORGELAB_DATA."
            )
        spec = env
    if str(spec).strip().lower() == EMBEDDED:
        return EMBEDDED
    folder = Path(spec).expanduser()
    _check_folder(folder)
    return folder


def load_data(spec: str | os.PathLike | None, resolution: int, *, limit: int | None = None, seed: int = 0,
              preprocess: str = "resize", region: str | None = None, **kwargs: Any) -> ImageSet:
    """Load a data spec (``"embedded"``, a folder, or None for $FORGELAB_DATA) at ``resolution``.

    ``limit`` is the number of embedded crops (default 512) or the folder subset size; ``seed``
    draws the embedded crops and ``region`` picks their pool (see :func:`embedded_images`; it
    is ignored for folders); ``preprocess`` is "resize" or "crop"; other keywords go to
    :func:`load_images`.
    """
    check_preprocess(preprocess)
    where = resolve_data(spec)
    if where == EMBEDDED:
        return embedded_images(resolution, n=limit or DEFAULT_EMBEDDED_COUNT, seed=seed, region=region,
                               preprocess=preprocess)
    return load_images(where, resolution, limit=limit, preprocess=preprocess, **kwargs)


def imagewoof_split(root: str | os.PathLike, split: str = "train") -> Path:
    """The folder of one ImageWoof split (``train`` or ``val``) in fast.ai's layout under ``root``."""
    if split not in IMAGEWOOF_SPLITS:
        raise ValueError(f"Unknown ImageWoof split {split!r}; choose one of: {', '.join(IMAGEWOOF_SPLITS)}.")
    root = Path(root).expanduser()
    _check_folder(root)
    folder = root / split
    if folder.is_dir() and any((folder / wnid).is_dir() for wnid in IMAGEWOOF_CLASSES):
        return folder
    # A common slip: passing the folder that holds imagewoof2-160/ instead of the dataset itself.
    inner = sorted(p for p in root.glob("imagewoof2*") if (p / split).is_dir())
    hint = f" (did you mean {inner[0]}?)" if inner else ""
    raise FileNotFoundError(
        f"{root} does not look like ImageWoof in fast.ai's layout (expected {folder}/<wnid>/*.JPEG){hint}; "
        "run 'forgelab data prepare imagewoof --root DIR' or pass the folder that holds train/ and val/."
    )


# ---------------------------------------------------------------------------------------------
# Splits and perturbations


def split_indices(n: int, fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Split range(n) into disjoint, sorted index arrays covering all n, sized by ``fractions`` (sum 1)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative number of items, got {n!r}.")
    fr = np.asarray(list(fractions), dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0 or np.any(fr < 0) or not math.isclose(float(fr.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be non-negative and sum to 1 (for example 0.6,0.2,0.2), got {list(fractions)}.")
    perm = np.random.default_rng(seed).permutation(int(n))
    # Rounded cumulative bounds, so sizes differ from n*f by less than one and add up to n.
    bounds = np.round(np.cumsum(fr) * n).astype(np.int64)
    bounds[-1] = n
    starts = np.concatenate([[0], bounds[:-1]])
    return [np.sort(perm[a:b]) for a, b in zip(starts, bounds, strict=True)]


def perturb(images: torch.Tensor, jpeg: int | None = None, blur: float | None = None,
            resize: float | None = None, seed: int = 0) -> torch.Tensor:
    """Apply the same perturbation to a uint8 (N, 3, R, R) batch: blur, then down-up resize, then JPEG.

    ``jpeg`` is a quality 1..100, ``blur`` a Gaussian sigma in pixels, ``resize`` a factor in
    (0, 1): images are shrunk by it and brought back to R (both with antialias). All three are
    deterministic; ``seed`` is accepted for callers that pass one and is reserved for random
    perturbations. Real and fake sets must be perturbed alike (format parity).
    """
    del seed  # every perturbation here is deterministic
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError("perturb expects a uint8 tensor of shape (N, 3, H, W).")
    if jpeg is not None and not (1 <= int(jpeg) <= 100):
        raise ValueError(f"JPEG quality must be between 1 and 100, got {jpeg}.")
    if blur is not None and not blur > 0:
        raise ValueError(f"Blur sigma must be positive, got {blur}.")
    if resize is not None and not 0 < resize < 1:
        raise ValueError(f"Resize factor must be between 0 and 1 (exclusive), got {resize}.")
    x = images
    if x.shape[0] == 0:
        return x.clone()
    # One implementation of each perturbation (detectors.augment) serves training augmentation and test-time checks.

    if blur is not None:
        x = augment.blur(x, float(blur))
    if resize is not None:
        h, w = x.shape[-2:]
        small = (max(1, round(h * resize)), max(1, round(w * resize)))
        xf = torch.nn.functional.interpolate(x.float(), size=small, mode="bilinear", antialias=True, align_corners=False)
        xf = torch.nn.functional.interpolate(xf, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        x = xf.round().clamp(0, 255).to(torch.uint8)
    if jpeg is not None:
        x = augment.jpeg(x, int(jpeg))
    return x
