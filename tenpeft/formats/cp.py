"""CP (CANDECOMP/PARAFAC): ``T = sum_k a_1[:,k] o ... o a_d[:,k]``; params ``r * sum(n_i)``."""
from __future__ import annotations

from .base import Factorization


class CP(Factorization, name="cp"):
    """CP format with factors ``factor_i (n_i x r)``; ``factor_{d-1}`` is zeroed at init."""

    @classmethod
    def default_zero_factor(cls, shape):
        return f"factor_{len(shape) - 1}"

    @classmethod
    def uniform_ranks(cls, shape, rank):
        return (rank,)

    @classmethod
    def per_mode_ranks(cls, shape, ranks):
        if len(ranks) == 1:
            return ranks
        return super().per_mode_ranks(shape, ranks)

    @classmethod
    def factor_shapes(cls, shape, ranks):
        return {f"factor_{i}": (n, ranks[0]) for i, n in enumerate(shape)}

    @classmethod
    def network(cls, shape, ranks):
        bond = len(shape)
        return [(f"factor_{i}", (i, bond)) for i in range(len(shape))]

    @classmethod
    def count(cls, shape, ranks):
        return ranks[0] * sum(shape)

    @classmethod
    def summed_terms(cls, ranks):
        return ranks[0]

    @classmethod
    def decompose(cls, array, ranks):
        from tensorly.decomposition import parafac

        weights, factors = parafac(array, ranks[0], init="svd" if ranks[0] <= min(array.shape) else "random",
                                   n_iter_max=500, tol=1e-12, random_state=0)
        factors[0] = factors[0] * weights
        return {f"factor_{i}": f for i, f in enumerate(factors)}
