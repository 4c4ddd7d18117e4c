"""A whole study on Ray: the same numbers as the local executor, a killed worker retried, resume across executors.

One local Ray runtime limited to 2 CPUs is started once for this module. The study is tiny
(two generators, two detectors, 3 training steps) so that the module takes well under a minute.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from pipelines.data.images import load_data
from pipelines.study.config import load_config
from pipelines.study.executors import RAY_INSTALL, Shipped, run_steps, ship
from pipelines.study.run import build_steps, run_study

STUDY = {
    "study": {"name": "rayed", "seed": 0, "resolution": 32, "data": "embedded", "n_real": 48, "device": "cpu",
              "threads": 1},
    "train": {"steps": 3, "batch_size": 16, "width": 8, "z_dim": 16, "log_every": 1, "sample_every": 0,
              "ckpt_every": 0},
    "grid": {"upsamplers": ["nearest", "bed_of_nails"]},
    "generate": {"n": 40, "batch_size": 40, "grid": 16},
    "transfer": {"detectors": ["radial:lr", "dct:lr"]},
}
STEPS = ["spectra/real", "train/nearest", "generate/nearest", "spectra/nearest", "quality/nearest",
         "train/bed_of_nails", "generate/bed_of_nails", "spectra/bed_of_nails", "quality/bed_of_nails", "parity",
         "transfer"]



@pytest.fixture(scope="module")
def local_study(tmp_path_factory) -> Path:
    """The study run by the local executor: the reference every Ray run must match byte for byte."""
    out = tmp_path_factory.mktemp("local") / "study"
    run_study(STUDY, out, progress=False, executor="local")
    return out


def results(out: Path) -> dict[str, bytes]:
    """The files whose bytes must not depend on the executor: the matrix and every fake set."""
    files = [out / "transfer" / "matrix.csv", *sorted((out / "fakes").glob("*.npy"))]
    assert len(files) == 3
    return {str(f.relative_to(out)): f.read_bytes() for f in files}


def step_records(out: Path) -> dict[str, dict]:
    return json.loads((out / "steps.json").read_text())["steps"]


def _die_once(marker: str, run, resume: bool) -> None:
    """Kill this worker process (SIGKILL, no clean-up) the first time, then run the step."""
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    run(resume)


class Recorder:
    """An executor for run_study that records each step's final state (and can stop after some steps)."""

    def __init__(self, executor: str, stop_after: int | None = None, change=None):
        self.executor, self.stop_after, self.change = executor, stop_after, change
        self.states: dict[str, str] = {}

    def __call__(self, steps, log) -> None:
        steps = [self.change(s) if self.change else s for s in steps]
        if self.stop_after is not None:  # the study "stops" here: as if interrupted after these steps
            self.states.update(run_steps(steps[:self.stop_after], log, self.executor, progress=False))
            raise KeyboardInterrupt
        self.states.update(run_steps(steps, log, self.executor, progress=False))


def test_ray_study_gives_the_numbers_of_the_local_study(ray_runtime, local_study, tmp_path):
    out = tmp_path / "study"
    run_study({**STUDY, "study": {**STUDY["study"], "executor": "ray"}}, out, progress=False)  # from the config
    assert results(out) == results(local_study)
    assert sorted(step_records(out)) == sorted(STEPS)  # in the order they started: two trainings at once
    assert {r["status"] for r in step_records(out).values()} == {"done"}
    # [study] executor is in no step hash: either executor's steps.json serves the other.
    assert {k: r["hash"] for k, r in step_records(out).items()} == \
        {k: r["hash"] for k, r in step_records(local_study).items()}
    # Each Ray task wrote its output to its own log in the study folder.
    assert "resume=False" in (out / "logs" / "train" / "nearest.log").read_text()


def test_a_killed_training_worker_is_retried_and_the_study_finishes(ray_runtime, local_study, tmp_path):
    out, marker = tmp_path / "study", tmp_path / "killed.pid"

    def kill_first_training(step):
        if step.key != "train/nearest":
            return step
        return dataclasses.replace(step, run=functools.partial(_die_once, str(marker), step.run))

    run_study(STUDY, out, progress=False, executor=Recorder("ray", change=kill_first_training))
    assert marker.exists()  # the first attempt was killed
    killed = int(marker.read_text())
    log = (out / "logs" / "train" / "nearest.log").read_text()
    assert log.count("--- ") == 2 and f":{killed} " not in log.split("--- ")[-1]  # retried by another process
    assert results(out) == results(local_study)


@pytest.mark.parametrize("first, then", [("local", "ray"), pytest.param("ray", "local", marks=pytest.mark.slow)])
def test_a_stopped_study_resumes_with_the_other_executor(ray_runtime, local_study, tmp_path, first, then):
    out, n = tmp_path / "study", 5  # stopped after real spectra and all of the first generator's steps
    with pytest.raises(KeyboardInterrupt):
        run_study(STUDY, out, progress=False, executor=Recorder(first, stop_after=n))
    before = step_records(out)
    assert list(before) == STEPS[:n]
    resumed = Recorder(then)
    run_study(STUDY, out, progress=False, executor=resumed)
    assert resumed.states == {**dict.fromkeys(STEPS[:n], "skipped"), **dict.fromkeys(STEPS[n:], "done")}
    after = step_records(out)
    assert all(after[k] == before[k] for k in STEPS[:n])  # finished steps untouched (same time stamps)
    assert results(out) == results(local_study)


def test_the_real_images_are_shipped_to_the_object_store_once(ray_runtime):
    cfg = load_config(STUDY)
    real = load_data("embedded", 32, limit=8, seed=0, progress=False)
    steps = build_steps(cfg, Path("unused"), real, "hash", progress=False)
    shared: dict = {}
    shipped = [ship(ray_runtime, s.run, shared) for s in steps]
    refs = {a.ref for f in shipped for a in f.args if isinstance(a, Shipped)}
    # The training images (spectra, training, quality) and the real train/test sets (parity,
    # transfer): two objects, each put once.
    assert len(shared) == 2 and len(refs) == 2
    assert sum(isinstance(a, Shipped) for f in shipped for a in f.args) == 1 + 2 + 2 + 1 + 1
    first = shipped[0].args[1]  # spectra/real's images
    assert torch.equal(ray_runtime.get(first.ref), real.images)


def test_executor_choice_is_checked_before_the_folder_is_touched(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app

    cfg = tmp_path / "study.toml"
    cfg.write_text('[study]\nname = "x"\ndata = "embedded"\n[grid]\nupsamplers = ["nearest"]\n')
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    out = tmp_path / "out"
    for args in (["study", str(cfg), "--executor", "ray"], ["quickstart", "--executor", "ray"]):
        r = CliRunner().invoke(app, [*args, "--out", str(out), "--quiet"])
        assert r.exit_code != 0 and f"install it with: {RAY_INSTALL}" in r.output
    r = CliRunner().invoke(app, ["study", str(cfg), "--executor", "dask", "--out", str(out)])
    assert r.exit_code != 0 and "Unknown executor 'dask'; choose one of: local, ray." in r.output
    r = CliRunner().invoke(app, ["study", str(cfg), "--address", "auto", "--out", str(out)])
    assert r.exit_code != 0 and "--address auto needs --executor ray" in r.output
    assert not out.exists()
    with pytest.raises(ValueError, match=r"\[study\] executor = 'dask' is not known; choose one of: local, ray"):
        load_config({**STUDY, "study": {**STUDY["study"], "executor": "dask"}})
