"""Generation throughput: pure generator forward passes versus writing a fake set of PNGs to disk.

"forward" consumes :func:`gans.sampling.generate` (latents, forward pass, uint8 conversion, copy
to CPU) and throws the images away; "to disk" runs :func:`gans.sampling.write_fake_set`, which
encodes lossless PNGs in a thread pool while the next batch is generated. The target is
to-disk >= 80 % of forward, i.e. PNG encoding is not the bottleneck.

    OMP_NUM_THREADS=2 python benchmarks/generate_speed.py --arch dcgan --n 2000 [--checkpoint RUN] [--json]

Without ``--checkpoint`` a freshly initialised generator is used (speed does not depend on the
weights). "encode only" times the PNG writer alone on images made beforehand: when a core is
free for the generator, to-disk approaches min(forward, encode only); on a machine whose other
cores are busy the two run one after the other instead. Timings on a shared machine vary with
its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from gans.distributed import resolve_device
from gans.networks import ARCHITECTURES
from gans.sampling import _write_pngs, generate, load_generator, png_name, write_fake_set
from gans.training import TrainConfig, Trainer
from gans.upsamplers import UPSAMPLERS


def fresh_checkpoint(folder: Path, arch: str, upsampler: str, resolution: int, width: int | None) -> Path:
    """Write the checkpoint of an untrained run (what write_fake_set reads) into ``folder``."""
    cfg = TrainConfig(arch=arch, upsampler=upsampler, resolution=resolution, width=width, steps=1, device="cpu")
    images = torch.zeros(4, 3, resolution, resolution, dtype=torch.uint8)
    return Trainer(cfg, images, folder).save()


def main() -> None:
    """Parse flags, time both paths, print the result."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None, help="A run folder or checkpoint (default: untrained G).")
    p.add_argument("--arch", default="dcgan", choices=list(ARCHITECTURES))
    p.add_argument("--upsampler", default="transposed", choices=list(UPSAMPLERS))
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None, help="PNG encoder threads (default: CPU count).")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs.")
    p.add_argument("--repeats", type=int, default=3, help="Alternating measurements; medians are reported.")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(a.checkpoint) if a.checkpoint else fresh_checkpoint(
            Path(tmp) / "run", a.arch, a.upsampler, a.resolution, a.width)
        G, meta = load_generator(ckpt, device=dev)
        for _ in generate(G, min(a.n, 256), batch_size=a.batch_size):  # warm-up
            pass
        # Encoding alone (same writer, same threads) on images made beforehand: with a free core
        # for the generator, to-disk can reach min(forward, encode-only).
        imgs = torch.cat(list(generate(G, a.n, seed=1, batch_size=a.batch_size))).permute(0, 2, 3, 1).numpy()
        workers = a.workers or max(1, (os.cpu_count() or 2) - 1)
        enc_dir = Path(tmp) / "encode"
        enc_dir.mkdir()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            parts = [range(i, min(a.n, i + 64)) for i in range(0, a.n, 64)]
            list(pool.map(lambda r: _write_pngs(imgs[r.start:r.stop], [enc_dir / png_name(i, a.n) for i in r]),
                          parts))
        encode_only = a.n / (time.perf_counter() - t0)
        forward, to_disk = [], []
        for r in range(a.repeats):  # alternate the two, so load drifts on a shared machine hit both
            sync()
            t0 = time.perf_counter()
            for _ in generate(G, a.n, seed=1, batch_size=a.batch_size):
                pass
            sync()
            forward.append(a.n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            out = write_fake_set(ckpt, a.n, Path(tmp) / f"fake{r}", seed=1, batch_size=a.batch_size, device=dev,
                                 workers=a.workers)
            to_disk.append(a.n / (time.perf_counter() - t0))
            assert len(list(out.glob("*.png"))) == a.n
        forward, to_disk = statistics.median(forward), statistics.median(to_disk)
    rec = {"arch": meta["arch"], "upsampler": meta["upsampler"], "resolution": meta["resolution"],
           "device": str(dev), "n": a.n, "batch_size": a.batch_size, "forward_images_per_s": forward,
           "to_disk_images_per_s": to_disk, "encode_only_images_per_s": encode_only,
           "to_disk_over_forward": to_disk / forward, "cpu_count": os.cpu_count()}
    if a.json:
        print(json.dumps(rec, indent=2))
    else:
        print(f"{rec['arch']}/{rec['upsampler']} {rec['resolution']} px on {rec['device']}: "
              f"forward {forward:.0f} images/s, to disk {to_disk:.0f} images/s "
              f"({100 * rec['to_disk_over_forward']:.0f} % of forward; target >= 80 %), "
              f"PNG encoding alone {encode_only:.0f} images/s")


if __name__ == "__main__":
    main()
