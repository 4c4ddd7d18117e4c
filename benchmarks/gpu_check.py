"""GPU acceptance run: one command, one table, PASS/FAIL per row (issues 10 and 19). About 5-8 minutes on one H100/H200.

    python benchmarks/gpu_check.py                       # CUDA, full sizes: the first thing to run on a GPU
    python benchmarks/gpu_check.py --device cpu --quick  # the same logic on tiny sizes (in the test suite)

Rows of the table (``GPU`` column: "yes" where the number means something only on a GPU; on
the CPU such rows check the code path and report ``needs GPU`` for their target):

* ``train``: DCGAN-32, SNGAN-32 and SNGAN-64 at their papers' widths, batch 64 (SNGAN n_dis 5),
  images/s (real images shown to D, ``batch * n_dis`` per G-step) and G-steps/s, with bf16
  autocast and without (on the CPU only fp32: bf16 autocast is for GPUs). PASS: finite losses.
  Target: SNGAN-32 bf16 >= 50 G-steps/s on an H100/H200.
* ``syncs``: one SNGAN-32 bf16 training step (and the loop's per-step divergence/stop check)
  under ``torch.cuda.set_sync_debug_mode("warn")``; the number of host-device waits. Target: 0
  (the loop waits only on steps that log, sample or checkpoint).
* ``ddp``: ``torchrun`` with one process per visible GPU (NCCL); with one GPU, two processes
  sharing it through gloo, and on the CPU two gloo processes, each labelled as such. Every
  rank reports digests of its G, D and EMA weights. PASS: all ranks identical.
* ``generate``: 50,000 images from a DCGAN-32 checkpoint, forward only (uint8 on the host) vs
  written as PNGs with manifest (``gans.sampling.write_fake_set``). Target: PNG writing >= 80 %
  of forward-only speed.
* ``features``: ``radial`` and ``npr`` images/s on the device.
* ``quickstart``: the packaged quickstart study with ``study.device`` set to the device (with
  ``--quick`` one generator, two steps). PASS: the study finished.
* ``ray``: a study through the Ray executor, one generator per visible GPU (each step on its own
  GPU, a fresh worker per GPU step). PASS: the study finished.

The exit status is 1 when a row fails or a target is missed, else 0.
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
import warnings
from pathlib import Path

import tomllib
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detectors.features import FEATURES, extract  # noqa: E402
from gans.run_edges import StopRequest, unwrap  # noqa: E402
from gans.sampling import generate_tensor, load_generator, write_fake_set  # noqa: E402
from gans.training import TrainConfig, Trainer  # noqa: E402
from plumbing.digests import tensor_digest  # noqa: E402

TRAIN_CASES = (("dcgan", 32), ("sngan", 32), ("sngan", 64))
QUICK_TRAIN_CASES = (("dcgan", 32), ("sngan", 32))  # the 64 px network adds nothing to a logic check
TARGET_G_STEPS = 50.0  # SNGAN-32, batch 64, n_dis 5, bf16, on an H100/H200
TARGET_PNG_SHARE = 0.80  # PNG writing vs forward-only images/s
TARGET_GPUS = ("H100", "H200")


def row(check: str, what: str, value: str, extra: str = "", *, ok: bool = True, gpu: bool = False,
        target: str = "", met: bool | None = None) -> dict:
    """One table row: ``ok`` says the row ran and its check holds; ``met`` whether its target was reached (None: not judged)."""
    return {"check": check, "what": what, "value": value, "extra": extra, "ok": bool(ok), "gpu": gpu,
            "target": target, "met": met}


def _cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def _sync(device: str) -> None:
    if _cuda(device):
        torch.cuda.synchronize(torch.device(device))


def _images(n: int, resolution: int, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, resolution, resolution), generator=g, dtype=torch.uint8).to(device)


def _target_gpu(device: str) -> bool:
    return _cuda(device) and any(t in torch.cuda.get_device_name(torch.device(device)) for t in TARGET_GPUS)


def _judge(device: str, met: bool, gpu_models: tuple[str, ...] | None = None) -> tuple[str, bool | None]:
    """(what the target column says, met or None) for a target that needs a GPU (of ``gpu_models``)."""
    if not _cuda(device):
        return "needs GPU", None
    if gpu_models and not _target_gpu(device):
        return f"for {'/'.join(gpu_models)} only", None
    return ("PASS" if met else "FAIL"), met


def _trainer(arch: str, res: int, device: str, quick: bool, amp: bool, folder: Path) -> Trainer:
    batch = 8 if quick else 64
    cfg = TrainConfig(arch=arch, upsampler="nearest", resolution=res, batch_size=batch, steps=10**6,
                      width=4 if quick else None, amp=amp, device=device, ckpt_every=0, sample_every=0,
                      log_every=1000)
    return Trainer(cfg, _images(max(256, batch), res), folder / f"{arch}{res}")


def train_rows(device: str, quick: bool, folder: Path) -> list[dict]:
    """Images/s and G-steps/s of each architecture, with and without bf16 autocast."""
    rows = []
    steps, warmup = (2, 1) if quick else (30, 5)
    for arch, res in QUICK_TRAIN_CASES if quick else TRAIN_CASES:
        for amp in ((True, False) if _cuda(device) else (False,)):
            tr = _trainer(arch, res, device, quick, amp, folder)
            for _ in range(warmup):
                tr.train_step()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                out = tr.train_step()
            _sync(device)
            dt = (time.perf_counter() - t0) / steps
            finite = all(bool(torch.isfinite(v).all()) for v in out.values())
            name = f"{arch.upper()}-{res} {'bf16' if tr.amp else 'fp32'}"
            target, met = "", None
            if (arch, res) == ("sngan", 32) and tr.amp and not quick:
                target, met = _judge(device, 1 / dt >= TARGET_G_STEPS, TARGET_GPUS)
                target = f">= {TARGET_G_STEPS:.0f} G-steps/s: {target}"
            rows.append(row("train", name, f"{tr.cfg.batch_size * tr.cfg.n_dis / dt:,.0f} img/s",
                            f"{1 / dt:,.1f} G-steps/s (batch {tr.cfg.batch_size}, n_dis {tr.cfg.n_dis})"
                            + ("" if finite else "; NON-FINITE LOSS"), ok=finite, gpu=True, target=target, met=met))
            if arch == "dcgan" and not amp:
                tr.save()  # the checkpoint the generation rows use
    if not _cuda(device):
        rows.append(row("train", "bf16 autocast", "-", "skipped: bf16 training rows need a GPU", gpu=True,
                        target="needs GPU"))
    return rows


def sync_row(device: str, quick: bool, folder: Path) -> dict:
    """Host-device waits in one SNGAN-32 bf16 step (plus the loop's per-step check) under sync debug mode."""
    what = "waits per SNGAN-32 step"
    if not _cuda(device):
        return row("syncs", what, "-", "torch.cuda.set_sync_debug_mode counts CUDA waits only", gpu=True,
                   target="needs GPU")
    tr = _trainer("sngan", 32, device, quick, True, folder / "syncs")
    for _ in range(2):  # warm-up: first-call allocations, cuDNN plans
        tr.train_step()
        tr.step += 1
    _sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = tr.train_step()
            tr.step += 1
            tr._check_step(out, StopRequest())  # what the loop runs after every step
        finally:
            torch.cuda.set_sync_debug_mode(0)
    waits = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    target, met = _judge(device, not waits)
    return row("syncs", what, str(len(waits)), "; ".join(sorted(set(waits)))[:120], gpu=True,
               target=f"0: {target}", met=met)


def _network_digests(tr: Trainer) -> dict[str, str]:
    """A digest of each network's weights and buffers (G, D, spectral D, EMA) of a trainer."""
    nets = {"G": unwrap(tr.G), "D": unwrap(tr.D), "SD": unwrap(tr.SD), "G_ema": tr.G_ema}
    return {k: tensor_digest(torch.cat([t.detach().double().flatten().cpu() for t in m.state_dict().values()]))
            for k, m in nets.items() if m is not None}


def ddp_worker(device: str, out: Path, quick: bool) -> None:
    """Run under torchrun: train a few steps with DDP, write this rank's weight digests."""
    cfg = TrainConfig(arch="sngan", upsampler="nearest", resolution=32, batch_size=8 if quick else 64,
                      steps=2 if quick else 20, width=4 if quick else None, ema=0.999, device=device,
                      ckpt_every=0, sample_every=0, log_every=0)
    tr = Trainer(cfg, _images(256, 32), out / "run")
    tr.run()
    (out / f"rank{int(os.environ.get('RANK', '0'))}.json").write_text(json.dumps(_network_digests(tr)))


def ddp_plan(device: str) -> tuple[int, str, dict[str, str]]:
    """(processes, label, extra environment) of the DDP row: one rank per GPU, or two sharing one GPU or the CPU."""
    if not _cuda(device):
        return 2, "2 gloo processes on the CPU", {}
    n = torch.cuda.device_count()
    if n == 1:
        return 2, "2 processes sharing 1 GPU through gloo (no NCCL)", {"FORGELAB_DIST_BACKEND": "gloo"}
    return n, f"{n} GPUs, NCCL", {}


def ddp_row(device: str, quick: bool, folder: Path) -> dict:
    """torchrun SNGAN-32: do all ranks end with identical weights?"""
    n, label, extra_env = ddp_plan(device)
    out = folder / "ddp"
    out.mkdir(parents=True, exist_ok=True)
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    # Plain "cuda": each rank takes GPU LOCAL_RANK (modulo the GPUs visible).
    cmd = [*launcher, "--standalone", f"--nproc_per_node={n}", __file__, "--ddp-worker",
           "--device", "cuda" if _cuda(device) else "cpu", "--out", str(out)] + (["--quick"] if quick else [])
    env = {**os.environ, **extra_env, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if "Error" in ln or "error" in ln]
        return row("ddp", label, "FAILED", " | ".join(lines[-2:])[:200], ok=False, gpu=True)
    digests = [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]
    same = all(d == digests[0] for d in digests)
    return row("ddp", label, "identical" if same else "DIFFERENT",
               f"SNGAN-32 G, D, G_ema on {n} ranks; {dt:.0f} s with start-up", ok=same, gpu=True)


def generation_rows(device: str, quick: bool, folder: Path) -> list[dict]:
    """Forward-only vs PNG-to-disk images/s for 50,000 images (1,000 with --quick)."""
    n, batch = (1000, 250) if quick else (50_000, 1000)
    ckpt = folder / "dcgan32" / "checkpoint.pt"
    G, _ = load_generator(ckpt, device=device)
    generate_tensor(G, batch, batch_size=batch)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    images = generate_tensor(G, n, batch_size=batch)
    _sync(device)
    fwd = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    out = write_fake_set(ckpt, n, folder / "fakes", batch_size=batch, device=device)
    disk = n / (time.perf_counter() - t0)
    manifest = json.loads((out / "manifest.json").read_text())
    pngs = len(list(out.glob("*.png")))
    ok = manifest.get("status") == "finished" and pngs == n and images.shape[0] == n
    share = disk / fwd
    target, met = _judge(device, share >= TARGET_PNG_SHARE)
    return [row("generate", f"DCGAN-32 forward only, {n:,}", f"{fwd:,.0f} img/s",
                f"forward chunk {manifest.get('forward_chunk')}", ok=images.shape[0] == n, gpu=True),
            row("generate", f"DCGAN-32 to PNG, {n:,}", f"{disk:,.0f} img/s", f"{100 * share:.0f} % of forward",
                ok=ok, gpu=True, target=f">= {100 * TARGET_PNG_SHARE:.0f} %: {target}", met=met)]


def feature_rows(device: str, quick: bool) -> list[dict]:
    """radial and npr feature throughput on the device."""
    n = 512 if quick else 20_000
    images = _images(n, 32, device)
    rows = []
    for name in ("radial", "npr"):
        if name not in FEATURES:
            rows.append(row("features", name, "skipped", "not registered in detectors.features", ok=False))
            continue
        extract(name, images[:64])  # warm-up (kernels, cached ring matrices)
        _sync(device)
        t0 = time.perf_counter()
        feats = extract(name, images, batch_size=4096)
        _sync(device)
        rate = n / (time.perf_counter() - t0)
        ok = feats.shape[0] == n and bool(torch.isfinite(feats).all())
        rows.append(row("features", f"{name}, 32 px, {n:,} images", f"{rate:,.0f} img/s", ok=ok, gpu=True))
    return rows


def study_config(device: str, quick: bool, executor: str) -> dict:
    """The packaged quickstart as a dict, on ``device`` (shrunk with --quick; one generator per GPU on Ray)."""
    cfg = tomllib.loads((REPO / "configs" / "quickstart.toml").read_text(encoding="utf-8"))
    cfg["study"].update(device=device, executor=executor)
    gpus = torch.cuda.device_count() if _cuda(device) else 1
    if quick:
        cfg["train"]["steps"] = 2
        cfg["generate"].update(n=40, batch_size=40)
        cfg["study"]["n_real"] = 64
        cfg["transfer"].update(detectors=["radial:lr"], jobs=1)
    if quick or executor == "ray":
        kinds = ["nearest", "bilinear", "bicubic", "transposed", "pixelshuffle", "bed_of_nails", "filtered"]
        cfg["grid"]["upsamplers"] = kinds[: max(1, gpus)] if executor == "ray" else kinds[:1]
        cfg.pop("generators", None)
    if executor == "ray" and not quick:
        cfg["train"]["steps"] = 200
        cfg["transfer"].update(detectors=["radial:lr", "pixels:smallcnn"])
    return cfg


def study_row(device: str, quick: bool, folder: Path, executor: str) -> dict:
    """A study through the local or the Ray executor: wall time, and the generators' diversity."""
    from detectors.diversity import DIVERSITY_WARNING
    from pipelines.study.run import run_study

    out = folder / f"study-{executor}"
    check = "quickstart" if executor == "local" else "ray"
    what = f"study.device={device}" + (f", {torch.cuda.device_count()} GPU(s)" if _cuda(device) else "")
    t0 = time.perf_counter()
    try:
        page = run_study(study_config(device, quick, executor), out, progress=False, executor=executor)
    except Exception as e:  # noqa: BLE001 (the row reports any failure)
        return row(check, what, "FAILED", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200],
                   ok=False, gpu=executor == "ray")
    dt = time.perf_counter() - t0
    div = {p.stem: json.loads(p.read_text()).get("diversity") for p in sorted((out / "quality").glob("*.json"))}
    values = [v for v in div.values() if v is not None]
    low = [k for k, v in div.items() if v is not None and v < DIVERSITY_WARNING]
    extra = f"{len(div)} generators; min diversity {min(values, default=float('nan')):.2f}"
    extra += f"; below {DIVERSITY_WARNING}: {', '.join(low)}" if low and not quick else ""
    return row(check, what, f"{dt:.0f} s", extra, ok=page.is_file(), gpu=executor == "ray")


def print_table(rows: list[dict]) -> None:
    """One plain-text table, one row per measurement."""
    cols = [("check", "check"), ("what", "what"), ("value", "value"), ("result", "result"), ("target", "target"),
            ("gpu", "GPU"), ("extra", "notes")]
    cells = [{**r, "result": "PASS" if r["ok"] else "FAIL", "gpu": "yes" if r["gpu"] else ""} for r in rows]
    w = {k: max(len(h), *(len(str(c[k])) for c in cells)) for k, h in cols[:-1]}
    print("  ".join(f"{h:{w[k]}}" for k, h in cols[:-1]) + "  notes")
    print("-" * (sum(w.values()) + 2 * len(w) + 5))
    for c in cells:
        print("  ".join(f"{str(c[k]):{w[k]}}" for k, _ in cols[:-1]) + f"  {c['extra']}")


def main() -> int:
    """Parse flags, run every check, print the table; return the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="Tiny sizes: checks the logic in well under a minute.")
    p.add_argument("--only", default="train,syncs,ddp,generate,features,quickstart,ray",
                   help="Comma list of checks to run.")
    p.add_argument("--out", default=None, help="Working folder (default: a temporary one, deleted after).")
    p.add_argument("--json", action="store_true", help="Also print the rows as JSON.")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("No CUDA device is visible; run with --device cpu --quick to check the logic here.")
    if a.ddp_worker:
        ddp_worker(a.device, Path(a.out), a.quick)
        return 0
    if a.device == "cpu":
        # --quick: tiny networks gain nothing from intra-op threads, and on a busy machine
        # spinning threads make them many times slower.
        torch.set_num_threads(1 if a.quick else max(1, min(4, os.cpu_count() or 1)))
    only = set(a.only.split(","))
    tmp = None if a.out else tempfile.TemporaryDirectory()
    folder = Path(a.out or tmp.name)
    rows: list[dict] = []
    t0 = time.perf_counter()
    try:
        if "train" in only or "generate" in only:
            rows += train_rows(a.device, a.quick, folder)
        if "syncs" in only:
            rows.append(sync_row(a.device, a.quick, folder))
        if "ddp" in only:
            rows.append(ddp_row(a.device, a.quick, folder))
        if "generate" in only:
            rows += generation_rows(a.device, a.quick, folder)
        if "features" in only:
            rows += feature_rows(a.device, a.quick)
        if "quickstart" in only:
            rows.append(study_row(a.device, a.quick, folder, "local"))
        if "ray" in only:
            rows.append(study_row(a.device, a.quick, folder, "ray"))
    finally:
        if tmp is not None:
            tmp.cleanup()
    name = torch.cuda.get_device_name(torch.device(a.device)) if _cuda(a.device) else "CPU"
    print(f"forgelab GPU check on {name}{' (--quick)' if a.quick else ''} ({time.perf_counter() - t0:.0f} s, "
          f"torch {torch.__version__})")
    print_table(rows)
    failed = [r for r in rows if not r["ok"] or r["met"] is False]
    print(f"{len(rows) - len(failed)} of {len(rows)} rows PASS" + (f"; FAIL: {', '.join(r['check'] + ' ' + r['what'] for r in failed)}" if failed else ""))
    if a.json:
        print(json.dumps(rows, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
