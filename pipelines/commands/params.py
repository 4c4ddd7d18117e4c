"""Parameters given on the command line: ``KEY=VALUE`` for one detector, ``FEATURE:CLASSIFIER:KEY=VALUE`` for one of several."""

from __future__ import annotations

import json
from typing import Any


def parse_assignments(items: list[str] | None, what: str) -> dict[str, Any]:
    """Turn ``["C=10", "kernel=linear"]`` into ``{"C": 10, "kernel": "linear"}`` (values read as JSON when they parse)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} {item!r} must look like KEY=VALUE, e.g. C=10.")
        raw = raw.strip()
        python_words = {"True": True, "False": False, "None": None}
        if raw in python_words:
            value = python_words[raw]
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        out[key.strip()] = value
    return out


# Keys a command sets for every detector itself; a --param may not set them for one.
COMMAND_KEYS = ("seed", "device", "patches", "patch_size", "patch_reduce", "patch_align")


def parse_detector_params(items: list[str] | None, specs: list[str]) -> dict[str, dict[str, Any]]:
    """Turn ``["colorprint:deviation:floor=1"]`` into ``{"colorprint:deviation": {"floor": 1}}``.

    Each item is ``FEATURE:CLASSIFIER:KEY=VALUE`` for one of ``specs`` (the command's detectors);
    every detector's parameters are checked by building it, so a wrong key or value stops the
    command before any image is read.
    """
    from detectors.detector import Detector

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        left, sep, _ = item.partition("=")
        spec, colon, key = left.rpartition(":")
        if not sep or not colon or ":" not in spec or not key.strip():
            raise ValueError(f"--param {item!r} must look like FEATURE:CLASSIFIER:KEY=VALUE, "
                             "e.g. colorprint:deviation:reals_per_component=9.")
        spec = spec.strip()
        if spec not in specs:
            raise ValueError(f"--param {item!r} names {spec!r}, which is not among the detectors "
                             f"({', '.join(specs)}); add it with --detector or fix the name.")
        if key.strip() in COMMAND_KEYS:
            raise ValueError(f"--param {item!r} sets {key.strip()!r}, which the command sets for every detector; "
                             "use the command's own option.")
        out.setdefault(spec, {}).update(parse_assignments([item[len(spec) + 1 :]], "--param"))
    for spec, params in out.items():
        Detector(spec, **params)
    return out
