"""Transfer matrices: train a detector on some fake sources, test it on every fake source.

Protocol (one matrix per detector):

- **Splits.** REAL and every fake source are one :class:`~pipelines.data.images.ImageSet`, split into
  train / validation / test by ``fractions`` and a seed derived from ``seed`` and the source's
  name, or a ``(train, test)`` pair whose validation split is carved from train in the
  proportion ``fractions[1] : fractions[0]``.
- **Perturbation.** ``jpeg=Q`` compresses every image of every split of real and fake alike
  (training and test; the detector meets compressed images throughout, as in Wang et al.'s
  robustness protocol where training and test see the same post-processing).
- **Balance.** Real and fake counts are equal in every split, with one exception: a detector that
  can be fitted on real images alone (``deviation``, a density model of the reals) trains on
  every real training image beside the same fakes (:func:`~pipelines.evaluation.protocol.training_images`). Test: one real test set of
  ``n`` images, the same in every column, and ``n`` fakes of each source, where ``n`` is the
  smallest test split. Rows that train on several sources (``all``, ``loo:X``) take ``m``
  images from each source and ``m * K`` real ones, ``m`` as large as the smallest source and
  the real split allow. Subsets are drawn with seeds derived from ``seed``.
- **Rows.** ``each``: one row per fake source; ``all``: the union of every source; ``loo``:
  one row ``loo:X`` per source X, trained on all sources but X; ``real-only``: no fake source —
  detectors whose classifier declares ``supports_real_only`` are fitted on the real training
  split alone (all of it, not a balanced subset; validation on the real validation split) and
  tested on every column; other detectors have no cell in that row. **Columns**: every source.
- **Cells.** A detector is fitted once per row (threshold chosen on the row's validation
  split) and scores every column; test features are computed once per feature and reused by
  every row and detector that shares it. Each cell holds ``detectors.metrics.evaluate``'s
  metrics: AP, ROC-AUC, accuracy at 0.5, accuracy at the validation threshold, EER, TPR at 5 % FPR.
- **Seeds.** ``seeds=K`` repeats the whole protocol K times, repeat ``r`` with the seed
  ``seed + r``: every repeat draws its own train / validation / test splits of every source
  given as one ImageSet, its own balanced and test subsets, and seeds the classifier with its
  seed. A source given as a ``(train, test)`` pair (what studies do for the real images, whose
  test images are held out from GAN training) keeps its test side fixed: each repeat redraws
  only the train / validation split of its train side and the ``n`` test images it takes from
  the test side (a new subset when the test side holds more than ``n``, the same images when it
  holds exactly ``n``). So for pairs the sd covers the classifier's seed, the training subsets
  and the test subset drawn from the fixed pool, not the choice of that pool. Each matrix
  value is the mean over the K repeats, with the sample standard deviation (``ddof=1``) beside it;
  with K=1 there is no standard deviation and the run is exactly the single-seed protocol (the
  same numbers, files and cells as before seeds existed). Repeat 0 of ``--seed S --seeds K`` is
  the ``--seed S`` run, so raising K reuses the finished cells.
- **Resume.** Each (detector, row, repeat) is saved as ``cells/<detector>/<row>.json`` (repeat 0)
  or ``cells/<detector>/repeat-<r>/<row>.json`` with a hash of everything it depends on (image
  contents, splits, seed, perturbation, and the code versions of :func:`cell_code_version`); a
  rerun skips cells whose hash matches.
- **Attribution.** With ``attribute=True`` each detector whose classifier can tell sources apart
  (not the binary ``deviation``, which is left out) is also fitted as one multi-class
  model (real + every source, Yu et al. 2019); its confusion matrix on the test splits is
  written as CSV and PNG. With K seeds it is fitted once per repeat; the confusion counts are
  summed over the repeats and the accuracy is their mean (with ``accuracy_sd`` and ``n``).

Outputs (written by ``pipelines.evaluation.transfer_outputs``, which documents the columns):
``matrix.csv`` (``detector, train, test, metric, value``, plus ``sd, n`` when K > 1; ``value`` is
the mean over repeats), ``repeats.csv`` (one row per repeat: ``detector, train, test, metric,
repeat, seed, value``), ``matrix.json``, ``heatmaps/<detector>_<metric>.png`` of the means
(``:`` in a detector name becomes ``-``) and, with attribution, ``attribution/<detector>.csv|png``
and ``attribution.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from detectors.detector import Detector, supports_attribution, supports_real_only
from detectors.metrics import evaluate
from pipelines.data.images import ImageSet, perturb, split_indices
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
    sample_indices,
    score_columns,
    training_images,
    unique_specs,
)
from pipelines.evaluation.transfer_outputs import write_attribution, write_outputs
from pipelines.names import NAME_RULE, REAL_ONLY, RESERVED_NAMES, ROW_KINDS, is_plain_name
from plumbing.digests import json_digest, tensor_digest
from plumbing.files import write_json

CELL_VERSION = 1
# Versions of the code a cell's numbers come from, in every cell's hash, so that a resumed matrix
# recomputes the cells an older feature or classifier computed instead of reusing them.
# CELL_CODE_VERSION covers the protocol and evaluation; bump a feature's or classifier's entry
# (absent: 1) when its code changes what it computes. Version 2: cells before code versions.
CELL_CODE_VERSION = 2
FEATURE_CODE_VERSIONS: dict[str, int] = {}
CLASSIFIER_CODE_VERSIONS: dict[str, int] = {"nprnet": 2}  # 2: the NPR code's stem at every size (issue 16)


def cell_code_version(spec: str) -> dict[str, int]:
    """The code versions a ``FEATURE:CLASSIFIER`` cell depends on (part of its hash)."""
    feature, classifier = spec.split(":", 1)
    return {"cell": CELL_CODE_VERSION, "feature": FEATURE_CODE_VERSIONS.get(feature, 1),
            "classifier": CLASSIFIER_CODE_VERSIONS.get(classifier, 1)}

SetSpec = ImageSet | tuple[ImageSet, ImageSet]


@dataclass
class Splits:
    """One source's train / validation / test images (already perturbed)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    digest: str


ATTRIBUTION = "@attribution"  # the task name of a detector's multi-class attribution model


@dataclass(frozen=True)
class TransferCell:
    """One (detector, row, repeat) of a transfer run and everything fitting it needs (picklable for workers).

    ``row`` is a row name (``nearest``, ``all``, ``loo:nearest``) or ``ATTRIBUTION``; ``sources``
    are the fake sources the row trains on (every source for attribution); ``names`` are the
    columns; ``base`` is what every cell's hash shares (data digests, seed, split, perturbation);
    ``real``, ``fakes`` and the test sets are those of the cell's repeat.
    """

    spec: str
    options: dict[str, Any]
    row: str
    sources: list[str]
    names: list[str]
    real: Splits
    fakes: dict[str, Splits]
    real_test: torch.Tensor
    fake_test: dict[str, torch.Tensor]
    out: Path
    base: dict[str, Any]
    seed: int
    repeat: int = 0  # which of the K repeats (its seed is ``seed``)

    @property
    def attribution(self) -> bool:
        return self.row == ATTRIBUTION



def check_source_name(name: str) -> str:
    """Return ``name`` if it can name a fake source (and a file), else raise a ValueError."""
    if not is_plain_name(name):
        raise ValueError(f"Fake source name {name!r} must {NAME_RULE}.")
    if name in RESERVED_NAMES:
        raise ValueError(f"Fake source name {name!r} is reserved; choose another name.")
    return name


def parse_rows(rows: str | Iterable[str]) -> list[str]:
    """Row kinds from ``"each,all"`` or a list (repeats and order kept once), validated."""
    items = [rows] if isinstance(rows, str) else list(rows)
    out: list[str] = []
    for item in items:
        for r in str(item).split(","):
            r = r.strip()
            if not r:
                continue
            if r not in ROW_KINDS:
                raise ValueError(f"Unknown row kind {r!r}; choose from: {', '.join(ROW_KINDS)}.")
            if r not in out:
                out.append(r)
    if not out:
        raise ValueError(f"No rows asked for; choose one or more of: {', '.join(ROW_KINDS)}.")
    return out


def row_sources(rows: Sequence[str], names: Sequence[str]) -> dict[str, list[str]]:
    """Row name -> the fake sources it trains on, for the row kinds asked for."""
    out: dict[str, list[str]] = {}
    for kind in rows:
        if kind == "each":
            out.update({n: [n] for n in names})
        elif kind == "all":
            out["all"] = list(names)
        elif kind == REAL_ONLY:
            out[REAL_ONLY] = []
        elif kind == "loo":
            if len(names) < 2:
                raise ValueError("Leave-one-out rows need at least two fake sources; add --fake sets or drop 'loo'.")
            out.update({f"loo:{n}": [m for m in names if m != n] for n in names})
    return out


def _check_set(s: Any, what: str) -> ImageSet:
    if not isinstance(s, ImageSet):
        raise TypeError(f"{what} must be an ImageSet (from pipelines.data.images), got {type(s).__name__}.")
    if s.images.dtype != torch.uint8 or s.images.ndim != 4 or s.images.shape[1] != 3:
        raise ValueError(f"{what} must hold uint8 images of shape (N, 3, R, R), got {tuple(s.images.shape)} {s.images.dtype}.")
    return s


def make_splits(spec: SetSpec, name: str, fractions: Sequence[float], seed: int,
                jpeg: int | None = None) -> Splits:
    """Split one source (an ImageSet or a (train, test) pair) into train / val / test, perturbed alike."""
    fr = [float(f) for f in fractions]
    if len(fr) != 3:
        raise ValueError(f"fractions must be three numbers train,val,test summing to 1, got {fractions}.")
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(f"{name} must be one ImageSet or a (train, test) pair, got {len(spec)} sets.")
        train_set, test_set = (_check_set(s, f"{name} ({w})") for s, w in zip(spec, ("train", "test"), strict=True))
        if fr[0] + fr[1] <= 0:
            raise ValueError("fractions for train and validation must not both be 0.")
        tr, va = split_indices(len(train_set), (fr[0] / (fr[0] + fr[1]), fr[1] / (fr[0] + fr[1])), derive_seed(seed, name, "split"))
        train, val, test = train_set.images[tr], train_set.images[va], test_set.images
        digest = tensor_digest(train_set.images) + tensor_digest(test_set.images)
    else:
        s = _check_set(spec, name)
        tr, va, te = split_indices(len(s), fr, derive_seed(seed, name, "split"))
        train, val, test = s.images[tr], s.images[va], s.images[te]
        digest = tensor_digest(s.images)
    for part, x in (("train", train), ("validation", val), ("test", test)):
        if x.shape[0] < 2:
            raise ValueError(
                f"The {part} split of {name} has {x.shape[0]} image(s); give more images or change the split fractions."
            )
    if jpeg is not None:
        train, val, test = (perturb(x, jpeg=jpeg) for x in (train, val, test))
    return Splits(train, val, test, digest)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class _Repeat:
    """The data of one repeat of the protocol: its seed, splits, test sets and hash base."""

    seed: int
    real: Splits
    fakes: dict[str, Splits]
    real_test: torch.Tensor
    fake_test: dict[str, torch.Tensor]
    base: dict[str, Any]


def _prepare_repeat(real: SetSpec, fakes: dict[str, SetSpec], names: list[str], fractions: Sequence[float],
                    seed: int, jpeg: int | None) -> _Repeat:
    """Splits and test sets of every source for one seed (one repeat of the protocol)."""
    real_s = make_splits(real, "real", fractions, seed, jpeg)
    fake_s = {n: make_splits(fakes[n], n, fractions, seed, jpeg) for n in names}
    res = {tuple(x.shape[-2:]) for s in [real_s, *fake_s.values()] for x in (s.train, s.val, s.test)}
    if len(res) > 1:
        raise ValueError(f"All sets must have one image size, got {sorted(res)}; load them at the same --resolution.")
    # Test sets: one real test set (same in every column) and as many fakes of each source.
    n_test = min([real_s.test.shape[0]] + [s.test.shape[0] for s in fake_s.values()])
    real_test = real_s.test[sample_indices(real_s.test.shape[0], n_test, derive_seed(seed, "test", "real"))]
    fake_test = {n: s.test[sample_indices(s.test.shape[0], n_test, derive_seed(seed, "test", n))] for n, s in fake_s.items()}
    base = {
        "version": CELL_VERSION,
        "seed": seed,
        "fractions": [float(f) for f in fractions],
        "jpeg": jpeg,
        "real": real_s.digest,
        "fakes": {n: fake_s[n].digest for n in names},
    }
    return _Repeat(seed, real_s, fake_s, real_test, fake_test, base)


def aggregate(cells: dict[tuple[str, str, int], dict[str, Any]], names: Sequence[str],
              seeds: Sequence[int]) -> tuple[list[dict], list[dict]]:
    """(matrix records, per-repeat records) from fitted cells keyed by (detector, row, repeat).

    A matrix record is ``{detector, train, test, metric, value}`` with ``value`` the mean over the
    repeats; with more than one repeat it also holds ``sd`` (sample standard deviation, ddof=1)
    and ``n`` (the number of repeats). A per-repeat record is ``{detector, train, test, metric,
    repeat, seed, value}``.
    """
    k = len(seeds)
    pairs = list(dict.fromkeys((spec, row) for spec, row, _ in cells if row != ATTRIBUTION))
    runs: dict[tuple, list[float]] = {}
    for spec, row in pairs:
        results = [cells[(spec, row, r)]["results"] for r in range(k)]
        for test in names:
            for metric in results[0][test]:
                runs[(spec, row, test, metric)] = [float(res[test][metric]) for res in results]
    return pool_repeats(runs, ("detector", "train", "test", "metric"), seeds)


def run_transfer(real: SetSpec, fakes: dict[str, SetSpec], detectors: list[str], out_dir: str | os.PathLike,
                 rows: str | Sequence[str] = ("each",), seed: int = 0,
                 fractions: Sequence[float] = (0.6, 0.2, 0.2), jpeg: int | None = None, attribute: bool = False,
                 progress: bool = False, detector_options: dict[str, dict[str, Any]] | None = None,
                 heatmaps: bool | Sequence[str] = True, jobs: int = 1, seeds: int = 1, device: str | None = None,
                 patches: int | None = None, patch_size: int | None = None, patch_reduce: str = "mean") -> list[dict]:
    """Fit every detector on every row's sources, test on every source; write the matrix; return its records.

    Records are dicts ``{detector, train, test, metric, value}`` (plus ``sd`` and ``n`` when
    ``seeds`` > 1; ``value`` is then the mean over the repeats, see :func:`aggregate`).
    ``detector_options`` maps a detector spec to keyword arguments for
    :class:`detectors.detector.Detector`; ``heatmaps=False`` skips the PNGs (the CSV and JSON are
    always written), a list of metrics draws only theirs (a study draws its report's metric: each
    heatmap costs about half a second of matplotlib text layout, 35 of them for 7 detectors). ``jobs`` > 1 fits that many cells at once in worker processes (each with its
    share of the CPU threads); the cells are the same as with ``jobs=1``, since every cell seeds
    its own fit. ``seeds`` = K repeats the protocol with the seeds ``seed, ..., seed + K - 1``.
    ``device`` (unless a detector's options name their own) goes to every detector, in worker
    processes too, and into each cell's hash, so cells fitted on the CPU and on a GPU never mix.
    ``patches`` = K (a square) makes every detector fit and score K ``patch_size`` px crops per
    image, aggregated by ``patch_reduce`` (:mod:`detectors.patches`), on the 8x8 grid when
    ``jpeg`` is set (every image is then a JPEG), else on the 2x2 grid.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}.")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer (the number of repeats), got {seeds!r}.")
    if not fakes:
        raise ValueError("No fake sources given; pass at least one NAME=SPEC.")
    names = [check_source_name(n) for n in fakes]
    if not detectors:
        raise ValueError("No detectors given; pass at least one FEATURE:CLASSIFIER, e.g. radial:svm.")
    specs = unique_specs(detectors)
    row_kinds = parse_rows(rows)
    row_map = row_sources(row_kinds, names)
    if jpeg is not None and not (isinstance(jpeg, int) and 1 <= jpeg <= 100):
        raise ValueError(f"JPEG quality must be an integer between 1 and 100, got {jpeg!r}.")
    options = dict(detector_options or {})
    if patches is not None:
        patch = {"patches": patches, "patch_size": patch_size, "patch_reduce": patch_reduce,
                 "patch_align": 8 if jpeg is not None else 2}
        Detector(specs[0], **patch)  # checks the patch options once, before any image is split
        options = {spec: {**options.get(spec, {}), **patch} for spec in specs}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    seed_list = [seed + r for r in range(seeds)]
    reps = [_prepare_repeat(real, fakes, names, fractions, s, jpeg) for s in seed_list]
    cells: dict[tuple[str, str, int], dict[str, Any]] = {}
    # Repeat by repeat, so that one repeat's cached test features can go before the next.
    if REAL_ONLY in row_map and not any(supports_real_only(d) for d in specs):
        raise ValueError(f"No detector among {', '.join(specs)} can be fitted on real images alone; "
                         "drop the real-only row or add one, e.g. fingerprint:deviation.")
    tasks = [(d, r, k) for k in range(seeds) for d in specs for r in row_map if r != REAL_ONLY or supports_real_only(d)]
    # Attribution: the detectors whose classifier tells sources apart (deviation is binary: no model).
    attributors = [d for d in specs if supports_attribution(d)] if attribute else []
    if attribute and not attributors:
        raise ValueError(f"No detector among {', '.join(specs)} can attribute fakes to their source (binary-only "
                         "classifiers); drop attribute or add one, e.g. radial:svm.")
    tasks += [(d, ATTRIBUTION, k) for k in range(seeds) for d in attributors]

    def cell(spec: str, row: str, k: int) -> TransferCell:
        rep = reps[k]
        opts = dict(options.get(spec, {}))
        if device is not None:
            opts.setdefault("device", device)
        return TransferCell(spec, opts, row, row_map.get(row, names), names, rep.real,
                            rep.fakes, rep.real_test, rep.fake_test, out, rep.base, rep.seed, k)

    def label(spec: str, row: str, k: int) -> str:
        return f"{spec} · {row.lstrip('@')}" + (f" · seed {seed_list[k]}" if seeds > 1 else "")

    cells.update(run_cells([cell(*task) for task in tasks], _compute_cell, lambda c: (c.spec, c.row, c.repeat),
                           lambda c: label(c.spec, c.row, c.repeat), jobs=jobs, progress=progress,
                           title="Transfer matrix"))

    records, per_repeat = aggregate(cells, names, seed_list)
    rep0 = reps[0]
    sizes = {
        "test_per_class": int(rep0.real_test.shape[0]),
        "real": {"train": int(rep0.real.train.shape[0]), "val": int(rep0.real.val.shape[0]),
                 "test": int(rep0.real.test.shape[0])},
        "fakes": {n: {"train": int(s.train.shape[0]), "val": int(s.val.shape[0]), "test": int(s.test.shape[0])}
                  for n, s in rep0.fakes.items()},
        "rows": {f"{spec}|{row}": cell.get("n_train") for (spec, row, k), cell in cells.items()
                 if row != ATTRIBUTION and k == 0},
    }
    write_outputs(out, records, specs, list(row_map), names, sizes, rep0.base, row_map, heatmaps,
                  per_repeat=per_repeat, seeds=seed_list)
    if attribute:
        write_attribution(out, {spec: pool_attribution([cells[(spec, ATTRIBUTION, k)] for k in range(seeds)])
                                for spec in attributors}, heatmaps)
    return records


def pool_attribution(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """One detector's attribution over its repeats: confusion counts summed, accuracy as mean (and sd, n).

    One repeat is returned as it is. Every repeat tests as many images per class, so the mean
    accuracy is also the accuracy of the summed confusion matrix.
    """
    if len(cells) == 1:
        return cells[0]
    acc = [float(c["accuracy"]) for c in cells]
    return {
        "detector": cells[0]["detector"],
        "labels": cells[0]["labels"],
        "confusion": np.sum([np.asarray(c["confusion"], dtype=np.int64) for c in cells], axis=0).tolist(),
        "accuracy": float(np.mean(acc)),
        "accuracy_sd": float(np.std(acc, ddof=1)),
        "n": len(cells),
    }


def _compute_cell(cell: TransferCell, feats: TestFeatures | None = None) -> dict[str, Any]:
    """One (detector, row) cell: a fitted matrix row, or the attribution model (also a worker entry)."""
    if cell.attribution:
        return _attribution_cell(cell)
    return _matrix_cell(cell, feats or TestFeatures())


def _matrix_cell(c: TransferCell, feats: TestFeatures) -> dict[str, Any]:
    """Fit the cell's detector on its row's sources and evaluate it on every column (or reuse the saved cell)."""
    config_hash = json_digest({**c.base, "detector": c.spec, "options": c.options, "row": c.row,
                               "sources": c.sources, "code": cell_code_version(c.spec), **reals_note(c.spec, c.sources)})
    path = cell_path(c.out, c.spec, c.row, c.repeat)
    cell = cached_cell(path, config_hash)
    if cell is not None:
        return cell
    if c.sources:
        tr_real, tr_fake = training_images(c.spec, c.real.train, [c.fakes[s].train for s in c.sources], c.seed,
                                           c.row, "train")
        va_real, va_fake = balanced(c.real.val, [c.fakes[s].val for s in c.sources], c.seed, c.row, "val")
        det, fit_s = fit_detector(c.spec, c.options, c.seed, tr_real, tr_fake, va_real, va_fake)
    else:  # the real-only row: every real training image, no fake
        tr_real, va_real = c.real.train, c.real.val
        tr_fake = va_fake = tr_real[:0]
        det, fit_s = fit_detector(c.spec, c.options, c.seed, tr_real, None, va_real, None)
    n_test = c.real_test.shape[0]
    columns = {n: Column("real", c.real_test, n, c.fake_test[n]) for n in c.names}
    results, _ = score_columns(det, feats, columns, lambda y, s, t: evaluate(y, s, threshold=t))
    cell = {
        "config_hash": config_hash,
        "detector": c.spec,
        "train": c.row,
        "sources": c.sources,
        "seed": c.seed,
        "threshold": float(det.threshold),
        "n_train": {"real": int(tr_real.shape[0]), "fake": int(tr_fake.shape[0])},
        "n_val": {"real": int(va_real.shape[0]), "fake": int(va_fake.shape[0])},
        "n_test_per_class": int(n_test),
        "fit_seconds": round(fit_s, 3),
        "results": results,
    }
    write_json(path, cell)
    return cell


def _attribution_cell(c: TransferCell) -> dict[str, Any]:
    """Fit the cell's detector as one (K+1)-class model and return its confusion matrix on the test sets."""
    config_hash = json_digest({**c.base, "detector": c.spec, "options": c.options, "row": ATTRIBUTION,
                               "code": cell_code_version(c.spec)})
    path = cell_path(c.out, c.spec, "attribution", c.repeat)
    cell = cached_cell(path, config_hash)
    if cell is not None:
        return cell
    # One class per source, each as large as the smallest (real included): balanced classes.
    names = c.names
    m_tr = min([c.real.train.shape[0]] + [c.fakes[n].train.shape[0] for n in names])
    m_va = min([c.real.val.shape[0]] + [c.fakes[n].val.shape[0] for n in names])

    def take(x: torch.Tensor, m: int, *tag: str) -> torch.Tensor:
        return x[sample_indices(x.shape[0], m, derive_seed(c.seed, "attribution", *tag))]

    det = Detector(c.spec, seed=c.seed, **c.options).fit(
        take(c.real.train, m_tr, "train", "real"), [take(c.fakes[n].train, m_tr, "train", n) for n in names],
        take(c.real.val, m_va, "val", "real"), [take(c.fakes[n].val, m_va, "val", n) for n in names],
        multiclass=True, fake_names=names,
    )
    labels = ["real", *names]
    images = torch.cat([c.real_test, *[c.fake_test[n] for n in names]])
    y_true = np.repeat(np.arange(len(labels)), c.real_test.shape[0])
    y_pred = np.asarray(det.attribute(images))
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(len(labels)))
    cell = {
        "config_hash": config_hash,
        "detector": c.spec,
        "labels": labels,
        "confusion": cm.tolist(),
        "accuracy": float(np.trace(cm) / cm.sum()),
        "n_train_per_class": int(m_tr),
        "n_test_per_class": int(c.real_test.shape[0]),
    }
    write_json(path, cell)
    return cell
