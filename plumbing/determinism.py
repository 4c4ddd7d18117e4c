"""Bit-reproducible CUDA kernels on request: what ``--deterministic`` switches on, and back off.

On the CPU the same seed gives the same bytes anyway. On a GPU, by default:

* cuDNN may choose, per shape, among convolution algorithms, some of which (transposed
  convolutions' backward-data kernels in particular) accumulate in a non-deterministic order;
* convolutions and matrix products may use TF32, which rounds float32 inputs to 10-bit mantissas;
* a few kernels (scatter/index accumulation) use atomics.

:func:`deterministic_mode` asks for deterministic cuDNN algorithms with autotuning off, turns
TF32 off, and calls ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an operation
without a deterministic kernel warns instead of failing), and sets
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when unset (cuBLAS needs it before its first call to be
deterministic). Bit-identical then means: the same GPU model, driver, CUDA, cuDNN and torch
versions. Images from different GPU models, or from a GPU and the CPU, still differ in a
rounding now and then; nothing can make them agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["deterministic_mode"]


@contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Within the block: deterministic cuDNN/cuBLAS kernels and no TF32 (everything restored after)."""
    if not enabled:
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # The allow_tf32 flags (not the newer fp32_precision ones: mixing the two APIs is an error).
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = True, False, False, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved[:4]
        torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])
