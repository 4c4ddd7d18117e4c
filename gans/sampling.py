"""Generate images from a trained generator: in memory as uint8 batches, or as a fake set on disk.

Determinism: the latent of image ``i`` depends only on ``(seed, i)`` — latents are drawn in
fixed chunks of :data:`Z_CHUNK` from a generator seeded by ``(seed, i // Z_CHUNK)`` — and the
generator always runs on one fixed number of latents at a time (:func:`forward_chunk`), so
``batch_size``, ``n`` and the number of torchrun ranks never change an image's bytes
(``batch_size`` only sets how many images each yielded batch holds). What is bit-identical:

* on the CPU, the same seed gives the same bytes, run after run (forwards of
  :data:`FORWARD_CHUNK` latents);
* on a GPU, forwards are sized by the GPU's memory (a function of the generator and the GPU
  model), and by default cuDNN may choose non-deterministic algorithms and TF32 rounding, so
  two runs *can* differ in a rounding now and then. With ``deterministic=True``
  (``forgelab generate --deterministic``, :mod:`plumbing.determinism`) they do not, on the same
  GPU model and software versions;
* a GPU and the CPU, or two GPU models, never promise the same bytes.

Images are rounded to uint8 exactly once, here, so the in-memory batches and the PNG files
hold the same bytes.

A fake set is a folder of lossless RGB PNGs (``000000.png`` ...) and ``manifest.json``. PNG
encoding runs in a thread pool (Pillow releases the GIL while compressing) while the next
batch goes through the generator, so the forward passes are not held up by the encoder; on a
GPU the uint8 images come back through pinned memory, copied asynchronously, and the next
chunk's forward is queued before the previous chunk is handed out. The set
is complete only when its manifest says ``"status": "finished"``: the manifest is written
atomically after the last PNG, so an interrupted run never looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from gans import distributed
from gans.checkpoint import load_checkpoint, load_module_state
from gans.networks import build_generator
from plumbing.determinism import deterministic_mode
from plumbing.devices import resolve_device, to_device
from plumbing.files import write_json
from plumbing.progress import progress_bar

Z_CHUNK = 256
# Every forward pass runs on exactly this many latents (the last one padded): convolution
# kernels pick their algorithm by batch shape, and a different algorithm rounds differently,
# which would flip a uint8 value now and then. With one shape, an image's bytes depend only on
# (seed, index, device), never on batch_size, on n, or on which rank computed it.
FORWARD_CHUNK = 128
# On a GPU the forward chunk is FORWARD_CHUNK * 2**k, as large as fits in this share of the
# GPU's memory, up to MAX_FORWARD_CHUNK (128 latents leave a large GPU mostly idle).
GPU_MEMORY_SHARE = 0.25
MAX_FORWARD_CHUNK = 8192
MANIFEST = "manifest.json"
# zlib level 1: still lossless, several times faster than the default 6 for a few % more bytes.
PNG_COMPRESS_LEVEL = 1
_PNG_NAME = re.compile(r"^\d+\.png$")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of values (stable across runs, platforms and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def latents(seed: int, indices: Sequence[int] | torch.Tensor, z_dim: int) -> torch.Tensor:
    """The (len(indices), z_dim) float32 CPU latents of images ``indices`` for ``seed``."""
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    out = torch.empty(idx.numel(), z_dim)
    chunk_of = torch.div(idx, Z_CHUNK, rounding_mode="floor")
    for c in torch.unique(chunk_of).tolist():
        g = torch.Generator().manual_seed(derive_seed(seed, "latent", c))
        z = torch.randn(Z_CHUNK, z_dim, generator=g)
        sel = chunk_of == c
        out[sel] = z[idx[sel] - c * Z_CHUNK]
    return out


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Map generator output in [-1, 1] to uint8 0..255 by (x + 1) * 127.5, rounded and clamped."""
    return ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def _model_device(G: nn.Module) -> torch.device:
    p = next(G.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_count(n: int, batch_size: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of images, got {n!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")


def chunk_for_memory(bytes_per_image: float, budget: float, base: int = FORWARD_CHUNK,
                     cap: int = MAX_FORWARD_CHUNK) -> int:
    """The largest ``base * 2**k`` (at most ``cap``, at least ``base``) whose images fit in ``budget`` bytes."""
    chunk = base
    while chunk * 2 <= cap and chunk * 2 * bytes_per_image <= budget:
        chunk *= 2
    return chunk


@torch.no_grad()
def forward_chunk(G: nn.Module, device: torch.device) -> int:
    """Latents per forward pass: :data:`FORWARD_CHUNK` on the CPU, sized by memory on a GPU.

    On CUDA the peak memory of one forward of FORWARD_CHUNK latents gives the bytes per image;
    the chunk is the largest power-of-two multiple that fits in :data:`GPU_MEMORY_SHARE` of the
    GPU's total (not free) memory, so it depends only on the generator and the GPU model.
    """
    if device.type != "cuda":
        return FORWARD_CHUNK
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    to_uint8(G(torch.zeros(FORWARD_CHUNK, G.z_dim, device=device)))
    per_image = (torch.cuda.max_memory_allocated(device) - before) / FORWARD_CHUNK
    total = torch.cuda.get_device_properties(device).total_memory
    return chunk_for_memory(max(per_image, 1.0), GPU_MEMORY_SHARE * total)


def _forward_chunks(G: nn.Module, indices: torch.Tensor, seed: int, device: torch.device,
                    chunk: int) -> Iterator[torch.Tensor]:
    """uint8 CPU images of ``indices``, one forward chunk at a time.

    On CUDA each chunk is copied into pinned host memory without blocking, and chunk k is
    handed out only after chunk k+1's forward has been queued, so the GPU computes while the
    host encodes.
    """
    in_flight: deque[tuple[torch.Tensor, torch.cuda.Event]] = deque()
    for start in range(0, indices.numel(), chunk):
        z = latents(seed, indices[start : start + chunk], G.z_dim)
        k = z.shape[0]
        if k < chunk:  # pad, so every forward pass has the same shape
            z = torch.cat([z, z.new_zeros(chunk - k, z.shape[1])])
        with torch.no_grad():
            images = to_uint8(G(to_device(z, device))[:k])
        if device.type != "cuda":
            yield images.cpu()
            continue
        host = torch.empty(images.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(images, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        in_flight.append((host, copied))
        if len(in_flight) > 1:
            host, copied = in_flight.popleft()
            copied.synchronize()
            yield host
    while in_flight:
        host, copied = in_flight.popleft()
        copied.synchronize()
        yield host


def _generate_indices(G: nn.Module, indices: torch.Tensor, seed: int, batch_size: int,
                      device: torch.device, chunk: int | None = None) -> Iterator[torch.Tensor]:
    was_training = G.training
    G.eval()  # BatchNorm with running statistics: each image independent of its batch-mates
    pending: list[torch.Tensor] = []
    ready = 0
    try:
        chunk = chunk or forward_chunk(G, device)
        for images in _forward_chunks(G, indices, seed, device, chunk):
            pending.append(images)
            ready += images.shape[0]
            while ready >= batch_size:
                flat = torch.cat(pending)
                yield flat[:batch_size]
                pending, ready = [flat[batch_size:]], ready - batch_size
        if ready:
            yield torch.cat(pending)
    finally:
        G.train(was_training)


def generate(G: nn.Module, n: int, seed: int = 0, batch_size: int = 256,
             device: str | torch.device | None = None, deterministic: bool = False) -> Iterator[torch.Tensor]:
    """Yield ``n`` generated images as uint8 CPU batches of ``batch_size``, the same for the same seed.

    ``device`` None runs where G's weights are; another device moves G there. ``deterministic``
    asks for deterministic GPU kernels while generating (see the module docstring).
    """
    _check_count(n, batch_size)
    dev = resolve_device(device) if device is not None else _model_device(G)
    if dev != _model_device(G):
        G.to(dev)
    with deterministic_mode(deterministic):
        yield from _generate_indices(G, torch.arange(n), seed, batch_size, dev)


def generate_tensor(G: nn.Module, n: int, seed: int = 0, batch_size: int = 256,
                    device: str | torch.device | None = None, deterministic: bool = False) -> torch.Tensor:
    """All ``n`` generated images as one uint8 CPU tensor (n, 3, R, R)."""
    return torch.cat(list(generate(G, n, seed=seed, batch_size=batch_size, device=device,
                                   deterministic=deterministic)))


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build the generator of a run folder or checkpoint (EMA weights when present), in eval mode."""
    path = Path(path)
    ckpt_path = path / "checkpoint.pt" if path.is_dir() else path
    state = load_checkpoint(ckpt_path)
    cfg = state["config"]
    G = build_generator(cfg["arch"], cfg["resolution"], cfg["upsampler"], cfg.get("upsample_layers", "all"),
                        z_dim=cfg.get("z_dim", 128), width=cfg.get("width"),
                        # checkpoints from before the option was added used the upsampler shortcut
                        shortcut=cfg.get("shortcut", "upsampler"), alias_free=cfg.get("alias_free", False))
    ema = state.get("G_ema") is not None
    load_module_state(G, state["G_ema"] if ema else state["G"], path=ckpt_path, saved_arch=cfg["arch"],
                      wanted_arch=cfg["arch"], role="generator")
    G.requires_grad_(False)
    G.eval().to(resolve_device(device))
    meta = {
        "checkpoint": str(ckpt_path.resolve()),
        "arch": cfg["arch"],
        "upsampler": cfg["upsampler"],
        "upsample_layers": cfg.get("upsample_layers", "all"),
        "resolution": int(cfg["resolution"]),
        "z_dim": int(cfg.get("z_dim", 128)),
        "width": cfg.get("width"),
        "alias_free": bool(cfg.get("alias_free", False)),
        "step": int(state.get("step", 0)),
        "ema": ema,
    }
    return G, meta


def png_name(index: int, n: int) -> str:
    """File name of image ``index`` in a fake set of ``n`` images (zero-padded, sorts in order)."""
    return f"{index:0{max(6, len(str(n - 1)))}d}.png"


def _write_pngs(batch: np.ndarray, names: list[Path]) -> None:
    # Straight to the final name: a temp file + rename per image doubled the file-system work
    # and made writing, not the generator, the bottleneck. The set is committed as a whole
    # instead: manifest.json says "finished" (written atomically, last) only after every PNG.
    for img, path in zip(batch, names, strict=True):
        Image.fromarray(img).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def _read_manifest(folder: Path) -> dict[str, Any]:
    p = folder / MANIFEST
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{p} is not valid JSON; delete it or pass overwrite=True.") from None


def _clear_fake_set(folder: Path) -> None:
    # Only our own files: zero-padded PNG names and the manifest.
    for p in folder.iterdir():
        if p.is_file() and _PNG_NAME.match(p.name):
            p.unlink()
    (folder / MANIFEST).unlink(missing_ok=True)


def write_fake_set(checkpoint: str | os.PathLike, n: int, out_dir: str | os.PathLike, seed: int = 0,
                   batch_size: int = 256, device: str | torch.device = "auto", progress: bool = False,
                   overwrite: bool = False, workers: int | None = None, deterministic: bool = False) -> Path:
    """Write ``n`` lossless RGB PNGs from a checkpoint plus manifest.json into ``out_dir``; return it.

    ``deterministic`` asks for deterministic GPU kernels (see the module docstring); the
    manifest records it and the forward chunk, the two things a GPU's bytes depend on.

    Under torchrun each rank writes images ``rank::world_size`` and rank 0 writes the manifest
    after all ranks are done. A folder whose manifest says "finished" is refused unless
    ``overwrite``; a manifest left "running" (by the CLI's run folder) is kept and completed.
    """
    _check_count(n, batch_size)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder; choose another output folder.")
    info, dev, created = distributed.init_distributed(device)
    try:
        old = _read_manifest(out) if out.is_dir() else {}
        if old.get("status") == "finished" and not overwrite:
            raise FileExistsError(
                f"{out} already holds a finished fake set; pass overwrite=True (--overwrite) or choose another folder."
            )
        distributed.barrier(info)  # every rank has read the old manifest before rank 0 clears it
        if overwrite:
            old = {}
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if overwrite:
                _clear_fake_set(out)
        distributed.barrier(info)
        G, meta = load_generator(checkpoint, device=dev)
        started = time.perf_counter()
        mine = torch.arange(info.rank, n, info.world_size)
        with deterministic_mode(deterministic):
            chunk = forward_chunk(G, dev)
            _encode_all(G, mine, n, seed, batch_size, dev, out, progress and info.is_main, workers, chunk)
        distributed.barrier(info)
        if info.is_main:
            manifest = dict(old)
            manifest.update({
                "kind": "fake_set",
                "checkpoint": meta["checkpoint"],
                "arch": meta["arch"],
                "upsampler": meta["upsampler"],
                "upsample_layers": meta["upsample_layers"],
                "resolution": meta["resolution"],
                "step": meta["step"],
                "ema": meta["ema"],
                "seed": seed,
                "count": n,
                "format": "png",
                "files": png_name(0, n).replace("0", "#"),
                "world_size": info.world_size,
                "forward_chunk": chunk,
                "deterministic": bool(deterministic),
                "seconds": round(time.perf_counter() - started, 3),
                "status": "finished",
            })
            write_json(out / MANIFEST, manifest)
        distributed.barrier(info)
    finally:
        distributed.shutdown(created)
    return out


def _encode_all(G: nn.Module, indices: torch.Tensor, n: int, seed: int, batch_size: int, dev: torch.device,
                out: Path, progress: bool, workers: int | None, chunk: int | None = None) -> None:
    # One core stays with the generator; the others encode.
    workers = workers or max(1, min(16, (os.cpu_count() or 2) - 1))
    pending: deque[Future] = deque()
    done = 0
    with progress_bar(progress, "generating", indices.numel(), transient=False) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for start, batch in zip(range(0, indices.numel(), batch_size),
                                    _generate_indices(G, indices, seed, batch_size, dev, chunk), strict=True):
                arr = batch.permute(0, 2, 3, 1).contiguous().numpy()
                idx = indices[start : start + batch_size].tolist()
                names = [out / png_name(i, n) for i in idx]
                # Split the batch so that every worker gets a share of it.
                step = max(1, -(-len(idx) // workers))
                for j in range(0, len(idx), step):
                    pending.append(pool.submit(_write_pngs, arr[j : j + step], names[j : j + step]))
                # Bound the queue: at most ~2 batches in flight, so memory stays flat.
                while len(pending) > 2 * workers:
                    pending.popleft().result()
                done += len(idx)
                bar.update(completed=done)
            while pending:
                pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()

