"""What ``--help`` shows as an option's default, read from where the default lives.

Options that ``--config`` (or a saved run) may fill default to None on the command line, so
typer cannot show the value itself; these helpers read the effective default from the
dataclass that applies it (``gans.training.TrainConfig``), so help and behaviour never differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from gans.training import TrainConfig


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field ``name`` of ``cls`` (KeyError when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__} has no field {name!r} with a default.")


def shown(value: Any, none: str = "none") -> str:
    """A default as --help writes it: None as ``none`` (a phrase), sequences comma-separated."""
    if value is None:
        return none
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def train_default(name: str, none: str = "none") -> str:
    """TrainConfig's default of ``name`` as --help shows it (``none`` says what None means)."""
    return shown(field_default(TrainConfig, name), none)


def train_flag_default(name: str, flag: str) -> str:
    """TrainConfig's default of boolean ``name`` as the flag that selects it (``amp`` or ``no-amp``)."""
    return flag if field_default(TrainConfig, name) else f"no-{flag}"


def one_of(names: Iterable[str]) -> str:
    """Registered names as help text lists them: ``a, b or c`` (from the registry, so never stale)."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
