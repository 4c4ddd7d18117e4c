"""No lost progress: an interrupted ``train`` or ``generate`` run is neither restarted nor thrown away
by running the same command again; it needs --resume (continue) or --overwrite (start over)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_images, write_pngs
from PIL import Image
from typer.testing import CliRunner

import pipelines.commands.gan as gan_commands
from gans.checkpoint import load_checkpoint
from pipelines.cli import app
from pipelines.errors import interrupt_message

runner = CliRunner()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_pngs(smooth_images(16, 32, seed=3), folder)
    return folder


def train_args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--resolution", "32", "--steps", str(steps), "--batch-size", "4",
            "--width", "8", "--ckpt-every", "2", "--sample-every", "0", "--device", "cpu", "--out", str(out),
            *extra]


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_interrupted_training_is_refused_without_resume_and_continues_with_it(data_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_train = gan_commands.train

    def stop_after_4(cfg, images, out, resume=False, progress=False):
        # A run killed at step 4 (after its step-4 checkpoint): what Ctrl-C leaves behind.
        real_train(type(cfg).from_dict({**cfg.to_dict(), "steps": 4}), images, out, resume=resume)
        raise KeyboardInterrupt

    monkeypatch.setattr(gan_commands, "train", stop_after_4)
    r = runner.invoke(app, train_args(data_dir, run, 6))
    assert r.exit_code == 130
    assert "--resume" in r.output  # the interrupt message says how to continue
    monkeypatch.undo()
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4

    # The same command again: refused, naming both ways on, and the checkpoint is untouched.
    r = runner.invoke(app, train_args(data_dir, run, 6))
    assert r.exit_code == 1 and r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1
    assert "unfinished" in r.output and "--resume" in r.output and "--overwrite" in r.output
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4

    r = runner.invoke(app, train_args(data_dir, run, 6, "--resume"))
    assert r.exit_code == 0, r.output
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6
    steps = logged_steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == 6  # each step logged once

    # --overwrite starts over from step 0.
    run2 = tmp_path / "run2"
    run2.mkdir()
    (run2 / "manifest.json").write_text(json.dumps({"command": "train", "status": "interrupted"}))
    r = runner.invoke(app, train_args(data_dir, run2, 2, "--overwrite"))
    assert r.exit_code == 0, r.output
    assert load_checkpoint(run2 / "checkpoint.pt")["step"] == 2 and logged_steps(run2) == [2]


def test_interrupted_generate_is_refused_without_resume_and_completed_with_it(data_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert runner.invoke(app, train_args(data_dir, run, 2)).exit_code == 0
    fakes = tmp_path / "fakes"
    import gans.sampling

    real_write = gans.sampling.write_fake_set

    def interrupted(checkpoint, n, out, **kw):
        real_write(checkpoint, 3, out, **{k: v for k, v in kw.items() if k != "overwrite"})
        # The manifest of an interrupted set stays "running"; the CLI's run folder wrote it.
        manifest = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
        raise KeyboardInterrupt

    monkeypatch.setattr(gans.sampling, "write_fake_set", interrupted)
    r = runner.invoke(app, ["generate", str(run), "--n", "8", "--out", str(fakes), "--device", "cpu"])
    assert r.exit_code == 130 and "--resume" in r.output
    monkeypatch.undo()
    first = sorted(p.name for p in fakes.glob("*.png"))
    assert len(first) == 3

    r = runner.invoke(app, ["generate", str(run), "--n", "8", "--out", str(fakes), "--device", "cpu"])
    assert r.exit_code == 1 and "--resume" in r.output and "--overwrite" in r.output
    # Other options than the interrupted set's cannot resume it (the files would mix).
    r = runner.invoke(app, ["generate", str(run), "--n", "8", "--seed", "5", "--out", str(fakes), "--device", "cpu",
                            "--resume"])
    assert r.exit_code == 1 and "seed=0" in r.output
    before = {p.name: np.asarray(Image.open(p)) for p in fakes.glob("*.png")}

    r = runner.invoke(app, ["generate", str(run), "--n", "8", "--out", str(fakes), "--device", "cpu", "--resume"])
    assert r.exit_code == 0, r.output
    assert len(list(fakes.glob("*.png"))) == 8
    assert json.loads((fakes / "manifest.json").read_text())["status"] == "finished"
    for name, arr in before.items():  # the images written before the interruption are the same
        assert np.array_equal(np.asarray(Image.open(fakes / name)), arr)


def test_interrupt_message_names_resume_only_where_the_command_has_it():
    def with_resume(out: str, resume: bool = False):
        pass

    def without(out: str):
        pass

    assert "--resume" in interrupt_message(with_resume)
    assert "--resume" not in interrupt_message(without) and "same command again" in interrupt_message(without)
