"""One training loop for every GAN variant: it owns the schedule, checkpoints, samples and logs.

The networks (``gans.networks``) know nothing about training; this module builds them from a
:class:`TrainConfig`, runs ``n_dis`` discriminator steps per generator step, optionally trains
Jung & Keuper's spectral discriminator beside the image discriminator and adds Durall et al.'s
spectral regulariser, keeps an EMA of the generator, and writes into ``out_dir``:

* ``checkpoint.pt`` every ``ckpt_every`` steps, atomically, with networks, optimisers,
  schedulers, step and every RNG state, so ``resume=True`` continues exactly where it stopped
  (on CPU bit-identically to an uninterrupted run);
* ``log.jsonl`` (losses, learning rate, step time, images/s), ``samples/step_XXXXXX.png``
  (a grid from fixed latents) and ``train_config.json`` (the full, resolved config).

Under torchrun the same call uses DistributedDataParallel; rank 0 logs and checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import operator
import signal
import threading
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gans import distributed, losses
from gans.checkpoint import (
    check_same_network,
    load_checkpoint,
    load_module_state,
    remove_stale_temps,
    save_checkpoint,
    write_atomically,
)
from gans.ema import standing_bn_statistics, standing_latents, update_ema
from gans.networks import (
    ARCH_DEFAULTS,
    build_discriminator,
    build_generator,
    check_arch,
    check_resolution,
    check_upsample_layers,
)
from gans.sampling import derive_seed, latents
from gans.sngan import check_shortcut
from gans.spectral import SpectralDiscriminator, real_mean_profile, spectral_regularization
from gans.upsamplers import check_upsampler

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CONFIG = "train_config.json"
SAMPLES = "samples"
GRID_SIZE = 64
# Datasets up to this size live on the GPU, so a batch is one index operation on the device.
MAX_DEVICE_DATA_BYTES = 2 * 2**30
# Learning-rate schedules by name: total steps -> (step -> factor of the base learning rate).
LR_SCHEDULES: dict[str, Any] = {
    "none": lambda total: (lambda step: 1.0),
    "linear": lambda total: (lambda step: max(0.0, 1.0 - step / total)),  # SNGAN: to zero at the end
}


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


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
        distributed.check_device(self.device)
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
        for name in ("spectral_d", "amp"):
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


def check_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Validate a uint8 (N, 3, R, R) training set; raise a ValueError naming what is wrong."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"Training images must be a uint8 tensor (N, 3, R, R), got {got}.")
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, resolution, resolution):
        raise ValueError(
            f"Training images must have shape (N, 3, {resolution}, {resolution}) for resolution {resolution}, "
            f"got {tuple(images.shape)}; load the data at the training resolution."
        )
    if images.shape[0] == 0:
        raise ValueError("The training set is empty; give a folder with at least one image.")
    return images


class EpochSampler:
    """Indices of a dataset in a fresh random order each epoch, drawn from its own generator."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def take(self, k: int) -> torch.Tensor:
        """The next ``k`` indices, continuing into new epochs as needed."""
        parts = []
        while k > 0:
            if self.pos == self.n:
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
            t = min(k, self.n - self.pos)
            parts.append(self.perm[self.pos : self.pos + t])
            self.pos += t
            k -= t
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        """Generator state, current permutation and position (tensors and ints only)."""
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos, "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state (a dataset of another size starts a fresh epoch instead)."""
        self.generator.set_state(state["generator"])
        if int(state["n"]) == self.n:
            self.perm, self.pos = state["perm"].clone(), int(state["pos"])
        else:
            self.pos = self.n


class _StopRequest:
    """The first Ctrl-C (or SIGTERM) asks to stop at the next step boundary; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.hard = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.hard = True
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _unwrap(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, DistributedDataParallel) else m


class Trainer:
    """Networks, optimisers and state of one run; :meth:`run` trains, :meth:`train_step` does one step."""

    def __init__(self, cfg: TrainConfig, images: torch.Tensor, out_dir: str | Path, *,
                 resume: bool = False, progress: bool = False):
        self.cfg = cfg.validate().resolved()
        self.images_cpu = check_images(images, self.cfg.resolution)
        self.out = Path(out_dir)
        self.ckpt_path = self.out / CHECKPOINT
        self.progress = progress
        self.step = 0
        self.resumed_from: int | None = None
        self.info, self.device, self._created_pg = distributed.init_distributed(self.cfg.device)
        try:
            self._setup(resume)
        except BaseException:
            distributed.shutdown(self._created_pg)
            raise

    # ----------------------------------------------------------------------------- setup
    def _setup(self, resume: bool) -> None:
        cfg, info, dev = self.cfg, self.info, self.device
        if cfg.batch_size % info.world_size:
            raise ValueError(
                f"batch_size {cfg.batch_size} is the global batch and must divide by the {info.world_size} ranks; "
                "choose a multiple of the number of processes."
            )
        self.local_batch = cfg.batch_size // info.world_size
        self.amp = cfg.amp and dev.type == "cuda"
        torch.manual_seed(cfg.seed)  # network initialisation; identical on every rank
        G = build_generator(cfg.arch, cfg.resolution, cfg.upsampler, cfg.upsample_layers,
                            z_dim=cfg.z_dim, width=cfg.width, shortcut=cfg.shortcut)
        D = build_discriminator(cfg.arch, cfg.resolution, width=cfg.width)
        SD = SpectralDiscriminator(cfg.resolution) if cfg.spectral_d else None
        self.z_dim = G.z_dim
        G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema else None

        self.opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_SD = torch.optim.Adam(SD.parameters(), lr=cfg.lr, betas=cfg.betas) if SD is not None else None
        decay = LR_SCHEDULES[cfg.lr_decay](cfg.steps)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, decay)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, decay)
        # The spectral D follows the same schedule as G and D (it must not keep learning at
        # the base rate while they decay to zero).
        self.sched_SD = torch.optim.lr_scheduler.LambdaLR(self.opt_SD, decay) if SD is not None else None
        # Fixed latents for the EMA generator's standing BatchNorm statistics (gans.ema).
        self.standing_z = standing_latents(cfg.seed, G.z_dim, self.local_batch) if G_ema is not None else None

        self.sampler = EpochSampler(self.images_cpu.shape[0], derive_seed(cfg.seed, "data"))
        # Each rank draws its own latents; the data permutation is shared and sliced per rank.
        self.z_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "z", info.rank))

        if resume and self.ckpt_path.is_file():
            self._load(G, D, SD, G_ema)

        # channels_last: oneDNN (CPU) and cuDNN (tensor cores) convolve NHWC without reordering
        # every call; ~20 % faster SNGAN-32 steps on one CPU thread, and the usual choice on GPUs.
        G, D = G.to(dev, memory_format=torch.channels_last), D.to(dev, memory_format=torch.channels_last)
        SD = SD.to(dev) if SD is not None else None
        G_ema = G_ema.to(dev, memory_format=torch.channels_last) if G_ema is not None else None
        for opt in (self.opt_G, self.opt_D, self.opt_SD):
            if opt is not None:
                _optimizer_to(opt, dev)
        if info.enabled:
            if dev.type == "cuda":
                # Global batch statistics on GPUs; SyncBatchNorm has no CPU kernel, so on CPU each
                # rank normalises its own shard and rank 0's running statistics are broadcast.
                G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
                D = nn.SyncBatchNorm.convert_sync_batchnorm(D)
            ids = [dev.index] if dev.type == "cuda" else None
            G = DistributedDataParallel(G, device_ids=ids)
            D = DistributedDataParallel(D, device_ids=ids)
            SD = DistributedDataParallel(SD, device_ids=ids) if SD is not None else None
        self.G, self.D, self.SD, self.G_ema = G, D, SD, G_ema

        on_device = dev.type == "cuda" and self.images_cpu.nbytes <= MAX_DEVICE_DATA_BYTES
        self.images = self.images_cpu.to(dev) if on_device else self.images_cpu
        self.real_profile = (
            real_mean_profile(self.images).to(dev) if cfg.spectral_reg > 0 else None
        )
        self.grid_z = latents(derive_seed(cfg.seed, "grid"), range(GRID_SIZE), self.z_dim)

    def _load(self, G: nn.Module, D: nn.Module, SD: nn.Module | None, G_ema: nn.Module | None) -> None:
        state = load_checkpoint(self.ckpt_path)
        saved = state["config"]
        check_same_network(saved, self.cfg.to_dict(), self.ckpt_path)
        kw = {"path": self.ckpt_path, "saved_arch": saved["arch"], "wanted_arch": self.cfg.arch}
        load_module_state(G, state["G"], role="generator", **kw)
        load_module_state(D, state["D"], role="discriminator", **kw)
        if SD is not None and state.get("SD") is not None:
            load_module_state(SD, state["SD"], role="spectral discriminator", **kw)
            self.opt_SD.load_state_dict(state["opt_SD"])
        if G_ema is not None:
            G_ema.load_state_dict(state["G_ema"] if state.get("G_ema") is not None else G.state_dict())
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        if self.sched_SD is not None and state.get("sched_SD") is not None:
            self.sched_SD.load_state_dict(state["sched_SD"])
        self.sampler.load_state_dict(state["sampler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        z_states = rng["z"]
        if len(z_states) == self.info.world_size:
            self.z_gen.set_state(z_states[self.info.rank])
        else:  # another number of ranks: fresh, but still seeded, latent streams
            self.z_gen.manual_seed(derive_seed(self.cfg.seed, "z", self.info.rank, int(state["step"])))
        self.step = int(state["step"])
        self.resumed_from = self.step

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The full training state: tensors and primitives only (loads with weights_only=True)."""
        z_states = distributed.gather_objects(self.z_gen.get_state(), self.info)
        state = {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "world_size": self.info.world_size,
            "G": _unwrap(self.G).state_dict(),
            "D": _unwrap(self.D).state_dict(),
            "SD": _unwrap(self.SD).state_dict() if self.SD is not None else None,
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "opt_SD": self.opt_SD.state_dict() if self.opt_SD is not None else None,
            "sched_G": self.sched_G.state_dict(),
            "sched_D": self.sched_D.state_dict(),
            "sched_SD": self.sched_SD.state_dict() if self.sched_SD is not None else None,
            "sampler": self.sampler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "z": z_states,
            },
        }
        return state

    def network_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Weights and buffers of every network (what two runs must agree on to be the same)."""
        nets = {"G": _unwrap(self.G), "D": _unwrap(self.D), "SD": _unwrap(self.SD) if self.SD else None,
                "G_ema": self.G_ema}
        return {k: {n: t.detach().cpu().clone() for n, t in m.state_dict().items()}
                for k, m in nets.items() if m is not None}

    def _sync_buffers(self) -> None:
        # Buffers are rank 0's by DDP's convention (it broadcasts them at each forward); the
        # EMA's standing statistics are the same on every rank, the broadcast only removes
        # kernel-level float noise between GPUs.
        for m in (self.G, self.D, self.SD, self.G_ema):
            if m is not None:
                distributed.broadcast_buffers(_unwrap(m), self.info)

    def save(self) -> Path:
        """Write checkpoint.pt atomically (rank 0), with every rank's state gathered first."""
        self.refresh_ema_statistics()
        self._sync_buffers()
        state = self.state_dict()
        if self.info.is_main:
            save_checkpoint(state, self.ckpt_path)
        distributed.barrier(self.info)
        self._last_saved = self.step
        return self.ckpt_path

    # ----------------------------------------------------------------------------- one step
    def next_indices(self) -> torch.Tensor:
        """Dataset indices of this rank's next real batch (its slice of the shared global batch)."""
        idx = self.sampler.take(self.cfg.batch_size)
        r = self.info.rank * self.local_batch
        return idx[r : r + self.local_batch]

    def _real_batch(self) -> torch.Tensor:
        idx = self.next_indices()
        x = self.images[idx.to(self.images.device)].to(self.device, non_blocking=True)
        return x.float().div_(127.5).sub_(1.0)

    def _z(self) -> torch.Tensor:
        return torch.randn(self.local_batch, self.z_dim, generator=self.z_gen).to(self.device, non_blocking=True)

    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self) -> dict[str, torch.Tensor]:
        """``n_dis`` discriminator steps and one generator step; returns the (detached) losses."""
        cfg = self.cfg
        G, D, SD = self.G, self.D, self.SD
        out: dict[str, torch.Tensor] = {}
        for _ in range(cfg.n_dis):
            real = self._real_batch()
            z = self._z()
            with torch.no_grad(), self._autocast():
                fake = G(z)
            with self._autocast():
                # Separate real and fake batches (BatchNorm in DCGAN's D must not mix them).
                loss_d = losses.d_loss(cfg.loss, D(real), D(fake))
            self.opt_D.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_D.step()
            out["loss_d"] = loss_d.detach()
            if SD is not None:
                loss_sd = losses.d_loss(cfg.loss, SD(real), SD(fake))
                self.opt_SD.zero_grad(set_to_none=True)
                loss_sd.backward()
                self.opt_SD.step()
                out["loss_sd"] = loss_sd.detach()

        z = self._z()
        critics = [m for m in (D, SD) if m is not None]
        for m in critics:  # no weight gradients for the critics in the generator step
            m.requires_grad_(False)
        try:
            with self._no_sync(critics), self._autocast():
                fake = G(z)
                loss_adv = losses.g_loss(cfg.loss, D(fake))
                out["loss_g_image"] = loss_adv.detach()
                if SD is not None:
                    loss_gs = losses.g_loss(cfg.loss, SD(fake))
                    out["loss_g_spectral"] = loss_gs.detach()
                    w = cfg.spectral_d_weight
                    loss_adv = (1.0 - w) * loss_adv + w * loss_gs
                loss_g = loss_adv
                if self.real_profile is not None:
                    loss_reg = spectral_regularization(fake, self.real_profile)
                    out["loss_spectral_reg"] = loss_reg.detach()
                    loss_g = loss_g + cfg.spectral_reg * loss_reg
            self.opt_G.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_G.step()
        finally:
            for m in critics:
                m.requires_grad_(True)
        out["loss_g"] = loss_g.detach()
        self.sched_G.step()
        self.sched_D.step()
        if self.sched_SD is not None:
            self.sched_SD.step()
        if self.G_ema is not None:
            self._update_ema()
        return out

    def _no_sync(self, modules: list[nn.Module]) -> ExitStack:
        stack = ExitStack()
        for m in modules:
            if isinstance(m, DistributedDataParallel):
                stack.enter_context(m.no_sync())
        return stack

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Ramp the decay up from 0.1 so early EMA weights are not dominated by the random init.
        beta = min(self.cfg.ema, (1.0 + self.step) / (10.0 + self.step))
        # Weights only: the EMA network's BatchNorm statistics are its own (refresh_ema_statistics).
        update_ema(self.G_ema, _unwrap(self.G), beta)

    def refresh_ema_statistics(self) -> None:
        """Re-estimate the EMA generator's BatchNorm statistics on its current weights (gans.ema)."""
        if self.G_ema is not None:
            standing_bn_statistics(self.G_ema, self.standing_z)

    # ----------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def save_samples(self) -> Path:
        """Write an 8x8 grid of the generator's (EMA's) images from fixed latents to samples/."""
        from torchvision.utils import save_image

        self.refresh_ema_statistics()
        G = self.G_ema if self.G_ema is not None else _unwrap(self.G)
        was_training = G.training
        G.eval()
        try:
            x = G(self.grid_z.to(self.device)).float().cpu()
        finally:
            G.train(was_training)
        path = self.out / SAMPLES / f"step_{self.step:06d}.png"
        write_atomically(path, lambda f: save_image(x, f, nrow=8, normalize=True, value_range=(-1, 1),
                                                    format="png"), fsync=False)
        return path

    def _write_config(self) -> None:
        text = json.dumps(self.cfg.to_dict(), indent=2) + "\n"
        write_atomically(self.out / CONFIG, lambda f: f.write(text.encode()))

    def _trim_log(self) -> None:
        # Lines written after the checkpoint by a run that was then killed would be repeated.
        log = self.out / LOG
        if not log.is_file():
            return
        keep = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a half-written last line from a killed run
        text = "".join(k + "\n" for k in keep)
        write_atomically(log, lambda f: f.write(text.encode()))

    # ----------------------------------------------------------------------------- the loop
    def run(self) -> Path:
        """Train until ``cfg.steps``; return the checkpoint path. Ctrl-C saves, then re-raises."""
        try:
            return self._run()
        finally:
            distributed.shutdown(self._created_pg)

    def _run(self) -> Path:
        cfg, info = self.cfg, self.info
        main = info.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.ckpt_path)
            self._write_config()
            if self.resumed_from is not None:
                self._trim_log()
        distributed.barrier(info)
        self._last_saved = self.step if self.resumed_from is not None else -1
        if self.step >= cfg.steps:
            if self._last_saved != self.step:
                self.save()
            return self.ckpt_path
        bar = _Progress(cfg.steps, self.step) if self.progress and main else None
        log = (self.out / LOG).open("a", encoding="utf-8") if main else None
        t_last, step_last = time.perf_counter(), self.step
        stop = _StopRequest()
        try:
            with stop:
                while self.step < cfg.steps:
                    out = self.train_step()
                    self.step += 1
                    names = list(out)
                    values = torch.stack([v.float() for v in out.values()])
                    bad = ~torch.isfinite(values)
                    flags = torch.stack([bad.any(), torch.tensor(stop.requested, device=values.device)]).float()
                    flags = distributed.any_rank(flags, info).tolist()
                    if flags[0]:
                        raise self._diverged(names, values)
                    if log is not None and ((cfg.log_every and self.step % cfg.log_every == 0) or self.step == cfg.steps):
                        now = time.perf_counter()
                        dt = (now - t_last) / max(1, self.step - step_last)
                        t_last, step_last = now, self.step
                        rec = {"step": self.step, **dict(zip(names, values.tolist(), strict=True)),
                               "lr_g": self.opt_G.param_groups[0]["lr"], "lr_d": self.opt_D.param_groups[0]["lr"],
                               "step_time": dt, "images_per_s": cfg.batch_size * cfg.n_dis / dt,
                               "time": time.time()}
                        log.write(json.dumps(rec) + "\n")
                        log.flush()
                        if bar is not None:
                            bar.set_losses(rec)
                    if main and cfg.sample_every and self.step % cfg.sample_every == 0:
                        self.save_samples()
                    if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                        self.save()
                    if bar is not None:
                        bar.advance(self.step)
                    if flags[1]:
                        if self._last_saved != self.step:
                            self.save()
                        raise KeyboardInterrupt
            if self._last_saved != self.step:
                self.save()
            self._sync_buffers()
            if main and (not cfg.sample_every or self.step % cfg.sample_every):
                self.save_samples()
        except KeyboardInterrupt:
            # A Ctrl-C that did not come through the step-boundary handler (another thread, a
            # second press is "stop now"): save what we have unless ranks might be mid-collective.
            if not stop.hard and not info.enabled and self._last_saved != self.step:
                self.save()
            raise
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        return self.ckpt_path

    def _diverged(self, names: list[str], values: torch.Tensor) -> TrainingDiverged:
        vals = values.tolist()
        bad = [f"{n}={v}" for n, v in zip(names, vals, strict=True) if not math.isfinite(v)]
        what = ", ".join(bad) if bad else "a loss on another rank"
        kept = (f"the last good checkpoint {self.ckpt_path} (step {self._last_saved}) is kept"
                if self._last_saved >= 0 else "no checkpoint had been written yet")
        return TrainingDiverged(
            f"Training diverged at step {self.step}: {what}; {kept} — lower the learning rate or "
            "turn off AMP and resume."
        )


def _optimizer_to(opt: torch.optim.Optimizer, device: torch.device) -> None:
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                st[k] = v.to(device)


class _Progress:
    """A rich progress bar over training steps, showing the latest losses."""

    def __init__(self, total: int, done: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.p = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), TextColumn("{task.fields[losses]}"))
        self.p.start()
        self.task = self.p.add_task("training", total=total, completed=done, losses="")

    def set_losses(self, rec: dict[str, Any]) -> None:
        """Show the losses and speed of the latest log record."""
        text = " ".join(f"{k[5:]}={v:.3f}" for k, v in rec.items() if k.startswith("loss_"))
        self.p.update(self.task, losses=f"{text} {rec['images_per_s']:.0f} img/s")

    def advance(self, step: int) -> None:
        """Move the bar to ``step``."""
        self.p.update(self.task, completed=step)

    def close(self) -> None:
        """Stop drawing."""
        self.p.stop()


def train(cfg: TrainConfig, images: torch.Tensor, out_dir: str | Path, resume: bool = False,
          progress: bool = False) -> Path:
    """Train a GAN on uint8 images (N, 3, R, R) into ``out_dir``; return the checkpoint path."""
    return Trainer(cfg, images, out_dir, resume=resume, progress=progress).run()
