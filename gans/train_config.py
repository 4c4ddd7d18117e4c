"""The options of a GAN training run: one validated dataclass, defaults per architecture, JSON round trip."""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass
from typing import Any

from gans import losses
from gans.networks import ARCH_DEFAULTS, check_arch, check_resolution, check_upsample_layers
from gans.sngan import check_shortcut
from gans.upsamplers import check_upsampler
from plumbing.devices import check_device

# Learning-rate schedules by name: total steps -> (step -> factor of the base learning rate).
LR_SCHEDULES: dict[str, Any] = {
    "none": lambda total: (lambda step: 1.0),
    "linear": lambda total: (lambda step: max(0.0, 1.0 - step / total)),  # SNGAN: to zero at the end
}


@dataclass
class TrainConfig:
    """Everything that defines a training run; ``None`` hyper-parameters take the arch's defaults."""

    arch: str = "dcgan"
    upsampler: str = "transposed"
    upsample_layers: str = "all"
    resolution: int = 32
    steps: int = 1000
    batch_size: int = 64
    z_dim: int = 128
    width: int | None = None
    shortcut: str = "1x1"  # SNGAN's residual shortcut: "1x1" (the paper's) or "upsampler"
    alias_free: bool = False  # every ReLU of G evaluated at 2x the rate (StyleGAN3's filtered ReLU)
    loss: str | None = None
    lr: float | None = None
    betas: tuple[float, float] | None = None
    n_dis: int | None = None
    lr_decay: str | None = None
    spectral_d: bool = False
    spectral_d_weight: float = 0.5
    spectral_reg: float = 0.0
    ema: float | None = None
    amp: bool = True
    seed: int = 0
    device: str = "auto"
    ckpt_every: int = 500
    sample_every: int = 500
    log_every: int = 10

    @classmethod
    def keys(cls) -> list[str]:
        """Names of all config fields."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build and validate a config from a dict; unknown keys raise a ValueError listing valid ones."""
        unknown = sorted(set(d) - set(cls.keys()))
        if unknown:
            raise ValueError(
                f"Unknown training option(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(cls.keys())}."
            )
        d = dict(d)
        if isinstance(d.get("betas"), list):
            d["betas"] = tuple(d["betas"])
        return cls(**d).validate()

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-friendly dict (betas as a list)."""
        d = dataclasses.asdict(self)
        if d["betas"] is not None:
            d["betas"] = [float(b) for b in d["betas"]]
        return d

    def validate(self) -> TrainConfig:
        """Check every field; raise a ValueError naming the field and what it accepts."""
        check_arch(self.arch)
        check_upsampler(self.upsampler)
        check_upsample_layers(self.upsample_layers)
        check_resolution(self.resolution)
        check_shortcut(self.shortcut)
        check_device(self.device)
        for name in ("steps", "batch_size", "z_dim"):
            _int_at_least(getattr(self, name), name, 1)
        for name in ("ckpt_every", "sample_every", "log_every"):
            _int_at_least(getattr(self, name), name, 0)
        _int_at_least(self.seed, "seed", 0)
        if self.width is not None:
            _int_at_least(self.width, "width", 1)
        if self.n_dis is not None:
            _int_at_least(self.n_dis, "n_dis", 1)
        if self.loss is not None:
            losses.check_loss(self.loss)
        if self.lr is not None and not (_is_number(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}.")
        if self.betas is not None and not (
            len(self.betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in self.betas)
        ):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}.")
        if self.lr_decay is not None and self.lr_decay not in LR_SCHEDULES:
            raise ValueError(f"Unknown lr_decay {self.lr_decay!r}; choose one of: {', '.join(LR_SCHEDULES)}.")
        if not (_is_number(self.spectral_d_weight) and 0 <= self.spectral_d_weight <= 1):
            raise ValueError(f"spectral_d_weight must be in [0, 1], got {self.spectral_d_weight!r}.")
        if not (_is_number(self.spectral_reg) and self.spectral_reg >= 0):
            raise ValueError(f"spectral_reg must be a number >= 0, got {self.spectral_reg!r}.")
        if self.ema is not None and not (_is_number(self.ema) and 0 <= self.ema < 1):
            raise ValueError(f"ema must be a decay in [0, 1) (or None for no EMA), got {self.ema!r}.")
        for name in ("spectral_d", "amp", "alias_free"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        return self

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` hyper-parameter replaced by the architecture's default."""
        defaults = ARCH_DEFAULTS[check_arch(self.arch)]
        d = dataclasses.replace(self)
        d.loss = self.loss or defaults.get("loss", "bce")
        d.lr = float(self.lr if self.lr is not None else defaults.get("lr", 2e-4))
        d.betas = tuple(float(b) for b in (self.betas if self.betas is not None else defaults.get("betas", (0.5, 0.999))))
        d.n_dis = int(self.n_dis if self.n_dis is not None else defaults.get("n_dis", 1))
        d.lr_decay = self.lr_decay if self.lr_decay is not None else (defaults.get("lr_decay") or "none")
        if d.ema == 0:
            d.ema = None
        return d


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int_at_least(value: object, name: str, low: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        v = None
    if isinstance(value, bool) or v is None or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    return v
