"""Tensorized-shape search works for any width (no hard-coded tables)."""
import math

import pytest

from tenpeft import TenpeftError, factorize, matrix_shape
from tenpeft.shapes import check_explicit_shapes


@pytest.mark.parametrize("rows,cols,expected", [
    (768, 8, (8, 8, 12, 8)), (8, 768, (8, 12, 8, 8)), (768, 64, (8, 8, 12, 8, 8)), (4096, 8, (8, 8, 8, 8, 8)),
])
def test_paper_shapes(rows, cols, expected):
    assert matrix_shape(rows, cols) == expected


@pytest.mark.parametrize("n", [1, 2, 7, 12, 97, 384, 512, 576, 768, 1024, 2048, 3072, 4096, 5120, 11008, 14336])
def test_any_width_factorizes_exactly(n):
    factors = factorize(n)
    assert math.prod(factors) == n and list(factors) == sorted(factors)


def test_large_prime_stays_one_factor():
    assert factorize(11008) == (4, 8, 8, 43)
    assert factorize(97) == (97,)


def test_explicit_shapes_validated():
    assert matrix_shape(768, 64, {"768x64": [8, 8, 12, 8, 8]}) == (8, 8, 12, 8, 8)
    with pytest.raises(TenpeftError, match="product"):
        matrix_shape(768, 64, {"768x64": [8, 8, 12, 8, 9]})
    with pytest.raises(TenpeftError, match="rows x cols"):
        check_explicit_shapes({"768-64": [8]})
