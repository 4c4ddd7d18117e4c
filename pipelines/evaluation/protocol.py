"""The evaluation protocol shared by ``forgelab transfer`` and ``forgelab bench``: seeded subsets,
balanced classes, cells (fit once, score every column), their cache, the cell runner and the
aggregation over seeds.

A transfer matrix is a bench whose sources are the lab's own fake sets: both fit one detector per
(detector, row, repeat) -- a *cell* -- on the row's training images, choose its threshold on the
row's validation images, score every test column with features computed once per test set, and
keep the cell as JSON with a hash of everything it depends on, so that a rerun recomputes only
the cells whose inputs changed. What differs is where the images come from (one folder per
source split by fractions, or the field's ``train/ val/ test/`` trees) and which metrics a column
holds (``detectors.metrics.evaluate`` or ``detectors.metrics.bench_metrics``).

Rows are named training recipes: the transfer matrix's ``each``, ``all`` and ``loo`` rows, a
bench's ``--train`` groups and ``--model`` folders. A new kind of row (for example detectors fitted
on real images only) is a new entry in the caller's row map whose cell is fitted by
:func:`fit_detector` and scored by :func:`score_columns` like every other.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as tmp

from detectors.detector import Detector, check_spec, supports_real_only
from plumbing.files import read_json
from plumbing.progress import progress_bar


def derive_seed(seed: int, *parts: str) -> int:
    """A 32-bit seed derived from ``seed`` and names, so every subset has its own stream."""
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(p.encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def sample_indices(n_have: int, n_take: int, seed: int) -> np.ndarray:
    """Sorted ``n_take`` of ``range(n_have)`` without replacement, by ``seed``."""
    if n_take >= n_have:
        return np.arange(n_have)
    return np.sort(np.random.default_rng(seed).choice(n_have, n_take, replace=False))


def balanced(real: torch.Tensor, fakes: list[torch.Tensor], seed: int, *tag: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal real and fake counts, with the same count from each fake source (seeded subsets)."""
    k = len(fakes)
    m = min(min(f.shape[0] for f in fakes), real.shape[0] // k)
    if m < 1:
        raise ValueError(f"Too few real images ({real.shape[0]}) to balance {k} fake sources; give more real images.")
    fake = torch.cat([f[sample_indices(f.shape[0], m, derive_seed(seed, *tag, "fake", str(i)))] for i, f in enumerate(fakes)])
    return real[sample_indices(real.shape[0], m * k, derive_seed(seed, *tag, "real"))], fake


def training_images(spec: str, real: torch.Tensor, fakes: list[torch.Tensor], seed: int,
                    *tag: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A fitted row's training images: :func:`balanced` classes, but every real image for a detector that models the reals.

    A detector that can be fitted on real images alone (:func:`detectors.detector.supports_real_only`,
    i.e. ``deviation``) is a density model of the real images: its Gaussian gets better with every
    real image, and its ridge weights count the two classes equally whatever their numbers. Cutting
    its reals down to the number of fakes (600 of 1,800 in the 3-upsampler protocol) would leave
    300 per cross-fitting half for ``colorprint``'s 237 numbers. It gets the whole real split and
    the same fakes as every other detector. Its Platt scaling sees the classes as they come (3:1
    there), so its P(fake) leans to real; the threshold is chosen on the validation images, which
    stay balanced.
    """
    real_sub, fake = balanced(real, fakes, seed, *tag)
    return (real if supports_real_only(spec) else real_sub), fake


def reals_note(spec: str, sources: Sequence[str]) -> dict[str, str]:
    """The hash entry of a row fitted on every real image (nothing for the others, whose hashes stay as they were)."""
    return {"reals": "all"} if sources and supports_real_only(spec) else {}


class TestFeatures:
    """Test-set features, computed once per (feature, options, set name) and reused by every row and detector.

    Detectors whose classifier takes feature vectors share them through
    ``Detector.transform`` / ``Detector.score_features``; CNNs compute their feature inside
    (with augmentation at training time) and are scored on the images. ``name`` must name the
    images uniquely within one repeat (a test set, and its perturbation when there is one).
    """

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], torch.Tensor] = {}

    def score(self, det, name: str, images: torch.Tensor) -> np.ndarray:
        """Fakeness scores of test set ``name`` by a fitted detector, reusing its features."""
        if det.raw_input:
            return np.asarray(det.score(images), dtype=np.float64)
        key = (json.dumps([det.feature, det.feature_options, det.input_kind], sort_keys=True, default=str), name)
        if key not in self.cache:
            self.cache[key] = det.transform(images)
        return det.score_features(self.cache[key])


@dataclass(frozen=True)
class Column:
    """One test column: real and fake images, each under the name its features are cached by."""

    real_name: str
    real: torch.Tensor
    fake_name: str
    fake: torch.Tensor


MetricFn = Callable[[np.ndarray, np.ndarray, float], dict[str, float]]


def score_columns(det, feats: TestFeatures, columns: dict[str, Column],
                  metrics: MetricFn) -> tuple[dict[str, dict[str, float]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(metrics per column, (real scores, fake scores) per column) of one fitted detector."""
    results, scores = {}, {}
    real_scores: dict[str, np.ndarray] = {}
    for name, col in columns.items():
        if col.real_name not in real_scores:  # a real set shared by several columns is scored once
            real_scores[col.real_name] = feats.score(det, col.real_name, col.real)
        s_real = real_scores[col.real_name]
        s_fake = feats.score(det, col.fake_name, col.fake)
        y = np.concatenate([np.zeros(s_real.size, np.int64), np.ones(s_fake.size, np.int64)])
        results[name] = {k: float(v) for k, v in metrics(y, np.concatenate([s_real, s_fake]), det.threshold).items()}
        scores[name] = (s_real, s_fake)
    return results, scores


def unique_specs(detectors: Sequence[str]) -> list[str]:
    """The detectors as canonical ``FEATURE:CLASSIFIER`` specs, in order; a detector listed twice is an error."""
    specs: list[str] = []
    for d in detectors:
        f, c = check_spec(d)
        spec = f"{f}:{c}"
        if spec in specs:
            raise ValueError(f"Detector {spec!r} is listed twice; list each detector once.")
        specs.append(spec)
    return specs


def fit_detector(spec: str, options: dict[str, Any], seed: int, train_real: torch.Tensor, train_fake: torch.Tensor | None,
                 val_real: torch.Tensor, val_fake: torch.Tensor | None) -> tuple[Detector, float]:
    """A detector fitted on one row's images with its threshold chosen on the row's validation images, and the seconds it took.

    ``train_fake=None`` fits on real images alone (classifiers that support it, see
    :func:`detectors.detector.supports_real_only`); the threshold then comes from the validation reals.
    """
    t0 = time.perf_counter()
    det = Detector(spec, seed=seed, **options).fit(train_real, train_fake, val_real, val_fake)
    return det, time.perf_counter() - t0


def cell_path(out: Path, spec: str, row: str, repeat: int = 0) -> Path:
    """Repeat 0 where single-seed runs keep their cells; later repeats in ``repeat-<r>/`` beside them."""
    from pipelines.evaluation.transfer_outputs import slug

    folder = out / "cells" / slug(spec)
    return (folder if repeat == 0 else folder / f"repeat-{repeat}") / f"{slug(row)}.json"


def cached_cell(path: Path, config_hash: str) -> dict[str, Any] | None:
    """The saved cell at ``path`` when its hash is ``config_hash`` (a damaged or stale cell is None)."""
    if not path.is_file():
        return None
    try:
        cell = read_json(path)
    except (ValueError, FileNotFoundError):  # a damaged cell is recomputed
        return None
    return cell if isinstance(cell, dict) and cell.get("config_hash") == config_hash else None


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def run_cells(cells: Sequence[Any], compute: Callable[[Any, TestFeatures | None], dict[str, Any]],
              key: Callable[[Any], tuple], label: Callable[[Any], str], *, jobs: int = 1, progress: bool = False,
              title: str = "Cells") -> dict[tuple, dict[str, Any]]:
    """Compute every cell, in order (test features shared while ``key(cell)[-1]``, the repeat, stays the same) or in
    ``jobs`` worker processes (spawned: torch does not survive fork safely; each gets its share of the CPU threads).

    ``compute(cell, feats)`` must be a module-level function (workers pickle it) that seeds its own
    fit, so that the cells are the same however they are run. Returns ``{key(cell): result}`` in
    the order of ``cells``.
    """
    done: dict[tuple, dict[str, Any]] = {}
    with progress_bar(progress, title, len(cells), transient=False, log_every=60) as bar:
        if jobs == 1 or len(cells) <= 1:
            feats, repeat = TestFeatures(), None
            for cell in cells:
                bar.update(description=label(cell))
                if key(cell)[-1] != repeat:  # one repeat's cached features go before the next's
                    feats, repeat = TestFeatures(), key(cell)[-1]
                done[key(cell)] = compute(cell, feats)
                bar.advance()
            return done
        threads = max(1, torch.get_num_threads() // jobs)
        with ProcessPoolExecutor(max_workers=min(jobs, len(cells)), mp_context=tmp.get_context("spawn"),
                                 initializer=_worker_init, initargs=(threads,)) as pool:
            futures = {pool.submit(compute, cell, None): cell for cell in cells}
            for fut in as_completed(futures):
                cell = futures[fut]
                done[key(cell)] = fut.result()
                bar.update(description=label(cell))
                bar.advance()
    return {key(c): done[key(c)] for c in cells}  # task order, not finishing order


def pool_repeats(runs: dict[tuple, list[float]], fields: Sequence[str], seeds: Sequence[int]) -> tuple[list[dict], list[dict]]:
    """(records, per-repeat records) from ``{(field values...): [value of each repeat]}``.

    A record holds the fields, ``value`` (the mean over the repeats) and, with more than one
    repeat, ``sd`` (sample standard deviation, ddof=1) and ``n``; a per-repeat record holds the
    fields, ``repeat``, ``seed`` and ``value``.
    """
    k = len(seeds)
    records, per_repeat = [], []
    for key, values in runs.items():
        rec: dict[str, Any] = dict(zip(fields, key, strict=True))
        if k == 1:
            rec["value"] = float(values[0])
        else:
            rec.update(value=float(np.mean(values)), sd=float(np.std(values, ddof=1)), n=k)
        records.append(rec)
        per_repeat += [{**dict(zip(fields, key, strict=True)), "repeat": r, "seed": int(seeds[r]), "value": float(v)}
                       for r, v in enumerate(values)]
    return records, per_repeat
