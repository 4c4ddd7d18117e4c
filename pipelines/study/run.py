"""Studies: one TOML file drives train -> generate -> spectra -> metrics -> transfer -> report.

A study folder holds one sub-folder per step kind (``generators/``, ``fakes/``, ``samples/``,
``spectra/``, ``quality/``, ``transfer/``) and ``steps.json``, which records each finished step
with a hash of everything it was computed from. A rerun skips the steps whose hash still
matches and whose files are all there, and redoes the others, so an interrupted study resumes
where it stopped and an edited config recomputes only what the edit touched.

Real images: the GANs, and the detectors' real training images, come from one pool; the
detectors' real *test* images from another that no generator trained on (:func:`_load_real`):
ImageWoof's val/ when the data folder holds train/ and val/ (``[study] subset = "train"``, the
default for such a folder);
for data in one folder, the fraction ``[data] held_out`` (0.2) kept back from GAN training;
for the embedded photos, crops of their right half while training crops come from the left
half. study.json and the manifest record where both came from. Before the transfer matrix,
a ``parity`` step compares how the real and fake sets are stored (pipelines.data.parity) and
writes its warnings to parity.json, the manifest and the report.

This module reads top to bottom: :func:`run_study` loads the real images, opens the folder,
builds the study as a list of :class:`pipelines.study.steps.Step` (:func:`build_steps`) and hands
them to an executor, then writes the report. The config schema lives in
``pipelines.study.config``, the bookkeeping in ``pipelines.study.steps``, the array and image files
in ``pipelines.data.arrays``. Each step's ``run`` is a module-level function bound to its
arguments, so it needs nothing from the driver and can run in another process. Training and
the report are called through their modules (``training.train``, ``report.write_report``) so
that tests can replace them.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from detectors.diversity import diversity
from detectors.fidelity import spectral_fidelity
from gans import training
from gans.sampling import generate_tensor, load_generator, write_fake_set
from gans.training import TrainConfig
from pipelines.data.align import align_sets, plan_for_sets
from pipelines.data.arrays import load_fakes, mean_spectra, save_array, save_arrays, write_grid
from pipelines.data.images import EMBEDDED, ImageSet, load_data, resolve_data, split_indices
from pipelines.data.parity import parity_warnings, summarise
from pipelines.evaluation.transfer import run_transfer
from pipelines.report import page as report
from pipelines.runfolder import RunFolder
from pipelines.study.config import (
    GeneratorSpec,
    StudyConfig,
    hashed_train_options,
    load_config,
    train_config,
)
from pipelines.study.executors import check_executor, require_ray
from pipelines.study.executors import run_steps as run_with
from pipelines.study.steps import Step, StepLog
from plumbing.devices import device_name, resolve_device
from plumbing.digests import tensor_digest
from plumbing.files import read_json, write_json, write_text
from plumbing.locks import folder_contents

PLAN_FILE = "study.json"
PARITY_FILE = "parity.json"
PARITY_VERSION = 2  # bump when the warnings change wording (2: what the detector sees, chroma, [data] align)
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
    resume: bool = True,
) -> Path:
    """Run, resume or update a whole study in ``out_dir`` and return the path of its report.html.

    ``executor``: ``local`` or ``ray`` (None: the config's ``[study] executor``), or a function
    that runs a list of steps with a StepLog; ``address`` is the Ray cluster's (None: a local runtime).

    A folder holding a finished study is updated: only the steps that are new or whose inputs
    changed run, the others are kept, and the report is rebuilt; when every step is up to date
    nothing runs and a note says how to rebuild the report or start over. A folder holding an
    unfinished study is continued only with ``resume`` (the command line's ``--resume``), so that
    a rerun never silently picks up, or throws away, an interrupted one.
    """
    cfg = load_config(config)
    threads = torch.get_num_threads()
    if cfg.study.threads is not None:
        torch.set_num_threads(cfg.study.threads)
    try:
        return _run(cfg, Path(out_dir), data, overwrite, progress, executor, address, resume)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: StudyConfig, out: Path, data: str | Path | None, overwrite: bool, progress: bool,
         executor: str | Executor | None, address: str | None, resume: bool = True) -> Path:
    echo = Console(highlight=False).print if progress else (lambda _msg: None)
    t_start = time.perf_counter()
    name = cfg.study.executor if executor is None else executor
    if isinstance(name, str):
        if check_executor(name) == "ray":
            require_ray()  # before the data are loaded and the folder is touched
        executor = partial(run_with, executor=name, address=address, progress=progress, jobs=cfg.study.jobs,
                           threads=cfg.study.threads)
    # Under Ray the live table shows the steps; their own bars would only fill the task logs.
    on_ray = name == "ray"
    # The data are checked before the folder is touched, so a bad path leaves nothing behind.
    real, spec = _load_real(cfg, data, progress)
    check_counts(cfg, real, str(spec))
    _check_folder(out, overwrite, resume)
    data_hash = tensor_digest(real.train.images)
    steps = build_steps(cfg, out, real, data_hash, progress and not on_ray)
    if not overwrite and _up_to_date(out, steps):
        # Plain print, not rich: paths must not be wrapped or read as markup.
        print(f"Nothing to do: every step of the study in {out} is finished and up to date with its config.\n"
              f"Rebuild its report with `forgelab report {out}`; start over with --overwrite.", flush=True)
        return out / report.REPORT_FILE
    folder = _open_folder(out, cfg, overwrite, str(spec))
    folder.update(data_info={
        "source": str(spec), "count": real.loaded, "fingerprint": data_hash,
        "skipped": len(getattr(real.train, "skipped", []) or []), "preprocess": cfg.data.mode,
        **real.describe(),
    })
    if cfg.text is not None:
        write_text(out / CONFIG_COPY, cfg.text)
    write_json(out / PLAN_FILE, _plan(cfg, real, spec, data_hash))
    echo(f"Study [bold]{cfg.study.name}[/]: {len(cfg.generators)} generators, "
         f"{len(real.train)} real images from {escape(str(spec))} -> {escape(str(out))}")

    executor(steps, StepLog(out, None if on_ray else echo))

    if (out / PARITY_FILE).is_file():
        folder.update(parity_warnings=read_json(out / PARITY_FILE).get("warnings", []))
    folder.update(elapsed_s=round(time.perf_counter() - t_start, 1))
    # The page is written as the finished study's report; the manifest says "finished" only
    # once the page exists, so an interrupted report is redone by the next run.
    page = report.write_report(out, finished=True)
    folder.finish(elapsed_s=round(time.perf_counter() - t_start, 1))
    return page


def build_steps(cfg: StudyConfig, out: Path, real: RealImages | ImageSet, data_hash: str,
                progress: bool) -> list[Step]:
    """The study as steps in a runnable order: real spectra, then per generator train ->
    generate -> spectra -> quality, then the format parity check and the transfer matrix.

    A later step's inputs hold the hashes of the earlier steps' inputs (computed here, up
    front), so editing a generator's options invalidates exactly the steps downstream of it.
    The preprocessing mode enters the hashes only when it is not the default "resize", so
    study folders from before the mode existed resume.
    """
    real = _as_real(real)
    gpu = {"num_cpus": 1, "num_gpus": 1} if device_name(cfg.study.device) == "cuda" else {"num_cpus": 1}
    data_key = data_hash if cfg.data.mode == "resize" else f"{data_hash}/{cfg.data.mode}"
    steps = [Step("spectra/real", {"data": data_key}, _spectra_outputs("real"),
                  partial(_real_spectra_step, out, real.train.images, cfg.generate.grid))]
    fakes_hashes: dict[str, str] = {}
    for gen in cfg.generators:
        gen_steps = _generator_steps(cfg, gen, out, real.train.images, data_key, progress, gpu)
        fakes_hashes[gen.name] = gen_steps[1].hash  # the generate step's hash names its fakes
        steps += gen_steps

    if cfg.transfer is not None:
        generated = tuple(f"generate/{g.name}" for g in cfg.generators)
        inputs: dict[str, Any] = {"data": data_key, "fakes": fakes_hashes}
        if real.test is not None:  # held-out real test images (absent only with [data] held_out = 0)
            inputs["real_test"] = tensor_digest(real.test.images)
        parity_inputs = {**inputs, "jpeg": cfg.transfer.jpeg, "preprocess": cfg.data.mode,
                         "resolution": cfg.study.resolution, "version": PARITY_VERSION}
        steps.append(Step("parity", parity_inputs, [PARITY_FILE],
                          partial(_parity_step, cfg, out, real, progress), deps=generated))
        how = {"jobs"}  # options that change how the matrix is computed, not its values
        what = {k: v for k, v in cfg.transfer.model_dump().items() if k not in how}
        if what["patches"] is None:  # no patch keys without patches: older studies keep their step hash
            what = {k: v for k, v in what.items() if not k.startswith("patch")}
        if not what["options"]:  # likewise without detector options
            del what["options"]
        # The device type is hashed: cells fitted on the CPU and on a GPU are not interchangeable.
        inputs.update(transfer=what, seed=cfg.study.seed, device=device_name(cfg.study.device))
        steps.append(Step("transfer", inputs, ["transfer/matrix.csv"],
                          partial(_transfer_step, cfg, out, real, progress),
                          deps=(*generated, "parity"), resources={**gpu, "num_cpus": cfg.transfer.jobs}))
    return steps


def _generator_steps(cfg: StudyConfig, gen: GeneratorSpec, out: Path, real: torch.Tensor, data_key: str,
                     progress: bool, gpu: dict[str, float]) -> list[Step]:
    """Train, generate, spectra and quality of one generator."""
    tcfg = train_config(cfg, gen)
    hashed = hashed_train_options(dataclasses.asdict(tcfg))
    train_step = Step(f"train/{gen.name}", {"data": data_key, "train": hashed},
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
                          {"fakes": generate_step.hash, "data": data_key, "quality": q.model_dump()},
                          [f"quality/{gen.name}.json"], partial(_quality_step, cfg, out, gen.name, real),
                          deps=(generate_step.key,), resources=gpu if (q.fid or q.kid) else {"num_cpus": 1}))
    return steps


# --------------------------------------------------------------------------- before any step


@dataclass
class RealImages:
    """The study's real images: what the GANs (and the detectors) train on, and the detectors' real test images.

    ``test`` is never seen by a generator: ImageWoof's val/ when the GANs train on train/, a
    held-out part of a one-folder data set, the right-hand region of the embedded photos. It
    is None only with ``[data] held_out = 0`` on one-folder data (the real test images are then
    a split of ``train``, as before held-out sets existed).
    """

    train: ImageSet
    test: ImageSet | None
    loaded: int  # images read from the data source (train plus a held-out part of the same folder)
    train_from: str
    test_from: str

    def describe(self) -> dict[str, Any]:
        """Where the real train and test images came from, for study.json and the manifest."""
        test = ({"from": self.test_from, "count": len(self.test), "fingerprint": tensor_digest(self.test.images)}
                if self.test is not None else {"from": self.test_from, "count": None})
        return {"real_train": {"from": self.train_from, "count": len(self.train)}, "real_test": test}


def _as_real(real: RealImages | ImageSet) -> RealImages:
    """``real`` as RealImages; a bare ImageSet (callers from before held-out sets) has no separate test images."""
    return real if isinstance(real, RealImages) else RealImages(real, None, len(real), str(real.source), "")


def check_counts(cfg: StudyConfig, real: RealImages, source: str) -> None:
    """Stop before any work when there are too few real images or fakes for the study's statistics and splits."""
    n_real = len(real.train)
    if n_real < 2:
        raise ValueError(f"The study needs at least 2 real images, but {source} gave {n_real}; give more images.")
    if cfg.transfer is None:
        return
    fr = cfg.transfer.fractions
    # The transfer step splits every set into train / validation / test and needs 2 images in each
    # part; with held-out real test images the real training images are split into train / validation.
    real_fr = fr if real.test is None else (fr[0] / (fr[0] + fr[1]), fr[1] / (fr[0] + fr[1]))
    for n, what, f in ((n_real, f"real images from {source}", real_fr),
                       (cfg.generate.n, "fakes per generator ([generate] n)", fr)):
        sizes = [len(ix) for ix in split_indices(n, f)]
        if min(sizes) < 2:
            names = "(train, validation, test)" if len(f) == 3 else "(train, validation)"
            raise ValueError(
                f"The transfer step splits the {n} {what} into {sizes} {names} but needs at "
                "least 2 in each; give more images or change [transfer] fractions."
            )
    if real.test is not None and len(real.test) < 2:
        raise ValueError(
            f"The study has {len(real.test)} held-out real test image(s) ({real.test_from}) but needs at least 2; "
            "give more images or raise [data] held_out."
        )


def _test_count(cfg: StudyConfig, n_train: int) -> int:
    """How many real test images to draw from a separate source: as many as a test split of the training images would hold."""
    fr = cfg.transfer.fractions if cfg.transfer is not None else (0.6, 0.2, 0.2)
    return max(2, round(n_train * fr[2] / (fr[0] + fr[1])))


def _load_real(cfg: StudyConfig, data: str | Path | None, progress: bool) -> tuple[RealImages, str | Path]:
    """The study's real images, split into what the GANs may see and the detectors' real test images, and where they came from."""
    mode, seed, res = cfg.data.mode, cfg.study.seed, cfg.study.resolution
    spec = resolve_data(str(data) if data is not None else cfg.study.data)
    if spec == EMBEDDED:
        # Disjoint regions of the photos: a pixel CNN cannot pass the test by memorising training crops.
        train = load_data(spec, res, limit=cfg.study.n_real, seed=seed, region="train", preprocess=mode,
                          progress=progress)
        test = load_data(spec, res, limit=_test_count(cfg, len(train)), seed=seed, region="test",
                         preprocess=mode, progress=progress)
        where = "crops of the embedded photos' {} part (region {!r})"
        return RealImages(train, test, len(train), where.format("left", "train"), where.format("right", "test")), spec
    root = Path(spec)
    subset = cfg.study.subset
    if subset is None and (root / "train").is_dir() and (root / "val").is_dir():
        # A data set root with train/ and val/ (ImageWoof's layout): train on train/, test on val/,
        # as `subset = "train"` says; never on both mixed, which would leak val/ into GAN training.
        subset = "train"
        if progress:
            print(f"{root} holds train/ and val/: the GANs train on train/, the detectors are tested on val/ "
                  '(set [study] subset to use another sub-folder).', flush=True)
    if subset:
        spec = root / subset
        if not spec.is_dir():
            raise FileNotFoundError(
                f"{spec} does not exist; [study] subset = {subset!r} must name a sub-folder of the data folder."
            )
    loaded = load_data(spec, res, limit=cfg.study.n_real, seed=seed, preprocess=mode, progress=progress)
    if subset == "train" and (root / "val").is_dir():
        # ImageWoof's layout: the GANs train on train/, the detectors are tested on val/.
        test = load_data(root / "val", res, limit=_test_count(cfg, len(loaded)), seed=seed, preprocess=mode,
                         progress=progress)
        return RealImages(loaded, test, len(loaded), str(spec), str(root / "val")), spec
    held = cfg.data.held_out
    if held == 0:
        return RealImages(loaded, None, len(loaded), str(spec),
                          f"a split of the same images ({spec}), which the GANs also trained on ([data] held_out = 0)"), spec
    keep, test_idx = split_indices(len(loaded), (1 - held, held), seed)
    return RealImages(loaded.subset(keep), loaded.subset(test_idx), len(loaded),
                      f"{spec}, less the held-out {held:g}",
                      f"{spec}, the held-out {held:g} ([data] held_out), never seen by the GANs"), spec


def _check_folder(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse a folder that holds something other than a study, or an unfinished study without ``resume``."""
    folder = RunFolder(out)
    if overwrite or not folder.path.is_dir():
        return
    if folder.manifest_path.exists():
        old = folder.manifest()
        if old.get("command") != "study":
            raise FileExistsError(
                f"{out} holds a '{old.get('command')}' run, not a study; choose another --out or pass --overwrite."
            )
        if not folder.is_finished() and not resume:
            raise FileExistsError(
                f"{out} holds an unfinished study; pass --resume to continue it (finished steps are kept), "
                "--overwrite to start over, or choose another --out."
            )
    elif folder_contents(folder.path):
        raise FileExistsError(
            f"{out} is not empty and is not a study folder; choose another --out or pass --overwrite."
        )


def _up_to_date(out: Path, steps: list[Step]) -> bool:
    """True when ``out`` holds a finished study whose every step is done from the same inputs, report included."""
    folder = RunFolder(out)
    if not folder.is_finished() or not (out / report.REPORT_FILE).is_file():
        return False
    log = StepLog(out)
    return all(log.is_done(s.key, s.hash) for s in steps)


def _open_folder(out: Path, cfg: StudyConfig, overwrite: bool, data_label: str | None) -> RunFolder:
    folder = RunFolder(out)
    return folder.start(
        "study", cfg.to_dict(), seed=cfg.study.seed, device=device_name(cfg.study.device),
        data=data_label, overwrite=overwrite, resume=not overwrite,
    )


def _plan(cfg: StudyConfig, real: RealImages, spec: Any, data_hash: str) -> dict[str, Any]:
    """What the report needs to know about the study (written as study.json)."""
    return {
        "name": cfg.study.name,
        "source": cfg.source,
        "resolution": cfg.study.resolution,
        "data": {"source": str(spec), "count": real.loaded, "fingerprint": data_hash,
                 "preprocess": cfg.data.mode, **real.describe()},
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
# Each takes everything it needs as arguments and ``resume`` last (see pipelines.study.steps.Step).


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


def _generate_step(cfg: StudyConfig, name: str, out: Path, progress: bool, resume: bool) -> None:
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
                       batch_size=g.batch_size, device=device, progress=progress,
                       overwrite=not resume)  # a redone step never keeps PNGs of the old generator


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
            from pipelines.evaluation.quality import quality_metrics

            kwargs: dict[str, Any] = {"fid": q.fid, "kid": q.kid, "spectral": False, "device": cfg.study.device}
            if q.feature_extractor_weights:
                kwargs["feature_extractor_weights"] = q.feature_extractor_weights
            result.update(quality_metrics(real, fake, **kwargs))
        except (OSError, ValueError, RuntimeError, ImportError) as e:
            # Offline machines have no Inception weights: record why and keep going.
            result["fid_kid_unavailable"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    write_json(out / "quality" / f"{name}.json", result)  # numpy/torch numbers become plain JSON


def _parity_step(cfg: StudyConfig, out: Path, real: RealImages | ImageSet, progress: bool, _resume: bool) -> None:
    """Compare what the detectors will see of the real and each fake set (codec, JPEG quality, chroma, size); write and
    print the warnings.

    The generators learned from the real images after the study's preprocessing, so the check
    compares what the detector sees, not how the source files are stored: resized real images are
    the tensors the generators imitated (lossless, at the study's resolution, like the fakes);
    native crops (``preprocess = "crop"``) keep their files' codec, which the fakes lack; with
    ``[data] align`` every set passes through one final codec and nothing is left to compare.
    The stored format of the real files is recorded beside the warnings. Warnings that differ
    only in the fake set's name are merged into one sentence naming all the sets, so a study of
    twelve generators prints one line per difference, not twelve.
    """
    real = _as_real(real)
    t = cfg.transfer
    assert t is not None
    mode = cfg.data.mode
    stored = real.train if real.test is None else (real.train, real.test)
    if mode == "resize":  # what the generators learned from and the detectors see: tensors at R
        seen: Any = real.train.images if real.test is None else (real.train.images, real.test.images)
    else:
        seen = stored
    names = [g.name for g in cfg.generators]
    per_set = {n: parity_warnings(seen, {n: load_fakes(out, n)}, jpeg=t.jpeg, preprocess=mode,
                                  resolution=cfg.study.resolution, aligned=cfg.data.align) for n in names}
    merged: dict[str, list[str]] = {}
    for n, msgs in per_set.items():
        for m in msgs:
            merged.setdefault(m.replace(f"fake set {n!r}", "fake set {sets}"), []).append(n)
    warnings = []
    # In a study the fixes are config keys, not command-line options.
    fixes = {"pass --jpeg Q": "set [transfer] jpeg = Q", "pass --preprocess crop": 'set [data] preprocess = "crop"',
             "pass --align": "set [data] align = true"}
    for template, sets in merged.items():
        for option, key in fixes.items():
            template = template.replace(option, key)
        label = f"fake set {sets[0]!r}" if len(sets) == 1 else "fake sets " + ", ".join(repr(x) for x in sets)
        text = template.replace("fake set {sets} is", f"{label} {'is' if len(sets) == 1 else 'are'}")
        warnings.append(text.replace("fake set {sets}", label))
    fmt = summarise(stored, "real")
    record = {"warnings": warnings, "by_set": per_set,  # by_set: as parity_warnings words them
              "compared": "what the detector sees" if mode == "resize" else "stored files (native crops)",
              "real_stored": {"codec": fmt.codec, "quality": fmt.quality, "subsampling": fmt.subsampling,
                              "sizes": fmt.size_text() if fmt.sizes else None}}
    write_json(out / PARITY_FILE, record)
    if progress:
        print_warnings(warnings)


def print_warnings(warnings: list[str]) -> None:
    """Print study warnings on stderr; their text is escaped, so ``[transfer] jpeg`` is not read as rich markup."""
    console = Console(highlight=False, stderr=True)
    for w in warnings:
        console.print(f"[yellow]Warning:[/] {escape(w)}")


def _transfer_step(cfg: StudyConfig, out: Path, real: RealImages | ImageSet, progress: bool, resume: bool) -> None:
    real = _as_real(real)
    t = cfg.transfer
    assert t is not None
    # No clean start needed: run_transfer keeps each finished cell with a hash of its images and
    # options, and recomputes exactly the cells whose inputs changed.
    del resume
    fakes = {g.name: _image_set(load_fakes(out, g.name), g.name) for g in cfg.generators}
    real_src = real.train if real.test is None else (real.train, real.test)
    jpeg = t.jpeg
    if cfg.data.align:  # one final codec for every set; [transfer] jpeg only caps its quality
        plan = plan_for_sets({"real": real_src, **fakes}, max_quality=t.jpeg)
        aligned = align_sets({"real": real_src, **fakes}, plan)
        real_src, fakes, jpeg = aligned["real"], {n: aligned[n] for n in fakes}, None
        write_json(out / "transfer" / "align.json", plan.as_dict())
    run_transfer(real_src, fakes, list(t.detectors), out / "transfer", rows=tuple(t.rows), seed=cfg.study.seed,
                 fractions=tuple(t.fractions), jpeg=jpeg, attribute=t.attribute, progress=progress,
                 jobs=t.jobs, seeds=t.seeds, device=detector_device(cfg.study.device), patches=t.patches,
                 patch_size=t.patch_size, patch_reduce=t.patch_reduce, detector_options=t.options,
                 heatmaps=(report.MAIN_METRIC,))  # the report's heatmap; the others are tables there


def detector_device(device: str) -> str:
    """The study's device for its detectors: as given, with ``auto`` resolved (cpu or cuda) here.

    Resolved once in the step, so ``jobs`` > 1 worker processes and the cell hashes agree on it.
    """
    return device_name(device) if device == "auto" else device


def _image_set(images: torch.Tensor, name: str) -> ImageSet:
    """Fakes held in memory as an ImageSet (one pseudo file name per image, for split bookkeeping)."""
    files = [f"{name}#{i}" for i in range(images.shape[0])]
    return ImageSet(images=images, files=files, source=f"generator:{name}")

