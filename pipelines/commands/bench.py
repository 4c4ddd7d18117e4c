"""``forgelab bench``: detectors trained on sources of a benchmark tree (ForenSynths / UniversalFakeDetect
layouts), tested on every source, formats aligned, optionally under robustness sweeps.

Lazy imports: the modules that do the work are imported inside the command, for start-up time.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines.errors import friendly
from pipelines.names import SWEEP_KINDS
from pipelines.runfolder import locked

SWEEP_EXAMPLES = {"jpeg": "100,95,90,75,50", "blur": "0,1,2", "resize": "0.5,0.75,1.5"}


def bench(
    root: Path = typer.Argument(..., help="Benchmark folder with train/, test/ (and optionally val/), each holding "
                                "SOURCE/0_real|1_fake or SOURCE/CLASS/0_real|1_fake."),
    train: list[str] = typer.Option([], "--train", help="Training source(s) under train/: A fits on A, A,B on their "
                                    "union; real-only:A fits the detectors that can on A's real images alone; repeat for one row per group."),
    detector: list[str] = typer.Option([], "--detector", help="A detector FEATURE:CLASSIFIER, e.g. radial:svm (repeat)."),
    model: list[Path] = typer.Option([], "--model", help="A detector folder fitted earlier (forgelab detect fit), "
                                     "evaluated without training (repeat)."),
    out: Path = typer.Option(..., "--out", help="Run folder for results.csv/json, report.html and the manifest."),
    resolution: int | None = typer.Option(None, "--resolution", help="Crop size in pixels.",
                                         show_default="the smallest native size found, at most 256"),
    align: bool = typer.Option(True, "--align/--no-align", help="Native crops on the JPEG grid and, if any set is "
                               "JPEG, every set re-encoded at one quality (the lowest found) and one chroma "
                               "subsampling, so no detector can learn the codec."),
    max_quality: int | None = typer.Option(None, "--align-quality", help="With --align, re-encode at most at this "
                                           "JPEG quality (and always when no set is JPEG).",
                                           show_default="the lowest quality found"),
    preprocess: str = typer.Option("crop", "--preprocess", help="With --no-align: resize or crop (native pixels)."),
    sweep: list[str] = typer.Option([], "--sweep", help="Robustness conditions on the test images, real and fake "
                                    "alike, KIND=V1,V2,... (repeat): " + ", ".join(
                                        f"{k}={SWEEP_EXAMPLES.get(k, '...')}" for k in SWEEP_KINDS) + "."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of the training images held out to "
                                       "calibrate the threshold when a source has no val/ folder."),
    limit: int | None = typer.Option(None, "--limit", help="Use at most N images of each 0_real / 1_fake folder "
                                    "(fixed-seed subset).", show_default="all"),
    seed: int = typer.Option(0, "--seed", help="Seed for calibration splits, subsets and classifiers."),
    seeds: int = typer.Option(1, "--seeds", help="Fit every row K times with the seeds SEED..SEED+K-1; tables hold "
                              "the mean, sd (ddof=1) and n."),
    jobs: int = typer.Option(1, "--jobs", help="Cells fitted at once, each in its own worker process."),
    patches: int | None = typer.Option(None, "--patches", help="Fit and score K crops per image (a square: 4, 9, 16) "
                                      "of --patch-size px on an aligned grid (8x8 when aligned, else 2x2), "
                                      "aggregated per image.", show_default="none: one crop per image"),
    patch_size: int | None = typer.Option(None, "--patch-size", help="Side of each patch in pixels (with --patches).",
                                          show_default="none: needed with --patches"),
    patch_reduce: str = typer.Option("mean", "--patch-reduce", help="Patch aggregation: mean (of logits) or max."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Decode images again instead of using the cache."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    param: list[str] | None = typer.Option(None, "--param", "-p", help="A classifier parameter of one detector, "
                                           "FEATURE:CLASSIFIER:KEY=VALUE, e.g. "
                                           "colorprint:deviation:reals_per_component=9 (repeat).",
                                           show_default="each classifier's own"),
) -> None:
    """Fit detectors on sources of a benchmark tree and test them on every source: the field's table, per source and Mean."""
    from detectors.detector import Detector
    from pipelines.commands.params import parse_detector_params
    from pipelines.evaluation.bench import (
        load_bench,
        parse_sweeps,
        parse_train,
        run_bench,
        scan_tree,
    )
    from pipelines.evaluation.bench_outputs import print_bench
    from pipelines.evaluation.protocol import unique_specs
    from pipelines.runfolder import RunFolder

    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}.")
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1 (the number of repeats of every cell), got {seeds}.")
    if not train and not model:
        raise ValueError("Nothing to evaluate; pass --train SOURCE (with --detector F:C) or --model DIR.")
    if train and not detector:
        raise ValueError("--train needs at least one --detector FEATURE:CLASSIFIER, e.g. radial:svm.")
    if max_quality is not None and not 1 <= max_quality <= 100:
        raise ValueError(f"--align-quality {max_quality} must be a JPEG quality between 1 and 100.")
    specs = unique_specs(detector)
    params = parse_detector_params(param, specs)
    if patches is not None:
        from detectors.patches import check_patch_options

        # Before any image is read; the image size is checked again once it is known.
        check_patch_options(patches, patch_size, patch_reduce, resolution or 10**6)
    sweeps = parse_sweeps(sweep)
    tree = scan_tree(root)  # layout errors before anything is written
    rows = parse_train(train, list(tree["train"]))
    for m in model:
        if not (m / "detector.json").is_file():
            raise FileNotFoundError(f"{m} holds no fitted detector (detector.json); pass a folder written by "
                                    "'forgelab detect fit'.")
    if resolution is None and model:
        resolution = Detector.load(model[0]).resolution[0]

    folder = RunFolder(out)
    if folder.is_finished() and not overwrite:
        raise FileExistsError(f"{out} already holds a finished bench run; pass --overwrite to replace it or choose "
                              "another --out.")
    data = load_bench(root, [n for srcs in rows.values() for n in srcs], resolution=resolution, align=align,
                      preprocess=preprocess, max_quality=max_quality, limit=limit, cache=not no_cache,
                      progress=progress)
    config = {"root": str(root), "train": train, "detectors": specs, "models": [str(m) for m in model],
              "resolution": data.resolution, "align": align, "align_quality": max_quality,
              "preprocess": data.preprocess, "sweeps": sweep, "val_fraction": val_fraction, "limit": limit,
              "seed": seed, "seeds": seeds,
              **({"patches": patches, "patch_size": patch_size, "patch_reduce": patch_reduce} if patches else {}),
              **({"params": params} if params else {})}
    if patches is not None:
        check_patch_options(patches, patch_size, patch_reduce, data.resolution)
    patch = ({"patches": patches, "patch_size": patch_size, "patch_reduce": patch_reduce,
              "patch_align": 8 if data.plan is not None else 2} if patches is not None else {})
    folder.start("bench", config, seed=seed, data=str(root), overwrite=overwrite,
                 resume=not overwrite and folder.manifest_path.exists())
    skipped = data.skipped
    folder.update(align=data.plan.as_dict() if data.plan else None, layouts=data.layouts,
                  skipped=[list(s) for s in skipped])
    if data.plan is not None:
        typer.echo(data.plan.text())
    else:
        how = {"crop": "native crops", "resize": "resized"}.get(data.preprocess, data.preprocess)
        typer.echo(f"Not aligned: images as stored ({how} at {data.resolution} px); codec and size differences "
                   "reach the detectors.")
    if skipped:
        typer.echo(f"Skipped {len(skipped)} unreadable or too small file(s); they are listed in {folder.manifest_path}.")
    result = run_bench(data, specs, out, rows=rows, models=[str(m) for m in model], sweeps=sweeps, seed=seed,
                       seeds=seeds, jobs=jobs, val_fraction=val_fraction, progress=progress,
                       detector_options={spec: {**params.get(spec, {}), **patch} for spec in specs}
                       if patch or params else None)
    print_bench(result)
    folder.finish(outputs=["results.csv", "repeats.csv", "results.json", "report.html", "figures/", "cells/"])
    typer.echo(f"Wrote {out / 'results.csv'}, {out / 'results.json'} and {out / 'report.html'}.")


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to the ``forgelab`` application."""
    app.command("bench")(friendly(locked("bench")(bench)))
