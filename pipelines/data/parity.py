"""Format parity guard: do the real and fake sets differ in codec, JPEG quality, chroma subsampling or native size?

A detector that can tell real from fake by how the files were stored learns the codec, not the
generator — the most common false result in this field. Before fitting, :func:`parity_warnings`
compares the sets and returns one sentence per difference, naming it and the fix
(``--align`` takes native crops on the JPEG grid and re-encodes every set at one quality, see
:mod:`pipelines.data.align`; ``--preprocess crop`` takes native pixels from both).

``--jpeg Q`` alone does not silence a codec difference: re-encoding a JPEG set leaves its first
compression in place (the lower quality's loss of detail, and its 8x8 blocks wherever the crop is
off the JPEG grid), so the warning stays, worded for that case. Chroma subsampling (4:2:0 leaves
a 2x2 trace in the colour planes, which ``npr``, ``dwt`` and ``periodicity`` read) is compared
too.

Only file headers and JPEG quantisation tables are read (no pixel decoding), from at most
``sample`` files per set, spread evenly over the sorted list. In-memory tensors (fakes generated
straight into memory) count as lossless PNG at their tensor size. The embedded sample photos
are described by the JPEG files they are cropped from.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipelines.data.images import list_images

# IJG (libjpeg) standard luminance quantisation table, ITU-T T.81 Annex K, natural (row) order.
IJG_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
LOSSLESS = ("PNG", "BMP", "TIFF", "PPM")
# Qualities further apart than this are reported.
QUALITY_TOLERANCE = 5
# Median native shorter sides further apart than this ratio are reported.
SIZE_TOLERANCE = 1.1


@lru_cache(maxsize=1)
def ijg_tables() -> np.ndarray:
    """(100, 64) luminance tables libjpeg writes for qualities 1..100 (baseline, values 1..255)."""
    q = np.arange(1, 101, dtype=np.int64)[:, None]
    scale = np.where(q < 50, 5000 // q, 200 - 2 * q)
    t = (np.asarray(IJG_LUMINANCE, dtype=np.int64)[None, :] * scale + 50) // 100
    return np.clip(t, 1, 255)


def jpeg_quality(table: Sequence[int]) -> int:
    """The IJG quality 1..100 whose luminance table is nearest (L1) to ``table`` (64 values, natural order)."""
    t = np.asarray(list(table), dtype=np.int64)
    if t.shape != (64,):
        raise ValueError(f"A JPEG quantisation table has 64 entries, got {t.size}.")
    dist = np.abs(ijg_tables() - t[None, :]).sum(axis=1)
    # Ties (e.g. the all-ones tables of q >= 98 at 8 bits) go to the highest quality.
    return int(100 - np.argmin(dist[::-1]))


# Pillow's JpegImagePlugin.get_sampling codes.
SUBSAMPLING_NAMES = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


@dataclass(frozen=True)
class FileFormat:
    """How one image is stored: codec (Pillow's format name), JPEG quality and chroma subsampling (None if not
    JPEG or unknown), width, height."""

    codec: str
    quality: int | None
    width: int
    height: int
    subsampling: str | None = None


def file_format(path: str | os.PathLike) -> FileFormat | None:
    """Read the format of one image file from its header (None when Pillow cannot open it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                codec = (img.format or "?").upper()
                quality, subsampling = None, None
                tables = getattr(img, "quantization", None)
                if codec == "JPEG" and tables:
                    quality = jpeg_quality(tables[min(tables)])
                if codec == "JPEG":
                    from PIL import JpegImagePlugin

                    subsampling = SUBSAMPLING_NAMES.get(JpegImagePlugin.get_sampling(img))
                return FileFormat(codec, quality, *img.size, subsampling=subsampling)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


@dataclass
class SetFormat:
    """Summary of a set's storage: codec counts, JPEG qualities, native (width, height) counts."""

    name: str
    codecs: Counter = field(default_factory=Counter)
    qualities: list[int] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)
    subsamplings: Counter = field(default_factory=Counter)

    @property
    def codec(self) -> str:
        """The most common codec ("PNG", "JPEG", ...)."""
        return self.codecs.most_common(1)[0][0] if self.codecs else "?"

    @property
    def quality(self) -> int | None:
        """Median estimated JPEG quality, or None when the set holds no JPEG."""
        return int(np.median(self.qualities)) if self.qualities else None

    @property
    def subsampling(self) -> str | None:
        """The most common chroma subsampling of the set's JPEG files ("4:2:0", ...), None without JPEG."""
        return self.subsamplings.most_common(1)[0][0] if self.subsamplings else None

    def add(self, fmt: FileFormat) -> None:
        """Count one file's format."""
        self.codecs[fmt.codec] += 1
        if fmt.quality is not None:
            self.qualities.append(fmt.quality)
        if fmt.subsampling is not None:
            self.subsamplings[fmt.subsampling] += 1
        self.sizes[(fmt.width, fmt.height)] += 1

    def merge(self, other: SetFormat) -> None:
        """Add another part's counts (a train and a test folder of one source)."""
        self.codecs.update(other.codecs)
        self.qualities.extend(other.qualities)
        self.sizes.update(other.sizes)
        self.subsamplings.update(other.subsamplings)

    @property
    def shorter_side(self) -> float | None:
        """Median native shorter side in pixels."""
        sides = [min(s) for s in self.sizes.elements()]
        return float(np.median(sides)) if sides else None

    def size_text(self) -> str:
        sides = [min(s) for s in self.sizes.elements()]
        lo, hi = min(sides), max(sides)
        return f"{lo} px" if lo == hi else f"{lo}-{hi} px"


def _sample(files: Sequence[str], sample: int) -> list[str]:
    if len(files) <= sample:
        return list(files)
    idx = np.linspace(0, len(files) - 1, sample).round().astype(np.int64)
    return [files[i] for i in idx]


def _embedded_file(name: str) -> str | None:
    """The sample photo an ``embedded:NAME#...`` entry was cropped from."""
    import sklearn.datasets  # lazy for start-up time: only embedded sets need it

    photo = name.split(":", 1)[1].split("#", 1)[0]
    path = Path(sklearn.datasets.__file__).parent / "images" / photo
    return str(path) if path.is_file() else None


def describe(source: Any, name: str = "", sample: int = 64) -> SetFormat:
    """Summarise how ``source`` is stored: a folder, a list of files, an ImageSet, or a uint8 tensor (PNG)."""
    out = SetFormat(name)
    if isinstance(source, torch.Tensor):
        # Generated in memory: lossless, at the tensor's size.
        out.codecs["PNG"] += int(source.shape[0])
        out.sizes[(int(source.shape[-1]), int(source.shape[-2]))] += int(source.shape[0])
        return out
    files = getattr(source, "files", None)
    if files is None:
        if isinstance(source, (str, os.PathLike)):

            files = [str(p) for p in list_images(source)]
        else:
            files = [str(p) for p in source]
    for f in _sample(list(files), sample):
        path = _embedded_file(f) if str(f).startswith("embedded:") else f
        fmt = file_format(path) if path else None
        if fmt is not None:
            out.add(fmt)
    return out


def compare(real: SetFormat, fake: SetFormat, *, jpeg: int | None = None, preprocess: str = "resize",
            resolution: int | None = None, aligned: bool = False) -> list[str]:
    """One-sentence warnings for each way ``fake`` is stored differently from ``real``.

    ``aligned`` (every set reached the detector through :mod:`pipelines.data.align`: native crops on the
    JPEG grid, one quality, one subsampling) silences codec, quality and subsampling differences,
    and native sizes no longer matter. ``jpeg`` (both sets re-encoded at that quality) does not
    silence them, since a JPEG set's first compression survives re-encoding: the warning says so.
    ``preprocess="crop"`` (or ``"align"``) silences size differences.
    """
    if aligned:
        return []
    out = []
    fix = "pass --align to crop both on the JPEG grid and re-encode them at one quality"
    if real.codecs and fake.codecs:
        lowest = min(real.qualities + fake.qualities, default=None)
        if jpeg is not None and "JPEG" in (real.codec, fake.codec) and (
            real.codec != fake.codec or _quality_differs(real, fake) or _subsampling_differs(real, fake)
        ):
            out.append(
                f"Real images are {_codec_text(real)} and fake set {fake.name!r} is {_codec_text(fake)}: --jpeg {jpeg} "
                f"re-encodes both, but the first compression survives re-encoding, so a detector can still learn the "
                f"codec; {fix}" + (f" no higher than {lowest}." if lowest is not None else ".")
            )
        elif real.codec != fake.codec:
            q = f" (quality about {real.quality})" if real.quality else ""
            out.append(
                f"Real images are {real.codec}{q} but fake set {fake.name!r} is {fake.codec}: a detector can learn "
                f"the codec instead of the generator; {fix} (or pass --jpeg Q to re-encode both sets alike)."
            )
        elif _quality_differs(real, fake):
            out.append(
                f"Real images are JPEG quality about {real.quality} but fake set {fake.name!r} about {fake.quality}: "
                f"a detector can learn the compression; {fix} (or pass --jpeg Q to re-encode both sets alike)."
            )
        elif _subsampling_differs(real, fake):
            out.append(
                f"Real images are JPEG with {real.subsampling} chroma subsampling but fake set {fake.name!r} with "
                f"{fake.subsampling}: subsampling leaves a 2x2 trace in one set's colour (what npr, dwt and "
                f"periodicity read); {fix}."
            )
    rs, fs = real.shorter_side, fake.shorter_side
    if preprocess == "resize" and rs and fs and max(rs, fs) / min(rs, fs) > SIZE_TOLERANCE:
        to = f" to {resolution} px" if resolution else ""
        out.append(
            f"Real images are natively {real.size_text()} but fake set {fake.name!r} is {fake.size_text()}, so "
            f"resizing{to} smooths one set more than the other; pass --preprocess crop to take native pixels from both."
        )
    return out


def _quality_differs(a: SetFormat, b: SetFormat) -> bool:
    return a.quality is not None and b.quality is not None and abs(a.quality - b.quality) > QUALITY_TOLERANCE


def _subsampling_differs(a: SetFormat, b: SetFormat) -> bool:
    return a.subsampling is not None and b.subsampling is not None and a.subsampling != b.subsampling


def _codec_text(s: SetFormat) -> str:
    """``JPEG (quality about 75, 4:2:0)`` or ``PNG``."""
    details = [f"quality about {s.quality}"] if s.quality is not None else []
    details += [s.subsampling] if s.subsampling else []
    return f"{s.codec} ({', '.join(details)})" if details else s.codec


def summarise(src: Any, name: str, sample: int = 64) -> SetFormat:
    """:func:`describe` of one set, or of a (train, test) tuple of sets taken together."""
    s = SetFormat(name)
    for p in list(src) if isinstance(src, tuple) else [src]:
        s.merge(describe(p, name, sample))
    return s


def parity_warnings(real: Any, fakes: dict[str, Any] | Sequence[Any], *, jpeg: int | None = None,
                    preprocess: str = "resize", resolution: int | None = None, sample: int = 64,
                    aligned: bool = False) -> list[str]:
    """Compare the real set with each fake set (name -> folder, file list, ImageSet or tensor); return warnings.

    Each source may also be a tuple (train, test) of such sets; both parts are described together.
    """
    if not isinstance(fakes, dict):
        fakes = {f"fake_{i + 1}": f for i, f in enumerate(fakes)}

    r = summarise(real, "real", sample)
    out = []
    for name, src in fakes.items():
        out.extend(compare(r, summarise(src, name, sample), jpeg=jpeg, preprocess=preprocess, resolution=resolution,
                           aligned=aligned))
    return out
