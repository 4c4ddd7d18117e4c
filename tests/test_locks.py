"""One writer per run folder: plumbing.locks, and the commands that hold it (real subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import smooth_images, write_pngs

from plumbing.locks import LOCK_FILE, FolderLocked, folder_contents, folder_lock, read_holder

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

# A process that takes the lock, says so, and waits to be killed.
HOLDER = textwrap.dedent("""
    import sys, time
    from plumbing.locks import folder_lock
    with folder_lock(sys.argv[1], "holder"):
        print("locked", flush=True)
        time.sleep(600)
""")

# The CLI with a slower discriminator loss, so that a run lasts long enough for a second writer
# started at the same moment to meet it. Sleeping changes no computed value.
SLOW_CLI = textwrap.dedent("""
    import sys, time
    import gans.losses as L
    d_loss = L.d_loss
    def slow_d_loss(*a, **k):
        time.sleep(float(sys.argv[1]))
        return d_loss(*a, **k)
    L.d_loss = slow_d_loss
    from pipelines.cli import app
    app(sys.argv[2:], prog_name="forgelab")
""")


def start_holder(folder: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], env=ENV, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked", p.stderr.read()
    return p


def test_second_process_is_refused_with_the_holder_named(tmp_path):
    folder = tmp_path / "run"
    holder = start_holder(folder)
    try:
        assert read_holder(folder) == {**read_holder(folder), "pid": holder.pid, "host": socket.gethostname(),
                                       "command": "holder"}
        with pytest.raises(FolderLocked) as e, folder_lock(folder, "train"):
            pass
        msg = str(e.value)
        assert msg == (f"{folder} is being written by process {holder.pid} on host {socket.gethostname()} "
                       f"(forgelab holder, since {read_holder(folder)['since']}); wait for it to finish or "
                       "stop it, or choose another output folder.")
        assert isinstance(e.value, OSError)  # the CLI prints OSErrors as one "Error: ..." line
    finally:
        holder.kill()
        holder.wait()


def test_sigkilled_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "run"
    holder = start_holder(folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (folder / LOCK_FILE).exists()  # the file stays, but the kernel dropped the lock
    with folder_lock(folder, "train"):
        assert read_holder(folder)["pid"] == os.getpid()
    assert not (folder / LOCK_FILE).exists()


def test_lock_nests_in_one_process_and_cleans_up(tmp_path):
    folder = tmp_path / "new" / "run"
    with folder_lock(folder, "study"):
        assert folder.is_dir() and folder_contents(folder) == []
        with folder_lock(folder / ".", "inner"):  # the same folder, spelled differently
            (folder / "a.txt").write_text("x")
        assert (folder / LOCK_FILE).exists()  # still held by the outer block
        p = subprocess.run([sys.executable, "-c", HOLDER, str(folder)], env=ENV, cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 1 and "is being written by process" in p.stderr
    assert [x.name for x in folder.iterdir()] == ["a.txt"]
    # A folder the lock created and nothing was written into is removed again.
    empty = tmp_path / "empty"
    with folder_lock(empty):
        pass
    assert not empty.exists()


def test_a_file_is_not_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"), folder_lock(f):
        pass


def _start_cli(delay: float, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_CLI, str(delay), *map(str, args)], env=ENV, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _one_refuses(procs: list[subprocess.Popen], folder: Path) -> None:
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 1], results
    refusal = next(err for rc, _out, err in results if rc == 1).strip()
    winner = next(p for p, r in zip(procs, results, strict=True) if r[0] == 0)
    assert refusal.startswith(f"Error: {folder} is being written by process {winner.pid} on host "), refusal
    assert len(refusal.splitlines()) == 1


def test_two_train_writers_one_refuses(tmp_path):
    data = tmp_path / "data"
    write_pngs(smooth_images(8, 32, seed=1), data)
    cfg = tmp_path / "train.toml"
    cfg.write_text("log_every = 1\n")
    run = tmp_path / "run"
    args = ["train", "--data", data, "--resolution", "32", "--steps", "6", "--batch-size", "4", "--width", "4",
            "--ckpt-every", "0", "--sample-every", "0", "--device", "cpu", "--config", cfg, "--out", run]
    procs = [_start_cli(0.4, *args) for _ in range(2)]
    _one_refuses(procs, run)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # one run's steps, not two interleaved
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
    assert not (run / LOCK_FILE).exists()


STUDY = """\
[study]
name = "twowriters"
resolution = 32
device = "cpu"
threads = 1
[train]
steps = 4
batch_size = 4
width = 4
ckpt_every = 0
sample_every = 0
log_every = 1
[grid]
upsamplers = ["nearest"]
[generate]
n = 8
batch_size = 8
grid = 2
[quality]
spectral = true
"""


@pytest.mark.slow
def test_two_study_writers_one_refuses(tmp_path):
    data = tmp_path / "data"
    write_pngs(smooth_images(8, 32, seed=3), data)
    cfg = tmp_path / "study.toml"
    cfg.write_text(STUDY)
    out = tmp_path / "study"
    procs = [_start_cli(0.4, "study", cfg, "--data", data, "--out", out, "--quiet") for _ in range(2)]
    _one_refuses(procs, out)
    logs = list(out.glob("generators/*/log.jsonl"))
    assert len(logs) == 1
    assert [json.loads(x)["step"] for x in logs[0].read_text().splitlines()] == [1, 2, 3, 4]
    steps = json.loads((out / "steps.json").read_text())["steps"]
    assert all(s["status"] == "done" for s in steps.values())


def test_every_writing_command_refuses_a_held_folder(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    folder = tmp_path / "held"
    holder = start_holder(folder)
    try:
        commands = {
            "train": ["train", "--data", "embedded", "--out", folder],
            "generate": ["generate", tmp_path / "no-such-run", "--n", "4", "--out", folder],
            "detect fit": ["detect", "fit", "--real", tmp_path, "--fake", tmp_path, "--out", folder],
            "transfer": ["transfer", "--real", "embedded", "--fake", f"a={tmp_path}", "--detector", "radial:lr",
                         "--out", folder],
            "study": ["study", "quickstart", "--out", folder],
            "quickstart": ["quickstart", "--out", folder],
        }
        for name, args in commands.items():
            r = CliRunner().invoke(app, [str(a) for a in args])
            assert r.exit_code == 1, (name, r.output)
            assert r.output.strip() == (f"Error: {folder} is being written by process {holder.pid} on host "
                                        f"{socket.gethostname()} (forgelab holder, since {read_holder(folder)['since']}); "
                                        "wait for it to finish or stop it, or choose another output folder."), name
        assert [p.name for p in folder.iterdir()] == [LOCK_FILE]  # nothing was written
    finally:
        holder.kill()
        holder.wait()
