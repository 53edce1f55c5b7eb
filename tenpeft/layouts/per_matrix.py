"""Per-matrix layout: each target ``ΔW (out x in)`` is its own 2-way tensor.

With the CP format of rank ``r`` this is LoRA: ``factor_0 (out x r) = B`` (zero at init),
``factor_1 (in x r) = A^T``, ``ΔW = (α/r) B A``.
"""
from __future__ import annotations

import torch

from ..formats import get_format
from ..placements import Update, scaled


class MatrixUpdate(Update):
    """``ΔW = scale * T`` with ``T`` a factorized ``(out, in)`` tensor."""

    def __init__(self, in_features: int, out_features: int, fmt: str, rank, *, scale: float = 1.0,
                 dtype=torch.float32, device=None, **factor_kwargs):
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, scale
        self.compute_dtype = dtype
        self.factorization = get_format(fmt)((out_features, in_features), rank, dtype=dtype,
                                             device=device, **factor_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = self.factorization.mode_split(1, (0,))
        if split is not None:  # LoRA: (x @ A^T) @ (scale * B^T), the scale on the small factor
            a_t, b_t = split
            return (x @ a_t) @ scaled(b_t, self.scale)
        return scaled(self.factorization.contract(x, (1,), (0,)), self.scale)

    def delta_weight(self) -> torch.Tensor:
        return self.factorization.reconstruct() * self.scale
