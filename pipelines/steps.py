"""The unit of work of a study: a ``Step`` with its inputs, outputs and dependencies.

A study is a list of steps in an order that respects ``deps``. An executor runs them:
the local executor one after another in this process, the Ray executor (issue 11) as
tasks on a Ray runtime. Both keep ``steps.json`` through the same bookkeeping, written by
the driver alone, so a study started with one executor resumes with the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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
