"""LoRTA's shared tensor as a ``model``/``other`` stack layout (``tenpeft.layouts.stack``): the updates of
a group of matrix types across all layers are slices of one factorized tensor, so the group's factors
are stored and trained once.

* with a head mode (attention, LoRTA): ``T (d x d_H x H x L x M)`` (model dim, head dim, heads,
  layers, matrix types); head ``h`` of type ``m`` in layer ``l`` is ``T[:, :, h, l, m]`` (d x d_H);
* without (any group whose other sides share one width ``n``, e.g. the FFN's ``d_ff``):
  ``T (d x n x L x M)``; type ``m`` in layer ``l`` is ``T[:, :, l, m]`` (d x n).

Orientation: for the roles with the model dim on the input (q, k, v, ffn_gate, ffn_in)
``ΔW_{l,m} = T_{l,m}^T`` (other x d: the head mode on the output rows ``h*d_H .. (h+1)*d_H``); for
those with it on the output (o, ffn_out) ``ΔW_{l,m} = T_{l,m}`` (d x other: heads on the input
columns). Grouped-query attention: K/V head ``g`` uses the head-mode slice of query head
``g * H / H_kv``, the first query head of the group that attends with it. Forward splits off the
model-dim factor: ``T = F_d S`` with ``S (b, other)`` small (``b`` the model-dim factor's bond), then
two row-major matmuls. The ``S`` of every (layer, type) are contracted together once per model
forward (:class:`~tenpeft.layouts.stack.SliceCache`, refreshed by the forward pre-hook ``inject``
puts on the model), and each update selects its own.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import TenpeftError
from ..placements import scaled
from ..structure import ATTENTION_ROLES, ROLE_ALIASES, ModelStructure, Target
from .stack import MODEL_INPUT_ROLES, MODEL_OUTPUT_ROLES, SliceCache, StackLayout, StackUpdate, stack_layout

HEAD_MODES = ("model", "other", "head", "layer", "type")  # (d, d_H, H, L, M)
GROUP_MODES = ("model", "other", "layer", "type")  # (d, n, L, M)


def shared_tensor_shape(structure: ModelStructure, matrix_types: int) -> tuple[int, int, int, int, int]:
    """``(d, d_H, H, L, M)`` for a model (the attention group)."""
    s = structure
    return (s.hidden_size, s.head_dim, s.num_heads, s.num_layers, matrix_types)


def shared_group(structure: ModelStructure, targets: Sequence[Target], head_mode: bool) -> StackLayout:
    """The layout of ``targets``' one shared tensor (types in q, k, v, o, ffn_gate, ffn_in, ffn_out
    order), or a TenpeftError naming what cannot share it: with ``head_mode`` only Q/K/V/O; without,
    every matrix's other side must have one width."""
    roles = {t.role for t in targets}
    if head_mode and roles - set(ATTENTION_ROLES):
        raise TenpeftError(f"the shared attention tensor holds Q/K/V/O updates only; targets of type "
                           f"{sorted(roles - set(ATTENTION_ROLES))} cannot join it (use roles from {ATTENTION_ROLES}, "
                           f"or a shared tensor without a head mode such as shared_ffn for the FFN)")
    for t in targets:
        if t.role not in MODEL_INPUT_ROLES + MODEL_OUTPUT_ROLES or t.layer is None:
            raise TenpeftError(f"{t.name} (role {t.role!r}) cannot join a shared tensor: it needs a "
                               f"role of a known family, one of {ROLE_ALIASES['all']}")
    return stack_layout(structure, targets, HEAD_MODES if head_mode else GROUP_MODES)


@torch.no_grad()
def lorta_init(shared) -> None:
    """The official LoRTA init of a CP tensor ``(d, d_H, H, L, M)`` (ihounie/lorta): ``A = factor_0``
    Kaiming-uniform with ``a = sqrt(5)`` over fan-in ``r``, i.e. ``U(±1/sqrt(r))``; ``C_H, C_L, C_M``
    (``factor_2..4``) Kaiming-uniform with ``a = 0``, ``U(±sqrt(6/r))``; ``B = factor_1`` stays zero."""
    rank = shared.factor_0.shape[1]
    for i, name in enumerate(shared.factor_names):
        factor = getattr(shared, name)
        if factor.is_meta or name == shared.zero_factor:
            continue
        bound = 1 / math.sqrt(rank) if i in (0, 1) else math.sqrt(6 / rank)
        factor.uniform_(-bound, bound)


def slice_cache(shared, layout: StackLayout) -> SliceCache:
    """The :class:`SliceCache` of ``shared``, made once and kept on it as ``shared.per_forward`` (the
    attribute ``refresh_per_forward`` looks for)."""
    cache = getattr(shared, "per_forward", None)
    if cache is None:
        pos = {m: i for i, m in enumerate(layout.modes)}
        other = (pos["head"], pos["other"]) if "head" in pos else (pos["other"],)
        cache = SliceCache(shared, other, (pos["layer"], pos["type"]))
        shared.per_forward = cache
    return cache


class SharedTensorUpdate(StackUpdate):
    """A :class:`StackUpdate` of a ``model``/``other`` layout (``shared_group``) that always splits off
    the model-dim factor (mode 0), read from the model forward's :class:`SliceCache` where it serves."""

    def __init__(self, shared, layout: StackLayout, target: Target, scale: float = 1.0):
        super().__init__(shared, layout, target, scale)
        object.__setattr__(self, "slices", slice_cache(shared, layout))
        self.model_in = target.role in MODEL_INPUT_ROLES
        self.matrix_index = layout.block_indices(target)[0]
        self.other_modes = tuple(self.y_modes if self.model_in else self.x_modes)

    def _split(self) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
        cached = self.slices.get(self.layer, self.matrix_index)
        if cached is None:
            split = self.shared.mode_split(0, self.other_modes, self._fixed())
            if split is None:
                return None
            f_d, small = split
        else:
            f_d, small = cached
            if self.index_mode is not None:  # grouped-query K/V: the heads of this update
                small = small.index_select(1, self.block_index)
        return f_d, scaled(small.flatten(1), self.scale), self.model_in  # (b, other): scale the small side
