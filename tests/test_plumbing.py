"""Shared plumbing: atomic writes keep the umask, strict JSON, one device rule, stable digests."""

import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from plumbing.devices import check_device, resolve_device
from plumbing.digests import json_digest, tensor_digest
from plumbing.files import atomic_path, json_safe, read_json, write_json
from plumbing.progress import NullBar, progress_bar


def test_atomic_path_uses_the_process_umask_and_leaves_it(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
        assert os.umask(0o027) == 0o027  # unchanged by the write
        mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o640


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "b.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.txt"]


def test_atomic_path_creates_the_folder_and_replaces_the_old_file(tmp_path):
    target = tmp_path / "sub" / "result.json"
    with atomic_path(target) as tmp:
        tmp.write_text("first")
    with atomic_path(target, fsync=False) as tmp:
        tmp.write_text("second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]  # no temp file left


def test_json_safe_turns_numpy_torch_and_nan_into_plain_json(tmp_path):
    value = {"a": np.float32(0.5), "b": torch.tensor(3), "c": (1, float("nan")), "d": [math.inf]}
    assert json_safe(value) == {"a": 0.5, "b": 3, "c": [1, None], "d": [None]}
    write_json(tmp_path / "x.json", value)
    assert json.loads((tmp_path / "x.json").read_text()) == read_json(tmp_path / "x.json")


def test_resolve_device_rules():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="Unknown device 'gpu'"):
        check_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cpu or auto"):
            resolve_device("cuda:1")


def test_digests_depend_on_content_shape_and_dtype():
    x = torch.arange(12, dtype=torch.uint8)
    assert tensor_digest(x) == tensor_digest(x.clone())
    assert tensor_digest(x) != tensor_digest(x.view(3, 4))
    assert tensor_digest(x) != tensor_digest(x.to(torch.int16))
    assert json_digest({"a": 1, "b": 2}) == json_digest({"b": 2, "a": 1})
    assert json_digest({"a": 1}, version=1) != json_digest({"a": 1}, version=2)


def test_progress_bar_is_silent_when_disabled_or_not_a_terminal():
    assert isinstance(progress_bar(False, "x", 3), NullBar)
    with progress_bar(True, "x", 3) as bar:  # pytest captures stderr: not a terminal
        bar.advance(1)
    assert isinstance(bar, NullBar)


def test_long_loops_write_plain_lines_to_a_log(capsys, monkeypatch):
    """Not on a terminal, a loop that asks for log lines prints its count at most every N seconds and at the end."""
    import plumbing.progress as progress

    clock = iter([0.0, 0.0, 70.0, 70.0, 100.0, 200.0])  # enter, 3 advances (one line at 70 s), exit
    monkeypatch.setattr("time.monotonic", lambda: next(clock))
    monkeypatch.delenv("FORGELAB_PLAIN_PROGRESS", raising=False)
    with progress_bar(True, "Cells", 5, log_every=60) as bar:
        assert isinstance(bar, progress.LineBar)
        for _ in range(3):
            bar.advance()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["Cells: 2/5 (70 s)", "Cells: 3/5 (200 s)"]
    monkeypatch.setenv("FORGELAB_PLAIN_PROGRESS", "1")  # worker processes sharing a log stay quiet
    assert isinstance(progress_bar(True, "Cells", 5, log_every=60), NullBar)
