"""Stacked-block layout (LoTR, FacT, MetaTT, TensLoRA): the updates of many matrices are slices of
a few factorized tensors whose modes are the two sides of a block and index modes. A method names
the modes in order:

* ``in``, ``out``: the input and output side of one block; ``ΔW_block[o, i] = T[.., i, .., o, ..]``
  with the index modes fixed, so ``Δy = x @ ΔW^T`` contracts ``x`` over ``in``;
* ``head`` (optional): splits the output side of every block into ``(head, out)``, heads outer
  (``out`` is then the head dim): Q/K/V/O only, and K/V of grouped-query attention read the
  slices of their query heads (``g * H / H_kv``), as in LoRTA;
* ``layer``: the layer ``l`` (size ``L``);
* ``type``: the matrix type, one index per block of each role (size ``M``);
* ``stack``: one index over every block of every layer, ``l * M + m`` (FacT's ``12L`` mode).

Blocks: when the types are stacked (``type`` or ``stack`` is a mode), every block is ``d x d`` (``d``
the model dim): an FFN matrix ``d_ff x d`` is ``ceil(d_ff / d)`` row blocks and ``d x d_ff`` as many
column blocks (FacT's split of fc1/fc2), roles in ``q, k, v, o, ffn_gate, ffn_in, ffn_out`` order,
blocks in row/column order; a side that is not a multiple of ``d`` (LLaMA's ``d_ff``, GQA's K/V)
reads the first rows/columns of its last block. Otherwise a block is the whole matrix of its role.
Index kinds that are not modes split the targets into groups, one tensor each: without ``type``
(or ``stack``) one tensor per role (LoTR), without ``layer`` one per layer (TensLoRA ``att``).
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

STACK_MODES = ("in", "out", "head", "layer", "type", "stack")


def check_modes(modes: Sequence[str]) -> tuple[str, ...]:
    """``modes`` as a tuple, or a TenpeftError: ``in`` and ``out`` once each, names from STACK_MODES,
    no repeats, ``stack`` without ``layer`` or ``type`` (it is both)."""
    modes = tuple(modes)
    bad = [m for m in modes if m not in STACK_MODES]
    if bad or len(set(modes)) != len(modes) or not {"in", "out"} <= set(modes):
        raise TenpeftError(f"modes {list(modes)} must name 'in' and 'out' once each and otherwise only "
                           f"{list(STACK_MODES[2:])}, each at most once")
    if "stack" in modes and {"layer", "type"} & set(modes):
        raise TenpeftError(f"modes {list(modes)}: 'stack' is layer and type in one mode; drop 'layer'/'type'")
    return modes


def stacks_types(modes: Sequence[str]) -> bool:
    """Whether the matrix types share a tensor (``type`` or ``stack`` is a mode): then blocks are d x d."""
    return "type" in modes or "stack" in modes


@dataclass(frozen=True)
class StackLayout:
    """Where every target's blocks sit: the modes, the block sides per role, the type offsets."""

    modes: tuple[str, ...]
    structure: ModelStructure
    dims: dict[str, tuple[int, int]]  # role -> (in, out) of its matrices
    blocks: dict[str, int]  # role -> number of d x d blocks (1 when types are not stacked)

    @property
    def stacks_types(self) -> bool:
        return stacks_types(self.modes)

    @property
    def num_types(self) -> int:
        return sum(self.blocks.values())

    def block(self, role: str) -> tuple[int, int]:
        """``(in, out)`` of one block of ``role``."""
        d = self.structure.hidden_size
        return (d, d) if self.stacks_types else self.dims[role]

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
        sizes = {"in": b_in, "out": b_out, "layer": s.num_layers, "type": self.num_types,
                 "stack": s.num_layers * self.num_types}
        if "head" in self.modes:
            sizes.update(head=heads, out=s.head_dim)
        return tuple(sizes[m] for m in self.modes)

    def block_indices(self, target: Target) -> list[int]:
        """The indices of ``target``'s blocks on the ``type`` (or ``stack``) mode."""
        roles = [r for r in ROLE_ALIASES["all"] if r in self.blocks]
        offset = sum(self.blocks[r] for r in roles[: roles.index(target.role)])
        first = offset + (target.layer * self.num_types if "stack" in self.modes else 0)
        return list(range(first, first + self.blocks[target.role]))


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
    stacked = stacks_types(modes)
    d = structure.hidden_size
    blocks = {}
    for role, (n_in, n_out) in dims.items():
        k_in, k_out = math.ceil(n_in / d), math.ceil(n_out / d)
        if stacked and k_in > 1 and k_out > 1:
            raise TenpeftError(f"{role} matrices ({n_out} x {n_in}) are wider than the model dim {d} on both sides; "
                               f"a stacked tensor cuts one side into d x d blocks only")
        blocks[role] = max(k_in, k_out) if stacked else 1
    return StackLayout(modes, structure, dims, blocks)


class StackUpdate(Update):
    """The update of one target read from its group's tensor (a reference: the tensor is registered
    once on the model). ``Δy = scale * x @ ΔW^T`` without building ``ΔW``: the block index mode
    joins the side cut into blocks, and where the format splits off the factor of one side the
    input goes through two row-major matmuls."""

    def __init__(self, shared, layout: StackLayout, target: Target, scale: float = 1.0):
        super().__init__()
        object.__setattr__(self, "shared", shared)  # a reference, not a child: stored once
        self.in_features, self.out_features, self.scale = target.in_features, target.out_features, scale
        pos = {m: i for i, m in enumerate(layout.modes)}
        b_in, b_out = layout.block(target.role)
        self.k_in, self.k_out = math.ceil(self.in_features / b_in), math.ceil(self.out_features / b_out)
        self.padded = (self.k_in * b_in, self.k_out * b_out)
        self.x_modes, self.y_modes = [pos["in"]], [pos["out"]]
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
            self._add_head_mode(layout, target, pos["head"])

    def _add_head_mode(self, layout: StackLayout, target: Target, mode: int) -> None:
        s = layout.structure
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padded[0] != self.in_features:
            x = F.pad(x, (0, self.padded[0] - self.in_features))
        fixed = self._fixed()
        split = self.shared.mode_split(self.x_modes[0], self.y_modes, fixed) if len(self.x_modes) == 1 else None
        if split is not None:  # T = F_in S: (x @ F_in) @ S
            f_in, small = split
            y = (x @ f_in) @ scaled(small.flatten(1), self.scale)
        elif len(self.y_modes) == 1 and (split := self.shared.mode_split(self.y_modes[0], self.x_modes, fixed)):
            f_out, small = split  # T = F_out S over the output mode: (x @ S^T) @ F_out^T
            y = (x @ small.flatten(1).t()) @ scaled(f_out.t(), self.scale)
        else:
            y = self.shared.contract(x.unflatten(-1, self.x_shape), self.x_modes, self.y_modes, fixed)
            y = scaled(y.flatten(y.dim() - len(self.y_modes)), self.scale)
        return y[..., : self.out_features] if self.padded[1] != self.out_features else y

    def delta_weight(self) -> torch.Tensor:
        t = self.shared.contract(None, (), (*self.y_modes, *self.x_modes), self._fixed())
        delta = t.reshape(-1, self.padded[0])[: self.out_features, : self.in_features]
        return delta * self.scale
