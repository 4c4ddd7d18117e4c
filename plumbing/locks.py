"""One writer per folder: an exclusive lock that the operating system drops when its holder dies.

A command that writes a run or study folder holds :func:`folder_lock` on it for as long as it
writes. The lock is ``fcntl.flock`` on a small file inside the folder (:data:`LOCK_FILE`), so
it needs no clean-up: when the holding process ends, however it ends (SIGKILL included), the
kernel releases the lock, and the next writer takes it. The file also records who holds it
(host, PID, command, since when) for the message a second writer gets.

On NFS, Linux turns ``flock`` into a POSIX lock held by the NFS server, so the lock works
across the machines of a cluster; a crashed *machine* releases it when the server's lease
expires (typically 90 s).

Forked child processes share the lock (it belongs to the open file, which a fork inherits);
processes started with ``exec`` (subprocess, Ray's daemons) do not, because the descriptor is
opened close-on-exec.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".forgelab.lock"

# Locks this process holds, by resolved folder: taking the same folder's lock again in the same
# process (a command that calls a function that also locks) nests instead of refusing.
_held: dict[str, _Held] = {}


class FolderLocked(BlockingIOError):
    """Another process holds the write lock of a folder."""


class _Held:
    def __init__(self, fd: int, path: Path, created: bool):
        self.fd, self.path, self.created, self.depth = fd, path, created, 1


def folder_contents(folder: str | os.PathLike) -> list[Path]:
    """The entries of ``folder`` without its lock file (is the folder empty of real content?)."""
    return [p for p in Path(folder).iterdir() if p.name != LOCK_FILE]


def read_holder(folder: str | os.PathLike) -> dict:
    """Who holds (or last held) the lock of ``folder``: {"host", "pid", "command", "since"}, or {}."""
    try:
        return json.loads((Path(folder) / LOCK_FILE).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _message(folder: Path, holder: dict) -> str:
    who = (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
           + (f" (forgelab {holder['command']}, since {holder['since']})" if holder.get("command") else ""))
    if not holder:
        who = "another process (it is still starting)"
    return (f"{folder} is being written by {who}; wait for it to finish or stop it, "
            "or choose another output folder.")


def _acquire(folder: Path, command: str) -> _Held:
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder; choose another output folder.")
    created = not folder.exists()
    path = folder / LOCK_FILE
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # the folder was removed by a holder releasing it: make it again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderLocked(_message(folder, read_holder(folder))) from None
        # A releasing holder removes the file; if ours was removed between open and flock we
        # hold a lock on a file nobody else will open: start again with the file now there.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    data = (json.dumps(record) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    return _Held(fd, path, created)


def _release(held: _Held) -> None:
    # Removed while still locked, so a waiting process either fails on the lock or sees that
    # the file it opened is gone (the inode check in _acquire).
    try:
        os.unlink(held.path)
    except FileNotFoundError:
        pass
    os.close(held.fd)
    if held.created:
        try:
            held.path.parent.rmdir()  # only when empty: a command that failed early leaves nothing
        except OSError:
            pass


@contextmanager
def folder_lock(folder: str | os.PathLike, command: str = "") -> Iterator[Path]:
    """Hold the exclusive write lock of ``folder`` (created if missing) inside the ``with`` block.

    Raises :class:`FolderLocked` at once, with one sentence naming the folder and the holder,
    when another process holds it. ``command`` is recorded for that sentence.
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    held = _held.get(key)
    if held is not None:
        held.depth += 1
    else:
        held = _held[key] = _acquire(folder, command)
    try:
        yield folder
    finally:
        held.depth -= 1
        if held.depth == 0:
            del _held[key]
            _release(held)
