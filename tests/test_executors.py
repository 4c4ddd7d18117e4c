"""pipelines.study.executors: the local and the Ray executor give the same files and share steps.json.

The Ray tests use one local Ray runtime limited to 2 CPUs, started once for this module.
"""

from __future__ import annotations

import _thread
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.study.executors import (
    RAY_INSTALL,
    RayMissing,
    StepFailed,
    check_order,
    run_steps,
    step_log_path,
)
from pipelines.study.steps import Step, StepLog, digest

# ---------------------------------------------------------------- the steps of a small DAG
#
#   a ──► b ──► d        every step appends a line to runs/<name>.txt (how often it ran, with
#   c ────────► d        which resume flag) and writes out/<name>.txt from its inputs.


def _record(root: Path, name: str, resume: bool) -> None:
    runs = root / "runs" / f"{name}.txt"
    runs.parent.mkdir(parents=True, exist_ok=True)
    with runs.open("a") as f:
        f.write(f"{os.getpid()} {resume}\n")


def _value(root: Path, name: str) -> int:
    return int((root / "out" / f"{name}.txt").read_text())


def _write(root: Path, name: str, value: int) -> None:
    (root / "out").mkdir(parents=True, exist_ok=True)
    (root / "out" / f"{name}.txt").write_text(str(value))


def step_fn(root: Path, name: str, seed: int, deps: tuple[str, ...], mode: str, resume: bool) -> None:
    """out/<name> = seed * 10 + the sum of its dependencies' values; ``mode`` adds a failure."""
    attempt = len((root / "runs" / f"{name}.txt").read_text().splitlines()) if (root / "runs" / f"{name}.txt").exists() else 0
    _record(root, name, resume)
    if mode == "wait-to-be-killed" and attempt == 0:
        time.sleep(120)  # the test SIGKILLs this worker; Ray's retry runs the step again
    if mode == "interrupt-once" and attempt == 0:
        raise KeyboardInterrupt  # a local run stopped by Ctrl-C inside this step
    if mode == "hang-once" and attempt == 0:
        time.sleep(120)  # the test interrupts the driver meanwhile
    if mode == "raise":
        raise ZeroDivisionError("this step always fails")
    if mode.startswith("meet:"):  # wait (at most 60 s) until the other step has started too
        (root / "started").mkdir(exist_ok=True)
        (root / "started" / name).touch()
        other = root / "started" / mode[5:]
        for _ in range(600):
            if other.exists():
                break
            time.sleep(0.1)
        (root / "started" / f"{name}.met").write_text(str(other.exists()))
    _write(root, name, seed * 10 + sum(_value(root, d) for d in deps))


def make_steps(root: Path, modes: dict[str, str] | None = None) -> list[Step]:
    modes = modes or {}
    graph = {"a": (), "b": ("a",), "c": (), "d": ("b", "c")}
    return [Step(key=f"step/{n}", inputs={"name": n, "seed": i + 1}, outputs=[f"out/{n}.txt"],
                 run=functools.partial(step_fn, root, n, i + 1, deps, modes.get(n, "")),
                 deps=tuple(f"step/{d}" for d in deps))
            for i, (n, deps) in enumerate(graph.items())]


# a = 10, b = 20 + a = 30, c = 30, d = 40 + b + c = 100
EXPECTED = {"a": 10, "b": 30, "c": 30, "d": 100}


def results(root: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in sorted((root / "out").glob("*.txt"))}


def runs(root: Path, name: str) -> list[tuple[int, bool]]:
    f = root / "runs" / f"{name}.txt"
    return [(int(p), r == "True") for p, r in (line.split() for line in f.read_text().splitlines())] if f.exists() else []


def states(root: Path) -> dict[str, tuple[str, str]]:
    steps = json.loads((root / "steps.json").read_text())["steps"]
    return {k: (v["status"], v["hash"]) for k, v in steps.items()}


# ---------------------------------------------------------------- without Ray


def test_local_with_two_jobs_runs_independent_steps_at_once(tmp_path):
    # a and c have no dependencies: with two workers they meet (each waits until the other started).
    log = StepLog(tmp_path)
    steps = make_steps(tmp_path, {"a": "meet:c", "c": "meet:a"})
    assert run_steps(steps, log, jobs=2) == dict.fromkeys(["step/a", "step/b", "step/c", "step/d"], "done")
    assert results(tmp_path) == EXPECTED
    assert (tmp_path / "started" / "a.met").read_text() == "True" == (tmp_path / "started" / "c.met").read_text()
    assert {s for s, _ in states(tmp_path).values()} == {"done"}
    assert run_steps(make_steps(tmp_path), StepLog(tmp_path), jobs=2) == dict.fromkeys(
        ["step/a", "step/b", "step/c", "step/d"], "skipped")


def test_local_runs_in_order_and_skips_finished_steps(tmp_path):
    log = StepLog(tmp_path)
    assert run_steps(make_steps(tmp_path), log) == dict.fromkeys(["step/a", "step/b", "step/c", "step/d"], "done")
    assert results(tmp_path) == EXPECTED
    again = run_steps(make_steps(tmp_path), StepLog(tmp_path))
    assert set(again.values()) == {"skipped"} and all(len(runs(tmp_path, n)) == 1 for n in EXPECTED)
    # Step.hash: the study's own hashes, so a study's steps.json and the executors' agree.
    assert states(tmp_path)["step/a"] == ("done", digest({"name": "a", "seed": 1}))


def test_bad_step_lists_are_refused():
    s = functools.partial(print)
    with pytest.raises(ValueError, match="x depends on y, which is not listed before it"):
        check_order([Step("x", {}, [], s, deps=("y",)), Step("y", {}, [], s)])
    with pytest.raises(ValueError, match="'x' is listed twice"):
        check_order([Step("x", {}, [], s), Step("x", {}, [], s)])
    with pytest.raises(ValueError, match="Unknown executor 'dask'; choose one of: local, ray"):
        run_steps([], None, executor="dask")


def test_resources_beyond_the_runtime_are_refused():
    from pipelines.study.executors import check_resources

    s = functools.partial(print)
    have = {"CPU": 2.0, "memory": 1e9}
    check_resources([Step("a", {}, [], s, resources={"num_cpus": 2}), Step("b", {}, [], s)], have)
    with pytest.raises(ValueError) as e:
        check_resources([Step("train/x", {}, [], s, resources={"num_cpus": 1, "num_gpus": 1})], have)
    assert str(e.value) == ("Step train/x needs 1 GPU but the Ray runtime has 0; run it where they are (for GPUs: "
                            "--device cuda on a machine or cluster with GPUs), or use --device cpu.")
    with pytest.raises(ValueError, match="needs 3 CPUs but the Ray runtime has 2"):
        check_resources([Step("a", {}, [], s, resources={"num_cpus": 3})], have)


def test_ray_missing_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayMissing) as e:
        run_steps(make_steps(tmp_path), StepLog(tmp_path), executor="ray")
    assert str(e.value) == f"The ray executor needs Ray, which is not installed; install it with: {RAY_INSTALL}"
    assert isinstance(e.value, ValueError) and RAY_INSTALL == "pip install 'forgelab[ray]'"
    assert not (tmp_path / "steps.json").exists()


# ---------------------------------------------------------------- on a local Ray runtime



def test_ray_gives_the_same_files_as_local(ray_runtime, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_steps(make_steps(local), StepLog(local), "local")
    run_steps(make_steps(remote), StepLog(remote), "ray", progress=False)
    assert results(remote) == results(local) == EXPECTED
    assert states(remote) == states(local)
    assert all(len(runs(remote, n)) == 1 for n in EXPECTED)
    assert {p for p, _ in runs(remote, "a")} != {os.getpid()}  # it ran in a worker, not here
    # Each task's output went to its own log in the study folder.
    assert step_log_path(remote, "step/d").read_text().startswith("--- ")
    again = run_steps(make_steps(remote), StepLog(remote), "ray", progress=False)
    assert set(again.values()) == {"skipped"} and all(len(runs(remote, n)) == 1 for n in EXPECTED)


def test_ray_refuses_a_gpu_step_without_gpus_before_submitting(ray_runtime, tmp_path):
    steps = make_steps(tmp_path)
    steps[1] = dataclasses.replace(steps[1], resources={"num_cpus": 1, "num_gpus": 1})
    with pytest.raises(ValueError, match="Step step/b needs 1 GPU but the Ray runtime has 0"):
        run_steps(steps, StepLog(tmp_path), "ray", progress=False)
    assert not (tmp_path / "steps.json").exists() and not (tmp_path / "out").exists()


def test_ray_runs_independent_steps_at_once(ray_runtime, tmp_path):
    # Each of a and c waits inside its task until the other one has started: only possible when
    # both run at the same time (one after the other, the first would give up after 60 s).
    run_steps(make_steps(tmp_path, {"a": "meet:c", "c": "meet:a"}), StepLog(tmp_path), "ray", progress=False)
    assert [(tmp_path / "started" / f"{n}.met").read_text() for n in "ac"] == ["True", "True"]
    assert results(tmp_path) == EXPECTED


def test_ray_retries_a_step_whose_worker_is_killed(ray_runtime, tmp_path):
    def kill_first_attempt() -> None:
        for _ in range(600):
            if runs(tmp_path, "b"):
                os.kill(runs(tmp_path, "b")[0][0], signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_first_attempt)
    killer.start()
    run_steps(make_steps(tmp_path, {"b": "wait-to-be-killed"}), StepLog(tmp_path), "ray", progress=False)
    killer.join()
    attempts = runs(tmp_path, "b")
    assert len(attempts) == 2 and attempts[0][0] != attempts[1][0]  # a second worker ran it again
    assert results(tmp_path) == EXPECTED
    assert {s for s, _ in states(tmp_path).values()} == {"done"}


def test_ray_failure_names_the_step_and_its_log_and_keeps_finished_steps(ray_runtime, tmp_path):
    with pytest.raises(StepFailed) as e:
        run_steps(make_steps(tmp_path, {"b": "raise"}), StepLog(tmp_path), "ray", progress=False)
    log = step_log_path(tmp_path, "step/b")
    assert str(e.value) == (f"Step step/b failed (ZeroDivisionError: this step always fails); see its log {log}. "
                            "Finished steps are kept: run the study again with --resume to continue.")
    assert "ZeroDivisionError: this step always fails" in log.read_text()
    assert len(runs(tmp_path, "b")) == 1  # an exception is not retried, only a dead worker
    st = states(tmp_path)
    assert st["step/a"][0] == "done" and st["step/b"][0] == "running" and "step/d" not in st


def test_local_interrupted_resumes_with_ray(ray_runtime, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_steps(make_steps(tmp_path, {"b": "interrupt-once"}), StepLog(tmp_path), "local")
    assert {k: s for k, (s, _) in states(tmp_path).items()} == {"step/a": "done", "step/b": "running"}
    run_steps(make_steps(tmp_path, {"b": "interrupt-once"}), StepLog(tmp_path), "ray", progress=False)
    assert results(tmp_path) == EXPECTED
    assert len(runs(tmp_path, "a")) == 1  # finished before the stop: not redone
    assert [r for _, r in runs(tmp_path, "b")] == [False, True]  # the second attempt resumes


def test_ray_interrupted_resumes_with_local(ray_runtime, tmp_path):
    import signal

    # Ctrl-C as the user presses it: Python's default handler, whatever an earlier test or library left.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)

    def ctrl_c_when_b_runs() -> None:
        for _ in range(1100):  # b starts after a; a Ray worker can take a while to start on a busy machine
            if runs(tmp_path, "b"):
                _thread.interrupt_main()
                return
            time.sleep(0.1)

    t = threading.Thread(target=ctrl_c_when_b_runs)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_steps(make_steps(tmp_path, {"b": "hang-once"}), StepLog(tmp_path), "ray", progress=False)
    finally:
        t.join()
        signal.signal(signal.SIGINT, old)
    st = {k: s for k, (s, _) in states(tmp_path).items()}
    assert st["step/a"] == "done" and st["step/b"] == "running" and "step/d" not in st
    pid = runs(tmp_path, "b")[0][0]
    for _ in range(100):  # the cancelled task's worker is gone (force-cancel kills it)
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid)
    run_steps(make_steps(tmp_path, {"b": "hang-once"}), StepLog(tmp_path), "local")
    assert results(tmp_path) == EXPECTED
    assert len(runs(tmp_path, "a")) == 1
    assert [r for _, r in runs(tmp_path, "b")] == [False, True]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"



def test_shared_folder_probe(tmp_path):
    from pipelines.study.executors import FolderNotShared, _probe, check_probes

    f = tmp_path / ".probe"
    f.write_text("token")
    assert _probe(str(f), "token")[0] and not _probe(str(f), "other")[0]
    assert not _probe(str(tmp_path / "missing"), "token")[0]
    check_probes([(True, "node1"), (True, "node2")], tmp_path)
    with pytest.raises(FolderNotShared) as e:
        check_probes([(True, "node1"), (False, "node2")], tmp_path)
    assert str(e.value) == (f"Ray workers on node2 cannot see the study folder {tmp_path.resolve()}; it must be on "
                            "storage every node sees (a shared file system such as NFS), at the same path on every node.")


def test_live_table_shows_each_step_state_and_where():
    from rich.console import Console

    from pipelines.study.executors import _Row, _table

    rows = {"train/a": _Row("done", "vm:12 gpu 0", seconds=3.25), "train/b": _Row("running", "vm:13", time.perf_counter() - 7),
            "generate/a": _Row("waiting"), "transfer": _Row("failed", "vm:14", seconds=0.5),
            "spectra/real": _Row("skipped")}
    console = Console(record=True, width=100)
    console.print(_table(rows))
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
             for line in console.export_text().splitlines() if line.count("│") == 5}
    running_for = float(lines["train/b"].pop().removesuffix(" s"))
    assert 7 <= running_for < 60  # time since the step started
    assert lines == {"train/a": ["done", "vm:12 gpu 0", "3.2 s"], "train/b": ["running", "vm:13"],
                     "generate/a": ["waiting", "", ""], "transfer": ["failed", "vm:14", "0.5 s"],
                     "spectra/real": ["skipped", "", ""]}
