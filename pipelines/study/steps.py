"""The unit of work of a study (``Step``) and its bookkeeping (``StepLog``).

A study is a list of steps in an order that respects ``deps``. An executor runs them
(:func:`pipelines.study.executors.run_steps`): the local one one after another in this process,
the Ray one as tasks on a Ray runtime. Both keep ``steps.json``
through the same bookkeeping, written by the driver alone, so a study started with one
executor resumes with the other:

    if not log.is_done(step.key, step.hash):
        resume = log.start(step.key, step.hash)
        t0 = time.perf_counter(); step.run(resume)      # anywhere: a worker, a GPU node
        log.finish(step.key, step.hash, step.outputs, time.perf_counter() - t0)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.runfolder import RunFolder
from plumbing.digests import json_digest
from plumbing.files import read_json, write_json

# Bump when a step's outputs change meaning, so old study folders recompute them.
STEP_VERSION = 1
STEPS_FILE = "steps.json"


def digest(inputs: Any) -> str:
    """A short stable hash of JSON-able ``inputs`` (the key of a finished step in steps.json)."""
    return json_digest(inputs, version=STEP_VERSION)


@dataclass(frozen=True)
class Step:
    """One resumable piece of a study.

    key:       unique name, e.g. ``train/transposed``; steps.json is keyed by it.
    inputs:    JSON-able values whose hash decides whether a finished step is still valid.
    outputs:   paths, relative to the study folder, that the step must have written.
    run:       does the work; its argument ``resume`` is True when an earlier attempt from the
               same inputs was interrupted and left partial files to continue from. It writes
               only inside its own outputs' folders and never writes steps.json.
    deps:      keys of the steps that must finish first.
    resources: what one run needs, as Ray understands it: ``{"num_cpus": 1}`` or
               ``{"num_cpus": 1, "num_gpus": 1}``.
    """

    key: str
    inputs: Any
    outputs: list[str]
    run: Callable[[bool], None]
    deps: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1})

    @property
    def hash(self) -> str:
        """The hash of ``inputs`` that steps.json records for this step."""
        return digest(self.inputs)


class StepLog:
    """``steps.json``: which steps finished, from which inputs, with which files, in how long."""

    def __init__(self, root: str | Path, echo: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.path = self.root / STEPS_FILE
        self.echo = echo or (lambda _msg: None)
        self.steps: dict[str, dict[str, Any]] = read_json(self.path).get("steps", {}) if self.path.exists() else {}

    def _save(self) -> None:
        write_json(self.path, {"version": STEP_VERSION, "steps": self.steps})

    def _exists(self, relative: Any) -> bool:
        """True when ``relative`` (read from steps.json) names an existing path inside the study folder."""
        try:
            return RunFolder(self.root).inside(relative).exists()
        except (ValueError, TypeError):  # a path leading outside the folder never counts as an output
            return False

    def is_done(self, key: str, hash_: str) -> bool:
        """True when ``key`` finished from the same inputs and all its files still exist."""
        rec = self.steps.get(key)
        return (
            rec is not None
            and rec.get("status") == "done"
            and rec.get("hash") == hash_
            and all(self._exists(p) for p in rec.get("outputs", []))
        )

    def start(self, key: str, hash_: str) -> bool:
        """Record ``key`` as running from inputs ``hash_``; return True when it may resume.

        It may resume when the previous attempt started from the same inputs and was
        interrupted: the step continues from its partial files (a training checkpoint,
        finished transfer cells). Otherwise the step must start clean.
        """
        prev = self.steps.get(key, {})
        resume = prev.get("status") == "running" and prev.get("hash") == hash_
        self.steps[key] = {"status": "running", "hash": hash_, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._save()
        self.echo(f"[bold]{'resume' if resume else 'run'}[/]   {key}")
        return resume

    def finish(self, key: str, hash_: str, outputs: Sequence[str], seconds: float) -> None:
        """Record ``key`` as done, once every one of its ``outputs`` exists (else RuntimeError)."""
        missing = [p for p in outputs if not (self.root / p).exists()]
        if missing:
            raise RuntimeError(f"Step {key} finished without writing {', '.join(missing)}.")
        # Marked done only now, after every output file was written (atomically) by the step.
        self.steps[key] = {
            "status": "done", "hash": hash_, "seconds": round(seconds, 2), "outputs": list(outputs),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._save()
        self.echo(f"[green]done[/]  {key} ({seconds:.1f} s)")

    def run(self, key: str, inputs: Any, fn: Callable[[bool], None], outputs: Sequence[str]) -> str:
        """Run ``fn(resume)`` unless ``key`` already finished from ``inputs``; return the inputs' hash."""
        h = digest(inputs)
        if self.is_done(key, h):
            self.echo(f"[dim]skip[/]  {key} (finished earlier)")
            return h
        resume = self.start(key, h)
        t0 = time.perf_counter()
        fn(resume)
        self.finish(key, h, outputs, time.perf_counter() - t0)
        return h
