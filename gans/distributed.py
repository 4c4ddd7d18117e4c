"""Devices and process groups: one process, or one process per rank when launched by torchrun.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` joins that process group (NCCL on CUDA, gloo on CPU) and every helper
here is a no-op in a single process, so training and sampling code calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

# check_device is re-exported for pipelines.commands.gan, which validates --device through this module.
from plumbing.devices import check_device, resolve_device

__all__ = [
    "DistInfo", "any_rank", "barrier", "broadcast_buffers", "check_device", "current_info", "env_info",
    "gather_objects", "init_distributed", "rank_device", "resolve_device", "shutdown",
]

@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: its rank, the number of ranks, its GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs and writes shared files."""
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank, world size and local rank from torchrun's environment variables (1 process without)."""
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; launch with torchrun.") from None


def current_info() -> DistInfo:
    """The DistInfo of an already initialised process group, else of the environment."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return env_info()


def rank_device(device: str | torch.device, info: DistInfo) -> torch.device:
    """This rank's device: under torchrun a CUDA rank computes on GPU ``LOCAL_RANK``.

    ``cuda`` and ``auto`` pick it; ``cuda:N`` is accepted only when N is this rank's local
    rank, since one N for every rank puts them all on one GPU (NCCL: "Duplicate GPU").
    """
    dev = resolve_device(device, info.local_rank)
    if info.enabled and dev.type == "cuda":
        mine = info.local_rank % torch.cuda.device_count()
        if dev.index is not None and dev.index != mine:
            raise ValueError(
                f"Device {str(device)!r} would put every torchrun rank on GPU {dev.index} (this is local rank "
                f"{info.local_rank}); use --device cuda, which gives each rank its own GPU, and choose the GPUs "
                "with CUDA_VISIBLE_DEVICES."
            )
        dev = torch.device("cuda", mine)
    return dev


def init_distributed(device: str | torch.device = "auto") -> tuple[DistInfo, torch.device, bool]:
    """Join torchrun's process group if launched by it; return (info, this rank's device, created)."""
    info = current_info()
    dev = rank_device(device, info)
    if not info.enabled or dist.is_initialized():
        return info, dev, False
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    # FORGELAB_DIST_BACKEND=gloo lets several ranks share one GPU (NCCL refuses: "Duplicate
    # GPU"); benchmarks/gpu_check.py exercises DDP that way on a machine with one GPU.
    backend = os.environ.get("FORGELAB_DIST_BACKEND") or ("nccl" if dev.type == "cuda" else "gloo")
    kwargs = {"device_id": dev} if backend == "nccl" else {}
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size, **kwargs)
    return info, dev, True


def shutdown(created: bool) -> None:
    """Leave the process group if this code created it (callers that made it keep it)."""
    if created and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in one process)."""
    if info.enabled:
        dist.barrier()


def any_rank(flags: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise OR of a small 0/1 flag tensor over all ranks (the tensor itself in one process)."""
    if info.enabled:
        flags = flags.clone()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def broadcast_buffers(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm statistics, spectral-norm vectors) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last forward the ranks'
    BatchNorm running statistics differ by one local update; this makes the final state equal.
    """
    if info.enabled:
        for b in module.buffers():
            dist.broadcast(b.data, src=0)


def gather_objects(obj: object, info: DistInfo) -> list:
    """Collect one small picklable object from every rank (a one-element list in one process)."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
