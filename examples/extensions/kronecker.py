"""A Kronecker update in one file: ``ΔW = A ⊗ B`` (KronA / LoKr without the low-rank factor), as a
pure format over tenpeft's tensorized per-matrix option.

``lora`` with ``shapes={"OUTxIN": [o1, o2, i1, i2]}`` views each ``ΔW (o1*o2 x i1*i2)`` as the
4-way tensor ``T (o1, o2, i1, i2)`` (output modes first). The format holds ``T`` as two factors
that each carry two modes and share no bond: ``A (o1 x i1)`` and ``B (o2 x i2)``, so
``T[a, b, c, e] = A[a, c] B[b, e]``, which reshaped is ``kron(A, B)``. Params ``o1 i1 + o2 i2``;
``B`` is zeroed at init. ``kron_lora`` is the method (Q and V, like LoRA).

    python studies/rank_ablation.py --import kronecker --methods kron_lora --ranks 1 \\
        --set 'kron_lora.shapes={"32x32": [4, 8, 4, 8]}' ...
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import tenpeft
from tenpeft.formats import Factorization
from tenpeft.methods import METHODS
from tenpeft.methods.per_target import LoraConfig


class Kronecker(Factorization):
    """``T (o1, o2, i1, i2)`` as ``A (o1, i1)`` and ``B (o2, i2)``: the row-major view of ``A ⊗ B``."""

    format_name = "kron"

    @classmethod
    def uniform_ranks(cls, shape, rank):
        if len(shape) != 4:
            raise tenpeft.TenpeftError(f"a Kronecker update needs a 4-way shape (o1, o2, i1, i2), got {list(shape)}")
        return (1,)

    @classmethod
    def factor_shapes(cls, shape, ranks):
        o1, o2, i1, i2 = shape
        return {"a": (o1, i1), "b": (o2, i2)}

    @classmethod
    def network(cls, shape, ranks):  # each factor carries two of the modes; no bond
        return [("a", (0, 2)), ("b", (1, 3))]

    @classmethod
    def count(cls, shape, ranks):
        o1, o2, i1, i2 = shape
        return o1 * i1 + o2 * i2

    @classmethod
    def summed_terms(cls, ranks):
        return 1

    @classmethod
    def default_zero_factor(cls, shape):
        return "b"


@dataclass
class KronLoraConfig(LoraConfig):
    """LoRA's targets and placement with ``ΔW = A ⊗ B``; give ``shapes`` per matrix size."""

    format: str = "kron"


tenpeft.register_format("kron", Kronecker)
tenpeft.register_method(dataclasses.replace(METHODS["lora"], name="kron_lora", config=KronLoraConfig))
