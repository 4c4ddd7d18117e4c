"""Run a study's steps: one after another in this process (``local``), or as Ray tasks (``ray``).

Both executors keep the same bookkeeping through a step log (``steps.json``), written by
this process (the driver) alone, so a study started with one executor resumes with the
other, and a finished step is never redone. The step log needs four things:

* ``root``: the study folder (the steps' ``outputs`` are relative to it);
* ``is_done(key, hash) -> bool``: the step finished from these inputs and its files exist;
* ``start(key, hash) -> resume``: mark the step running; True when an earlier attempt from
  the same inputs was interrupted, so the step may continue from its partial files;
* ``finish(key, hash, outputs, seconds)``: mark it done (after every output was written).

It may print progress lines through its ``echo`` (``run``/``done``); the executors add the
``skip`` line of a step finished earlier (``local``) or the live table (``ray``).

With Ray, every step is a task with the step's ``resources`` (one GPU for training and
generation on CUDA, else one CPU), submitted once the steps it depends on are done, so
independent steps run at the same time on whatever CPUs and GPUs the runtime has. A task
whose worker process dies is retried once by Ray (``max_retries=1``); a step that still
fails stops the study with a sentence naming the step and its log. Ctrl-C cancels the
running tasks; their steps stay "running" in steps.json and resume on the next run.

The study folder must be on storage that every node of the Ray cluster sees, at the same path
(tasks write their outputs straight into it, and run in the driver's working directory when
it exists there). :func:`check_shared_folder` checks this before any step runs. A cluster of
two machines sharing ``/shared`` (NFS), with forgelab installed on both::

    machine1$ ray start --head --port=6379
    machine2$ ray start --address=MACHINE1:6379
    machine1$ forgelab study CONFIG --executor ray --address auto --out /shared/studies/NAME

(``--address ray://MACHINE1:10001`` drives the cluster from a third machine through Ray
Client; that machine needs ``/shared`` too, as it writes steps.json.)
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipelines.study.steps import Step

EXECUTORS = ("local", "ray")
RAY_INSTALL = "pip install 'forgelab[ray]'"
LOG_DIR = "logs"


class StepLogLike(Protocol):
    """What an executor needs of ``steps.json`` (see the module docstring)."""

    root: Path

    def is_done(self, key: str, hash_: str) -> bool: ...

    def start(self, key: str, hash_: str) -> bool: ...

    def finish(self, key: str, hash_: str, outputs: list[str], seconds: float) -> None: ...


class RayMissing(ImportError, ValueError):
    """Ray is not installed (a ValueError too, so the CLI prints it as one sentence)."""


class StepFailed(RuntimeError):
    """A step raised, or its worker died twice; the message names the step and its log."""


class FolderNotShared(OSError):
    """A Ray worker cannot see the study folder."""


def check_executor(name: str) -> str:
    """Return ``name`` when it is a known executor, else stop with the valid names."""
    if name not in EXECUTORS:
        raise ValueError(f"Unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}.")
    return name


def require_ray() -> Any:
    """Import Ray, or stop with one sentence naming the install command."""
    try:
        import ray
    except ImportError:
        raise RayMissing(f"The ray executor needs Ray, which is not installed; install it with: {RAY_INSTALL}") from None
    return ray


def step_log_path(root: str | os.PathLike, key: str) -> Path:
    """Where a Ray task writes the output of step ``key`` (``logs/<key>.log`` in the study folder)."""
    return Path(root) / LOG_DIR / f"{key}.log"


def check_order(steps: Sequence[Step]) -> None:
    """Stop when keys repeat or a step depends on a step that is not listed before it."""
    seen: set[str] = set()
    for s in steps:
        if s.key in seen:
            raise ValueError(f"Step {s.key!r} is listed twice; every step needs its own key.")
        missing = [d for d in s.deps if d not in seen]
        if missing:
            raise ValueError(f"Step {s.key} depends on {', '.join(missing)}, which is not listed "
                             "before it; list every step after the steps it depends on.")
        seen.add(s.key)


def run_steps(steps: Sequence[Step], steplog: StepLogLike, executor: str = "local", address: str | None = None,
              *, progress: bool = True, jobs: int = 1, threads: int | None = None) -> dict[str, str]:
    """Run every step that is not done yet, in dependency order; return each step's final state.

    ``executor`` is ``local`` (in order, in this process) or ``ray`` (tasks on a Ray runtime:
    this machine's when ``address`` is None, else the cluster at ``address``, e.g. ``auto`` or
    ``ray://HOST:10001``). States are ``skipped`` (done earlier) and ``done``. ``jobs`` > 1 runs
    up to that many independent local steps at once in worker processes (``threads`` torch
    threads each; see :func:`_run_local_parallel`).
    """
    check_executor(executor)
    check_order(steps)
    hashes = {s.key: s.hash for s in steps}  # the executor is no part of a hash
    if executor == "local":
        if jobs > 1:
            return _run_local_parallel(steps, steplog, hashes, jobs, threads)
        return _run_local(steps, steplog, hashes)
    ray = require_ray()
    return _run_ray(ray, steps, steplog, hashes, address, progress)


def _check_outputs(step: Step, root: Path) -> None:
    missing = [p for p in step.outputs if not (root / p).exists()]
    if missing:
        raise StepFailed(f"Step {step.key} finished without writing {', '.join(missing)}.")


def _run_local(steps: Sequence[Step], steplog: StepLogLike, hashes: dict[str, str]) -> dict[str, str]:
    echo = getattr(steplog, "echo", None) or (lambda _m: None)
    states: dict[str, str] = {}
    for step in steps:
        h = hashes[step.key]
        if steplog.is_done(step.key, h):
            states[step.key] = "skipped"
            echo(f"[dim]skip[/]  {step.key} (finished earlier)")
            continue
        resume = steplog.start(step.key, h)
        t0 = time.perf_counter()
        step.run(resume)
        _check_outputs(step, steplog.root)
        steplog.finish(step.key, h, list(step.outputs), time.perf_counter() - t0)
        states[step.key] = "done"
    return states


def _worker_init(threads: int | None) -> None:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    # Several workers share one terminal: plain progress lines, not live bars that overwrite each other.
    os.environ["FORGELAB_PLAIN_PROGRESS"] = "1"


def _exclusive(step: Step, jobs: int) -> bool:
    """A step that wants a GPU or at least ``jobs`` CPUs runs alone, in this process."""
    return bool(step.resources.get("num_gpus")) or step.resources.get("num_cpus", 1) >= jobs


def _run_local_parallel(steps: Sequence[Step], steplog: StepLogLike, hashes: dict[str, str], jobs: int,
                        threads: int | None) -> dict[str, str]:
    """Up to ``jobs`` independent steps at once in spawned worker processes, the others in order here.

    A step starts once its dependencies are done, earliest in the list first; a step that needs a
    GPU or ``jobs`` CPUs (the transfer matrix with its own workers) waits until nothing else runs
    and runs in this process. Every step seeds its own work, so the results are those of the
    one-by-one executor. The driver alone writes steps.json; Ctrl-C lets the running steps save
    (their workers get the signal too), and they stay "running" to resume.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    echo = getattr(steplog, "echo", None) or (lambda _m: None)
    states: dict[str, str] = {}
    todo: list[Step] = []
    for step in steps:
        if steplog.is_done(step.key, hashes[step.key]):
            states[step.key] = "skipped"
            echo(f"[dim]skip[/]  {step.key} (finished earlier)")
        else:
            todo.append(step)
    if not todo:
        return states
    running: dict[Any, tuple[Step, float]] = {}

    def finished(step: Step, t0: float) -> None:
        _check_outputs(step, steplog.root)
        steplog.finish(step.key, hashes[step.key], list(step.outputs), time.perf_counter() - t0)
        states[step.key] = "done"

    def ready(step: Step) -> bool:
        return all(states.get(d) in ("done", "skipped") for d in step.deps)

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init, initargs=(threads,)) as pool:
        try:
            while todo or running:
                for step in [s for s in todo if ready(s)]:
                    if _exclusive(step, jobs):
                        if running:
                            break  # wait for the pool to drain, keeping the list order
                        todo.remove(step)
                        resume = steplog.start(step.key, hashes[step.key])
                        t0 = time.perf_counter()
                        step.run(resume)
                        finished(step, t0)
                        break  # new steps may be ready now
                    if len(running) >= jobs:
                        break
                    todo.remove(step)
                    resume = steplog.start(step.key, hashes[step.key])
                    running[pool.submit(step.run, resume)] = (step, time.perf_counter())
                if not running:
                    if todo and not any(ready(s) for s in todo):  # cannot happen after check_order
                        raise RuntimeError(f"No step can start: {', '.join(s.key for s in todo)}.")
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    step, t0 = running.pop(fut)
                    fut.result()  # a step's exception stops the study here, as in the one-by-one executor
                    finished(step, t0)
        except BaseException:
            for fut in running:
                fut.cancel()
            raise
    return states


# --------------------------------------------------------------------------- Ray


def start_ray(ray: Any, address: str | None) -> bool:
    """Start (``address`` None) or join a Ray runtime unless one is running; True when this call did."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        # This machine only: every core, loopback addresses, no dashboard, no usage reports.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=os.cpu_count() or 1, _node_ip_address="127.0.0.1", **kwargs)
    else:
        try:
            ray.init(address=address, **{k: v for k, v in kwargs.items() if k != "include_dashboard"})
        except ConnectionError as e:
            raise ConnectionError(f"Cannot join the Ray cluster at {address} ({e}); start it with `ray start --head` "
                                  "or check the address.") from None
    return True


def _where() -> str:
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{socket.gethostname()}:{os.getpid()}" + (f" gpu {gpus}" if gpus else "")


def _probe(path: str, token: str) -> tuple[bool, str]:
    p = Path(path)
    return (p.is_file() and p.read_text(encoding="utf-8") == token), socket.gethostname()


def check_shared_folder(ray: Any, root: Path) -> None:
    """Stop unless a worker on every node of the runtime sees a file the driver wrote into ``root``."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe_file = root / f".probe-{token}"
    probe_file.write_text(token, encoding="utf-8")
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
                .remote(str(probe_file.resolve()), token) for n in nodes]
        check_probes(ray.get(refs), root)
    finally:
        probe_file.unlink(missing_ok=True)


def check_probes(results: list[tuple[bool, str]], root: Path) -> None:
    """Stop with one sentence when a node's probe (seen, host) did not see the driver's file."""
    for seen, host in results:
        if not seen:
            raise FolderNotShared(
                f"Ray workers on {host} cannot see the study folder {root.resolve()}; it must be on storage "
                "every node sees (a shared file system such as NFS), at the same path on every node."
            )


def _task(step_run: Callable[[bool], None], resume: bool, log_path: str, cwd: str) -> Iterator[dict[str, Any]]:
    """What a Ray worker runs for one step: say where it runs, then run it with its output in its log."""
    yield {"where": _where()}
    t0 = time.perf_counter()
    old_cwd = os.getcwd()
    if os.path.isdir(cwd):  # relative paths mean the same as in the driver (same cwd on shared storage)
        os.chdir(cwd)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            print(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} on {_where()} (resume={resume})", flush=True)
            try:
                _unship(step_run)(resume)
            except BaseException:
                traceback.print_exc()
                raise
    finally:
        os.chdir(old_cwd)
    yield {"seconds": time.perf_counter() - t0, "where": _where()}


@dataclass(frozen=True)
class Shipped:
    """An argument of a step's function that is in Ray's object store (see :func:`ship`)."""

    ref: Any


def _is_big(value: Any) -> bool:
    import torch

    # A tensor, an image set (``.images``), or a study's real train/test sets (``.train.images``).
    return (isinstance(value, torch.Tensor) or isinstance(getattr(value, "images", None), torch.Tensor)
            or isinstance(getattr(getattr(value, "train", None), "images", None), torch.Tensor))


def ship(ray: Any, fn: Callable[[bool], None], shared: dict[int, tuple[Any, Any]]) -> Callable[[bool], None]:
    """``fn`` with its tensor arguments (tensors, image sets) put into Ray's object store once for all steps.

    A study binds the same real images to many steps (``functools.partial``); sent with each
    task they would be copied once per step. ``shared`` maps ``id(argument)`` to its object ref
    (and keeps the argument alive, so the id stays its own). The worker gets them back with
    :func:`_unship`.
    """
    if not isinstance(fn, functools.partial):
        return fn

    def put(value: Any) -> Any:
        if not _is_big(value):
            return value
        if id(value) not in shared:
            shared[id(value)] = (ray.put(value), value)
        return Shipped(shared[id(value)][0])

    return functools.partial(fn.func, *map(put, fn.args), **{k: put(v) for k, v in fn.keywords.items()})


def _unship(fn: Callable[[bool], None]) -> Callable[[bool], None]:
    """The inverse of :func:`ship`, in the worker: fetch the shipped arguments from the object store."""
    if not isinstance(fn, functools.partial):
        return fn
    import ray

    def get(value: Any) -> Any:
        return ray.get(value.ref) if isinstance(value, Shipped) else value

    return functools.partial(fn.func, *map(get, fn.args), **{k: get(v) for k, v in fn.keywords.items()})


@dataclass
class _Row:
    state: str = "waiting"
    where: str = ""
    started: float = 0.0
    seconds: float | None = None


def _table(rows: dict[str, _Row]) -> Any:
    from rich.table import Table

    colour = {"waiting": "dim", "queued": "cyan", "running": "yellow", "done": "green", "skipped": "dim green", "failed": "red",
              "cancelled": "magenta"}
    t = Table(title="steps")
    for col in ("step", "state", "where", "time"):
        t.add_column(col)
    now = time.perf_counter()
    for key, r in rows.items():
        secs = r.seconds if r.seconds is not None else (now - r.started if r.state in ("queued", "running") else None)
        t.add_row(key, f"[{colour[r.state]}]{r.state}[/]", r.where, "" if secs is None else f"{secs:.1f} s")
    return t


def _run_ray(ray: Any, steps: Sequence[Step], steplog: StepLogLike, hashes: dict[str, str],
             address: str | None, progress: bool) -> dict[str, str]:
    root = Path(steplog.root)
    rows = {s.key: _Row() for s in steps}
    waiting: dict[str, Step] = {}
    for s in steps:
        if steplog.is_done(s.key, hashes[s.key]):
            rows[s.key].state = "skipped"
        else:
            waiting[s.key] = s
    if not waiting:
        return {k: r.state for k, r in rows.items()}
    started = start_ray(ray, address)
    try:
        check_resources(list(waiting.values()), ray.cluster_resources())
        check_shared_folder(ray, root)
        _schedule(ray, waiting, rows, steplog, hashes, root, progress)
    finally:
        if started:  # a runtime this call started ends with it; a joined cluster stays up
            ray.shutdown()
    return {k: r.state for k, r in rows.items()}


def _schedule(ray: Any, waiting: dict[str, Step], rows: dict[str, _Row], steplog: StepLogLike,
              hashes: dict[str, str], root: Path, progress: bool) -> None:
    """Submit each step once its dependencies are done; record results as they come."""
    from rich.console import Console
    from rich.live import Live

    remotes = step_remotes(ray)
    running: dict[str, tuple[Any, Step]] = {}  # key -> (the task's result stream, step)
    shared: dict[int, tuple[Any, Any]] = {}  # id(argument) -> (its object ref, the argument), see _ship
    cwd = os.getcwd()
    live = Live(_table(rows), console=Console(stderr=True), auto_refresh=False, transient=False) \
        if progress else contextlib.nullcontext()

    def submit_ready() -> None:
        for key, step in list(waiting.items()):
            if all(rows[d].state in ("done", "skipped") for d in step.deps):
                del waiting[key]
                resume = steplog.start(key, hashes[key])  # the driver writes steps.json, before submitting
                stream = remote_for(step, remotes).options(name=key, **_ray_options(step)).remote(
                    ship(ray, step.run, shared), resume, str(step_log_path(root, key)), cwd)
                running[key] = (stream, step)
                rows[key].state, rows[key].started = "queued", time.perf_counter()

    def stop_all(state: str) -> None:
        for key, (stream, _step) in running.items():
            with contextlib.suppress(Exception):
                ray.cancel(stream, force=True)
            rows[key].state = state
        running.clear()

    with live:
        try:
            submit_ready()
            while running:
                streams = {id(stream): key for key, (stream, _s) in running.items()}
                ready, _ = ray.wait([s for s, _ in running.values()], num_returns=1, timeout=0.5)
                for stream in ready:
                    key = streams[id(stream)]
                    step = running[key][1]
                    try:
                        value = ray.get(next(stream))
                    except Exception as e:  # the step raised, or its worker died on both attempts
                        running.pop(key)
                        rows[key].state = "failed"
                        stop_all("cancelled")
                        raise StepFailed(_failure(key, e, step_log_path(root, key))) from None
                    if "seconds" not in value:  # the task started; its result comes next
                        rows[key].state, rows[key].where = "running", value["where"]
                        rows[key].started = time.perf_counter()
                        continue
                    running.pop(key)
                    try:
                        _check_outputs(step, root)
                    except StepFailed:
                        rows[key].state = "failed"
                        stop_all("cancelled")
                        raise
                    steplog.finish(key, hashes[key], list(step.outputs), value["seconds"])
                    rows[key].state, rows[key].seconds, rows[key].where = "done", value["seconds"], value["where"]
                    submit_ready()
                if progress:
                    live.update(_table(rows), refresh=True)
        except KeyboardInterrupt:
            stop_all("cancelled")
            raise
        finally:
            if progress:
                live.update(_table(rows), refresh=True)


def step_remotes(ray: Any) -> dict[str, Any]:
    """The step task as Ray remote functions: ``"cpu"`` and ``"gpu"`` (a fresh worker per call).

    Ray ends a worker after each task (``max_calls=1``) only when ``num_gpus`` is given in the
    decorator, not through ``.options()``; a worker kept alive would hold its CUDA context and
    could take a later step assigned to another GPU (two steps on one GPU). So GPU steps go
    through a function declared with both; ``.options()`` then sets each step's own amounts.
    """
    common = {"max_retries": 1, "retry_exceptions": False, "num_returns": "streaming"}
    return {"cpu": ray.remote(**common)(_task), "gpu": ray.remote(num_gpus=1, max_calls=1, **common)(_task)}


def remote_for(step: Step, remotes: dict[str, Any]) -> Any:
    """The remote function of :func:`step_remotes` that runs ``step``."""
    return remotes["gpu" if step.resources.get("num_gpus", 0) > 0 else "cpu"]


RESOURCE_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}


def check_resources(steps: Sequence[Step], available: dict[str, float]) -> None:
    """Stop before submitting when a step asks for more of a resource than the whole runtime has.

    Ray would otherwise keep such a task waiting for ever (an "infeasible" task).
    """
    for step in steps:
        for name, amount in step.resources.items():
            ray_name = RESOURCE_NAMES.get(name, name)
            have = available.get(ray_name, 0)
            if amount > have:
                unit = {"CPU": " CPU", "GPU": " GPU"}.get(ray_name)
                what = f"{amount:g}{unit}{'s' if amount != 1 else ''}" if unit else f"{amount:g} of {ray_name!r}"
                raise ValueError(
                    f"Step {step.key} needs {what} but the Ray runtime has {have:g}; run it where "
                    "they are (for GPUs: --device cuda on a machine or cluster with GPUs), or use --device cpu."
                )


def _ray_options(step: Step) -> dict[str, Any]:
    res = dict(step.resources)
    opts = {k: res.pop(k) for k in ("num_cpus", "num_gpus", "memory") if k in res}
    if res:
        opts["resources"] = res
    return opts


def _failure(key: str, error: BaseException, log: Path) -> str:
    cause = getattr(error, "cause", None)
    if cause is not None:  # a RayTaskError wraps the step's own exception
        reason = f"{type(cause).__name__}: {cause}".splitlines()[0]
    else:
        name = type(error).__name__
        reason = "its worker process died twice (Ray retried it once)" if "Worker" in name or "Died" in name \
            else f"{name}: {str(error).splitlines()[0] if str(error) else ''}"
    return f"Step {key} failed ({reason}); see its log {log}. Finished steps are kept: run the study again with --resume to continue."

