"""``forgelab bench`` on benchmark trees built on the fly: the table against scikit-learn, layouts, errors,
mixed sizes and codecs under --align, robustness sweeps and fitted models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images, write_pngs
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from typer.testing import CliRunner

from detectors.metrics import BENCH_METRICS
from pipelines.cli import app
from pipelines.evaluation.bench import parse_sweeps, parse_train, scan_tree, sweep_perturb

R = 32


def _checker(n: int, seed: int, size: int = R) -> torch.Tensor:
    """Smooth images plus a +-12 one-pixel checkerboard (energy at the Nyquist corner)."""
    base = smooth_images(n, size, seed=seed).int()
    cb = (torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2
    return (base + 24 * cb - 12).clamp(0, 255).to(torch.uint8)


def _zero_inserted(n: int, seed: int) -> torch.Tensor:
    out = torch.zeros(n, 3, R, R, dtype=torch.uint8)
    out[:, :, ::2, ::2] = smooth_images(n, R // 2, seed=seed)
    return out


def _source(folder: Path, real: torch.Tensor, fake: torch.Tensor, classes: bool) -> None:
    """One source in the flat layout, or split over two classes."""
    if not classes:
        write_pngs(real, folder / "0_real")
        write_pngs(fake, folder / "1_fake")
        return
    for k, cls in enumerate(("cat", "dog")):
        write_pngs(real[k::2], folder / cls / "0_real")
        write_pngs(fake[k::2], folder / cls / "1_fake")


def _tree(root: Path, classes: bool, val: bool) -> Path:
    _source(root / "train" / "chk", smooth_images(40, R, 1), _checker(40, 2), classes)
    if val:
        _source(root / "val" / "chk", smooth_images(16, R, 9), _checker(16, 10), classes)
    _source(root / "test" / "chk", smooth_images(24, R, 3), _checker(30, 4), classes)  # unbalanced on purpose
    _source(root / "test" / "zer", smooth_images(20, R, 5), _zero_inserted(26, 6), classes)
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _oracle(y: np.ndarray, s: np.ndarray) -> float:
    """Best accuracy of any threshold, from scikit-learn's full ROC curve."""
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    p, n = y.sum(), (1 - y).sum()
    return float(((tpr * p + (1 - fpr) * n) / (p + n)).max())


@pytest.mark.parametrize("classes,val", [(False, True), (True, False)], ids=["flat+val", "classes+split"])
def test_every_number_of_the_table_is_scikit_learns_on_the_same_scores(tmp_path, classes, val):
    root = _tree(tmp_path / "tree", classes, val)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["bench", str(root), "--train", "chk", "--detector", "radial:lr", "--out", str(out),
                                 "--no-progress", "--sweep", "jpeg=60", "--sweep", "blur=0,1"])
    assert r.exit_code == 0, r.output
    assert "radial:lr · trained on chk" in r.output and "Mean" in r.output and "oracle" in r.output
    assert "no set is JPEG, so nothing was re-encoded" in r.output

    cell = json.loads((out / "cells" / "radial-lr" / "chk.json").read_text())
    assert cell["calibration"] == ("val/chk" if val else "0.2 of train/chk")
    rows = _rows(out / "results.csv")
    assert list(rows[0]) == ["detector", "train", "test", "condition", "metric", "value"]
    value = {(x["test"], x["condition"], x["metric"]): float(x["value"]) for x in rows}
    assert {x["condition"] for x in rows} == {"none", "jpeg=60", "blur=0", "blur=1"}
    assert {x["metric"] for x in rows} == set(BENCH_METRICS)
    t = cell["threshold"]
    for src, n_real, n_fake in (("chk", 24, 30), ("zer", 20, 26)):
        s_real, s_fake = (np.asarray(cell["scores"][src][k]) for k in ("real", "fake"))
        assert (s_real.size, s_fake.size) == (n_real, n_fake)  # every test image, classes pooled
        y = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
        s = np.r_[s_real, s_fake]
        want = {
            "ap": average_precision_score(y, s), "auc": roc_auc_score(y, s),
            "acc": np.mean((s >= 0.5) == y), "acc_real_05": np.mean(s_real < 0.5), "acc_fake_05": np.mean(s_fake >= 0.5),
            "acc_cal": np.mean((s >= t) == y), "acc_real_cal": np.mean(s_real < t), "acc_fake_cal": np.mean(s_fake >= t),
            "acc_oracle": _oracle(y, s),
        }
        for metric, v in want.items():
            assert value[(src, "none", metric)] == pytest.approx(v, abs=1e-12), (src, metric)
        assert value[(src, "none", "acc_oracle")] >= value[(src, "none", "acc_cal")]
        assert value[(src, "none", "acc_oracle")] >= value[(src, "none", "acc")]
        # blur=0 is the identity: the same numbers as unperturbed.
        assert value[(src, "blur=0", "ap")] == value[(src, "none", "ap")]
    for cond in ("none", "jpeg=60", "blur=1"):
        for metric in BENCH_METRICS:
            assert value[("Mean", cond, metric)] == pytest.approx((value[("chk", cond, metric)] + value[("zer", cond, metric)]) / 2)
    assert value[("chk", "none", "ap")] > 0.99  # trained on the checkerboard, it finds it

    res = json.loads((out / "results.json").read_text())
    assert res["results"]["radial:lr"]["chk"]["none"]["Mean"]["ap"] == value[("Mean", "none", "ap")]
    assert res["layouts"]["test/zer"] == ("classes" if classes else "flat")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["align"]["quality"] is None
    page = (out / "report.html").read_text()
    assert "oracle" in page and "figures/hist_radial-lr_chk.png" in page and "figures/robustness_radial-lr.png" in page
    for png in ("hist_radial-lr_chk.png", "robustness_radial-lr.png"):
        assert (out / "figures" / png).read_bytes()[:4] == b"\x89PNG"

    # Resume: an interrupted run (manifest not finished) reuses its finished cells, file and numbers alike.
    cell_file = out / "cells" / "radial-lr" / "chk.json"
    before = cell_file.stat().st_mtime_ns
    manifest["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    r2 = CliRunner().invoke(app, ["bench", str(root), "--train", "chk", "--detector", "radial:lr", "--out", str(out),
                                  "--no-progress", "--sweep", "jpeg=60", "--sweep", "blur=0,1"])
    assert r2.exit_code == 0, r2.output
    assert cell_file.stat().st_mtime_ns == before and _rows(out / "results.csv") == rows


def _save(images: torch.Tensor, folder: Path, fmt: str, quality: int | None = None, size: tuple[int, int] | None = None,
          subsampling: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        if size is not None:
            pil = pil.resize(size, Image.Resampling.BICUBIC)
        if fmt == "JPEG":
            pil.save(folder / f"{i:03d}.jpg", quality=quality, subsampling=subsampling)
        else:
            pil.save(folder / f"{i:03d}.png")


def test_align_runs_on_mixed_sizes_and_codecs_in_both_layouts(tmp_path):
    """32 px PNG, 1024 px JPEG (classes) and 200x150 JPEG sets: one quality, native crops, Mean = mean of the rows."""
    root = tmp_path / "tree"
    _save(smooth_images(12, R, 1), root / "train" / "small" / "0_real", "PNG")
    _save(_checker(12, 2), root / "train" / "small" / "1_fake", "PNG")
    _save(smooth_images(6, R, 3), root / "test" / "small" / "0_real", "PNG")
    _save(_checker(6, 4), root / "test" / "small" / "1_fake", "PNG")
    for k, cls in enumerate(("a", "b")):
        _save(smooth_images(3, 64, 10 + k), root / "test" / "big" / cls / "0_real", "JPEG", 90, (1024, 1024))
        _save(_checker(3, 20 + k, 64), root / "test" / "big" / cls / "1_fake", "JPEG", 95, (1024, 1024))
    _save(smooth_images(4, 64, 30), root / "test" / "mid" / "0_real", "JPEG", 80, (200, 150), subsampling=0)
    _save(smooth_images(4, 64, 31), root / "test" / "mid" / "1_fake", "PNG", None, (200, 150))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["bench", str(root), "--train", "small", "--detector", "radial:lr",
                                 "--detector", "fingerprint:deviation", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "every set re-encoded as JPEG quality 80, 4:2:0 chroma" in " ".join(r.output.split())
    res = json.loads((out / "results.json").read_text())
    assert res["sizes"]["resolution"] == 32 and res["align"]["quality"] == 80
    assert res["layouts"] == {"train/small": "flat", "test/small": "flat", "test/big": "classes", "test/mid": "flat"}
    assert res["sizes"]["test"]["big"] == {"real": 6, "fake": 6}
    for spec in ("radial:lr", "fingerprint:deviation"):
        table = res["results"][spec]["small"]["none"]
        for metric in BENCH_METRICS:
            per = [table[s][metric] for s in ("small", "big", "mid")]
            assert np.isfinite(per).all()
            assert table["Mean"][metric] == pytest.approx(np.mean(per))


def test_layout_errors_are_one_sentence_and_write_nothing(tmp_path):
    runner = CliRunner()

    def run(root: Path, *extra: str) -> str:
        out = tmp_path / "out"
        r = runner.invoke(app, ["bench", str(root), "--detector", "radial:lr", "--out", str(out), "--no-progress",
                                *extra])
        assert r.exit_code != 0 and not out.exists()
        (line,) = [x for x in r.output.splitlines() if x.strip()]
        assert line.startswith("Error: ")
        return " ".join(r.output.split())

    good = _tree(tmp_path / "good", classes=False, val=False)
    assert "No training source 'nope' under train/; available: chk." in run(good, "--train", "nope")
    no_fake = tmp_path / "nofake"
    write_pngs(smooth_images(4, R, 0), no_fake / "train" / "a" / "0_real")
    (no_fake / "test").mkdir()
    assert "has 0_real/ but no 1_fake/" in run(no_fake, "--train", "a")
    empty = tmp_path / "empty"
    write_pngs(smooth_images(4, R, 0), empty / "train" / "a" / "0_real")
    (empty / "train" / "a" / "1_fake").mkdir(parents=True)
    assert "1_fake holds no images" in run(empty, "--train", "a")
    neither = tmp_path / "neither"
    write_pngs(smooth_images(4, R, 0), neither / "train" / "a" / "pictures")
    assert "holds no 0_real/ and 1_fake/" in run(neither, "--train", "a")
    assert "holds no test/ folder" in run(_only_train(tmp_path / "notest"), "--train", "a")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_tree(tmp_path / "missing")


def _only_train(root: Path) -> Path:
    _source(root / "train" / "a", smooth_images(4, R, 0), _checker(4, 1), classes=False)
    return root


def test_sweep_conditions_are_what_they_say():
    x = smooth_images(6, R, seed=3)
    assert torch.equal(sweep_perturb(x, "blur", 0), x) and torch.equal(sweep_perturb(x, "resize", 1), x)
    for kind, v in (("jpeg", 50), ("blur", 2), ("resize", 0.5), ("resize", 1.5)):
        y = sweep_perturb(x, kind, v)
        assert y.shape == x.shape and y.dtype == torch.uint8 and not torch.equal(x, y)
    flat = torch.full((2, 3, R, R), 77, dtype=torch.uint8)
    for kind, v in (("blur", 1), ("resize", 0.5), ("resize", 1.5)):
        assert torch.equal(sweep_perturb(flat, kind, v), flat)  # a constant image stays constant
    # Upscaling 2x and cropping the centre: pixel (i, j) of the crop lies between source pixels (8 + i/2, 8 + j/2).
    ramp = torch.arange(R, dtype=torch.float32).expand(1, 3, R, R).clone()
    up = sweep_perturb((ramp * 4).to(torch.uint8), "resize", 2.0).float()
    assert torch.allclose(up[0, 0, 0, 10:20], 4 * (8 + (torch.arange(10, 20) - 0.5) / 2), atol=1.0)
    assert parse_sweeps(["jpeg=100,95", "blur=0,1", "resize=0.5"]) == [
        ("jpeg", 100), ("jpeg", 95), ("blur", 0.0), ("blur", 1.0), ("resize", 0.5)]
    for bad, msg in (("gamma=2", "KIND=V1"), ("jpeg=101", "between 1 and 100"), ("blur=-1", "0 or more"),
                     ("resize=0", "above 0"), ("jpeg=x", "not a number")):
        with pytest.raises(ValueError, match=msg):
            parse_sweeps([bad])


def test_a_fitted_model_is_evaluated_with_its_own_threshold(tmp_path):
    from detectors.detector import Detector

    root = _tree(tmp_path / "tree", classes=False, val=False)
    det = Detector("radial:lr", seed=0).fit(smooth_images(30, R, 40), _checker(30, 41))
    det.save(tmp_path / "model")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["bench", str(root), "--model", str(tmp_path / "model"), "--out", str(out),
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    cell = json.loads((out / "cells" / "radial-lr" / "model-model.json").read_text())
    assert cell["threshold"] == pytest.approx(det.threshold) and cell["n_train"] is None
    s = np.r_[cell["scores"]["chk"]["real"], cell["scores"]["chk"]["fake"]]
    x = torch.cat([smooth_images(24, R, 3), _checker(30, 4)])
    assert np.allclose(s, det.score(x))  # PNGs at 32 px, nothing re-encoded: the model sees the same pixels


def test_train_groups_are_rows_and_unions():
    assert parse_train(["a,b", "a", " c "], ["a", "b", "c"]) == {"a+b": ["a", "b"], "a": ["a"], "c": ["c"]}
    with pytest.raises(ValueError, match=r"No training source 'd' under train/; available: a, b\."):
        parse_train(["a,d"], ["a", "b"])
    with pytest.raises(ValueError, match="given twice"):
        parse_train(["a", "a"], ["a"])


def test_real_only_row_fits_on_real_images_alone_and_skips_detectors_that_need_fakes(tmp_path):
    root = _tree(tmp_path / "tree", classes=False, val=True)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["bench", str(root), "--train", "real-only:chk", "--train", "chk",
                                 "--detector", "radial:deviation", "--detector", "radial:lr", "--out", str(out),
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    cell = json.loads((out / "cells" / "radial-deviation" / "real-only-chk.json").read_text())
    assert cell["n_train"] == {"real": 40, "fake": 0} and cell["n_val"] == {"real": 16, "fake": 0}
    assert not (out / "cells" / "radial-lr" / "real-only-chk.json").exists()  # lr needs fakes: no cell
    # Fitted on real photos alone, the one-pixel checkerboard and zero insertion both stand out.
    ap = {row["test"]: float(row["value"]) for row in _rows(out / "results.csv")
          if row["detector"] == "radial:deviation" and row["train"] == "real-only:chk" and row["metric"] == "ap"
          and row["condition"] == "none"}
    assert set(ap) == {"chk", "zer", "Mean"} and min(ap["chk"], ap["zer"]) > 0.9
    assert ap["Mean"] == pytest.approx((ap["chk"] + ap["zer"]) / 2)


def test_real_only_row_names_the_problem_when_no_detector_can_fit_without_fakes(tmp_path):
    root = _tree(tmp_path / "tree", classes=False, val=False)
    r = CliRunner().invoke(app, ["bench", str(root), "--train", "real-only:chk", "--detector", "radial:lr",
                                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert r.exit_code != 0 and "real images alone" in r.output
    r = CliRunner().invoke(app, ["bench", str(root), "--train", "real-only", "--detector", "radial:deviation",
                                 "--out", str(tmp_path / "out2"), "--no-progress"])
    assert r.exit_code != 0 and "real-only:chk" in r.output


def test_patches_fit_and_score_k_crops_per_image(tmp_path, monkeypatch):
    """--patches 4 --patch-size 16: every 32 px image goes to the detector as four 16 px crops (fitting and
    scoring alike), and the per-image scores still separate the checkerboard fakes."""
    import detectors.detector as detector_module

    seen = []
    real_init = detector_module.Detector.__init__

    def spy(self, *args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("patches", "patch_size", "patch_reduce", "patch_align")})
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(detector_module.Detector, "__init__", spy)
    root = _tree(tmp_path / "tree", classes=False, val=True)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["bench", str(root), "--train", "chk", "--detector", "radial:lr", "--no-align",
                                 "--patches", "4", "--patch-size", "16", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert {"patches": 4, "patch_size": 16, "patch_reduce": "mean", "patch_align": 2} in seen
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["patches"] == 4 and manifest["config"]["patch_size"] == 16
    auc = {row["test"]: float(row["value"]) for row in _rows(out / "results.csv")
           if row["metric"] == "auc" and row["condition"] == "none"}
    assert auc["chk"] > 0.9


def test_patches_larger_than_the_images_are_refused_in_one_sentence(tmp_path):
    root = _tree(tmp_path / "tree", classes=False, val=True)
    r = CliRunner().invoke(app, ["bench", str(root), "--train", "chk", "--detector", "radial:lr", "--no-align",
                                 "--patches", "4", "--patch-size", "48", "--out", str(tmp_path / "out"),
                                 "--no-progress"])
    assert r.exit_code == 1
    assert "--patches needs --patch-size, a crop side between 4 and the image size (32 px), got 48." in r.output


def test_per_detector_parameters_reach_that_detector_and_deviation_trains_on_every_real_image(tmp_path, monkeypatch):
    import detectors.detector as detector_module

    seen = []
    real_fit = detector_module.Detector.fit

    def spy(self, real_x, fake_x, *a, **k):
        seen.append((self.spec, dict(self.classifier_params), real_x.shape[0], 0 if fake_x is None else fake_x.shape[0]))
        return real_fit(self, real_x, fake_x, *a, **k)

    monkeypatch.setattr(detector_module.Detector, "fit", spy)
    root = _tree(tmp_path / "tree", classes=False, val=True)
    # One real image more than fakes in the training folder: balanced classes drop it, deviation keeps it.
    extra = root / "train" / "chk" / "0_real" / "extra.png"
    Image.fromarray(smooth_images(1, R, seed=99)[0].permute(1, 2, 0).numpy()).save(extra)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["bench", str(root), "--train", "chk", "--detector", "radial:deviation",
                                 "--detector", "radial:lr", "-p", "radial:deviation:floor=0.5", "--no-align",
                                 "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    fits = {spec: (params, n_real, n_fake) for spec, params, n_real, n_fake in seen}
    assert fits["radial:deviation"][0] == {"floor": 0.5} and fits["radial:lr"][0] == {}
    assert fits["radial:lr"][1] == fits["radial:lr"][2] == fits["radial:deviation"][2]
    assert fits["radial:deviation"][1] == fits["radial:deviation"][2] + 1
    assert json.loads((out / "manifest.json").read_text())["config"]["params"] == {"radial:deviation": {"floor": 0.5}}
