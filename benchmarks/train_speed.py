"""Training throughput of gans.training: images/s per architecture and upsampler, spectral-D overhead.

images/s counts real images shown to the discriminator per second (``batch_size * n_dis`` per
generator step, StyleGAN's "kimg" convention), so DCGAN (n_dis 1) and SNGAN (n_dis 5) compare
per image seen by D. Each configuration runs ``--warmup`` untimed steps, then ``--steps`` timed
ones and reports the median step time; only the step itself is timed, no checkpoints or samples.
With ``--all`` the runs with and without the spectral discriminator alternate step by step, so a
load spike on a shared machine hits both alike and the overhead stays meaningful.

    OMP_NUM_THREADS=2 python benchmarks/train_speed.py --arch dcgan --upsampler transposed --steps 10
    OMP_NUM_THREADS=2 python benchmarks/train_speed.py --all --steps 5 [--archs dcgan] [--width 16] [--json]

``--all`` loops over both architectures and every upsampler, with and without the spectral
discriminator, and reports its overhead in % of step time (target: at most 15 %); on CUDA it also
runs every configuration with and without bf16 AMP. Timings on a shared machine vary with its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from gans.distributed import resolve_device
from gans.networks import ARCHITECTURES
from gans.training import TrainConfig, Trainer
from gans.upsamplers import UPSAMPLERS


def synthetic_images(n: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images: the step time does not depend on their content."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, resolution, resolution), generator=g, dtype=torch.uint8)


def build(arch: str, upsampler: str, resolution: int, batch_size: int, spectral_d: bool, device: str,
          amp: bool, width: int | None, folder: str) -> Trainer:
    """A Trainer on synthetic data (nothing is written: only train_step is called)."""
    cfg = TrainConfig(arch=arch, upsampler=upsampler, resolution=resolution, batch_size=batch_size,
                      steps=10**6, spectral_d=spectral_d, amp=amp, width=width, device=device)
    return Trainer(cfg, synthetic_images(max(256, batch_size), resolution), folder)


def timed_step(tr: Trainer) -> float:
    """Seconds of one training step (synchronised on CUDA)."""
    cuda = tr.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tr.train_step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def record(tr: Trainer, times: list[float]) -> dict:
    """A result row: median step time (robust to a shared machine's load spikes) and images/s."""
    t = statistics.median(times)
    c = tr.cfg
    return {
        "arch": c.arch, "upsampler": c.upsampler, "resolution": c.resolution, "batch_size": c.batch_size,
        "spectral_d": c.spectral_d, "device": str(tr.device), "amp": tr.amp, "width": c.width,
        "n_dis": c.n_dis, "steps": len(times), "step_time_s": t, "images_per_s": c.batch_size * c.n_dis / t,
    }


def measure(configs: list[dict], steps: int, warmup: int) -> list[dict]:
    """Time ``steps`` steps of each configuration, interleaved step by step so load drifts hit all alike."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = [build(**c, folder=tmp) for c in configs]
        for tr in trainers:
            for _ in range(warmup):
                tr.train_step()
        times: list[list[float]] = [[] for _ in trainers]
        for _ in range(steps):
            for tr, ts in zip(trainers, times, strict=True):
                ts.append(timed_step(tr))
        return [record(tr, ts) for tr, ts in zip(trainers, times, strict=True)]


def main() -> None:
    """Parse flags, run the measurements, print a table or JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="dcgan", choices=list(ARCHITECTURES))
    p.add_argument("--upsampler", default="transposed", choices=list(UPSAMPLERS))
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--width", type=int, default=None, help="Network width (default: the arch's).")
    p.add_argument("--spectral-d", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true", help="Disable bf16 autocast on CUDA.")
    p.add_argument("--all", action="store_true", help="Every arch x upsampler, with and without spectral D.")
    p.add_argument("--archs", default=",".join(ARCHITECTURES), help="Architectures for --all (comma list).")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs.")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    common = dict(resolution=a.resolution, batch_size=a.batch_size, device=a.device, width=a.width)
    records = []
    if not a.all:
        config = dict(arch=a.arch, upsampler=a.upsampler, spectral_d=a.spectral_d, amp=not a.no_amp, **common)
        records += measure([config], a.steps, a.warmup)
    else:
        amps = [True, False] if resolve_device(a.device).type == "cuda" and not a.no_amp else [not a.no_amp]
        for amp in amps:
            for arch in a.archs.split(","):
                for up in UPSAMPLERS:
                    pair = [dict(arch=arch, upsampler=up, spectral_d=sd, amp=amp, **common) for sd in (False, True)]
                    plain, with_sd = measure(pair, a.steps, a.warmup)
                    with_sd["spectral_d_overhead_pct"] = 100 * (with_sd["step_time_s"] / plain["step_time_s"] - 1)
                    records += [plain, with_sd]
    if a.json:
        print(json.dumps(records, indent=2))
        return
    print(f"{'arch':6} {'upsampler':13} {'res':>4} {'batch':>5} {'spec-D':>6} {'amp':>5} "
          f"{'step ms':>8} {'images/s':>9} {'SD overhead':>11}")
    for r in records:
        ov = f"{r['spectral_d_overhead_pct']:+.1f} %" if "spectral_d_overhead_pct" in r else ""
        print(f"{r['arch']:6} {r['upsampler']:13} {r['resolution']:>4} {r['batch_size']:>5} "
              f"{'yes' if r['spectral_d'] else 'no':>6} {'bf16' if r['amp'] else 'fp32':>5} "
              f"{1000 * r['step_time_s']:8.1f} {r['images_per_s']:9.1f} {ov:>11}")


if __name__ == "__main__":
    main()
