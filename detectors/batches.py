"""Validation of image batches shared by every feature and detector: one readable error per bad input."""

from __future__ import annotations

import torch


def validate_batch(images: torch.Tensor, what: str = "images", channels: tuple[int, ...] | None = (1, 3)) -> torch.Tensor:
    """Check that ``images`` is a non-empty uint8 or floating (N, C, H, W) tensor; return it unchanged.

    ``channels`` lists the allowed C (None: any), ``what`` names the argument in the message.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}.")
    if images.ndim != 4 or (channels is not None and images.shape[1] not in channels):
        want = " or ".join(f"(N, {c}, H, W)" for c in channels) if channels else "(N, C, H, W)"
        raise ValueError(f"{what} must have shape {want}, got {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise ValueError(f"{what} is an empty batch; give at least one image.")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"{what} must be uint8 or floating point (0..255 or float), got {images.dtype}.")
    return images


def checked_float_batch(images: torch.Tensor) -> torch.Tensor:
    """Validate an (N, C, H, W) batch with C in {1, 3} and return it as float32 (uint8 -> [0, 1])."""
    images = validate_batch(images)
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
