"""pipelines.study.steps: the bookkeeping an executor drives (is_done / start / finish) and the local executor."""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

import pytest

from pipelines.study.executors import run_steps
from pipelines.study.steps import STEP_VERSION, Step, StepLog, digest


def test_hash_is_the_one_study_folders_already_hold():
    inputs = {"data": "abc", "train": {"steps": 3, "betas": [0.0, 0.9]}}
    blob = json.dumps({"v": STEP_VERSION, "inputs": inputs}, sort_keys=True, default=str)
    assert digest(inputs) == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert Step("a", inputs, [], print).hash == digest(inputs)


def test_start_finish_is_done_as_an_executor_uses_them(tmp_path: Path):
    log = StepLog(tmp_path)
    h = digest({"k": 1})
    assert not log.is_done("a", h)
    assert log.start("a", h) is False  # a first attempt starts clean
    assert StepLog(tmp_path).start("a", h) is True  # interrupted with the same inputs: resume
    assert StepLog(tmp_path).start("a", digest({"k": 2})) is False  # other inputs: clean again
    with pytest.raises(RuntimeError, match="without writing out.txt"):
        log.finish("a", h, ["out.txt"], 0.5)
    (tmp_path / "out.txt").write_text("x")
    log.finish("a", h, ["out.txt"], 0.5)
    reread = StepLog(tmp_path)
    assert reread.is_done("a", h) and not reread.is_done("a", digest({"k": 2}))
    assert reread.steps["a"]["seconds"] == 0.5 and reread.steps["a"]["outputs"] == ["out.txt"]
    (tmp_path / "out.txt").unlink()
    assert not StepLog(tmp_path).is_done("a", h)  # a finished step whose file is gone is redone


def _write(root: Path, name: str, calls: list, resume: bool) -> None:
    calls.append((name, resume))
    (root / name).write_text(name)


def test_run_steps_runs_in_order_skips_finished_and_checks_deps(tmp_path: Path):
    calls: list = []
    steps = [Step("a", {"x": 1}, ["a.txt"], partial(_write, tmp_path, "a.txt", calls)),
             Step("b", {"a": digest({"x": 1})}, ["b.txt"], partial(_write, tmp_path, "b.txt", calls), deps=("a",))]
    run_steps(steps, StepLog(tmp_path))
    assert calls == [("a.txt", False), ("b.txt", False)]
    run_steps(steps, StepLog(tmp_path))
    assert len(calls) == 2  # both finished: nothing runs again
    with pytest.raises(ValueError, match="depends on a"):
        run_steps(steps[::-1], StepLog(tmp_path / "other"))
