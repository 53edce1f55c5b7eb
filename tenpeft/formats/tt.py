"""Tensor train: cores ``G_i (r_{i-1} x n_i x r_i)``, ``r_0 = r_d = 1``; params ``sum r_{i-1} n_i r_i``."""
from __future__ import annotations

import math

import torch

from ..errors import TenpeftError
from .base import Factorization


class TT(Factorization, name="tt"):
    """Tensor-train format. ``rank``: an int for every inner bond, or the ``d-1`` inner ranks
    (``d+1`` with the boundary ones also accepted). The last core is zeroed at init."""

    @classmethod
    def default_zero_factor(cls, shape):
        return f"core_{len(shape) - 1}"

    @classmethod
    def uniform_ranks(cls, shape, rank):
        return (1, *(rank for _ in shape[1:]), 1)

    @classmethod
    def per_mode_ranks(cls, shape, ranks):
        d = len(shape)
        if len(ranks) == d + 1 and ranks[0] == ranks[-1] == 1:
            return ranks
        if len(ranks) == d - 1:
            return (1, *ranks, 1)
        raise TenpeftError(f"TT over shape {list(shape)} needs {d - 1} inner ranks, got {list(ranks)}")

    @classmethod
    def factor_shapes(cls, shape, ranks):
        return {f"core_{i}": (ranks[i], n, ranks[i + 1]) for i, n in enumerate(shape)}

    @classmethod
    def network(cls, shape, ranks):
        d = len(shape)
        return [(f"core_{i}", (d + i, i, d + i + 1)) for i in range(d)]

    @classmethod
    def count(cls, shape, ranks):
        return sum(ranks[i] * n * ranks[i + 1] for i, n in enumerate(shape))

    def reconstruct(self) -> torch.Tensor:
        """The full tensor by a chain of matmuls over the cores, left to right (the cheapest order
        for the small tensorized matrices this is used on; no einsum planning per call)."""
        cores = [getattr(self, name) for name in self.factor_names]
        out = cores[0].reshape(-1, cores[0].shape[-1])
        for core in cores[1:]:
            out = (out @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
        return out.reshape(self.shape)

    @classmethod
    def summed_terms(cls, ranks):
        return math.prod(ranks)

    @classmethod
    def decompose(cls, array, ranks):
        from tensorly.decomposition import tensor_train

        return {f"core_{i}": core for i, core in enumerate(tensor_train(array, rank=list(ranks)).factors)}
