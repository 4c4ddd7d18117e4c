"""What a transfer run writes and prints: matrix.csv / matrix.json, heatmap PNGs, attribution
tables, and the rich tables of ``forgelab transfer``."""

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


def write_outputs(out: Path, records: list[dict], specs: list[str], rows: list[str], names: list[str],
                   sizes: dict, base: dict, row_map: dict[str, list[str]], heatmaps: bool) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["detector", "train", "test", "metric", "value"])
    for r in records:
        w.writerow([r["detector"], r["train"], r["test"], r["metric"], repr(r["value"])])
    write_text(out / "matrix.csv", buf.getvalue())
    metrics = list(dict.fromkeys(r["metric"] for r in records))
    nested: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for r in records:
        nested.setdefault(r["detector"], {}).setdefault(r["metric"], {}).setdefault(r["train"], {})[r["test"]] = r["value"]
    write_json(out / "matrix.json", {
        "detectors": specs,
        "rows": rows,
        "row_sources": row_map,
        "columns": names,
        "metrics": metrics,
        "matrix": nested,  # write_json turns NaN into null: strict JSON
        "sizes": sizes,
        "config": base,
    })
    for spec in specs if heatmaps else ():
        for metric in (m for m in metrics if m in HEATMAP_METRICS):
            values = np.array([[nested[spec][metric][r][c] for c in names] for r in rows], dtype=np.float64)
            png = heatmap_png(values, rows, names, f"{spec} · {metric}", reverse=metric in LOWER_IS_BETTER)
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


def write_attribution(out: Path, cells: dict[str, dict[str, Any]], heatmaps: bool) -> None:
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
            png = heatmap_png(frac, labels, labels, f"{spec} · attribution (acc {cell['accuracy']:.2f})",
                              xlabel="predicted", ylabel="true")
            write_bytes(out / "attribution" / f"{slug(spec)}.png", png)
        summary[spec] = {"labels": labels, "confusion": cell["confusion"], "accuracy": cell["accuracy"]}
    write_json(out / "attribution.json", summary)


def print_matrix(records: list[dict], metric: str = "ap", console=None) -> None:
    """Print one rich table per detector: rows = trained on, columns = tested on, values = ``metric``."""
    console = console or Console()
    dets = list(dict.fromkeys(r["detector"] for r in records))
    for spec in dets:
        recs = [r for r in records if r["detector"] == spec and r["metric"] == metric]
        rows = list(dict.fromkeys(r["train"] for r in recs))
        cols = list(dict.fromkeys(r["test"] for r in recs))
        val = {(r["train"], r["test"]): r["value"] for r in recs}
        table = Table(title=f"{spec} · {metric}", caption="rows: train · columns: test")
        table.add_column("train \\ test")
        for c in cols:
            table.add_column(c, justify="right")
        for r in rows:
            table.add_row(r, *(f"{val[(r, c)]:.3f}" for c in cols))
        console.print(table)
