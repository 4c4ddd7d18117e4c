"""npr:nprnet trained with and without Wang et al.'s blur/JPEG augmentation, on a small synthetic task.

Real images are native-pixel 32 px crops of the embedded photos (``preprocess="crop"``): the
training pool from region "train", the test pool from region "test", so no test pixel was seen
in training. Fakes imitate a generator's last layer: a native 16 px crop, upsampled 2x, then a
fixed 3x3 convolution and a little noise (so the residual is not trivially zero):

* ``nearest`` (training family) and ``bilinear`` (the other family, never trained on);
* each test set also JPEG-compressed at quality 75 (real and fake alike).

    OMP_NUM_THREADS=1 python benchmarks/nprnet_augment.py --n 96 --n-test 128 --epochs 6 --json

gave (ROC-AUC; 2 shared CPU cores, one thread, about 4 minutes per fit):

    augment_p 0.0: nearest 0.972, bilinear 0.924, nearest JPEG75 0.704, bilinear JPEG75 0.650
    augment_p 0.5: nearest 0.956, bilinear 0.897, nearest JPEG75 0.673, bilinear JPEG75 0.635

so :mod:`detectors.nprnet` trains without blur/JPEG by default.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from detectors.augment import jpeg
from detectors.detector import Detector
from detectors.metrics import evaluate
from pipelines.data.images import embedded_images

# The generator's last convolution: a fixed, slightly asymmetric 3x3 smoothing kernel.
KERNEL = torch.tensor([[0.05, 0.10, 0.05], [0.10, 0.45, 0.10], [0.02, 0.08, 0.05]])


def fakes(n: int, kind: str, region: str, seed: int) -> torch.Tensor:
    """(n, 3, 32, 32) uint8 fakes: native 16 px crops upsampled 2x (``kind``), a fixed 3x3 conv, noise sigma 1.5."""
    small = embedded_images(16, n, seed=seed, region=region, preprocess="crop").images.float()
    if kind == "nearest":
        up = F.interpolate(small, scale_factor=2, mode="nearest")
    else:
        up = F.interpolate(small, scale_factor=2, mode=kind, align_corners=False)
    k = (KERNEL / KERNEL.sum()).expand(3, 1, 3, 3)
    out = F.conv2d(F.pad(up, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    g = torch.Generator().manual_seed(seed)
    out = out + 1.5 * torch.randn(out.shape, generator=g)
    return out.round().clamp(0, 255).to(torch.uint8)


def reals(n: int, region: str, seed: int) -> torch.Tensor:
    return embedded_images(32, n, seed=seed, region=region, preprocess="crop").images


def auc(det: Detector, real: torch.Tensor, fake: torch.Tensor) -> float:
    s = np.concatenate([det.score(real), det.score(fake)])
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))].astype(np.int64)
    return float(evaluate(y, s, det.threshold)["auc"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=96, help="training images per class")
    p.add_argument("--n-test", type=int, default=128, help="test images per set")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--augment", type=float, nargs="+", default=[0.0, 0.5], help="augment_p values to compare")
    p.add_argument("--feature", default="npr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)

    train_real, train_fake = reals(args.n, "train", 100 + args.seed), fakes(args.n, "nearest", "train", 200 + args.seed)
    test_real = reals(args.n_test, "test", 300)
    tests = {kind: fakes(args.n_test, kind, "test", 400 + i) for i, kind in enumerate(("nearest", "bilinear"))}
    rows = []
    for p_aug in args.augment:
        t = time.perf_counter()
        det = Detector(f"{args.feature}:nprnet", device="cpu", seed=args.seed, epochs=args.epochs, batch_size=32,
                       augment_p=p_aug, patience=args.epochs).fit(train_real, train_fake)
        row = {"augment_p": p_aug, "fit_s": round(time.perf_counter() - t, 1)}
        for kind, fake in tests.items():
            row[f"auc_{kind}"] = auc(det, test_real, fake)
            row[f"auc_{kind}_jpeg75"] = auc(det, jpeg(test_real, 75), jpeg(fake, 75))
        rows.append(row)
        print(json.dumps(row) if args.json else row, flush=True)


if __name__ == "__main__":
    main()
