"""Studies that grow: a finished study rerun with an edited config runs only what is new or changed,
an unchanged one does nothing and says so, and an unfinished one is never picked up or thrown away
without --resume or --overwrite."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import tiny_study as tiny
from typer.testing import CliRunner

import pipelines.report.page
from pipelines.study.run import run_study
from pipelines.study.steps import StepLog


class Ran:
    """Record the keys of the steps that ran (StepLog.start is called for those alone)."""

    def __init__(self, monkeypatch):
        self.keys: list[str] = []
        start = StepLog.start

        def record(log, key, hash_):
            self.keys.append(key)
            return start(log, key, hash_)

        monkeypatch.setattr(StepLog, "start", record)


def matrix(out) -> dict[tuple[str, str, str, str], float]:
    with open(out / "transfer" / "matrix.csv", newline="") as f:
        return {(r["detector"], r["train"], r["test"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}


def cell_files(out) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "transfer" / "cells").rglob("*.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny study, copied by each test that changes it."""
    out = tmp_path_factory.mktemp("incremental") / "base"
    run_study(tiny(), out, progress=False)
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    (dst / ".forgelab.lock").unlink(missing_ok=True)
    return dst


def test_a_detector_added_runs_only_its_transfer_cells_and_the_report(finished, tmp_path, monkeypatch):
    out = _copy(finished, tmp_path / "grown")
    before = cell_files(out)
    ran = Ran(monkeypatch)
    reports = []
    write = pipelines.report.page.write_report
    monkeypatch.setattr(pipelines.report.page, "write_report", lambda run, **kw: reports.append(run) or write(run, **kw))
    grown = tiny(transfer={"detectors": ["radial:lr", "xy:lr"]})
    run_study(grown, out, progress=False)

    assert ran.keys == ["transfer"]  # no training, generation, spectra, quality or parity redone
    assert len(reports) == 1
    after = cell_files(out)
    # The old detector's cells were reused untouched; the new detector's were computed.
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == ["transfer/cells/xy-lr/bed_of_nails.json",
                                                "transfer/cells/xy-lr/nearest.json"]
    # The grown matrix equals a from-scratch run of the grown config, old detector included.
    ran.keys.clear()
    scratch = tmp_path / "scratch"
    run_study(grown, scratch, progress=False)
    assert matrix(out) == matrix(scratch)
    assert {d for d, *_ in matrix(out)} == {"radial:lr", "xy:lr"}
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_generator_added_or_more_steps_redo_only_what_changed(finished, tmp_path, monkeypatch):
    out = _copy(finished, tmp_path / "grown")
    ran = Ran(monkeypatch)
    run_study(tiny(grid={"upsamplers": ["nearest", "bed_of_nails", "bilinear"]}), out, progress=False)
    assert ran.keys == ["train/bilinear", "generate/bilinear", "spectra/bilinear", "quality/bilinear",
                        "parity", "transfer"]

    ran.keys.clear()
    more = tiny(grid={"upsamplers": ["nearest", "bed_of_nails", "bilinear"]}, train={"steps": 5})
    run_study(more, out, progress=False)
    assert "spectra/real" not in ran.keys and "train/nearest" in ran.keys and "generate/nearest" in ran.keys
    # A redone training starts clean: its log holds steps 1..5 once, nothing of the 3-step run.
    for name in ("nearest", "bed_of_nails", "bilinear"):
        lines = (out / "generators" / name / "log.jsonl").read_text().splitlines()
        steps = [json.loads(x)["step"] for x in lines if '"step"' in x and '"loss' in x]
        assert steps == [1, 2, 3, 4, 5], (name, steps)


def test_an_unchanged_rerun_does_nothing_and_says_where_the_report_is(finished, tmp_path, monkeypatch, capsys):
    out = _copy(finished, tmp_path / "same")
    report_time = (out / "report.html").stat().st_mtime_ns
    ran = Ran(monkeypatch)
    page = run_study(tiny(), out, progress=False)
    assert ran.keys == [] and page == out / "report.html"
    assert (out / "report.html").stat().st_mtime_ns == report_time
    said = capsys.readouterr().out
    assert "Nothing to do" in said and f"forgelab report {out}" in said and "--overwrite" in said


def test_unchanged_rerun_on_the_command_line_exits_0(finished, tmp_path):
    from pipelines.cli import app

    out = _copy(finished, tmp_path / "cli")
    config = tmp_path / "tiny.toml"
    config.write_text(_toml(tiny()))
    result = CliRunner().invoke(app, ["study", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Nothing to do" in result.output and "forgelab report" in result.output
    assert f"Report: {out / 'report.html'}" in result.output


def test_an_interrupted_study_needs_resume_or_overwrite(tmp_path, monkeypatch):
    from pipelines.cli import app

    out = tmp_path / "run"
    cfg = tiny()
    cfg.pop("transfer")

    def crash(run_dir, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines.report.page, "write_report", crash)
    config = tmp_path / "tiny.toml"
    config.write_text(_toml(cfg))
    result = CliRunner().invoke(app, ["study", str(config), "--out", str(out)])
    assert result.exit_code == 130
    assert "--resume" in result.output  # the interrupt message says how to continue
    monkeypatch.undo()

    with pytest.raises(FileExistsError, match="unfinished study; pass --resume .*--overwrite"):
        run_study(cfg, out, progress=False, resume=False)
    result = CliRunner().invoke(app, ["study", str(config), "--out", str(out)])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert "--resume" in result.output and "--overwrite" in result.output
    assert (out / "generators" / "nearest" / "checkpoint.pt").is_file()  # nothing lost

    ran = Ran(monkeypatch)
    result = CliRunner().invoke(app, ["study", str(config), "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert ran.keys == []  # every step had finished: only the report was left
    assert (out / "report.html").is_file()


def _toml(cfg: dict) -> str:
    """A TOML rendering of the small dicts these tests use (tables of scalars and lists)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    return "\n".join(f"[{section}]\n" + "\n".join(f"{k} = {value(v)}" for k, v in table.items()) + "\n"
                     for section, table in cfg.items())


@pytest.mark.slow
def test_two_local_jobs_give_the_same_study(finished, tmp_path):
    """[study] jobs = 2 runs independent steps in two worker processes; every number is the same."""
    out = tmp_path / "parallel"
    run_study(tiny(study={"jobs": 2}), out, progress=False)
    assert matrix(out) == matrix(finished)
    for name in ("nearest", "bed_of_nails"):
        assert (json.loads((out / "quality" / f"{name}.json").read_text())
                == json.loads((finished / "quality" / f"{name}.json").read_text()))
        assert ((out / "fakes" / f"{name}.npy").read_bytes() == (finished / "fakes" / f"{name}.npy").read_bytes())
    steps = json.loads((out / "steps.json").read_text())["steps"]
    assert {s["status"] for s in steps.values()} == {"done"} and len(steps) == len(
        json.loads((finished / "steps.json").read_text())["steps"])
