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
    from pipelines.study.config import packaged_configs

    return f"A study config: a .toml file, or the name of a packaged one ({', '.join(packaged_configs())})."


def _quickstart_help() -> str:
    from pipelines.study.config import load_config

    # From the packaged config itself, so the help names exactly the generators it trains.
    kinds = list(dict.fromkeys(g.upsampler for g in load_config("quickstart").generators))
    return (f"Run the packaged quickstart study: embedded photos, 32 px, a small DCGAN per upsampler "
            f"({', '.join(kinds)}) plus one with a spectral discriminator; minutes on a CPU.")


@friendly
def study(
    config: str = typer.Argument(..., help=_study_options_help()),
    out: Path = typer.Option(None, "--out", help="Study folder.",
                              show_default="outputs/<study name>"),
    data: str = typer.Option(None, "--data", help="Real images: a folder or 'embedded'.",
                              show_default="the config's, else $FORGELAB_DATA"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the study in --out and start over."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted study in --out (finished steps are kept)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config value, e.g. --set train.steps=1500 (repeatable).",
                                show_default="none"),
    executor: str = typer.Option(None, "--executor", help="Run the steps here ('local') or as Ray tasks ('ray').",
                                  show_default="the config's [study] executor, else local"),
    address: str = typer.Option(None, "--address", help="The Ray cluster to use with --executor ray, e.g. 'auto'.",
                                 show_default="a Ray runtime on this machine"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    """Run a study from a TOML config: train, generate, spectra, metrics, transfer matrix, report.

    Rerun on a finished study after editing its config, it runs only the steps that are new or
    changed (a detector or generator added, more training steps) and rebuilds the report.
    """
    from pipelines.study.config import load_config
    from pipelines.study.run import run_study

    _check_flags(resume, overwrite)
    cfg = load_config(config, overrides=tuple(set_ or ()))
    executor = _check_executor(executor or cfg.study.executor, address)
    target = out if out is not None else Path("outputs") / cfg.study.name
    with folder_lock(target, "study"):
        report = run_study(cfg, target, data=data, overwrite=overwrite, progress=not quiet, executor=executor,
                           address=address, resume=resume)
    typer.echo(f"Report: {report}")


@friendly
def quickstart(
    out: Path = typer.Option(QUICKSTART_OUT, "--out", help="Study folder."),
    data: str = typer.Option(None, "--data", help="Real images instead of the embedded sample photos: a folder.",
                              show_default="embedded"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the quickstart in --out and start over."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted quickstart in --out."),
    executor: str = typer.Option(None, "--executor", help="Run the steps here ('local') or as Ray tasks ('ray').",
                                  show_default="the config's [study] executor, else local"),
    address: str = typer.Option(None, "--address", help="The Ray cluster to use with --executor ray, e.g. 'auto'.",
                                 show_default="a Ray runtime on this machine"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    # The help text is _quickstart_help(), given at registration (it lists the registry's upsamplers).
    from pipelines.study.run import run_study

    _check_flags(resume, overwrite)
    executor = _check_executor(executor or "local", address)
    with folder_lock(out, "quickstart"):
        report = run_study("quickstart", out, data=data, overwrite=overwrite, progress=not quiet, executor=executor,
                           address=address, resume=resume)
    typer.echo(f"Report: {report}")


def _check_flags(resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pass one of them.")


def _check_executor(name: str, address: str | None) -> str:
    """A known executor, with Ray installed when it is ``ray``, checked before the folder is locked."""
    from pipelines.study.executors import check_executor, require_ray

    if check_executor(name) == "ray":
        require_ray()
    elif address is not None:
        raise ValueError(f"--address {address} needs --executor ray; add it or leave --address out.")
    return name


@friendly
def report(
    run_dir: Path = typer.Argument(..., help="A study folder (the --out of forgelab study)."),
) -> None:
    """Rebuild report.html of a study folder from the files in it."""
    from pipelines.report.page import write_report

    typer.echo(f"Report: {write_report(run_dir)}")


def register(app: typer.Typer) -> None:
    """Add the study, quickstart and report commands to ``app``."""
    app.command("study")(study)
    app.command("quickstart", help=_quickstart_help())(quickstart)
    app.command("report")(report)
