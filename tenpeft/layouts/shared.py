"""Shared attention tensor (LoRTA): every attention update of the model is one 5th-order tensor
``T (d x d_H x H x L x M)`` (model dim, head dim, heads, layers, matrix type).

Head ``h`` of matrix ``m`` in layer ``l`` is ``T[:, :, h, l, m]`` (d x d_H). For Q, K, V the head
mode sits on the output rows of ``ΔW`` (rows ``h*d_H .. (h+1)*d_H``); for O on the input columns.
Grouped-query attention: K/V head ``g`` uses the head-mode slice of query head ``g * H / H_kv``,
the first query head of the group that attends with it. No ``ΔW`` is ever built in forward: the
factors other than the model-dim one are contracted to a small ``(b, heads * d_H)`` matrix ``S``
(``b`` the model-dim factor's bond), then the input goes through two row-major matmuls.
"""
from __future__ import annotations

import torch

from ..placements import Update, scaled
from ..structure import ModelStructure

OUTPUT_HEAD_ROLES = ("q", "k", "v")


def shared_tensor_shape(structure: ModelStructure, matrix_types: int) -> tuple[int, int, int, int, int]:
    """``(d, d_H, H, L, M)`` for a model."""
    s = structure
    return (s.hidden_size, s.head_dim, s.num_heads, s.num_layers, matrix_types)


class SharedTensorUpdate(Update):
    """The update of one (layer, matrix type) read from a shared factorized tensor (not owned here:
    the shared tensor is registered once on the model and referenced by every update)."""

    def __init__(self, shared, structure: ModelStructure, role: str, layer: int, matrix_index: int,
                 scale: float = 1.0):
        super().__init__()
        object.__setattr__(self, "shared", shared)  # a reference, not a child: stored once
        self.role, self.layer, self.matrix_index, self.scale = role, layer, matrix_index, scale
        self.compute_dtype = next(iter(shared.factors().values())).dtype
        heads = structure.num_heads if role in ("q", "o") else structure.num_kv_heads
        group = structure.num_heads // structure.num_kv_heads
        self.heads, self.head_dim = heads, structure.head_dim
        self.register_buffer("head_index", torch.arange(heads) * (group if heads != structure.num_heads else 1),
                             persistent=False)
        width = heads * structure.head_dim
        self.in_features, self.out_features = ((width, structure.hidden_size) if role == "o"
                                               else (structure.hidden_size, width))

    def shared_modules(self):
        return (self.shared,)

    def _fixed(self):
        fixed = {3: self.layer, 4: self.matrix_index}
        if self.heads != self.shared.shape[2]:
            fixed[2] = self.head_index
        return fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = self.shared.mode_split(0, (2, 1), self._fixed())
        if split is not None:  # T = F_d S: (x @ F_d) @ S for Q/K/V, (x @ S^T) @ F_d^T for O, row-major
            f_d, small = split
            small = scaled(small.flatten(1), self.scale)  # (b, heads * d_H): scale the small side
            return (x @ f_d) @ small if self.role in OUTPUT_HEAD_ROLES else (x @ small.t()) @ f_d.t()
        if self.role in OUTPUT_HEAD_ROLES:
            y = self.shared.contract(x, (0,), (2, 1), self._fixed())
            return scaled(y.flatten(-2), self.scale)
        x = x.unflatten(-1, (self.heads, self.head_dim))
        return scaled(self.shared.contract(x, (2, 1), (0,), self._fixed()), self.scale)

    def delta_weight(self) -> torch.Tensor:
        if self.role in OUTPUT_HEAD_ROLES:
            return self.shared.contract(None, (), (2, 1, 0), self._fixed()).flatten(0, 1) * self.scale
        return self.shared.contract(None, (), (0, 2, 1), self._fixed()).flatten(1, 2) * self.scale
