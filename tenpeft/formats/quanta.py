"""QuanTA's circuit (quanta-fine-tuning/quanta) as a format: ``T (o_1..o_N, i_1..i_N)``, the
row-major view of ``ΔW``, is a product of one dense gate per pair of axes, applied to the input in
the official order ``(N, N-1), (N, N-2), .., (2, 1)`` (axes counted from 1). A gate on axes
``(p, q)`` maps their current sizes to ``(o_q, o_p)``: shape ``(o_q, o_p, n_q, n_p)``, params
``sum over pairs of (o_p o_q)(n_p n_q)`` (``(d_p d_q)^2`` when ``o = i``). Not a sum of rank-one
terms, so no rank: every intermediate axis is a bond between two gates."""
from __future__ import annotations

import math
from functools import lru_cache
from itertools import combinations

import torch

from ..errors import TenpeftError
from .base import Factorization


@lru_cache(maxsize=256)
def _gates(shape: tuple[int, ...]) -> tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]:
    """``(name, labels, sizes)`` of every gate in application order (labels: modes ``0..2N-1``, bonds above)."""
    n = len(shape) // 2
    out, label, size = shape[:n], {k: n + k for k in range(n)}, {k: shape[n + k] for k in range(n)}
    left, bond, gates = {k: n - 1 for k in range(n)}, 2 * n, []
    for p, q in combinations(range(n - 1, -1, -1), 2):
        inputs, in_sizes = (label[q], label[p]), (size[q], size[p])
        for k in (q, p):
            left[k] -= 1
            label[k], size[k] = (k, out[k]) if left[k] == 0 else (bond, out[k])
            bond += left[k] > 0
        gates.append((f"gate_{len(gates)}", (label[q], label[p], *inputs), (out[q], out[p], *in_sizes)))
    return tuple(gates)


class Quanta(Factorization, name="quanta"):
    """QuanTA's gate circuit over ``(o_1..o_N, i_1..i_N)``, ``N >= 2``. Gates are drawn as the official
    code draws them, Kaiming-uniform ``U(±sqrt(3 / (n_p n_q)))``; the last gate (next to the output) is
    zeroed, so ``T = 0`` at init (the official code instead subtracts a frozen copy of the first circuit)."""

    targets_init_std = False  # the official draw over each gate's fan-in; init_std is not used

    @classmethod
    def uniform_ranks(cls, shape, rank):
        if len(shape) % 2 or len(shape) < 4:
            raise TenpeftError(f"a QuanTA circuit needs the output axes then as many input axes (2N modes, N >= 2), "
                               f"got {list(shape)}")
        return (1,)

    @classmethod
    def factor_shapes(cls, shape, ranks):
        return {name: sizes for name, _, sizes in _gates(tuple(shape))}

    @classmethod
    def network(cls, shape, ranks):
        return [(name, labels) for name, labels, _ in _gates(tuple(shape))]

    @classmethod
    def count(cls, shape, ranks):
        return sum(math.prod(sizes) for _, _, sizes in _gates(tuple(shape)))

    @classmethod
    def summed_terms(cls, ranks):
        return 1

    @classmethod
    def default_zero_factor(cls, shape):
        return f"gate_{len(_gates(tuple(shape))) - 1}"

    @torch.no_grad()
    def reset_factors(self, init_std: float, factor_std: float | None = None) -> None:
        """The official Kaiming-uniform draw of every gate over its fan-in ``n_p n_q``; the zero gate zeroed."""
        for name in self.factor_names:
            gate = getattr(self, name)
            if gate.is_meta:
                continue
            if name == self.zero_factor:
                gate.zero_()
            else:
                bound = math.sqrt(3 / (gate.shape[2] * gate.shape[3]))
                gate.uniform_(-bound, bound)
