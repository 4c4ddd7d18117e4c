"""pipelines.evaluation.transfer on tiny synthetic sources with known fingerprints, and the ``forgelab transfer`` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images, write_pngs
from typer.testing import CliRunner

from detectors.detector import Detector
from pipelines.cli import app
from pipelines.data.images import ImageSet, load_images
from pipelines.evaluation import transfer as transfer_mod
from pipelines.evaluation.transfer import make_splits, parse_rows, row_sources, run_transfer
from pipelines.evaluation.transfer_outputs import HEATMAP_METRICS

N, R = 60, 32


def _set(images: torch.Tensor, name: str) -> ImageSet:
    return ImageSet(images, [f"{name}/{i}" for i in range(len(images))], source=name)


def _checker(seed: int, n: int = N) -> torch.Tensor:
    """Smooth images plus a +-12 one-pixel checkerboard (energy at the Nyquist corner)."""
    base = smooth_images(n, R, seed=seed).int()
    cb = (torch.arange(R)[:, None] + torch.arange(R)[None, :]) % 2
    return (base + 24 * cb - 12).clamp(0, 255).to(torch.uint8)


def _zero_inserted(seed: int, n: int = N) -> torch.Tensor:
    """Half-size smooth images upsampled by zero insertion (bed of nails): spectral replicas."""
    out = torch.zeros(n, 3, R, R, dtype=torch.uint8)
    out[:, :, ::2, ::2] = smooth_images(n, R // 2, seed=seed)
    return out


@pytest.fixture(scope="module")
def sources() -> tuple[ImageSet, dict[str, ImageSet]]:
    return _set(smooth_images(N, R, seed=10), "real"), {
        "checker": _set(_checker(11), "checker"), "zeros": _set(_zero_inserted(12), "zeros")}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_rows_and_sources():
    assert parse_rows(["each,all", "loo", "each"]) == ["each", "all", "loo"]
    assert row_sources(["each", "all", "loo"], ["a", "b", "c"]) == {
        "a": ["a"], "b": ["b"], "c": ["c"], "all": ["a", "b", "c"],
        "loo:a": ["b", "c"], "loo:b": ["a", "c"], "loo:c": ["a", "b"]}
    with pytest.raises(ValueError, match="Unknown row kind 'diag'"):
        parse_rows("each,diag")
    with pytest.raises(ValueError, match="at least two fake sources"):
        row_sources(["loo"], ["a"])


def test_splits_are_disjoint_and_pairs_keep_their_test_set():
    imgs = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 3, 4, 4).contiguous()
    s = make_splits(_set(imgs, "x"), "x", (0.6, 0.2, 0.2), seed=0)
    ids = [set(t[:, 0, 0, 0].tolist()) for t in (s.train, s.val, s.test)]
    assert [len(i) for i in ids] == [30, 10, 10] and set().union(*ids) == set(range(50))
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    p = make_splits((_set(imgs[:40], "t"), _set(imgs[40:], "u")), "x", (0.6, 0.2, 0.2), seed=0)
    assert torch.equal(p.test, imgs[40:]) and p.train.shape[0] == 30 and p.val.shape[0] == 10
    assert set(p.train[:, 0, 0, 0].tolist()) | set(p.val[:, 0, 0, 0].tolist()) == set(range(40))
    with pytest.raises(ValueError, match=r"validation split of x has 1 image"):
        make_splits(_set(imgs[:6], "x"), "x", (0.6, 0.2, 0.2), seed=0)


def test_matrix_values_schema_and_outputs(sources, tmp_path: Path, monkeypatch):
    real, fakes = sources
    seen_real: list[torch.Tensor] = []
    original = transfer_mod.TestFeatures.score

    def spy(self, det, name, images):
        if name == "real":
            seen_real.append(images.clone())
        return original(self, det, name, images)

    monkeypatch.setattr(transfer_mod.TestFeatures, "score", spy)
    records = run_transfer(real, fakes, ["radial:lr"], tmp_path, rows=["each", "all", "loo"], seed=0)

    rows = _read_csv(tmp_path / "matrix.csv")
    assert list(rows[0]) == ["detector", "train", "test", "metric", "value"]
    n_metrics = len({r["metric"] for r in rows})
    assert {"ap", "auc", "acc", "acc_cal", "eer"} <= {r["metric"] for r in rows}
    # rows: checker, zeros, all, loo:checker, loo:zeros; columns: checker, zeros.
    assert len(rows) == 5 * 2 * n_metrics == len(records)
    assert {r["train"] for r in rows} == {"checker", "zeros", "all", "loo:checker", "loo:zeros"}
    assert {r["test"] for r in rows} == {"checker", "zeros"}
    val = {(r["train"], r["test"], r["metric"]): float(r["value"]) for r in rows}
    # Each fingerprint is plain in the radial spectrum: trained on it, the detector finds it.
    for src in ("checker", "zeros"):
        assert val[(src, src, "ap")] > 0.99 and val[(src, src, "auc")] > 0.99
        assert val[("all", src, "ap")] > 0.99
        assert val[(src, src, "eer")] < 0.05
    for key, v in val.items():
        assert 0.0 <= v <= 1.0, key

    # The same real test images are scored in every row.
    assert len(seen_real) == 5 and all(torch.equal(seen_real[0], t) for t in seen_real)
    # Balanced classes: one-source rows use as many fakes as reals; 'all' takes equal shares.
    for row in ("checker", "all", "loo:zeros"):
        cell = json.loads((tmp_path / "cells" / "radial-lr" / f"{row.replace(':', '-')}.json").read_text())
        assert cell["n_train"]["real"] == cell["n_train"]["fake"]
        assert cell["n_val"]["real"] == cell["n_val"]["fake"]
        assert cell["n_test_per_class"] == seen_real[0].shape[0] == 12

    m = json.loads((tmp_path / "matrix.json").read_text())
    assert m["columns"] == ["checker", "zeros"] and m["rows"] == ["checker", "zeros", "all", "loo:checker", "loo:zeros"]
    assert m["matrix"]["radial:lr"]["ap"]["checker"]["checker"] == val[("checker", "checker", "ap")]
    pngs = sorted(p.name for p in (tmp_path / "heatmaps").glob("*.png"))
    assert pngs == sorted(f"radial-lr_{k}.png" for k in HEATMAP_METRICS)
    assert all((tmp_path / "heatmaps" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_heatmaps_can_be_limited_to_named_metrics(sources, tmp_path: Path):
    real, fakes = sources
    run_transfer(real, fakes, ["radial:lr", "xy:lr"], tmp_path, rows="each", heatmaps=("auc",))
    assert sorted(p.name for p in (tmp_path / "heatmaps").glob("*.png")) == ["radial-lr_auc.png", "xy-lr_auc.png"]
    assert (tmp_path / "matrix.csv").read_text().count(",eer,") == 8  # every metric still in the numbers


@pytest.fixture
def fit_calls(monkeypatch) -> list[tuple[Detector, torch.Tensor, torch.Tensor | None]]:
    """Every Detector.fit call made while the test runs, in order: (detector, real images, fake images)."""
    calls: list[tuple[Detector, torch.Tensor, torch.Tensor | None]] = []
    original = Detector.fit

    def spy(self, real_x, fake_x, *a, **k):
        calls.append((self, real_x, fake_x))
        return original(self, real_x, fake_x, *a, **k)

    monkeypatch.setattr(Detector, "fit", spy)
    return calls


def test_resume_skips_finished_cells_and_config_changes_refit(sources, tmp_path: Path, fit_calls):
    real, fakes = sources
    fits = fit_calls
    first = run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", heatmaps=False)
    assert len(fits) == 2
    # A run that stopped half-way: one cell file lost.
    (tmp_path / "cells" / "radial-lr" / "zeros.json").unlink()
    again = run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", heatmaps=False)
    assert len(fits) == 3 and again == first
    run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", heatmaps=False)
    assert len(fits) == 3
    # Another seed is another experiment: every cell is fitted again.
    run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", heatmaps=False, seed=1)
    assert len(fits) == 5


def test_a_new_feature_or_classifier_code_version_recomputes_old_cells(sources, tmp_path: Path, fit_calls, monkeypatch):
    import pipelines.evaluation.transfer as transfer

    real, fakes = sources
    fits = fit_calls
    assert transfer.cell_code_version("radial:lr") == {"cell": transfer.CELL_CODE_VERSION, "feature": 1, "classifier": 1}
    run_transfer(real, fakes, ["radial:lr", "xy:lr"], tmp_path, rows="each", heatmaps=False)
    assert len(fits) == 4
    # The radial feature's code changed: its cells are fitted again, xy's are reused.
    monkeypatch.setitem(transfer.FEATURE_CODE_VERSIONS, "radial", 2)
    run_transfer(real, fakes, ["radial:lr", "xy:lr"], tmp_path, rows="each", heatmaps=False)
    assert [d.spec for d, _, _ in fits[4:]] == ["radial:lr", "radial:lr"]
    # The classifier's code changed: every cell that uses it is fitted again.
    monkeypatch.setitem(transfer.CLASSIFIER_CODE_VERSIONS, "lr", 2)
    run_transfer(real, fakes, ["radial:lr", "xy:lr"], tmp_path, rows="each", heatmaps=False)
    assert len(fits) == 10
    # A cell written before code versions existed (no "code" in its hash) is not reused either.
    monkeypatch.setattr(transfer, "cell_code_version", lambda spec: {})
    run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", heatmaps=False)
    assert len(fits) == 12


def test_pair_mode_keeps_the_test_pool_and_redraws_subsets_per_repeat():
    # Documented protocol: a (train, test) pair's test side is fixed; a repeat takes n test images
    # from it, a new subset per seed when the pool is larger than n.
    from pipelines.evaluation.transfer import _prepare_repeat

    imgs = torch.arange(60, dtype=torch.uint8).view(60, 1, 1, 1).expand(60, 3, 4, 4).contiguous()
    real = (_set(imgs[:40], "rt"), _set(imgs[40:], "rs"))  # a pool of 20 real test images
    fake = {"f": _set(imgs[:50], "f")}  # test split of 10: n = 10
    reps = [_prepare_repeat(real, fake, ["f"], (0.6, 0.2, 0.2), seed, None) for seed in (0, 1)]
    tests = [set(r.real_test[:, 0, 0, 0].tolist()) for r in reps]
    assert all(len(t) == 10 and t <= set(range(40, 60)) for t in tests)
    assert tests[0] != tests[1]


def test_parallel_cells_equal_sequential_cells(sources, tmp_path: Path):
    """jobs=2 fits the cells in worker processes; every number must match the one-process run."""
    real, fakes = sources
    specs = ["radial:lr", "xy:svm"]
    one = run_transfer(real, fakes, specs, tmp_path / "one", rows="each", attribute=True, heatmaps=False)
    two = run_transfer(real, fakes, specs, tmp_path / "two", rows="each", attribute=True, heatmaps=False, jobs=2)
    key = lambda r: (r["detector"], r["train"], r["test"], r["metric"])  # noqa: E731
    assert sorted(two, key=key) == sorted(one, key=key)
    # The same rows in the same order, whichever worker finished first.
    assert (tmp_path / "one" / "matrix.csv").read_bytes() == (tmp_path / "two" / "matrix.csv").read_bytes()
    assert (tmp_path / "one" / "attribution" / "xy-svm.csv").read_text() == (
        tmp_path / "two" / "attribution" / "xy-svm.csv").read_text()
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        run_transfer(real, fakes, specs, tmp_path / "bad", jobs=0)


def test_train_test_pairs_and_attribution(tmp_path: Path):
    real = (_set(smooth_images(40, R, seed=20), "rt"), _set(smooth_images(16, R, seed=21), "rs"))
    fakes = {
        "checker": (_set(_checker(22, 40), "ct"), _set(_checker(23, 16), "cs")),
        "zeros": _set(_zero_inserted(24, 60), "z"),
    }
    records = run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", attribute=True, heatmaps=False)
    ap = {(r["train"], r["test"]): r["value"] for r in records if r["metric"] == "ap"}
    assert ap[("checker", "checker")] > 0.99 and ap[("zeros", "zeros")] > 0.99
    cell = json.loads((tmp_path / "cells" / "radial-lr" / "checker.json").read_text())
    # Test sets: the real pair's 16 test images vs 12 zeros test images -> 12 per class.
    assert cell["n_test_per_class"] == 12
    rows = list(csv.reader(open(tmp_path / "attribution" / "radial-lr.csv")))
    assert rows[0] == ["true \\ predicted", "real", "checker", "zeros"]
    cm = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert cm.shape == (3, 3) and (cm.sum(axis=1) == 12).all()
    assert np.trace(cm) / cm.sum() > 0.9
    summary = json.loads((tmp_path / "attribution.json").read_text())
    assert summary["radial:lr"]["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())


def test_jpeg_applies_to_real_and_fake_alike(sources, tmp_path: Path):
    real, fakes = sources
    s_plain = make_splits(real, "real", (0.6, 0.2, 0.2), 0)
    s_jpeg = make_splits(real, "real", (0.6, 0.2, 0.2), 0, jpeg=50)
    f_jpeg = make_splits(fakes["checker"], "checker", (0.6, 0.2, 0.2), 0, jpeg=50)
    assert not torch.equal(s_plain.test, s_jpeg.test)
    from pipelines.data.images import perturb

    assert torch.equal(s_jpeg.train, perturb(s_plain.train, jpeg=50))
    f_plain = make_splits(fakes["checker"], "checker", (0.6, 0.2, 0.2), 0)
    assert torch.equal(f_jpeg.test, perturb(f_plain.test, jpeg=50))


def test_bad_inputs_have_clear_messages(sources, tmp_path: Path):
    real, fakes = sources
    with pytest.raises(ValueError, match="reserved"):
        run_transfer(real, {"all": fakes["checker"]}, ["radial:lr"], tmp_path)
    with pytest.raises(ValueError, match="listed twice"):
        run_transfer(real, fakes, ["radial:lr", "radial:lr"], tmp_path)
    with pytest.raises(ValueError, match="Unknown feature"):
        run_transfer(real, fakes, ["nope:lr"], tmp_path)
    small = _set(smooth_images(N, 16, seed=1), "s")
    with pytest.raises(ValueError, match="one image size"):
        run_transfer(real, {"s": small}, ["radial:lr"], tmp_path)
    with pytest.raises(ValueError, match="No fake sources"):
        run_transfer(real, {}, ["radial:lr"], tmp_path)


def test_cli_transfer_with_both_split_forms(tmp_path: Path):
    write_pngs(smooth_images(N, R, seed=30), tmp_path / "real")
    write_pngs(_checker(31, 40), tmp_path / "ck_train")
    write_pngs(_checker(32, 16), tmp_path / "ck_test")
    write_pngs(_zero_inserted(33), tmp_path / "zeros")
    (tmp_path / "zeros" / "manifest.json").write_text(json.dumps({"resolution": R}))
    (tmp_path / "zeros" / "broken.png").write_bytes(b"")
    out = tmp_path / "run"
    args = ["transfer", "--real", str(tmp_path / "real"),
            "--fake", f"zeros={tmp_path / 'zeros'}",
            "--fake", f"checker={tmp_path / 'ck_train'},{tmp_path / 'ck_test'}",
            "--detector", "radial:lr", "--rows", "each,all", "--out", str(out), "--no-cache"]
    runner = CliRunner()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "Resolution 32 px" in r.output and "Skipped 1 unreadable" in r.output
    rows = _read_csv(out / "matrix.csv")
    assert {r["train"] for r in rows} == {"zeros", "checker", "all"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["config"]["rows"] == ["each", "all"]
    assert manifest["skipped"]["zeros"][0][0].endswith("broken.png")
    assert manifest["images"] == {"real": [N], "zeros": [N], "checker": [40, 16]}
    # A finished run is not overwritten by accident.
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "--overwrite" in r.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


@pytest.mark.parametrize("fake_args, message", [
    (["--fake", "zeros"], "must look like NAME=FOLDER"),
    (["--fake", "a=X", "--fake", "a=Y"], "given twice"),
    (["--fake", "a=X,Y,Z"], "TRAIN_DIR,TEST_DIR"),
])
def test_cli_friendly_errors(tmp_path: Path, fake_args: list[str], message: str):
    r = CliRunner().invoke(app, ["transfer", "--real", "embedded", *fake_args, "--detector", "radial:lr",
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and message in r.output, r.output


def test_cli_unknown_detector(tmp_path: Path):
    write_pngs(smooth_images(4, 8), tmp_path / "f")
    r = CliRunner().invoke(app, ["transfer", "--real", "embedded", "--fake", f"a={tmp_path / 'f'}",
                                 "--detector", "radial:nope", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "Unknown classifier 'nope'" in r.output


def test_loaded_folder_round_trip_is_what_transfer_sees(tmp_path: Path):
    imgs = _zero_inserted(5, 6)
    write_pngs(imgs, tmp_path / "z")
    # Lossless PNGs at the working resolution reach the detector bit for bit (format parity).
    assert torch.equal(load_images(tmp_path / "z", R, cache=False).images, imgs)


# --------------------------------------------------------------------------- seeds


def _by_key(rows: list[dict[str, str]]) -> dict[tuple[str, str, str, str], dict[str, str]]:
    return {(r["detector"], r["train"], r["test"], r["metric"]): r for r in rows}


def test_seeds_mean_and_sd_are_those_of_the_repeats(sources, tmp_path: Path, fit_calls):
    """seeds=2: two fits per cell on different splits and classifier seeds; matrix = mean, sd of the repeats."""
    real, fakes = sources
    records = run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", seeds=2, heatmaps=False)
    fits = [(d.seed, r, f) for d, r, f in fit_calls]

    # Every cell is fitted twice, repeat 0 with the seed 0 and repeat 1 with the seed 1 ...
    assert sorted(f[0] for f in fits) == [0, 0, 1, 1]
    # ... on other training images of both classes: the repeats draw their own splits.
    by_seed = {s: [(r, f) for t, r, f in fits if t == s] for s in (0, 1)}
    for (r0, f0), (r1, f1) in zip(by_seed[0], by_seed[1], strict=True):
        assert r0.shape == r1.shape and not torch.equal(r0, r1) and not torch.equal(f0, f1)

    rows = _read_csv(tmp_path / "matrix.csv")
    assert list(rows[0]) == ["detector", "train", "test", "metric", "value", "sd", "n"]
    reps = _read_csv(tmp_path / "repeats.csv")
    assert list(reps[0]) == ["detector", "train", "test", "metric", "repeat", "seed", "value"]
    assert len(reps) == 2 * len(rows) and {(r["repeat"], r["seed"]) for r in reps} == {("0", "0"), ("1", "1")}
    groups: dict[tuple[str, str, str, str], list[float]] = {}
    for r in reps:
        groups.setdefault((r["detector"], r["train"], r["test"], r["metric"]), []).append(float(r["value"]))
    matrix = _by_key(rows)
    assert set(groups) == set(matrix)
    for key, values in groups.items():
        assert float(matrix[key]["value"]) == pytest.approx(np.mean(values), abs=1e-15)
        assert float(matrix[key]["sd"]) == pytest.approx(np.std(values, ddof=1), abs=1e-15)
        assert matrix[key]["n"] == "2"
    # The repeats really differ: some metric moves between them, so some sd is above 0.
    assert any(v[0] != v[1] for v in groups.values())
    assert any(float(r["sd"]) > 0 for r in rows)
    # The records returned equal the CSV (same floats), and matrix.json holds the same means and sds.
    assert [(r["detector"], r["train"], r["test"], r["metric"], r["value"], r["sd"], r["n"]) for r in records] == [
        (r["detector"], r["train"], r["test"], r["metric"], float(r["value"]), float(r["sd"]), int(r["n"])) for r in rows]
    m = json.loads((tmp_path / "matrix.json").read_text())
    assert m["seeds"] == 2 and m["repeat_seeds"] == [0, 1]
    key = ("radial:lr", "checker", "zeros", "auc")
    assert m["matrix"]["radial:lr"]["auc"]["checker"]["zeros"] == float(matrix[key]["value"])
    assert m["sd"]["radial:lr"]["auc"]["checker"]["zeros"] == float(matrix[key]["sd"])
    # One cell file per repeat, repeat 1 beside repeat 0's.
    cell1 = json.loads((tmp_path / "cells" / "radial-lr" / "repeat-1" / "zeros.json").read_text())
    assert cell1["seed"] == 1
    rep1 = _by_key([r for r in reps if r["repeat"] == "1"])
    assert cell1["results"]["checker"]["auc"] == float(rep1[("radial:lr", "zeros", "checker", "auc")]["value"])


def test_one_seed_is_the_single_seed_protocol_and_more_seeds_reuse_it(sources, tmp_path: Path, fit_calls):
    """seeds=1 writes today's five columns and numbers; raising to seeds=2 fits only the new repeat."""
    real, fakes = sources

    def seeds() -> list[int]:
        return [d.seed for d, _, _ in fit_calls]

    one = run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", heatmaps=False)
    assert seeds() == [0, 0] and all(set(r) == {"detector", "train", "test", "metric", "value"} for r in one)
    rows_one = _read_csv(tmp_path / "matrix.csv")
    assert list(rows_one[0]) == ["detector", "train", "test", "metric", "value"]
    assert "sd" not in json.loads((tmp_path / "matrix.json").read_text())
    # The per-repeat file of a one-seed run is the matrix itself.
    reps_one = _read_csv(tmp_path / "repeats.csv")
    assert [(r["metric"], r["value"], r["seed"]) for r in reps_one] == [(r["metric"], r["value"], "0") for r in rows_one]

    two = run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", seeds=2, heatmaps=False)
    assert seeds() == [0, 0, 1, 1]  # repeat 0 is the seed-0 run: its cells are reused
    rep0 = {k: r["value"] for k, r in _by_key([r for r in _read_csv(tmp_path / "repeats.csv") if r["repeat"] == "0"]).items()}
    assert rep0 == {k: r["value"] for k, r in _by_key(rows_one).items()}
    assert len(two) == len(one)
    # Back to one seed: the same numbers as the first run, nothing fitted.
    assert run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", heatmaps=False) == one
    assert seeds() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="seeds must be a positive integer"):
        run_transfer(real, fakes, ["radial:lr"], tmp_path, seeds=0)


def test_attribution_over_seeds_sums_counts_and_averages_accuracy(sources, tmp_path: Path):
    real, fakes = sources
    run_transfer(real, fakes, ["radial:lr"], tmp_path, rows="each", attribute=True, seeds=2, heatmaps=False)
    per = [json.loads((tmp_path / "cells" / "radial-lr" / sub / "attribution.json").read_text())
           for sub in (".", "repeat-1")]
    summary = json.loads((tmp_path / "attribution.json").read_text())["radial:lr"]
    acc = [c["accuracy"] for c in per]
    assert summary["accuracy"] == pytest.approx(np.mean(acc)) and summary["n"] == 2
    assert summary["accuracy_sd"] == pytest.approx(np.std(acc, ddof=1))
    total = np.asarray(per[0]["confusion"]) + np.asarray(per[1]["confusion"])
    assert summary["confusion"] == total.tolist() and (total.sum(axis=1) == 2 * 12).all()
    assert summary["accuracy"] == pytest.approx(np.trace(total) / total.sum())  # equal test sizes per repeat
    rows = list(csv.reader(open(tmp_path / "attribution" / "radial-lr.csv")))
    assert np.array([[int(v) for v in r[1:]] for r in rows[1:]]).tolist() == total.tolist()


def test_seeds_in_parallel_equal_one_process(sources, tmp_path: Path):
    real, fakes = sources
    kw = dict(rows="each", seeds=2, heatmaps=False)
    run_transfer(real, fakes, ["radial:lr"], tmp_path / "one", **kw)
    run_transfer(real, fakes, ["radial:lr"], tmp_path / "two", jobs=2, **kw)
    for name in ("matrix.csv", "repeats.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_print_matrix_shows_mean_and_sd():
    from rich.console import Console

    from pipelines.evaluation.transfer_outputs import mean_sd, print_matrix

    recs = [{"detector": "radial:lr", "train": "a", "test": t, "metric": "auc", "value": v, "sd": e, "n": 3}
            for t, v, e in (("a", 0.9876, 0.0123), ("b", 0.5, 0.25))]
    console = Console(record=True, width=120)
    print_matrix(recs, "auc", console=console)
    text = console.export_text()
    assert "0.988 ± 0.012" in text and "0.500 ± 0.250" in text and "mean ± sd of 3 seeds" in text
    console = Console(record=True, width=120)
    print_matrix([{k: v for k, v in r.items() if k not in ("sd", "n")} for r in recs], "auc", console=console)
    text = console.export_text()
    assert "0.988" in text and "±" not in text
    assert mean_sd(0.5, float("nan")) == "0.500" and mean_sd(float("nan"), 0.1) == "–"


def test_seeds_in_study_config_and_cli(tmp_path: Path, monkeypatch):
    from pipelines.study import run as study_mod
    from pipelines.study.config import parse_config

    base = {"study": {"name": "t", "resolution": 32, "data": "embedded", "n_real": 64},
            "grid": {"upsamplers": ["nearest"]}, "transfer": {"detectors": ["radial:lr"], "seeds": 3}}
    cfg = parse_config(base)
    assert cfg.transfer.seeds == 3
    assert parse_config({**base, "transfer": {"detectors": ["radial:lr"]}}).transfer.seeds == 1
    with pytest.raises(ValueError, match=r"\[transfer\] seeds = 0 must be greater than or equal to 1"):
        parse_config({**base, "transfer": {"detectors": ["radial:lr"], "seeds": 0}})
    # The study's transfer step hands the seeds to run_transfer.
    seen = {}
    monkeypatch.setattr(study_mod, "load_fakes", lambda out, name: smooth_images(8, R, seed=1))
    monkeypatch.setattr(study_mod, "run_transfer", lambda *a, **k: seen.update(k))
    study_mod._transfer_step(cfg, tmp_path, _set(smooth_images(8, R, seed=2), "real"), False, False)
    assert seen["seeds"] == 3
    r = CliRunner().invoke(app, ["transfer", "--real", "embedded", "--fake", f"x={tmp_path}", "--detector",
                                 "radial:lr", "--out", str(tmp_path / "run"), "--seeds", "0"])
    assert r.exit_code == 1 and "--seeds must be at least 1" in r.output


def test_cli_transfer_seeds(tmp_path: Path):
    write_pngs(smooth_images(40, R, seed=40), tmp_path / "real")
    write_pngs(_checker(41, 40), tmp_path / "checker")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["transfer", "--real", str(tmp_path / "real"), "--fake", f"checker={tmp_path / 'checker'}",
                                 "--detector", "radial:lr", "--out", str(out), "--resolution", str(R), "--no-cache",
                                 "--seeds", "2", "--metric", "acc_real"])
    assert res.exit_code == 0, res.output
    assert "mean ± sd" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seeds"] == 2 and "repeats.csv" in manifest["outputs"]
    rows = _read_csv(out / "matrix.csv")
    assert {r["n"] for r in rows} == {"2"} and {"acc_real", "acc_fake"} <= {r["metric"] for r in rows}
    cell = next(r for r in rows if r["metric"] == "acc_real")
    assert f"{float(cell['value']):.3f} ± {float(cell['sd']):.3f}" in res.output  # the printed table


def test_real_only_row_fits_on_reals_alone_and_tests_every_source(sources, tmp_path: Path, fit_calls):
    real, fakes = sources
    assert row_sources(["each", "real-only"], ["a", "b"]) == {"a": ["a"], "b": ["b"], "real-only": []}
    records = run_transfer(real, fakes, ["fingerprint:deviation", "radial:lr"], tmp_path / "t", rows="each,real-only")
    fits = [(d.spec, f is None, r.shape[0]) for d, r, f in fit_calls]
    # Only deviation declares supports_real_only; it is fitted on every real training image and no fake.
    assert ("fingerprint:deviation", True, 36) in fits
    assert not any(spec == "radial:lr" and alone for spec, alone, _ in fits)
    alone = {r["test"]: r["value"] for r in records if r["train"] == "real-only" and r["metric"] == "auc"}
    assert set(alone) == {"checker", "zeros"} and all(v > 0.9 for v in alone.values())
    assert {r["detector"] for r in records if r["train"] == "real-only"} == {"fingerprint:deviation"}
    assert (tmp_path / "t" / "heatmaps" / "radial-lr_auc.png").is_file()
    with pytest.raises(ValueError, match="can be fitted on real images alone"):
        run_transfer(real, fakes, ["radial:lr"], tmp_path / "u", rows="real-only")
    with pytest.raises(ValueError, match="needs fake images to fit"):
        Detector("radial:lr").fit(real.images, None)


def test_patches_in_transfer_fit_and_score_crops(sources, tmp_path: Path, fit_calls):
    real, fakes = sources
    records = run_transfer(real, fakes, ["periodicity:lr"], tmp_path / "p", patches=4, patch_size=16, heatmaps=False)
    d = fit_calls[0][0]
    assert (d.patches, d.patch_size, d.patch_align) == (4, 16, 2)  # (fit then refits the classifier on the crops themselves)
    assert {r["test"] for r in records} == {"checker", "zeros"}
    with pytest.raises(ValueError, match="square number"):
        run_transfer(real, fakes, ["periodicity:lr"], tmp_path / "q", patches=3, patch_size=16)


def test_attribution_leaves_out_binary_only_detectors(sources, tmp_path: Path):
    """deviation cannot tell sources apart: with attribute=True it keeps its matrix rows and gets no attribution model,
    while lr beside it is attributed; a list of binary-only detectors alone is refused in one sentence."""
    real, fakes = sources
    run_transfer(real, fakes, ["radial:deviation", "radial:lr"], tmp_path / "mixed", rows="each", attribute=True,
                 heatmaps=False)
    summary = json.loads((tmp_path / "mixed" / "attribution.json").read_text())
    assert list(summary) == ["radial:lr"]
    assert (tmp_path / "mixed" / "cells" / "radial-deviation" / "checker.json").is_file()
    with pytest.raises(ValueError, match="can attribute fakes to their source"):
        run_transfer(real, fakes, ["radial:deviation"], tmp_path / "alone", rows="each", attribute=True, heatmaps=False)


def test_a_density_model_of_the_reals_trains_on_every_real_image_the_others_on_balanced_classes(tmp_path: Path, fit_calls):
    from pipelines.evaluation.protocol import reals_note, training_images

    # Only those cells change their hash: other detectors' cells and real-only rows are reused as they were.
    assert reals_note("fingerprint:deviation", ["a"]) == {"reals": "all"}
    assert reals_note("radial:lr", ["a"]) == {} and reals_note("fingerprint:deviation", []) == {}

    real = torch.arange(10).reshape(10, 1, 1, 1).expand(10, 3, 2, 2).to(torch.uint8)
    fake = torch.arange(100, 104).reshape(4, 1, 1, 1).expand(4, 3, 2, 2).to(torch.uint8)
    r_dev, f_dev = training_images("fingerprint:deviation", real, [fake], 0, "row", "train")
    r_lr, f_lr = training_images("radial:lr", real, [fake], 0, "row", "train")
    assert torch.equal(r_dev, real) and r_lr.shape[0] == 4  # every real image, or as many as the fakes
    assert torch.equal(f_dev, f_lr) and torch.equal(f_dev, fake)  # the same fakes for both
    # Through a transfer matrix: deviation's one-source cell sees all 2N x 0.6 training reals, lr balanced classes.
    big_real = _set(smooth_images(2 * N, R, seed=20), "real")
    records = run_transfer(big_real, {"checker": _set(_checker(11), "checker")}, ["fingerprint:deviation", "radial:lr"],
                           tmp_path / "t", heatmaps=False)
    seen = {d.spec: (r.shape[0], f.shape[0]) for d, r, f in fit_calls}
    n_fake = seen["radial:lr"][1]
    assert seen["radial:lr"] == (n_fake, n_fake)
    assert seen["fingerprint:deviation"][1] == n_fake and seen["fingerprint:deviation"][0] > 1.5 * n_fake
    cells = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "t" / "cells").glob("*/checker.json")}
    assert cells["fingerprint-deviation"]["n_train"] == {"real": seen["fingerprint:deviation"][0], "fake": n_fake}
    assert {r["detector"] for r in records} == {"fingerprint:deviation", "radial:lr"}


def test_per_detector_parameters_are_parsed_checked_and_reach_the_fit(tmp_path: Path, fit_calls):
    from pipelines.commands.params import parse_detector_params

    specs = ["colorprint:deviation", "radial:lr"]
    got = parse_detector_params(["colorprint:deviation:components=4", "colorprint:deviation:floor=1.5",
                                 "radial:lr:C=10"], specs)
    assert got == {"colorprint:deviation": {"components": 4, "floor": 1.5}, "radial:lr": {"C": 10}}
    assert parse_detector_params(None, specs) == {}
    for bad, words in [("colorprint:deviation=3", "FEATURE:CLASSIFIER:KEY=VALUE"),
                       ("components=3", "FEATURE:CLASSIFIER:KEY=VALUE"),
                       ("xy:svm:C=1", "not among the detectors"),
                       ("radial:lr:seed=3", "sets for every detector"),
                       ("colorprint:deviation:components=0", "positive integer"),
                       ("radial:lr:bogus=1", "Unknown parameter")]:
        with pytest.raises(ValueError, match=words):
            parse_detector_params([bad], specs)
    # From the command line into the fit of that detector alone, and into the run's config.
    write_pngs(smooth_images(N, R, seed=30), tmp_path / "real")
    write_pngs(_checker(31), tmp_path / "ck")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["transfer", "--real", str(tmp_path / "real"), "--fake", f"ck={tmp_path / 'ck'}",
                                 "--detector", "fingerprint:deviation", "--detector", "radial:lr",
                                 "-p", "fingerprint:deviation:floor=0.5", "--out", str(out), "--no-cache"])
    assert r.exit_code == 0, r.output
    params = {d.spec: d.classifier_params for d, _, _ in fit_calls}
    assert params == {"fingerprint:deviation": {"floor": 0.5}, "radial:lr": {}}
    assert json.loads((out / "manifest.json").read_text())["config"]["params"] == {"fingerprint:deviation": {"floor": 0.5}}
    r = CliRunner().invoke(app, ["transfer", "--real", "embedded", "--fake", f"ck={tmp_path / 'ck'}", "--detector",
                                 "radial:lr", "-p", "xy:lr:C=1", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "not among the detectors" in r.output
