"""The one atomic-write primitive shared by gans, detectors and pipelines."""

from __future__ import annotations

import os
import stat

import pytest

from detectors.atomicfile import atomic_path


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "result.json"
    with atomic_path(target) as tmp:
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]  # no temp file left


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    os.umask(old)
    with atomic_path(tmp_path / "f.txt", fsync=False) as tmp:
        tmp.write_text("x")
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~old
