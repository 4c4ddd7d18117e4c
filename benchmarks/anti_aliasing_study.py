"""Does anti-aliased upsampling (and alias-free activations) remove the upsampling fingerprint?

Issue 17's reading of the ImageWoof DCGAN-32 CPU study (``configs/imagewoof-dcgan32-cpu.toml``):
for every fake set the study has written so far (``fakes/<name>.npy``), or the ``--names`` given,

* spectral fidelity against the real images the GANs trained on (radial / horizontal / vertical
  L1 of the mean normalised spectra, cloaking score, diversity), computed with the current code;
* the transfer matrix of ``--detectors`` (rows: trained on one generator's fakes, columns: tested
  on each), with the study's protocol: real training images = the GANs' ImageWoof ``train``
  images, real test images = held-out ImageWoof ``val`` images, splits 0.6 / 0.2 / 0.2;
* per detector: the diagonal ROC-AUC of each generator (trained and tested on its own fakes) and
  the mean ROC-AUC with which detectors trained on the classic upsamplers catch each generator.

It loads the real images exactly as the study does (same limit, seed and preprocessing, so the
same images), and writes ``fidelity.md``, ``transfer.md``, ``summary.json`` and figures
(the mean radial spectra and one AUC heatmap per detector) into ``--out``.

    PYTHONPATH=. python benchmarks/anti_aliasing_study.py --study outputs/imagewoof-dcgan32-cpu \\
        --data $FORGELAB_DATA --out outputs/anti-aliasing

``--matrix STUDY/transfer/matrix.csv`` reads a finished study's own transfer matrix (its one-source
rows) instead of fitting the detectors again; ``--detectors`` then defaults to every detector in it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from detectors.diversity import diversity
from detectors.fidelity import spectral_fidelity
from pipelines.data.arrays import load_fakes, mean_spectra
from pipelines.data.images import ImageSet, load_data
from pipelines.evaluation.transfer import run_transfer
from pipelines.report.figures import matrix_figure, radial_figure

CLASSIC = ("transposed", "nearest", "bilinear", "bicubic", "pixelshuffle", "bed_of_nails", "transposed-sd")
DEFAULT_DETECTORS = ("radial:svm", "xy:svm", "fingerprint:deviation", "periodicity:svm")


def _real(data: Path, resolution: int, n_real: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """The study's real images: GAN training images from train/, held-out test images from val/."""
    train = load_data(data / "train", resolution, limit=n_real, seed=seed, preprocess="resize")
    n_test = max(2, round(len(train) * 0.2 / 0.8))  # pipelines.study.run._test_count with fractions 0.6/0.2/0.2
    test = load_data(data / "val", resolution, limit=n_test, seed=seed, preprocess="resize")
    return train, test


def _read_matrix(path: Path, names: list[str]) -> list[dict]:
    """The one-source cells (trained on one of ``names``, tested on one) of a transfer matrix.csv."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["train"] in names and r["test"] in names:
                out.append({**r, "value": float(r["value"])})
    return out


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, type=Path, nargs="+",
                   help="Study folder(s) holding fakes/<name>.npy; a name found in several is read from the first.")
    p.add_argument("--data", default=os.environ.get("FORGELAB_DATA"), help="ImageWoof root (train/ and val/).")
    p.add_argument("--names", default=None, help="Fake sets, comma-separated (default: every fakes/*.npy).")
    p.add_argument("--detectors", default=",".join(DEFAULT_DETECTORS))
    p.add_argument("--n-real", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--matrix", type=Path, default=None,
                   help="A study's transfer/matrix.csv: read its one-source rows instead of refitting the detectors.")
    args = p.parse_args()
    if not args.data:
        p.error("give --data or set FORGELAB_DATA to the ImageWoof folder")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    where: dict[str, Path] = {}
    for folder in args.study:
        for f in sorted((folder / "fakes").glob("*.npy")):
            where.setdefault(f.stem, folder)
    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names else list(where)
    order = [n for n in (*CLASSIC[:3], "sinc", "sinc-af", "transposed-af", *CLASSIC[3:]) if n in names]
    names = order + [n for n in names if n not in order]
    fakes = {n: load_fakes(where.get(n, args.study[0]), n) for n in names}
    resolution = int(next(iter(fakes.values())).shape[-1])
    train, test = _real(Path(args.data), resolution, args.n_real, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    fidelity = {}
    for n, x in fakes.items():
        fidelity[n] = {**spectral_fidelity(train.images, x), "diversity": diversity(x, train.images)["diversity"]}
    fid_md = _table(["generator", "radial L1", "horizontal L1", "vertical L1", "cloaking", "diversity"],
                    [[n, *(f"{fidelity[n][k]:.3f}" for k in ("radial_l1", "x_l1", "y_l1", "cloaking")),
                      f"{fidelity[n]['diversity']:.2f}"] for n in names])
    spectra = {"real": mean_spectra(train.images), **{n: mean_spectra(x) for n, x in fakes.items()}}
    (args.out / "radial.png").write_bytes(radial_figure(spectra, names))

    study_records = _read_matrix(args.matrix, names) if args.matrix else None
    if study_records is not None and args.detectors == ",".join(DEFAULT_DETECTORS):
        args.detectors = ",".join(dict.fromkeys(r["detector"] for r in study_records))
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    summary: dict = {"names": names, "folders": {n: str(where.get(n, args.study[0])) for n in names},
                     "n_fake": {n: len(x) for n, x in fakes.items()}, "fidelity": fidelity, "detectors": {}}
    (args.out / "fidelity.md").write_text(fid_md + "\n", encoding="utf-8")
    if not detectors:  # --detectors "": spectra and fidelity only
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(fid_md)
        return
    fake_sets = {n: ImageSet(images=x, files=[f"{n}#{i}" for i in range(len(x))], source=f"generator:{n}")
                 for n, x in fakes.items()}
    if study_records is not None:
        records = [r for r in study_records if r["detector"] in detectors]
        summary["matrix"] = str(args.matrix)
    else:
        records = run_transfer((train, test), fake_sets, detectors, args.out / "transfer", rows=("each",),
                               seed=args.seed, progress=True)
    auc = {(r["detector"], r["train"], r["test"]): r["value"] for r in records if r["metric"] == "auc"}
    classic = [n for n in names if n in CLASSIC]
    parts = []
    for det in detectors:
        diag = {n: auc[(det, n, n)] for n in names}
        from_classic = {n: float(np.mean(v)) if (v := [auc[(det, c, n)] for c in classic if c != n]) else float("nan")
                        for n in names}
        summary["detectors"][det] = {"diagonal": diag, "from_classic": from_classic}
        (args.out / f"{det.replace(':', '-')}-auc.png").write_bytes(matrix_figure(records, det, "auc", "ROC-AUC"))
        parts.append(f"### {det}\n\n" + _table(
            [r"trained on \ tested on", *names],
            [[a, *(f"{auc[(det, a, b)]:.3f}" for b in names)] for a in names]))
    parts.append("### Summary: diagonal AUC / mean AUC of detectors trained on the classic upsamplers\n\n" + _table(
        ["generator", *detectors],
        [[n, *(f"{summary['detectors'][d]['diagonal'][n]:.3f} / {summary['detectors'][d]['from_classic'][n]:.3f}"
               for d in detectors)] for n in names]))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (args.out / "transfer.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(fid_md, "\n\n" + "\n\n".join(parts), f"\n\n{summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
