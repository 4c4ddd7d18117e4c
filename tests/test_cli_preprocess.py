"""`--preprocess crop` and the format parity warning through the CLI (detect fit / score, transfer)."""

from __future__ import annotations

import csv
import json

import torch
from conftest import smooth_images, write_pngs
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


def nearest_up(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, -2).repeat_interleave(2, -1)


def test_detect_fit_crop_keeps_the_grid_and_skips_small_images(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGELAB_CACHE", str(tmp_path / "cache"))
    # 40 px sources cropped to 32: resize would smear the fakes' 2x2 grid, crop keeps it.
    write_pngs(smooth_images(24, 40, seed=1), tmp_path / "real")
    write_pngs(nearest_up(smooth_images(24, 20, seed=2)), tmp_path / "fake")
    Image.new("RGB", (20, 50)).save(tmp_path / "fake" / "tiny.png")
    args = ["detect", "fit", "-d", "npr:svm", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
            "--out", str(tmp_path / "model"), "--resolution", "32", "--preprocess", "crop", "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "tiny.png: 20x50 is smaller than the 32x32 crop; pass a smaller --resolution or --preprocess resize" in r.output
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["config"]["preprocess"] == "crop" and manifest["parity_warnings"] == []
    # score reads the mode from the model folder: the fakes' npr is exactly zero, so they score as fake.
    r = runner.invoke(app, ["detect", "score", str(tmp_path / "model"), str(tmp_path / "fake"),
                            "--out", str(tmp_path / "s.csv"), "--no-progress"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 24 and all(row["label"] == "fake" for row in rows)
    r = runner.invoke(app, [*args[:-3], "--preprocess", "zoom", "--no-progress", "--overwrite"])
    assert r.exit_code != 0 and "Unknown preprocess mode 'zoom'" in r.output


def test_detect_fit_warns_about_jpeg_real_and_png_fake(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGELAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "real").mkdir()
    for i, img in enumerate(smooth_images(16, 32, seed=1)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / "real" / f"{i}.jpg", quality=85)
    write_pngs(smooth_images(16, 32, seed=2), tmp_path / "fake")
    r = runner.invoke(app, ["detect", "fit", "-d", "radial:lr", "--real", str(tmp_path / "real"), "--fake",
                            str(tmp_path / "fake"), "--out", str(tmp_path / "m"), "--resolution", "32", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "Warning: Real images are JPEG (quality about 85) but fake set 'fake' is PNG" in r.output
    assert "--jpeg Q" in r.output
    assert len(json.loads((tmp_path / "m" / "manifest.json").read_text())["parity_warnings"]) == 1


def test_transfer_warns_and_records_parity(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGELAB_CACHE", str(tmp_path / "cache"))
    write_pngs(smooth_images(30, 64, seed=1), tmp_path / "real")
    write_pngs(nearest_up(smooth_images(30, 16, seed=2)), tmp_path / "a")
    write_pngs(smooth_images(30, 32, seed=3), tmp_path / "b")
    r = runner.invoke(app, ["transfer", "--real", str(tmp_path / "real"), "--fake", f"a={tmp_path / 'a'}",
                            "--fake", f"b={tmp_path / 'b'}", "--detector", "periodicity:lr", "--out",
                            str(tmp_path / "run"), "--resolution", "32"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    warns = manifest["parity_warnings"]
    assert len(warns) == 2 and all("natively 64 px" in w and "--preprocess crop" in w for w in warns)
    assert "Warning: Real images are natively 64 px but fake set 'a' is 32 px" in r.output
