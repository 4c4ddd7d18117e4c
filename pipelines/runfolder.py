"""Run folders: one folder per command run, atomic files, and a manifest that makes it repeatable."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

# Re-exported: pipelines modules write their files through these (atomic, strict JSON).
from plumbing.files import atomic_path, read_json, write_bytes, write_json, write_text  # noqa: F401
from plumbing.locks import folder_contents, folder_lock

MANIFEST = "manifest.json"


def versions() -> dict[str, str]:
    """Versions of Python and the libraries whose behaviour decides the results."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("torch", "torchvision", "numpy", "scipy", "sklearn", "torch_fidelity"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # a missing optional library is not an error here
            pass
    try:
        out["forgelab"] = version("forgelab")
    except Exception:
        pass
    return out


def fingerprint_files(files: Iterable[str | os.PathLike]) -> str:
    """A short hash of file names, sizes and modification times (cheap: no file is read)."""
    h = hashlib.sha256()
    for f in sorted(str(p) for p in files):
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def locked(command: str, option: str = "out") -> Callable[[Callable], Callable]:
    """Make a command hold the write lock of the folder given as its ``option`` while it runs.

    A second writer of the same folder stops at once (see :mod:`plumbing.locks`). Under
    torchrun only global rank 0 takes the lock: the other ranks write their share of the
    same run, and torchrun stops them when rank 0 refuses.
    """

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            folder = kwargs.get(option)
            if folder is None or int(os.environ.get("RANK", "0")) != 0:
                return fn(*args, **kwargs)
            with folder_lock(folder, command):
                return fn(*args, **kwargs)

        return wrapper

    return wrap


class RunFolder:
    """A run's output folder with a manifest; refuses to overwrite a finished run unless asked."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict ({} when there is none yet)."""
        return read_json(self.manifest_path) if self.manifest_path.exists() else {}

    def is_finished(self) -> bool:
        """True when the manifest says the run completed."""
        return self.manifest().get("status") == "finished"

    def is_unfinished(self) -> bool:
        """True when the folder holds a run that started and did not finish (interrupted, crashed, diverged)."""
        return self.manifest_path.exists() and self.manifest().get("status") != "finished"

    def refuse_unfinished(self, resume: bool, overwrite: bool) -> None:
        """Stop a new run from starting over an unfinished one unless ``--resume`` or ``--overwrite`` says what to do."""
        if self.is_unfinished() and not resume and not overwrite:
            command = self.manifest().get("command", "forgelab")
            raise FileExistsError(
                f"{self.path} holds an unfinished '{command}' run; pass --resume to continue it, "
                "--overwrite to start over, or choose another --out."
            )

    def start(self, command: str, config: dict[str, Any], *, seed: int | None = None,
              device: str | None = None, data: str | None = None, overwrite: bool = False,
              resume: bool = False) -> RunFolder:
        """Create (or reopen with ``resume``) the folder and write a 'running' manifest."""
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{self.path} exists and is not a folder; choose another --out.")
        if self.is_finished() and not overwrite and not resume:
            raise FileExistsError(
                f"{self.path} already holds a finished run; pass --overwrite to replace it or choose another --out."
            )
        if not resume and self.path.is_dir() and not self.manifest_path.exists() and folder_contents(self.path):
            # Not a run folder (a data folder, say): neither write into it nor let --overwrite delete it.
            raise FileExistsError(
                f"{self.path} is not empty and is not a forgelab run folder (no {MANIFEST}); choose another --out."
            )
        if overwrite and self.path.exists():
            # Everything but the lock file: the writer holding it (this process) keeps it.
            for entry in folder_contents(self.path):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        check_writable(self.path)
        old = self.manifest() if resume else {}
        manifest = {
            "command": command,
            "config": config,
            "seed": seed,
            "device": device,
            "data": data,
            "versions": versions(),
            "started": old.get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
            "status": "running",
        }
        write_json(self.manifest_path, manifest)
        return self

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into the manifest, atomically."""
        m = self.manifest()
        m.update(fields)
        write_json(self.manifest_path, m)

    def finish(self, **fields: Any) -> None:
        """Mark the run finished."""
        self.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)

    def inside(self, relative: str | os.PathLike) -> Path:
        """Resolve a path recorded in a manifest, refusing any that leads outside the run folder."""
        p = (self.path / relative).resolve()
        root = self.path.resolve()
        if p != root and root not in p.parents:
            raise ValueError(f"{relative} points outside the run folder {self.path}; refusing to follow it.")
        return p


def check_writable(folder: Path, min_free_bytes: int = 16 * 2**20) -> None:
    """Stop early when ``folder`` cannot be written or its disk is (nearly) full."""
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"Cannot write to {folder}; choose another --out or fix its permissions.")
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise OSError(f"Only {free // 2**20} MiB free on the disk of {folder}; free some space or choose another --out.")
