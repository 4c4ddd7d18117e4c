"""Benchmarks in the field's layouts: detectors trained on some sources of a tree, tested on every source.

A benchmark tree is laid out as ForenSynths (CNNDetection) and UniversalFakeDetect ship theirs::

    ROOT/train/SOURCE/0_real, ROOT/train/SOURCE/1_fake              (flat)
    ROOT/train/SOURCE/CLASS/0_real, ROOT/train/SOURCE/CLASS/1_fake  (one level of classes)
    ROOT/val/...   (optional, same shape)      ROOT/test/...   (every source is a column)

Protocol (:func:`run_bench`; the machinery is :mod:`pipelines.evaluation.protocol`, shared with transfer):

- **Rows.** Each ``--train`` group is one row: ``A`` fits on ``train/A``, ``A,B`` on the union of
  ``train/A`` and ``train/B`` (equal real and fake counts, the same number of fakes from each
  source, as in the transfer matrix; a detector that can be fitted on real images alone, i.e.
  ``deviation``, gets every real training image beside those fakes:
  :func:`~pipelines.evaluation.protocol.training_images`); ``--model DIR`` rows evaluate a
  detector fitted earlier.
- **Calibration.** The threshold of a fitted row is chosen (balanced accuracy) on ``val/SOURCE``
  when every source of the row has one, else on a stratified ``val_fraction`` of its training
  images (drawn per repeat); a ``--model`` row keeps the threshold it was saved with.
- **Columns.** Every source under ``test/``: all of its real and all of its fake images, classes
  pooled, as the field reports a generator. A **Mean** column averages each metric over the
  sources (the field's "mean" row).
- **Metrics** (``detectors.metrics.bench_metrics``): AP, ROC-AUC; accuracy at 0.5 overall and on
  real and fake images apart; the same three at the calibrated threshold; and the *oracle*
  accuracy, the best accuracy of any threshold chosen on the test scores themselves (named
  "oracle" wherever it appears, never a default: no detector can choose it for an unseen source).
- **Formats.** With ``align`` (the default of ``forgelab bench``) the images are native crops on
  the JPEG grid and, if any set is JPEG, every set is re-encoded at one quality
  (:mod:`pipelines.data.align`); otherwise they are loaded with ``preprocess`` as in ``transfer``.
- **Sweeps.** Conditions such as ``jpeg=75``, ``blur=1`` or ``resize=0.5`` perturb the real and
  fake *test* images alike (after alignment; training untouched) and every metric is computed per
  condition; the unperturbed condition is ``none``. See :func:`sweep_perturb`.
- **Seeds, resume, jobs.** As in transfer: ``seeds=K`` repeats every fitted row with the seeds
  ``seed..seed+K-1`` (its own calibration split and classifier seed; the test sets are the
  benchmark's, fixed), each (detector, row, repeat) is one cell saved under ``cells/`` with a
  hash of everything it depends on, and ``jobs`` cells run at once in worker processes.

Outputs (:mod:`pipelines.evaluation.bench_outputs`): ``results.csv`` (``detector, train, test, condition,
metric, value`` and ``sd, n`` when K > 1; ``test`` is a source or ``Mean``), ``repeats.csv``,
``results.json``, ``report.html`` with its figures in ``figures/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detectors.detector import Detector, supports_real_only
from detectors.metrics import BENCH_METRICS, bench_metrics
from pipelines.data.align import AlignPlan, apply_alignment, plan_alignment
from pipelines.data.images import (
    IMAGE_EXTENSIONS,
    ImageSet,
    check_preprocess,
    list_images,
    load_images,
    split_indices,
)
from pipelines.data.parity import SetFormat, file_format
from pipelines.evaluation.protocol import (
    Column,
    TestFeatures,
    balanced,
    cached_cell,
    cell_path,
    derive_seed,
    fit_detector,
    pool_repeats,
    reals_note,
    run_cells,
    score_columns,
    training_images,
    unique_specs,
)
from pipelines.names import REAL_ONLY, SWEEP_KINDS
from plumbing.digests import json_digest, tensor_digest
from plumbing.files import write_json

CELL_VERSION = 1
SPLITS = ("train", "val", "test")
REAL_DIR, FAKE_DIR = "0_real", "1_fake"
MEAN = "Mean"
CLEAN = "none"  # the unperturbed condition
MAX_DEFAULT_RESOLUTION = 256
LAYOUT_HINT = (f"lay each source out as SOURCE/{REAL_DIR} + SOURCE/{FAKE_DIR} "
               f"or SOURCE/CLASS/{REAL_DIR} + SOURCE/CLASS/{FAKE_DIR}")


# ---------------------------------------------------------------------------------------------
# The tree


@dataclass
class Source:
    """One source of one split: its (class, real folder, fake folder) parts ("" for the flat layout)."""

    name: str
    split: str
    parts: list[tuple[str, Path, Path]]

    @property
    def layout(self) -> str:
        return "flat" if self.parts and self.parts[0][0] == "" else "classes"


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _pair(folder: Path) -> tuple[Path, Path] | None:
    """(0_real, 1_fake) of ``folder``; None when it holds neither; an error when it holds one only."""
    real, fake = folder / REAL_DIR, folder / FAKE_DIR
    if real.is_dir() and fake.is_dir():
        return real, fake
    if real.is_dir() or fake.is_dir():
        have, miss = (REAL_DIR, FAKE_DIR) if real.is_dir() else (FAKE_DIR, REAL_DIR)
        raise ValueError(f"{folder} has {have}/ but no {miss}/; every source (or class) needs both.")
    return None


def scan_source(folder: Path, split: str) -> Source:
    """The parts of one source folder, in either layout, with an error naming the folder when it fits neither."""
    pair = _pair(folder)
    if pair is not None:
        parts = [("", *pair)]
    else:
        parts = []
        for sub in _visible_dirs(folder):
            p = _pair(sub)
            if p is None:
                raise ValueError(f"{sub} holds no {REAL_DIR}/ and {FAKE_DIR}/; {LAYOUT_HINT}.")
            parts.append((sub.name, *p))
        if not parts:
            raise ValueError(f"{folder} holds neither {REAL_DIR}/ and {FAKE_DIR}/ nor class folders with them; "
                             f"{LAYOUT_HINT}.")
    for _, real, fake in parts:
        for d in (real, fake):
            if not list_images(d):
                raise ValueError(f"{d} holds no images; put files ending in {', '.join(IMAGE_EXTENSIONS)} in it "
                                 "or remove the source.")
    return Source(folder.name, split, parts)


def scan_tree(root: str | os.PathLike) -> dict[str, dict[str, Source]]:
    """``{split: {source: Source}}`` of a benchmark tree (``val`` may be empty), checked for the two layouts."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Benchmark folder {root} does not exist; pass the folder that holds train/ and test/.")
    tree: dict[str, dict[str, Source]] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            if split == "val":
                tree[split] = {}
                continue
            raise FileNotFoundError(f"{root} holds no {split}/ folder; lay it out as ROOT/train/SOURCE/... and "
                                    f"ROOT/test/SOURCE/... ({LAYOUT_HINT}).")
        sources = {d.name: scan_source(d, split) for d in _visible_dirs(folder)}
        if not sources and split != "val":
            raise ValueError(f"{folder} holds no source folders; {LAYOUT_HINT}.")
        tree[split] = sources
    return tree


def parse_train(groups: Sequence[str], available: Sequence[str]) -> dict[str, list[str]]:
    """Row name -> training sources, one row per ``--train`` (``A,B`` is one row on the union).

    ``real-only:A,B`` is a row fitted on the *real* images of those sources alone (no fake), by the
    detectors that can be (:func:`detectors.detector.supports_real_only`); the others skip it.
    """
    rows: dict[str, list[str]] = {}
    for g in groups:
        g = str(g)
        real_only = g == REAL_ONLY or g.startswith(REAL_ONLY + ":")
        if real_only:
            g = g[len(REAL_ONLY) + 1:]
            if not g.strip():
                raise ValueError(f"--train {REAL_ONLY} needs the sources whose real images to fit on, e.g. "
                                 f"--train {REAL_ONLY}:{available[0] if available else 'SOURCE'}.")
        names = [n.strip() for n in g.split(",") if n.strip()]
        if not names:
            raise ValueError(f"--train {g!r} names no source; choose from: {', '.join(available)}.")
        for n in names:
            if n not in available:
                raise ValueError(f"No training source {n!r} under train/; available: {', '.join(available)}.")
        row = (f"{REAL_ONLY}:" if real_only else "") + "+".join(names)
        if row in rows:
            raise ValueError(f"--train {g!r} is given twice; give each training row once.")
        rows[row] = names
    return rows


def parse_sweeps(items: Sequence[str]) -> list[tuple[str, float]]:
    """``["jpeg=100,95", "blur=0,1"]`` -> ``[("jpeg", 100), ("jpeg", 95), ("blur", 0), ("blur", 1)]``, validated."""
    out: list[tuple[str, float]] = []
    for item in items:
        kind, sep, values = str(item).partition("=")
        kind = kind.strip()
        if not sep or kind not in SWEEP_KINDS:
            raise ValueError(f"--sweep {item!r} must look like KIND=V1,V2,... with KIND one of {', '.join(SWEEP_KINDS)}, "
                             "e.g. jpeg=100,95,90,75,50.")
        for v in values.split(","):
            try:
                x = float(v)
            except ValueError:
                raise ValueError(f"--sweep {item!r}: {v!r} is not a number.") from None
            if kind == "jpeg" and not (x == int(x) and 1 <= x <= 100):
                raise ValueError(f"--sweep {item!r}: JPEG quality {v} must be an integer between 1 and 100.")
            if kind == "blur" and not (np.isfinite(x) and x >= 0):
                raise ValueError(f"--sweep {item!r}: blur sigma {v} must be 0 or more pixels.")
            if kind == "resize" and not (np.isfinite(x) and 0 < x <= 8):
                raise ValueError(f"--sweep {item!r}: resize factor {v} must be above 0 and at most 8.")
            cond = (kind, int(x) if kind == "jpeg" else x)
            if cond not in out:
                out.append(cond)
    return out


def condition_name(kind: str, value: float) -> str:
    """``jpeg=75``, ``blur=1``, ``resize=0.5``."""
    return f"{kind}={value:g}"


def sweep_perturb(images: torch.Tensor, kind: str, value: float) -> torch.Tensor:
    """One robustness condition applied to a uint8 (N, 3, R, R) batch; the result is R x R again.

    ``jpeg=Q`` re-encodes at quality Q; ``blur=S`` is a Gaussian blur of sigma S pixels (0: none);
    ``resize=F`` scales by F with antialiasing: below 1 down and back up to R (detail lost, as in
    ``pipelines.data.images.perturb``), above 1 up to ``round(F * R)`` and the centred R x R crop (the
    detector meets upsampled content), 1 leaves the images as they are.
    """
    from detectors import augment

    if kind == "jpeg":
        return augment.jpeg(images, int(value))
    if kind == "blur":
        return images if value == 0 else augment.blur(images, float(value))
    if kind == "resize":
        if value == 1:
            return images
        h, w = images.shape[-2:]
        size = (max(1, round(h * value)), max(1, round(w * value)))
        x = torch.nn.functional.interpolate(images.float(), size=size, mode="bilinear", antialias=True,
                                            align_corners=False)
        if value < 1:
            x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        else:
            y0, x0 = (size[0] - h) // 2, (size[1] - w) // 2
            x = x[..., y0 : y0 + h, x0 : x0 + w]
        return x.round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"Unknown sweep kind {kind!r}; choose one of: {', '.join(SWEEP_KINDS)}.")


# ---------------------------------------------------------------------------------------------
# Formats and loading


def read_formats(tree: dict[str, dict[str, Source]], workers: int = 8) -> dict[tuple[str, str, str], list]:
    """File formats (headers only) of every image, by (split, source, "real" | "fake")."""
    jobs: dict[tuple[str, str, str], list[Path]] = {}
    for split, sources in tree.items():
        for name, src in sources.items():
            for _, real, fake in src.parts:
                jobs.setdefault((split, name, "real"), []).extend(list_images(real))
                jobs.setdefault((split, name, "fake"), []).extend(list_images(fake))
    out = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for key, files in jobs.items():
            out[key] = [f for f in pool.map(file_format, files) if f is not None]
    return out


def set_format(name: str, formats: list) -> SetFormat:
    """A SetFormat from every file's format (not a sample: the alignment needs the lowest quality)."""
    s = SetFormat(name)
    for f in formats:
        s.add(f)
    return s


def default_resolution(formats: dict[tuple[str, str, str], list], cap: int = MAX_DEFAULT_RESOLUTION) -> int:
    """The smallest native shorter side of any image, at most ``cap``."""
    sides = [min(f.width, f.height) for fs in formats.values() for f in fs]
    if not sides:
        raise ValueError("No readable image in the benchmark tree; check the files.")
    return int(min(min(sides), cap))


@dataclass
class LoadedSet:
    """The real and fake images of one source of one split (classes pooled), as the detector sees them."""

    real: torch.Tensor
    fake: torch.Tensor
    skipped: list[tuple[str, str]] = field(default_factory=list)
    digest: str = ""


def load_source(src: Source, resolution: int, preprocess: str, plan: AlignPlan | None, *, limit: int | None = None,
                cache: bool = True, progress: bool = False) -> LoadedSet:
    """Decode a source's real and fake folders (every class) at ``resolution``, aligned by ``plan``."""
    reals, fakes, skipped = [], [], []
    for _, real_dir, fake_dir in src.parts:
        for d, bucket in ((real_dir, reals), (fake_dir, fakes)):
            s: ImageSet = load_images(d, resolution, limit=limit, preprocess=preprocess, cache=cache, progress=progress)
            bucket.append(s.images)
            skipped += s.skipped
    real, fake = torch.cat(reals), torch.cat(fakes)
    for what, x in (("real", real), ("fake", fake)):
        if x.shape[0] == 0:
            raise ValueError(f"No {what} image of {src.split}/{src.name} could be read at {resolution} px "
                             f"({len(skipped)} skipped); pass a smaller --resolution or check the files.")
    real, fake = apply_alignment(real, plan), apply_alignment(fake, plan)
    return LoadedSet(real, fake, skipped, tensor_digest(real) + tensor_digest(fake))


# ---------------------------------------------------------------------------------------------
# Cells


@dataclass(frozen=True)
class BenchCell:
    """One (detector, row, repeat) of a bench and everything it needs (picklable for workers).

    ``train``/``val`` hold the row's balanced training and calibration images (empty for a
    ``--model`` row, which loads ``model``); ``tests`` maps condition -> column -> Column.
    """

    spec: str
    options: dict[str, Any]
    row: str
    sources: list[str]
    train: tuple[torch.Tensor, torch.Tensor] | None
    val: tuple[torch.Tensor, torch.Tensor] | None
    calibration: str
    tests: dict[str, dict[str, Column]]
    out: Path
    base: dict[str, Any]
    seed: int
    repeat: int = 0
    model: str | None = None


def _scores_json(x: np.ndarray) -> list[float]:
    return [float(v) for v in x]  # full precision: the table can be recomputed from the saved scores


def is_real_only_row(row: str) -> bool:
    """Whether a bench row is fitted on real images alone (``--train real-only:SOURCES``)."""
    return row.startswith(REAL_ONLY + ":")


def _count(x: torch.Tensor | None) -> int:
    return 0 if x is None else int(x.shape[0])


def compute_bench_cell(c: BenchCell, feats: TestFeatures | None = None) -> dict[str, Any]:
    """Fit (or load) the cell's detector and evaluate it on every column under every condition (or reuse the saved cell)."""
    feats = feats or TestFeatures()
    config_hash = json_digest({**c.base, "detector": c.spec, "options": c.options, "row": c.row,
                               "sources": c.sources, "seed": c.seed, "model": c.model,
                               **({} if c.model else reals_note(c.spec, c.sources))})
    path = cell_path(c.out, c.spec, c.row, c.repeat)
    cell = cached_cell(path, config_hash)
    if cell is not None:
        return cell
    if c.model is not None:
        det, fit_s = Detector.load(c.model), 0.0
    else:
        assert c.train is not None and c.val is not None
        det, fit_s = fit_detector(c.spec, c.options, c.seed, *c.train, *c.val)
    results, scores = {}, {}
    for cond, columns in c.tests.items():
        results[cond], s = score_columns(det, feats, columns, bench_metrics)
        if cond == CLEAN:
            scores = {n: {"real": _scores_json(r), "fake": _scores_json(f)} for n, (r, f) in s.items()}
    cell = {
        "config_hash": config_hash,
        "detector": c.spec,
        "train": c.row,
        "sources": c.sources,
        "seed": c.seed,
        "calibration": c.calibration,
        "threshold": float(det.threshold),
        "n_train": None if c.train is None else {"real": int(c.train[0].shape[0]), "fake": _count(c.train[1])},
        "n_val": None if c.val is None else {"real": int(c.val[0].shape[0]), "fake": _count(c.val[1])},
        "fit_seconds": round(fit_s, 3),
        "results": results,  # condition -> test source -> metric -> value
        "scores": scores,  # test source -> real / fake -> scores (condition "none")
    }
    write_json(path, cell)
    return cell


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class BenchData:
    """A loaded benchmark: its training and test sets, the alignment and what was read."""

    train: dict[str, LoadedSet]
    val: dict[str, LoadedSet]
    test: dict[str, LoadedSet]
    resolution: int
    preprocess: str
    plan: AlignPlan | None
    layouts: dict[str, str]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [s for part in (self.train, self.val, self.test) for ls in part.values() for s in ls.skipped]


def load_bench(root: str | os.PathLike, train_sources: Sequence[str], *, resolution: int | None = None,
               align: bool = True, preprocess: str = "crop", max_quality: int | None = None, limit: int | None = None,
               cache: bool = True, progress: bool = False) -> BenchData:
    """Scan, check, plan the alignment of and load the parts of a benchmark tree that a run needs."""
    tree = scan_tree(root)
    need = list(dict.fromkeys(train_sources))
    parse_train(need, list(tree["train"]))  # an unknown source stops here, naming the available ones
    # Only the sets this run reads: ForenSynths' train/ alone holds 720,000 images.
    used = {"train": {n: tree["train"][n] for n in need}, "val": {n: tree["val"][n] for n in need if n in tree["val"]},
            "test": tree["test"]}
    formats = read_formats(used)
    if resolution is None:
        resolution = default_resolution(formats)
    mode = "align" if align else check_preprocess(preprocess)
    plan = None
    if align:
        plan = plan_alignment({f"{split}/{name}/{kind}": set_format(f"{split}/{name}/{kind}", fs)
                               for (split, name, kind), fs in formats.items()}, max_quality)

    def load(part: dict[str, Source], names) -> dict[str, LoadedSet]:
        return {n: load_source(part[n], resolution, mode, plan, limit=limit, cache=cache, progress=progress)
                for n in names}

    train = load(tree["train"], need)
    val = load(tree["val"], [n for n in need if n in tree["val"]])
    test = load(tree["test"], list(tree["test"]))
    layouts = {f"{split}/{n}": s.layout for split, part in tree.items() for n, s in part.items()}
    return BenchData(train, val, test, int(resolution), mode, plan, layouts)


def _carve(ls: LoadedSet, fraction: float, seed: int, name: str) -> tuple[LoadedSet, LoadedSet]:
    """(train, validation) of one source's training images: a stratified ``fraction`` held out, by seed."""
    parts = []
    for kind, x in (("real", ls.real), ("fake", ls.fake)):
        tr, va = split_indices(x.shape[0], (1 - fraction, fraction), derive_seed(seed, name, kind, "calibration"))
        if len(tr) < 2 or len(va) < 2:
            raise ValueError(f"train/{name} has too few {kind} images ({x.shape[0]}) to hold out a calibration split; "
                             "give more images or add a val/ folder.")
        parts.append((x[tr], x[va]))
    (rt, rv), (ft, fv) = parts
    return LoadedSet(rt, ft), LoadedSet(rv, fv)


def run_bench(data: BenchData, detectors: Sequence[str], out_dir: str | os.PathLike, *,
              rows: dict[str, list[str]] | None = None, models: Sequence[str | os.PathLike] = (),
              sweeps: Sequence[tuple[str, float]] = (), seed: int = 0, seeds: int = 1, jobs: int = 1,
              val_fraction: float = 0.2, progress: bool = False,
              detector_options: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Fit every detector on every row, test it on every source under every condition; write and return the results.

    Returns ``{"records", "per_repeat", "cells", "columns", "conditions", "rows"}``; records are
    ``{detector, train, test, condition, metric, value}`` (plus ``sd``, ``n`` when ``seeds`` > 1),
    with ``test`` = ``Mean`` for the mean over sources.
    """
    from pipelines.evaluation.bench_outputs import write_bench_outputs

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}.")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer (the number of repeats), got {seeds!r}.")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction!r}.")
    rows = dict(rows or {})
    if not rows and not models:
        raise ValueError("Nothing to evaluate; pass --train SOURCE (to fit) or --model DIR (a fitted detector).")
    specs = unique_specs(detectors)
    if rows and not specs:
        raise ValueError("No detectors given; pass at least one --detector FEATURE:CLASSIFIER, e.g. radial:svm.")
    options = dict(detector_options or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    columns = list(data.test)
    conditions = [CLEAN] + [condition_name(k, v) for k, v in sweeps]
    # Perturbed test sets, once per condition and set (every cell reuses them).
    tests: dict[str, dict[str, Column]] = {}
    for cond, sweep in zip(conditions, [None, *sweeps], strict=True):
        tests[cond] = {}
        for n in columns:
            ls = data.test[n]
            real, fake = (ls.real, ls.fake) if sweep is None else (sweep_perturb(ls.real, *sweep),
                                                                   sweep_perturb(ls.fake, *sweep))
            tag = "" if sweep is None else f"|{cond}"
            tests[cond][n] = Column(f"{n}/real{tag}", real, f"{n}/fake{tag}", fake)

    base = {
        "version": CELL_VERSION,
        "resolution": data.resolution,
        "preprocess": data.preprocess,
        "align": data.plan.as_dict() if data.plan else None,
        "conditions": conditions,
        "test": {n: data.test[n].digest for n in columns},
        "val_fraction": val_fraction,
    }
    seed_list = [seed + r for r in range(seeds)]
    model_rows = {}
    for m in models:
        det = Detector.load(m)
        if det.resolution is not None and tuple(det.resolution) != (data.resolution, data.resolution):
            raise ValueError(f"The detector in {m} was fitted at {det.resolution[0]} px but the bench runs at "
                             f"{data.resolution} px; pass --resolution {det.resolution[0]}.")
        model_rows[f"model:{Path(m).name}"] = (str(Path(m).resolve()), f"{det.feature}:{det.classifier_name}")

    cells: list[BenchCell] = []
    for k, s in enumerate(seed_list):
        for spec in specs:
            for row, srcs in rows.items():
                alone = is_real_only_row(row)
                if alone and not supports_real_only(spec):
                    continue  # a detector that needs fakes has no cell in a real-only row
                have_val = all(n in data.val for n in srcs)
                trains, vals = [], []
                for n in srcs:
                    if have_val:
                        trains.append(data.train[n])
                        vals.append(data.val[n])
                    else:
                        tr, va = _carve(data.train[n], val_fraction, s, n)
                        trains.append(tr)
                        vals.append(va)
                if alone:  # every real training image of the sources, no fake
                    tr = (torch.cat([t.real for t in trains]), None)
                    va = (torch.cat([v.real for v in vals]), None)
                else:
                    tr = training_images(spec, torch.cat([t.real for t in trains]), [t.fake for t in trains], s, row,
                                         "train")
                    va = balanced(torch.cat([v.real for v in vals]), [v.fake for v in vals], s, row, "val")
                calibration = "val/" + ",".join(srcs) if have_val else f"{val_fraction:g} of train/{','.join(srcs)}"
                digests = {n: data.train[n].digest + (data.val[n].digest if have_val else "") for n in srcs}
                cells.append(BenchCell(spec, dict(options.get(spec, {})), row, srcs, tr, va, calibration, tests, out,
                                       {**base, "train": digests}, s, k))
        if k == 0:  # a fitted model is the same in every repeat
            for row, (path, spec) in model_rows.items():
                cells.append(BenchCell(spec, {}, row, [], None, None, "saved with the model", tests, out,
                                       {**base, "model_files": _model_digest(Path(path))}, seed, 0, path))

    for row in rows:
        if is_real_only_row(row) and specs and not any(supports_real_only(sp) for sp in specs):
            raise ValueError(f"No detector of {', '.join(specs)} can be fitted on real images alone for the row {row!r}; "
                             "add one whose classifier can (e.g. fingerprint:deviation, see `forgelab detect list`).")

    def label(c: BenchCell) -> str:
        return f"{c.spec} · {c.row}" + (f" · seed {c.seed}" if seeds > 1 else "")

    done = run_cells(cells, compute_bench_cell, lambda c: (c.spec, c.row, c.repeat), label, jobs=jobs,
                     progress=progress, title="Bench")
    records, per_repeat = aggregate_bench(done, columns, conditions, seed_list)
    all_rows = list(rows) + list(model_rows)
    row_sources = {**rows, **{r: [p] for r, (p, _) in model_rows.items()}}
    specs_all = list(dict.fromkeys(specs + [spec for _, spec in model_rows.values()]))
    sizes = {
        "resolution": data.resolution,
        "train": {n: {"real": int(v.real.shape[0]), "fake": int(v.fake.shape[0])} for n, v in data.train.items()},
        "val": {n: {"real": int(v.real.shape[0]), "fake": int(v.fake.shape[0])} for n, v in data.val.items()},
        "test": {n: {"real": int(v.real.shape[0]), "fake": int(v.fake.shape[0])} for n, v in data.test.items()},
    }
    result = {"records": records, "per_repeat": per_repeat, "cells": done, "columns": columns,
              "conditions": conditions, "rows": all_rows, "row_sources": row_sources, "detectors": specs_all,
              "sizes": sizes, "align": data.plan.as_dict() if data.plan else None, "seeds": seed_list,
              "layouts": data.layouts, "sweeps": [list(s) for s in sweeps], "preprocess": data.preprocess}
    write_bench_outputs(out, result)
    return result


def _model_digest(folder: Path) -> str:
    from pipelines.runfolder import fingerprint_files

    files = [p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"]
    return fingerprint_files(files)


def aggregate_bench(cells: dict[tuple, dict[str, Any]], columns: Sequence[str], conditions: Sequence[str],
                    seeds: Sequence[int]) -> tuple[list[dict], list[dict]]:
    """(records, per-repeat records) of every (detector, row) over its repeats, with the Mean over sources.

    A ``--model`` row has one repeat whatever ``seeds`` is, so its records carry no ``sd``.
    """
    fields = ("detector", "train", "test", "condition", "metric")
    pairs = list(dict.fromkeys((spec, row) for spec, row, _ in cells))
    records, per_repeat = [], []
    for spec, row in pairs:
        reps = [cells[(spec, row, r)] for r in range(len(seeds)) if (spec, row, r) in cells]
        rep_seeds = [int(c["seed"]) for c in reps]
        runs: dict[tuple, list[float]] = {}
        for cond in conditions:
            for metric in BENCH_METRICS:
                per_source = np.array([[c["results"][cond][t][metric] for t in columns] for c in reps], dtype=np.float64)
                for j, t in enumerate(columns):
                    runs[(spec, row, t, cond, metric)] = per_source[:, j].tolist()
                runs[(spec, row, MEAN, cond, metric)] = per_source.mean(axis=1).tolist()
        r, p = pool_repeats(runs, fields, rep_seeds)
        records += r
        per_repeat += p
    return records, per_repeat
