"""Known result (Durall et al. 2020): a radial spectrum + SVM tells real images from upsampled ones.

Real: ImageWoof images at 64 px. Fake: *other* ImageWoof images, halved to 32 px (2x2 mean) and
brought back to 64 px by a fixed upsampling layer whose weights are seeded: by default a
ConvTranspose2d (kernel 4, stride 2) initialised as bilinear interpolation plus seeded Gaussian
noise, which leaves the periodic spectral peaks of transposed convolutions; ``--upsampler`` picks
any kind from gans.upsamplers (a fixed resampling + 3x3 convolution set the same way). The
detector trains on ``--n-train`` images per class and is tested on ``--n-test`` held-out images
per class. ``--generator RUN_DIR`` takes the fakes from a trained generator instead (the
known result proper: real photos versus a DCGAN with transposed convolutions).

    FORGELAB_DATA=/path/to/imagewoof2-160/train python benchmarks/durall_check.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detectors.detector import Detector
from detectors.metrics import evaluate
from gans.sampling import generate_tensor, load_generator
from gans.upsamplers import UPSAMPLERS, make_upsampler
from pipelines.data.images import load_images

# 1D weights of x2 linear interpolation as a stride-2 kernel of 4 taps (transposed convolution),
# and as a 3-tap kernel after zero insertion (bed of nails).
BILINEAR_4 = torch.tensor([0.25, 0.75, 0.75, 0.25])
BILINEAR_3 = torch.tensor([0.5, 1.0, 0.5])


def fixed_upsampler(kind: str, noise: float, seed: int) -> nn.Module:
    """A 3 -> 3 channel x2 upsampler of ``kind`` with interpolation weights plus seeded noise."""
    up = make_upsampler(kind, 3, 3)
    conv = up if isinstance(up, nn.ConvTranspose2d) else next(m for m in up.modules() if isinstance(m, nn.Conv2d))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        k = conv.weight.shape[-1]
        if isinstance(conv, nn.ConvTranspose2d):
            base = torch.outer(BILINEAR_4, BILINEAR_4) if k == 4 else torch.zeros(k, k)
        elif kind == "bed_of_nails":
            base = torch.outer(BILINEAR_3, BILINEAR_3)
        elif kind == "pixelshuffle":
            raise ValueError("pixelshuffle has no single interpolation kernel to start from; choose another --upsampler.")
        else:
            base = torch.zeros(k, k)
            base[k // 2, k // 2] = 1.0
        weight = torch.zeros_like(conv.weight)
        for c in range(3):
            weight[c, c] = base
        weight += noise * float(base.abs().max()) * torch.randn(weight.shape, generator=g)
        conv.weight.copy_(weight)
        if conv.bias is not None:
            conv.bias.zero_()
    return up.eval()


@torch.no_grad()
def make_fakes(images: torch.Tensor, upsampler: nn.Module, batch_size: int = 128) -> torch.Tensor:
    """Halve uint8 images (2x2 mean) and upsample them back with ``upsampler``; uint8 out."""
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].float() / 255.0
        y = upsampler(F.avg_pool2d(x, 2))
        out.append((y.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(out)


def main() -> None:
    """Fit the detector on real vs fixed-upsampler fakes and print held-out metrics."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("FORGELAB_DATA"), help="image folder (default $FORGELAB_DATA)")
    p.add_argument("--detector", default="radial:svm")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--n-train", type=int, default=200, help="training images per class")
    p.add_argument("--n-test", type=int, default=200, help="test images per class")
    p.add_argument("--upsampler", default="transposed", choices=sorted(UPSAMPLERS))
    p.add_argument("--noise", type=float, default=0.1, help="seeded weight noise, relative to the largest tap")
    p.add_argument("--generator", default=None, help="run folder or checkpoint of a trained generator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not args.data:
        p.error("give --data or set FORGELAB_DATA to a folder of real images")

    torch.manual_seed(args.seed)
    n_per_class = args.n_train + args.n_test
    t0 = time.perf_counter()
    pool = load_images(args.data, args.resolution, limit=2 * n_per_class).images
    if pool.shape[0] < 2 * n_per_class:
        raise SystemExit(f"{args.data} holds only {pool.shape[0]} readable images; need {2 * n_per_class}.")
    order = torch.from_numpy(np.random.default_rng(args.seed).permutation(pool.shape[0]))
    # Fakes are made from different photos than the real set, so content cannot give them away.
    real, source = pool[order[:n_per_class]], pool[order[n_per_class : 2 * n_per_class]]
    if args.generator:
        G, meta = load_generator(args.generator)
        if meta["resolution"] != args.resolution:
            raise SystemExit(f"{args.generator} makes {meta['resolution']} px images; pass --resolution {meta['resolution']}.")
        fake = generate_tensor(G, n_per_class, seed=args.seed)
        args.upsampler, args.noise = f"{meta['arch']}/{meta['upsampler']} GAN, step {meta['step']}", 0.0
    else:
        fake = make_fakes(source, fixed_upsampler(args.upsampler, args.noise, args.seed))
    t_data = time.perf_counter() - t0

    t0 = time.perf_counter()
    det = Detector(args.detector, seed=args.seed).fit(real[: args.n_train], fake[: args.n_train])
    t_fit = time.perf_counter() - t0
    test_real, test_fake = real[args.n_train :], fake[args.n_train :]
    scores = det.score(torch.cat([test_real, test_fake]))
    y = np.r_[np.zeros(len(test_real)), np.ones(len(test_fake))].astype(np.int64)
    metrics = evaluate(y, scores, det.threshold)
    result = {
        "detector": det.spec, "upsampler": args.upsampler, "noise": args.noise, "resolution": args.resolution,
        "n_train_per_class": args.n_train, "n_test_per_class": args.n_test, "seed": args.seed,
        "threshold": det.threshold, "metrics": metrics, "seconds": {"data": t_data, "fit": t_fit},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{det.spec} | real vs {args.upsampler} (noise {args.noise}) | {args.resolution} px | "
          f"{args.n_train} train / {args.n_test} test images per class")
    print("  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print(f"  threshold {det.threshold:.4f}; data {t_data:.1f} s, fit {t_fit:.1f} s")


if __name__ == "__main__":
    main()
