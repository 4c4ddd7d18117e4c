"""One meaning for --device everywhere: auto, cpu, cuda or cuda:N."""

from __future__ import annotations

import inspect

import torch

DEVICES = ("auto", "cpu", "cuda")


def check_device(name: str) -> str:
    """Return ``name`` if it is auto, cpu, cuda or cuda:N, else raise a ValueError listing them."""
    base, _, index = str(name).partition(":")
    if base not in DEVICES or (index and (base != "cuda" or not index.isdigit())):
        raise ValueError(f"Unknown device {name!r}; choose one of: {', '.join(DEVICES)} (or cuda:N).")
    return str(name)


def resolve_device(name: str | torch.device, local_rank: int = 0) -> torch.device:
    """Turn auto|cpu|cuda|cuda:N (or a torch.device) into the device this process computes on.

    ``auto`` is CUDA when torch sees a GPU, else the CPU; plain ``cuda`` picks GPU
    ``local_rank`` modulo the GPUs visible (one per torchrun rank); asking for CUDA on a
    machine without it is a ValueError naming the fix.
    """
    if isinstance(name, torch.device):
        return name
    check_device(name)
    base, _, index = name.partition(":")
    if base == "auto":
        base = "cuda" if torch.cuda.is_available() else "cpu"
    if base == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"Device {name!r} was asked for but torch sees no CUDA GPU; use --device cpu or auto.")
    if index:
        return torch.device("cuda", int(index))
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def device_name(name: str | torch.device) -> str:
    """The resolved device type as a string ('cpu' or 'cuda'), for configs and manifests."""
    return resolve_device(name).type


def amp_dtype(device: str | torch.device) -> torch.dtype:
    """The autocast dtype for ``device``: bf16 where it runs natively, else fp16 (which needs a GradScaler).

    ``torch.cuda.is_bf16_supported()`` is True on pre-Ampere GPUs too, where bf16 is emulated
    and slow, and it asks about the *current* device; this asks about ``device`` itself:
    compute capability 8.0 (Ampere) or newer. The CPU computes bf16 (and autocast supports it).
    """
    dev = resolve_device(device)
    if dev.type != "cuda":
        return torch.bfloat16
    major, _minor = torch.cuda.get_device_capability(dev)
    return torch.bfloat16 if major >= 8 else torch.float16


def fused_adam(device: str | torch.device) -> bool:
    """Whether Adam on ``device`` uses its fused kernel (one launch for every parameter): CUDA only.

    The CPU keeps the default (foreach) implementation, so CPU runs are bit-identical to before.
    """
    dev = resolve_device(device)
    return dev.type == "cuda" and "fused" in inspect.signature(torch.optim.Adam).parameters


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``; a CPU -> CUDA copy goes through pinned memory without blocking the host.

    A copy from ordinary (pageable) memory makes the host wait for the GPU; from pinned memory
    it is queued on the stream like a kernel (the caching host allocator keeps the buffer alive
    until the copy has run).
    """
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
