"""The report's training curves, its weakest transfer (off the diagonal only) and wide tables that scroll."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
from test_report import make_study_folder

from pipelines.report.page import write_report
from pipelines.report.training import curve, read_log, training_logs


def _write_logs(run, names):
    for k, n in enumerate(names):
        folder = run / "generators" / n
        folder.mkdir(parents=True)
        lines = []
        for step in range(10, 110, 10):
            rec = {"step": step, "loss_d": 1.0 / step + k, "loss_g": 2.0 + k, "images_per_s": 100.0}
            if step % 50 == 0:
                rec["spectral_l1"] = 0.5 / step
            lines.append(json.dumps(rec))
        lines.append('{"step": 11')  # a half-written line from a killed run
        (folder / "log.jsonl").write_text("\n".join(lines) + "\n")


def test_training_section_plots_each_generators_losses_and_spectral_distance(tmp_path):
    run = make_study_folder(tmp_path / "run")
    _write_logs(run, ["nearest", "bed_of_nails"])
    logs = training_logs(run, ["nearest", "bed_of_nails", "missing"])
    assert list(logs) == ["nearest", "bed_of_nails"] and len(logs["nearest"]) == 10
    steps, values = curve(logs["bed_of_nails"], "spectral_l1")
    assert steps.tolist() == [50, 100] and np.allclose(values, [0.01, 0.005])
    steps, values = curve(logs["nearest"], "loss_d")
    assert steps.tolist() == list(range(10, 110, 10)) and np.allclose(values, 1.0 / steps)

    page = write_report(run).read_text()
    assert "<h2 id='training'>Training</h2>" in page and "href='#training'" in page
    assert (run / "report" / "training.png").is_file()
    assert "tensorboard --logdir" in page


def test_no_training_section_without_logs(tmp_path):
    run = make_study_folder(tmp_path / "run")
    assert "id='training'" not in write_report(run).read_text()
    assert read_log(tmp_path / "nothing.jsonl") == []


def _weakest_cells(page: str) -> dict[str, str]:
    """The summary table's "weakest transfer" column by detector."""
    start = page.rindex("<table", 0, page.index("weakest transfer"))
    table = page[start:page.index("</table>", start)]
    headers = [re.sub("<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>(.*?)</th>", table)]
    col = headers.index("weakest transfer")
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    out = {}
    for row in rows:
        cells = [re.sub("<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        if cells:
            out[cells[0]] = cells[col]
    return out


def test_weakest_transfer_is_an_off_diagonal_cell(tmp_path):
    run = make_study_folder(tmp_path / "run")
    names = ["nearest", "bed_of_nails"]
    # The diagonal cell nearest -> nearest is the lowest of all; the weakest *transfer* is 0.7.
    values = {("nearest", "nearest"): 0.55, ("nearest", "bed_of_nails"): 0.8,
              ("bed_of_nails", "nearest"): 0.7, ("bed_of_nails", "bed_of_nails"): 0.95}
    with open(run / "transfer" / "matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["detector", "train", "test", "metric", "value"])
        for tr in names:
            for te in names:
                w.writerow(["radial:lr", tr, te, "auc", values[(tr, te)]])
    weakest = _weakest_cells(write_report(run).read_text())
    assert weakest["radial:lr"] == "bed_of_nails → nearest (0.70)"


def test_wide_tables_scroll_inside_the_page(tmp_path):
    run = make_study_folder(tmp_path / "run")
    detectors = [f"feature{i}:lr" for i in range(7)]
    with open(run / "transfer" / "matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["detector", "train", "test", "metric", "value"])
        for det in detectors:
            for tr in ("nearest", "bed_of_nails"):
                for te in ("nearest", "bed_of_nails"):
                    w.writerow([det, tr, te, "auc", 0.9])
    page = write_report(run).read_text()
    glance = page[page.index("<h2 id='summary'>"):page.index("</table>", page.index("<h2 id='summary'>"))]
    assert "<div class='scroll'><table>" in glance and all(f"{d} AUC" in glance for d in detectors)
    # Every table sits in a scrolling box, and the box scrolls sideways.
    assert page.count("<table>") == page.count("<div class='scroll'><table>")
    assert re.search(r"\.scroll\s*\{[^}]*overflow-x:\s*auto", page)
