"""A study's self-contained report.html: samples, spectra, spectral distances, FID/KID, transfer matrices.

Everything is read back from the study folder (``study.json``, ``spectra/*.npz``,
``samples/*.png``, ``quality/*.json``, ``transfer/``, ``steps.json``, ``manifest.json``), so
``forgelab report RUN_DIR`` rebuilds the page at any time, also for an unfinished study. The
figures are written as PNGs into ``report/`` and embedded in the HTML as base64 data URIs;
the page has inline CSS and no external assets, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from detectors.diversity import DIVERSITY_WARNING, collapsed
from pipelines.data.arrays import load_arrays
from pipelines.evaluation.transfer_outputs import mean_sd
from pipelines.names import REAL_ONLY, is_plain_name
from pipelines.report.figures import (
    matrix_figure,
    matrix_grid,
    radial_figure,
    spectrum2d_figure,
    xy_figure,
)
from pipelines.report.training import training_section
from pipelines.runfolder import RunFolder, read_json, write_bytes, write_text
from pipelines.study.steps import StepLog

REPORT_FILE = "report.html"
FIGURE_DIR = "report"

# How each transfer metric reads; "higher" says which direction means "more detectable".
METRICS: dict[str, dict[str, Any]] = {
    "auc": {"label": "ROC-AUC", "higher": True, "text": "area under the ROC curve: 0.5 is chance, 1.0 separates every fake from every real image"},
    "ap": {"label": "AP", "higher": True, "text": "average precision of the fake class: 0.5 is chance for balanced sets, 1.0 is perfect"},
    "acc": {"label": "accuracy @0.5", "higher": True, "text": "accuracy with the fixed threshold 0.5 on the detector's score: 0.5 is chance"},
    "acc_cal": {"label": "accuracy @val threshold", "higher": True, "text": "accuracy with the threshold chosen on the training source's validation split"},
    "acc_real": {"label": "real accuracy @val threshold", "higher": True, "text": "share of real test images scored below the validation threshold (specificity)"},
    "acc_fake": {"label": "fake accuracy @val threshold", "higher": True, "text": "share of fake test images scored at or above the validation threshold (recall); low where the threshold does not transfer"},
    "eer": {"label": "EER", "higher": False, "text": "equal error rate: 0 is perfect, 0.5 is chance (lower means more detectable)"},
    "tpr_at_5fpr": {"label": "TPR @5% FPR", "higher": True, "text": "share of fakes caught when 5% of real images are flagged"},
}
MAIN_METRIC = "auc"
QUALITY_COLUMNS: dict[str, str] = {
    "radial_l1": "radial L1",
    "x_l1": "horizontal L1",
    "y_l1": "vertical L1",
    "cloaking": "cloaking",
    "fid": "FID",
    "kid": "KID",
    "kid_mean": "KID",
    "kid_std": "KID std",
}

CSS = """
:root { --fg:#1d232a; --muted:#5b6670; --line:#d9dee3; --bg:#ffffff; --soft:#f4f6f8; --accent:#2f6db3; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 18px; padding-bottom: 10px; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 38px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
p, li { max-width: 80ch; }
.muted { color: var(--muted); }
nav { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; margin: 14px 0; }
nav a { margin-right: 16px; color: var(--accent); text-decoration: none; white-space: nowrap; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 8px; margin: 12px 0; }
.fact { background: var(--soft); border-radius: 6px; padding: 8px 12px; }
.fact b { display: block; font-size: 18px; }
.fact span { color: var(--muted); font-size: 13px; }
.scroll { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: right; }
th { background: var(--soft); font-weight: 600; }
td.name, th.name { text-align: left; white-space: nowrap; }
td.na { color: var(--muted); text-align: center; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; max-width: 95ch; }
.samples { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 14px; }
.samples figure { margin: 0; }
.samples img { width: 100%; image-rendering: pixelated; }
.heatmaps { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 14px; }
.heatmaps figure { margin: 0; }
details { margin: 8px 0 14px; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      overflow-x: auto; font-size: 12.5px; line-height: 1.4; }
.note { background: #fff8e6; border-left: 4px solid #e0a800; padding: 6px 12px; margin: 10px 0; }
"""


# --------------------------------------------------------------------------- reading the folder


def _read_json_or(path: Path, default: Any) -> Any:
    return read_json(path) if path.is_file() else default


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Everything the report shows, read from a study folder (missing parts are empty)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run} does not exist; give the folder a study wrote (its --out).")
    plan = _read_json_or(run / "study.json", None)
    spectra_dir = run / "spectra"
    if plan is None:
        if not spectra_dir.is_dir():
            raise FileNotFoundError(f"{run} holds no study.json and no spectra/; is it a study folder?")
        names = sorted(p.stem for p in spectra_dir.glob("*.npz") if p.stem != "real")
        plan = {"name": run.name, "generators": [{"name": n} for n in names]}
    names = [g["name"] for g in plan.get("generators", [])]
    bad = [n for n in names if not is_plain_name(n)]
    if bad:  # names become file names below: a tampered study.json must not lead outside the folder
        raise ValueError(
            f"{run / 'study.json'} lists the generator name {bad[0]!r}, which is not a plain name; "
            "refusing to read files outside the study folder (restore study.json or rerun the study)."
        )

    spectra = {}
    for name in ["real", *names]:
        p = spectra_dir / f"{name}.npz"
        if p.is_file():
            spectra[name] = load_arrays(p)
    quality = {n: _read_json_or(run / "quality" / f"{n}.json", {}) for n in names}
    config_text = (run / "config.toml").read_text(encoding="utf-8") if (run / "config.toml").is_file() else None
    return {
        "run": run,
        "plan": plan,
        "names": names,
        "manifest": _read_json_or(run / "manifest.json", {}),
        "steps": StepLog(run).steps,
        "spectra": spectra,
        "samples": {n: run / "samples" / f"{n}.png" for n in ["real", *names] if (run / "samples" / f"{n}.png").is_file()},
        "quality": quality,
        "matrix": read_matrix(run / "transfer" / "matrix.csv"),
        "config_text": config_text,
        "parity": _read_json_or(run / "parity.json", {}).get("warnings"),
        "align": _read_json_or(run / "transfer" / "align.json", {}).get("text"),
    }


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def read_matrix(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a transfer matrix.csv (detector, train, test, metric, value); [] when absent.

    A matrix over several seeds also has ``sd`` and ``n`` columns (``value`` is then the mean);
    their rows get ``sd`` (float) and ``n`` (int) keys, one-seed rows do not.
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row = {"detector": r["detector"], "train": r["train"], "test": r["test"],
                   "metric": r["metric"], "value": _number(r["value"])}
            if r.get("sd") not in (None, ""):
                n = _number(r.get("n"))
                row.update(sd=_number(r["sd"]), n=int(n) if np.isfinite(n) else None)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- HTML pieces


def _img(data: bytes, alt: str, css_class: str = "") -> str:
    b64 = base64.b64encode(data).decode("ascii")
    cls = f' class="{css_class}"' if css_class else ""
    return f'<img{cls} alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _figure_html(data: bytes, alt: str, caption: str) -> str:
    return f"<figure>{_img(data, alt)}<figcaption>{caption}</figcaption></figure>"


class MeanSd(NamedTuple):
    """A table cell that shows ``mean ± sd`` (or the mean alone when ``sd`` is None)."""

    mean: float
    sd: float | None


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, MeanSd):
        return mean_sd(v.mean, v.sd if v.sd is not None and np.isfinite(v.sd) else None, digits)
    if isinstance(v, bool) or v is None:
        return "—" if v is None else ("yes" if v else "no")
    if isinstance(v, (int, float, np.floating)):
        if not np.isfinite(v):
            return "—"
        return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]], name_cols: int = 1) -> str:
    th = "".join(f'<th class="name">{html.escape(h)}</th>' if i < name_cols else f"<th>{html.escape(h)}</th>"
                 for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            if i < name_cols or isinstance(v, str):
                cells.append(f'<td class="name">{html.escape(str(v))}</td>')
            elif v is None or (isinstance(v, float) and not np.isfinite(v)) or (
                    isinstance(v, MeanSd) and not np.isfinite(v.mean)):
                cells.append('<td class="na">—</td>')
            else:
                cells.append(f"<td>{_fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    # In a scrolling box: a wide table (many detectors) scrolls inside the page instead of off its edge.
    return f"<div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _quality_value(q: dict[str, Any], key: str) -> float | None:
    """A quality number by our short name, accepting torch-fidelity's long key names too."""
    aliases = {
        "fid": ("fid", "frechet_inception_distance"),
        "kid": ("kid", "kid_mean", "kernel_inception_distance_mean"),
    }
    for k in aliases.get(key, (key,)):
        v = q.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _diagonal(matrix: list[dict[str, Any]], detector: str, name: str, metric: str = MAIN_METRIC) -> MeanSd | None:
    for r in matrix:
        if r["detector"] == detector and r["metric"] == metric and r["train"] == name and r["test"] == name:
            return MeanSd(r["value"], r.get("sd"))
    return None


def _seed_count(matrix: list[dict[str, Any]]) -> int:
    """How many seeds the matrix averages (1 for a one-seed matrix.csv, which has no sd column)."""
    return max((r.get("n") or 1 for r in matrix), default=1)


def _detectors(matrix: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["detector"] for r in matrix))


def _summary_section(d: dict[str, Any]) -> str:
    names, plan, quality, matrix = d["names"], d["plan"], d["quality"], d["matrix"]
    gens = {g["name"]: g for g in plan.get("generators", [])}
    qcols = [k for k in ("radial_l1", "x_l1", "y_l1", "cloaking", "fid", "kid")
             if any(_quality_value(quality.get(n, {}), k) is not None for n in names)]
    dets = _detectors(matrix)
    header = ["generator", "arch", "upsampler", "spectral D"] + [QUALITY_COLUMNS[k] for k in qcols]
    header += [f"{det} AUC" for det in dets]
    rows = []
    for n in names:
        g = gens.get(n, {})
        row: list[Any] = [n, g.get("arch", "—"), g.get("upsampler", "—"),
                          "yes" if g.get("spectral_d") else "no"]
        row += [_quality_value(quality.get(n, {}), k) for k in qcols]
        row += [_diagonal(matrix, det, n) for det in dets]
        rows.append(row)
    notes = sorted({q["fid_kid_unavailable"] for q in quality.values() if q.get("fid_kid_unavailable")})
    note_html = "".join(f'<p class="note">FID/KID not computed: {html.escape(x)}</p>' for x in notes)
    caption = (
        "<p class='muted'>Spectral distances are mean absolute differences between the real and the "
        "generator's mean min-max-normalised spectra (radial, horizontal, vertical; 0 = identical shape). "
        "The cloaking score is 1 − |acc − 0.5| / 0.5 of a cross-validated logistic regression on single "
        "radial profiles: 1 means single spectra cannot be told apart from real ones. "
        + ("The AUC columns are each detector trained and tested on that generator's fakes "
           "(the diagonal of its transfer matrix; 0.5 = chance, 1 = every fake caught). " if dets else "")
        + ("FID/KID: lower is closer to the real images." if any(k in qcols for k in ("fid", "kid")) else "")
        + "</p>"
    )
    return "<h2 id='summary'>At a glance</h2>" + _table(header, rows, name_cols=4) + caption + note_html


def _diversity_section(d: dict[str, Any]) -> str:
    """Each fake set's diversity relative to the real set, with a warning below the level."""
    values = {n: d["quality"].get(n, {}).get("diversity") for n in d["names"]}
    values = {n: v for n, v in values.items() if isinstance(v, (int, float))}
    if not values:
        return ""
    low = [n for n, v in values.items() if collapsed(v)]
    rows = [[n, v, "⚠ likely mode collapse" if n in low else "ok"] for n, v in values.items()]
    warn = (f"<p class='note'>⚠ {html.escape(', '.join(low))}: diversity below {DIVERSITY_WARNING:g} — the "
            "samples are nearly alike (mode collapse); their spectra and detection results describe one "
            "pattern, not a generator.</p>" if low else "")
    caption = ("<p class='muted'>Mean pairwise L2 distance between 8×8 area-averaged samples, divided by "
               f"the same for the real images: 1 = as varied as the real set, 0 = every sample identical; "
               f"warning below {DIVERSITY_WARNING:g} (detectors/diversity.py).</p>")
    return ("<h2 id='diversity'>Diversity</h2>" + warn
            + _table(["generator", "diversity", "status"], rows) + caption)


def _samples_section(d: dict[str, Any]) -> str:
    cards = []
    for n in ["real", *d["names"]]:
        p = d["samples"].get(n)
        if p is None:
            continue
        g = next((g for g in d["plan"].get("generators", []) if g["name"] == n), {})
        sub = "real images" if n == "real" else f"{g.get('arch', '')} · {g.get('upsampler', '')}" + (
            " · spectral D" if g.get("spectral_d") else "")
        cards.append(f"<figure>{_img(p.read_bytes(), f'samples of {n}')}"
                     f"<figcaption><b>{html.escape(n)}</b> — {html.escape(sub)}</figcaption></figure>")
    if not cards:
        return ""
    return ("<h2 id='samples'>Samples</h2><p class='muted'>The first images of each set, at their native "
            "resolution scaled up without smoothing.</p><div class='samples'>" + "".join(cards) + "</div>")


def _spectra_section(d: dict[str, Any], figdir: Path) -> str:
    spectra, names = d["spectra"], [n for n in d["names"] if n in d["spectra"]]
    if not spectra:
        return ""
    parts = ["<h2 id='spectra'>Spectra</h2>"]
    figs = [
        ("spectra_radial.png", radial_figure(spectra, names), "mean radial spectra",
         "Left: the azimuthally averaged log power spectrum of each set, averaged over its images "
         "(real images in black). Right: each generator minus real. Upsampling artefacts show up at "
         "high frequencies (right end, 0.5 cycles/pixel is the Nyquist limit along an axis): zero "
         "insertion and transposed convolutions tend to lift it, nearest/bilinear upsampling to lower it."),
        ("spectra_xy.png", xy_figure(spectra, names), "horizontal and vertical spectra",
         "The centred log spectrum averaged over rows (horizontal frequencies) and over columns "
         "(vertical frequencies), from DC (left) to Nyquist (right). Peaks at fractions of the Nyquist "
         "frequency are the periodic checkerboard patterns of an upsampler."),
        ("spectra_2d.png", spectrum2d_figure(spectra, names), "mean 2D spectra",
         "Mean 2D log power spectra with the zero frequency in the centre (top rows, one colour scale "
         "for all), and each generator's difference from real (bottom rows; red = more power than "
         "real images, blue = less). Bright isolated dots or lines are upsampling fingerprints."),
    ]
    for fname, data, alt, caption in figs:
        write_bytes(figdir / fname, data)
        parts.append(_figure_html(data, alt, caption))
    return "".join(parts)


def _matrix_table(rows: list[dict[str, Any]], detector: str, metric: str) -> str:
    """One metric of one detector as a table: ``mean ± sd`` per cell over several seeds, else the value."""
    trains, tests, values = matrix_grid(rows, detector, metric)
    _, _, sds = matrix_grid(rows, detector, metric, key="sd")
    return _table(["trained on \\ tested on", *tests],
                  [[t, *[MeanSd(float(v), None if np.isnan(e) else float(e)) for v, e in zip(values[i], sds[i],
                                                                                             strict=True)]]
                   for i, t in enumerate(trains)])


def _heatmap_files(run: Path, detector: str) -> dict[str, Path]:
    """Heatmap PNGs written by the transfer step for ``detector``, by metric."""
    folder = run / "transfer" / "heatmaps"
    if not folder.is_dir():
        return {}
    out = {}
    safe = {detector, detector.replace(":", "_"), detector.replace(":", "-"), detector.replace(":", "")}
    for p in sorted(folder.glob("*.png")):
        for metric in sorted(METRICS, key=len, reverse=True):
            if p.stem.endswith(f"_{metric}") and p.stem[: -len(metric) - 1] in safe:
                out.setdefault(metric, p)
    return out


def _transfer_section(d: dict[str, Any], figdir: Path) -> str:
    matrix = d["matrix"]
    if not matrix:
        return ""
    run = d["run"]
    metrics_present = list(dict.fromkeys(r["metric"] for r in matrix))
    main = MAIN_METRIC if MAIN_METRIC in metrics_present else metrics_present[0]
    info = METRICS.get(main, {"label": main, "text": ""})
    parts = [
        "<h2 id='transfer'>Transfer matrices</h2>",
        "<p>One matrix per detector. <b>Rows</b>: the fakes the detector was trained on (with real "
        "training images); <b>columns</b>: the fakes it is tested on, always against the same real test "
        "images. The <b>diagonal</b> is ordinary detection; <b>off-diagonal</b> cells say whether what the "
        "detector learned from one upsampler carries over to another. Rows named <i>all</i> are trained on "
        "every generator together; <i>loo</i> rows leave the tested generator out of training; the "
        "<i>real-only</i> row is trained on real images alone (detectors that can be) and tested on every generator. "
        f"Shown: {html.escape(info['label'])} — {html.escape(info['text'])}. An AUC well below 0.5 is not "
        "noise: the detector ranks those fakes as <i>more real</i> than real images, because what it learned "
        "points the other way for that upsampler.</p>",
        _seeds_note(matrix),
        _transfer_summary(matrix, d["names"], main),
    ]
    for det in _detectors(matrix):
        parts.append(f"<h3>{html.escape(det)}</h3>")
        files = _heatmap_files(run, det)
        if main in files:
            data = files[main].read_bytes()
        else:  # no heatmap from the transfer step: draw one from matrix.csv
            data = matrix_figure(matrix, det, main, METRICS.get(main, {}).get("label", main),
                                 METRICS.get(main, {}).get("higher", True))
            # The detector name comes from matrix.csv: the figure must stay inside the study folder.
            write_bytes(RunFolder(run).inside(figdir / f"transfer_{det.replace(':', '_')}_{main}.png"), data)
        parts.append(_figure_html(
            data, f"{det} transfer matrix", f"{html.escape(det)}: {html.escape(info['label'])} of a detector trained "
            "on the row's fakes and tested on the column's fakes. Bright = detected, dark = fooled."))
        others = [m for m in metrics_present if m != main]
        tables = "".join(
            f"<h4>{html.escape(METRICS.get(m, {}).get('label', m))}</h4>"
            f"<p class='muted'>{html.escape(METRICS.get(m, {}).get('text', ''))}</p>{_matrix_table(matrix, det, m)}"
            for m in [main, *others]
        )
        parts.append(f"<details><summary>All metrics of {html.escape(det)} as numbers</summary>{tables}</details>")
    return "".join(parts)


def _seeds_note(matrix: list[dict[str, Any]]) -> str:
    k = _seed_count(matrix)
    if k <= 1:
        return ""
    return (f"<p>Every cell was fitted {k} times, each time with its own seed: new train / validation / "
            "test splits of the real and fake images and a new initialisation of the classifier. Numbers read "
            "<b>mean ± sd</b> over the repeats (sample standard deviation); heatmaps show the mean, and "
            "<code>transfer/repeats.csv</code> holds every repeat's value.</p>")


def _transfer_summary(matrix: list[dict[str, Any]], names: list[str], metric: str) -> str:
    """Per detector: mean of the diagonal (seen generator) and of the off-diagonal (unseen) cells."""
    rows = []
    for det in _detectors(matrix):
        sel = [r for r in matrix if r["detector"] == det and r["metric"] == metric
               and r["train"] in names and r["test"] in names and np.isfinite(r["value"])]
        same = [r["value"] for r in sel if r["train"] == r["test"]]
        other = [r["value"] for r in sel if r["train"] != r["test"]]
        # The weakest *transfer*: off the diagonal only (a diagonal cell is ordinary detection).
        off = [r for r in sel if r["train"] != r["test"]]
        worst = min(off, key=lambda r: r["value"]) if off else None
        alone = [r["value"] for r in matrix if r["detector"] == det and r["metric"] == metric
                 and r["train"] == REAL_ONLY and r["test"] in names and np.isfinite(r["value"])]
        rows.append([det, float(np.mean(same)) if same else None, float(np.mean(other)) if other else None,
                     f"{worst['train']} → {worst['test']} ({worst['value']:.2f})" if worst else "—",
                     float(np.mean(alone)) if alone else None])
    label = METRICS.get(metric, {}).get("label", metric)
    return ("<p class='muted'>Summary over the rows trained on one generator: the mean of the diagonal "
            "(tested on the generator it was trained on) against the mean off the diagonal (tested on "
            "the others), and the weakest cell; and, for detectors trained on real images alone (the "
            "<i>real-only</i> row, no fakes seen at all), the mean over every generator.</p>"
            + _table(["detector", f"{label} same generator", f"{label} other generators", "weakest transfer",
                      f"{label} real-only"], rows))


def _attribution_section(d: dict[str, Any]) -> str:
    folder = d["run"] / "transfer" / "attribution"
    if not folder.is_dir():
        return ""
    summary = _read_json_or(d["run"] / "transfer" / "attribution.json", {})
    by_slug = {det.replace(":", "-"): det for det in summary}
    figs = []
    for p in sorted(folder.glob("*.png")):
        det = by_slug.get(p.stem, p.stem)
        info = summary.get(det) or {}
        acc, sd = info.get("accuracy"), info.get("accuracy_sd")
        acc_text = ""
        if isinstance(acc, (int, float)) and isinstance(sd, (int, float)):
            acc_text = (f" Accuracy over all test images: {mean_sd(acc, sd)} (mean ± sd of {info.get('n')} seeds; "
                        "the shares are of the counts summed over them).")
        elif isinstance(acc, (int, float)):
            acc_text = f" Accuracy over all test images: {acc:.3f}."
        figs.append(_figure_html(
            p.read_bytes(), f"{det} attribution",
            f"<b>{html.escape(det)}</b>: share of each true source's test images (rows) given to each "
            f"predicted source (columns).{acc_text}"))
    if not figs:
        return ""
    return ("<h2 id='attribution'>Attribution</h2>"
            "<p>Each detector trained as one multi-class model over real images and every generator "
            "(Yu et al., “Attributing fake images to GANs”): which upsampler made this image? "
            "A strong diagonal means each upsampler leaves a fingerprint of its own; confusions show "
            "which upsamplers look alike to that feature.</p><div class='heatmaps'>" + "".join(figs) + "</div>")


def _data_section(d: dict[str, Any]) -> str:
    """Where the real training and test images came from, and the format parity warnings."""
    data = d["plan"].get("data") or {}
    parts = []
    rows = [[what, (data.get(key) or {}).get("from", ""), (data.get(key) or {}).get("count")]
            for what, key in (("GANs and detectors' real training images", "real_train"),
                              ("detectors' real test images", "real_test")) if data.get(key)]
    if rows:
        parts.append(f"<p>Real images, preprocessed by <b>{html.escape(str(data.get('preprocess', 'resize')))}</b>. "
                     "The detectors are tested on real images no generator trained on.</p>")
        parts.append(_table(["real images", "from", "count"], rows))
    warnings = d.get("parity")
    if warnings is not None:
        if warnings:
            items = "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
            parts.append("<h3>Format parity</h3><p class='note'>The real and fake sets are stored differently; a "
                         f"detector may have learned the difference instead of the generator:</p><ul>{items}</ul>")
        else:
            parts.append("<h3>Format parity</h3><p>What the detectors see of the real and fake sets agrees in codec, "
                         "JPEG quality, chroma subsampling and size.</p>")
    if d.get("align"):
        parts.append(f"<p><b>Formats aligned.</b> {html.escape(str(d['align']))}</p>")
    return ("<h2 id='data'>Data</h2>" + "".join(parts)) if parts else ""


def _run_section(d: dict[str, Any]) -> str:
    steps = d["steps"]
    manifest = d["manifest"]
    parts = ["<h2 id='run'>Run details</h2>"]
    if steps:
        total = sum(s.get("seconds", 0.0) for s in steps.values() if s.get("status") == "done")
        rows = [[k, s.get("status", ""), s.get("seconds"), s.get("finished", "")] for k, s in steps.items()]
        parts.append(f"<p>Steps and their times (sum {total:.0f} s; a study rerun skips the finished ones).</p>")
        parts.append(f"<details><summary>{len(steps)} steps</summary>"
                     + _table(["step", "status", "seconds", "finished"], rows) + "</details>")
    if d["config_text"]:
        parts.append("<h3>Study config</h3><pre>" + html.escape(d["config_text"]) + "</pre>")
    elif manifest.get("config"):
        parts.append("<h3>Study config (resolved)</h3><pre>" + html.escape(json.dumps(manifest["config"], indent=2)) + "</pre>")
    if manifest:
        parts.append("<h3>Manifest</h3><details><summary>manifest.json</summary><pre>"
                     + html.escape(json.dumps(manifest, indent=2, default=str)) + "</pre></details>")
    return "".join(parts)


def _header(d: dict[str, Any]) -> str:
    plan, manifest = d["plan"], d["manifest"]
    data = plan.get("data", {})
    status = "finished" if d.get("finished") else manifest.get("status", "unknown")
    facts = [
        (len(d["names"]), "generators"),
        (f"{plan.get('resolution', '—')} px", "resolution"),
        (data.get("count", "—"), f"real images ({html.escape(str(data.get('source', '—')))})"),
        ((plan.get("generate") or {}).get("n", "—"), "fakes per generator"),
        (len(_detectors(d["matrix"])), "detectors"),
        (f"{manifest['elapsed_s'] / 60:.1f} min" if isinstance(manifest.get("elapsed_s"), (int, float)) else "—",
         f"wall time of the last run, on {html.escape(str(manifest.get('device', '—')))}"),
    ]
    fact_html = "".join(f"<div class='fact'><b>{html.escape(str(v))}</b><span>{k}</span></div>" for v, k in facts)
    warn = "" if status == "finished" else (
        f"<p class='note'>This study is not finished (status: {html.escape(str(status))}); the report shows "
        "what exists so far. Run the study again with --resume to continue it.</p>")
    return (f"<header><h1>{html.escape(str(plan.get('name', 'study')))}</h1>"
            f"<div class='muted'>forgelab study report · written {time.strftime('%Y-%m-%d %H:%M')}</div></header>"
            + warn + f"<div class='facts'>{fact_html}</div>")


def render_html(d: dict[str, Any], figdir: Path) -> str:
    """The report page for the data returned by :func:`load_run`."""
    sections = [
        ("summary", "At a glance", _summary_section(d)),
        ("data", "Data", _data_section(d)),
        ("diversity", "Diversity", _diversity_section(d)),
        ("samples", "Samples", _samples_section(d)),
        ("spectra", "Spectra", _spectra_section(d, figdir)),
        ("training", "Training", training_section(d, figdir, _figure_html, write_bytes)),
        ("transfer", "Transfer matrices", _transfer_section(d, figdir)),
        ("attribution", "Attribution", _attribution_section(d)),
        ("run", "Run details", _run_section(d)),
    ]
    nav = "".join(f"<a href='#{sid}'>{title}</a>" for sid, title, body in sections if body)
    body = "".join(body for _, _, body in sections)
    title = html.escape(str(d["plan"].get("name", "study")))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{title} — forgelab report</title><style>{CSS}</style></head>"
            f"<body><main>{_header(d)}<nav>{nav}</nav>{body}</main></body></html>\n")


def write_report(run_dir: str | Path, *, finished: bool | None = None) -> Path:
    """Build report.html (and the figure PNGs in report/) from a study folder; return its path.

    ``finished`` says whether the study is complete; None reads it from the manifest.
    """
    d = load_run(run_dir)
    if finished is not None:
        d["finished"] = finished
    run = d["run"]
    figdir = run / FIGURE_DIR
    figdir.mkdir(parents=True, exist_ok=True)
    return write_text(run / REPORT_FILE, render_html(d, figdir))
