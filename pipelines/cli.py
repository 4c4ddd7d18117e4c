"""The ``forgelab`` command line: one typer application that exposes every step of the lab."""

from __future__ import annotations

import importlib

import typer

from pipelines.errors import state

app = typer.Typer(
    name="forgelab",
    help="Train GANs with swappable upsamplers, generate fake sets, and measure how detectable they are.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
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
