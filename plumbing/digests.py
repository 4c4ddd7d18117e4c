"""Short stable hashes of tensors and JSON-able values, used as cache and step keys."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def tensor_digest(x: torch.Tensor) -> str:
    """A 16-hex-digit hash of a tensor's shape, dtype and bytes (identifies a data set)."""
    h = hashlib.sha256(f"{tuple(x.shape)}{x.dtype}".encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def json_digest(obj: Any, version: int | None = None) -> str:
    """A 16-hex-digit hash of a JSON-able value (keys sorted; ``version`` salts it)."""
    payload = obj if version is None else {"v": version, "inputs": obj}
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
