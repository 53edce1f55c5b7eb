"""Shared tensor layout: the updates of a group of matrix types across all layers are slices of one
factorized tensor, so the group's factors are stored and trained once.

Every matrix of the group has one side of size ``d`` (the model dim) and one other side. The group
tensor is

* with a head mode (attention, LoRTA): ``T (d x d_H x H x L x M)`` (model dim, head dim, heads,
  layers, matrix types); head ``h`` of type ``m`` in layer ``l`` is ``T[:, :, h, l, m]`` (d x d_H);
* without (any group whose other sides share one width ``n``, e.g. the FFN's ``d_ff``):
  ``T (d x n x L x M)``; type ``m`` in layer ``l`` is ``T[:, :, l, m]`` (d x n).

Orientation: for the roles with the model dim on the input (q, k, v, ffn_gate, ffn_in)
``ΔW_{l,m} = T_{l,m}^T`` (other x d: the head mode on the output rows ``h*d_H .. (h+1)*d_H``); for
those with it on the output (o, ffn_out) ``ΔW_{l,m} = T_{l,m}`` (d x other: heads on the input
columns). Grouped-query attention: K/V head ``g`` uses the head-mode slice of query head
``g * H / H_kv``, the first query head of the group that attends with it. No ``ΔW`` is built in
forward: the factors other than the model-dim one are contracted to a small ``(b, other)`` matrix
``S`` (``b`` the model-dim factor's bond), then the input goes through two row-major matmuls.
The ``S`` of every (layer, type) are contracted together once per model forward (:class:`SliceCache`,
refreshed by the forward pre-hook ``inject`` puts on the model), and each update selects its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import TenpeftError
from ..placements import Update, scaled
from ..structure import ATTENTION_ROLES, ROLE_ALIASES, ModelStructure, Target

OUTPUT_HEAD_ROLES = ("q", "k", "v")
MODEL_INPUT_ROLES = ("q", "k", "v", "ffn_gate", "ffn_in")  # ΔW (other x d)
MODEL_OUTPUT_ROLES = ("o", "ffn_out")  # ΔW (d x other)


@dataclass(frozen=True)
class SharedGroup:
    """One group's tensor: ``shape`` (see the module docstring), the matrix types in M order and
    whether it has a head mode."""

    shape: tuple[int, ...]
    types: tuple[str, ...]
    head_mode: bool


def shared_tensor_shape(structure: ModelStructure, matrix_types: int) -> tuple[int, int, int, int, int]:
    """``(d, d_H, H, L, M)`` for a model (the attention group)."""
    s = structure
    return (s.hidden_size, s.head_dim, s.num_heads, s.num_layers, matrix_types)


def _other_width(target: Target, structure: ModelStructure) -> int:
    """The side of ``target`` that is not the model dim (checked to be ``d`` on the other side)."""
    if target.role not in MODEL_INPUT_ROLES + MODEL_OUTPUT_ROLES or target.layer is None:
        raise TenpeftError(f"{target.name} (role {target.role!r}) cannot join a shared tensor: it needs a "
                           f"role of a known family, one of {ROLE_ALIASES['all']}")
    model_in = target.role in MODEL_INPUT_ROLES
    model_side, other = ((target.in_features, target.out_features) if model_in
                         else (target.out_features, target.in_features))
    if model_side != structure.hidden_size:
        side = "inputs" if model_in else "outputs"
        raise TenpeftError(f"{target.name} has {model_side} {side}, not the model dim {structure.hidden_size}; "
                           f"it cannot join a shared tensor")
    return other


def shared_group(structure: ModelStructure, targets: Sequence[Target], head_mode: bool) -> SharedGroup:
    """The shared tensor of ``targets`` (types in q, k, v, o, ffn_gate, ffn_in, ffn_out order), or a
    TenpeftError naming what cannot share it: with ``head_mode`` only Q/K/V/O; without, every
    matrix's other side must have one width."""
    roles = {t.role for t in targets}
    if head_mode:
        bad = sorted(roles - set(ATTENTION_ROLES))
        if bad:
            raise TenpeftError(f"the shared attention tensor holds Q/K/V/O updates only; targets of type {bad} "
                               f"cannot join it (use roles from {ATTENTION_ROLES}, or a shared tensor without a "
                               f"head mode such as shared_ffn for the FFN)")
    widths = {t.role: _other_width(t, structure) for t in targets}
    types = tuple(r for r in ROLE_ALIASES["all"] if r in roles)
    if head_mode:
        return SharedGroup(shared_tensor_shape(structure, len(types)), types, True)
    if len(set(widths.values())) > 1:
        raise TenpeftError(f"one shared tensor (d x n x L x M) needs one width n for the non-model side of every "
                           f"matrix, but the roles give {dict(sorted(widths.items()))}; share each width in its own "
                           f"method (e.g. lorta for attention, shared_ffn for the FFN)")
    width = next(iter(widths.values()))
    return SharedGroup((structure.hidden_size, width, structure.num_layers, len(types)), types, False)


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


class SliceCache:
    """The small matrices of every (layer, type) slice of one shared tensor, contracted together:
    ``T = F_d S_all`` with ``S_all (L, M, b, *other)`` (see ``Factorization.mode_split``), so an update
    selects ``S_all[l, m]`` instead of contracting its own. ``refresh()`` runs once per model forward
    (``tenpeft.placements.refresh_per_forward``), outside any checkpointed layer, so recomputation
    reads the same ``S_all``. ``get`` gives None (the update then contracts its own slice) while
    compiling, for factors sharded as DTensors (FSDP2 gathers them only inside the forward), and when
    the factors changed since the refresh (an optimizer step, a cast, a load, a forward of a submodule
    alone), or the grad mode did."""

    def __init__(self, shared, other_modes: tuple[int, ...], index_modes: tuple[int, ...]):
        self.shared, self.other_modes, self.index_modes = shared, other_modes, index_modes
        self.value: tuple[torch.Tensor, tuple[torch.Tensor, ...], int] | None = None
        self._key: tuple | None = None

    def _current_key(self) -> tuple:
        tensors = tuple(self.shared.factors().values())
        return (torch.is_grad_enabled(), *((id(t), t._version, t.dtype, t.device) for t in tensors))

    def _sharded(self) -> bool:
        return any(hasattr(t, "device_mesh") for t in self.shared.factors().values())

    def refresh(self) -> None:
        """Contract ``S_all`` for the factors as they are now (None where the split does not exist)."""
        self.value = self._key = None
        if torch.compiler.is_compiling() or self._sharded():
            return
        split = self.shared.mode_split(0, (*self.index_modes, *self.other_modes))
        if split is not None:  # one view per slice: their backward is one stack, not a zero-filled S_all each
            small = split[1].movedim(0, 2).contiguous()
            self.value = (split[0], small.flatten(0, 1).unbind(0), small.shape[1])
            self._key = self._current_key()

    def get(self, layer: int, matrix_index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(F_d, S (b, *other))`` of one slice, or None when the cache cannot serve (see the class)."""
        if self.value is None or torch.compiler.is_compiling() or self._key != self._current_key():
            return None
        f_d, slices, types = self.value
        return f_d, slices[layer * types + matrix_index]

    def __deepcopy__(self, memo):
        import copy

        return SliceCache(copy.deepcopy(self.shared, memo), self.other_modes, self.index_modes)

    def __getstate__(self):
        return {**vars(self), "value": None, "_key": None}


def slice_cache(shared, head_mode: bool) -> SliceCache:
    """The :class:`SliceCache` of ``shared``, made once and kept on it as ``shared.per_forward`` (the
    attribute ``refresh_per_forward`` looks for)."""
    cache = getattr(shared, "per_forward", None)
    if cache is None:
        cache = SliceCache(shared, (2, 1) if head_mode else (1,), (3, 4) if head_mode else (2, 3))
        shared.per_forward = cache
    return cache


class SharedTensorUpdate(Update):
    """The update of one (layer, matrix type) read from a shared factorized tensor (not owned here:
    the shared tensor is registered once on the model and referenced by every update).
    ``head_mode``: the tensor is ``(d, d_H, H, L, M)``, else ``(d, n, L, M)``."""

    def __init__(self, shared, structure: ModelStructure, role: str, layer: int, matrix_index: int,
                 scale: float = 1.0, head_mode: bool = True):
        super().__init__()
        object.__setattr__(self, "shared", shared)  # a reference, not a child: stored once
        object.__setattr__(self, "slices", slice_cache(shared, head_mode))
        self.role, self.layer, self.matrix_index, self.scale = role, layer, matrix_index, scale
        self.model_in = role in MODEL_INPUT_ROLES
        self.head_mode = head_mode
        if head_mode:
            heads = structure.num_heads if role in ("q", "o") else structure.num_kv_heads
            group = structure.num_heads // structure.num_kv_heads
            self.heads, self.head_dim = heads, structure.head_dim
            self.register_buffer("head_index", torch.arange(heads) * (group if heads != structure.num_heads else 1),
                                 persistent=False)
            self.other_shape, self.other_modes, self.index_modes = (heads, structure.head_dim), (2, 1), (3, 4)
        else:
            self.other_shape, self.other_modes, self.index_modes = (shared.shape[1],), (1,), (2, 3)
        width = math.prod(self.other_shape)
        self.in_features, self.out_features = ((structure.hidden_size, width) if self.model_in
                                               else (width, structure.hidden_size))

    def shared_modules(self):
        return (self.shared,)

    @property
    def _head_subset(self) -> bool:
        """Whether this update reads only some heads of the head mode (grouped-query K/V)."""
        return self.head_mode and self.heads != self.shared.shape[2]

    def _fixed(self):
        fixed = dict(zip(self.index_modes, (self.layer, self.matrix_index)))
        if self._head_subset:
            fixed[2] = self.head_index
        return fixed

    def _split(self):
        """``(F_d, S)`` of this slice: from the model forward's :class:`SliceCache`, else contracted here."""
        cached = self.slices.get(self.layer, self.matrix_index)
        if cached is None:
            return self.shared.mode_split(0, self.other_modes, self._fixed())
        f_d, small = cached
        if self._head_subset:
            small = small.index_select(1, self.head_index)
        return f_d, small

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = self._split()
        if split is not None:  # T = F_d S: (x @ F_d) @ S (model dim in), (x @ S^T) @ F_d^T (out), row-major
            f_d, small = split
            small = scaled(small.flatten(1), self.scale)  # (b, other): scale the small side
            return (x @ f_d) @ small if self.model_in else (x @ small.t()) @ f_d.t()
        if self.model_in:
            y = self.shared.contract(x, (0,), self.other_modes, self._fixed())
            return scaled(y.flatten(y.dim() - len(self.other_modes)), self.scale)
        x = x.unflatten(-1, self.other_shape)
        return scaled(self.shared.contract(x, self.other_modes, (0,), self._fixed()), self.scale)

    def delta_weight(self) -> torch.Tensor:
        if self.model_in:
            delta = self.shared.contract(None, (), (*self.other_modes, 0), self._fixed())
            return delta.reshape(self.out_features, self.in_features) * self.scale
        delta = self.shared.contract(None, (), (0, *self.other_modes), self._fixed())
        return delta.reshape(self.out_features, self.in_features) * self.scale
