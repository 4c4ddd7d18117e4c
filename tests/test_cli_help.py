"""--help shows the effective default of every option, read from where the default lives."""

from __future__ import annotations

import dataclasses
import re

from typer.testing import CliRunner

from gans.training import TrainConfig
from pipelines.cli import app
from pipelines.evaluation.quality import DEFAULT_KID_SUBSET_SIZE


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def _defaults(text: str) -> dict[str, str]:
    """Option -> the text of its [default: ...] in a help page."""
    out = {}
    for line in text.splitlines():
        m = re.search(r"(--[a-z-]+).*\[default: \(?(.*?)\)?\]", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_train_help_shows_trainconfig_defaults():
    shown = _defaults(_help("train"))
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert shown["--steps"] == str(defaults["steps"]) == "1000"
    assert shown["--batch-size"] == str(defaults["batch_size"]) == "64"
    for option, field in (("--arch", "arch"), ("--upsampler", "upsampler"), ("--resolution", "resolution"),
                          ("--spectral-d-weight", "spectral_d_weight"), ("--ckpt-every", "ckpt_every"),
                          ("--seed", "seed"), ("--device", "device")):
        assert shown[option] == str(defaults[field]), option
    assert shown["--width"] == "the arch's" and defaults["width"] is None
    assert shown["--amp"] == ("amp" if defaults["amp"] else "no-amp")
    assert shown["--spectral-d"] == ("spectral-d" if defaults["spectral_d"] else "no-spectral-d")


def test_every_option_of_every_command_shows_a_default():
    """Options that take a value show a default or say they are required."""
    for command in (("train",), ("generate",), ("detect", "fit"), ("transfer",), ("metrics",), ("study", "x"),
                    ("quickstart",), ("data", "prepare")):
        text = _help(*command)
        for line in text.splitlines():
            m = re.match(r"\W*(?:\*\s+)?(--[a-z-]+)(?:\s+-\w)?\s+(--no-[a-z-]+\s+)?<(\w+)", line)
            # A plain on-switch (--quiet, --overwrite) is off unless given; an --x/--no-x pair shows its default.
            if not m or m.group(1) == "--help" or (m.group(3) == "bool" and not m.group(2)):
                continue
            assert "[default:" in line or "[required]" in line, f"{' '.join(command)}: {line.strip()}"
    assert _defaults(_help("metrics"))["--kid-subset-size"] == str(DEFAULT_KID_SUBSET_SIZE)
