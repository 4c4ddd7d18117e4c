"""Shared fixtures: small hand-made image sets, so no test needs downloaded data."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# One thread: the models in tests are tiny, and on 2 cores a second thread costs more in
# synchronisation than it gains (and oversubscribes when tests start subprocesses).
torch.set_num_threads(1)


# A study small enough for a test: two 3-step DCGANs on the embedded photos, one detector. One
# thread: a step in a worker process computes exactly what it computes in the test's process.
TINY_STUDY = {
    "study": {"name": "tiny", "seed": 0, "resolution": 32, "data": "embedded", "n_real": 64, "threads": 1},
    "train": {"steps": 3, "batch_size": 16, "width": 8, "z_dim": 16, "log_every": 1,
              "sample_every": 0, "ckpt_every": 0},
    "grid": {"upsamplers": ["nearest", "bed_of_nails"]},
    "generate": {"n": 40, "batch_size": 40, "grid": 16},
    "transfer": {"detectors": ["radial:lr"]},
}


def tiny_study(**changes) -> dict:
    """A copy of TINY_STUDY with ``section={key: value}`` changes merged in (``section=None`` drops it)."""
    import copy

    cfg = copy.deepcopy(TINY_STUDY)
    for section, values in changes.items():
        if values is None:
            cfg.pop(section, None)
        else:
            cfg.setdefault(section, {}).update(values)
    return cfg


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8 images: sums of a few random low-frequency gratings (photo-like spectra)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.zeros(n, 3, size, size)
    for _ in range(6):
        f = torch.randint(0, 4, (n, 2), generator=g).float()
        phase = torch.rand(n, 3, 1, 1, generator=g) * 2 * math.pi
        amp = torch.rand(n, 3, 1, 1, generator=g) / (1 + f.norm(dim=1)).view(n, 1, 1, 1)
        arg = 2 * math.pi * (f[:, 0].view(n, 1, 1, 1) * yy + f[:, 1].view(n, 1, 1, 1) * xx) / size
        out += amp * torch.cos(arg + phase)
    out = (out - out.amin(dim=(1, 2, 3), keepdim=True)) / (
        out.amax(dim=(1, 2, 3), keepdim=True) - out.amin(dim=(1, 2, 3), keepdim=True) + 1e-8
    )
    return (out * 255).round().to(torch.uint8)


def checkerboard_task(n: int, seed: int, amplitude: float = 10.0) -> tuple[torch.Tensor, np.ndarray]:
    """32 px smooth images; odd indices get a +-amplitude checkerboard (the Nyquist-frequency artefact)."""
    x = smooth_images(n, 32, seed=seed).float()
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    board = ((yy + xx) % 2 * 2 - 1).float()
    y = np.arange(n) % 2
    x[torch.as_tensor(y == 1)] += amplitude * board
    return x.clamp(0, 255).round().to(torch.uint8), y


def write_pngs(images: torch.Tensor, folder: Path, prefix: str = "img") -> list[Path]:
    """Write a uint8 (N, 3, H, W) batch as PNG files into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = folder / f"{prefix}_{i:04d}.png"
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(p)
        paths.append(p)
    return paths


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's decoded-image and metric caches out of the user's home folder."""
    monkeypatch.setenv("FORGELAB_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def real_images() -> torch.Tensor:
    """64 smooth 32 px uint8 images."""
    return smooth_images(64, 32, seed=0)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A folder of 24 PNG images of 40 px (so resizing to 32 px is exercised)."""
    folder = tmp_path / "images"
    write_pngs(smooth_images(24, 40, seed=1), folder)
    return folder


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def ray_runtime():
    """A local Ray runtime of 2 CPUs for one test module (started once, shut down after it).

    Workers import step functions from the test modules by name, so they get the tests' folder
    and the repository on their path.
    """
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    path = os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _node_ip_address="127.0.0.1", runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()
