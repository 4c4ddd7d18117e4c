"""``forgelab data ...``: prepare data sets and inspect image folders.

Lazy imports: the modules that do the work are imported inside each command, for start-up
time (every ``forgelab`` call, ``--help`` included, loads all command modules).
"""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines.errors import friendly

data_app = typer.Typer(help="Prepare data sets and inspect image folders.", no_args_is_help=True)


@data_app.command("prepare")
@friendly
def prepare(
    dataset: str = typer.Argument(..., help="Data set to prepare: imagewoof."),
    root: Path = typer.Option(..., "--root", help="Folder to put the data set in."),
    size: str = typer.Option("160", "--size", help="Image size of the archive: 160, 320 or full."),
    archive: Path | None = typer.Option(None, "--archive", help="Use this local archive instead of downloading.",
                                         show_default="download"),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected SHA-256 of the archive, checked when given.",
                                      show_default="not checked"),
    url: str | None = typer.Option(None, "--url", help="Download from this mirror instead of fast.ai's URL.",
                                   show_default="fast.ai's URL"),
    keep_archive: bool = typer.Option(False, "--keep-archive", help="Keep the downloaded archive after extracting."),
) -> None:
    """Download (or take --archive), verify and extract a data set; print where it is."""
    from pipelines.data.download import DATASETS
    from pipelines.data.images import imagewoof_split

    if dataset not in DATASETS:
        raise ValueError(f"Unknown data set {dataset!r}; choose one of: {', '.join(DATASETS)}.")
    folder = DATASETS[dataset](root, size, archive=archive, url=url, sha256=sha256,
                               keep_archive=keep_archive, progress=True)
    typer.echo(f"{dataset} is ready in {folder}")
    typer.echo(f"Use it with:  export FORGELAB_DATA={imagewoof_split(folder, 'train')}")


@data_app.command("info")
@friendly
def info(
    folder: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    max_sizes: int = typer.Option(8, "--max-sizes", help="How many of the most common sizes to list."),
) -> None:
    """Decode every image in a folder and print counts, modes, formats, sizes and unreadable files."""
    from pipelines.data.images import scan_images

    if max_sizes < 1:
        raise ValueError(f"--max-sizes must be a positive number of sizes to list, got {max_sizes}.")
    s = scan_images(folder, progress=True)
    if not s["readable"]:
        path, reason = s["skipped"][0]
        raise ValueError(f"None of the {s['files']} image file(s) in {folder} can be read (first: {path}: {reason}); "
                         "check the files or give another folder.")
    sizes = list(s["sizes"].items())
    more = f" (+{len(sizes) - max_sizes} more)" if len(sizes) > max_sizes else ""
    rows = [
        ("folder", s["folder"]),
        ("files", str(s["files"])),
        ("readable", str(s["readable"])),
        ("skipped", str(len(s["skipped"]))),
        ("formats", ", ".join(f"{k or '?'}: {v}" for k, v in s["formats"].items())),
        ("modes", ", ".join(f"{k}: {v}" for k, v in s["modes"].items())),
        ("sizes (WxH)", ", ".join(f"{k}: {v}" for k, v in sizes[:max_sizes]) + more),
        ("shorter side", f"{s['min_shorter_side']} .. {s['max_shorter_side']}"),
    ]
    # Plain lines (not a table) so long paths are never wrapped and the output greps well.
    for key, value in rows:
        typer.echo(f"{key:<13}{value}")
    for path, reason in s["skipped"]:
        typer.echo(f"skipped      {path}: {reason}")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the ``forgelab`` application."""
    app.add_typer(data_app, name="data")
