"""Kronecker format (KronA, LoKr): ``T (o1, o2, i1, i2)`` as ``A (o1 x i1)`` and ``B (o2 x i2)``,
``T[a, b, c, e] = A[a, c] B[b, e]``, whose row-major ``(o1 o2 x i1 i2)`` view is ``kron(A, B)``.
With rank ``r < max(o2, i2) / 2`` (LyCORIS/PEFT LoKr's rule) ``B = B_a B_b`` is low-rank
(``B_a (o2 x r)``, ``B_b (r x i2)``); params ``o1 i1 + o2 i2`` or ``o1 i1 + r (o2 + i2)``."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import TenpeftError
from .base import Factorization


def kron_factor_pair(dimension: int, factor: int = -1) -> tuple[int, int]:
    """``(m, n)`` with ``m * n = dimension``: LoKr's ``factorization``. ``factor > 0`` dividing
    ``dimension`` gives ``(factor, dimension / factor)``; ``-1`` the divisor pair ``m <= n`` closest to
    the square root; another ``factor`` the closest such pair with ``m <= factor``."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    limit = dimension if factor == -1 else factor
    best = (1, dimension)
    for m in range(1, math.isqrt(dimension) + 1):
        if dimension % m == 0 and m <= limit:
            best = (m, dimension // m)
    return best


def _low_rank(shape, rank: int) -> bool:
    return rank < max(shape[1], shape[3]) / 2


class Kronecker(Factorization, name="kron"):
    """``kron(A, B)`` over ``(o1, o2, i1, i2)``, ``B`` low-rank below the LoKr threshold; ``A`` is
    zeroed at init (PEFT LoKr's default)."""

    @classmethod
    def uniform_ranks(cls, shape, rank):
        if len(shape) != 4:
            raise TenpeftError(f"a Kronecker update needs a 4-way shape (o1, o2, i1, i2), got {list(shape)}")
        return (rank,)

    @classmethod
    def factor_shapes(cls, shape, ranks):
        o1, o2, i1, i2 = shape
        if _low_rank(shape, ranks[0]):
            return {"a": (o1, i1), "b_a": (o2, ranks[0]), "b_b": (ranks[0], i2)}
        return {"a": (o1, i1), "b": (o2, i2)}

    @classmethod
    def network(cls, shape, ranks):
        if _low_rank(shape, ranks[0]):
            return [("a", (0, 2)), ("b_a", (1, 4)), ("b_b", (4, 3))]
        return [("a", (0, 2)), ("b", (1, 3))]

    @classmethod
    def count(cls, shape, ranks):
        o1, o2, i1, i2 = shape
        return o1 * i1 + (ranks[0] * (o2 + i2) if _low_rank(shape, ranks[0]) else o2 * i2)

    @classmethod
    def summed_terms(cls, ranks):
        return ranks[0]

    @classmethod
    def default_zero_factor(cls, shape):
        return "a"


@torch.no_grad()
def lokr_init(tensor: Kronecker) -> None:
    """PEFT LoKr's default: every factor but the zero one ``kaiming_uniform_(a=sqrt(5))``, i.e.
    ``U(±1/sqrt(fan_in))`` over its column count."""
    for name in tensor.factor_names:
        factor = getattr(tensor, name)
        if name != tensor.zero_factor and not factor.is_meta:
            nn.init.kaiming_uniform_(factor, a=math.sqrt(5))
