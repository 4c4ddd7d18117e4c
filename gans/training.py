"""One training loop for every GAN variant: it owns the schedule, checkpoints, samples and logs.

The networks (``gans.networks``) know nothing about training; this module builds them from a
:class:`TrainConfig` (``gans.train_config``), runs ``n_dis`` discriminator steps per generator
step, optionally trains Jung & Keuper's spectral discriminator beside the image discriminator
and adds Durall et al.'s spectral regulariser, keeps an EMA of the generator, and writes into
``out_dir``:

* ``checkpoint.pt`` every ``ckpt_every`` steps, atomically, with networks, optimisers,
  schedulers, step and every RNG state, so ``resume=True`` continues exactly where it stopped
  (on CPU bit-identically to an uninterrupted run);
* ``log.jsonl`` (losses, D's mean outputs on real and fake, learning rate, step time, images/s,
  and at sample steps the samples' ``spectral_l1``), ``samples/step_XXXXXX.png`` (a grid from
  fixed latents), TensorBoard event files (:mod:`gans.monitor`) and ``train_config.json`` (the
  full, resolved config).

Under torchrun the same call uses DistributedDataParallel; rank 0 logs and checkpoints. As in
stylegan2-ada's ``training_loop``, :meth:`Trainer.run` reads as the schedule; signals, the log
file, the progress bar and DDP wrapping sit in :mod:`gans.run_edges`.
"""

from __future__ import annotations

import copy
import math
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
from gans.monitor import Monitor
from gans.networks import build_discriminator, build_generator
from gans.run_edges import StopRequest, TrainLog, no_sync, optimizer_to, trim_log, unwrap, wrap_ddp
from gans.sampling import derive_seed, latents
from gans.spectral import SpectralDiscriminator, real_mean_profile, spectral_regularization
from gans.train_config import LR_SCHEDULES, TrainConfig
from plumbing.devices import to_device
from plumbing.files import write_json

__all__ = [
    "CHECKPOINT", "CONFIG", "LOG", "LR_SCHEDULES", "SAMPLES", "EpochSampler", "TrainConfig", "Trainer",
    "TrainingDiverged", "check_training_images", "train",
]

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CONFIG = "train_config.json"
SAMPLES = "samples"
GRID_SIZE = 64
# Datasets up to this size live on the GPU, so a batch is one index operation on the device.
MAX_DEVICE_DATA_BYTES = 2 * 2**30


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


def check_training_images(images: torch.Tensor, resolution: int) -> torch.Tensor:
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


class Trainer:
    """Networks, optimisers and state of one run; :meth:`run` trains, :meth:`train_step` does one step."""

    def __init__(self, cfg: TrainConfig, images: torch.Tensor, out_dir: str | Path, *,
                 resume: bool = False, progress: bool = False):
        self.cfg = cfg.validate().resolved()
        self.images_cpu = check_training_images(images, self.cfg.resolution)
        self.out = Path(out_dir)
        self.ckpt_path = self.out / CHECKPOINT
        self.progress = progress
        self.step = 0
        self.resumed_from: int | None = None
        self._nonfinite: torch.Tensor | None = None  # any non-finite loss since the flags were last read
        self.monitor: Monitor | None = None  # TensorBoard (gans.monitor), while run() runs
        self.spectral: dict[str, float] = {}  # the last sample grid's spectral distance, for the next log record
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
                            z_dim=cfg.z_dim, width=cfg.width, shortcut=cfg.shortcut, alias_free=cfg.alias_free)
        D = build_discriminator(cfg.arch, cfg.resolution, width=cfg.width)
        SD = SpectralDiscriminator(cfg.resolution) if cfg.spectral_d else None
        self.z_dim = G.z_dim
        G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema else None
        # Fixed latents for the EMA generator's standing BatchNorm statistics (gans.ema).
        self.standing_z = standing_latents(cfg.seed, G.z_dim, self.local_batch) if G_ema is not None else None

        self._make_optimizers(G, D, SD)

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
            optimizer_to(opt, dev)
        self.G, self.D, self.SD = wrap_ddp([G, D, SD], dev, info)
        self.G_ema = G_ema

        on_device = dev.type == "cuda" and self.images_cpu.nbytes <= MAX_DEVICE_DATA_BYTES
        self.images = self.images_cpu.to(dev) if on_device else self.images_cpu
        self.real_profile = (
            real_mean_profile(self.images).to(dev) if cfg.spectral_reg > 0 else None
        )
        self.grid_z = latents(derive_seed(cfg.seed, "grid"), range(GRID_SIZE), self.z_dim)

    def _make_optimizers(self, G: nn.Module, D: nn.Module, SD: nn.Module | None) -> None:
        """Adam for G, D and the spectral discriminator, all three on the same learning-rate schedule."""
        cfg = self.cfg
        self.opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_SD = torch.optim.Adam(SD.parameters(), lr=cfg.lr, betas=cfg.betas) if SD is not None else None
        decay = LR_SCHEDULES[cfg.lr_decay](cfg.steps)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, decay)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, decay)
        # The spectral D follows the same schedule as G and D (it must not keep learning at
        # the base rate while they decay to zero).
        self.sched_SD = torch.optim.lr_scheduler.LambdaLR(self.opt_SD, decay) if SD is not None else None

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
            "G": unwrap(self.G).state_dict(),
            "D": unwrap(self.D).state_dict(),
            "SD": unwrap(self.SD).state_dict() if self.SD is not None else None,
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

    def _sync_buffers(self) -> None:
        # Buffers are rank 0's by DDP's convention (it broadcasts them at each forward); the
        # EMA's standing statistics are the same on every rank, the broadcast only removes
        # kernel-level float noise between GPUs.
        for m in (self.G, self.D, self.SD, self.G_ema):
            if m is not None:
                distributed.broadcast_buffers(unwrap(m), self.info)

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
        # Pinned, queued copies (plumbing.devices.to_device): no host-device wait per batch.
        x = to_device(self.images[to_device(idx, self.images.device)], self.device)
        return x.float().div_(127.5).sub_(1.0)

    def _z(self) -> torch.Tensor:
        return to_device(torch.randn(self.local_batch, self.z_dim, generator=self.z_gen), self.device)

    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
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
                d_real, d_fake = D(real), D(fake)
                loss_d = losses.d_loss(cfg.loss, d_real, d_fake)
            self.opt_D.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_D.step()
            out["loss_d"] = loss_d.detach()
            out["d_real"], out["d_fake"] = d_real.detach().float().mean(), d_fake.detach().float().mean()
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
            with no_sync(critics), self._autocast():
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

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Ramp the decay up from 0.1 so early EMA weights are not dominated by the random init.
        beta = min(self.cfg.ema, (1.0 + self.step) / (10.0 + self.step))
        # Weights only: the EMA network's BatchNorm statistics are its own (refresh_ema_statistics).
        update_ema(self.G_ema, unwrap(self.G), beta)

    def refresh_ema_statistics(self) -> None:
        """Re-estimate the EMA generator's BatchNorm statistics on its current weights (gans.ema)."""
        if self.G_ema is not None:
            standing_bn_statistics(self.G_ema, self.standing_z)

    # ----------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def save_samples(self) -> Path:
        """Write an 8x8 grid of the generator's (EMA's) images from fixed latents to samples/."""
        # Lazy: gans needs torchvision only here (start-up time).
        from torchvision.utils import save_image

        self.refresh_ema_statistics()
        G = self.G_ema if self.G_ema is not None else unwrap(self.G)
        was_training = G.training
        G.eval()
        try:
            x = G(self.grid_z.to(self.device)).float().cpu()
        finally:
            G.train(was_training)
        if self.monitor is not None:  # TensorBoard grid and spectrum (gans.monitor)
            self.spectral = {"spectral_l1": self.monitor.samples(self.step, x)}
        path = self.out / SAMPLES / f"step_{self.step:06d}.png"
        write_atomically(path, lambda f: save_image(x, f, nrow=8, normalize=True, value_range=(-1, 1),
                                                    format="png"), fsync=False)
        return path

    def _write_config(self) -> None:
        write_json(self.out / CONFIG, self.cfg.to_dict())

    # ----------------------------------------------------------------------------- the loop
    def run(self) -> Path:
        """Train until ``cfg.steps``; return the checkpoint path. Ctrl-C saves, then re-raises."""
        try:
            return self._run()
        finally:
            distributed.shutdown(self._created_pg)

    def _run(self) -> Path:
        cfg, main = self.cfg, self.info.is_main
        self._open_run_folder()
        if self.step >= cfg.steps:
            if self._last_saved != self.step:
                self.save()
            return self.ckpt_path
        stop = StopRequest()
        self.monitor = Monitor(self.out, self.images, enabled=main, step=self.step)
        log = TrainLog(self.out / LOG, enabled=main, progress=self.progress, steps=cfg.steps, step=self.step,
                       monitor=self.monitor)
        try:
            with stop, log, closing(self.monitor):
                while self.step < cfg.steps:
                    out = self.train_step()  # n_dis D (and spectral D) updates, one G update, EMA
                    self.step += 1
                    stop_now = self._check_step(out, stop)
                    sampled = main and self._due(cfg.sample_every)
                    if sampled:
                        self.save_samples()  # before the log record, which then holds the samples' spectral_l1
                    if self._due(cfg.log_every) or self.step == cfg.steps or sampled:
                        extra, self.spectral = self.spectral, {}
                        log.write(self.step, out, cfg.batch_size * cfg.n_dis, **extra,
                                  lr_g=self.opt_G.param_groups[0]["lr"], lr_d=self.opt_D.param_groups[0]["lr"])
                    if self._due(cfg.ckpt_every):
                        self.save()
                    log.advance(self.step)
                    if stop_now:
                        if self._last_saved != self.step:
                            self.save()
                        raise KeyboardInterrupt
                if self._last_saved != self.step:
                    self.save()
                self._sync_buffers()
                if main and not self._due(cfg.sample_every):
                    self.save_samples()
        except KeyboardInterrupt:
            # A Ctrl-C that did not come through the step-boundary handler (another thread, a
            # second press is "stop now"): save what we have unless ranks might be mid-collective.
            if not stop.hard and not self.info.enabled and self._last_saved != self.step:
                self.save()
            raise
        return self.ckpt_path

    def _due(self, every: int) -> bool:
        return bool(every) and self.step % every == 0

    def _open_run_folder(self) -> None:
        """Rank 0 creates the folder, clears a killed run's temp files, writes the config, trims the log."""
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.ckpt_path)
            self._write_config()
            if self.resumed_from is not None:
                trim_log(self.out / LOG, self.step)
        distributed.barrier(self.info)
        self._last_saved = self.step if self.resumed_from is not None else -1

    def _check_step(self, out: dict[str, torch.Tensor], stop: StopRequest) -> bool:
        """Raise TrainingDiverged if any rank has a non-finite loss; True if any rank was asked to stop.

        Reading the flags makes the host wait for the device. On CUDA they are read only on steps
        that log, sample, checkpoint or end the run (and, in one process, once a stop is asked
        for); in between a non-finite loss is remembered on the device, so nothing is ever
        written from diverged weights and the other steps never wait for the GPU.
        """
        values = torch.stack([v.float() for v in out.values()])
        bad = (~torch.isfinite(values)).any()
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        cfg = self.cfg
        due = self.step == cfg.steps or any(self._due(e) for e in (cfg.log_every, cfg.sample_every, cfg.ckpt_every))
        if self.device.type == "cuda" and not due and (self.info.enabled or not stop.requested):
            return False
        # new_full: a fill kernel, not a copy from host memory
        flags = torch.stack([self._nonfinite.float(), values.new_full((), float(stop.requested))])
        diverged, stop_now = distributed.any_rank(flags.float(), self.info).tolist()
        if diverged:
            raise self._diverged(list(out), values)
        return bool(stop_now)

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


def train(cfg: TrainConfig, images: torch.Tensor, out_dir: str | Path, resume: bool = False,
          progress: bool = False) -> Path:
    """Train a GAN on uint8 images (N, 3, R, R) into ``out_dir``; return the checkpoint path."""
    return Trainer(cfg, images, out_dir, resume=resume, progress=progress).run()
