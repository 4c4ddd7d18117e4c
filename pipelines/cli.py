"""The ``forgelab`` command line: one typer application that exposes every step of the lab."""

from __future__ import annotations

import importlib
import sys

import typer
from typer.core import TyperGroup

from pipelines.errors import state

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import exceptions as _cx


class _Forgelab(TyperGroup):
    """The root command: a usage error is one line, ``Error: ...``, on stderr (not a boxed panel)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except getattr(_cx, "NoArgsIsHelpError", ()) as e:  # a bare group: its help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except _cx.ClickException as e:
            where = getattr(getattr(e, "ctx", None), "command_path", None)
            hint = f"; see `{where} --help`" if where and isinstance(e, _cx.UsageError) else ""
            message = e.format_message().strip().rstrip(".")
            typer.echo(f"Error: {message}{hint}.", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("forgelab")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"forgelab {_version()}")
        raise typer.Exit()


app = typer.Typer(
    name="forgelab",
    cls=_Forgelab,
    help="Train GANs with swappable upsamplers, generate fake sets, and measure how detectable they are.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_show_version),
) -> None:
    state["debug"] = debug


def _register() -> None:
    # Each module adds its commands to ``app``, so that the modules stay small and each one
    # owns one group of commands.
    for name in ("gan", "detect", "data", "transfer", "bench", "study", "metrics"):
        importlib.import_module(f"pipelines.commands.{name}").register(app)


_register()


def main() -> None:
    """Entry point of the ``forgelab`` console script."""
    app()


if __name__ == "__main__":
    main()
