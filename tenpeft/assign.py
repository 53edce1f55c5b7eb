"""``KEY=VALUE`` arguments (``--set``, ``--slurm-set``): the one parser, VALUE read as JSON when it parses."""
from __future__ import annotations

import json

from .errors import TenpeftError


def parse_value(text: str):
    """``text`` as JSON (``16``, ``1e-3``, ``true``, ``["q", "v"]``, ``"tt"``), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(item: str, flag: str, example: str) -> tuple[str, object]:
    """``(KEY, VALUE)`` of ``item``; a TenpeftError naming ``flag`` and showing ``example`` unless it has both."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise TenpeftError(f"{flag} {item!r}: write KEY=VALUE, e.g. {example}")
    return key, parse_value(value)


def parse_assignments(items, flag: str, example: str) -> dict:
    """Every ``KEY=VALUE`` of ``items`` as a dict; a key given twice is a TenpeftError."""
    out = {}
    for item in items or []:
        key, value = parse_assignment(item, flag, example)
        if key in out:
            raise TenpeftError(f"{flag} {item!r}: {key} is already set to {out[key]!r}; give each key once")
        out[key] = value
    return out
