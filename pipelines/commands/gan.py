"""``forgelab train`` and ``forgelab generate``: train a GAN on an image folder, write fake sets.

Options are layered, lowest first: the config a resumed run was started with
(``RUN_DIR/train_config.json``), then ``--config FILE.toml``, then the options given on the
command line. The TOML file holds the keys of :class:`gans.training.TrainConfig` plus ``data``
and ``limit`` (flat, or inside a ``[train]`` table).

Lazy imports: the modules that do the work are imported inside each command, for start-up
time (every ``forgelab`` call, ``--help`` included, loads all command modules).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from gans import distributed
from gans.checkpoint import load_checkpoint, upgrade_config
from gans.networks import ARCHITECTURES
from gans.sngan import SHORTCUTS
from gans.training import CHECKPOINT, CONFIG, TrainConfig, TrainingDiverged, train
from gans.upsamplers import UPSAMPLERS
from pipelines.commands.defaults import one_of, train_default, train_flag_default
from pipelines.errors import fail, friendly
from pipelines.runfolder import RunFolder, locked
from plumbing.locks import folder_contents

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib

# Keys a --config file may hold besides the TrainConfig fields.
DATA_KEYS = ("data", "limit", "preprocess")


def valid_config_keys() -> list[str]:
    """Every key a ``--config`` TOML file may contain."""
    return [*TrainConfig.keys(), *DATA_KEYS]


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a training TOML file; unknown keys raise a ValueError listing the valid ones."""
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist; check the path given to --config.")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Config file {path} is not valid TOML ({e}); fix the syntax.") from None
    if isinstance(doc.get("train"), dict):
        doc = {**{k: v for k, v in doc.items() if k != "train"}, **doc["train"]}
    unknown = sorted(set(doc) - set(valid_config_keys()))
    if unknown:
        raise ValueError(
            f"Unknown key(s) {', '.join(map(repr, unknown))} in {path}; valid keys: {', '.join(valid_config_keys())}."
        )
    return doc


def _saved_settings(out: Path) -> dict[str, Any]:
    """The config and data spec of an existing run folder (for --resume without repeating options)."""
    settings: dict[str, Any] = {}
    cfg_file = out / CONFIG
    if cfg_file.is_file():
        try:
            # A run started before a rename (upsampler "filtered") resumes under today's names.
            settings.update(upgrade_config(json.loads(cfg_file.read_text(encoding="utf-8"))))
        except json.JSONDecodeError:
            raise ValueError(f"{cfg_file} is damaged; pass every option again or choose another --out.") from None
    manifest = RunFolder(out).manifest() if (out / "manifest.json").is_file() else {}
    for k in DATA_KEYS:
        if manifest.get("config", {}).get(k) is not None:
            settings[k] = manifest["config"][k]
    return settings


def train_command(
    arch: str | None = typer.Option(None, "--arch", help=f"Architecture: {one_of(ARCHITECTURES)}.",
                                    show_default=train_default("arch")),
    upsampler: str | None = typer.Option(
        None, "--upsampler", help=f"Upsampler: {one_of(UPSAMPLERS)}.",
        show_default=train_default("upsampler")),
    shortcut: str | None = typer.Option(
        None, "--shortcut", help=f"SNGAN's residual shortcut: {one_of(SHORTCUTS)} (the paper's is 1x1).",
        show_default=train_default("shortcut")),
    upsample_layers: str | None = typer.Option(
        None, "--upsample-layers", help="Use the upsampler in 'all' upsampling layers or the 'last' only.",
        show_default=train_default("upsample_layers")),
    spectral_d: bool | None = typer.Option(
        None, "--spectral-d/--no-spectral-d", help="Train a spectral discriminator beside D (Jung & Keuper).",
        show_default=train_flag_default("spectral_d", "spectral-d")),
    alias_free: bool | None = typer.Option(
        None, "--alias-free/--no-alias-free",
        help="Evaluate every ReLU of G at twice the rate with sinc low-passes (StyleGAN3's filtered ReLU).",
        show_default=train_flag_default("alias_free", "alias-free")),
    spectral_d_weight: float | None = typer.Option(
        None, "--spectral-d-weight", help="Weight of the spectral discriminator in G's loss, in [0, 1].",
        show_default=train_default("spectral_d_weight")),
    spectral_reg: float | None = typer.Option(
        None, "--spectral-reg", help="Weight W of Durall et al.'s spectral regulariser (0 = off).",
        show_default=train_default("spectral_reg")),
    data: str | None = typer.Option(
        None, "--data", help="Image folder, or 'embedded' for the bundled photos.",
        show_default="$FORGELAB_DATA"),
    limit: int | None = typer.Option(None, "--limit", help="Use at most this many images.", show_default="all"),
    preprocess: str | None = typer.Option(
        None, "--preprocess", help="How real images become R x R: resize or crop (native pixels).",
        show_default="resize"),
    resolution: int | None = typer.Option(None, "--resolution", help="Image size: 32, 64 or 128.",
                                         show_default=train_default("resolution")),
    steps: int | None = typer.Option(None, "--steps", help="Number of generator steps.", show_default=train_default("steps")),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Global batch size.",
                                         show_default=train_default("batch_size")),
    width: int | None = typer.Option(None, "--width", help="Channel width of G and D.",
                                    show_default=train_default("width", none="the arch's")),
    ema: float | None = typer.Option(None, "--ema", help="EMA decay of G's weights, e.g. 0.999 (0 = off).",
                                      show_default=train_default("ema", none="off")),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on CUDA.",
                                      show_default=train_flag_default("amp", "amp")),
    ckpt_every: int | None = typer.Option(None, "--ckpt-every", help="Checkpoint every N steps.",
                                             show_default=train_default("ckpt_every")),
    sample_every: int | None = typer.Option(None, "--sample-every", help="Sample grid every N steps.",
                                               show_default=train_default("sample_every")),
    seed: int | None = typer.Option(None, "--seed", help="Random seed.", show_default=train_default("seed")),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda.",
                                      show_default=train_default("device")),
    config: Path | None = typer.Option(None, "--config", help="TOML file with defaults for these options.",
                                        show_default="none"),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in --out."),
) -> None:
    """Train a GAN with a chosen upsampler; writes checkpoint.pt, log.jsonl, samples/ into --out."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pass one of them.")
    settings: dict[str, Any] = _saved_settings(out) if resume else {}
    if config is not None:
        settings.update(read_config_file(config))
    given = {
        "arch": arch, "upsampler": upsampler, "shortcut": shortcut, "upsample_layers": upsample_layers,
        "spectral_d": spectral_d, "alias_free": alias_free,
        "spectral_d_weight": spectral_d_weight, "spectral_reg": spectral_reg, "resolution": resolution,
        "steps": steps, "batch_size": batch_size, "width": width, "ema": ema, "amp": amp,
        "ckpt_every": ckpt_every, "sample_every": sample_every, "seed": seed, "device": device,
        "data": data, "limit": limit, "preprocess": preprocess,
    }
    settings.update({k: v for k, v in given.items() if v is not None})
    data_spec = settings.pop("data", None)
    data_limit = settings.pop("limit", None)
    data_preprocess = settings.pop("preprocess", None) or "resize"
    cfg = TrainConfig.from_dict(settings)

    run = RunFolder(out)
    run.refuse_unfinished(resume, overwrite)
    if run.is_finished() and not overwrite and not resume:
        raise FileExistsError(
            f"{out} already holds a finished run; pass --overwrite to replace it, --resume to extend it, "
            "or choose another --out."
        )
    if (resume and out.is_dir() and not run.manifest_path.exists() and not (out / CHECKPOINT).exists()
            and folder_contents(out)):
        # --resume may start a fresh run, but not inside a folder of files forgelab did not write.
        raise FileExistsError(f"{out} is not empty and holds no forgelab run to resume; choose another --out.")
    from pipelines.data.images import load_data

    info, dev, created = distributed.init_distributed(cfg.device)
    try:
        imageset = load_data(data_spec, cfg.resolution, limit=data_limit, seed=cfg.seed, progress=info.is_main,
                             preprocess=data_preprocess)
        if info.is_main:
            run.start("train", {**cfg.resolved().to_dict(), "data": str(data_spec) if data_spec else None,
                                "limit": data_limit, "preprocess": data_preprocess},
                      seed=cfg.seed, device=str(dev), data=imageset.source, overwrite=overwrite, resume=resume)
            run.update(n_images=int(imageset.images.shape[0]), data_fingerprint=imageset.fingerprint,
                       world_size=info.world_size)
        distributed.barrier(info)
        try:
            ckpt = train(cfg, imageset.images, out, resume=resume, progress=info.is_main)
        except TrainingDiverged as e:
            if info.is_main:
                run.update(status="diverged", error=str(e))
            fail(str(e))
        except KeyboardInterrupt:
            if info.is_main:
                run.update(status="interrupted")
            raise
        if info.is_main:
            run.finish(checkpoint=str(ckpt.relative_to(out)) if ckpt.is_relative_to(out) else str(ckpt))
            step = load_checkpoint(ckpt)["step"]
            typer.echo(f"Trained {cfg.arch}/{cfg.upsampler} to step {step}; checkpoint: {ckpt}")
    finally:
        distributed.shutdown(created)


def generate_command(
    source: Path = typer.Argument(..., help="A run folder (its checkpoint.pt) or a checkpoint file."),
    n: int = typer.Option(..., "--n", "--num-images", help="Number of images (--num-images under torchrun)."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNGs and manifest.json."),
    seed: int = typer.Option(0, "--seed", help="Seed of the latents (same seed, same images)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Images per batch handed to the PNG writers."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished or unfinished fake set in --out."),
    resume: bool = typer.Option(False, "--resume", help="Complete an interrupted fake set in --out (same options)."),
    deterministic: bool = typer.Option(
        False, "--deterministic",
        help="Deterministic cuDNN/cuBLAS kernels and no TF32, so a GPU repeats its bytes (slower; the CPU always does)."),
) -> None:
    """Write N lossless PNGs from a trained generator (EMA weights when present) plus manifest.json."""
    from gans.sampling import load_generator, write_fake_set

    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pass one of them.")
    config = {"source": str(source), "n": n, "seed": seed, "batch_size": batch_size,
              "deterministic": deterministic}
    run = RunFolder(out)
    run.refuse_unfinished(resume, overwrite)
    if resume and run.is_unfinished():
        old = {k: run.manifest().get("config", {}).get(k) for k in ("source", "n", "seed")}
        if old != {k: config[k] for k in old}:
            given = ", ".join(f"{k}={v}" for k, v in old.items())
            raise ValueError(f"{out} holds an unfinished fake set of other options ({given}); "
                             "resume it with those, or pass --overwrite to start over.")
    if n < 1:
        raise ValueError(f"--n must be a positive number of images, got {n}.")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size}.")
    distributed.check_device(device)
    _, meta = load_generator(source)  # fail on a bad checkpoint before touching --out
    info, dev, created = distributed.init_distributed(device)
    try:
        if info.is_main:
            # Resuming rewrites every image: they are a function of (checkpoint, seed, index), so the
            # ones written before the interruption come out byte for byte the same.
            run.start("generate", config, seed=seed, device=str(dev), data=meta["checkpoint"], overwrite=overwrite,
                      resume=resume and run.is_unfinished())
        distributed.barrier(info)
        write_fake_set(source, n, out, seed=seed, batch_size=batch_size, device=dev, progress=info.is_main,
                       deterministic=deterministic)
        if info.is_main:
            run.finish()
            typer.echo(f"Wrote {n} images of {meta['arch']}/{meta['upsampler']} to {out}")
    finally:
        distributed.shutdown(created)


def register(app: typer.Typer) -> None:
    """Add the ``train`` and ``generate`` commands to the forgelab application."""
    app.command("train")(friendly(locked("train")(train_command)))
    app.command("generate")(friendly(locked("generate")(generate_command)))
