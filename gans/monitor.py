"""Watching a training run: TensorBoard event files, the spectrum of the samples, plain progress lines.

Every training run writes TensorBoard event files into its run folder (``tensorboard --logdir
RUN``, or ``--logdir STUDY/generators`` for every generator of a study side by side):

* scalars at every log record: the losses (``loss/*``), the mean of D's raw outputs on the real
  and on the fake batch (``D/real``, ``D/fake``), the learning rates (``lr/G``, ``lr/D``),
  images per second (``speed/images_per_s``) and, at sample steps, ``spectrum/radial_l1``;
* at every sample grid (``sample_every``, and at the end): the grid (``samples``) and a plot of
  the samples' mean radial spectrum against the real images' (``spectrum/radial``).

``spectrum/radial_l1`` is the study's ``radial_l1`` (detectors.fidelity: mean absolute
difference of the mean min-max-normalised radial profiles) measured on the 64 images of the
sample grid against up to :data:`REAL_PROBE` real training images; it is also written to
``log.jsonl`` as ``spectral_l1``, which the study report plots. The plot is drawn with PIL,
not matplotlib: a few milliseconds, so frequent grids cost no more than the grid itself.

TensorBoard is a dependency of forgelab; a Python environment without it gets one sentence
saying so and a run without event files, never an error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

REAL_PROBE = 1024  # real images whose mean spectrum the samples are compared with
_warned: list[bool] = []

# Log-record keys -> TensorBoard tags.
TAGS = {"d_real": "D/real", "d_fake": "D/fake", "lr_g": "lr/G", "lr_d": "lr/D",
        "images_per_s": "speed/images_per_s", "spectral_l1": "spectrum/radial_l1"}


def summary_writer(out_dir: Path, purge_step: int | None = None) -> Any | None:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``out_dir``, or None (with one sentence) without TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _warned:
            _warned.append(True)
            print("Note: TensorBoard is not installed, so this run writes no event files; "
                  "`pip install tensorboard` adds them.", file=sys.stderr, flush=True)
        return None
    # purge_step: a resumed run drops the events a killed run wrote after its last checkpoint.
    return SummaryWriter(log_dir=str(out_dir), purge_step=purge_step, flush_secs=30)


def mean_radial(images: torch.Tensor) -> np.ndarray:
    """The mean normalised radial profile of uint8 images (detectors.fidelity's normalisation)."""
    from detectors.fidelity import profiles

    with torch.no_grad():
        return profiles(images.cpu())["radial"].mean(0).double().numpy()


def spectrum_plot(real: np.ndarray, fake: np.ndarray, size: tuple[int, int] = (320, 200)) -> np.ndarray:
    """An RGB uint8 (3, H, W) plot of two profiles in [0, 1]: real in grey, the generator's in orange."""
    from PIL import Image, ImageDraw

    w, h = size
    pad = 12
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([pad, pad, w - pad, h - pad], outline=(200, 200, 200))

    def points(p: np.ndarray) -> list[tuple[float, float]]:
        x = np.linspace(pad, w - pad, len(p))
        y = h - pad - np.clip(p, 0, 1) * (h - 2 * pad)
        return list(zip(x.tolist(), y.tolist(), strict=True))

    draw.line(points(real), fill=(90, 90, 90), width=2)
    draw.line(points(fake), fill=(230, 120, 20), width=2)
    draw.text((pad + 4, pad + 2), "real", fill=(90, 90, 90))
    draw.text((pad + 40, pad + 2), "generator", fill=(230, 120, 20))
    return np.asarray(img).transpose(2, 0, 1).copy()


class Monitor:
    """The TensorBoard side of one run (rank 0 only): scalars per log record, grids and spectra per sample."""

    def __init__(self, out_dir: Path, real_images: torch.Tensor, *, enabled: bool, step: int = 0):
        self.writer = summary_writer(out_dir, purge_step=step or None) if enabled else None
        self._real_images = real_images
        self._real: np.ndarray | None = None

    @property
    def real_profile(self) -> np.ndarray:
        """The real images' mean radial profile, computed once, on the first use."""
        if self._real is None:
            n = self._real_images.shape[0]
            # An even spread over the set rather than its first images (folders are often sorted by class).
            idx = torch.linspace(0, n - 1, min(n, REAL_PROBE)).round().long().unique()
            self._real = mean_radial(self._real_images[idx.to(self._real_images.device)])
        return self._real

    def scalars(self, step: int, record: dict[str, Any]) -> None:
        """One log record's numbers as TensorBoard scalars."""
        if self.writer is None:
            return
        for key, value in record.items():
            tag = f"loss/{key[5:]}" if key.startswith("loss_") else TAGS.get(key)
            if tag is not None:
                self.writer.add_scalar(tag, float(value), step)

    def samples(self, step: int, grid: torch.Tensor) -> float:
        """Write the sample grid (float in [-1, 1]) and its spectrum against the real one; return the distance."""
        from gans.sampling import to_uint8

        images = to_uint8(grid.detach().cpu())
        fake = mean_radial(images)
        distance = float(np.abs(fake - self.real_profile).mean())
        if self.writer is not None:
            from torchvision.utils import make_grid

            self.writer.add_image("samples", make_grid(images, nrow=8), step)
            self.writer.add_image("spectrum/radial", spectrum_plot(self.real_profile, fake), step)
            self.writer.flush()
        return distance

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
