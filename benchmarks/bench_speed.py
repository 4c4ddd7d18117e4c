"""Wall time of ``forgelab bench``: 8 detectors x 3 sources x 2,000 images at 64 px, then the same with one sweep of
5 JPEG qualities.

    python benchmarks/bench_speed.py --out /tmp/bench-speed [--jobs 1]

Builds a synthetic tree (flat layout, PNG, 64 px): three sources, each with 1,000 real and 1,000 fake images in
train/ and in test/ (so 2,000 test images a source); real images are smooth random gratings plus noise, fakes the
same with a faint upsampling trace. Runs ``forgelab bench --train s0`` once (cold: images decoded, every cell
fitted), then a fresh run with ``--sweep jpeg=100,95,90,75,50`` (decoded images cached, so it times the sweep: 5
more scorings of every test set). Prints both wall times; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

DETECTORS = ["radial:svm", "xy:svm", "dct:lr", "spectrum:lr", "npr:lr", "dwt:lr", "periodicity:svm",
             "fingerprint:deviation"]


def images(n: int, size: int, seed: int, trace: float) -> np.ndarray:
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    x = np.zeros((n, size, size, 3))
    for _ in range(5):
        fy, fx = (g.integers(0, 6, (n, 1, 1)) for _ in range(2))
        ph = g.uniform(0, 2 * np.pi, (n, 1, 1, 3))
        x += g.uniform(0, 1, (n, 1, 1, 3)) * np.cos(2 * np.pi * (fy * yy + fx * xx)[..., None] / size + ph)
    x = 128 + 40 * x / np.abs(x).max(axis=(1, 2, 3), keepdims=True) + g.normal(0, 3, x.shape)
    x += trace * (((yy + xx) % 2) * 2 - 1)[None, :, :, None]  # a faint Nyquist checkerboard
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def write(arr: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arr):
        Image.fromarray(a).save(folder / f"{i:05d}.png")


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--n", type=int, default=1000, help="Real (and fake) images per source and split.")
    args = ap.parse_args()
    out = Path(args.out)
    tree = out / "tree"
    if not tree.is_dir():
        for s in range(3):
            for split in ("train", "test"):
                seed = 10 * s + (split == "test")
                write(images(args.n, 64, seed, 0), tree / split / f"s{s}" / "0_real")
                write(images(args.n, 64, seed + 100, 1.5 + s), tree / split / f"s{s}" / "1_fake")
    base = [sys.executable, "-m", "pipelines.cli", "bench", str(tree), "--train", "s0", "--no-progress",
            "--jobs", str(args.jobs)]
    for d in DETECTORS:
        base += ["--detector", d]
    env_note = f"{os.cpu_count()} CPUs, torch threads default"
    cold = run(base + ["--out", str(out / "plain"), "--overwrite"])
    sweep = run(base + ["--out", str(out / "sweep"), "--overwrite", "--sweep", "jpeg=100,95,90,75,50"])
    print(f"bench, {len(DETECTORS)} detectors x 3 sources x {2 * args.n} test images at 64 px ({env_note}, "
          f"jobs {args.jobs}): {cold:.1f} s (images decoded, cold cache)")
    print(f"same with --sweep jpeg=100,95,90,75,50: {sweep:.1f} s (decoded images cached)")


if __name__ == "__main__":
    main()
