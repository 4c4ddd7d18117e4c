"""The report's figures as PNG bytes: mean spectra (radial, horizontal/vertical, 2D) and transfer heatmaps."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    # matplotlib.figure.Figure draws with the Agg canvas without touching pyplot's global state.
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _colors(names: list[str]) -> dict[str, Any]:
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    out: dict[str, Any] = {"real": "black"}
    for i, n in enumerate(names):
        out[n] = cmap(i % cmap.N)
    return out


def half_spectrum(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative half of a centred projection (DC at index n//2): frequencies 0..0.5 cycles/px."""
    n = profile.shape[0]
    half = np.concatenate([profile[n // 2:], profile[:1]]) if n % 2 == 0 else profile[n // 2:]
    return np.arange(half.shape[0]) / n, half


def radial_figure(spectra: dict[str, dict[str, np.ndarray]], names: list[str]) -> bytes:
    """Mean radial log power of real vs each generator, and each generator minus real."""
    colors = _colors(names)
    fig = _figure(11, 4.2)
    ax, dx = fig.subplots(1, 2)
    real = spectra.get("real")
    for n in ["real", *names]:
        if n not in spectra:
            continue
        r = spectra[n]["radial"]
        # Radius in pixels of a side of S maps to S/2 = Nyquist; plot in cycles per pixel.
        side = spectra[n]["spectrum2d"].shape[0]
        f = np.arange(r.shape[0]) / side
        ax.plot(f, r, color=colors[n], lw=2.4 if n == "real" else 1.3, label=n)
        if n != "real" and real is not None and real["radial"].shape == r.shape:
            dx.plot(f, r - real["radial"], color=colors[n], lw=1.3, label=n)
    ax.set(title="Mean radial spectrum", xlabel="spatial frequency (cycles / pixel)", ylabel="mean log power")
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    dx.axhline(0, color="black", lw=1)
    dx.axvline(0.5, color="grey", lw=0.8, ls=":")
    dx.set(title="Generator minus real", xlabel="spatial frequency (cycles / pixel)", ylabel="difference of log power")
    ax.legend(fontsize=8, ncol=2)
    for a in (ax, dx):
        a.grid(alpha=0.3)
    return _png(fig)


def xy_figure(spectra: dict[str, dict[str, np.ndarray]], names: list[str]) -> bytes:
    """Mean horizontal and vertical spectra (top) and their difference from real (bottom)."""
    colors = _colors(names)
    fig = _figure(11, 7)
    axes = fig.subplots(2, 2)
    real = spectra.get("real")
    for col, key, title in ((0, "horizontal", "Horizontal frequencies"), (1, "vertical", "Vertical frequencies")):
        for n in ["real", *names]:
            if n not in spectra:
                continue
            f, p = half_spectrum(spectra[n][key])
            axes[0, col].plot(f, p, color=colors[n], lw=2.4 if n == "real" else 1.3, label=n)
            if n != "real" and real is not None and real[key].shape == spectra[n][key].shape:
                _, pr = half_spectrum(real[key])
                axes[1, col].plot(f, p - pr, color=colors[n], lw=1.3, label=n)
        axes[0, col].set(title=title, xlabel="frequency (cycles / pixel)", ylabel="mean log power")
        axes[1, col].set(title=f"{title}: generator minus real", xlabel="frequency (cycles / pixel)",
                         ylabel="difference of log power")
        axes[1, col].axhline(0, color="black", lw=1)
        for a in axes[:, col]:
            a.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=2)
    return _png(fig)


def spectrum2d_figure(spectra: dict[str, dict[str, np.ndarray]], names: list[str]) -> bytes:
    """Mean 2D log spectra (centred, DC in the middle) and their difference from real, as an image grid."""
    shown = [n for n in ["real", *names] if n in spectra]
    real = spectra.get("real")
    diff_names = [n for n in names if n in spectra] if real is not None else []
    cols = min(4, len(shown))
    rows_spec = -(-len(shown) // cols)
    rows_diff = -(-len(diff_names) // cols)
    fig = _figure(2.6 * cols + 1.0, 2.7 * (rows_spec + rows_diff))
    # One extra narrow column holds the colour bars, so every image keeps the same size.
    grid = fig.add_gridspec(rows_spec + rows_diff, cols + 1, width_ratios=[1.0] * cols + [0.07])

    def panel(i: int, row0: int, image: np.ndarray, title: str, **kw):
        ax = fig.add_subplot(grid[row0 + i // cols, i % cols])
        im = ax.imshow(image, interpolation="nearest", **kw)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
        return im

    stack = np.stack([spectra[n]["spectrum2d"] for n in shown])
    vmin, vmax = np.percentile(stack, [1, 99.5])
    im = None
    for i, n in enumerate(shown):
        im = panel(i, 0, spectra[n]["spectrum2d"], n, cmap="viridis", vmin=vmin, vmax=vmax)
    fig.colorbar(im, cax=fig.add_subplot(grid[:rows_spec, -1]), label="mean log power")
    if diff_names:
        diffs = np.stack([spectra[n]["spectrum2d"] - real["spectrum2d"] for n in diff_names])
        lim = float(np.percentile(np.abs(diffs), 99.5)) or 1.0
        for i, n in enumerate(diff_names):
            im = panel(i, rows_spec, diffs[i], f"{n} − real", cmap="RdBu_r", vmin=-lim, vmax=lim)
        fig.colorbar(im, cax=fig.add_subplot(grid[rows_spec:, -1]), label="difference of log power")
    return _png(fig)


def matrix_figure(rows: list[dict[str, Any]], detector: str, metric: str, label: str, higher: bool = True) -> bytes:
    """A heatmap of one detector's transfer matrix for one metric (rows: trained on, columns: tested on).

    ``label`` names the metric in the title; ``higher`` says whether higher means more detectable.
    """
    trains, tests, values = matrix_grid(rows, detector, metric)
    fig = _figure(1.1 * len(tests) + 3, 0.55 * len(trains) + 2.2)
    ax = fig.subplots()
    vmin, vmax = (0.0, 0.5) if metric == "eer" else (0.5, 1.0) if metric in ("auc", "ap", "acc", "acc_cal") else (0.0, 1.0)
    im = ax.imshow(values, cmap="viridis" if higher else "viridis_r", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(tests)), tests, rotation=35, ha="right", fontsize=9)
    ax.set_yticks(range(len(trains)), trains, fontsize=9)
    ax.set(xlabel="tested on", ylabel="trained on", title=f"{detector} — {label}")
    for i in range(len(trains)):
        for j in range(len(tests)):
            v = values[i, j]
            if np.isfinite(v):
                bright = (v - vmin) / (vmax - vmin + 1e-12)
                bright = bright if higher else 1 - bright
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if bright > 0.6 else "white")
    fig.colorbar(im, ax=ax, shrink=0.85)
    return _png(fig)


def matrix_grid(rows: list[dict[str, Any]], detector: str, metric: str,
                key: str = "value") -> tuple[list[str], list[str], np.ndarray]:
    """(train names, test names, values) of one detector and metric, in first-seen order.

    ``key`` picks the record field: ``value`` (the mean over seeds) or ``sd`` (NaN where absent).
    """
    sel = [r for r in rows if r["detector"] == detector and r["metric"] == metric]
    trains = list(dict.fromkeys(r["train"] for r in sel))
    tests = list(dict.fromkeys(r["test"] for r in sel))
    values = np.full((len(trains), len(tests)), np.nan)
    for r in sel:
        v = r.get(key)
        values[trains.index(r["train"]), tests.index(r["test"])] = np.nan if v is None else v
    return trains, tests, values
