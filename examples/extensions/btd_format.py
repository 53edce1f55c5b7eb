"""A new format in one file: the block-term decomposition (BTD).

``T = sum_b G_b x_1 U_1^b x_2 ... x_d U_d^b``: R blocks, each a Tucker term with a core ``G_b``
(r_1 x ... x r_d) and factors ``U_i^b`` (n_i x r_i). Held as one core ``core (R, r_1, ..., r_d)``
and ``factor_i (R, n_i, r_i)``; the block index is one bond that joins every factor. Ranks:
``(R, r_1, ..., r_d)``; an int ``r`` means ``R = 2`` blocks of multilinear rank ``r``.
Params ``R * (prod r_i + sum n_i r_i)``. The core is zeroed at init (the adapter starts at 0).

    python studies/rank_ablation.py --import btd_format --methods lora --set lora.format=btd ...
"""
from __future__ import annotations

import math

import tenpeft
from tenpeft.formats import Factorization

BLOCKS = 2  # R for an int rank


class BTD(Factorization):
    """Block-term decomposition (see the module docstring)."""

    format_name = "btd"

    @classmethod
    def default_zero_factor(cls, shape):
        return "core"

    @classmethod
    def uniform_ranks(cls, shape, rank):
        return (BLOCKS, *(min(rank, n) for n in shape))

    @classmethod
    def per_mode_ranks(cls, shape, ranks):
        if len(ranks) != len(shape) + 1:
            raise tenpeft.TenpeftError(f"BTD over shape {list(shape)} takes (blocks, r_1..r_{len(shape)}): "
                                       f"{len(shape) + 1} ints, got {list(ranks)}")
        return ranks

    @classmethod
    def factor_shapes(cls, shape, ranks):
        blocks, inner = ranks[0], ranks[1:]
        return {"core": (blocks, *inner), **{f"factor_{i}": (blocks, n, r) for i, (n, r) in enumerate(zip(shape, inner))}}

    @classmethod
    def network(cls, shape, ranks):  # modes 0..d-1; bond d is the block, bonds d+1+i the Tucker ranks
        d = len(shape)
        return [("core", (d, *(d + 1 + i for i in range(d)))), *((f"factor_{i}", (d, i, d + 1 + i)) for i in range(d))]

    @classmethod
    def count(cls, shape, ranks):
        blocks, inner = ranks[0], ranks[1:]
        return blocks * (math.prod(inner) + sum(n * r for n, r in zip(shape, inner)))

    @classmethod
    def summed_terms(cls, ranks):
        return math.prod(ranks)


tenpeft.register_format("btd", BTD)
