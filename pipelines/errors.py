"""How the command line turns exceptions into one readable sentence (and a traceback with --debug)."""

from __future__ import annotations

import functools
import inspect
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
    interrupted = interrupt_message(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            typer.echo(interrupted, err=True)
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


def interrupt_message(fn: Callable) -> str:
    """What Ctrl-C prints: how to continue, naming ``--resume`` when the command has it."""
    try:
        has_resume = "resume" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        has_resume = False
    how = ("run the same command with --resume to continue" if has_resume
           else "run the same command again to finish it")
    return f"Interrupted; finished files are kept: {how}."


def fail(message: str) -> None:
    """Stop a command with ``message`` and exit code 1."""
    typer.echo(f"Error: {message}", err=True)
    sys.stderr.flush()
    raise typer.Exit(1)
