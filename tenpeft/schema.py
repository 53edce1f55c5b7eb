"""The shape of parsed JSON: one checker for the files tenpeft reads, naming the first wrong field by its path.

A schema is a kind (``str``, ``int``, ``bool``, ``dict``, ``list``; ``float``: any number, an int too;
``None``: null), a tuple of kinds (any of them), a dict (an object with these keys, each value matching
its schema; a key whose schema is ``Omittable(...)`` may be absent), ``[schema]`` (a list, each item
matching) or ``Each(schema)`` (an object of free keys, e.g. tensor names, each value matching).
"""
from __future__ import annotations

import numbers

_KINDS = {dict: "object", list: "list", str: "string", bool: "boolean", int: "int", float: "number", None: "null"}


class Each:
    """Schema of a JSON object whose keys are free names (tensor names), each value matching ``schema``."""

    def __init__(self, schema):
        self.schema = schema


class Omittable:
    """Schema of an object's field that may be absent (e.g. one that older files lack); present, it matches
    ``schema``."""

    def __init__(self, schema):
        self.schema = schema


def kind(value) -> str:
    """The JSON kind of a parsed value: object, list, string, int, number, boolean or null."""
    return _KINDS.get(None if value is None else type(value), type(value).__name__)


def is_number(value) -> bool:
    """Whether ``value`` is a number (an int or a float, numpy's too), not a boolean."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _a(of) -> str:
    name = _KINDS[of]
    return name if of is None else ("an " if name[0] in "aeiou" else "a ") + name


def _fits(value, of) -> bool:
    if of is None:
        return value is None
    if of is float:
        return is_number(value)
    return isinstance(value, of) and (of is bool or not isinstance(value, bool))  # True is not an int


def schema_error(value, schema, field: str = "") -> str | None:
    """Why ``value`` does not fit ``schema`` (the first wrong field, by its dotted path), or None."""
    at = (lambda key: f"{field}.{key}" if field else key)
    name = f"field '{field}'" if field else "the value"
    if isinstance(schema, (dict, Each)) and not isinstance(value, dict):
        return f"{name} must be an object, got {kind(value)}"
    if isinstance(schema, dict):
        missing = [key for key, sub in schema.items() if key not in value and not isinstance(sub, Omittable)]
        if missing:
            return f"field '{at(missing[0])}' is missing"
        return next((e for key, sub in schema.items() if key in value and
                     (e := schema_error(value[key], sub.schema if isinstance(sub, Omittable) else sub, at(key)))),
                    None)
    if isinstance(schema, Each):
        return next((e for key, sub in value.items() if (e := schema_error(sub, schema.schema, f"{field}[{key}]"))),
                    None)
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"{name} must be a list, got {kind(value)}"
        return next((e for i, v in enumerate(value) if (e := schema_error(v, schema[0], f"{field}[{i}]"))), None)
    kinds = schema if isinstance(schema, tuple) else (schema,)
    if any(_fits(value, k) for k in kinds):
        return None
    return f"{name} must be {' or '.join(_a(k) for k in kinds)}, got {kind(value)}"
