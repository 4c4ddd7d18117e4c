"""What a transfer run writes and prints: matrix.csv / matrix.json, heatmap PNGs, attribution
tables, and the rich tables of ``forgelab transfer``.

Schema (K = the number of seeds, ``--seeds`` / ``[transfer] seeds``):

- ``matrix.csv``: one row per (detector, train row, test column, metric) with the columns
  ``detector, train, test, metric, value``; when K > 1 two more, ``sd, n``: ``value`` is the mean
  over the K repeats, ``sd`` their sample standard deviation (ddof=1) and ``n`` = K. With K = 1
  the file has the five columns of single-seed runs and ``value`` is the one repeat's number
  (a missing ``sd`` column means one seed, also in files written before seeds existed).
- ``repeats.csv``: one row per repeat, ``detector, train, test, metric, repeat, seed, value``
  (also for K = 1), from which the means and standard deviations can be recomputed.
- ``matrix.json``: ``detectors, rows, row_sources, columns, metrics, matrix`` (detector -> metric
  -> train -> test -> mean), ``sd`` (the same nesting, only when K > 1), ``seeds`` (K),
  ``repeat_seeds`` (the seed of each repeat), ``sizes`` and ``config`` (repeat 0's hash base).
- ``heatmaps/<detector>_<metric>.png``: the means, titled with K when K > 1.
- ``attribution/<detector>.csv`` and ``attribution.json``: the confusion counts summed over the
  repeats; ``attribution.json`` holds each detector's mean ``accuracy`` and, when K > 1,
  ``accuracy_sd`` and ``n``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from plumbing.files import write_bytes, write_json, write_text

# Metrics that get a heatmap (the contract's five; every metric is in matrix.csv).
HEATMAP_METRICS = ("ap", "auc", "acc", "acc_cal", "eer")
# Metrics where lower is better (their heatmaps use a reversed colour map).
LOWER_IS_BETTER = ("eer",)


def slug(name: str) -> str:
    """A file-name-safe form of a detector or row name (``radial:svm`` -> ``radial-svm``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", name)


MATRIX_COLUMNS = ("detector", "train", "test", "metric", "value")
SPREAD_COLUMNS = ("sd", "n")  # only when the matrix is a mean over several seeds
REPEAT_COLUMNS = ("detector", "train", "test", "metric", "repeat", "seed", "value")


def _csv(header: Sequence[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:  # repr keeps every float exact through the text round trip
        w.writerow([repr(r[k]) if isinstance(r[k], float) else r[k] for k in header])
    return buf.getvalue()


def _nest(records: list[dict], key: str) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    nested: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for r in records:
        nested.setdefault(r["detector"], {}).setdefault(r["metric"], {}).setdefault(r["train"], {})[r["test"]] = r[key]
    return nested


def write_outputs(out: Path, records: list[dict], specs: list[str], rows: list[str], names: list[str],
                  sizes: dict, base: dict, row_map: dict[str, list[str]], heatmaps: bool | Sequence[str], *,
                  per_repeat: list[dict] | None = None, seeds: Sequence[int] | None = None) -> None:
    """matrix.csv, repeats.csv, matrix.json and the heatmaps of a run (the schema is in the module docstring)."""
    seeds = list(seeds) if seeds is not None else [base.get("seed", 0)]
    spread = len(seeds) > 1
    write_text(out / "matrix.csv", _csv(MATRIX_COLUMNS + (SPREAD_COLUMNS if spread else ()), records))
    if per_repeat is not None:
        write_text(out / "repeats.csv", _csv(REPEAT_COLUMNS, per_repeat))
    metrics = list(dict.fromkeys(r["metric"] for r in records))
    nested = _nest(records, "value")
    write_json(out / "matrix.json", {
        "detectors": specs,
        "rows": rows,
        "row_sources": row_map,
        "columns": names,
        "metrics": metrics,
        "matrix": nested,  # write_json turns NaN into null: strict JSON
        **({"sd": _nest(records, "sd")} if spread else {}),
        "seeds": len(seeds),
        "repeat_seeds": seeds,
        "sizes": sizes,
        "config": base,
    })
    drawn = HEATMAP_METRICS if heatmaps is True else tuple(heatmaps or ())
    for spec in specs:
        for metric in (m for m in metrics if m in HEATMAP_METRICS and m in drawn):
            # A detector that cannot be fitted on reals alone has no real-only row.
            own = [r for r in rows if r in nested[spec][metric]]
            values = np.array([[nested[spec][metric][r][c] for c in names] for r in own], dtype=np.float64)
            title = f"{spec} · {metric}" + (f" (mean of {len(seeds)} seeds)" if spread else "")
            png = heatmap_png(values, own, names, title, reverse=metric in LOWER_IS_BETTER)
            write_bytes(out / "heatmaps" / f"{slug(spec)}_{metric}.png", png)


def heatmap_png(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, *,
                reverse: bool = False, vmin: float = 0.0, vmax: float = 1.0, fmt: str = "{:.2f}",
                xlabel: str = "tested on", ylabel: str = "trained on") -> bytes:
    """An annotated heatmap (rows x cols) as PNG bytes (matplotlib, Agg backend)."""
    # A bare Figure renders with the Agg canvas and never touches pyplot's global state.
    # Lazy for start-up time: matplotlib takes about a second to import and only heatmaps need it.
    from matplotlib.figure import Figure

    n_r, n_c = values.shape
    fig = Figure(figsize=(1.6 + 0.9 * max(n_c, 2), 1.4 + 0.6 * max(n_r, 2)), dpi=110)
    ax = fig.add_subplot()
    cmap = "viridis_r" if reverse else "viridis"
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(n_c), labels=list(cols), rotation=30, ha="right")
    ax.set_yticks(range(n_r), labels=list(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    norm = im.norm
    for i in range(n_r):
        for j in range(n_c):
            v = values[i, j]
            if not np.isfinite(v):
                ax.text(j, i, "–", ha="center", va="center", color="grey")
                continue
            shade = norm(v)
            dark = (shade > 0.6) if reverse else (shade < 0.6)
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=9, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_attribution(out: Path, cells: dict[str, dict[str, Any]], heatmaps: bool | Sequence[str]) -> None:
    summary = {}
    for spec, cell in cells.items():
        labels, cm = cell["labels"], np.asarray(cell["confusion"], dtype=np.int64)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["true \\ predicted", *labels])
        for lab, row in zip(labels, cm.tolist(), strict=True):
            w.writerow([lab, *row])
        write_text(out / "attribution" / f"{slug(spec)}.csv", buf.getvalue())
        if heatmaps:
            frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            acc = mean_sd(cell["accuracy"], cell.get("accuracy_sd"), 2)
            seeds = f", {cell['n']} seeds" if cell.get("n", 1) > 1 else ""
            png = heatmap_png(frac, labels, labels, f"{spec} · attribution (acc {acc}{seeds})",
                              xlabel="predicted", ylabel="true")
            write_bytes(out / "attribution" / f"{slug(spec)}.png", png)
        summary[spec] = {"labels": labels, "confusion": cell["confusion"], "accuracy": cell["accuracy"],
                         **{k: cell[k] for k in ("accuracy_sd", "n") if k in cell}}
    write_json(out / "attribution.json", summary)


def mean_sd(value: float, sd: float | None, digits: int = 3) -> str:
    """``0.912 ± 0.034``, or the value alone without a standard deviation (one seed)."""
    if sd is None or not np.isfinite(sd) or not np.isfinite(value):
        return f"{value:.{digits}f}" if np.isfinite(value) else "–"
    return f"{value:.{digits}f} ± {sd:.{digits}f}"


def print_matrix(records: list[dict], metric: str = "ap", console=None) -> None:
    """Print one rich table per detector: rows = trained on, columns = tested on, values = ``metric``
    (``mean ± sd`` over the seeds when the records hold a standard deviation)."""
    console = console or Console()
    dets = list(dict.fromkeys(r["detector"] for r in records))
    for spec in dets:
        recs = [r for r in records if r["detector"] == spec and r["metric"] == metric]
        rows = list(dict.fromkeys(r["train"] for r in recs))
        cols = list(dict.fromkeys(r["test"] for r in recs))
        val = {(r["train"], r["test"]): mean_sd(r["value"], r.get("sd")) for r in recs}
        n = max((r.get("n", 1) for r in recs), default=1)
        title = f"{spec} · {metric}" + (f" · mean ± sd of {n} seeds" if n > 1 else "")
        table = Table(title=title, caption="rows: train · columns: test")
        table.add_column("train \\ test")
        for c in cols:
            table.add_column(c, justify="right")
        for r in rows:
            table.add_row(r, *(val[(r, c)] for c in cols))
        console.print(table)
