"""``forgelab transfer``: detectors trained on some fake sources, tested on every source.

Lazy imports: the modules that do the work are imported inside each command, for start-up
time (every ``forgelab`` call, ``--help`` included, loads all command modules).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer

from pipelines.errors import friendly
from pipelines.names import ROW_KINDS
from pipelines.runfolder import locked


def parse_fake(text: str) -> tuple[str, str]:
    """Split ``NAME=SPEC`` into its parts, with a readable error for anything else."""
    from pipelines.evaluation.transfer import check_source_name

    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise ValueError(f"--fake {text!r} must look like NAME=FOLDER or NAME=TRAIN_DIR,TEST_DIR (e.g. nearest=runs/nearest/fakes).")
    return check_source_name(name), spec


def split_spec(spec: str) -> list[str]:
    """A set spec as one folder (or 'embedded') or as [TRAIN_DIR, TEST_DIR]."""
    if spec.lower() == "embedded" or Path(spec).expanduser().exists() or "," not in spec:
        return [spec]
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{spec!r} must be one folder or TRAIN_DIR,TEST_DIR (two folders separated by one comma).")
    return parts


def infer_resolution(folder: str) -> int:
    """The resolution of a fake set: its manifest.json's ``resolution``, else its first image's shorter side."""
    from PIL import Image

    from gans.networks import RESOLUTIONS
    from pipelines.data.images import IMAGE_EXTENSIONS, list_images, resolve_data

    if str(folder).strip().lower() == "embedded":
        raise ValueError(f"Cannot tell the resolution from {folder}; pass --resolution R.")
    path = Path(resolve_data(folder))  # a missing folder or a file is named here, not as a resolution problem
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            r = json.loads(manifest.read_text(encoding="utf-8")).get("resolution")
            # Only a size a generator can have: an edited manifest must not set a huge working size.
            if isinstance(r, int) and r in RESOLUTIONS:
                return r
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pass
    files = list_images(path)
    if not files:
        raise ValueError(f"{folder} holds no images; put files ending in {', '.join(IMAGE_EXTENSIONS)} in it.")
    for f in files[:64]:  # the first image whose header can be read decides
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(f) as img:
                    w, h = img.size
        except (OSError, Image.DecompressionBombError):
            continue
        if Image.MAX_IMAGE_PIXELS is None or w * h <= Image.MAX_IMAGE_PIXELS:  # a bomb's size is no resolution
            return min(w, h)
    raise ValueError(f"Cannot read {files[0]} or the images after it, so the resolution of {folder} is unknown; "
                     "check the files or pass --resolution R.")


def transfer(
    real: str = typer.Option(..., "--real", help="Real images: a folder, TRAIN_DIR,TEST_DIR, or 'embedded'."),
    fake: list[str] = typer.Option(..., "--fake", help="A fake source as NAME=FOLDER or NAME=TRAIN_DIR,TEST_DIR (repeat)."),
    detector: list[str] = typer.Option(..., "--detector", help="A detector FEATURE:CLASSIFIER, e.g. radial:svm (repeat)."),
    out: Path = typer.Option(..., "--out", help="Run folder for the matrix, heatmaps and manifest."),
    resolution: int | None = typer.Option(None, "--resolution", help="Image size.",
                                         show_default="the first fake set's"),
    rows: list[str] = typer.Option(["each"], "--rows", help=f"Rows: {', '.join(ROW_KINDS)} (repeat or comma list)."),
    fractions: str = typer.Option("0.6,0.2,0.2", "--fractions", help="Train,validation,test fractions of one-folder sets."),
    jpeg: int | None = typer.Option(None, "--jpeg", help="JPEG-compress every real and fake image at this quality.",
                                   show_default="no compression"),
    preprocess: str = typer.Option("resize", "--preprocess", help="resize (antialiased) or crop (centred "
                                   "native pixels at an even offset, keeps the 2x2 grid)."),
    align: bool = typer.Option(False, "--align", help="Native crops on the JPEG grid and, if any set is JPEG, every "
                               "set re-encoded at one quality (the lowest found, at most --jpeg) and one chroma "
                               "subsampling, so no detector can learn the codec."),
    attribute: bool = typer.Option(False, "--attribute", help="Also fit one multi-class model per detector (which source?)."),
    limit: int | None = typer.Option(None, "--limit", help="Use at most N images of each folder (fixed-seed subset).",
                                    show_default="all"),
    seed: int = typer.Option(0, "--seed", help="Seed for splits, subsets and classifiers."),
    seeds: int = typer.Option(1, "--seeds", help="Fit every cell K times, with the seeds SEED..SEED+K-1 (new splits "
                              "and classifier seeds each); the matrix holds the mean, sd (ddof=1) and n of each metric."),
    metric: str = typer.Option("ap", "--metric", help="Metric of the printed table: ap, auc, acc, acc_cal, acc_real, "
                               "acc_fake, eer, tpr_at_5fpr."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first unreadable image instead of skipping it."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Decode images again instead of using the cache."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in --out."),
    jobs: int = typer.Option(1, "--jobs", help="Cells fitted at once, each in its own worker process."),
    patches: int | None = typer.Option(None, "--patches", help="Fit and score K crops per image (a square: 4, 9, 16) "
                                      "of --patch-size px on an aligned grid, aggregated per image.",
                                      show_default="one whole image"),
    patch_size: int | None = typer.Option(None, "--patch-size", help="Side of each patch in pixels (with --patches).",
                                          show_default="none: needed with --patches"),
    patch_reduce: str = typer.Option("mean", "--patch-reduce", help="Patch aggregation: mean (of logits) or max."),
    param: list[str] | None = typer.Option(None, "--param", "-p", help="A classifier parameter of one detector, "
                                           "FEATURE:CLASSIFIER:KEY=VALUE, e.g. "
                                           "colorprint:deviation:reals_per_component=9 (repeat).",
                                           show_default="each classifier's own"),
) -> None:
    """Train each detector on each row's fake sources and test it on every source: a transfer matrix."""
    from detectors.metrics import METRICS
    from pipelines.commands.params import parse_detector_params
    from pipelines.data.images import check_preprocess, load_data, load_images
    from pipelines.data.parity import parity_warnings
    from pipelines.evaluation.protocol import unique_specs
    from pipelines.evaluation.transfer import parse_rows, run_transfer
    from pipelines.evaluation.transfer_outputs import print_matrix
    from pipelines.runfolder import RunFolder

    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}.")
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1 (the number of repeats of every cell), got {seeds}.")
    check_preprocess(preprocess)
    if align:
        preprocess = "align"  # native crops on the JPEG grid; the re-encoding follows once the sets are read
    fakes_raw = [parse_fake(f) for f in fake]
    names = [n for n, _ in fakes_raw]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"Fake source name {dup[0]!r} is given twice; give each --fake a different NAME.")
    specs = unique_specs(detector)
    params = parse_detector_params(param, specs)
    row_kinds = parse_rows(rows)
    try:
        fr = [float(x) for x in fractions.split(",")]
    except ValueError:
        raise ValueError(f"--fractions {fractions!r} must be three numbers like 0.6,0.2,0.2.") from None
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-6:
        raise ValueError(f"--fractions {fractions!r} must be three non-negative numbers summing to 1, like 0.6,0.2,0.2.")
    if jpeg is not None and not 1 <= jpeg <= 100:
        raise ValueError(f"--jpeg {jpeg} must be a quality between 1 and 100.")
    if metric not in METRICS:
        raise ValueError(f"Unknown --metric {metric!r}; choose one of: {', '.join(METRICS)}.")

    fake_parts = {n: split_spec(s) for n, s in fakes_raw}
    real_parts = split_spec(real)
    if resolution is None:
        resolution = infer_resolution(next(iter(fake_parts.values()))[0])
        typer.echo(f"Resolution {resolution} px (from the fake set {names[0]}).")

    folder = RunFolder(out)
    if folder.is_finished() and not overwrite:
        raise FileExistsError(f"{out} already holds a finished transfer run; pass --overwrite to replace it or choose another --out.")
    config = {
        "real": real, "fakes": dict(fakes_raw), "detectors": specs, "rows": row_kinds, "resolution": resolution,
        "fractions": fr, "jpeg": jpeg, "attribute": attribute, "limit": limit, "seed": seed,
    }
    if preprocess != "resize":  # absent for the default, so earlier resize runs still resume
        config["preprocess"] = preprocess
    if seeds != 1:  # likewise: a one-seed run's config is that of runs made before --seeds
        config["seeds"] = seeds
    if params:  # likewise
        config["params"] = params
    if align:
        config["align"] = True
    if patches is not None:
        from detectors.patches import check_patch_options

        check_patch_options(patches, patch_size, patch_reduce, resolution)
        config.update(patches=patches, patch_size=patch_size, patch_reduce=patch_reduce)

    def load(part: str):
        if part.lower() == "embedded":
            return load_data("embedded", resolution, limit=limit, seed=seed, preprocess=preprocess)
        return load_images(part, resolution, limit=limit, strict=strict, cache=not no_cache, progress=True,
                           preprocess=preprocess)

    def load_spec(parts: list[str]):
        sets = [load(p) for p in parts]
        return sets[0] if len(sets) == 1 else (sets[0], sets[1])

    real_set = load_spec(real_parts)
    fake_sets = {n: load_spec(p) for n, p in fake_parts.items()}
    plan = None
    if align:
        from pipelines.data.align import align_sets, plan_for_sets

        plan = plan_for_sets({"real": real_set, **fake_sets}, max_quality=jpeg)
        aligned = align_sets({"real": real_set, **fake_sets}, plan)  # parity still reads the stored files
        real_set, fake_sets = aligned["real"], {n: aligned[n] for n in fake_sets}
        typer.echo(plan.text())

    def sets_of(x):
        return list(x) if isinstance(x, tuple) else [x]

    all_sets = {"real": sets_of(real_set), **{n: sets_of(s) for n, s in fake_sets.items()}}
    skipped = {n: [[f, r] for s in ss for f, r in s.skipped] for n, ss in all_sets.items()}
    counts = {n: [len(s) for s in ss] for n, ss in all_sets.items()}
    data_fp = ",".join(f"{n}:{'+'.join(s.fingerprint for s in ss)}" for n, ss in all_sets.items())
    # Only a folder that already holds a transfer run is resumed (its finished cells are kept).
    folder.start("transfer", config, seed=seed, data=data_fp, overwrite=overwrite,
                 resume=not overwrite and folder.manifest_path.exists())
    folder.update(images=counts, skipped=skipped)
    n_skipped = sum(len(v) for v in skipped.values())
    if n_skipped:
        typer.echo(f"Skipped {n_skipped} unreadable file(s); they are listed in {folder.manifest_path}.")
    parity = parity_warnings(real_set, fake_sets, jpeg=jpeg, preprocess=preprocess, resolution=resolution,
                             aligned=align)
    for warning in parity:  # on stdout: stderr stays the one-line "Error: ..." channel
        typer.echo(f"Warning: {warning}")
    folder.update(parity_warnings=parity, **({"align": plan.as_dict()} if plan is not None else {}))

    # Under --align, --jpeg only caps the alignment's quality: the sets are already re-encoded once.
    records = run_transfer(real_set, fake_sets, specs, out, rows=row_kinds, seed=seed, fractions=fr,
                           jpeg=None if align else jpeg, attribute=attribute, progress=True, jobs=jobs, seeds=seeds,
                           patches=patches, patch_size=patch_size, patch_reduce=patch_reduce,
                           detector_options=params or None)
    print_matrix(records, metric)
    if plan is not None:
        typer.echo(plan.text())
    folder.finish(outputs=["matrix.csv", "repeats.csv", "matrix.json", "heatmaps/", "cells/"] + (
        ["attribution.json", "attribution/"] if attribute else []))
    typer.echo(f"Wrote {out / 'matrix.csv'}, {out / 'matrix.json'} and heatmaps in {out / 'heatmaps'}.")


def register(app: typer.Typer) -> None:
    """Add the ``transfer`` command to the ``forgelab`` application."""
    app.command("transfer")(friendly(locked("transfer")(transfer)))
