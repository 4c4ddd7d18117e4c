"""Lay out the lab's own ImageWoof fakes as a benchmark tree (ForenSynths' flat layout) for ``forgelab bench``.

    python benchmarks/imagewoof_bench_tree.py --data /path/to/imagewoof2-160 --fakes transposed=DIR ... --out TREE

For each fake set (a folder written by ``forgelab generate``, or a study's ``fakes/<name>.npy``):
``train/<name>/1_fake`` and ``test/<name>/1_fake`` take disjoint fakes; ``0_real`` takes disjoint ImageWoof
images (train split for train/, val split for test/), each source its own. The real images are preprocessed as
the generators' training images were (resized to the fakes' resolution) and stored as JPEG at ``--real-quality``,
as benchmarks ship real photos; the fakes stay PNG, as generators write them. So the tree has exactly the codec
difference that ``--align`` removes, and ``--no-align`` shows what it is worth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipelines.data.images import imagewoof_split, load_images


def _fakes(spec: str) -> torch.Tensor:
    path = Path(spec)
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False))
    return load_images(path, _size(path)).images


def _size(folder: Path) -> int:
    first = next(p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".png")
    with Image.open(first) as img:
        return min(img.size)


def _write(images: torch.Tensor, folder: Path, quality: int | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        if quality is None:
            pil.save(folder / f"{i:05d}.png")
        else:
            pil.save(folder / f"{i:05d}.jpg", quality=quality)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="ImageWoof in fast.ai's layout (train/ and val/).")
    ap.add_argument("--fakes", action="append", required=True, help="NAME=FOLDER_OR_NPY (repeat).")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-train", type=int, default=1000, help="Real and fake images per source in train/.")
    ap.add_argument("--n-test", type=int, default=600, help="Real and fake images per source in test/.")
    ap.add_argument("--real-quality", type=int, default=90)
    args = ap.parse_args()
    fakes = {n: _fakes(p) for n, p in (f.split("=", 1) for f in args.fakes)}
    res = next(iter(fakes.values())).shape[-1]
    k = len(fakes)
    train = load_images(imagewoof_split(args.data, "train"), res, limit=k * args.n_train).images
    test = load_images(imagewoof_split(args.data, "val"), res, limit=k * args.n_test).images
    perm_tr = np.random.default_rng(0).permutation(train.shape[0])
    perm_te = np.random.default_rng(1).permutation(test.shape[0])
    out = Path(args.out)
    for i, (name, x) in enumerate(fakes.items()):
        a, b = args.n_train, args.n_test
        if x.shape[0] < a + b:
            raise SystemExit(f"{name} has {x.shape[0]} fakes; {a + b} are needed.")
        _write(train[perm_tr[i * a : (i + 1) * a]], out / "train" / name / "0_real", args.real_quality)
        _write(x[:a], out / "train" / name / "1_fake", None)
        _write(test[perm_te[i * b : (i + 1) * b]], out / "test" / name / "0_real", args.real_quality)
        _write(x[a : a + b], out / "test" / name / "1_fake", None)
    print(f"Wrote {out}: {k} sources, {args.n_train} + {args.n_train} train and {args.n_test} + {args.n_test} test "
          f"images each, {res} px, real JPEG {args.real_quality}, fake PNG.")


if __name__ == "__main__":
    main()
