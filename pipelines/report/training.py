"""The report's training section: each generator's loss curves and spectral distance over training.

Read from ``generators/<name>/log.jsonl`` (gans.training): the discriminator's and generator's
losses at every log record, and ``spectral_l1`` (gans.monitor: the sample grid's radial L1
distance to the real images) at every sample grid.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.report.figures import _colors, _figure, _png

CURVES = {"loss_d": "D loss", "loss_g": "G loss", "spectral_l1": "radial spectral L1 (sample grid vs real)"}


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a log.jsonl (a half-written last line from a killed run is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            out.append(rec)
    return out


def training_logs(run: Path, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each generator's log records, for the generators that have a log."""
    logs = {n: read_log(run / "generators" / n / "log.jsonl") for n in names}
    return {n: recs for n, recs in logs.items() if recs}


def curve(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key`` over the records that hold a finite number for it."""
    pts = [(r["step"], float(r[key])) for r in records
           if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
    return (np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) if pts else (np.array([]), np.array([]))


def training_figure(logs: dict[str, list[dict[str, Any]]]) -> bytes:
    """One panel per curve in :data:`CURVES` that any generator logged, a line per generator."""
    names = list(logs)
    keys = [k for k in CURVES if any(curve(recs, k)[0].size for recs in logs.values())]
    colors = _colors(names)
    fig = _figure(4.2 * len(keys), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    for ax, key in zip(axes, keys, strict=True):
        for n in names:
            x, y = curve(logs[n], key)
            if x.size:
                ax.plot(x, y, color=colors[n], lw=1.3, marker="o" if x.size < 12 else None, ms=3, label=n)
        ax.set(title=CURVES[key], xlabel="generator step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    return _png(fig)


def training_section(d: dict[str, Any], figdir: Path, figure_html, write_bytes) -> str:
    """The report's "Training" section (empty when no generator has a log)."""
    logs = training_logs(d["run"], d["names"])
    if not logs:
        return ""
    data = training_figure(logs)
    write_bytes(figdir / "training.png", data)
    has_spectrum = any(curve(recs, "spectral_l1")[0].size for recs in logs.values())
    caption = (
        "Each generator's losses over training, as logged every <code>log_every</code> steps"
        + (", and the radial spectral L1 distance of its sample grid (64 images from fixed latents) to the "
           "real images at every sample grid (<code>sample_every</code>): the same measure as the "
           "radial L1 above, on fewer images" if has_spectrum else "")
        + ". TensorBoard shows more (D's outputs on real and fake, learning rates, speed, the grids and "
        f"their spectra): <code>tensorboard --logdir {html.escape(str(d['run'] / 'generators'))}</code>."
    )
    return "<h2 id='training'>Training</h2>" + figure_html(data, "training curves", caption)
