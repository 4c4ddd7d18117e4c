"""The one rule for names that become file names: generators, fake sources, transfer rows."""

from __future__ import annotations

import re

# Letters, digits, '_', '.', '+' and '-', starting with a letter or digit: safe as a file name.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
NAME_RULE = "start with a letter or digit and use only letters, digits, '_', '.', '+' or '-'"
REAL_ONLY = "real-only"  # the transfer row fitted on real images alone
RESERVED_NAMES = ("real", "all", REAL_ONLY)  # the real set's files and the transfer matrix's own rows
# Transfer-matrix rows: one per source, their union, leave-one-out, real images alone.
ROW_KINDS = ("each", "all", "loo", REAL_ONLY)


def is_plain_name(name: object) -> bool:
    """True when ``name`` is a string that follows the name rule (reserved names included)."""
    return isinstance(name, str) and NAME_PATTERN.match(name) is not None
SWEEP_KINDS = ("jpeg", "blur", "resize")  # robustness conditions of forgelab bench --sweep (pipelines.evaluation.bench)
