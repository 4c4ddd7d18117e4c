"""The study report: built from a hand-made study folder, checked for content and valid images."""

from __future__ import annotations

import base64
import csv
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images
from PIL import Image

from pipelines.data.arrays import load_arrays, mean_spectra, save_arrays, write_grid
from pipelines.report.figures import half_spectrum as _half
from pipelines.report.figures import matrix_grid as _grid
from pipelines.report.page import load_run, read_matrix, write_report
from pipelines.runfolder import write_json

IMG = re.compile(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _nearest_up(x: torch.Tensor) -> torch.Tensor:
    """Half-resolution images brought back up by pixel repetition (a nearest-upsampler look)."""
    return x[:, :, ::2, ::2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def _zero_insert(x: torch.Tensor) -> torch.Tensor:
    """Zero insertion of the half-resolution image (a bed-of-nails look, strong high frequencies)."""
    out = torch.zeros_like(x)
    out[:, :, ::2, ::2] = x[:, :, ::2, ::2]
    return out


def make_study_folder(root: Path, *, transfer: bool = True, finished: bool = True) -> Path:
    """A study folder as run_study leaves it, with two 'generators' made by hand."""
    real = smooth_images(48, 32, seed=3)
    sets = {"real": real, "nearest": _nearest_up(real), "bed_of_nails": _zero_insert(real)}
    for name, x in sets.items():
        save_arrays(root / "spectra" / f"{name}.npz", **mean_spectra(x))
        write_grid(x, root / "samples" / f"{name}.png", 16)
    names = ["nearest", "bed_of_nails"]
    for i, n in enumerate(names):
        write_json(root / "quality" / f"{n}.json", {"radial_l1": 0.01 * (i + 1), "x_l1": 0.02, "y_l1": 0.03,
                                                    "cloaking": 0.5 - 0.25 * i,
                                                    "fid_kid_unavailable": "no Inception weights offline"})
    write_json(root / "study.json", {
        "name": "handmade", "resolution": 32,
        "data": {"source": "smooth", "count": 48},
        "generators": [{"name": "nearest", "arch": "dcgan", "upsampler": "nearest", "spectral_d": False},
                       {"name": "bed_of_nails", "arch": "dcgan", "upsampler": "bed_of_nails", "spectral_d": True}],
        "generate": {"n": 48},
    })
    write_json(root / "manifest.json", {"command": "study", "status": "finished" if finished else "running",
                                        "config": {"study": {"name": "handmade"}}, "elapsed_s": 61.0,
                                        "device": "cpu"})
    write_json(root / "steps.json", {"version": 1, "steps": {"train/nearest": {"status": "done", "hash": "x",
                                                                                 "seconds": 1.5}}})
    (root / "config.toml").write_text('[study]\nname = "handmade"  # <tag> & co\n', encoding="utf-8")
    if transfer:
        (root / "transfer").mkdir()
        with open(root / "transfer" / "matrix.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["detector", "train", "test", "metric", "value"])
            for det, base in (("radial:lr", 0.9), ("xy:svm", 0.7)):
                for i, tr in enumerate(names):
                    for j, te in enumerate(names):
                        for metric in ("auc", "eer"):
                            v = base - 0.1 * abs(i - j) + 0.013 * j
                            w.writerow([det, tr, te, metric, round(v if metric == "auc" else 1 - v, 4)])
    return root


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in IMG.findall(page)]


def test_report_sections_and_embedded_pngs(tmp_path):
    run = make_study_folder(tmp_path / "run")
    path = write_report(run)
    assert path == run / "report.html"
    page = path.read_text(encoding="utf-8")
    for section in ("id='summary'", "id='samples'", "id='spectra'", "id='transfer'", "id='run'"):
        assert section in page
    # Self-contained: no external resources of any kind.
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "http://" not in page and "https://" not in page
    images = _images(page)
    # 3 sample grids + radial, x/y and 2D spectra figures + one heatmap per detector.
    assert len(images) == 3 + 3 + 2
    for data in images:
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # The first image is the real sample grid: 16 images of 32 px -> 4 x 4 with 2 px padding.
    grid = Image.open(io.BytesIO(images[0]))
    assert grid.size == (4 * 34 + 2, 4 * 34 + 2)
    spectra = Image.open(io.BytesIO(images[3]))
    assert spectra.size[0] > 600 and spectra.size[1] > 300
    # The PNGs are also written beside the page.
    for name in ("spectra_radial.png", "spectra_xy.png", "spectra_2d.png"):
        assert (run / "report" / name).read_bytes()[:4] == b"\x89PNG"


def test_report_tables_show_the_numbers(tmp_path):
    run = make_study_folder(tmp_path / "run")
    page = write_report(run).read_text(encoding="utf-8")
    rows = read_matrix(run / "transfer" / "matrix.csv")
    diag = [r["value"] for r in rows if r["detector"] == "radial:lr" and r["metric"] == "auc"
            and r["train"] == r["test"] == "bed_of_nails"]
    assert f"{diag[0]:.3f}" in page  # the diagonal AUC is in the summary table
    assert "0.020" in page and "0.250" in page  # x_l1 and a cloaking score
    assert "no Inception weights offline" in page  # why FID/KID are missing
    assert "&lt;tag&gt; &amp; co" in page  # the config text is escaped, not interpreted
    assert "not finished" not in page


def test_grid_matches_the_csv(tmp_path):
    run = make_study_folder(tmp_path / "run")
    rows = read_matrix(run / "transfer" / "matrix.csv")
    trains, tests, values = _grid(rows, "xy:svm", "auc")
    assert trains == tests == ["nearest", "bed_of_nails"]
    with open(run / "transfer" / "matrix.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["detector"] == "xy:svm" and r["metric"] == "auc":
                assert values[trains.index(r["train"]), tests.index(r["test"])] == pytest.approx(float(r["value"]))


def test_unfinished_study_without_transfer(tmp_path):
    run = make_study_folder(tmp_path / "run", transfer=False, finished=False)
    page = write_report(run).read_text(encoding="utf-8")
    assert "not finished" in page
    assert "id='transfer'" not in page
    assert len(_images(page)) == 3 + 3


def test_report_of_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="study folder"):
        write_report(tmp_path / "empty")


def test_half_spectrum_matches_numpy_fft():
    """The plotted horizontal profile equals numpy's log power averaged over rows, at fx = 0..1/2."""
    x = smooth_images(6, 16, seed=5)
    prof = mean_spectra(x)["horizontal"]
    f, half = _half(prof)
    g = (x.double() / 255 * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)).sum(1).numpy()
    p = np.log(np.abs(np.fft.fft2(g, norm="ortho")) ** 2 + 1e-8).mean(axis=(0, 1))  # mean over images, rows
    freqs = np.fft.fftfreq(16)
    want = [p[np.argmin(np.abs(freqs - k / 16))] if k < 8 else p[8] for k in range(9)]
    np.testing.assert_allclose(f, np.arange(9) / 16)
    np.testing.assert_allclose(half, want, rtol=1e-4, atol=1e-3)


def test_zero_insertion_lifts_high_frequencies_in_saved_spectra(tmp_path):
    """The saved radial spectra order the hand-made sets as theory says at the highest radius."""
    run = make_study_folder(tmp_path / "run", transfer=False)
    d = load_run(run)
    real, near, zero = (d["spectra"][n]["radial"] for n in ("real", "nearest", "bed_of_nails"))
    assert zero[-1] > real[-1] > near[-1]
    assert load_arrays(run / "spectra" / "real.npz")["spectrum2d"].shape == (32, 32)


def test_report_shows_diversity_and_warns_below_the_level(tmp_path):
    from detectors.diversity import DIVERSITY_WARNING
    from plumbing.files import read_json

    run = make_study_folder(tmp_path / "run")
    for name, value in (("nearest", 0.91), ("bed_of_nails", DIVERSITY_WARNING / 2)):
        q = read_json(run / "quality" / f"{name}.json")
        write_json(run / "quality" / f"{name}.json", {**q, "diversity": value})
    page = write_report(run).read_text(encoding="utf-8")
    section = page[page.index("id='diversity'"):page.index("id='samples'")]
    assert "0.910" in section and f"{DIVERSITY_WARNING / 2:.3f}" in section
    assert "⚠ bed_of_nails: diversity below" in section and "⚠ nearest" not in section
    # No figure recorded (an older run): no section.
    for name in ("nearest", "bed_of_nails"):
        write_json(run / "quality" / f"{name}.json", {"radial_l1": 0.1})
    assert "id='diversity'" not in write_report(run).read_text(encoding="utf-8")


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts, with the <h3> and <h4> of its section."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, str, list[list[str]]]] = []
        self.h3 = self.h4 = ""
        self._tag = ""
        self._text: list[str] | None = None
        self._rows: list[list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self.h3 = self.h4 = ""
        if tag in ("h3", "h4", "td", "th"):
            self._tag, self._text = tag, []
        elif tag == "table":
            self._rows = []
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag in ("h3", "h4", "td", "th") and self._text is not None:
            text = "".join(self._text)
            if tag == "h3":
                self.h3, self.h4 = text, ""
            elif tag == "h4":
                self.h4 = text
            elif self._rows is not None:
                self._rows[-1].append(text)
            self._text = None
        elif tag == "table" and self._rows is not None:
            self.tables.append((self.h3, self.h4, self._rows))
            self._rows = None


def _write_seeded_matrix(run: Path) -> dict[tuple[str, str, str, str], tuple[float, float]]:
    """A matrix.csv over 3 seeds (value = mean, sd, n) with hand-picked numbers; returns them."""
    names = ["nearest", "bed_of_nails"]
    known = {}
    with open(run / "transfer" / "matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["detector", "train", "test", "metric", "value", "sd", "n"])
        for d, det in enumerate(("radial:lr", "xy:svm")):
            for i, tr in enumerate(names):
                for j, te in enumerate(names):
                    for k, metric in enumerate(("auc", "acc_fake")):
                        mean, sd = 0.9 - 0.3 * abs(i - j) - 0.05 * d - 0.1 * k, 0.011 + 0.02 * j + 0.004 * k
                        known[(det, tr, te, metric)] = (mean, sd)
                        w.writerow([det, tr, te, metric, repr(mean), repr(sd), 3])
    return known


def test_report_shows_mean_and_sd_over_seeds(tmp_path):
    run = make_study_folder(tmp_path / "run")
    known = _write_seeded_matrix(run)
    rows = read_matrix(run / "transfer" / "matrix.csv")
    assert {(r["sd"], r["n"]) for r in rows if r["detector"] == "xy:svm" and r["train"] == "nearest"
            and r["test"] == "nearest" and r["metric"] == "auc"} == {(0.011, 3)}
    # An attribution pooled over the 3 seeds (as pipelines.evaluation.transfer writes it).
    (run / "transfer" / "attribution").mkdir()
    write_grid(smooth_images(1, 32, seed=1), run / "transfer" / "attribution" / "radial-lr.png", 1)
    write_json(run / "transfer" / "attribution.json", {"radial:lr": {
        "labels": ["real", "nearest"], "confusion": [[30, 6], [3, 33]], "accuracy": 0.875, "accuracy_sd": 0.0416, "n": 3}})
    page = write_report(run).read_text(encoding="utf-8")
    assert "fitted 3 times" in page and "mean ± sd" in page
    assert "Accuracy over all test images: 0.875 ± 0.042 (mean ± sd of 3 seeds" in page
    parser = _Tables()
    parser.feed(page)
    checked = 0
    for h3, h4, table in parser.tables:
        metric = {"ROC-AUC": "auc", "fake accuracy @val threshold": "acc_fake"}.get(h4)
        if h3 not in ("radial:lr", "xy:svm") or metric is None:
            continue
        header, *body = table
        assert header[0] == "trained on \\ tested on"
        for row in body:
            for test, cell in zip(header[1:], row[1:], strict=True):
                mean, sd = known[(h3, row[0], test, metric)]
                assert cell == f"{mean:.3f} ± {sd:.3f}"
                checked += 1
    assert checked == 2 * 2 * 4  # two detectors, two metrics, 2 x 2 cells
    # At a glance: the diagonal AUC of each detector, with its sd.
    glance = parser.tables[0][2]
    col = glance[0].index("radial:lr AUC")
    nearest = next(r for r in glance if r[0] == "nearest")
    assert nearest[col] == "{:.3f} ± {:.3f}".format(*known[("radial:lr", "nearest", "nearest", "auc")])


def test_report_of_one_seed_has_no_sd(tmp_path):
    page = write_report(make_study_folder(tmp_path / "run")).read_text(encoding="utf-8")
    assert "±" not in page and "fitted" not in page
