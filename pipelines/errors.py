"""How the command line turns exceptions into one readable sentence (and a traceback with --debug)."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable

import typer

# Exceptions that carry a message written for the user: print it, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    OSError,
)

state = {"debug": False}


def friendly(fn: Callable) -> Callable:
    """Wrap a typer command so that errors end it with one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            typer.echo("Interrupted; finished files are kept and the run can be resumed.", err=True)
            raise typer.Exit(130) from None
        except USER_ERRORS as e:
            if state["debug"]:
                traceback.print_exc()
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(1) from None
        except Exception as e:  # a bug, not bad input: say so, keep it short unless --debug
            if state["debug"]:
                traceback.print_exc()
            else:
                typer.echo(
                    f"Error: unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback).",
                    err=True,
                )
            raise typer.Exit(2) from None

    return wrapper


def fail(message: str) -> None:
    """Stop a command with ``message`` and exit code 1."""
    typer.echo(f"Error: {message}", err=True)
    sys.stderr.flush()
    raise typer.Exit(1)
