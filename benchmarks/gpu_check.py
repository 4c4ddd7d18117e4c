"""GPU acceptance run: one command, one table (issue 10). About 5-8 minutes on one H100/H200.

    python benchmarks/gpu_check.py                       # CUDA, full sizes
    python benchmarks/gpu_check.py --device cpu --quick  # the same logic in well under a minute

Rows of the table:

* ``train``: DCGAN-32, SNGAN-32 and SNGAN-64 at their papers' widths, batch 64 (SNGAN n_dis 5),
  images/s (real images shown to D, ``batch * n_dis`` per G-step) and G-steps/s, with bf16
  autocast and without (on CPU only fp32: there is no bf16 AMP there).
* ``ddp``: ``torchrun --nproc_per_node=N`` (N = visible GPUs; 2 gloo processes on CPU) trains
  a few steps and every rank reports a digest of its G, D and EMA weights; the row says whether
  all ranks hold identical weights.
* ``generate``: 50,000 images from a DCGAN-32 checkpoint, forward only (uint8 on the host) vs
  written as PNGs with manifest (``gans.sampling.write_fake_set``), and their ratio.
* ``features``: ``radial`` (and ``npr`` when ``detectors.features`` registers it) images/s on
  the device.
* ``quickstart``: the packaged quickstart study with ``study.device`` set to the device, wall
  time and whether every generator is above the diversity warning level.

Targets on an H100/H200 (issue 10): SNGAN-32 at batch 64, n_dis 5, bf16 >= 50 G-steps/s;
generation to disk >= 80 % of forward-only speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detectors.features import FEATURES, extract  # noqa: E402
from gans.sampling import generate_tensor, load_generator, write_fake_set  # noqa: E402
from gans.training import TrainConfig, Trainer  # noqa: E402
from plumbing.digests import tensor_digest  # noqa: E402

TRAIN_CASES = (("dcgan", 32), ("sngan", 32), ("sngan", 64))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images(n: int, resolution: int, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, resolution, resolution), generator=g, dtype=torch.uint8).to(device)


def train_rows(device: str, quick: bool, folder: Path) -> list[dict]:
    """Images/s and G-steps/s of each architecture, with and without bf16 autocast."""
    rows = []
    amps = (True, False) if torch.device(device).type == "cuda" else (False,)
    batch, steps, warmup = (8, 2, 1) if quick else (64, 30, 5)
    for arch, res in TRAIN_CASES:
        for amp in amps:
            cfg = TrainConfig(arch=arch, upsampler="nearest", resolution=res, batch_size=batch, steps=10**6,
                              width=4 if quick else None, amp=amp, device=device, ckpt_every=0, sample_every=0)
            tr = Trainer(cfg, _images(max(256, batch), res), folder / f"{arch}{res}")
            for _ in range(warmup):
                tr.train_step()
            _sync(tr.device)
            t0 = time.perf_counter()
            for _ in range(steps):
                tr.train_step()
            _sync(tr.device)
            dt = (time.perf_counter() - t0) / steps
            rows.append({"check": "train", "what": f"{arch.upper()}-{res} {'bf16' if tr.amp else 'fp32'}",
                         "value": f"{tr.cfg.batch_size * tr.cfg.n_dis / dt:,.0f} img/s",
                         "extra": f"{1 / dt:,.1f} G-steps/s (batch {batch}, n_dis {tr.cfg.n_dis})"})
            if arch == "dcgan" and not amp:
                tr.save()  # the checkpoint the generation rows use
    return rows


def ddp_worker(device: str, out: Path, quick: bool) -> None:
    """Run under torchrun: train a few steps with DDP, write this rank's weight digests."""
    cfg = TrainConfig(arch="sngan", upsampler="nearest", resolution=32, batch_size=8 if quick else 64,
                      steps=2 if quick else 20, width=4 if quick else None, ema=0.999, device=device,
                      ckpt_every=0, sample_every=0, log_every=0)
    tr = Trainer(cfg, _images(256, 32), out / "run")
    tr.run()
    rank = int(os.environ.get("RANK", "0"))
    digests = {name: tensor_digest(torch.cat([t.double().flatten() for t in state.values()]))
               for name, state in tr.network_state().items()}
    (out / f"rank{rank}.json").write_text(json.dumps(digests))


def ddp_row(device: str, quick: bool, folder: Path) -> dict:
    """torchrun on every visible GPU (2 gloo processes on CPU); identical weights on all ranks?"""
    n = torch.cuda.device_count() if torch.device(device).type == "cuda" else 2
    out = folder / "ddp"
    out.mkdir(parents=True, exist_ok=True)
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", f"--nproc_per_node={n}", __file__, "--ddp-worker", "--device", device,
           "--out", str(out)] + (["--quick"] if quick else [])
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"check": "ddp", "what": f"torchrun x{n}", "value": "FAILED", "extra": " | ".join(tail)}
    digests = [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]
    same = all(d == digests[0] for d in digests)
    return {"check": "ddp", "what": f"torchrun x{n} SNGAN-32", "value": "identical" if same else "DIFFERENT",
            "extra": f"G, D, G_ema on {n} ranks; {dt:.0f} s with start-up"}


def generation_rows(device: str, quick: bool, folder: Path) -> list[dict]:
    """Forward-only vs PNG-to-disk images/s for 50,000 images (1,000 with --quick)."""
    n, batch = (1000, 250) if quick else (50_000, 1000)
    ckpt = folder / "dcgan32" / "checkpoint.pt"
    G, _ = load_generator(ckpt, device=device)
    generate_tensor(G, batch, batch_size=batch)  # warm-up
    _sync(torch.device(device))
    t0 = time.perf_counter()
    generate_tensor(G, n, batch_size=batch)
    _sync(torch.device(device))
    fwd = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    write_fake_set(ckpt, n, folder / "fakes", batch_size=batch, device=device)
    disk = n / (time.perf_counter() - t0)
    return [{"check": "generate", "what": f"DCGAN-32 forward only, {n:,}", "value": f"{fwd:,.0f} img/s", "extra": ""},
            {"check": "generate", "what": f"DCGAN-32 to PNG, {n:,}", "value": f"{disk:,.0f} img/s",
             "extra": f"{100 * disk / fwd:.0f} % of forward (target >= 80 %)"}]


def feature_rows(device: str, quick: bool) -> list[dict]:
    """radial (and npr when registered) feature throughput on the device."""
    n = 512 if quick else 20_000
    images = _images(n, 32, device)
    rows = []
    for name in ("radial", "npr"):
        if name not in FEATURES:
            rows.append({"check": "features", "what": name, "value": "skipped",
                         "extra": "not registered in detectors.features"})
            continue
        extract(name, images[:64])  # warm-up (kernels, cached ring matrices)
        _sync(torch.device(device))
        t0 = time.perf_counter()
        extract(name, images, batch_size=4096)
        _sync(torch.device(device))
        rate = n / (time.perf_counter() - t0)
        rows.append({"check": "features", "what": f"{name}, 32 px, {n:,} images", "value": f"{rate:,.0f} img/s",
                     "extra": ""})
    return rows


def quickstart_row(device: str, quick: bool, folder: Path) -> dict:
    """The packaged quickstart on the device (shrunk with --quick): wall time and diversity check."""
    out = folder / "quickstart"
    sets = [f"study.device={device}"]
    if quick:
        sets += ["train.steps=2", "generate.n=40", "generate.batch_size=40", "study.n_real=64",
                 'transfer.detectors=["radial:lr"]']
    cmd = [sys.executable, "-m", "pipelines.cli", "study", "quickstart", "--out", str(out), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
        return {"check": "quickstart", "what": f"--device {device}", "value": "FAILED", "extra": " | ".join(tail)}
    from detectors.diversity import DIVERSITY_WARNING

    div = {p.stem: json.loads(p.read_text()).get("diversity") for p in sorted((out / "quality").glob("*.json"))}
    low = [k for k, v in div.items() if v is not None and v < DIVERSITY_WARNING]
    extra = f"{len(div)} generators; min diversity {min((v for v in div.values() if v is not None), default=float('nan')):.2f}"
    return {"check": "quickstart", "what": f"--device {device}", "value": f"{dt:.0f} s",
            "extra": extra + (f"; below {DIVERSITY_WARNING}: {', '.join(low)}" if low else "")}


def print_table(rows: list[dict]) -> None:
    """One plain-text table, one row per measurement."""
    w = [max(len(str(r[k])) for r in rows + [{"check": "check", "what": "what", "value": "value", "extra": ""}])
         for k in ("check", "what", "value")]
    print(f"{'check':{w[0]}}  {'what':{w[1]}}  {'value':>{w[2]}}  notes")
    print("-" * (sum(w) + 12))
    for r in rows:
        print(f"{r['check']:{w[0]}}  {r['what']:{w[1]}}  {r['value']:>{w[2]}}  {r['extra']}")


def main() -> None:
    """Parse flags, run every check, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="Tiny sizes: checks the logic in under a minute.")
    p.add_argument("--only", default="train,ddp,generate,features,quickstart",
                   help="Comma list of checks to run.")
    p.add_argument("--out", default=None, help="Working folder (default: a temporary one, deleted after).")
    p.add_argument("--json", action="store_true", help="Also print the rows as JSON.")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device is visible; run with --device cpu --quick to check the logic here.")
    if a.ddp_worker:
        ddp_worker(a.device, Path(a.out), a.quick)
        return
    if a.device == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    only = set(a.only.split(","))
    tmp = None if a.out else tempfile.TemporaryDirectory()
    folder = Path(a.out or tmp.name)
    rows: list[dict] = []
    t0 = time.perf_counter()
    try:
        if "train" in only or "generate" in only:
            rows += train_rows(a.device, a.quick, folder)
        if "ddp" in only:
            rows.append(ddp_row(a.device, a.quick, folder))
        if "generate" in only:
            rows += generation_rows(a.device, a.quick, folder)
        if "features" in only:
            rows += feature_rows(a.device, a.quick)
        if "quickstart" in only:
            rows.append(quickstart_row(a.device, a.quick, folder))
    finally:
        if tmp is not None:
            tmp.cleanup()
    name = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    print(f"forgelab GPU check on {name} ({time.perf_counter() - t0:.0f} s, torch {torch.__version__})")
    print_table(rows)
    if a.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
