"""What the Ray executor costs over the local one: the runtime's start-up, and N trivial steps.

Each trivial step writes one small file. ``--shape independent`` gives N steps with no
dependencies (all may run at once); ``--shape chain`` makes each step depend on the one
before (no parallelism: the pure per-step overhead of a task round trip). The Ray runtime is
a fresh local one, started as ``forgelab study --executor ray`` starts it (every core of this
machine, no dashboard, loopback only); its start-up is timed apart.

    python benchmarks/ray_overhead.py --n 50 [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pipelines.study.executors import run_steps, start_ray
from pipelines.study.steps import Step


class MemoryStepLog:
    """The step-log interface, kept in memory (the benchmark measures the executors, not JSON writes)."""

    def __init__(self, root: Path):
        self.root = root
        self.steps: dict[str, tuple[str, str]] = {}

    def is_done(self, key: str, hash_: str) -> bool:
        return self.steps.get(key) == ("done", hash_)

    def start(self, key: str, hash_: str) -> bool:
        resume = self.steps.get(key) == ("running", hash_)
        self.steps[key] = ("running", hash_)
        return resume

    def finish(self, key: str, hash_: str, outputs: list[str], seconds: float) -> None:
        self.steps[key] = ("done", hash_)


def write_one(root: Path, i: int, _resume: bool) -> None:
    (root / f"{i}.txt").write_text(str(i))


def make_steps(root: Path, n: int, chain: bool) -> list[Step]:
    return [Step(key=f"s/{i}", inputs={"i": i}, outputs=[f"{i}.txt"], run=functools.partial(write_one, root, i),
                 deps=(f"s/{i - 1}",) if chain and i else ()) for i in range(n)]


def timed(executor: str, n: int, chain: bool) -> float:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t0 = time.perf_counter()
        run_steps(make_steps(root, n, chain), MemoryStepLog(root), executor, progress=False)
        seconds = time.perf_counter() - t0
        assert sorted(int(p.stem) for p in root.glob("*.txt")) == list(range(n))
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="number of trivial steps")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    import ray

    out: dict[str, Any] = {"n": args.n, "cpus": os.cpu_count(), "ray": ray.__version__}
    t0 = time.perf_counter()
    start_ray(ray, None)
    out["ray_start_s"] = time.perf_counter() - t0
    for shape in ("independent", "chain"):
        chain = shape == "chain"
        out[f"local_{shape}_s"] = timed("local", args.n, chain)
        out[f"ray_{shape}_first_s"] = timed("ray", args.n, chain)  # includes starting the worker processes
        out[f"ray_{shape}_warm_s"] = timed("ray", args.n, chain)
        out[f"ray_{shape}_per_step_ms"] = 1000 * (out[f"ray_{shape}_warm_s"] - out[f"local_{shape}_s"]) / args.n
    t0 = time.perf_counter()
    ray.shutdown()
    out["ray_shutdown_s"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:<28}{v:.3f}" if isinstance(v, float) else f"{k:<28}{v}")


if __name__ == "__main__":
    main()
