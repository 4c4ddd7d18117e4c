"""How far a generator's mean radial spectrum is from the real one at step 0 and after training.

For each run folder (``forgelab train --out DIR`` or ``STUDY/generators/NAME``) the generator
is rebuilt exactly as the training loop initialised it (same seed, same config) and compared
with the trained weights (EMA when present), both sampled the same way (eval mode, same
latents), against real images from --data at the run's resolution. Prints a table or --json.

    python benchmarks/spectrum_convergence.py outputs/imagewoof/generators/* --data DIR --n 1000
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from detectors.fidelity import spectral_fidelity
from gans.networks import build_generator
from gans.sampling import generate_tensor, load_generator
from gans.training import TrainConfig
from pipelines.data.images import load_data


def step0_generator(run: Path) -> torch.nn.Module:
    """The generator as the training loop built it before its first step."""
    cfg = TrainConfig.from_dict(json.loads((run / "train_config.json").read_text()))
    torch.manual_seed(cfg.seed)  # gans.training seeds exactly this way before building G
    return build_generator(cfg.arch, cfg.resolution, cfg.upsampler, cfg.upsample_layers,
                           z_dim=cfg.z_dim, width=cfg.width).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", default=os.environ.get("FORGELAB_DATA"), help="real images (folder or 'embedded')")
    ap.add_argument("--n", type=int, default=1000, help="images per set")
    ap.add_argument("--seed", type=int, default=123, help="latent seed (not the training seed)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rows = []
    real_cache: dict[int, torch.Tensor] = {}
    for run in args.runs:
        G, meta = load_generator(run)
        res = meta["resolution"]
        if res not in real_cache:
            real_cache[res] = load_data(args.data, res, limit=args.n).images
        real = real_cache[res]
        before = spectral_fidelity(real, generate_tensor(step0_generator(run), args.n, seed=args.seed))
        after = spectral_fidelity(real, generate_tensor(G, args.n, seed=args.seed))
        rows.append({"run": str(run), "upsampler": meta["upsampler"], "step": meta["step"],
                     "radial_l1_step0": before["radial_l1"], "radial_l1_final": after["radial_l1"],
                     "cloaking_step0": before["cloaking"], "cloaking_final": after["cloaking"]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'run':<40} {'steps':>6} {'radial L1 @0':>13} {'radial L1 final':>16} {'ratio':>6}")
    for r in rows:
        print(f"{Path(r['run']).name:<40} {r['step']:>6} {r['radial_l1_step0']:>13.4f} "
              f"{r['radial_l1_final']:>16.4f} {r['radial_l1_final'] / r['radial_l1_step0']:>6.2f}")


if __name__ == "__main__":
    main()
