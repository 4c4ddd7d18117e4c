"""Commands ``forgelab study``, ``forgelab quickstart`` and ``forgelab report``.

Lazy imports: the modules that do the work are imported inside each command, for start-up
time (every ``forgelab`` call, ``--help`` included, loads all command modules).
"""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines.errors import friendly
from plumbing.locks import folder_lock

QUICKSTART_OUT = Path("outputs") / "quickstart"


def _study_options_help() -> str:
    return "A study config: a .toml file, or the name of a packaged one (quickstart, imagewoof-dcgan32, imagewoof-sngan64)."


@friendly
def study(
    config: str = typer.Argument(..., help=_study_options_help()),
    out: Path = typer.Option(None, "--out", help="Study folder.",
                              show_default="outputs/<study name>"),
    data: str = typer.Option(None, "--data", help="Real images: a folder or 'embedded'.",
                              show_default="the config's, else $FORGELAB_DATA"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete a finished study in --out and run it again."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config value, e.g. --set train.steps=1500 (repeatable).",
                                show_default="none"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    """Run a study from a TOML config: train, generate, spectra, metrics, transfer matrix, report (resumable)."""
    from pipelines.study import run_study
    from pipelines.study_config import load_config

    cfg = load_config(config, overrides=tuple(set_ or ()))
    target = out if out is not None else Path("outputs") / cfg.study.name
    with folder_lock(target, "study"):
        report = run_study(cfg, target, data=data, overwrite=overwrite, progress=not quiet)
    typer.echo(f"Report: {report}")


@friendly
def quickstart(
    out: Path = typer.Option(QUICKSTART_OUT, "--out", help="Study folder."),
    data: str = typer.Option(None, "--data", help="Real images instead of the embedded sample photos: a folder.",
                              show_default="embedded"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete a finished quickstart in --out and run it again."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    """Run the packaged quickstart study (embedded photos, 32 px, six upsamplers; minutes on a CPU)."""
    from pipelines.study import run_study

    with folder_lock(out, "quickstart"):
        report = run_study("quickstart", out, data=data, overwrite=overwrite, progress=not quiet)
    typer.echo(f"Report: {report}")


@friendly
def report(
    run_dir: Path = typer.Argument(..., help="A study folder (the --out of forgelab study)."),
) -> None:
    """Rebuild report.html of a study folder from the files in it."""
    from pipelines.report import write_report

    typer.echo(f"Report: {write_report(run_dir)}")


def register(app: typer.Typer) -> None:
    """Add the study, quickstart and report commands to ``app``."""
    app.command("study")(study)
    app.command("quickstart")(quickstart)
    app.command("report")(report)
