"""Training checkpoints: written atomically, loaded without ever running code from the file.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes), so it
loads with ``torch.load(weights_only=True)``. Besides the weights it carries the training
config, which lets :func:`check_same_network` and :func:`load_module_state` explain a mismatch
in words ("this is a dcgan checkpoint, you asked for sngan") instead of a load_state_dict trace.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from plumbing.files import atomic_path

FORMAT = "forgelab-gan-checkpoint"
VERSION = 1
# Config keys that decide the shape of the networks; resuming or loading with any of them
# changed cannot work.
NETWORK_KEYS = ("arch", "resolution", "upsampler", "upsample_layers", "z_dim", "width", "alias_free")


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A saved training config in today's names: renamed upsamplers (``filtered`` -> ``binomial``), new keys' defaults.

    The rename changes no weights (the FIR kernel is not stored), so an old ``filtered``
    checkpoint is exactly a ``binomial`` one; ``alias_free`` did not exist before and was off.
    """
    from gans.upsamplers import RENAMED

    config = dict(config)
    if config.get("upsampler") in RENAMED:
        config["upsampler"] = RENAMED[config["upsampler"]]
    config.setdefault("alias_free", False)
    return config


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None], *, fsync: bool = True) -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, then move it onto ``path`` in one rename."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def remove_stale_temps(path: str | os.PathLike) -> int:
    """Delete temp files that a killed process left beside ``path``; return how many."""
    path = Path(path)
    n = 0
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a checkpoint dict (tensors and primitives only) to ``path`` atomically."""
    state = dict(state)
    state.setdefault("format", FORMAT)
    state.setdefault("version", VERSION)
    return write_atomically(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a forgelab checkpoint safely (weights_only); damaged or foreign files raise ValueError."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {path} does not exist; give a run folder that holds checkpoint.pt or a checkpoint file."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise ValueError(
                f"Checkpoint {path} contains pickled Python objects that could run code when loaded, "
                "so forgelab refuses it; use a checkpoint written by 'forgelab train'."
            ) from None
        raise _damaged(path) from None
    except PermissionError:
        raise PermissionError(f"Cannot read checkpoint {path}; check its permissions.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError):
        raise _damaged(path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "config" not in state:
        raise ValueError(
            f"{path} is not a forgelab GAN checkpoint (no '{FORMAT}' format entry); "
            "give a checkpoint written by 'forgelab train'."
        )
    if isinstance(state["config"], dict):
        state["config"] = upgrade_config(state["config"])
    if int(state.get("version", 0)) > VERSION:
        raise ValueError(
            f"Checkpoint {path} has format version {state['version']}, newer than this forgelab "
            f"understands ({VERSION}); upgrade forgelab."
        )
    return state


def _damaged(path: Path) -> ValueError:
    return ValueError(
        f"Checkpoint {path} is damaged or incomplete; delete it and resume from an earlier copy, or train again."
    )


def check_same_network(saved: Mapping[str, Any], wanted: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise a ValueError naming both values when a checkpoint's networks differ from the config's."""
    diffs = [k for k in NETWORK_KEYS if saved.get(k) != wanted.get(k)]
    if not diffs:
        return
    if "arch" in diffs:
        raise ValueError(
            f"Checkpoint {path} holds a {saved.get('arch')} network but the config asks for "
            f"{wanted.get('arch')}; use --arch {saved.get('arch')} or choose another --out."
        )
    listed = ", ".join(f"{k} {saved.get(k)!r} (asked: {wanted.get(k)!r})" for k in diffs)
    raise ValueError(
        f"Checkpoint {path} was trained with {listed}; resume with the same settings or choose another --out."
    )


def load_module_state(module: nn.Module, state_dict: Mapping[str, Any], *, path: str | os.PathLike,
                      saved_arch: str, wanted_arch: str, role: str) -> None:
    """Load ``state_dict`` into ``module``; a shape/key mismatch becomes a one-sentence ValueError."""
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError) as e:
        # torch's message starts with a header line; the first indented line names the tensor.
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = next((ln for ln in lines[1:] if ln), lines[0] if lines else type(e).__name__)
        first = detail.rstrip(".")[:200]
        raise ValueError(
            f"Checkpoint {path} ({saved_arch}) does not fit a {wanted_arch} {role} ({first}); "
            "it was written by another architecture or version, so train again or pick the matching checkpoint."
        ) from None
