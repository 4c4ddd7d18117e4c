"""One progress bar for every long loop: rich on a terminal; in a log, silent or (where asked) a plain line now and then."""

from __future__ import annotations

import sys
import time
from typing import Any


class NullBar:
    """A bar that draws nothing; same methods as ``Bar``."""

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def advance(self, n: float = 1) -> None:
        pass

    def update(self, **fields: Any) -> None:
        pass


class LineBar(NullBar):
    """For logs (stderr not a terminal): one plain line ``description: done/total`` at most every
    ``every`` seconds, and one at the end, so a long loop is never silent for long."""

    def __init__(self, description: str, total: float | None, *, every: float = 30.0, completed: float = 0,
                 **_: Any):
        self.description, self.total, self.completed, self.every = description, total, completed, every

    def __enter__(self) -> LineBar:
        self.t0 = self.last = time.monotonic()
        return self

    def _line(self) -> None:
        self.last = time.monotonic()
        total = f"/{self.total:g}" if self.total else ""
        print(f"{self.description}: {self.completed:g}{total} ({self.last - self.t0:.0f} s)", file=sys.stderr, flush=True)

    def advance(self, n: float = 1) -> None:
        self.completed += n
        if time.monotonic() - self.last >= self.every:
            self._line()

    def update(self, **fields: Any) -> None:
        if "completed" in fields:
            self.completed = fields["completed"]
        if "description" in fields:
            self.description = fields["description"]

    def __exit__(self, *exc: object) -> bool:
        if exc[0] is None:
            self._line()
        return False


class Bar:
    """A rich progress bar on stderr: ``advance(n)`` moves it, ``update(...)`` sets any task field."""

    def __init__(self, description: str, total: float | None, *, completed: float = 0,
                 transient: bool = True, unit: str = "items", fields: dict[str, Any] | None = None):
        self.description, self.total, self.completed = description, total, completed
        self.transient, self.unit, self.fields = transient, unit, dict(fields or {})

    def __enter__(self) -> Bar:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        counts = [DownloadColumn(), TransferSpeedColumn()] if self.unit == "bytes" else [MofNCompleteColumn()]
        extra = [TextColumn(f"{{task.fields[{k}]}}") for k in self.fields]
        self.p = Progress(TextColumn("{task.description}"), BarColumn(), *counts, TimeElapsedColumn(),
                          TimeRemainingColumn(), *extra, transient=self.transient, console=Console(stderr=True))
        self.p.__enter__()
        self.task = self.p.add_task(self.description, total=self.total, completed=self.completed, **self.fields)
        return self

    def __exit__(self, *exc: object) -> bool:
        return bool(self.p.__exit__(*exc))

    def advance(self, n: float = 1) -> None:
        self.p.advance(self.task, n)

    def update(self, **fields: Any) -> None:
        """Set ``completed``, ``total``, ``description`` or a custom field of the task."""
        self.p.update(self.task, **fields)


def progress_bar(enabled: bool, description: str, total: float | None, *, terminal_only: bool = True,
                 log_every: float | None = None, **options: Any) -> Bar | NullBar:
    """A ``Bar`` when ``enabled`` (and stderr is a terminal, unless ``terminal_only`` is False), else a ``NullBar``.

    With ``log_every`` (seconds), a log (stderr not a terminal) gets a :class:`LineBar` instead of
    silence. Use as a context manager; ``options`` go to ``Bar`` (completed, transient, unit, fields).
    """
    if not enabled:
        return NullBar()
    if terminal_only:
        import os

        from rich.console import Console

        # A transient bar leaves only blank lines in a log; worker processes that share a terminal
        # (FORGELAB_PLAIN_PROGRESS) would draw over each other.
        if not Console(stderr=True).is_terminal or os.environ.get("FORGELAB_PLAIN_PROGRESS"):
            if log_every is not None and not os.environ.get("FORGELAB_PLAIN_PROGRESS"):
                return LineBar(description, total, every=log_every, **options)
            return NullBar()
    return Bar(description, total, **options)
