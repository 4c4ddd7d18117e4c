"""Cost of ``--alias-free`` per generator step: the same network with plain and with filtered ReLUs.

For each architecture and resolution, two Trainers on synthetic data (same upsampler, width and
batch) take training steps interleaved one by one, so a load spike on a shared machine hits both
alike; the median step time of each and their ratio are printed. A step is one G step with its
``n_dis`` D steps (DCGAN 1, SNGAN 5), as ``forgelab train`` runs it.

    OMP_NUM_THREADS=1 python benchmarks/alias_free_cost.py --steps 5
    python benchmarks/alias_free_cost.py --archs dcgan --resolutions 32 --width 32 --batch-size 64 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import synthetic_images, timed_step  # noqa: E402

from gans.training import TrainConfig, Trainer  # noqa: E402


def compare(arch: str, resolution: int, upsampler: str, width: int, batch_size: int, steps: int,
            warmup: int) -> dict:
    """Median step time with plain and with alias-free ReLUs, and their ratio."""
    base = TrainConfig(arch=arch, upsampler=upsampler, resolution=resolution, batch_size=batch_size,
                       width=width, steps=10**6, device="cpu")
    images = synthetic_images(max(256, batch_size), resolution)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = [Trainer(dataclasses.replace(base, alias_free=af), images, f"{tmp}/{af}") for af in (False, True)]
        for tr in trainers:
            for _ in range(warmup):
                tr.train_step()
        times: list[list[float]] = [[], []]
        for _ in range(steps):
            for tr, ts in zip(trainers, times, strict=True):
                ts.append(timed_step(tr))
    plain, af = (statistics.median(t) for t in times)
    return {"arch": arch, "resolution": resolution, "upsampler": upsampler, "width": width,
            "batch_size": batch_size, "n_dis": trainers[0].cfg.resolved().n_dis, "steps": steps,
            "threads": torch.get_num_threads(), "plain_s": plain, "alias_free_s": af, "ratio": af / plain}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["dcgan", "sngan"])
    p.add_argument("--resolutions", nargs="+", type=int, default=[32])
    p.add_argument("--upsampler", default="sinc")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rows = [compare(arch, r, a.upsampler, a.width, a.batch_size, a.steps, a.warmup)
            for arch in a.archs for r in a.resolutions]
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'arch':6} {'px':>4} {'upsampler':10} {'n_dis':>5} {'plain s/step':>12} {'alias-free s/step':>17} {'ratio':>6}")
    for r in rows:
        print(f"{r['arch']:6} {r['resolution']:>4} {r['upsampler']:10} {r['n_dis']:>5} {r['plain_s']:>12.3f} "
              f"{r['alias_free_s']:>17.3f} {r['ratio']:>6.2f}")


if __name__ == "__main__":
    main()
