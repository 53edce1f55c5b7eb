"""Merge, unmerge and unload: ``W_0 <- W_0 + ΔW`` for every parallel update, and back.

Merged models run at the base model's speed. While merged, a forward refuses to run if any factor
changed since the merge (a stale update), so ``generate()`` never uses old weights, and refuses to
train (the factors would get no gradient). Serial adapters cannot be merged. ``unmerge`` subtracts
``ΔW`` again (exact up to rounding in the base dtype); ``save_adapter`` saves that unmerged weight.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from .errors import TenpeftError
from .quantized import quantized_reason
from .model_methods import attach_model_methods, detach_model_methods
from .placements import (AdapterWrapper, ParallelUpdate, SerialAdapter, check_not_stale, merged_wrappers, weight_delta,
                         wrappers)
from .state import ADAPTERS_ATTR, TenpeftState, state_of


def _check_mergeable(model: nn.Module) -> None:
    serial = [n for n, m in wrappers(model) if isinstance(m, SerialAdapter)]
    if serial:
        raise TenpeftError(f"{state_of(model).method} uses serial adapters ({serial[0]}, ...), which sit after a "
                           f"sublayer and cannot be merged into a weight; keep the adapted model as it is")
    for name, wrapper in wrappers(model):
        reason = quantized_reason(model, name, wrapper.base)
        if reason:
            raise TenpeftError(f"cannot merge into a quantized base ({reason}): the update would be rounded away "
                               f"and the adapter lost; keep the adapter unmerged, or merge on a full-precision "
                               f"base (load it without quantization_config, tenpeft.load_adapter, then merge)")


@torch.no_grad()
def _add_delta(wrapper: ParallelUpdate, sign: float) -> None:
    wrapper.base.weight.add_(weight_delta(wrapper), alpha=sign)


def merge(model: nn.Module, modules: Sequence[str] | None = None) -> nn.Module:
    """Add every parallel update (or those of the named wrapped ``modules``) into its base weight;
    idempotent."""
    state_of(model)
    _check_mergeable(model)
    if any(w.disabled for _, w in wrappers(model)):
        raise TenpeftError("the adapter is disabled (inside tenpeft.disable_adapter); merge after the with-block")
    for name, wrapper in wrappers(model):
        if modules is not None and name not in modules:
            continue
        if isinstance(wrapper, ParallelUpdate) and not wrapper.merged:
            _add_delta(wrapper, +1.0)
            wrapper.mark_merged(True)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Subtract every merged update from its base weight (idempotent); refused, before any change, if a
    factor changed while merged."""
    state_of(model)
    merged = merged_wrappers(model)
    for name, wrapper in merged:
        check_not_stale(name, wrapper)
    for _, wrapper in merged:
        _add_delta(wrapper, -1.0)
        wrapper.mark_merged(False)
    return model


def unload(model: nn.Module) -> nn.Module:
    """Remove every adapter (unmerged updates are dropped; named adapters too) and restore the base modules
    and the base's ``requires_grad`` flags; trained norms and heads keep their trained values."""
    take_out(model)
    vars(model).pop(ADAPTERS_ATTR, None)
    return model


def take_out(model: nn.Module) -> tuple[TenpeftState, list[tuple[str, AdapterWrapper]], nn.Module | None]:
    """Take the adapter out of ``model``: base modules back in place of the wrappers, the shared modules
    removed, the base's ``requires_grad`` flags and the class's methods back (``model_methods.detach_model_methods``); returns what was taken (the
    state, the (name, wrapper) pairs, the shared ``ModuleDict``) for ``put_back``."""
    state = state_of(model)
    found = wrappers(model)
    for name, wrapper in reversed(found):
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, wrapper.base)
    shared = model._modules.pop("tenpeft_shared", None)
    for name, p in model.named_parameters():
        p.requires_grad_(state.original_flags.get(name, p.requires_grad))
    del model.tenpeft_state
    detach_model_methods(model)
    return state, found, shared


def put_back(model: nn.Module, state: TenpeftState, found: list[tuple[str, AdapterWrapper]],
             shared: nn.Module | None) -> None:
    """Undo ``take_out``: the wrappers and shared modules in place again (``requires_grad`` flags are the
    caller's to set)."""
    for name, wrapper in found:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, wrapper)
    if shared is not None:
        model.add_module("tenpeft_shared", shared)
    model.tenpeft_state = state
    attach_model_methods(model)


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then unload: a plain transformers model with the update in its weights."""
    return unload(merge(model))


@torch.no_grad()
def swap_values(model: nn.Module, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy ``values`` into the parameters of ``model`` they name; returns copies of what they held."""
    params = dict(model.named_parameters())
    previous = {n: params[n].detach().clone() for n in values}
    for name, value in values.items():
        params[name].copy_(value)
    return previous


@contextlib.contextmanager
def disable_adapter(model: nn.Module, adapters_only: bool = False) -> Iterator[nn.Module]:
    """``with tenpeft.disable_adapter(model):`` the model computes as its base (PEFT's
    ``disable_adapter``): every parallel update and serial adapter is skipped and the base parameters a
    method trains in place (norms, the task head, biases) hold their values from before training (the
    copies ``inject`` took), so the outputs are the base model's bit for bit; on exit (an error included)
    the adapter and the trained values are back. ``adapters_only=True`` skips only the adapters and keeps
    the trained values. A merged model is refused (``unmerge`` first), and so is ``full``, whose base
    parameters were too many to copy, unless ``adapters_only``."""
    state = state_of(model)
    if merged_wrappers(model):
        raise TenpeftError("the model is merged (tenpeft.merge), so the base weights hold the update; call "
                           "tenpeft.unmerge(model) before disable_adapter")
    if not adapters_only and state.originals is None:
        raise TenpeftError(f"{state.method} trains so many base parameters in place that inject kept no untouched "
                           f"copy, so disabling the adapter cannot give the base outputs; pass adapters_only=True "
                           f"to skip only the adapters")
    found = [w for _, w in wrappers(model)]
    before = [w.disabled for w in found]
    for wrapper in found:
        wrapper.disabled = True
    trained = swap_values(model, {} if adapters_only else state.originals)
    try:
        yield model
    finally:
        swap_values(model, trained)
        for wrapper, was in zip(found, before):
            wrapper.disabled = was
