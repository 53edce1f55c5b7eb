"""Export to a standard PEFT LoRA adapter, so a tensor adapter can be served by anything that
serves LoRA: each update ``ΔW`` becomes its rank-``r`` truncated SVD ``B A`` (exact where
``rank(ΔW) <= r``), with the relative Frobenius error of each module reported."""
from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .atomic import atomic_write_text
from .state import state_of
from .errors import TenpeftError
from .lifecycle import merge, unload
from .placements import wrappers
from .placements import ParallelUpdate, SerialAdapter


@dataclass
class LoraExport:
    """What ``to_lora`` wrote: ``errors[name] = ||ΔW - B A||_F / ||ΔW||_F`` per target module, and
    ``exact_rank``: the largest numerical rank of any update (the rank at which the export is exact)."""

    directory: str
    rank: int
    errors: dict[str, float] = field(default_factory=dict)
    exact_rank: int = 0

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)


def low_rank_factors(delta: torch.Tensor, rank: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """``B (out x rank)``, ``A (rank x in)`` with ``B A`` the best rank-``rank`` approximation of
    ``delta`` (zero-padded if ``rank`` exceeds its size), the relative error, and the numerical rank of
    ``delta``: its singular values above ``s_max * max(out, in) * eps`` (``torch.linalg.matrix_rank``'s
    rule, with ``eps`` of the precision ``delta`` was computed in, so rounding noise is not counted)."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    numerical = int((s > s[0] * max(delta.shape) * eps).sum()) if s.numel() and s[0] > 0 else 0
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    b = torch.zeros(delta.shape[0], rank, dtype=torch.float64)
    a = torch.zeros(rank, delta.shape[1], dtype=torch.float64)
    b[:, :k], a[:k] = u[:, :k] * root, root[:, None] * vh[:k]
    norm = torch.linalg.norm(delta.double())
    error = float(torch.linalg.norm(delta.double() - b @ a) / norm) if norm > 0 else 0.0
    return b.float(), a.float(), error, numerical


WARN_ERROR = 1e-3  # a relative error above this is a lossy export, and to_lora warns


def to_lora(model: nn.Module, rank: int, directory: str) -> LoraExport:
    """Write a PEFT LoRA adapter (``peft.PeftModel.from_pretrained`` loads it) for ``model``'s
    parallel updates; trained heads and norms go to ``modules_to_save``. Each file is replaced
    atomically. Warns when the worst relative error exceeds :data:`WARN_ERROR`. Needs ``peft``."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise TenpeftError("to_lora needs PEFT: pip install peft") from None
    state = state_of(model)
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise TenpeftError(f"rank must be an int >= 1, got {rank!r}")
    head = tuple(f"{h}." for h in state.head)
    updates = {n: w for n, w in wrappers(model) if isinstance(w, ParallelUpdate) and not (n + ".").startswith(head)}
    if any(isinstance(w, SerialAdapter) for _, w in wrappers(model)):
        raise TenpeftError(f"{state.method} uses serial adapters, which no LoRA can express; save it with "
                           f"tenpeft.save_adapter instead")
    if not updates:
        raise TenpeftError(f"{state.method} adds no low-rank update to export; save it with tenpeft.save_adapter")
    with torch.no_grad():
        deltas = {n: w.delta_weight() for n, w in updates.items()}
        factors = {n: low_rank_factors(d.float().cpu(), rank, torch.finfo(d.dtype).eps) for n, d in deltas.items()}
    plain = _plain_copy(model, state)
    to_save = sorted(set(state.head) | {n.rpartition(".")[0] for n, c in state.components.items() if c == "norms"})
    conv = {type(w.base).__name__ == "Conv1D" for w in updates.values()}
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=sorted(updates),
                        modules_to_save=to_save or None, fan_in_fan_out=conv == {True}, init_lora_weights=False)
    peft_model = get_peft_model(plain, config)
    modules = dict(peft_model.base_model.model.named_modules())
    with torch.no_grad():
        for name, (b, a, *_) in factors.items():
            modules[name].lora_A["default"].weight.copy_(a)
            modules[name].lora_B["default"].weight.copy_(b)
    _save_atomically(peft_model, directory)
    export = LoraExport(directory, rank, {n: f[2] for n, f in factors.items()}, max(f[3] for f in factors.values()))
    atomic_write_text(os.path.join(directory, "tenpeft_export.json"), json.dumps(
        {"method": state.method, "rank": rank, "exact_rank": export.exact_rank, "max_error": export.max_error,
         "errors": export.errors}, indent=2))
    _warn_if_lossy(export, state.method)
    return export


def _save_atomically(peft_model, directory: str) -> None:
    """PEFT's ``save_pretrained`` into a temporary folder inside ``directory``, then each file moved
    into ``directory`` with ``os.replace``: a reader sees each old file or each new one, never a part."""
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".to_lora.", dir=directory) as staging:
        peft_model.save_pretrained(staging)
        for root, _, files in os.walk(staging):
            for name in files:
                target = os.path.join(directory, os.path.relpath(os.path.join(root, name), staging))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(os.path.join(root, name), target)


def _warn_if_lossy(export: LoraExport, method: str) -> None:
    if export.max_error > WARN_ERROR:
        worst = max(export.errors, key=export.errors.get)
        warnings.warn(f"to_lora at rank {export.rank} loses {export.max_error:.1%} of the {method} update of {worst} "
                      f"(relative Frobenius error); its updates have rank up to {export.exact_rank}: export with "
                      f"rank={export.exact_rank} to be exact", stacklevel=3)


def _plain_copy(model: nn.Module, state) -> nn.Module:
    """A copy of the base with trained heads/norms kept (a tensorized head merged), adapters gone."""
    clone = copy.deepcopy(model)
    head_wrappers = [n for n, _ in wrappers(clone) if any(n == h or n.startswith(h + ".") for h in state.head)]
    if head_wrappers:
        merge(clone, head_wrappers)
    return unload(clone)
