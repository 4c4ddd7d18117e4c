"""Studies: config validation, the resumable step log, and a tiny end-to-end study with its report."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_STUDY as TINY
from conftest import tiny_study as tiny
from PIL import Image
from typer.testing import CliRunner

import gans.training
import pipelines.report.page
from detectors.features import radial_profile
from detectors.fidelity import spectral_fidelity
from gans.upsamplers import UPSAMPLERS
from pipelines.data.arrays import load_arrays, load_fakes
from pipelines.study.config import (
    TRAIN_KEYS_HASHED_WHEN_SET,
    TRAIN_KEYS_NOT_HASHED,
    apply_overrides,
    load_config,
    packaged_configs,
    parse_config,
    train_config_from,
    train_keys,
)
from pipelines.study.run import run_study
from pipelines.study.steps import StepLog, digest

# --------------------------------------------------------------------------- config validation


def test_unknown_top_level_key_lists_the_sections():
    with pytest.raises(ValueError, match="Unknown key 'trian'") as e:
        parse_config({**TINY, "trian": {}})
    msg = str(e.value)
    for section in ("study", "train", "grid", "generators", "generate", "quality", "transfer"):
        assert section in msg
    assert msg.count(".") <= 2 and "\n" not in msg  # one sentence


@pytest.mark.parametrize("section, key", [("train", "stesp"), ("study", "resolutoin"),
                                          ("generate", "count"), ("transfer", "detector"), ("grid", "upsampler")])
def test_unknown_key_in_a_section_lists_its_valid_keys(section, key):
    cfg = tiny(**{section: {key: 1}})
    with pytest.raises(ValueError, match=rf"Unknown key '{key}' in \[{section}\]; valid keys are: ") as e:
        parse_config(cfg)
    valid = {"train": train_keys(), "study": ["name", "seed", "resolution", "data", "n_real"],
             "generate": ["n", "batch_size", "save_fakes"], "transfer": ["detectors", "rows", "jpeg", "attribute"],
             "grid": ["archs", "upsamplers", "spectral_d"]}[section]
    for k in valid:
        assert k in str(e.value)
    if section == "train":  # study-level keys are not offered as training options
        assert "resolution" not in str(e.value)


def test_type_errors_name_key_value_and_expected_type():
    """The pydantic schema's errors, in one sentence each (strict: 1 is not true, "3" is not 3)."""
    cases = [
        (tiny(transfer={"detectors": ["radial:lr"], "fractions": [0.5, 0.5]}),
         "[transfer] fractions = [0.5, 0.5] must be a list of 3 numbers; fix it in the config."),
        (tiny(grid={"upsamplers": ["nearest", 3]}),
         "[grid] upsamplers = ['nearest', 3] must be a list of strings or a string; fix it in the config."),
        (tiny(study={"seed": "3"}), "[study] seed = '3' must be an integer; fix it in the config."),
        (tiny(train={"betas": 0.5}), "[train] betas = 0.5 must be a list of 2 numbers; fix it in the config."),
    ]
    for cfg, message in cases:
        with pytest.raises(ValueError) as e:
            parse_config(cfg)
        assert str(e.value) == message
    # Integers fill float fields and arrays fill tuples, as TOML authors expect.
    cfg = parse_config(tiny(train={"lr": 1, "betas": [0, 0.9]}))
    assert cfg.train["lr"] == 1.0 and isinstance(cfg.train["lr"], float) and cfg.train["betas"] == (0.0, 0.9)


def test_unknown_key_in_generators_entry():
    cfg = tiny(grid=None)
    cfg["generators"] = [{"upsampler": "nearest"}, {"upsampler": "bicubic", "spectal_d": True}]
    with pytest.raises(ValueError, match=r"Unknown key 'spectal_d' in \[\[generators\]\] #2; valid keys are: name, "):
        parse_config(cfg)


def test_bad_upsampler_names_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown upsampler 'bilinearr'") as e:
        parse_config(tiny(grid={"upsamplers": ["nearest", "bilinearr"]}))
    for name in UPSAMPLERS:
        assert name in str(e.value)


def test_bad_detector_and_bad_arch():
    with pytest.raises(ValueError, match="Unknown classifier 'svn'"):
        parse_config(tiny(transfer={"detectors": ["radial:svn"]}))
    with pytest.raises(ValueError, match="FEATURE:CLASSIFIER"):
        parse_config(tiny(transfer={"detectors": ["radial"]}))
    with pytest.raises(ValueError, match="Unknown architecture 'stylegan'"):
        parse_config(tiny(train={"arch": "stylegan"}))


def test_wrong_types_and_values_are_named():
    with pytest.raises(ValueError, match=r"\[train\] steps = 'many' must be an integer"):
        parse_config(tiny(train={"steps": "many"}))
    with pytest.raises(ValueError, match=r"\[generate\] save_fakes = 1 must be true or false"):
        parse_config(tiny(generate={"save_fakes": 1}))
    with pytest.raises(ValueError, match=r"fractions = \[0.5, 0.2, 0.2\] must be three positive numbers"):
        parse_config(tiny(transfer={"fractions": [0.5, 0.2, 0.2]}))
    with pytest.raises(ValueError, match="Unsupported resolution 48"):
        parse_config(tiny(study={"resolution": 48}))
    with pytest.raises(ValueError, match="Generator 'nearest': lr must be a positive number"):
        parse_config(tiny(train={"lr": -1.0}))
    with pytest.raises(ValueError, match="defines no generators"):
        parse_config(tiny(grid=None))


def test_grid_and_extra_generators_expand_to_named_variants():
    cfg = tiny(train={"steps": 7}, grid={"archs": ["dcgan", "sngan"], "upsamplers": ["nearest", "bicubic"],
                                         "spectral_d": [False, True]})
    cfg["generators"] = [{"name": "late", "upsampler": "pixelshuffle", "upsample_layers": "last", "steps": 9}]
    c = parse_config(cfg)
    names = [g.name for g in c.generators]
    assert len(names) == 2 * 2 * 2 + 1 == len(set(names))
    assert "dcgan-nearest" in names and "sngan-bicubic-sd" in names
    late = c.generators[-1]
    assert (late.name, late.upsampler, late.train["upsample_layers"], late.train["steps"]) == ("late", "pixelshuffle", "last", 9)
    assert all(g.train["steps"] == 7 for g in c.generators[:-1])
    assert all(g.train["seed"] == 0 for g in c.generators)  # the study seed, the same for all
    assert sum(g.spectral_d for g in c.generators) == 4
    with pytest.raises(ValueError, match="both named 'late'"):
        parse_config({**cfg, "generators": cfg["generators"] * 2})


def test_all_upsamplers_and_overrides():
    c = parse_config(tiny(grid={"upsamplers": "all"}))
    assert [g.upsampler for g in c.generators] == list(UPSAMPLERS)
    raw = apply_overrides(TINY, ["train.steps=11", "study.data=/some/folder", "transfer.rows=['each', 'all']"])
    assert raw["train"]["steps"] == 11 and raw["study"]["data"] == "/some/folder"
    assert raw["transfer"]["rows"] == ["each", "all"] and TINY["train"]["steps"] == 3  # original untouched
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides(TINY, ["steps=3"])


def test_packaged_configs_load():
    assert {"quickstart", "imagewoof-dcgan32", "imagewoof-sngan64"} <= set(packaged_configs())
    q = load_config("quickstart")
    assert q.study.data == "embedded" and q.study.resolution == 32
    # Every upsampler but binomial, which is bilinear away from the border (gans.upsamplers).
    assert {g.upsampler for g in q.generators} == set(UPSAMPLERS) - {"binomial"}
    assert sum(g.spectral_d for g in q.generators) == 1 and len(q.generators) == len(UPSAMPLERS)
    assert len(q.transfer.detectors) == 7 and q.text and "[study]" in q.text
    for name in ("quickstart", "imagewoof-dcgan32", "imagewoof-dcgan32-cpu", "imagewoof-sngan64"):
        dets = load_config(name).transfer.detectors  # the 2x2-grid detectors next to the spectral baselines
        assert {"fingerprint:deviation", "periodicity:svm"} <= set(dets), name
        assert any(d.startswith("dwt:") for d in dets), name
        assert name == "quickstart" or any(d.startswith("npr:") for d in dets), name  # CPU time, see the config
        assert {"radial:svm", "radial:lr"} & set(dets), name
    s = load_config("imagewoof-sngan64.toml")
    assert s.study.resolution == 64 and len(s.generators) == 2 * len(UPSAMPLERS) and s.generate.n >= 5000
    assert all(g.arch == "sngan" and g.train["steps"] >= 10000 for g in s.generators)
    # The paper's channel plan (torch-mimicry's SNGAN-64: 1024 channels at the widest = 16 x 64).
    from gans.sngan import DEFAULT_WIDTH, G_CHANNELS

    assert all(g.train.get("width", DEFAULT_WIDTH) * max(G_CHANNELS[64]) == 1024 for g in s.generators)
    d = load_config("imagewoof-dcgan32", overrides=["train.steps=50"])
    assert all(g.train["steps"] == 50 for g in d.generators) and "train.steps=50" in d.text


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="quickstart"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname = 1\n")
    with pytest.raises(ValueError, match="bad.toml is not valid TOML"):
        load_config(bad)


# --------------------------------------------------------------------------- step log


def test_step_log_skips_redoes_and_resumes(tmp_path):
    calls = []

    def step(resume):
        calls.append(resume)
        (tmp_path / "out.txt").write_text("x")

    log = StepLog(tmp_path)
    h = log.run("a", {"k": 1}, step, ["out.txt"])
    assert h == digest({"k": 1}) and calls == [False]
    StepLog(tmp_path).run("a", {"k": 1}, step, ["out.txt"])  # read back from steps.json: skipped
    assert calls == [False]
    StepLog(tmp_path).run("a", {"k": 2}, step, ["out.txt"])  # other inputs: redone from scratch
    assert calls == [False, False]
    (tmp_path / "out.txt").unlink()  # a finished step whose file disappeared is redone
    StepLog(tmp_path).run("a", {"k": 2}, step, ["out.txt"])
    assert calls == [False, False, False]

    # An attempt interrupted after it started: its record says "running" with the same hash.
    def interrupted(resume):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        StepLog(tmp_path).run("b", {"k": 3}, interrupted, ["b.txt"])
    state = json.loads((tmp_path / "steps.json").read_text())["steps"]["b"]
    assert state["status"] == "running"
    seen = []
    StepLog(tmp_path).run("b", {"k": 3}, lambda r: (seen.append(r), (tmp_path / "b.txt").write_text("y")), ["b.txt"])
    assert seen == [True]
    with pytest.raises(RuntimeError, match="without writing c.txt"):
        StepLog(tmp_path).run("c", {}, lambda r: None, ["c.txt"])
    assert json.loads((tmp_path / "steps.json").read_text())["steps"]["c"]["status"] == "running"


# --------------------------------------------------------------------------- whole studies


class Counter:
    """Wrap a function and count its calls (and keep their keyword arguments)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.fn(*args, **kwargs)


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """One finished tiny study shared by the end-to-end checks."""
    out = tmp_path_factory.mktemp("study") / "run"
    run_study(tiny(generate={"save_fakes": True}), out, progress=False)
    return out


def test_tiny_study_outputs_and_report(study_dir):
    out = study_dir
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["command"] == "study"
    steps = json.loads((out / "steps.json").read_text())["steps"]
    for name in ("nearest", "bed_of_nails"):
        for kind in ("train", "generate", "spectra", "quality"):
            assert steps[f"{kind}/{name}"]["status"] == "done"
    assert steps["transfer"]["status"] == "done"

    # The matrix: one detector, rows x columns = 2 x 2 for every metric.
    rows = pipelines.report.page.read_matrix(out / "transfer" / "matrix.csv")
    cells = {(r["train"], r["test"]) for r in rows if r["metric"] == "auc"}
    assert cells == {(a, b) for a in ("nearest", "bed_of_nails") for b in ("nearest", "bed_of_nails")}

    page = (out / "report.html").read_text(encoding="utf-8")
    for section in ("id='summary'", "id='samples'", "id='spectra'", "id='training'", "id='transfer'", "radial:lr"):
        assert section in page
    images = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
    # sample grids (real + 2), three spectra figures, the training curves, one heatmap
    assert len(images) == 3 + 3 + 1 + 1
    assert all(img[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    grid = Image.open(io.BytesIO(images[1]))  # nearest's grid: 16 images of 32 px, 4 x 4, 2 px padding
    assert grid.size == (4 * 34 + 2, 4 * 34 + 2)


def test_study_numbers_match_direct_computation(study_dir):
    """Saved fakes, spectra and quality equal what the library computes from the checkpoint."""
    from gans.sampling import generate_tensor, load_generator
    from pipelines.data.images import load_data

    out = study_dir
    fakes = load_fakes(out, "bed_of_nails")
    G, meta = load_generator(out / "generators" / "bed_of_nails")
    assert meta["upsampler"] == "bed_of_nails"
    assert torch.equal(fakes, generate_tensor(G, 40, seed=0, batch_size=40))
    spectra = load_arrays(out / "spectra" / "bed_of_nails.npz")
    np.testing.assert_allclose(spectra["radial"], radial_profile(fakes).mean(0).double().numpy(), rtol=1e-5, atol=1e-5)
    real = load_data("embedded", 32, limit=64, seed=0, region="train").images  # the GANs' real images
    quality = json.loads((out / "quality" / "bed_of_nails.json").read_text())
    want = spectral_fidelity(real, fakes)
    for k, v in want.items():
        assert quality[k] == pytest.approx(v, abs=1e-9)
    from detectors.diversity import diversity

    assert quality["diversity"] == pytest.approx(diversity(fakes, real)["diversity"], abs=1e-12)


def test_saved_fake_pngs_hold_the_same_bytes(study_dir):
    fakes = load_fakes(study_dir, "nearest")
    folder = study_dir / "fakes" / "nearest"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["count"] == 40 and manifest["upsampler"] == "nearest"
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 40
    for i in (0, 39):
        arr = np.asarray(Image.open(pngs[i]).convert("RGB"))
        assert np.array_equal(arr, fakes[i].permute(1, 2, 0).numpy())


def test_finished_study_rerun_changes_nothing_and_report_rebuilds(study_dir):
    steps = (study_dir / "steps.json").read_text()
    assert run_study(tiny(generate={"save_fakes": True}), study_dir, progress=False) == study_dir / "report.html"
    assert (study_dir / "steps.json").read_text() == steps  # every step up to date: nothing ran
    (study_dir / "report.html").unlink()
    result = CliRunner().invoke(_app(), ["report", str(study_dir)])
    assert result.exit_code == 0, result.output
    assert (study_dir / "report.html").is_file() and "report.html" in result.output


def _app():
    from pipelines.cli import app

    return app


def test_interrupted_study_resumes_without_redoing_finished_steps(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = tiny(transfer=None)  # no transfer: the report is the last step
    train = Counter(gans.training.train)
    monkeypatch.setattr(gans.training, "train", train)

    def crash(run_dir, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines.report.page, "write_report", crash)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, out, progress=False)
    assert len(train.calls) == 2
    monkeypatch.undo()

    # Second run: everything but the report is finished, so nothing is trained or generated again.
    train2 = Counter(gans.training.train)
    monkeypatch.setattr(gans.training, "train", train2)
    run_study(cfg, out, progress=False)
    assert train2.calls == []
    assert (out / "report.html").is_file()


def test_files_without_a_completion_mark_are_redone(tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = tiny(transfer=None)
    monkeypatch.setattr(pipelines.report.page, "write_report", lambda run_dir, **kw: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, out, progress=False)
    monkeypatch.undo()
    # Forget that train/nearest finished (as if killed before the mark): the checkpoint on
    # disk must not count as finished.
    steps_path = out / "steps.json"
    steps = json.loads(steps_path.read_text())
    del steps["steps"]["train/nearest"]
    steps_path.write_text(json.dumps(steps))
    old_ckpt = (out / "generators" / "nearest" / "checkpoint.pt").stat().st_mtime_ns
    train = Counter(gans.training.train)
    monkeypatch.setattr(gans.training, "train", train)
    run_study(cfg, out, progress=False)
    assert len(train.calls) == 1 and train.calls[0]["resume"] is False  # redone from scratch
    assert (out / "generators" / "nearest" / "checkpoint.pt").stat().st_mtime_ns != old_ckpt
    # Downstream steps are keyed by inputs, not by file dates: a redone step from the same
    # inputs gives the same result, so they stay finished.
    steps = json.loads(steps_path.read_text())["steps"]
    assert all(s["status"] == "done" for s in steps.values())


def test_cli_reports_bad_config_in_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[study]\nname = "x"\ncolour = "red"\n')
    result = CliRunner().invoke(_app(), ["study", str(cfg), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "Unknown key 'colour' in [study]; valid keys are:" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_fid_kid_recorded_when_available_and_reason_when_not(tmp_path, monkeypatch):
    import pipelines.evaluation.quality

    def offline(real, fake, **kwargs):
        raise ValueError("Could not download the inception-v3-compat weights pt_inception.pth (no network).")

    monkeypatch.setattr(pipelines.evaluation.quality, "quality_metrics", offline)
    cfg = tiny(transfer=None, quality={"fid": True, "kid": True})
    run_study(cfg, tmp_path / "a", progress=False)
    q = json.loads((tmp_path / "a" / "quality" / "nearest.json").read_text())
    assert "pt_inception.pth" in q["fid_kid_unavailable"] and "radial_l1" in q  # spectral still there
    assert "pt_inception.pth" in (tmp_path / "a" / "report.html").read_text()

    seen = {}

    def fake_metrics(real, fake, **kwargs):
        seen.update(kwargs)
        return {"fid": 12.345, "kid": 0.0678, "notes": []}

    monkeypatch.setattr(pipelines.evaluation.quality, "quality_metrics", fake_metrics)
    run_study(cfg, tmp_path / "b", progress=False)
    assert seen["fid"] and seen["kid"] and seen["spectral"] is False
    page = (tmp_path / "b" / "report.html").read_text()
    assert "FID" in page and "12.345" in page and "0.068" in page


def test_data_folder_and_subset(tmp_path, image_folder):
    cfg = tiny(transfer=None)
    cfg["study"].pop("n_real")
    run_study(cfg, tmp_path / "run", data=image_folder, progress=False)  # --data wins over the config
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["data_info"]["count"] == 24  # the fixture's 24 images, resized to 32 px
    bad = tiny(study={"data": str(image_folder.parent), "subset": "nope"})
    with pytest.raises(FileNotFoundError, match="subset = 'nope'"):
        run_study(bad, tmp_path / "other", progress=False)
    assert not (tmp_path / "other").exists()


def test_refuses_a_folder_that_is_not_a_study(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a study folder"):
        run_study(tiny(transfer=None), out, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- real train / test images


def _steps(cfg: dict, real, data_hash: str = "d") -> dict:
    from pipelines.study.run import build_steps

    return {s.key: s for s in build_steps(parse_config(cfg), Path("/nowhere"), real, data_hash, False)}


def test_embedded_study_tests_detectors_on_the_other_region(study_dir):
    """GANs train on the left part of the photos, the detectors' real test images come from the right part."""
    from pipelines.data.images import EMBEDDED_SPLIT, load_data
    from plumbing.digests import tensor_digest

    plan = json.loads((study_dir / "study.json").read_text())["data"]
    train = load_data("embedded", 32, limit=64, seed=0, region="train")
    test = load_data("embedded", 32, limit=16, seed=0, region="test")  # 64 * 0.2 / 0.8 = 16
    assert plan["real_train"]["count"] == 64 and plan["real_test"]["count"] == 16
    assert plan["fingerprint"] == tensor_digest(train.images)
    assert plan["real_test"]["fingerprint"] == tensor_digest(test.images)
    assert "region 'test'" in plan["real_test"]["from"]
    # Every test crop starts right of the split, every training crop ends left of it (china.jpg is 640 wide).
    split = int(640 * EMBEDDED_SPLIT)
    xs = [(int(f.split("x=")[1].split(",")[0]), int(f.split("w=")[1].split(",")[0])) for f in test.files + train.files]
    assert all(x >= split for x, _ in xs[:16]) and all(x + w <= split for x, w in xs[16:])
    manifest = json.loads((study_dir / "manifest.json").read_text())
    assert manifest["data_info"]["real_test"]["count"] == 16
    page = (study_dir / "report.html").read_text()
    assert "id='data'" in page and "detectors&#x27; real test images" in page


def _imagewoof_root(tmp_path, with_val: bool = True):
    from conftest import smooth_images, write_pngs

    root = tmp_path / "woof"
    write_pngs(smooth_images(20, 32, seed=1), root / "train")
    if with_val:
        write_pngs(smooth_images(12, 32, seed=2), root / "val")
    return root


def test_imagewoof_layout_tests_on_val_and_keeps_the_gan_hashes(tmp_path):
    """subset = "train" with a val/ beside it: GANs train on all of train/ (their step hashes are the old ones), test on val/."""
    from pipelines.data.images import load_images
    from pipelines.study.run import _load_real
    from plumbing.digests import tensor_digest

    root = _imagewoof_root(tmp_path)
    cfg = tiny(study={"data": str(root), "subset": "train", "n_real": None})
    real, spec = _load_real(parse_config(cfg), None, False)
    train = load_images(root / "train", 32, cache=False)
    assert torch.equal(real.train.images, train.images) and real.test is not None
    assert real.test_from == str(root / "val") and len(real.test) == 5  # round(20 * 0.2 / 0.8)
    assert set(real.test.files) <= {str(p) for p in (root / "val").iterdir()}
    h = tensor_digest(train.images)
    steps = _steps(cfg, real, h)
    options = dataclasses.asdict(train_config_from(parse_config(cfg).study, parse_config(cfg).generators[0]))
    hashed = {k: v for k, v in options.items() if k not in TRAIN_KEYS_NOT_HASHED and k not in TRAIN_KEYS_HASHED_WHEN_SET}
    assert steps["train/nearest"].hash == digest({"data": h, "train": hashed})  # the formula of older folders
    assert steps["transfer"].inputs["real_test"] == tensor_digest(real.test.images)
    assert "parity" in steps["transfer"].deps


def test_one_folder_data_holds_back_a_real_test_split(tmp_path):
    from pipelines.study.run import _load_real

    root = _imagewoof_root(tmp_path, with_val=False)
    cfg = tiny(study={"data": str(root / "train"), "n_real": None})
    real, _ = _load_real(parse_config(cfg), None, False)
    assert (len(real.train), len(real.test), real.loaded) == (16, 4, 20)  # [data] held_out = 0.2 by default
    assert not set(real.train.files) & set(real.test.files)
    assert set(real.train.files) | set(real.test.files) == {str(p) for p in sorted((root / "train").iterdir())}
    old, _ = _load_real(parse_config(tiny(study={"data": str(root / "train"), "n_real": None}, data={"held_out": 0})),
                        None, False)
    assert len(old.train) == 20 and old.test is None
    assert "real_test" not in _steps(tiny(data={"held_out": 0}), old)["transfer"].inputs


def test_crop_mode_enters_the_hashes_only_when_asked():
    from pipelines.data.images import load_data

    real = load_data("embedded", 32, limit=8, seed=0)
    plain, default, crop = (_steps(tiny(**extra), real) for extra in ({}, {"data": {"preprocess": "resize"}},
                                                                       {"data": {"preprocess": "crop"}}))
    for key in plain:
        assert plain[key].hash == default[key].hash
    assert plain["train/nearest"].inputs["data"] == "d" and crop["train/nearest"].inputs["data"] == "d/crop"
    assert crop["train/nearest"].hash != plain["train/nearest"].hash


def test_parity_compares_what_the_detector_sees_merged_printed_once_and_reported(tmp_path, capsys):
    """Real JPEGs of 40 px: resized, they are what the GANs imitated (no warning); as native crops they keep their
    codec, which the fakes lack (one warning naming both sets); with [data] align nothing is left to warn about."""
    from conftest import smooth_images
    from PIL import Image

    folder = tmp_path / "jpegs"
    folder.mkdir()
    for i, img in enumerate(smooth_images(24, 40, seed=1)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:02d}.jpg", quality=80)
    resized = tiny(study={"n_real": None}, data={"held_out": 0.25})
    run_study(resized, tmp_path / "resize", data=folder, progress=False)
    assert json.loads((tmp_path / "resize" / "manifest.json").read_text())["parity_warnings"] == []
    parity = json.loads((tmp_path / "resize" / "parity.json").read_text())
    assert parity["compared"] == "what the detector sees" and parity["real_stored"]["codec"] == "JPEG"

    crop = tiny(study={"n_real": None}, data={"held_out": 0.25, "preprocess": "crop"})
    run_study(crop, tmp_path / "crop", data=folder, progress=True)
    err = capsys.readouterr().err
    (w,) = json.loads((tmp_path / "crop" / "manifest.json").read_text())["parity_warnings"]
    assert "Real images are JPEG (quality about 80) but fake sets 'nearest', 'bed_of_nails' are PNG" in w
    assert "set [data] align = true" in w
    assert " ".join(err.split()).count("quality about 80") == 1
    assert "quality about 80" in (tmp_path / "crop" / "report.html").read_text()

    aligned = tiny(study={"n_real": None}, data={"held_out": 0.25, "align": True})
    run_study(aligned, tmp_path / "align", data=folder, progress=False)
    assert json.loads((tmp_path / "align" / "manifest.json").read_text())["parity_warnings"] == []
    plan = json.loads((tmp_path / "align" / "transfer" / "align.json").read_text())
    assert plan["quality"] == 80 and plan["subsampling"] == "4:2:0"
    assert "re-encoded as JPEG quality 80" in (tmp_path / "align" / "report.html").read_text()


def test_training_fields_added_later_enter_the_hash_only_when_set(monkeypatch):
    """A new TrainConfig field at its default leaves the train hash of an existing folder as it was."""
    import pipelines.study.config as sc
    from pipelines.data.images import load_data

    real = load_data("embedded", 32, limit=8, seed=0)
    before = _steps(tiny(), real)["train/nearest"]
    monkeypatch.setitem(sc.TRAIN_KEYS_HASHED_WHEN_SET, "z_dim", 16)  # pretend z_dim was added later, default 16
    at_default = _steps(tiny(), real)["train/nearest"]
    assert "z_dim" not in at_default.inputs["train"] and at_default.hash != before.hash
    assert at_default.inputs["train"] == {k: v for k, v in before.inputs["train"].items() if k != "z_dim"}
    assert _steps(tiny(train={"z_dim": 32}), real)["train/nearest"].inputs["train"]["z_dim"] == 32


# --------------------------------------------------------------------------- [transfer] options


@pytest.mark.parametrize("options, message", [
    ({"xy:sv": {"C": 1.0}}, "options names 'xy:sv': "),
    ({"radial:lr": {"seed": 3}}, "options for 'radial:lr' sets seed, which the study sets itself"),
    ({"radial:lr": {"epochs": 3}}, "options for 'radial:lr': Unknown parameter(s) epochs for classifier 'lr'."),
    ({"radial:lr": {"feature_options": {"lenght": 8}}}, "Unknown option(s) lenght for feature 'radial'"),
])
def test_transfer_options_name_what_is_wrong(options, message):
    with pytest.raises(ValueError) as err:
        parse_config(tiny(transfer={"options": options}))
    assert message in str(err.value) and str(err.value).startswith("[transfer] options")


def test_transfer_options_of_an_unlisted_detector_are_left_out():
    """--set transfer.detectors=[...] may narrow the list: the other detectors' options then do nothing."""
    cfg = parse_config(tiny(transfer={"options": {"pixels:smallcnn": {"epochs": 6}, "radial:lr": {"C": 0.5}}}))
    assert cfg.transfer.options == {"radial:lr": {"C": 0.5}}


def test_transfer_options_check_neural_values_when_read():
    cfg = tiny(transfer={"detectors": ["pixels:smallcnn"], "options": {"pixels:smallcnn": {"epochs": 0}}})
    with pytest.raises(ValueError, match=r"options for 'pixels:smallcnn': epochs must be an integer >= 1, got 0"):
        parse_config(cfg)


def test_transfer_options_enter_the_transfer_hash_only_when_set():
    from pipelines.data.images import load_data

    real = load_data("embedded", 32, limit=8, seed=0)
    plain, empty = _steps(tiny(), real), _steps(tiny(transfer={"options": {}}), real)
    opted = _steps(tiny(transfer={"options": {"radial:lr": {"C": 0.5}}}), real)
    assert plain["transfer"].hash == empty["transfer"].hash  # older studies keep their transfer step
    assert opted["transfer"].hash != plain["transfer"].hash
    assert opted["transfer"].inputs["transfer"]["options"] == {"radial:lr": {"C": 0.5}}
    assert all(plain[k].hash == opted[k].hash for k in plain if k != "transfer")


def test_transfer_options_reach_the_detectors(tmp_path, monkeypatch):
    """What a config sets for a detector is what its cells are fitted with, and it is part of their hash."""
    import pipelines.evaluation.transfer as transfer

    seen = []
    real_fit = transfer.fit_detector

    def spy(spec, options, *args):
        seen.append((spec, dict(options)))
        return real_fit(spec, options, *args)

    monkeypatch.setattr(transfer, "fit_detector", spy)
    run_study(tiny(), tmp_path / "plain", progress=False)
    assert seen and all(opts == {"device": "cpu"} for _, opts in seen)
    seen.clear()
    run_study(tiny(transfer={"options": {"radial:lr": {"C": 0.25}}}), tmp_path / "opted", progress=False)
    assert seen and all(opts == {"C": 0.25, "device": "cpu"} for _, opts in seen)
    cells = [json.loads((tmp_path / run / "transfer" / "cells" / "radial-lr" / "nearest.json").read_text())
             for run in ("plain", "opted")]
    assert cells[0]["config_hash"] != cells[1]["config_hash"]


def test_attribution_with_binary_only_detectors_alone_is_refused_when_the_config_is_read():
    with pytest.raises(ValueError, match=r"attribute = true needs a detector that can tell sources apart"):
        parse_config(tiny(transfer={"detectors": ["radial:deviation"], "attribute": True}))
    assert parse_config(tiny(transfer={"detectors": ["radial:deviation", "radial:lr"], "attribute": True})).transfer
