"""Tucker: core ``G (r_1..r_d)`` times ``U_i (n_i x r_i)`` on each mode; params ``prod r + sum n_i r_i``."""
from __future__ import annotations

import math

from ..errors import TenpeftError
from .base import Factorization


class Tucker(Factorization, name="tucker"):
    """Tucker format; the core is zeroed at init, so every ``U_i`` learns from the second step."""

    @classmethod
    def default_zero_factor(cls, shape):
        return "core"

    @classmethod
    def uniform_ranks(cls, shape, rank):
        return tuple(rank for _ in shape)

    @classmethod
    def per_mode_ranks(cls, shape, ranks):
        if len(ranks) != len(shape):
            raise TenpeftError(f"Tucker needs one rank per mode: {len(shape)} for shape {list(shape)}, got {list(ranks)}")
        return ranks

    @classmethod
    def factor_shapes(cls, shape, ranks):
        shapes = {"core": tuple(ranks)}
        shapes.update({f"factor_{i}": (n, r) for i, (n, r) in enumerate(zip(shape, ranks))})
        return shapes

    @classmethod
    def network(cls, shape, ranks):
        d = len(shape)
        return [("core", tuple(range(d, 2 * d)))] + [(f"factor_{i}", (i, d + i)) for i in range(d)]

    @classmethod
    def count(cls, shape, ranks):
        return math.prod(ranks) + sum(n * r for n, r in zip(shape, ranks))

    @classmethod
    def summed_terms(cls, ranks):
        return math.prod(ranks)

    @classmethod
    def decompose(cls, array, ranks):
        from tensorly.decomposition import tucker

        core, factors = tucker(array, rank=[min(r, n) for r, n in zip(ranks, array.shape)], init="svd")
        return {"core": core, **{f"factor_{i}": f for i, f in enumerate(factors)}}
