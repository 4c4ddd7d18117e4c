"""Crash safety: killed studies resume without redoing finished steps, full or unwritable disks are
caught before work starts, and paths read from run folders never lead outside them.

(SIGKILL during training, with bit-identical resume, is tested in tests/test_training.py,
including a repeated-kill variant behind the ``slow`` marker.)
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_images, write_pngs
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.study.run import run_study

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

STUDY_TOML = """\
[study]
name = "crash"
resolution = 32
device = "cpu"
threads = 1
[train]
steps = 6
batch_size = 4
width = 4
ckpt_every = 2
sample_every = 0
log_every = 1
[grid]
upsamplers = ["nearest"]
[generate]
n = 12
batch_size = 12
grid = 4
[transfer]
detectors = ["radial:lr"]
"""
STEP_KEYS = ["spectra/real", "train/nearest", "generate/nearest", "spectra/nearest", "quality/nearest", "transfer"]

# The child slows a study down so that it can be killed where the test wants: it sleeps after
# every save of steps.json (a wide gap between steps) and in every discriminator loss (a long
# training step). Sleeping changes no computed value.
CHILD = textwrap.dedent("""
    import sys, time
    save_delay, loss_delay = float(sys.argv[1]), float(sys.argv[2])
    import pipelines.study.run as S
    import gans.losses as L
    save, d_loss = S.StepLog._save, L.d_loss
    def slow_save(self):
        save(self)
        time.sleep(save_delay)
    def slow_d_loss(*a, **k):
        time.sleep(loss_delay)
        return d_loss(*a, **k)
    S.StepLog._save = slow_save
    L.d_loss = slow_d_loss
    from pipelines.cli import app
    app(sys.argv[3:], prog_name="forgelab")
""")


@pytest.fixture(scope="module")
def study_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of 12 real PNGs and the study config."""
    root = tmp_path_factory.mktemp("study-inputs")
    write_pngs(smooth_images(12, 40, seed=7), root / "data")
    (root / "crash.toml").write_text(STUDY_TOML)
    return root / "data", root / "crash.toml"


@pytest.fixture(scope="module")
def reference(study_inputs, tmp_path_factory) -> Path:
    """The same study run without interruption."""
    data, cfg = study_inputs
    out = tmp_path_factory.mktemp("reference") / "study"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FORGELAB_CACHE", str(tmp_path_factory.mktemp("ref-cache")))
        run_study(cfg, out, data=data, progress=False)
    return out


def start_child(cfg: Path, data: Path, out: Path, save_delay: float, loss_delay: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", CHILD, str(save_delay), str(loss_delay),
            "study", str(cfg), "--data", str(data), "--out", str(out), "--quiet"]
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_steps(out: Path) -> dict:
    try:
        return json.loads((out / "steps.json").read_text())["steps"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the study ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise AssertionError("the study never reached the point where it should be killed")


def assert_every_visible_file_is_complete(out: Path) -> None:
    """Every file under its final name loads; only dot-named temp files may be partial."""
    for p in out.rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue
        suffix = p.suffix
        if suffix == ".json":
            json.loads(p.read_text())
        elif suffix == ".jsonl":
            for line in p.read_text().splitlines():
                json.loads(line)
        elif suffix in (".npy", ".npz"):
            loaded = np.load(p, allow_pickle=False)
            if suffix == ".npz":
                [loaded[k] for k in loaded.files]
        elif suffix == ".pt":
            torch.load(p, weights_only=True)
        elif suffix == ".png":
            with Image.open(p) as im:
                im.load()
        elif suffix == ".csv":
            list(csv.reader(p.open()))
        elif suffix == ".html":
            assert p.read_text().rstrip().endswith("</html>"), p
        elif suffix == ".skops":
            import skops.io as sio

            sio.get_untrusted_types(file=p)
    steps = read_steps(out)
    for key, rec in steps.items():
        if rec["status"] == "done":
            assert all((out / o).exists() for o in rec["outputs"]), key


def assert_same_results(out: Path, reference: Path) -> None:
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"
    assert all(read_steps(out)[k]["status"] == "done" for k in STEP_KEYS)
    for rel in ("fakes/nearest.npy",):
        assert np.array_equal(np.load(out / rel), np.load(reference / rel)), rel
    ours, theirs = np.load(out / "spectra/nearest.npz"), np.load(reference / "spectra/nearest.npz")
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs.files)
    assert (out / "transfer/matrix.csv").read_text() == (reference / "transfer/matrix.csv").read_text()


def test_kill_between_steps_then_rerun_skips_finished_steps(study_inputs, reference, tmp_path):
    data, cfg = study_inputs
    out = tmp_path / "study"
    proc = start_child(cfg, data, out, save_delay=1.0, loss_delay=0.0)
    kill_when(proc, lambda: read_steps(out).get("train/nearest", {}).get("status") == "done")
    at_kill = read_steps(out)
    assert at_kill["spectra/real"]["status"] == "done" and "generate/nearest" not in at_kill
    ckpt_mtime = (out / "generators/nearest/checkpoint.pt").stat().st_mtime_ns
    assert_every_visible_file_is_complete(out)

    run_study(cfg, out, data=data, progress=False)
    after = read_steps(out)
    for key in ("spectra/real", "train/nearest"):  # not redone: the same record, the same files
        assert after[key] == at_kill[key], key
    assert (out / "generators/nearest/checkpoint.pt").stat().st_mtime_ns == ckpt_mtime
    assert_same_results(out, reference)


def test_kill_inside_training_then_rerun_resumes_it(study_inputs, reference, tmp_path):
    data, cfg = study_inputs
    out = tmp_path / "study"
    ckpt = out / "generators/nearest/checkpoint.pt"
    proc = start_child(cfg, data, out, save_delay=0.0, loss_delay=0.3)
    # Killed at a (seeded) random moment after the first checkpoint of the training step.
    extra = random.Random(0).uniform(0.0, 0.6)
    seen: dict[str, float] = {}

    def ready() -> bool:
        if ckpt.exists() and "t" not in seen:
            seen["t"] = time.monotonic()
        return "t" in seen and time.monotonic() - seen["t"] >= extra

    kill_when(proc, ready)
    at_kill = read_steps(out)
    assert at_kill["train/nearest"]["status"] == "running"
    step_at_kill = torch.load(ckpt, weights_only=True)["step"]
    assert 2 <= step_at_kill < 6
    assert_every_visible_file_is_complete(out)

    run_study(cfg, out, data=data, progress=False)
    after = read_steps(out)
    assert after["spectra/real"] == at_kill["spectra/real"]
    # The training resumed from its checkpoint: log.jsonl holds each step once, 1..6.
    logged = [json.loads(line)["step"] for line in (out / "generators/nearest/log.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == 6
    assert_same_results(out, reference)


def test_half_written_output_of_an_interrupted_step_is_redone(study_inputs, reference, tmp_path):
    """A step marked running whose file is cut short (and whose temp file was left) is run again."""
    data, cfg = study_inputs
    out = tmp_path / "study"
    shutil.copytree(reference, out)
    steps_file = out / "steps.json"
    doc = json.loads(steps_file.read_text())
    doc["steps"]["generate/nearest"]["status"] = "running"
    steps_file.write_text(json.dumps(doc))
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    fakes = out / "fakes/nearest.npy"
    fakes.write_bytes(fakes.read_bytes()[: fakes.stat().st_size // 2])
    (out / "fakes/.nearest.npy.leftover.tmp").write_bytes(b"partial")

    run_study(cfg, out, data=data, progress=False)
    assert read_steps(out)["generate/nearest"]["status"] == "done"
    assert read_steps(out)["train/nearest"] == doc["steps"]["train/nearest"]
    assert_same_results(out, reference)


@pytest.mark.slow
def test_repeated_random_kills_then_rerun_finishes(study_inputs, reference, tmp_path):
    data, cfg = study_inputs
    out = tmp_path / "study"
    rng = random.Random(1)
    kills = 0
    for _ in range(5):
        proc = start_child(cfg, data, out, save_delay=0.2, loss_delay=0.2)
        deadline = time.monotonic() + rng.uniform(3.0, 9.0)  # imports take a few seconds
        try:
            kill_when(proc, lambda: time.monotonic() >= deadline)  # noqa: B023 - used before the loop moves on
        except AssertionError:  # it finished before the kill: nothing left to interrupt
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
            break
        kills += 1
        assert_every_visible_file_is_complete(out)
    assert kills >= 2
    if json.loads((out / "manifest.json").read_text())["status"] != "finished":
        run_study(cfg, out, data=data, progress=False)
    assert_same_results(out, reference)


# --------------------------------------------------------------------------- full or unwritable disks


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict[str, Path]:
    """Real images, a finished training run and its fake set (inputs for every writing command)."""
    root = tmp_path_factory.mktemp("lab")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FORGELAB_CACHE", str(tmp_path_factory.mktemp("lab-cache")))
        write_pngs(smooth_images(12, 40, seed=8), root / "data")
        for argv in (
            ["train", "--data", root / "data", "--resolution", "32", "--steps", "1", "--batch-size", "4", "--width",
             "4", "--ckpt-every", "0", "--sample-every", "0", "--device", "cpu", "--out", root / "run"],
            ["generate", root / "run", "--n", "12", "--out", root / "fake", "--device", "cpu"],
        ):
            r = runner.invoke(app, [str(a) for a in argv])
            assert r.exit_code == 0, r.output
        (root / "study.toml").write_text(STUDY_TOML)
        (root / "a-file.txt").write_text("a regular file\n")
    return {"root": root, "data": root / "data", "run": root / "run", "fake": root / "fake",
            "study": root / "study.toml", "file": root / "a-file.txt"}


# command -> (argv for an output folder OUT, a file that exists only once real work was done)
WRITERS = {
    "train": (lambda lab, out: ["train", "--data", lab["data"], "--resolution", "32", "--steps", "1", "--batch-size",
                                "4", "--width", "4", "--ckpt-every", "0", "--sample-every", "0", "--device", "cpu",
                                "--out", out], "checkpoint.pt"),
    "generate": (lambda lab, out: ["generate", lab["run"], "--n", "4", "--out", out, "--device", "cpu"], "000000.png"),
    "detect-fit": (lambda lab, out: ["detect", "fit", "-d", "radial:lr", "--real", lab["data"], "--fake", lab["fake"],
                                     "--out", out, "--resolution", "32", "--device", "cpu", "--no-progress"],
                   "detector.json"),
    "transfer": (lambda lab, out: ["transfer", "--real", lab["data"], "--fake", f"a={lab['fake']}", "--detector",
                                   "radial:lr", "--out", out], "matrix.csv"),
    "study": (lambda lab, out: ["study", lab["study"], "--data", lab["data"], "--out", out, "--quiet"], "steps.json"),
}


def one_line_error(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("command", list(WRITERS))
def test_full_disk_stops_before_work(command, lab, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))
    build, product = WRITERS[command]
    out = tmp_path / "out"
    msg = one_line_error(runner.invoke(app, [str(a) for a in build(lab, out)]))
    assert "1 MiB free" in msg and str(out) in msg
    assert not (out / product).exists()


@pytest.mark.parametrize("command", list(WRITERS))
def test_unwritable_folder_stops_before_work(command, lab, tmp_path, monkeypatch):
    # We may run as root, where chmod 0500 is not enforced: make os.access say what it would say.
    out = tmp_path / "out"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == out and mode & os.W_OK
                        else real_access(p, mode, **kw))
    build, product = WRITERS[command]
    msg = one_line_error(runner.invoke(app, [str(a) for a in build(lab, out)]))
    assert "Cannot write to" in msg and str(out) in msg
    assert not (out / product).exists()


@pytest.mark.parametrize("command", [*WRITERS, "detect-score"])
def test_output_under_a_regular_file_is_one_line_error(command, lab, tmp_path, monkeypatch):
    out = lab["file"] / "out"
    if command == "detect-score":
        fit = tmp_path / "det"
        assert runner.invoke(app, [str(a) for a in WRITERS["detect-fit"][0](lab, fit)]).exit_code == 0
        argv = ["detect", "score", fit, lab["data"], "--out", out / "s.csv", "--no-progress"]
        from detectors.detector import Detector

        # The output path must be checked before any image is scored.
        monkeypatch.setattr(Detector, "score", lambda *a, **k: pytest.fail("scored before checking --out"))
    else:
        argv = WRITERS[command][0](lab, out)
    before = lab["file"].read_bytes()
    msg = one_line_error(runner.invoke(app, [str(a) for a in argv]))
    assert "a-file.txt" in msg
    assert lab["file"].read_bytes() == before


# --------------------------------------------------------------------------- paths read from run folders


def test_report_refuses_generator_names_that_lead_outside(reference, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(reference, study)
    outside = tmp_path / "stolen.npz"
    np.savez(outside, radial=np.zeros(4))
    plan = json.loads((study / "study.json").read_text())
    plan["generators"][0]["name"] = "../../stolen"  # study/spectra/../../stolen.npz is outside
    (study / "study.json").write_text(json.dumps(plan))
    r = runner.invoke(app, ["report", str(study)])
    msg = one_line_error(r)
    assert "'../../stolen'" in msg and "outside" in msg


def test_report_never_writes_outside_the_study_folder(reference, tmp_path):
    study = tmp_path / "nested" / "study"
    shutil.copytree(reference, study)
    shutil.rmtree(study / "transfer" / "heatmaps")  # so the report draws (and writes) its own figure
    matrix = study / "transfer" / "matrix.csv"
    rows = list(csv.reader(matrix.open()))
    evil = "x/../../../../escaped:lr"
    for row in rows[1:]:
        row[0] = evil
    with matrix.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    before = {p for p in tmp_path.rglob("*")}
    r = runner.invoke(app, ["report", str(study)])
    new_outside = [p for p in tmp_path.rglob("*") if p not in before and study not in p.parents]
    assert not new_outside, new_outside
    msg = one_line_error(r)
    assert "outside" in msg


def test_step_outputs_outside_the_study_folder_are_not_trusted(study_inputs, reference, tmp_path):
    """steps.json naming an output outside the folder (which exists there) makes the step run again."""
    data, cfg = study_inputs
    study = tmp_path / "study"
    shutil.copytree(reference, study)
    (tmp_path / "real.npz").write_bytes(b"outside; must not count as the step's output")
    doc = json.loads((study / "steps.json").read_text())
    rec = doc["steps"]["spectra/real"]
    rec["outputs"] = ["../real.npz"]
    rec["finished"] = "2000-01-01T00:00:00"
    (study / "steps.json").write_text(json.dumps(doc))
    manifest = json.loads((study / "manifest.json").read_text())
    (study / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    (study / "spectra" / "real.npz").unlink()

    run_study(cfg, study, data=data, progress=False)
    redone = read_steps(study)["spectra/real"]
    assert redone["outputs"] == ["spectra/real.npz", "samples/real.png"] and redone["finished"] != rec["finished"]
    assert (study / "spectra" / "real.npz").is_file()
    assert (tmp_path / "real.npz").read_bytes() == b"outside; must not count as the step's output"


def test_run_folder_inside_refuses_escapes(tmp_path):
    from pipelines.runfolder import RunFolder

    run = RunFolder(tmp_path / "run")
    (tmp_path / "run").mkdir()
    assert run.inside("a/b.json") == (tmp_path / "run" / "a" / "b.json").resolve()
    (tmp_path / "run" / "link").symlink_to(tmp_path)
    for bad in ("../x", "/etc/passwd", "a/../../x", "link/x"):
        with pytest.raises(ValueError, match="outside the run folder"):
            run.inside(bad)
