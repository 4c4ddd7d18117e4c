"""One meaning for --device everywhere: auto, cpu, cuda or cuda:N."""

from __future__ import annotations

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
