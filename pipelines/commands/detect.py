"""``forgelab detect ...``: fit a FEATURE:CLASSIFIER detector on image folders, score images, evaluate.

Lazy imports: the modules that do the work are imported inside each command, for start-up
time (every ``forgelab`` call, ``--help`` included, loads all command modules).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import typer

from pipelines.commands.params import parse_assignments
from pipelines.errors import friendly
from pipelines.runfolder import locked
from plumbing.files import json_safe

detect_app = typer.Typer(help="Fit, apply and evaluate fake-image detectors (FEATURE:CLASSIFIER).", no_args_is_help=True)


def _unique_names(folders: list[Path]) -> list[str]:
    """Folder names as class names, made unique by position where two folders share a name."""
    names = [f.name or str(f) for f in folders]
    return [n if names.count(n) == 1 else f"{n}_{i + 1}" for i, n in enumerate(names)]


PREPROCESS_HELP = "resize (antialiased, default) or crop (centred native pixels at an even offset, keeps the 2x2 grid)."


def _load_sets(folders: list[Path], resolution: int, limit: int | None, progress: bool,
               preprocess: str = "resize") -> list:
    from pipelines.data.images import load_images

    sets = [load_images(f, resolution, limit=limit, progress=progress, preprocess=preprocess) for f in folders]
    for s in sets:
        if s.skipped:
            typer.echo(f"Skipped {len(s.skipped)} unreadable file(s) in {s.source} "
                       f"(first: {s.skipped[0][0]}: {s.skipped[0][1]}).", err=True)
    return sets


ALIGN_HELP = ("Native crops on the JPEG grid and, if any set is JPEG, every set re-encoded at one quality (the "
              "lowest found) and one chroma subsampling, so the detector cannot learn the codec.")


def _align(sets: list, cap: int | None = None, echo: bool = True) -> tuple[list, Any]:
    """The sets re-encoded by the alignment planned over all of them (``cap``: highest quality allowed), and the plan."""
    from dataclasses import replace

    from pipelines.data.align import apply_alignment, plan_for_sets

    plan = plan_for_sets({str(i): s for i, s in enumerate(sets)}, max_quality=cap)
    if echo:
        typer.echo(plan.text())
    return [replace(s, images=apply_alignment(s.images, plan)) for s in sets], plan


def _model_align(model: Path) -> dict | None:
    """The alignment a detector was fitted with (None when it was fitted without --align)."""
    try:
        return json.loads((model / "manifest.json").read_text(encoding="utf-8")).get("config", {}).get("align")
    except (OSError, ValueError, AttributeError):
        return None


def _model_preprocess(model: Path, given: str | None) -> str:
    """--preprocess as given, else the mode the detector in ``model`` was fitted with (resize for old models)."""
    from pipelines.data.images import check_preprocess

    if given is not None:
        return check_preprocess(given)
    try:
        cfg = json.loads((model / "manifest.json").read_text(encoding="utf-8")).get("config", {})
        return check_preprocess(cfg.get("preprocess", "resize"))
    except (OSError, ValueError, AttributeError):
        return "resize"


@detect_app.command("fit")
@friendly
@locked("detect fit")
def fit(
    detector: str = typer.Option("radial:svm", "--detector", "-d", help="FEATURE:CLASSIFIER, see `forgelab detect list`."),
    real: Path = typer.Option(..., "--real", help="Folder of real images."),
    fake: list[Path] | None = typer.Option(None, "--fake", help="Folder of fake images; repeat for several sources. "
                                           "Leave out to fit on real images alone (real-only classifiers).",
                                           show_default="none: real-only"),
    out: Path = typer.Option(..., "--out", help="Model folder to write."),
    resolution: int | None = typer.Option(None, "--resolution", "-r", help="Image side length in pixels.",
                                          show_default="the first --fake set's, as in transfer"),
    preprocess: str = typer.Option("resize", "--preprocess", help=PREPROCESS_HELP),
    align: bool = typer.Option(False, "--align", help=ALIGN_HELP),
    limit: int | None = typer.Option(None, "--limit", help="At most this many images per folder.", show_default="all"),
    val_real: Path | None = typer.Option(None, "--val-real", help="Validation real images.",
                                        show_default="20% of the training images, held out"),
    val_fake: list[Path] | None = typer.Option(None, "--val-fake", help="Validation fake images; repeat per source.",
                                              show_default="held out like --val-real"),
    multiclass: bool = typer.Option(False, "--multiclass", help="One class per --fake folder (attribution)."),
    param: list[str] | None = typer.Option(None, "--param", "-p", help="Classifier parameter KEY=VALUE, e.g. -p C=10.",
                                            show_default="the classifier's"),
    option: list[str] | None = typer.Option(None, "--option", "-o", help="Feature option KEY=VALUE, e.g. -o length=32.",
                                             show_default="the feature's"),
    grid: bool = typer.Option(False, "--grid", help="Grid-search the classifier's hyper-parameters (classical ones)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the validation split and the classifier."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    feature_batch_size: int | None = typer.Option(
        None, "--feature-batch-size", help="Images per feature batch.",
        show_default="512"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished model in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    patches: int | None = typer.Option(None, "--patches", help="Fit and score K crops per image (a square: 4, 9, 16) "
                                      "of --patch-size px on an aligned grid; images load at --resolution.",
                                      show_default="one whole image"),
    patch_size: int | None = typer.Option(None, "--patch-size", help="Side of each patch in pixels (with --patches).",
                                          show_default="none: needed with --patches"),
    patch_reduce: str = typer.Option("mean", "--patch-reduce", help="Patch aggregation: mean (of logits) or max."),
    patch_align: int = typer.Option(2, "--patch-align", help="Patch offsets are multiples of this: 2 keeps the 2x2 "
                                    "grid, 8 also the 8x8 grid of JPEG sources."),
) -> None:
    """Fit a detector on real and fake image folders (or real alone) and save it to --out."""
    from detectors.detector import META_FILE, Detector, supports_real_only
    from pipelines.data.images import check_preprocess
    from pipelines.data.parity import parity_warnings
    from pipelines.runfolder import RunFolder

    check_preprocess(preprocess)
    if align:
        preprocess = "align"

    params = parse_assignments(param, "--param")
    if grid:
        params["grid"] = True
    options = parse_assignments(option, "--option")
    if fake and (val_real is None) != (not val_fake):
        raise ValueError("Give both --val-real and --val-fake, or neither.")
    # Validate names and parameters before any image is decoded.
    fake = list(fake or [])
    if val_fake and not fake:
        raise ValueError("--val-fake needs --fake: a real-only fit takes no fake images at all.")
    if patches is not None:
        from detectors.patches import check_patch_options

        check_patch_options(patches, patch_size, patch_reduce, resolution)
    det = Detector(detector, options, device=device, feature_batch_size=feature_batch_size, seed=seed, patches=patches,
                   patch_size=patch_size, patch_reduce=patch_reduce, patch_align=patch_align, **params)
    if not fake and not supports_real_only(det.spec):
        raise ValueError(f"{det.spec} needs fake images to fit; give --fake, or use a real-only classifier such as deviation.")
    run = RunFolder(out)
    command = run.manifest().get("command") if run.manifest_path.is_file() else None
    if not overwrite and run.is_finished() and command != "detect fit":
        raise FileExistsError(f"{out} holds a finished '{command}' run, not a detector; choose another --out.")
    if not overwrite and (run.is_finished() or (out / META_FILE).exists()):
        raise FileExistsError(f"{out} already holds a fitted detector; pass --overwrite to replace it or choose another --out.")

    if resolution is None:
        # As `forgelab transfer` does: the fakes' native size, so no set is silently upsampled.
        from pipelines.commands.transfer import infer_resolution

        resolution = infer_resolution(str(fake[0]))
        typer.echo(f"Resolution {resolution} px (from the fake set {fake[0]}).")
    real_set, *fake_sets = _load_sets([real, *fake], resolution, limit, progress, preprocess)
    val_sets = _load_sets([val_real, *val_fake], resolution, limit, progress, preprocess) if val_real is not None else None
    parity = parity_warnings(real_set, dict(zip(_unique_names(fake), fake_sets, strict=True)), preprocess=preprocess,
                             resolution=resolution, aligned=align)
    plan = None
    if align:
        aligned, plan = _align([real_set, *fake_sets, *(val_sets or [])])
        real_set, fake_sets, val_sets = aligned[0], aligned[1:1 + len(fake_sets)], aligned[1 + len(fake_sets):] or None
    # detect fit has no --jpeg: its fix for a JPEG mismatch is to make the two sets alike beforehand.
    parity = [w.replace("pass --jpeg Q to re-encode both sets alike",
                        "re-encode both sets alike before fitting (`forgelab transfer --jpeg Q` does it for you)")
              for w in parity]
    for warning in parity:  # on stdout: stderr stays the one-line "Error: ..." channel
        typer.echo(f"Warning: {warning}")
    config = {
        "detector": det.spec, "real": str(real), "fake": [str(f) for f in fake], "resolution": resolution,
        "preprocess": preprocess,
        "limit": limit, "val_real": str(val_real) if val_real else None, "val_fake": [str(f) for f in val_fake or []],
        "multiclass": multiclass, "classifier_params": params, "feature_options": options,
        "feature_batch_size": feature_batch_size,
        **({"align": plan.as_dict()} if plan is not None else {}),
    }
    if patches is not None:
        config.update(patches=patches, patch_size=patch_size, patch_reduce=patch_reduce, patch_align=patch_align)
    data = ";".join(s.fingerprint for s in [real_set, *fake_sets, *(val_sets or [])])
    run.start("detect fit", config, seed=seed, device=str(det.device), data=data, overwrite=overwrite)
    det.fit(
        real_set.images, [s.images for s in fake_sets] if fake_sets else None,
        val_real=val_sets[0].images if val_sets else None,
        val_fake=[s.images for s in val_sets[1:]] if val_sets and fake_sets else None,
        multiclass=multiclass, fake_names=_unique_names(fake) if multiclass else None, progress=progress,
    )
    det.save(out)
    counts = {"real": len(real_set), "fake": [len(s) for s in fake_sets]}
    run.finish(threshold=det.threshold, validation=det.validation, counts=counts, parity_warnings=parity)
    v = det.validation
    at = f"{resolution} px" + (f" ({patches} patches of {patch_size} px each)" if patches else "")
    if not fake_sets:
        typer.echo(f"Fitted {det.spec} on {len(real_set)} real images alone at {at}; threshold {det.threshold:.4f} "
                   f"calls {1 - v['acc_real']:.1%} of the validation reals fake.")
    else:
        typer.echo(
            f"Fitted {det.spec} on {len(real_set)} real and {sum(counts['fake'])} fake images at {at}; "
            f"threshold {det.threshold:.4f} (validation AP {v['ap']:.3f}, AUC {v['auc']:.3f}, acc {v['acc_cal']:.3f})."
        )
    typer.echo(f"Saved to {out}")


@detect_app.command("score")
@friendly
def score(
    model: Path = typer.Argument(..., help="Model folder written by `forgelab detect fit`."),
    folders: list[Path] = typer.Argument(..., help="One or more folders of images to score."),
    out: Path = typer.Option(..., "--out", help="CSV file to write (path, score, label)."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many images per folder.", show_default="all"),
    preprocess: str | None = typer.Option(None, "--preprocess", help=PREPROCESS_HELP, show_default="as fitted"),
    resolution: int | None = typer.Option(None, "--resolution", "-r", help="Load images at this side (a patch detector "
                                         "crops its patches from them).", show_default="as fitted"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score every image in the folders with a saved detector and write a CSV."""
    from detectors.detector import Detector
    from pipelines.runfolder import check_writable, write_text

    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it or choose another --out.")
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give --out a CSV file name such as scores.csv.")
    # Checked before any image is scored: the CSV is only written at the end.
    out.parent.mkdir(parents=True, exist_ok=True)
    check_writable(out.parent, min_free_bytes=2**20)
    det = Detector.load(model, device=device)
    attribution = len(det.class_names) > 2
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "score", "label", *(["class"] if attribution else [])])
    n = n_fake = 0
    sets = _load_sets(folders, resolution or det.load_resolution, limit, progress, _model_preprocess(model, preprocess))
    fitted = _model_align(model)
    if fitted is not None:  # as fitted: the same final codec, at most at the fitted quality
        sets, _ = _align(sets, fitted.get("quality"))
    for s in sets:
        scores = det.score(s.images, progress=progress)
        classes = det.attribute(s.images) if attribution else None
        for i, (path, value) in enumerate(zip(s.files, scores, strict=True)):
            label = "fake" if value >= det.threshold else "real"
            extra = [det.class_names[det.classes.index(int(classes[i]))]] if attribution else []
            writer.writerow([path, f"{value:.6f}", label, *extra])
            n_fake += label == "fake"
        n += len(scores)
    write_text(out, buf.getvalue())
    typer.echo(f"Scored {n} images with {det.spec}: {n_fake} above the threshold {det.threshold:.4f} (fake). Wrote {out}")


@detect_app.command("eval")
@friendly
def evaluate_cmd(
    model: Path = typer.Argument(..., help="Model folder written by `forgelab detect fit`."),
    real: Path = typer.Option(..., "--real", help="Folder of real test images."),
    fake: list[Path] = typer.Option(..., "--fake", help="Folder of fake test images; repeat for several."),
    limit: int | None = typer.Option(None, "--limit", help="At most this many images per folder.", show_default="all"),
    preprocess: str | None = typer.Option(None, "--preprocess", help=PREPROCESS_HELP, show_default="as fitted"),
    align: bool | None = typer.Option(None, "--align/--no-align", help=ALIGN_HELP + " The quality is at most the "
                                      "one the detector was fitted with.", show_default="as fitted"),
    resolution: int | None = typer.Option(None, "--resolution", "-r", help="Load images at this side (a patch detector "
                                         "crops its patches from them).", show_default="as fitted"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Evaluate a saved detector on real and fake folders: AP, AUC, accuracy, EER, TPR at 5% FPR."""
    import numpy as np

    from detectors.detector import Detector
    from detectors.metrics import evaluate

    det = Detector.load(model, device=device)
    fitted = _model_align(model)
    align = fitted is not None if align is None else align
    real_set, *fake_sets = _load_sets([real, *fake], resolution or det.load_resolution, limit, progress and not as_json,
                                      "align" if align else _model_preprocess(model, preprocess))
    if align:
        (real_set, *fake_sets), _ = _align([real_set, *fake_sets], (fitted or {}).get("quality"), echo=not as_json)
    scores = np.concatenate([det.score(s.images) for s in [real_set, *fake_sets]])
    y = np.concatenate([np.zeros(len(real_set), np.int64)] + [np.ones(len(s), np.int64) for s in fake_sets])
    metrics = evaluate(y, scores, det.threshold)
    if as_json:
        payload = {"detector": det.spec, "model": str(model), "n_real": len(real_set), "n_fake": int(y.sum()),
                   "threshold": det.threshold, "metrics": metrics}
        typer.echo(json.dumps(json_safe(payload), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{det.spec} on {len(real_set)} real / {int(y.sum())} fake images")
    table.add_column("metric")
    table.add_column("value", justify="right")
    names = {"ap": "average precision", "auc": "ROC AUC", "acc": "accuracy @ 0.5",
             "acc_cal": f"accuracy @ {det.threshold:.4f}", "eer": "equal error rate", "tpr_at_5fpr": "TPR @ 5% FPR"}
    for key, value in metrics.items():
        table.add_row(names.get(key, key), f"{value:.4f}")
    Console().print(table)


@detect_app.command("list")
@friendly
def list_cmd() -> None:
    """Print every feature, classifier and valid FEATURE:CLASSIFIER pair."""
    from detectors.base import CLASSIFIERS
    from detectors.detector import valid_pairs
    from detectors.features import FEATURES

    pairs = valid_pairs()  # also fills the classifier registry
    width = max(map(len, [*FEATURES, *CLASSIFIERS])) + 2  # names never run into their descriptions
    typer.echo("features:")
    for name, fn in FEATURES.items():
        typer.echo(f"  {name:<{width}}{summary_line(fn)}")
    typer.echo("classifiers:")
    for name in sorted(CLASSIFIERS):
        cls = CLASSIFIERS[name]
        typer.echo(f"  {name:<{width}}[{cls.input_kind}] {summary_line(cls)}")
    typer.echo("valid pairs:")
    typer.echo("  " + " ".join(pairs))


def summary_line(obj: Any) -> str:
    """The first line of a docstring as plain text: no reST markup, no pointers into the source."""
    import re

    doc = (obj.__doc__ or "").strip()
    line = doc.splitlines()[0] if doc else ""
    line = re.sub(r":\w+:`~?([^`]+)`", r"\1", line)  # :func:`x` -> x
    line = re.sub(r"``([^`]+)``", r"\1", line)  # ``x`` -> x
    return re.sub(r"\s*\(see the module docstring\)", "", line)


def register(app: typer.Typer) -> None:
    """Add the ``detect`` command group to the ``forgelab`` application."""
    app.add_typer(detect_app, name="detect")
