"""Placements: where an update enters the model.

* :class:`ParallelUpdate` wraps a linear map: ``y = W_0 x + sum_s ΔW_s x`` (each update may cover
  a row slice of a fused linear: GPT-2's ``c_attn`` in blocks, DeBERTa's ``in_proj`` per head). Mergeable.
* :class:`SerialAdapter` wraps a sublayer's output linear: ``h = W_0 x; h + up(σ(down(h)))``.
  Not mergeable.
* ``wrappers``, ``merged_wrappers``, ``unmerged_weights``: the wrappers in a model and the base weights
  of the merged ones without ``ΔW`` (what merging, saving and exporting read).

Updates compute in their own dtype (fp32 factors on a bf16 base) and cast back; no autocast here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import TenpeftError
from .structure import linear_dims


def scaled(t: torch.Tensor, scale: float) -> torch.Tensor:
    """``t * scale`` without an extra pass over ``t`` when ``scale`` is 1 (the default)."""
    return t if scale == 1.0 else t * scale


def factor_dtype(*tensor_groups) -> torch.dtype:
    """The dtype of the first floating-point tensor in ``tensor_groups`` (fp32 when there is none)."""
    for group in tensor_groups:
        for t in group:
            if t.is_floating_point():
                return t.dtype
    return torch.float32


def place_rows(delta: torch.Tensor, out_slice: tuple[int, ...], out_features: int) -> torch.Tensor:
    """``delta`` (last dim: the slice's width) zero-padded to ``out_features`` on the rows of
    ``out_slice``: ``(start, stop)``, or ``(start, stop, period)`` for rows ``[start, stop)`` of every
    block of ``period`` rows (block ``b`` of ``delta`` goes to block ``b`` of the output)."""
    start, stop, *period = out_slice
    period = period[0] if period else out_features
    blocks = delta.unflatten(-1, (out_features // period, stop - start))
    return F.pad(blocks, (start, period - stop)).flatten(-2)


def _per_forward_caches(model: nn.Module) -> list:
    """The ``per_forward`` caches of the modules in ``model.tenpeft_shared`` (e.g. ``layouts.stack.SliceCache``)."""
    shared = model._modules.get("tenpeft_shared")
    caches = () if shared is None else (getattr(m, "per_forward", None) for m in shared.values())
    return [c for c in caches if c is not None]


@torch.compiler.disable
def refresh_per_forward(model: nn.Module, *_) -> None:
    """The forward pre-hook ``inject`` registers on the model: every ``per_forward`` cache of its shared
    modules is rebuilt, once per model forward and before any layer (so gradient checkpointing
    recomputes from the same values)."""
    for cache in _per_forward_caches(model):
        cache.refresh()


def has_per_forward(model: nn.Module) -> bool:
    """Whether a module in ``model.tenpeft_shared`` keeps a cache that ``refresh_per_forward`` rebuilds."""
    return bool(_per_forward_caches(model))


class Update(nn.Module):
    """Base of every parallel update: ``forward(x) = ΔW x`` and ``delta_weight() = ΔW (out x in)``.

    An update that reads modules it does not own (factors shared across targets, registered once in
    the plan's ``shared``) declares them in ``shared_modules()``; a merge then notices when they change."""

    in_features: int
    out_features: int

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the factors the update reads, read at call time, so a cast of the model after
        injection (``model.to(torch.bfloat16)``, ``.half()``, ``.double()``) is followed."""
        return factor_dtype(self.parameters(), *(m.parameters() for m in self.shared_modules()))

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def shared_modules(self) -> tuple[nn.Module, ...]:
        """The shared modules this update reads besides its own children (default: none)."""
        return ()

    def factor_tensors(self) -> list[torch.Tensor]:
        """Every parameter the update reads, its own and its shared modules' (to detect a stale merge)."""
        return [*self.parameters(), *(p for m in self.shared_modules() for p in m.parameters())]


class AdapterWrapper(nn.Module):
    """Marker base for modules that tenpeft put in place of a base module (``self.base``)."""

    base: nn.Module
    is_tenpeft_wrapper = True
    disabled = False  # set by tenpeft.disable_adapter: compute as the base module


class ParallelUpdate(AdapterWrapper):
    """``y = base(x) + ΔW x``; ``slices[i]`` places update ``i`` on some output rows (``place_rows``)."""

    def __init__(self, base: nn.Module, updates: list[Update], slices: list[tuple[int, ...] | None]):
        super().__init__()
        self.base = base
        self.updates = nn.ModuleList(updates)
        self.slices = list(slices)
        self.in_features, self.out_features = linear_dims(base)
        self.merged_versions: tuple[int, ...] | None = None  # set while ΔW is merged into the base
        self._merged_tensors: tuple[torch.Tensor, ...] = ()  # the factors read at merge time

    @property
    def merged(self) -> bool:
        return self.merged_versions is not None

    def mark_merged(self, merged: bool) -> None:
        """Record (or clear) the factors' versions at merge time, for the stale-merge check."""
        self._merged_tensors = tuple(t for u in self.updates for t in u.factor_tensors()) if merged else ()
        self.merged_versions = self.factor_versions() if merged else None

    def factor_versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in self._merged_tensors)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = self.base(x, *args, **kwargs)
        if self.merged:
            self._check_merged_forward()
            return y
        if self.disabled:
            return y
        for update, out_slice in zip(self.updates, self.slices):
            delta = update(x.to(update.compute_dtype)).to(y.dtype)
            if out_slice is not None:
                delta = place_rows(delta, out_slice, self.out_features)
            y = y + delta
        return y

    def _check_merged_forward(self) -> None:
        """Refuse a stale merge, and training while merged (the factors would get no gradient)."""
        if not torch.compiler.is_compiling() and self.factor_versions() != self.merged_versions:
            raise RuntimeError("adapter factors changed after tenpeft.merge(); the merged weights are stale. "
                               "Call tenpeft.unmerge(model) before training, merge again afterwards")
        if self.training and torch.is_grad_enabled() and any(t.requires_grad for t in self._merged_tensors):
            raise RuntimeError("this model is merged (tenpeft.merge), so its adapter factors get no gradient; "
                               "call tenpeft.unmerge(model) before training, or use model.eval() / "
                               "torch.no_grad() for inference")

    def delta_weight(self) -> torch.Tensor:
        """The summed update as an ``out x in`` matrix (for merging and checks only)."""
        total = None
        for update, out_slice in zip(self.updates, self.slices):
            delta = update.delta_weight()
            if out_slice is not None:
                delta = place_rows(delta.T, out_slice, self.out_features).T
            total = delta if total is None else total + delta
        return total


class SerialAdapter(AdapterWrapper):
    """Bottleneck adapter after ``base``: ``h + up(act(down(h)))`` with ``h = base(x)``."""

    def __init__(self, base: nn.Module, down: nn.Module, up: nn.Module, activation: str = "relu"):
        super().__init__()
        self.base, self.down, self.up = base, down, up
        self.activation = activation
        self.act = _ACTIVATIONS[activation]()

    @property
    def compute_dtype(self) -> torch.dtype:
        """The adapter's own dtype, read at call time (follows a cast of the model after injection)."""
        return factor_dtype(self.down.parameters(), self.up.parameters())

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        h = self.base(x, *args, **kwargs)
        if self.disabled:
            return h
        return h + self.up(self.act(self.down(h.to(self.compute_dtype)))).to(h.dtype)


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "identity": nn.Identity}
ACTIVATIONS = tuple(_ACTIVATIONS)


# ----- the wrappers in a model and their merged state (lifecycle, save, export) ------------------------------

def wrappers(model: nn.Module) -> list[tuple[str, AdapterWrapper]]:
    """The (name, wrapper) pairs tenpeft put into ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdapterWrapper)]


def merged_wrappers(model: nn.Module) -> list[tuple[str, ParallelUpdate]]:
    """The (name, parallel update) pairs whose ``ΔW`` is merged into the base weight now."""
    return [(n, w) for n, w in wrappers(model) if isinstance(w, ParallelUpdate) and w.merged]


def weight_delta(wrapper: ParallelUpdate) -> torch.Tensor:
    """``ΔW`` laid out as ``wrapper.base.weight``: its dtype; transposed for transformers' Conv1D (in, out)."""
    delta = wrapper.delta_weight().to(wrapper.base.weight.dtype)
    return delta.T if type(wrapper.base).__name__ == "Conv1D" else delta


def check_not_stale(name: str, wrapper: ParallelUpdate) -> None:
    """Refuse (a TenpeftError) a merged ``wrapper`` whose factors changed since the merge."""
    if wrapper.factor_versions() != wrapper.merged_versions:
        raise TenpeftError(f"factors of {name} ({type(wrapper.base).__name__}) changed while merged, so its base "
                           f"weight cannot be recovered; rebuild the model from the base and a saved adapter")


@torch.no_grad()
def unmerged_weights(model: nn.Module, tensors) -> dict[int, torch.Tensor]:
    """``id(weight) -> W_0`` for each of ``tensors`` that is the base weight of a merged update: the weight
    without ``ΔW`` (bit for bit what ``unmerge`` would leave), computed aside; the model is not changed."""
    wanted = {id(t) for t in tensors}
    merged = [(n, w) for n, w in merged_wrappers(model) if id(w.base.weight) in wanted]
    for name, wrapper in merged:
        check_not_stale(name, wrapper)
    return {id(w.base.weight): torch.add(w.base.weight, weight_delta(w), alpha=-1.0) for _, w in merged}
