"""Formats aligned as an action: every image of every set reaches the detector through one final codec.

The most common false result of fake-image detection is a detector that learns how the files were
stored -- real photos as JPEG at quality ~75, fakes as PNG or JPEG ~97 -- instead of the generator.
A warning (:mod:`pipelines.data.parity`) is not enough: the number in the table is still the codec's.
``--align`` removes the difference before any detector sees an image:

1. **Native crops, never resizing.** Every image is the centred ``R x R`` window of its own pixels
   (:data:`pipelines.data.images.ALIGN_GRID`, ``preprocess="align"``), at an offset that is a multiple of
   16 -- on the 8x8 block grid and the 16x16 4:2:0 chroma grid of a JPEG source -- so that a
   re-encoding quantises exactly the blocks the first encoding did. Resizing would smooth sets of
   different native sizes differently and move the block grid.
2. **One codec.** If any set holds JPEG files, every set (real and fake, train, validation and
   test) is re-encoded at one quality: the lowest quality found in any set (or lower, when asked),
   with one chroma subsampling (4:2:0, libjpeg's default, through ``detectors.augment.jpeg``).
   A set first stored at quality 75 and re-encoded at 75 on its own grid changes little; a set
   stored at 97 or as PNG and encoded at 75 gains the same quantisation. Neither compression can
   then be told apart by quality, blocks or chroma. When no set is JPEG, nothing is re-encoded:
   lossless native crops are already one format.

What was done is a :class:`AlignPlan`, recorded in manifests, printed under tables and shown in
reports (``plan.text()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from detectors import augment
from pipelines.data.images import ALIGN_GRID
from pipelines.data.parity import SetFormat, summarise

# libjpeg's default subsampling, which detectors.augment.jpeg (torchvision's encoder) writes.
ALIGN_SUBSAMPLING = "4:2:0"


@dataclass(frozen=True)
class AlignPlan:
    """What ``--align`` does to every set: the crop grid and the one re-encoding (``quality`` None: none)."""

    quality: int | None
    subsampling: str | None
    grid: int = ALIGN_GRID
    found: dict[str, dict[str, Any]] = field(default_factory=dict)  # per set: codec, qualities, subsampling, sizes

    def text(self) -> str:
        """One sentence for tables, logs and reports."""
        crop = f"native crops on the {self.grid}-pixel JPEG grid (no resizing)"
        if self.quality is None:
            return f"Aligned: {crop}; no set is JPEG, so nothing was re-encoded."
        jpeg_sets = [n for n, f in self.found.items() if f.get("codec") == "JPEG"]
        lowest = min((f["lowest_quality"] for f in self.found.values() if f.get("lowest_quality") is not None),
                     default=None)
        why = f" (lowest found: {lowest}, in {', '.join(jpeg_sets[:4])}{', ...' if len(jpeg_sets) > 4 else ''})"
        return (f"Aligned: {crop}; every set re-encoded as JPEG quality {self.quality}, "
                f"{self.subsampling} chroma{why if lowest is not None else ''}.")

    def as_dict(self) -> dict[str, Any]:
        """The plan as plain JSON (for manifests and result files)."""
        return {**asdict(self), "text": self.text()}


def _found(fmt: SetFormat) -> dict[str, Any]:
    return {
        "codec": fmt.codec,
        "codecs": dict(fmt.codecs),
        "lowest_quality": min(fmt.qualities) if fmt.qualities else None,
        "median_quality": fmt.quality,
        "subsampling": fmt.subsampling,
        "sizes": fmt.size_text() if fmt.sizes else None,
    }


def plan_alignment(formats: Mapping[str, SetFormat], max_quality: int | None = None) -> AlignPlan:
    """The alignment for sets described by :func:`pipelines.data.parity.describe`: re-encode at the lowest JPEG quality
    found (capped by ``max_quality``), or not at all when no set is JPEG and no ``max_quality`` is given."""
    if max_quality is not None and not (isinstance(max_quality, int) and 1 <= max_quality <= 100):
        raise ValueError(f"JPEG quality must be an integer between 1 and 100, got {max_quality!r}.")
    found = {name: _found(f) for name, f in formats.items()}
    qualities = [q for f in formats.values() for q in f.qualities]
    any_jpeg = any(f.codecs.get("JPEG") for f in formats.values())
    if not any_jpeg:  # lossless native crops are one format already, unless a quality is asked for
        return AlignPlan(max_quality, ALIGN_SUBSAMPLING if max_quality else None, found=found)
    # A JPEG whose tables could not be read counts as the highest quality; max_quality still caps it.
    quality = min(qualities) if qualities else 100
    if max_quality is not None:
        quality = min(quality, max_quality)
    return AlignPlan(int(quality), ALIGN_SUBSAMPLING, found=found)


def plan_for_sets(sets: Mapping[str, Any], max_quality: int | None = None, sample: int = 64) -> AlignPlan:
    """:func:`plan_alignment` for named sets (folders, ImageSets, tensors or (train, test) tuples of them)."""
    return plan_alignment({name: summarise(s, name, sample) for name, s in sets.items()}, max_quality)


def apply_alignment(images: torch.Tensor, plan: AlignPlan | None) -> torch.Tensor:
    """The images as the detector sees them under ``plan``: re-encoded at its quality (unchanged without one)."""
    if plan is None or plan.quality is None or images.shape[0] == 0:
        return images
    return augment.jpeg(images, plan.quality)


def align_sets(sets: Mapping[str, Any], plan: AlignPlan | None) -> dict[str, Any]:
    """Named ImageSets (or (train, test) tuples of them) with their images re-encoded by ``plan``."""
    from dataclasses import replace

    def one(s: Any) -> Any:
        if isinstance(s, tuple):
            return tuple(one(p) for p in s)
        return replace(s, images=apply_alignment(s.images, plan))

    return {name: one(s) for name, s in sets.items()}
