"""``forgelab metrics REAL FAKE``: generator quality (FID, KID, IS, precision/recall) and spectral fidelity.

Lazy imports: the modules that do the work are imported inside each command, for start-up
time (every ``forgelab`` call, ``--help`` included, loads all command modules).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipelines.errors import friendly
from plumbing.files import json_safe


@friendly
def metrics(
    real: str = typer.Argument(..., help="Real images: a folder (searched recursively) or 'embedded'."),
    fake: str = typer.Argument(..., help="Fake images: a folder, e.g. one written by forgelab generate."),
    fid: bool = typer.Option(False, "--fid", help="Fréchet Inception Distance."),
    kid: bool = typer.Option(False, "--kid", help="Kernel Inception Distance (mean and std over subsets)."),
    isc: bool = typer.Option(False, "--isc", help="Inception Score of the fake set."),
    prc: bool = typer.Option(False, "--prc", help="Precision, recall and F-score (VGG16 features by default)."),
    spectral: bool = typer.Option(False, "--spectral", help="Spectral fidelity: radial/x/y L1 and cloaking score (no weights)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON instead of a table."),
    resolution: int | None = typer.Option(
        None, "--resolution", help="Working resolution R.",
        show_default="the fake set's manifest or image size"
    ),
    limit: int | None = typer.Option(None, "--limit", help="Use at most this many images of each set.", show_default="all"),
    feature_extractor: str | None = typer.Option(
        None, "--feature-extractor", help="A torch-fidelity feature extractor for all metrics.",
        show_default="Inception; VGG16 for --prc"
    ),
    feature_extractor_weights: Path | None = typer.Option(
        None, "--feature-extractor-weights", help="Local weights file for the feature extractor (offline machines).",
        show_default="torch.hub's download"
    ),
    prc_weights: Path | None = typer.Option(
        None, "--prc-weights", help="Local VGG16 weights file (vgg16-397923af.pth) for --prc (offline machines).",
        show_default="torch.hub's download"
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Where real-set features are cached.",
        show_default="$FORGELAB_CACHE/fidelity"
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the real-set cache."),
    kid_subset_size: int | None = typer.Option(
        None, "--kid-subset-size", help="KID subset size, clamped to the smaller set.",
        # pipelines.evaluation.quality.DEFAULT_KID_SUBSET_SIZE, written out: importing torch-fidelity for --help
        # costs seconds (tests/test_cli_help.py checks that the two agree).
        show_default="1000"
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per feature-extractor batch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of KID subsets, IS splits and cloaking folds.",
        show_default="torch-fidelity's, and 0 for cloaking"
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    """Measure how good FAKE images are against REAL ones (default: --fid --kid --spectral)."""
    from pipelines.evaluation.quality import metric_rows, quality_metrics

    chosen = {"fid": fid, "kid": kid, "isc": isc, "prc": prc, "spectral": spectral}
    if not any(chosen.values()):
        chosen = {"fid": True, "kid": True, "isc": False, "prc": False, "spectral": True}
    result = quality_metrics(
        real,
        fake,
        **chosen,
        feature_extractor=feature_extractor,
        feature_extractor_weights=feature_extractor_weights,
        prc_weights=prc_weights,
        cache_dir=cache_dir,
        cache=not no_cache,
        device=device,
        batch_size=batch_size,
        kid_subset_size=kid_subset_size,
        resolution=resolution,
        limit=limit,
        seed=seed,
        progress=not quiet and not as_json,
    )
    if as_json:
        typer.echo(json.dumps(json_safe(result), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{fake} vs {real}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metric_rows(result):
        table.add_row(name, value)
    console = Console()
    console.print(table)
    for note in result["notes"]:
        console.print(f"note: {note}")


def register(app: typer.Typer) -> None:
    """Add ``forgelab metrics`` to the application."""
    app.command("metrics")(metrics)
