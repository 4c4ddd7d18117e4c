"""Studies: one TOML file drives train -> generate -> spectra -> metrics -> transfer -> report.

A study folder holds one sub-folder per step kind (``generators/``, ``fakes/``, ``samples/``,
``spectra/``, ``quality/``, ``transfer/``) and ``steps.json``, which records each finished step
with a hash of everything it was computed from. A rerun skips the steps whose hash still
matches and whose files are all there, and redoes the others, so an interrupted study resumes
where it stopped and an edited config recomputes only what the edit touched.

This module reads top to bottom: :func:`run_study` loads the real images, opens the folder,
builds the study as a list of :class:`pipelines.steps.Step` (:func:`build_steps`) and hands
them to an executor, then writes the report. The config schema lives in
``pipelines.study_config``, the bookkeeping in ``pipelines.steps``, the array and image files
in ``pipelines.arrays``. Each step's ``run`` is a module-level function bound to its
arguments, so it needs nothing from the driver and can run in another process. Training and
the report are called through their modules (``training.train``, ``report.write_report``) so
that tests can replace them.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from detectors.diversity import diversity
from detectors.fidelity import spectral_fidelity
from gans import training
from gans.sampling import generate_tensor, load_generator, write_fake_set
from gans.training import TrainConfig
from pipelines import report
from pipelines.arrays import load_fakes, mean_spectra, save_array, save_arrays, write_grid
from pipelines.data import ImageSet, load_data, resolve_data, split_indices
from pipelines.executors import check_executor, require_ray
from pipelines.executors import run_steps as run_with
from pipelines.runfolder import RunFolder
from pipelines.steps import Step, StepLog
from pipelines.study_config import (
    TRAIN_KEYS_NOT_HASHED,
    GeneratorSpec,
    StudyConfig,
    load_config,
    train_config,
)
from pipelines.transfer import run_transfer
from plumbing.devices import device_name, resolve_device
from plumbing.digests import tensor_digest
from plumbing.files import write_json, write_text
from plumbing.locks import folder_contents

PLAN_FILE = "study.json"
CONFIG_COPY = "config.toml"

Executor = Callable[[list[Step], StepLog], None]


# --------------------------------------------------------------------------- the study, top to bottom


def run_study(
    config: str | Path | dict[str, Any] | StudyConfig,
    out_dir: str | Path,
    data: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    executor: str | Executor | None = None,
    address: str | None = None,
) -> Path:
    """Run (or resume) a whole study into ``out_dir`` and return the path of its report.html.

    ``executor``: ``local`` or ``ray`` (None: the config's ``[study] executor``), or a function
    that runs a list of steps with a StepLog; ``address`` is the Ray cluster's (None: a local runtime).
    """
    cfg = load_config(config)
    threads = torch.get_num_threads()
    if cfg.study.threads is not None:
        torch.set_num_threads(cfg.study.threads)
    try:
        return _run(cfg, Path(out_dir), data, overwrite, progress, executor, address)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: StudyConfig, out: Path, data: str | Path | None, overwrite: bool, progress: bool,
         executor: str | Executor | None, address: str | None) -> Path:
    echo = Console(highlight=False).print if progress else (lambda _msg: None)
    t_start = time.perf_counter()
    name = cfg.study.executor if executor is None else executor
    if isinstance(name, str):
        if check_executor(name) == "ray":
            require_ray()  # before the data are loaded and the folder is touched
        executor = partial(run_with, executor=name, address=address, progress=progress)
    # Under Ray the live table shows the steps; their own bars would only fill the task logs.
    on_ray = name == "ray"
    # The data are checked before the folder is touched, so a bad path leaves nothing behind.
    real, spec = _load_real(cfg, data, progress)
    check_counts(cfg, int(real.images.shape[0]), str(spec))
    folder = _open_folder(out, cfg, overwrite, str(spec))
    data_hash = tensor_digest(real.images)
    folder.update(data_info={
        "source": str(spec), "count": int(real.images.shape[0]), "fingerprint": data_hash,
        "skipped": len(getattr(real, "skipped", []) or []),
    })
    if cfg.text is not None:
        write_text(out / CONFIG_COPY, cfg.text)
    write_json(out / PLAN_FILE, _plan(cfg, real, spec, data_hash))
    echo(f"Study [bold]{cfg.study.name}[/]: {len(cfg.generators)} generators, "
         f"{real.images.shape[0]} real images from {spec} -> {out}")

    executor(build_steps(cfg, out, real, data_hash, progress and not on_ray), StepLog(out, None if on_ray else echo))

    folder.update(elapsed_s=round(time.perf_counter() - t_start, 1))
    # The page is written as the finished study's report; the manifest says "finished" only
    # once the page exists, so an interrupted report is redone by the next run.
    page = report.write_report(out, finished=True)
    folder.finish(elapsed_s=round(time.perf_counter() - t_start, 1))
    return page


def build_steps(cfg: StudyConfig, out: Path, real: ImageSet, data_hash: str, progress: bool) -> list[Step]:
    """The study as steps in a runnable order: real spectra, then per generator train ->
    generate -> spectra -> quality, then the transfer matrix.

    A later step's inputs hold the hashes of the earlier steps' inputs (computed here, up
    front), so editing a generator's options invalidates exactly the steps downstream of it.
    """
    gpu = {"num_cpus": 1, "num_gpus": 1} if device_name(cfg.study.device) == "cuda" else {"num_cpus": 1}
    steps = [Step("spectra/real", {"data": data_hash}, _spectra_outputs("real"),
                  partial(_real_spectra_step, out, real.images, cfg.generate.grid))]
    fakes_hashes: dict[str, str] = {}
    for gen in cfg.generators:
        gen_steps = _generator_steps(cfg, gen, out, real.images, data_hash, progress, gpu)
        fakes_hashes[gen.name] = gen_steps[1].hash  # the generate step's hash names its fakes
        steps += gen_steps

    if cfg.transfer is not None:
        how = {"jobs"}  # options that change how the matrix is computed, not its values
        what = {k: v for k, v in cfg.transfer.model_dump().items() if k not in how}
        inputs = {"data": data_hash, "fakes": fakes_hashes, "transfer": what, "seed": cfg.study.seed}
        steps.append(Step("transfer", inputs, ["transfer/matrix.csv"],
                          partial(_transfer_step, cfg, out, real, progress),
                          deps=tuple(f"generate/{g.name}" for g in cfg.generators),
                          resources={"num_cpus": cfg.transfer.jobs}))
    return steps


def _generator_steps(cfg: StudyConfig, gen: GeneratorSpec, out: Path, real: torch.Tensor, data_hash: str,
                     progress: bool, gpu: dict[str, float]) -> list[Step]:
    """Train, generate, spectra and quality of one generator."""
    tcfg = train_config(cfg, gen)
    hashed = {k: v for k, v in dataclasses.asdict(tcfg).items() if k not in TRAIN_KEYS_NOT_HASHED}
    train_step = Step(f"train/{gen.name}", {"data": data_hash, "train": hashed},
                      [f"generators/{gen.name}/checkpoint.pt"],
                      partial(_train_step, tcfg, real, out / "generators" / gen.name, progress), resources=gpu)

    g = cfg.generate
    outputs = [f"fakes/{gen.name}.npy", f"samples/{gen.name}.png"]
    if g.save_fakes:
        outputs.append(f"fakes/{gen.name}/manifest.json")
    generate_step = Step(f"generate/{gen.name}", {"train": train_step.hash, "generate": g.model_dump()}, outputs,
                         partial(_generate_step, cfg, gen.name, out, progress),
                         deps=(train_step.key,), resources=gpu)

    steps = [train_step, generate_step,
             Step(f"spectra/{gen.name}", {"fakes": generate_step.hash}, [f"spectra/{gen.name}.npz"],
                  partial(_fake_spectra_step, out, gen.name), deps=(generate_step.key,))]
    q = cfg.quality
    if q.spectral or q.fid or q.kid:
        steps.append(Step(f"quality/{gen.name}",
                          {"fakes": generate_step.hash, "data": data_hash, "quality": q.model_dump()},
                          [f"quality/{gen.name}.json"], partial(_quality_step, cfg, out, gen.name, real),
                          deps=(generate_step.key,), resources=gpu if (q.fid or q.kid) else {"num_cpus": 1}))
    return steps


# --------------------------------------------------------------------------- before any step


def check_counts(cfg: StudyConfig, n_real: int, source: str) -> None:
    """Stop before any work when there are too few real images or fakes for the study's statistics and splits."""
    if n_real < 2:
        raise ValueError(f"The study needs at least 2 real images, but {source} gave {n_real}; give more images.")
    if cfg.transfer is None:
        return
    # The transfer step splits every set into train / validation / test and needs 2 images in each part.
    for n, what in ((n_real, f"real images from {source}"), (cfg.generate.n, "fakes per generator ([generate] n)")):
        sizes = [len(ix) for ix in split_indices(n, cfg.transfer.fractions)]
        if min(sizes) < 2:
            raise ValueError(
                f"The transfer step splits the {n} {what} into {sizes} (train, validation, test) but needs at "
                "least 2 in each; give more images or change [transfer] fractions."
            )


def _load_real(cfg: StudyConfig, data: str | Path | None, progress: bool) -> tuple[ImageSet, str | Path]:
    """The study's real images as a pipelines.data.ImageSet, and where they came from."""
    spec = resolve_data(str(data) if data is not None else cfg.study.data)
    if spec != "embedded" and cfg.study.subset:
        spec = Path(spec) / cfg.study.subset
        if not spec.is_dir():
            raise FileNotFoundError(
                f"{spec} does not exist; [study] subset = {cfg.study.subset!r} must name a sub-folder of the data folder."
            )
    return load_data(spec, cfg.study.resolution, limit=cfg.study.n_real, seed=cfg.study.seed, progress=progress), spec


def _open_folder(out: Path, cfg: StudyConfig, overwrite: bool, data_label: str | None) -> RunFolder:
    folder = RunFolder(out)
    if folder.path.is_dir() and folder.manifest_path.exists() and not overwrite:
        old = folder.manifest()
        if old.get("command") != "study":
            raise FileExistsError(
                f"{out} holds a '{old.get('command')}' run, not a study; choose another --out or pass --overwrite."
            )
        if folder.is_finished():
            raise FileExistsError(
                f"{out} already holds a finished study; pass --overwrite to redo it or choose another --out."
            )
    elif folder.path.is_dir() and folder_contents(folder.path) and not overwrite:
        raise FileExistsError(
            f"{out} is not empty and is not a study folder; choose another --out or pass --overwrite."
        )
    return folder.start(
        "study", cfg.to_dict(), seed=cfg.study.seed, device=device_name(cfg.study.device),
        data=data_label, overwrite=overwrite, resume=not overwrite,
    )


def _plan(cfg: StudyConfig, real: ImageSet, spec: Any, data_hash: str) -> dict[str, Any]:
    """What the report needs to know about the study (written as study.json)."""
    return {
        "name": cfg.study.name,
        "source": cfg.source,
        "resolution": cfg.study.resolution,
        "data": {"source": str(spec), "count": int(real.images.shape[0]), "fingerprint": data_hash},
        "generators": [
            {"name": g.name, "arch": g.arch, "upsampler": g.upsampler, "spectral_d": g.spectral_d,
             "steps": g.train.get("steps"), "width": g.train.get("width"), "train": g.train}
            for g in cfg.generators
        ],
        "generate": cfg.generate.model_dump(),
        "quality": cfg.quality.model_dump(),
        "transfer": cfg.transfer.model_dump() if cfg.transfer else None,
    }


# --------------------------------------------------------------------------- the steps' work
# Each takes everything it needs as arguments and ``resume`` last (see pipelines.steps.Step).


def _spectra_outputs(name: str) -> list[str]:
    return [f"spectra/{name}.npz", f"samples/{name}.png"]


def _real_spectra_step(out: Path, images: torch.Tensor, grid: int, _resume: bool) -> None:
    save_arrays(out / "spectra" / "real.npz", **mean_spectra(images))
    write_grid(images, out / "samples" / "real.png", grid)


def _train_step(tcfg: TrainConfig, real: torch.Tensor, run_dir: Path, progress: bool, resume: bool) -> None:
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    can_resume = resume and (run_dir / "checkpoint.pt").exists()
    training.train(tcfg, real, run_dir, resume=can_resume, progress=progress)


def _generate_step(cfg: StudyConfig, name: str, out: Path, progress: bool, _resume: bool) -> None:
    g = cfg.generate
    seed = cfg.study.seed if g.seed is None else g.seed
    run_dir = out / "generators" / name
    device = resolve_device(cfg.study.device)
    G, _meta = load_generator(run_dir, device=device)
    fakes = generate_tensor(G, g.n, seed=seed, batch_size=g.batch_size, device=device).cpu()
    save_array(out / "fakes" / f"{name}.npy", fakes.numpy())
    write_grid(fakes, out / "samples" / f"{name}.png", g.grid)
    if g.save_fakes:
        write_fake_set(run_dir / "checkpoint.pt", g.n, out / "fakes" / name, seed=seed,
                       batch_size=g.batch_size, device=device, progress=progress)


def _fake_spectra_step(out: Path, name: str, _resume: bool) -> None:
    save_arrays(out / "spectra" / f"{name}.npz", **mean_spectra(load_fakes(out, name)))


def _quality_step(cfg: StudyConfig, out: Path, name: str, real: torch.Tensor, _resume: bool) -> None:
    """Spectral fidelity, plus FID/KID when asked and possible (else the reason is recorded)."""
    q = cfg.quality
    fake = load_fakes(out, name)
    result: dict[str, Any] = {}
    if q.spectral:
        result.update(spectral_fidelity(real, fake))
    # Mode-collapse alarm for every fake set (cheap, no weights): detectors.diversity.
    result["diversity"] = diversity(fake, real)["diversity"]
    if q.fid or q.kid:
        try:
            # Lazy for start-up time: torch-fidelity is heavy and only FID/KID need it.
            from pipelines.quality import quality_metrics

            kwargs: dict[str, Any] = {"fid": q.fid, "kid": q.kid, "spectral": False, "device": cfg.study.device}
            if q.feature_extractor_weights:
                kwargs["feature_extractor_weights"] = q.feature_extractor_weights
            result.update(quality_metrics(real, fake, **kwargs))
        except (OSError, ValueError, RuntimeError, ImportError) as e:
            # Offline machines have no Inception weights: record why and keep going.
            result["fid_kid_unavailable"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    write_json(out / "quality" / f"{name}.json", result)  # numpy/torch numbers become plain JSON


def _transfer_step(cfg: StudyConfig, out: Path, real: ImageSet, progress: bool, resume: bool) -> None:
    t = cfg.transfer
    assert t is not None
    # No clean start needed: run_transfer keeps each finished cell with a hash of its images and
    # options, and recomputes exactly the cells whose inputs changed.
    del resume
    fakes = {g.name: _image_set(load_fakes(out, g.name), g.name) for g in cfg.generators}
    run_transfer(real, fakes, list(t.detectors), out / "transfer", rows=tuple(t.rows), seed=cfg.study.seed,
                 fractions=tuple(t.fractions), jpeg=t.jpeg, attribute=t.attribute, progress=progress,
                 jobs=t.jobs, seeds=t.seeds)


def _image_set(images: torch.Tensor, name: str) -> ImageSet:
    """Fakes held in memory as an ImageSet (one pseudo file name per image, for split bookkeeping)."""
    files = [f"{name}#{i}" for i in range(images.shape[0])]
    return ImageSet(images=images, files=files, source=f"generator:{name}")

