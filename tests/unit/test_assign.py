"""The one KEY=VALUE parser (--set, --slurm-set)."""
from __future__ import annotations

import pytest

from tenpeft.assign import parse_assignment, parse_assignments, parse_value
from tenpeft.errors import TenpeftError


def test_values_are_json_when_they_parse_else_strings():
    assert [parse_value(v) for v in ("16", "1e-3", "true", '["q", "v"]', '"tt"', "tt", "")] == \
        [16, 1e-3, True, ["q", "v"], "tt", "tt", ""]
    assert parse_assignment(" alpha =16", "--set", "x=1") == ("alpha", 16)


@pytest.mark.parametrize("items, message", [(["alpha"], "--set 'alpha': write KEY=VALUE, e.g. rank=4"),
                                            (["=3"], "write KEY=VALUE"),
                                            (["a=1", "a=2"], "a is already set to 1; give each key once")])
def test_a_bad_assignment_is_one_error_naming_the_flag(items, message):
    with pytest.raises(TenpeftError, match=message.replace("(", r"\(")):
        parse_assignments(items, "--set", "rank=4")


def test_assignments_collect_into_one_dict():
    assert parse_assignments(["account=lab", "nodes=2"], "--slurm-set", "account=lab") == {"account": "lab", "nodes": 2}
    assert parse_assignments(None, "--slurm-set", "account=lab") == {}
