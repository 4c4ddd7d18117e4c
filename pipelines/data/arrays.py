"""Array and image files of a study folder: .npy/.npz arrays, PNG sample grids, mean spectra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from detectors.features import extract
from plumbing.files import atomic_path


def save_array(path: str | Path, array: np.ndarray) -> Path:
    """Write one array as .npy, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return Path(path)


def save_arrays(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write named arrays as one .npz, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read an .npz written by :func:`save_arrays` (no pickled objects allowed)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_grid(images: torch.Tensor, path: str | Path, n: int = 64) -> Path:
    """Save the first ``n`` uint8 images (N, 3, H, W) as one PNG grid, atomically."""
    x = images[:n].cpu()
    nrow = int(np.ceil(np.sqrt(x.shape[0])))
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=255)
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
    return Path(path)


def fakes_path(run_dir: str | Path, name: str) -> Path:
    """Where a study keeps the uint8 fakes of generator ``name``."""
    return Path(run_dir) / "fakes" / f"{name}.npy"


def load_fakes(run_dir: str | Path, name: str) -> torch.Tensor:
    """The uint8 fakes (N, 3, R, R) a study generated for generator ``name``."""
    path = fakes_path(run_dir, name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rerun the study to regenerate the fakes of {name!r}.")
    return torch.from_numpy(np.load(path, allow_pickle=False))


def mean_spectra(images: torch.Tensor, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Mean radial, horizontal, vertical and 2D log power spectra of a uint8 set (detectors.features)."""
    n, _, h, w = images.shape
    radial = extract("radial", images, batch_size=batch_size).mean(0)
    xy = extract("xy", images, batch_size=batch_size).mean(0)
    full = extract("spectrum", images, batch_size=batch_size).mean(0).reshape(h, w)
    # xy holds the mean over rows (a function of the horizontal frequency, length W) then
    # the mean over columns (vertical frequency, length H), both centred (DC at index W//2).
    return {
        "radial": radial.double().cpu().numpy(),
        "horizontal": xy[:w].double().cpu().numpy(),
        "vertical": xy[w:].double().cpu().numpy(),
        "spectrum2d": full.double().cpu().numpy(),
        "count": np.array(n),
    }
