"""What ``forgelab bench`` writes and prints: results.csv / results.json, the field's table, score
histograms, robustness curves and one HTML page.

Schema (K = ``--seeds``):

- ``results.csv``: one row per (detector, train row, test source or ``Mean``, condition, metric) with
  the columns ``detector, train, test, condition, metric, value`` -- the long shape of the transfer
  matrix's ``matrix.csv`` plus the robustness condition (``none`` = unperturbed) -- and, when K > 1,
  ``sd, n`` (empty for ``--model`` rows, which are evaluated once). Metrics are
  ``detectors.metrics.BENCH_METRICS``; ``acc_oracle`` is the oracle-threshold accuracy.
- ``repeats.csv``: ``detector, train, test, condition, metric, repeat, seed, value``.
- ``results.json``: ``detectors, rows, row_sources, columns, conditions, metrics, results``
  (detector -> train -> condition -> test -> metric -> mean), ``sd`` when K > 1, ``thresholds``
  (detector -> train -> calibrated threshold of repeat 0, and where it was calibrated), ``align``
  (what ``--align`` did, or null), ``sizes``, ``layouts``, ``seeds``.
- ``figures/hist_<detector>_<row>.png``: per test source, the real and fake score histograms with
  the 0.5 and calibrated thresholds; ``figures/robustness_<detector>.png``: mean AP and accuracy
  over the sources against each swept condition (only with ``--sweep``).
- ``report.html``: the tables, the alignment sentence and the figures.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from detectors.metrics import BENCH_METRICS
from pipelines.evaluation.transfer_outputs import _csv, mean_sd, slug
from plumbing.files import write_bytes, write_json, write_text

RESULT_COLUMNS = ("detector", "train", "test", "condition", "metric", "value")
REPEAT_COLUMNS = ("detector", "train", "test", "condition", "metric", "repeat", "seed", "value")
# The printed table's columns: (metric, header, group).
TABLE = (
    ("ap", "AP", ""), ("auc", "AUC", ""),
    ("acc", "acc", "@0.5"), ("acc_real_05", "real", "@0.5"), ("acc_fake_05", "fake", "@0.5"),
    ("acc_cal", "acc", "@cal"), ("acc_real_cal", "real", "@cal"), ("acc_fake_cal", "fake", "@cal"),
    ("acc_oracle", "oracle", "acc"),
)
MEAN = "Mean"
CLEAN = "none"


def _nest(records: list[dict], key: str) -> dict:
    nested: dict = {}
    for r in records:
        if key in r:
            (nested.setdefault(r["detector"], {}).setdefault(r["train"], {}).setdefault(r["condition"], {})
             .setdefault(r["test"], {}))[r["metric"]] = r[key]
    return nested


def write_bench_outputs(out: Path, result: dict[str, Any]) -> None:
    """results.csv, repeats.csv, results.json, the figures and report.html of a bench run."""
    records = result["records"]
    spread = len(result["seeds"]) > 1
    rows = [{**r, "sd": r.get("sd", ""), "n": r.get("n", "")} for r in records] if spread else records
    write_text(out / "results.csv", _csv(RESULT_COLUMNS + (("sd", "n") if spread else ()), rows))
    write_text(out / "repeats.csv", _csv(REPEAT_COLUMNS, result["per_repeat"]))
    thresholds: dict = {}
    for (spec, row, k), cell in result["cells"].items():
        if k == 0:
            thresholds.setdefault(spec, {})[row] = {"threshold": cell["threshold"], "calibration": cell["calibration"]}
    write_json(out / "results.json", {
        "detectors": result["detectors"], "rows": result["rows"], "row_sources": result["row_sources"],
        "columns": result["columns"], "conditions": result["conditions"], "metrics": list(BENCH_METRICS),
        "results": _nest(records, "value"), **({"sd": _nest(records, "sd")} if spread else {}),
        "thresholds": thresholds, "align": result["align"], "sizes": result["sizes"], "layouts": result["layouts"],
        "seeds": len(result["seeds"]), "repeat_seeds": result["seeds"], "sweeps": result["sweeps"],
    })
    figures = {}
    for (spec, row, k), cell in result["cells"].items():
        if k == 0:
            name = f"hist_{slug(spec)}_{slug(row)}.png"
            write_bytes(out / "figures" / name, histogram_png(cell, result["columns"]))
            figures[(spec, row)] = name
    curves = {}
    if result["sweeps"]:
        for spec in result["detectors"]:
            name = f"robustness_{slug(spec)}.png"
            write_bytes(out / "figures" / name, robustness_png(records, spec, result["sweeps"]))
            curves[spec] = name
    write_text(out / "report.html", report_html(result, figures, curves))


def _figure(w: float, h: float):
    # A bare Figure renders with Agg and never touches pyplot's global state (lazy: matplotlib is slow to import).
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100)


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def histogram_png(cell: dict[str, Any], columns: Sequence[str]) -> bytes:
    """Real and fake score histograms of one fitted detector, one panel per test source, thresholds marked."""
    n = len(columns)
    cols = min(n, 4)
    nrows = int(np.ceil(n / cols))
    fig = _figure(3.2 * cols, 2.4 * nrows)
    bins = np.linspace(0, 1, 26)
    for i, name in enumerate(columns):
        ax = fig.add_subplot(nrows, cols, i + 1)
        s = cell["scores"][name]
        ax.hist(s["real"], bins=bins, alpha=0.6, label="real", color="tab:blue")
        ax.hist(s["fake"], bins=bins, alpha=0.6, label="fake", color="tab:red")
        ax.axvline(0.5, color="grey", ls=":", lw=1, label="0.5")
        ax.axvline(cell["threshold"], color="black", ls="--", lw=1, label="calibrated")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("fakeness score", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"{cell['detector']} · trained on {cell['train']}", fontsize=10)
    return _png(fig)


def robustness_png(records: list[dict], spec: str, sweeps: Sequence[Sequence]) -> bytes:
    """Mean AP and accuracies over the test sources against each swept condition, one panel per kind, a line per row."""
    kinds = list(dict.fromkeys(k for k, _ in sweeps))
    fig = _figure(4.0 * len(kinds), 3.2)
    recs = [r for r in records if r["detector"] == spec and r["test"] == MEAN]
    rows = list(dict.fromkeys(r["train"] for r in recs))
    val = {(r["train"], r["condition"], r["metric"]): r["value"] for r in recs}
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        xs = [v for k, v in sweeps if k == kind]
        conds = [f"{kind}={v:g}" for v in xs]
        lowest = 0.4
        for j, row in enumerate(rows):  # a colour per row, a line style per metric
            for metric, style in (("ap", "-o"), ("acc", "--s"), ("acc_oracle", ":^")):
                ys = [val.get((row, c, metric), np.nan) for c in conds]
                lowest = min(lowest, np.nanmin(ys) if np.isfinite(ys).any() else lowest)
                ax.plot(range(len(xs)), ys, style, ms=4, color=f"C{j % 10}", label=f"{row} · {metric}")
        ax.set_xticks(range(len(xs)), labels=[f"{v:g}" for v in xs])
        ax.set_xlabel({"jpeg": "JPEG quality", "blur": "blur sigma (px)", "resize": "resize factor"}[kind])
        ax.set_ylim(np.floor(lowest * 10) / 10 - 0.02, 1.02)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylabel("mean over test sources")
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"{spec}: robustness\n(test images perturbed, training untouched)", fontsize=9)
    return _png(fig)


def _table_rows(records: list[dict], spec: str, row: str, condition: str = CLEAN) -> tuple[list[str], dict]:
    recs = [r for r in records if r["detector"] == spec and r["train"] == row and r["condition"] == condition]
    tests = [t for t in dict.fromkeys(r["test"] for r in recs) if t != MEAN] + [MEAN]
    val = {(r["test"], r["metric"]): (r["value"], r.get("sd")) for r in recs}
    return tests, val


def report_html(result: dict[str, Any], figures: dict, curves: dict) -> str:
    """The bench's HTML page: alignment, one table per (detector, row), histograms and robustness curves."""
    records = result["records"]
    align = result["align"]
    parts = ["<!doctype html><meta charset='utf-8'><title>forgelab bench</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td.n{text-align:left}"
             "tr.mean td{font-weight:bold}</style>",
             "<h1>forgelab bench</h1>"]
    how = html.escape(str(result.get("preprocess", "")))
    parts.append(f"<p><b>Formats.</b> {html.escape(align['text']) if align else f'Not aligned (--no-align): images as stored, preprocessed by {how}; codec and size differences reach the detectors.'}</p>")
    parts.append(f"<p>Resolution {result['sizes']['resolution']} px; test sources: "
                 f"{html.escape(', '.join(result['columns']))}. <i>oracle acc</i> uses the best threshold on the test "
                 "scores themselves (no detector can choose it for an unseen source).</p>")
    for spec in result["detectors"]:
        parts.append(f"<h2>{html.escape(spec)}</h2>")
        for row in result["rows"]:
            tests, val = _table_rows(records, spec, row)
            if not val:
                continue
            head = "".join(f"<th>{html.escape(h)}<br><small>{html.escape(g)}</small></th>" for _, h, g in TABLE)
            body = []
            for t in tests:
                cells = "".join(f"<td>{mean_sd(*val[(t, m)]) if (t, m) in val else '–'}</td>" for m, _, _ in TABLE)
                body.append(f"<tr class='{'mean' if t == MEAN else ''}'><td class='n'>{html.escape(t)}</td>{cells}</tr>")
            parts.append(f"<h3>trained on {html.escape(row)}</h3><table><tr><th>test</th>{head}</tr>{''.join(body)}</table>")
            if (spec, row) in figures:
                parts.append(f"<p><img src='figures/{figures[(spec, row)]}' alt='score histograms'></p>")
        if spec in curves:
            parts.append(f"<p><img src='figures/{curves[spec]}' alt='robustness curves'></p>")
    return "\n".join(parts)


def print_bench(result: dict[str, Any], console: Console | None = None) -> None:
    """Print one table per (detector, row) in the field's shape: sources and Mean down, metrics across."""
    if console is None:  # off a terminal rich assumes 80 columns, too narrow for the field's ten
        console = Console()
        console = console if console.is_terminal else Console(width=max(console.width, 120))
    records = result["records"]
    align = result["align"]
    caption = align["text"] if align else "Not aligned (--no-align): codec and size differences reach the detector."
    for spec in result["detectors"]:
        for row in result["rows"]:
            tests, val = _table_rows(records, spec, row)
            if not val:
                continue
            n = max((r.get("n", 1) or 1 for r in records if r["detector"] == spec and r["train"] == row), default=1)
            title = f"{spec} · trained on {row}" + (f" · mean ± sd of {n} seeds" if n > 1 else "")
            table = Table(title=title, caption=caption)
            table.add_column("test")
            for _, header, group in TABLE:
                table.add_column(f"{header}{group}" if group.startswith("@") else f"{header} {group}".strip(),
                                 justify="right")
            for t in tests:
                table.add_row(t, *(mean_sd(*val[(t, m)]) if (t, m) in val else "–" for m, _, _ in TABLE),
                              style="bold" if t == MEAN else None)
            console.print(table)
    if result["sweeps"]:
        for spec in result["detectors"]:
            table = Table(title=f"{spec} · robustness (Mean over sources)")
            table.add_column("train")
            table.add_column("condition")
            for m in ("ap", "acc", "acc_cal", "acc_oracle"):
                table.add_column(m, justify="right")
            recs = {(r["train"], r["condition"], r["metric"]): r for r in records
                    if r["detector"] == spec and r["test"] == MEAN}
            for row in result["rows"]:
                for cond in result["conditions"]:
                    if (row, cond, "ap") in recs:
                        table.add_row(row, cond, *(mean_sd(recs[(row, cond, m)]["value"], recs[(row, cond, m)].get("sd"))
                                                   for m in ("ap", "acc", "acc_cal", "acc_oracle")))
            console.print(table)
