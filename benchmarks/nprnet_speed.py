"""How long one ``npr:nprnet`` fit takes on the CPU: 1,600 images at 32 px, with the NPR code's stem and the old small-input one.

Issue 16 asked for one fit on 1,600 images (800 real, 800 fake) at 32 px within 3 minutes on the
2-core machine, where the GPU recipe (20 epochs, patience 4) took about 19 minutes with the
small-input stem nprnet then used at <= 64 px. The data are those of
``benchmarks/nprnet_augment.py``: native 32 px crops of the embedded photos as reals, nearest-2x
fakes (16 px crops, upsampled, a fixed 3x3 convolution, noise); the detector holds out 20 % for
validation, as ``forgelab detect fit`` does.

Two measurements:

* ``--steps K``: the median seconds of K training steps (batch 64, Adam) in the default and in
  the channels-last memory layout, on the same batches;
* the fit itself with the classifier's defaults (20 epochs, patience 4, channels-last on a CPU),
  its wall time, the epochs it ran, the validation AP per epoch, and test ROC-AUC on held-out
  nearest and bilinear fakes (``--epochs``/``--patience`` override the schedule).

``--stem small`` measures the old small-input stem (3x3 stride-1 convolution, no max pooling).

    python benchmarks/nprnet_speed.py --steps 3 --json

Measured on the 2-core CPU, otherwise idle, 2 threads: a training step 0.129 s with the NPR stem
against 2.63 s with the small stem (channels-last; contiguous 0.152 s and 3.61 s); the fit with
the NPR stem and the full schedule 25.0 s (9 epochs run, validation AP 0.716 then 1.000), with 3
epochs 8.5 s; test ROC-AUC 1.000 on nearest fakes and 1.000 on bilinear fakes (never trained on)
both ways.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from detectors import nprnet  # noqa: F401  (registers the nprnet backbone)
from detectors.backbones import build_network
from detectors.detector import Detector


def _augment_module():
    """The data of benchmarks/nprnet_augment.py (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("nprnet_augment", Path(__file__).with_name("nprnet_augment.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def step_seconds(x: torch.Tensor, y: torch.Tensor, steps: int, channels_last: bool) -> float:
    """Median seconds of one training step of the nprnet network on 64-image batches of NPR residuals."""
    torch.manual_seed(0)
    net = build_network("nprnet", tuple(x.shape[1:]), 2, "channel", None)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    times = []
    for i in range(steps + 1):
        sl = slice((i * 64) % (x.shape[0] - 64), (i * 64) % (x.shape[0] - 64) + 64)
        t = time.perf_counter()
        loss = F.cross_entropy(net(x[sl].contiguous(memory_format=fmt)), y[sl])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step pays one-off allocation costs
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=800, help="training images per class (1,600 in all)")
    p.add_argument("--n-test", type=int, default=256)
    p.add_argument("--steps", type=int, default=0, help="time this many training steps per memory layout (0: skip)")
    p.add_argument("--epochs", type=int, default=None, help="default: the classifier's CPU default")
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--no-fit", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--stem", choices=("default", "paper", "small"), default="default",
                   help="paper: the NPR code's stride-2 stem and max-pool (the default); small: the old small-input stem")
    args = p.parse_args()
    if args.stem != "default":
        nprnet.SMALL_STEM_MAX = 0 if args.stem == "paper" else 10**9
    aug = _augment_module()
    real, fake = aug.reals(args.n, "train", 100 + args.seed), aug.fakes(args.n, "nearest", "train", 200 + args.seed)
    out: dict = {"threads": torch.get_num_threads(), "n_train": 2 * args.n, "stem": args.stem,
                 "small_stem_max": nprnet.SMALL_STEM_MAX}
    if args.steps:
        from detectors.residuals import npr

        x = npr(torch.cat([real, fake])[: max(128, 64 * (args.steps + 2))])
        y = torch.randint(0, 2, (x.shape[0],), generator=torch.Generator().manual_seed(0))
        out["step_s"] = {name: round(step_seconds(x, y, args.steps, cl), 3)
                         for name, cl in (("contiguous", False), ("channels_last", True))}
        print(json.dumps(out) if args.json else out, flush=True)
    if args.no_fit:
        return
    params = {k: v for k, v in (("epochs", args.epochs), ("patience", args.patience)) if v is not None}
    t = time.perf_counter()
    det = Detector("npr:nprnet", device="cpu", seed=args.seed, **params).fit(real, fake)
    out["fit_s"] = round(time.perf_counter() - t, 1)
    clf = det.classifier
    out.update(epochs_run=len(clf.history_), best_epoch=clf.best_epoch_,
               val_ap=[round(h.get("val_ap", float("nan")), 4) for h in clf.history_])
    test_real = aug.reals(args.n_test, "test", 300)
    for i, kind in enumerate(("nearest", "bilinear")):
        s = np.concatenate([det.score(test_real), det.score(aug.fakes(args.n_test, kind, "test", 400 + i))])
        out[f"auc_{kind}"] = round(float(roc_auc_score(np.r_[np.zeros(args.n_test), np.ones(args.n_test)], s)), 4)
    print(json.dumps(out) if args.json else out, flush=True)


if __name__ == "__main__":
    main()
