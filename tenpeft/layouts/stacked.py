"""Layer-stacked layout (VeRA, NOLA): updates of one matrix type across layers share frozen
random factors, regenerated from a seed; each layer trains only small vectors.

* VeRA: ``ΔW_l = diag(b_l) B diag(d_l) A`` — held as a CP tensor over ``(out, in, L)`` whose
  factors ``B (out x r)`` and ``A^T (in x r)`` are frozen random and whose layer factor
  ``D (L x r)`` (rows ``d_l``, init ``d_init``) is trained; ``b_l`` starts at zero.
* NOLA: ``ΔW_l = (sum_i α_il A_i)(sum_j β_jl B_j)`` with frozen random bases ``A (k x out x r)``,
  ``B (k x r x in)``; ``α_l`` starts at zero, ``β_l`` random.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..formats import CP, Dense
from ..placements import Update, scaled


def vera_shared(in_features: int, out_features: int, num_layers: int, rank: int, d_init: float, seed: int,
                dtype=torch.float32, device=None) -> CP:
    """The shared VeRA tensor of one matrix type: frozen ``B``, ``A``; trainable layer factor ``D``.
    ``A (r x in)`` and ``B (out x r)`` are Kaiming-uniform over their fan-in as in the VeRA paper and
    PEFT: ``U(±sqrt(6/in))`` and ``U(±sqrt(6/r))``, drawn from a generator seeded by ``seed``."""
    shared = CP((out_features, in_features, num_layers), rank, frozen=("factor_0", "factor_1"),
                zero_factor=None, factor_std=1 / math.sqrt(rank), seed=seed, dtype=dtype, device=device)
    with torch.no_grad():
        if not shared.factor_2.is_meta:
            gen = torch.Generator().manual_seed(seed)
            for factor, fan_in in ((shared.factor_0, rank), (shared.factor_1, in_features)):
                bound = math.sqrt(6 / fan_in)
                factor.copy_(torch.empty(factor.shape).uniform_(-bound, bound, generator=gen))
            shared.factor_2.fill_(d_init)
    return shared


class VeraUpdate(Update):
    """Layer ``l`` of a VeRA stack: ``Δy = b_l * (x A^T diag(d_l) B^T)``."""

    def __init__(self, shared: CP, layer: int):
        super().__init__()
        object.__setattr__(self, "shared", shared)
        self.layer = layer
        self.out_features, self.in_features = shared.shape[0], shared.shape[1]
        self.scaling = nn.Parameter(torch.zeros(self.out_features, dtype=shared.factor_2.dtype,
                                                device=shared.factor_2.device))

    def shared_modules(self):
        return (self.shared,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shared  # factor_0 = B (out x r), factor_1 = A^T (in x r), factor_2 = D (L x r)
        b_t = (s.factor_0 * self.scaling[:, None]).t()  # diag(b_l) folded into the r x out side
        return ((x @ s.factor_1) * s.factor_2[self.layer]) @ b_t

    def delta_weight(self) -> torch.Tensor:
        return self.shared.contract(None, (), (0, 1), {2: self.layer}) * self.scaling[:, None]


class NolaBases(nn.Module):
    """Frozen random bases of one matrix type (regenerated from ``seed``; never stored)."""

    def __init__(self, in_features: int, out_features: int, rank: int, num_bases: int, seed: int,
                 dtype=torch.float32, device=None):
        super().__init__()
        common = dict(zero_factor=None, frozen=("tensor",), dtype=dtype, device=device)
        self.a = Dense((num_bases, out_features, rank), factor_std=1 / math.sqrt(rank), seed=seed, **common)
        self.b = Dense((num_bases, rank, in_features), factor_std=1 / math.sqrt(in_features), seed=seed + 1,
                       **common)


class NolaUpdate(Update):
    """``ΔW_l = scale * (sum_i α_i A_i)(sum_j β_j B_j)``; ``α`` zero at init."""

    def __init__(self, bases: NolaBases, scale: float = 1.0):
        super().__init__()
        object.__setattr__(self, "bases", bases)
        k, self.out_features, _ = bases.a.shape
        self.in_features, self.scale = bases.b.shape[2], scale
        like = dict(dtype=bases.a.tensor.dtype, device=bases.a.tensor.device)
        self.alpha = nn.Parameter(torch.zeros(k, **like))
        self.beta = nn.Parameter(torch.empty(k, **like))
        if not self.beta.is_meta:
            nn.init.normal_(self.beta, 0.0, 1 / math.sqrt(k))

    def shared_modules(self):
        return (self.bases,)

    def _mixed(self):
        a = torch.einsum("k,kor->or", self.alpha, self.bases.a.tensor)
        b = torch.einsum("k,kri->ri", self.beta, self.bases.b.tensor)
        return a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._mixed()
        return (x @ b.T) @ scaled(a.T, self.scale)

    def delta_weight(self) -> torch.Tensor:
        a, b = self._mixed()
        return a @ b * self.scale
