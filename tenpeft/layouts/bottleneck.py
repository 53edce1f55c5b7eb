"""Tensorized-bottleneck layout (LoRETTA): matrices reshaped to tensors held in a format.

A ``rows x cols`` matrix is reshaped (row-major) to a tensor of shape ``(k_1..k_d)`` with
``prod k = rows * cols`` (e.g. 768x8 -> [8, 8, 12, 8]) and held as TT (or any format). These are
small, so they are reconstructed once per call and then used like dense matrices.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from ..formats import get_format
from ..placements import Update, scaled
from ..shapes import matrix_shape


class TensorizedMatrix(nn.Module):
    """A ``rows x cols`` matrix held as a factorized tensor of shape ``matrix_shape(rows, cols)``."""

    def __init__(self, rows: int, cols: int, fmt: str, rank, *, shapes: Mapping[str, Sequence[int]] | None = None,
                 dtype=torch.float32, device=None, **factor_kwargs):
        super().__init__()
        self.rows, self.cols = rows, cols
        shape = matrix_shape(rows, cols, shapes) if fmt != "dense" else (rows, cols)
        self.factorization = get_format(fmt)(shape, rank, dtype=dtype, device=device, **factor_kwargs)

    def weight(self) -> torch.Tensor:
        return self.factorization.reconstruct().reshape(self.rows, self.cols)


class TensorizedLinear(nn.Module):
    """``y = x W^T + b`` with ``W (out x in)`` a :class:`TensorizedMatrix` (serial adapters, heads).
    ``zero=True`` zeroes ``W``'s default factor and the bias, so the map starts at exactly 0."""

    def __init__(self, in_features: int, out_features: int, fmt: str, rank, *, zero: bool,
                 bias: bool = True, shapes=None, dtype=torch.float32, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.matrix = TensorizedMatrix(out_features, in_features, fmt, rank, shapes=shapes, dtype=dtype,
                                       device=device, init_std=1 / math.sqrt(in_features),
                                       zero_factor="default" if zero else None)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.matrix.weight(), self.bias)


class BottleneckUpdate(Update):
    """``ΔW = scale * U V`` with ``U (out x r)``, ``V (r x in)`` tensorized; ``U`` starts at zero."""

    def __init__(self, in_features: int, out_features: int, fmt: str, rank, bottleneck: int, *,
                 scale: float = 1.0, shapes=None, dtype=torch.float32, device=None):
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, scale
        common = dict(shapes=shapes, dtype=dtype, device=device)
        self.u = TensorizedMatrix(out_features, bottleneck, fmt, rank, init_std=1 / math.sqrt(bottleneck), **common)
        self.v = TensorizedMatrix(bottleneck, in_features, fmt, rank, init_std=1 / math.sqrt(in_features),
                                  zero_factor=None, **common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.v.weight().T) @ scaled(self.u.weight().T, self.scale)

    def delta_weight(self) -> torch.Tensor:
        return self.u.weight() @ self.v.weight() * self.scale


class TensorizedUpdate(Update):
    """``ΔW`` of a square head linear held as a TT over ``shape`` (LoRETTA's tensorized classifier),
    zero at init so the model's output is unchanged; the frozen base weight is stored with the adapter."""

    def __init__(self, width: int, rank: int, shape: Sequence[int], dtype=torch.float32, device=None):
        super().__init__()
        self.in_features = self.out_features = width
        self.matrix = TensorizedMatrix(width, width, "tt", rank, shapes={f"{width}x{width}": shape},
                                       init_std=1 / math.sqrt(width), dtype=dtype, device=device)

    def forward(self, x):
        return x @ self.matrix.weight().T

    def delta_weight(self):
        return self.matrix.weight()
