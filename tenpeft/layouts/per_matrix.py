"""Per-matrix layout: each target ``ΔW (out x in)`` is its own tensor, 2-way ``(out, in)`` or,
tensorized, the row-major view ``(o_1..o_k, i_1..i_m)`` with ``prod o = out``, ``prod i = in``:
``ΔW[a, b] = T[o-index of a, i-index of b]`` (``ΔW = T.reshape(out, in)``).

With the CP format of rank ``r`` on ``(out, in)`` this is LoRA: ``factor_0 (out x r) = B`` (zero at
init), ``factor_1 (in x r) = A^T``, ``ΔW = (α/r) B A``. On ``(o_1, o_2, i_1, i_2)`` a format whose
factors carry modes ``(o_1, i_1)`` and ``(o_2, i_2)`` is the Kronecker product ``ΔW = A ⊗ B``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..formats import get_format
from ..placements import Update, scaled
from ..shapes import row_modes


class MatrixUpdate(Update):
    """``ΔW = scale * T.reshape(out, in)`` with ``T`` a factorized tensor of shape ``shape``
    (default ``(out, in)``; else row modes then column modes, see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, fmt: str, rank, *, scale: float = 1.0,
                 shape: Sequence[int] | None = None, dtype=torch.float32, device=None, **factor_kwargs):
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, scale
        shape = tuple(shape) if shape is not None else (out_features, in_features)
        k = row_modes(shape, out_features)
        self.out_modes, self.in_modes, self.in_shape = tuple(range(k)), tuple(range(k, len(shape))), shape[k:]
        self.factorization = get_format(fmt)(shape, rank, dtype=dtype, device=device, **factor_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = self.factorization.mode_split(1, (0,)) if len(self.factorization.shape) == 2 else None
        if split is not None:  # LoRA: (x @ A^T) @ (scale * B^T), the scale on the small factor
            a_t, b_t = split
            return (x @ a_t) @ scaled(b_t, self.scale)
        y = self.factorization.contract(x.unflatten(-1, self.in_shape), self.in_modes, self.out_modes)
        return scaled(y.flatten(y.dim() - len(self.out_modes)), self.scale)

    def delta_weight(self) -> torch.Tensor:
        return self.factorization.reconstruct().reshape(self.out_features, self.in_features) * self.scale
