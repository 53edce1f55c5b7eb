"""Dense: the tensor itself (full fine-tuning of that tensor); params ``prod(n_i)``."""
from __future__ import annotations

import math

from .base import Factorization


class Dense(Factorization, name="dense"):
    """The unfactorized tensor. Takes no rank (``rank=1`` or ``'same'``); zero at init by default."""

    @classmethod
    def default_zero_factor(cls, shape):
        return "tensor"

    @classmethod
    def uniform_ranks(cls, shape, rank):
        return (1,)

    @classmethod
    def per_mode_ranks(cls, shape, ranks):
        if ranks == (1,):
            return ranks
        return super().per_mode_ranks(shape, ranks)

    @classmethod
    def factor_shapes(cls, shape, ranks):
        return {"tensor": tuple(shape)}

    @classmethod
    def network(cls, shape, ranks):
        return [("tensor", tuple(range(len(shape))))]

    @classmethod
    def count(cls, shape, ranks):
        return math.prod(shape)

    @classmethod
    def summed_terms(cls, ranks):
        return 1

    @classmethod
    def decompose(cls, array, ranks):
        return {"tensor": array}
