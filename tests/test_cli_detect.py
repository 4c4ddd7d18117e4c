"""`forgelab detect fit / score / eval / list` on small PNG folders."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import smooth_images, write_pngs
from typer.testing import CliRunner

from detectors.detector import Detector, valid_pairs
from detectors.metrics import evaluate
from pipelines.cli import app
from pipelines.data.images import load_images

runner = CliRunner()


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGELAB_CACHE", str(tmp_path / "cache"))
    real = smooth_images(40, 32, seed=3)
    fake = F.interpolate(smooth_images(40, 16, seed=4).float(), scale_factor=2, mode="nearest").to(torch.uint8)
    write_pngs(real, tmp_path / "real")
    write_pngs(fake, tmp_path / "fake")
    return tmp_path


def invoke(*args: str):
    return runner.invoke(app, ["detect", *args])


def fit_args(tmp, out: str = "model", *extra: str) -> list[str]:
    return ["fit", "-d", "radial:svm", "--real", str(tmp / "real"), "--fake", str(tmp / "fake"),
            "--out", str(tmp / out), "--resolution", "32", "--no-progress", *extra]


def test_list_prints_features_classifiers_and_pairs():
    r = invoke("list")
    assert r.exit_code == 0, r.output
    for word in ("radial", "xy", "spectrum", "dct", "pixels", "svm", "lr", "rf", "kmeans"):
        assert word in r.output
    assert set(r.output.split("valid pairs:")[1].split()) == set(valid_pairs())
    # Every feature and classifier line starts with the name alone, then its description.
    listed = [line.split()[0] for line in r.output.split("valid pairs:")[0].splitlines() if line.startswith("  ")]
    assert {"periodicity", "fingerprint", "deviation", "nprnet"} <= set(listed)


def test_fit_score_eval(folders):
    tmp = folders
    r = invoke(*fit_args(tmp, "model", "-p", "C=3", "-o", "normalize=minmax"))
    assert r.exit_code == 0, r.output
    model = tmp / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["config"]["classifier_params"] == {"C": 3}
    det = Detector.load(model)
    assert det.feature_options == {"normalize": "minmax"} and det.classifier.params["C"] == 3

    r = invoke("score", str(model), str(tmp / "real"), str(tmp / "fake"), "--out", str(tmp / "s.csv"), "--no-progress")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp / "s.csv").open()))
    assert len(rows) == 80 and set(rows[0]) == {"path", "score", "label"}
    ref = np.concatenate([det.score(load_images(tmp / d, 32).images) for d in ("real", "fake")])
    np.testing.assert_allclose([float(row["score"]) for row in rows], ref, atol=1e-6)
    assert [row["label"] for row in rows] == ["fake" if s >= det.threshold else "real" for s in ref]

    r = invoke("eval", str(model), "--real", str(tmp / "real"), "--fake", str(tmp / "fake"), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    y = np.r_[np.zeros(40), np.ones(40)].astype(int)
    assert out["metrics"] == pytest.approx(evaluate(y, ref, det.threshold))
    assert out["n_real"] == 40 and out["n_fake"] == 40

    r = invoke("eval", str(model), "--real", str(tmp / "real"), "--fake", str(tmp / "fake"), "--no-progress")
    assert r.exit_code == 0 and "ROC AUC" in r.output


def test_refuses_to_overwrite_a_finished_model(folders):
    tmp = folders
    assert invoke(*fit_args(tmp)).exit_code == 0
    r = invoke(*fit_args(tmp))
    assert r.exit_code == 1 and "--overwrite" in r.output
    assert invoke(*fit_args(tmp, "model", "--overwrite")).exit_code == 0
    r = invoke("score", str(tmp / "model"), str(tmp / "real"), "--out", str(tmp / "model" / "manifest.json"))
    assert r.exit_code == 1 and "already exists" in r.output


def test_multiclass_fit_writes_a_class_column(folders):
    tmp = folders
    write_pngs(smooth_images(40, 32, seed=9) // 2 * 2, tmp / "even")  # a second, different fake source
    r = invoke(*fit_args(tmp, "attr", "--fake", str(tmp / "even"), "--multiclass"))
    assert r.exit_code == 0, r.output
    assert Detector.load(tmp / "attr").class_names == ["real", "fake", "even"]
    r = invoke("score", str(tmp / "attr"), str(tmp / "even"), "--out", str(tmp / "a.csv"), "--no-progress")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp / "a.csv").open()))
    assert {row["class"] for row in rows} <= {"real", "fake", "even"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-d", "radial:svn"], "Unknown classifier 'svn'"),
        (["-d", "xy:smallcnn"], "cannot take the 1D feature"),
        (["-p", "C"], "KEY=VALUE"),
        (["-o", "size=3"], "Unknown option"),
    ],
)
def test_user_errors_are_one_line(folders, args, words):
    r = invoke(*fit_args(folders, "bad", *args))
    assert r.exit_code == 1
    assert words in r.output and "Traceback" not in r.output
    assert not (folders / "bad").exists()


def test_missing_folders_are_one_line(folders):
    r = invoke("score", str(folders / "nope"), str(folders / "real"), "--out", str(folders / "x.csv"))
    assert r.exit_code == 1 and "does not exist" in r.output
    r = invoke("fit", "--real", str(folders / "nope"), "--fake", str(folders / "fake"), "--out", str(folders / "m"))
    assert r.exit_code == 1 and "nope" in r.output and "Traceback" not in r.output


def test_real_only_fit_and_patch_scoring_from_the_cli(folders):
    tmp = folders
    r = invoke("fit", "-d", "periodicity:deviation", "--real", str(tmp / "real"), "--out", str(tmp / "alone"),
               "--resolution", "32", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "real images alone" in r.output and Detector.load(tmp / "alone").validation["real_only"]
    r = invoke("fit", "-d", "radial:svm", "--real", str(tmp / "real"), "--out", str(tmp / "svm"), "--resolution", "32")
    assert r.exit_code != 0 and "needs fake images to fit" in r.output
    # 32 px images, 4 patches of 16 px each: fitted, scored and evaluated on patches.
    r = invoke(*fit_args(tmp, "patchy", "--patches", "4", "--patch-size", "16"))
    assert r.exit_code == 0, r.output
    assert "4 patches of 16 px" in r.output
    det = Detector.load(tmp / "patchy")
    assert (det.patches, det.patch_size, det.image_size, det.resolution) == (4, 16, 32, (16, 16))
    r = invoke("score", str(tmp / "patchy"), str(tmp / "fake"), "--out", str(tmp / "s.csv"), "--no-progress")
    assert r.exit_code == 0, r.output
    with open(tmp / "s.csv", newline="") as f:
        scores = [float(row["score"]) for row in csv.DictReader(f)]
    expected = det.score(load_images(tmp / "fake", 32).images)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    r = invoke("eval", str(tmp / "patchy"), "--real", str(tmp / "real"), "--fake", str(tmp / "fake"), "--json")
    assert r.exit_code == 0, r.output
    r = invoke(*fit_args(tmp, "bad", "--patches", "4"))
    assert r.exit_code != 0 and "--patches needs --patch-size" in r.output
