"""tenpeft.schema: the one checker of parsed JSON's shape (adapter configs, run records)."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from tenpeft.schema import Each, Omittable, is_number, kind, schema_error

SCHEMA = {"name": str, "count": int, "score": (float, None), "tags": [str], "extra": Omittable({"on": bool}),
          "tensors": Each({"shape": [int]})}
GOOD = {"name": "a", "count": 2, "score": 0.5, "tags": ["x"], "tensors": {"w": {"shape": [2, 3]}}}


def test_a_fitting_value_has_no_error():
    assert schema_error(GOOD, SCHEMA) is None
    assert schema_error({**GOOD, "extra": {"on": False}}, SCHEMA) is None  # an omittable field, present
    assert schema_error(OrderedDict(GOOD), SCHEMA) is None  # a dict subclass is an object


@pytest.mark.parametrize("value", [1, 2.5, np.float32(0.25), np.int64(3), None])
def test_float_is_any_number_and_none_is_null(value):
    assert schema_error({**GOOD, "score": value}, SCHEMA) is None


@pytest.mark.parametrize("edit,message", [
    ({"count": True}, "field 'count' must be an int, got boolean"),  # True is not an int
    ({"count": 1.0}, "field 'count' must be an int, got number"),
    ({"score": False}, "field 'score' must be a number or null, got boolean"),
    ({"score": "high"}, "field 'score' must be a number or null, got string"),
    ({"tags": "x"}, "field 'tags' must be a list, got string"),
    ({"tags": ["x", 1]}, "field 'tags[1]' must be a string, got int"),
    ({"extra": {"on": 1}}, "field 'extra.on' must be a boolean, got int"),
    ({"extra": {}}, "field 'extra.on' is missing"),
    ({"tensors": {"w": {"shape": ["2"]}}}, "field 'tensors[w].shape[0]' must be an int, got string"),
    ({"tensors": []}, "field 'tensors' must be an object, got list"),
])
def test_the_first_wrong_field_is_named_by_its_path(edit, message):
    assert schema_error({**GOOD, **edit}, SCHEMA) == message


def test_a_missing_field_and_a_wrong_top_level():
    assert schema_error({k: v for k, v in GOOD.items() if k != "count"}, SCHEMA) == "field 'count' is missing"
    assert schema_error([GOOD], SCHEMA) == "the value must be an object, got list"
    assert schema_error([GOOD], {"a": int}, "config") == "field 'config' must be an object, got list"


def test_kinds_and_numbers():
    assert [kind(v) for v in ({}, [], "s", True, 1, 1.5, None)] == [
        "object", "list", "string", "boolean", "int", "number", "null"]
    assert is_number(np.float64(1)) and is_number(3) and not is_number(True) and not is_number("3")
