"""Shared-tensor layout, the one for every method whose updates are slices of a few factorized tensors
(LoRTA's attention tensor, ``shared_ffn``, LoTR, FacT, MetaTT, TensLoRA). A method names the modes
of its tensor(s) in order:

* the two sides of a block, either ``in`` and ``out`` (``ΔW_block[o, i] = T[.., i, .., o, ..]`` with
  the index modes fixed, so ``Δy = x @ ΔW^T`` contracts ``x`` over ``in``) or ``model`` and ``other``
  (the side of size ``d``, the model dim, and the other side: ``model`` is the input of q, k, v,
  ffn_gate, ffn_in and the output of o, ffn_out; LoRTA's orientation);
* ``head`` (optional): splits the ``out`` (or ``other``) side of every block into ``(head, out)``,
  heads outer (``out`` is then the head dim): Q/K/V/O only, and K/V of grouped-query attention read
  the slices of their query heads (``g * H / H_kv``, the first query head of the group);
* ``layer``: the layer ``l`` (size ``L``);
* ``type``: the matrix type, one index per block of each role (size ``M``);
* ``stack``: one index over every block of every layer, ``l * M + m`` (FacT's ``12L`` mode).

Blocks: when ``in``/``out`` types are stacked (``type`` or ``stack`` is a mode), every block is
``d x d``: an FFN matrix ``d_ff x d`` is ``ceil(d_ff / d)`` row blocks and ``d x d_ff`` as many
column blocks (FacT's split of fc1/fc2), roles in ``q, k, v, o, ffn_gate, ffn_in, ffn_out`` order,
blocks in row/column order; a side that is not a multiple of ``d`` (LLaMA's ``d_ff``, GQA's K/V)
reads the first rows/columns of its last block. With ``model``/``other`` a block is the whole
matrix, and stacked types need one width on the other side (LoRTA: ``(d, d_H, H, L, M)``;
``shared_ffn``: ``(d, d_ff, L, M)``). Otherwise a block is the whole matrix of its role.
Index kinds that are not modes split the targets into groups, one tensor each: without ``type``
(or ``stack``) one tensor per role (LoTR), without ``layer`` one per layer (TensLoRA ``att``).

No ``ΔW`` is built in forward: where the format splits off the factor of one side (``mode_split``)
the input goes through two row-major matmuls, else through one contraction. ``SliceCache`` holds
the small side of every (layer, type) slice of a ``model``/``other`` tensor, contracted once per
model forward (``tenpeft.layouts.shared``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import TenpeftError
from ..placements import Update, scaled
from ..structure import ATTENTION_ROLES, ROLE_ALIASES, ModelStructure, Target

SIDES = (("in", "out"), ("model", "other"))
STACK_MODES = ("in", "out", "model", "other", "head", "layer", "type", "stack")
MODEL_INPUT_ROLES = ("q", "k", "v", "ffn_gate", "ffn_in")  # the model dim on the input: ΔW (other x d)
MODEL_OUTPUT_ROLES = ("o", "ffn_out")  # ΔW (d x other)


def check_modes(modes: Sequence[str]) -> tuple[str, ...]:
    """``modes`` as a tuple, or a TenpeftError: one pair of sides (``in``/``out`` or ``model``/``other``)
    once each, names from STACK_MODES, no repeats, ``stack`` without ``layer`` or ``type`` (it is both)."""
    modes = tuple(modes)
    bad = [m for m in modes if m not in STACK_MODES]
    pairs = [pair for pair in SIDES if set(pair) & set(modes)]
    if bad or len(set(modes)) != len(modes) or len(pairs) != 1 or not set(pairs[0]) <= set(modes):
        raise TenpeftError(f"modes {list(modes)} must name 'in' and 'out' (or 'model' and 'other') once each and "
                           f"otherwise only {list(STACK_MODES[4:])}, each at most once")
    if "stack" in modes and {"layer", "type"} & set(modes):
        raise TenpeftError(f"modes {list(modes)}: 'stack' is layer and type in one mode; drop 'layer'/'type'")
    return modes


def stacks_types(modes: Sequence[str]) -> bool:
    """Whether the matrix types share a tensor (``type`` or ``stack`` is a mode)."""
    return "type" in modes or "stack" in modes


@dataclass(frozen=True)
class StackLayout:
    """Where every target's blocks sit: the modes, the block sides per role, the type offsets."""

    modes: tuple[str, ...]
    structure: ModelStructure
    dims: dict[str, tuple[int, int]]  # role -> (in, out) of its matrices
    blocks: dict[str, int]  # role -> number of d x d blocks (1 when a block is the whole matrix)

    @property
    def stacks_types(self) -> bool:
        return stacks_types(self.modes)

    @property
    def oriented(self) -> bool:
        """Whether the sides are ``model``/``other`` (else ``in``/``out``)."""
        return "model" in self.modes

    @property
    def num_types(self) -> int:
        return sum(self.blocks.values())

    def sides(self, role: str) -> tuple[str, str]:
        """The mode names of the input side and the output side of ``role``'s blocks."""
        if not self.oriented:
            return ("in", "out")
        return ("model", "other") if role in MODEL_INPUT_ROLES else ("other", "model")

    def block(self, role: str) -> tuple[int, int]:
        """``(in, out)`` of one block of ``role``."""
        d = self.structure.hidden_size
        return (d, d) if self.stacks_types and not self.oriented else self.dims[role]

    def group_of(self, target: Target) -> str:
        """The name of the tensor ``target`` reads (``all``, a role, ``layer<l>`` or ``layer<l>_<role>``)."""
        parts = [] if "layer" in self.modes or "stack" in self.modes else [f"layer{target.layer}"]
        if not self.stacks_types:
            parts.append(target.role)
        return "_".join(parts) or "all"

    def groups(self, targets: Sequence[Target]) -> dict[str, tuple[int, ...]]:
        """Every tensor: its name and shape (modes in the layout's order)."""
        return {self.group_of(t): self.shape(t.role) for t in targets}

    def shape(self, role: str) -> tuple[int, ...]:
        b_in, b_out = self.block(role)
        s = self.structure
        heads = s.num_heads if self.stacks_types or role in ("q", "o") else s.num_kv_heads
        model_in = role in MODEL_INPUT_ROLES
        sizes = {"in": b_in, "out": b_out, "model": s.hidden_size, "other": b_out if model_in else b_in,
                 "layer": s.num_layers, "type": self.num_types, "stack": s.num_layers * self.num_types}
        if "head" in self.modes:
            sizes.update(head=heads, out=s.head_dim, other=s.head_dim)
        return tuple(sizes[m] for m in self.modes)

    def block_indices(self, target: Target) -> list[int]:
        """The indices of ``target``'s blocks on the ``type`` (or ``stack``) mode."""
        roles = [r for r in ROLE_ALIASES["all"] if r in self.blocks]
        offset = sum(self.blocks[r] for r in roles[: roles.index(target.role)])
        first = offset + (target.layer * self.num_types if "stack" in self.modes else 0)
        return list(range(first, first + self.blocks[target.role]))


def _other_width(target: Target, structure: ModelStructure) -> int:
    """The side of ``target`` that is not the model dim (checked to be ``d`` on the other side)."""
    model_in = target.role in MODEL_INPUT_ROLES
    model_side, other = ((target.in_features, target.out_features) if model_in
                         else (target.out_features, target.in_features))
    if model_side != structure.hidden_size:
        side = "inputs" if model_in else "outputs"
        raise TenpeftError(f"{target.name} has {model_side} {side}, not the model dim {structure.hidden_size}; "
                           f"it cannot join a shared tensor")
    return other


def _check_widths(structure: ModelStructure, targets: Sequence[Target], stacked: bool) -> None:
    """``model``/``other``: every model side is ``d``; stacked types without a head mode need one width on
    the other side (a head mode takes each role's own heads: GQA's K/V have fewer)."""
    widths = {t.role: _other_width(t, structure) for t in targets}
    if stacked and len(set(widths.values())) > 1:
        raise TenpeftError(f"one shared tensor (d x n x L x M) needs one width n for the non-model side of every "
                           f"matrix, but the roles give {dict(sorted(widths.items()))}; share each width in its own "
                           f"method (e.g. lorta for attention, shared_ffn for the FFN)")


def _blocks(structure: ModelStructure, dims: dict[str, tuple[int, int]], modes) -> dict[str, int]:
    """``in``/``out`` with stacked types: ``d x d`` blocks per role; else one block, the whole matrix."""
    d, cut = structure.hidden_size, stacks_types(modes) and "in" in modes
    blocks = {}
    for role, (n_in, n_out) in dims.items():
        k_in, k_out = math.ceil(n_in / d), math.ceil(n_out / d)
        if cut and k_in > 1 and k_out > 1:
            raise TenpeftError(f"{role} matrices ({n_out} x {n_in}) are wider than the model dim {d} on both sides; "
                               f"a stacked tensor cuts one side into d x d blocks only")
        blocks[role] = max(k_in, k_out) if cut else 1
    return blocks


def stack_layout(structure: ModelStructure, targets: Sequence[Target], modes: Sequence[str]) -> StackLayout:
    """The layout of ``targets`` over ``modes`` (``check_modes``), or a TenpeftError naming what does not fit."""
    modes = check_modes(modes)
    dims: dict[str, tuple[int, int]] = {}
    for t in targets:
        if t.layer is None or t.role not in ROLE_ALIASES["all"]:
            raise TenpeftError(f"{t.name} (role {t.role!r}) cannot join a stacked tensor: it needs a role of a known "
                               f"family, one of {ROLE_ALIASES['all']}")
        if dims.setdefault(t.role, (t.in_features, t.out_features)) != (t.in_features, t.out_features):
            raise TenpeftError(f"targets of type {t.role!r} differ in size ({dims[t.role]} vs {t.name})")
    if "head" in modes and set(dims) - set(ATTENTION_ROLES):
        raise TenpeftError(f"a head mode splits attention matrices only; roles {sorted(set(dims) - set(ATTENTION_ROLES))} "
                           f"cannot join it (use roles from {ATTENTION_ROLES}, or modes without 'head')")
    if "model" in modes:
        _check_widths(structure, targets, stacks_types(modes) and "head" not in modes)
    return StackLayout(modes, structure, dims, _blocks(structure, dims, modes))


class SliceCache:
    """The small matrices of every (layer, type) slice of one ``model``/``other`` tensor, contracted
    together: ``T = F_d S_all`` with ``S_all (L, M, b, *other)`` (see ``Factorization.mode_split``), so an
    update selects ``S_all[l, m]`` instead of contracting its own. ``refresh()`` runs once per model forward
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


class StackUpdate(Update):
    """The update of one target read from its group's tensor (a reference: the tensor is registered
    once on the model). ``Δy = scale * x @ ΔW^T`` without building ``ΔW``: the block index mode
    joins the side cut into blocks, and where the format splits off the factor of one side the
    input goes through two row-major matmuls (the scale on the small side of the two)."""

    def __init__(self, shared, layout: StackLayout, target: Target, scale: float = 1.0):
        super().__init__()
        object.__setattr__(self, "shared", shared)  # a reference, not a child: stored once
        self.in_features, self.out_features, self.scale = target.in_features, target.out_features, scale
        self.role, self.layer = target.role, target.layer
        pos = {m: i for i, m in enumerate(layout.modes)}
        x_side, y_side = layout.sides(target.role)
        b_in, b_out = layout.block(target.role)
        self.k_in, self.k_out = math.ceil(self.in_features / b_in), math.ceil(self.out_features / b_out)
        self.padded = (self.k_in * b_in, self.k_out * b_out)
        self.x_modes, self.y_modes = [pos[x_side]], [pos[y_side]]
        self.x_shape = [b_in]
        self.fixed_ints: dict[int, int] = {pos["layer"]: target.layer} if "layer" in pos else {}
        self.index_mode = None
        tile = pos.get("stack", pos.get("type"))
        if tile is not None:
            indices = layout.block_indices(target)
            if len(indices) == 1:
                self.fixed_ints[tile] = indices[0]
            else:
                self.index_mode = tile
                self.register_buffer("block_index", torch.tensor(indices), persistent=False)
                (self.x_modes if self.k_in > 1 else self.y_modes).insert(0, tile)
                if self.k_in > 1:
                    self.x_shape.insert(0, self.k_in)
        if "head" in pos:
            self._add_head_mode(layout, pos["head"], on_input=x_side == "other")

    def _add_head_mode(self, layout: StackLayout, mode: int, on_input: bool) -> None:
        """The head mode splits the ``out``/``other`` side (the input of o in a ``model``/``other`` layout)."""
        s = layout.structure
        if on_input:
            self.x_modes.insert(0, mode)
            self.x_shape = [self.in_features // s.head_dim, s.head_dim]
            return
        self.y_modes.insert(0, mode)
        heads = self.out_features // s.head_dim
        if layout.stacks_types and heads != s.num_heads:  # GQA K/V: the first query head of each group
            self.index_mode = mode
            self.register_buffer("block_index", torch.arange(heads) * (s.num_heads // heads), persistent=False)
            self.padded = (self.padded[0], self.out_features)

    def shared_modules(self):
        return (self.shared,)

    def _fixed(self) -> dict:
        if self.index_mode is None:
            return self.fixed_ints
        return {**self.fixed_ints, self.index_mode: self.block_index}

    def _split(self) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
        """``(F, S, F holds an input mode)``, the scale applied to one of them: ``T = F S`` over the input
        side's mode (where the input has one mode), else over the output side's (where it has one)."""
        fixed = self._fixed()
        split = self.shared.mode_split(self.x_modes[0], self.y_modes, fixed) if len(self.x_modes) == 1 else None
        if split is not None:
            return split[0], scaled(split[1], self.scale), True
        if len(self.y_modes) == 1 and (split := self.shared.mode_split(self.y_modes[0], self.x_modes, fixed)):
            return scaled(split[0], self.scale), split[1], False
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padded[0] != self.in_features:
            x = F.pad(x, (0, self.padded[0] - self.in_features))
        split = self._split()
        if split is None:
            y = self.shared.contract(x.unflatten(-1, self.x_shape), self.x_modes, self.y_modes, self._fixed())
            y = scaled(y.flatten(y.dim() - len(self.y_modes)), self.scale)
        elif split[2]:  # T = F_in S: (x @ F_in) @ S
            y = (x @ split[0]) @ split[1].flatten(1)
        else:  # T = F_out S over the output mode: (x @ S^T) @ F_out^T
            y = (x @ split[1].flatten(1).t()) @ split[0].t()
        return y[..., : self.out_features] if self.padded[1] != self.out_features else y

    def delta_weight(self) -> torch.Tensor:
        t = self.shared.contract(None, (), (*self.y_modes, *self.x_modes), self._fixed())
        delta = t.reshape(-1, self.padded[0])[: self.out_features, : self.in_features]
        return delta * self.scale
