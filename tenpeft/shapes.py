"""Tensorized-shape search: factor any matrix size into tensor modes near a target size.

Replaces the reference code's hard-coded tables keyed by hidden size (which missed 512, 2048, 3072
and had wrong entries): ``factorize(n)`` works for any ``n`` (``11008 = 2^8 * 43`` gives
``[4, 8, 8, 43]``), and every shape is validated against its matrix at construction.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Mapping, Sequence

from .errors import TenpeftError


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors + ([n] if n > 1 else [])


@lru_cache(maxsize=1024)
def factorize(n: int, target: int = 8) -> tuple[int, ...]:
    """Split ``n`` into ``k = round(log_target n)`` factors (ascending) as equal as ``n`` allows.

    "Equal" minimises the squared log-distance of each factor from ``n ** (1/k)``; a prime larger
    than that stays one factor. ``factorize(768) == (8, 8, 12)``, ``factorize(64) == (8, 8)``.
    """
    if n < 1:
        raise TenpeftError(f"cannot tensorize a dimension of size {n}")
    if n == 1:
        return (1,)
    k = max(1, round(math.log(n) / math.log(target)))
    best = min(_splits(tuple(_prime_factors(n)), k), key=lambda fs: _imbalance(fs, n, k))
    return tuple(sorted(best))


@lru_cache(maxsize=1024)
def split_into(n: int, k: int) -> tuple[int, ...]:
    """``n`` as exactly ``k`` factors (descending, padded with 1s where ``n`` has fewer prime factors)
    as equal as ``n`` allows (the rule of ``factorize``): ``split_into(4096, 4) == (8, 8, 8, 8)``."""
    if n < 1 or k < 1:
        raise TenpeftError(f"cannot split {n} into {k} factors")
    best = min(_splits(tuple(_prime_factors(n)), k), key=lambda fs: _imbalance(fs, n, k)) if n > 1 else ()
    return tuple(sorted(best, reverse=True)) + (1,) * (k - len(best))


def _splits(primes: tuple[int, ...], k: int) -> set[tuple[int, ...]]:
    """Every way to multiply the primes into at most ``k`` factors (as sorted tuples)."""
    found: set[tuple[int, ...]] = {()}
    for p in primes:
        grown = set()
        for fs in found:
            for i in range(len(fs)):
                grown.add(tuple(sorted(fs[:i] + (fs[i] * p,) + fs[i + 1:])))
            if len(fs) < k:
                grown.add(tuple(sorted(fs + (p,))))
        found = grown
    return found


def _imbalance(factors: tuple[int, ...], n: int, k: int) -> tuple[float, int]:
    ideal = math.log(n) / k
    return sum((math.log(f) - ideal) ** 2 for f in factors) + (k - len(factors)), -len(factors)


def matrix_shape(rows: int, cols: int, explicit: Mapping[str, Sequence[int]] | None = None,
                 target: int = 8) -> tuple[int, ...]:
    """Tensor shape for a ``rows x cols`` matrix: ``explicit["{rows}x{cols}"]`` (or the transposed
    key ``"{cols}x{rows}"``, so the paper's in x out notation works too) if given, else
    ``factorize(rows)`` ascending then ``factorize(cols)`` descending (the LoRETTA layout:
    768x8 -> [8, 8, 12, 8], 8x768 -> [8, 12, 8, 8], 768x64 -> [8, 8, 12, 8, 8])."""
    shape = explicit_shape(rows, cols, explicit)
    return shape if shape is not None else factorize(rows, target) + tuple(reversed(factorize(cols, target)))


def explicit_shape(rows: int, cols: int, explicit: Mapping[str, Sequence[int]] | None) -> tuple[int, ...] | None:
    """``explicit["{rows}x{cols}"]`` (or ``"{cols}x{rows}"``), checked to have product ``rows * cols``;
    None if neither key is given."""
    key = next((k for k in (f"{rows}x{cols}", f"{cols}x{rows}") if explicit and k in explicit), None)
    if key is None:
        return None
    shape = tuple(int(k) for k in explicit[key])
    if math.prod(shape) != rows * cols or min(shape, default=0) < 1:
        raise TenpeftError(
            f"tensor shape {list(shape)} for the {key} matrix has product {math.prod(shape)}, "
            f"not {rows * cols}; give positive factors whose product is {rows}*{cols}")
    return shape


def check_explicit_shapes(shapes: Mapping[str, Sequence[int]] | None) -> None:
    """Validate a ``{"ROWSxCOLS": [k1, k2, ...]}`` mapping (product must equal ROWS*COLS), or None."""
    if not isinstance(shapes or {}, Mapping):
        raise TenpeftError(f"shapes must map 'ROWSxCOLS' to a list of ints, got {shapes!r}")
    for key, shape in (shapes or {}).items():
        try:
            rows, cols = (int(v) for v in key.split("x"))
        except ValueError:
            raise TenpeftError(f"tensor-shape key {key!r} must look like '768x64' (rows x cols)") from None
        matrix_shape(rows, cols, {key: shape})


def check_shapes_used(shapes: Mapping[str, Sequence[int]] | None, matrices: set[tuple[int, int]]) -> None:
    """Every explicit shape must name a matrix that is really tensorized (else it was a typo)."""
    keys = {f"{r}x{c}" for r, c in matrices} | {f"{c}x{r}" for r, c in matrices}
    unused = sorted(set(shapes or {}) - keys)
    if unused:
        raise TenpeftError(f"shapes given for {unused} match no tensorized matrix of this injection; "
                           f"its matrices are {sorted({f'{r}x{c}' for r, c in matrices})}")


def row_modes(shape: Sequence[int], rows: int) -> int:
    """How many leading modes of ``shape`` (a row-major view of a ``rows x cols`` matrix) index the
    rows: the shortest prefix whose product is ``rows``; a TenpeftError if none is."""
    product = 1
    for k, n in enumerate(shape):
        product *= n
        if product == rows and k + 1 < len(shape):
            return k + 1
    raise TenpeftError(f"tensor shape {list(shape)} does not split into row modes of product {rows} followed by "
                       f"column modes: list the output (row) factors first, then the input (column) factors")
