"""Training throughput of gans.training: images/s per architecture and upsampler, spectral-D overhead.

images/s counts real images shown to the discriminator per second (``batch_size * n_dis`` per
generator step, StyleGAN's "kimg" convention), so DCGAN (n_dis 1) and SNGAN (n_dis 5) compare
per image seen by D. Each configuration runs ``--warmup`` untimed steps, then ``--steps`` timed
ones and reports the median step time; only the step itself is timed, no checkpoints or samples.
With ``--all`` the runs with and without the spectral discriminator alternate step by step, so a
load spike on a shared machine hits both alike and the overhead stays meaningful.

    OMP_NUM_THREADS=2 python benchmarks/train_speed.py --arch dcgan --upsampler transposed --steps 10
    OMP_NUM_THREADS=2 python benchmarks/train_speed.py --all --steps 5 [--archs dcgan] [--width 16] [--json]

``--reference mimicry`` times SNGAN-32 (default width, batch 16, n_dis 5, nearest upsampling,
hinge loss, Adam(2e-4, 0, 0.9)) side by side with torch-mimicry's SNGAN-32 on the same settings,
steps interleaved, one thread each (``pip install torch-mimicry==0.1.16`` beside the project; it is
not a dependency). Mimicry's package ``__init__`` imports its FID/IS code (TensorFlow,
scikit-image, tensorboard); only its networks are needed, so the package is registered without
running that ``__init__`` and its submodule ``torch_mimicry.nets.sngan.sngan_32`` is imported
directly. Its own ``train_step`` methods (D step, and the G step after the last D step, as its
Trainer calls them) are what is timed.

    python benchmarks/train_speed.py --reference mimicry --steps 10

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


def import_mimicry_sngan32():
    """torch-mimicry's ``sngan_32`` module, imported without the package's TensorFlow-bound __init__."""
    import importlib
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("torch_mimicry")
    if spec is None:
        raise SystemExit("torch-mimicry is not installed; run: pip install --no-deps torch-mimicry==0.1.16")
    if "torch_mimicry" not in sys.modules:
        pkg = types.ModuleType("torch_mimicry")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["torch_mimicry"] = pkg
    return importlib.import_module("torch_mimicry.nets.sngan.sngan_32")


class _NoLog:
    """Stands in for mimicry's MetricLog (its train_step only calls add_metric)."""

    def add_metric(self, *args, **kwargs) -> None:
        pass


class MimicryRunner:
    """One training step of torch-mimicry's SNGAN-32 as its Trainer runs it: n_dis D steps, then G."""

    def __init__(self, images: torch.Tensor, batch_size: int, n_dis: int = 5, seed: int = 0):
        m = import_mimicry_sngan32()
        torch.manual_seed(seed)
        self.device = torch.device("cpu")
        self.G, self.D = m.SNGANGenerator32(), m.SNGANDiscriminator32()
        self.opt_G = torch.optim.Adam(self.G.parameters(), 2e-4, betas=(0.0, 0.9))
        self.opt_D = torch.optim.Adam(self.D.parameters(), 2e-4, betas=(0.0, 0.9))
        self.images, self.batch_size, self.n_dis = images, batch_size, n_dis
        self.g = torch.Generator().manual_seed(seed)
        self.cfg = argparse.Namespace(arch="mimicry-sngan", upsampler="nearest", resolution=32,
                                      batch_size=batch_size, spectral_d=False, width=self.G.ngf // 4,
                                      n_dis=n_dis)
        self.amp = False

    def train_step(self) -> None:
        for i in range(self.n_dis):
            idx = torch.randint(0, self.images.shape[0], (self.batch_size,), generator=self.g)
            real = (self.images[idx].float().div_(127.5).sub_(1.0), torch.zeros(self.batch_size, dtype=torch.long))
            self.D.train_step(real_batch=real, netG=self.G, optD=self.opt_D, log_data=_NoLog(),
                              global_step=0, device=self.device)
            if i == self.n_dis - 1:
                self.G.train_step(real_batch=real, netD=self.D, optG=self.opt_G, log_data=_NoLog(),
                                  global_step=0, device=self.device)


def compare_with_mimicry(steps: int, warmup: int, batch_size: int = 16) -> list[dict]:
    """Ours vs torch-mimicry's SNGAN-32 at batch ``batch_size``, n_dis 5, steps interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        images = synthetic_images(max(256, batch_size), 32)
        ours = build("sngan", "nearest", 32, batch_size, False, "cpu", False, None, tmp)
        theirs = MimicryRunner(images, batch_size, n_dis=ours.cfg.n_dis)
        runners = [ours, theirs]
        for r in runners:
            for _ in range(warmup):
                r.train_step()
        times: list[list[float]] = [[], []]
        for _ in range(steps):
            for r, ts in zip(runners, times, strict=True):
                ts.append(timed_step(r))
        rows = [record(r, ts) for r, ts in zip(runners, times, strict=True)]
    rows[0]["params_G"] = sum(p.numel() for p in ours.G.parameters())
    rows[1]["params_G"] = sum(p.numel() for p in theirs.G.parameters())
    rows[0]["speed_vs_mimicry"] = rows[0]["images_per_s"] / rows[1]["images_per_s"]
    return rows


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
    p.add_argument("--reference", choices=["mimicry"], default=None,
                   help="Time SNGAN-32 (batch 16, n_dis 5, nearest) beside torch-mimicry's, one thread.")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.reference == "mimicry":
        torch.set_num_threads(a.threads or 1)
        rows = compare_with_mimicry(a.steps, a.warmup, batch_size=16)
        if a.json:
            print(json.dumps(rows, indent=2))
            return
        print(f"{'implementation':16} {'G params':>9} {'step ms':>8} {'images/s':>9}")
        for r in rows:
            print(f"{r['arch']:16} {r['params_G']:9d} {1000 * r['step_time_s']:8.1f} {r['images_per_s']:9.1f}")
        print(f"ours / mimicry: {rows[0]['speed_vs_mimicry']:.2f}x (median of {a.steps} interleaved steps, "
              f"{torch.get_num_threads()} thread)")
        return
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
