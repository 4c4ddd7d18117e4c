"""The edges of a training run, kept out of the loop: signals, the log and progress bar, DDP wrapping.

:mod:`gans.training` owns the schedule (steps, D/G updates, EMA, checkpoints, samples); the
helpers here do what surrounds it: turn Ctrl-C/SIGTERM into a request to stop at a step
boundary, append records to ``log.jsonl`` (and trim lines a killed run wrote after its last
checkpoint), draw the progress bar, and wrap networks for DistributedDataParallel.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gans.checkpoint import write_atomically
from gans.distributed import DistInfo
from plumbing.devices import fused_adam
from plumbing.progress import NullBar, progress_bar

__all__ = ["StopRequest", "TrainLog", "loss_text", "no_sync", "optimizer_to", "trim_log", "unwrap", "wrap_ddp"]


class StopRequest:
    """The first Ctrl-C (or SIGTERM) asks to stop at the next step boundary; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.hard = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.hard = True
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def loss_text(rec: dict[str, Any]) -> str:
    """The losses and speed of a log record as the progress bar shows them."""
    text = " ".join(f"{k[5:]}={v:.3f}" for k, v in rec.items() if k.startswith("loss_"))
    return f"{text} {rec['images_per_s']:.0f} img/s"


class TrainLog:
    """``log.jsonl`` and the progress bar of one run (both silent on ranks other than 0).

    Each record holds the step, the losses, the learning rates, the mean step time since the
    previous record, images per second and the wall-clock time.
    """

    def __init__(self, path: Path, *, enabled: bool, progress: bool, steps: int, step: int,
                 monitor: Any = None) -> None:
        self.path, self.enabled, self.steps, self.monitor = path, enabled, steps, monitor
        self.bar = progress_bar(progress and enabled, "training", steps, completed=step, transient=False,
                                fields={"losses": ""})
        # Without a terminal there is no bar: a plain line every ~5 % of the run instead.
        self.lines = progress and enabled and isinstance(self.bar, NullBar)
        self.line_every, self.line_last = max(1, steps // 20), step
        self.t_last, self.step_last = time.perf_counter(), step
        self.file = None

    def __enter__(self) -> TrainLog:
        self.bar.__enter__()
        if self.enabled:
            self.file = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)
        if self.file is not None:
            self.file.close()

    def write(self, step: int, losses: dict[str, torch.Tensor], images_per_step: int, **extra: float) -> None:
        """Append one record for ``step`` (``extra``: learning rates) and show its losses on the bar."""
        if self.file is None:
            return
        losses = dict(zip(losses, torch.stack([v.float() for v in losses.values()]).tolist(), strict=True))
        now = time.perf_counter()
        dt = (now - self.t_last) / max(1, step - self.step_last)
        self.t_last, self.step_last = now, step
        rec = {"step": step, **losses, **extra, "step_time": dt, "images_per_s": images_per_step / dt,
               "time": time.time()}
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        self.bar.update(losses=loss_text(rec))
        if self.monitor is not None:
            self.monitor.scalars(step, rec)
        if self.lines and (step - self.line_last >= self.line_every or step == self.steps):
            self.line_last = step
            print(f"{self.path.parent.name}: step {step}/{self.steps} {loss_text(rec)}", file=sys.stderr, flush=True)

    def advance(self, step: int) -> None:
        """Move the bar to ``step``."""
        self.bar.update(completed=step)


def trim_log(path: Path, step: int) -> None:
    """Drop the lines of ``path`` after ``step``: a run killed after its checkpoint would repeat them."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a half-written last line from a killed run
    text = "".join(k + "\n" for k in keep)
    write_atomically(path, lambda f: f.write(text.encode()))


def unwrap(m: nn.Module | None) -> nn.Module | None:
    """The network inside a DistributedDataParallel wrapper (or ``m`` itself)."""
    return m.module if isinstance(m, DistributedDataParallel) else m


def wrap_ddp(modules: list[nn.Module | None], device: torch.device, info: DistInfo) -> list[nn.Module | None]:
    """Wrap each network in DistributedDataParallel when several ranks train (None stays None)."""
    if not info.enabled:
        return modules
    ids = [device.index] if device.type == "cuda" else None
    out = []
    sync_bn = device.type == "cuda" and torch.distributed.get_backend() == "nccl"
    for m in modules:
        if m is not None and sync_bn:
            # Global batch statistics on GPUs with NCCL; SyncBatchNorm has no CPU kernel (and
            # gloo, used to share one GPU between ranks, is not its backend), so there each
            # rank normalises its own shard and rank 0's running statistics are broadcast.
            m = nn.SyncBatchNorm.convert_sync_batchnorm(m)
        out.append(DistributedDataParallel(m, device_ids=ids) if m is not None else None)
    return out


def no_sync(modules: list[nn.Module]) -> ExitStack:
    """A context in which the DDP-wrapped ``modules`` skip their gradient all-reduce."""
    stack = ExitStack()
    for m in modules:
        if isinstance(m, DistributedDataParallel):
            stack.enter_context(m.no_sync())
    return stack


def optimizer_to(opt: torch.optim.Optimizer | None, device: torch.device) -> None:
    """Move an optimiser's state tensors to ``device``; Adam on CUDA switches to its fused kernel.

    The choice is made here, after any checkpoint was loaded, because ``load_state_dict``
    restores the saved run's flag. The fused kernel keeps its step counters on the device; the
    other implementations keep them on the host (so the CPU path is unchanged).
    """
    if opt is None:
        return
    fused = isinstance(opt, torch.optim.Adam) and fused_adam(device)
    for group in opt.param_groups:
        if fused:
            group.update(fused=True, foreach=None)
        elif group.get("fused"):  # a checkpoint of a CUDA run, resumed on the CPU
            group["fused"] = False
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                st[k] = v.to(device)
            elif isinstance(v, torch.Tensor):
                st[k] = v.to(device, torch.float32) if fused else v.cpu()
