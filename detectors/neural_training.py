"""The training loop of the neural classifiers: epochs, mixed precision, early stopping, batched inference.

It knows nothing about a classifier's parameters or files: :class:`detectors.cnn.CNNClassifier`
hands it a network, the data, and three callables (features of a batch, the loss, validation
scores), so the Deep-SAD classifier reuses the same loop with its own loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from plumbing.devices import amp_dtype, to_device
from plumbing.progress import progress_bar

__all__ = ["amp_policy", "batches", "input_stats", "macro_ap", "nll", "predict_outputs", "train_network"]

# features(batch on the device, augmentation generator or None) -> (N, C, H, W) float features
FeatureFn = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def macro_ap(y: np.ndarray, proba: np.ndarray) -> float:
    """AP of P(fake) for two classes; mean one-vs-rest AP over classes for attribution."""
    if proba.shape[1] == 2:
        return float(average_precision_score(y > 0, proba[:, 1]))
    onehot = np.eye(proba.shape[1], dtype=np.int64)[y]
    present = onehot.sum(0) > 0
    return float(average_precision_score(onehot[:, present], proba[:, present], average="macro"))


def nll(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    return float(-np.log(np.clip(proba[np.arange(y.size), y], 1e-12, None)).mean())


@torch.no_grad()
def input_stats(X: torch.Tensor, features: FeatureFn, per: str, batch_size: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the un-augmented features of ``X``, per channel (``per="channel"``) or per (C, H, W) coefficient (any other ``per``)."""
    dims = (0, 2, 3) if per == "channel" else (0,)
    s = s2 = None
    count = 0
    for sl in batches(X.shape[0], batch_size):
        f = features(X[sl].to(device), None).double()
        bs, bs2 = f.sum(dim=dims, keepdim=True), f.square().sum(dim=dims, keepdim=True)
        s, s2 = (bs, bs2) if s is None else (s + bs, s2 + bs2)
        count += f.numel() // bs.numel()
    mean = s / count
    std = (s2 / count - mean.square()).clamp_min(0).sqrt()
    # A constant input (e.g. a DC coefficient) must not blow up the standardised value.
    std = std.clamp_min(1e-6 + 1e-3 * float(std.mean()))
    return mean.float(), std.float()


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_policy(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training on ``device``, or None for float32.

    ``amp=True`` means mixed precision on CUDA only (on the CPU it rarely pays): bf16 where
    ``device`` computes it natively (compute capability >= 8.0), else fp16, which
    :func:`train_network` pairs with a GradScaler. ``"bf16"`` or ``"fp16"`` force that dtype
    on any device, the CPU included (how the tests reach these paths without a GPU).
    """
    if isinstance(amp, str):
        if amp not in AMP_DTYPES:
            raise ValueError(f"Unknown amp {amp!r}; choose True, False, {' or '.join(map(repr, AMP_DTYPES))}.")
        return AMP_DTYPES[amp]
    if not amp or device.type != "cuda":
        return None
    return amp_dtype(device)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast on ``device``'s own type (so the CPU is reached too), or nothing for float32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def train_network(
    net: nn.Module,
    X: torch.Tensor,
    y: np.ndarray,
    *,
    features: FeatureFn,
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    amp: bool | str,
    generator: torch.Generator,
    device: torch.device,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    patience: int = 4,
    progress: bool = False,
    description: str = "training",
) -> tuple[list[dict[str, float]], int]:
    """Train ``net`` with Adam; return the per-epoch history and the epoch whose weights ``net`` ends with.

    ``generator`` orders the batches and drives the augmentation inside ``features``. With
    ``validate`` (returning ``val_ap`` and ``val_nll``), training stops after ``patience`` epochs
    without a better validation AP (ties go to the lower loss) and the best weights are restored.
    """
    dtype = amp_policy(amp, device)
    # fp16 needs loss scaling against underflowing gradients; bf16 has float32's range.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    y_t = torch.as_tensor(y)

    history: list[dict[str, float]] = []
    best_key, best_state, best_epoch, bad = (-math.inf, -math.inf), None, epochs, 0
    n = X.shape[0]
    with progress_bar(progress, description, epochs * math.ceil(n / batch_size)) as bar:
        for epoch in range(1, epochs + 1):
            net.train()
            perm = torch.randperm(n, generator=generator)
            total, seen = 0.0, 0
            for sl in batches(n, batch_size):
                idx = perm[sl]
                bar.advance()
                if idx.numel() < 2:  # BatchNorm cannot train on a single sample
                    continue
                with torch.no_grad():
                    feats = features(to_device(X[idx], device), generator)
                yb = to_device(y_t[idx], device)
                with _autocast(device, dtype):
                    batch_loss = loss(net, feats, yb)
                opt.zero_grad(set_to_none=True)
                scaler.scale(batch_loss).backward()
                scaler.step(opt)
                scaler.update()
                # Summed on the device: reading the loss every batch would make the host wait.
                total = total + batch_loss.detach().double() * idx.numel()
                seen += idx.numel()
            record = {"epoch": epoch, "loss": float(total) / max(seen, 1)}
            if validate is not None:
                record.update(validate(net))
                key = (record["val_ap"], -record["val_nll"])
                if key > best_key:
                    best_key, bad, best_epoch = key, 0, epoch
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    bad += 1
            history.append(record)
            if validate is not None and bad >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return history, best_epoch


@torch.no_grad()
def predict_outputs(
    net: nn.Module,
    X: torch.Tensor,
    *,
    features: FeatureFn,
    outputs: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    batch_size: int,
    amp: bool | str,
    device: torch.device,
    input_shape: tuple[int, ...],
) -> np.ndarray:
    """``outputs(net, features)`` over ``X`` in eval mode, batch by batch, as one float64 array.

    Inference runs in float32 whatever ``amp`` says (kept for the callers' signature): bf16 keeps
    ~3 significant digits, which would tie and reorder close scores and coarsen AP and the
    thresholds chosen on validation scores; a forward pass is cheap next to training.
    """
    del amp
    net.eval()
    outs = []
    for sl in batches(X.shape[0], batch_size):
        feats = features(to_device(X[sl], device), None)
        if tuple(feats.shape[1:]) != tuple(input_shape):
            raise ValueError(
                f"The classifier was trained on features of shape {tuple(input_shape)} but got "
                f"{tuple(feats.shape[1:])}; give images at the training resolution."
            )
        outs.append(outputs(net, feats).float().cpu())
    return torch.cat(outs).double().numpy()
