"""Named adapters on one base model (PEFT's ``add_adapter`` / ``set_adapter`` / ``delete_adapter``).

One adapter is active: its wrappers and shared modules are in the model, under the very names a single
injection gives, so training, ``save_adapter``, merge, ``disable_adapter`` and the Trainer integration act
on it unchanged. The others are kept aside (``model.tenpeft_adapters``) with their wrappers around the same
base modules (no base weight is copied), their ``requires_grad`` flags and the values of the base parameters
they train in place (head, norms, biases): switching puts the untrained values back (the copies ``inject``
took) and then the new adapter's own, so each adapter has its own head and norms, as PEFT's
``modules_to_save``. An adapter that is not active is not in the forward and gets no gradient.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from .engine import inject
from .errors import TenpeftError
from .lifecycle import put_back, swap_values, take_out
from .placements import AdapterWrapper, merged_wrappers, wrappers
from .state import ADAPTERS_ATTR, TenpeftState, state_of

DEFAULT_ADAPTER = "default"  # the name of the adapter tenpeft.inject puts in (PEFT's default name)


@dataclass
class StoredAdapter:
    """An adapter kept aside: what ``take_out`` took, its flags and its trained in-place values."""

    state: TenpeftState
    wrappers: list[tuple[str, AdapterWrapper]]
    shared: nn.Module | None
    flags: dict[str, bool]
    values: dict[str, torch.Tensor]


@dataclass
class AdapterSet:
    """``model.tenpeft_adapters``: the active adapter's name and the others by name."""

    active: str = DEFAULT_ADAPTER
    stored: dict[str, StoredAdapter] = field(default_factory=dict)


def _adapters(model: nn.Module) -> AdapterSet:
    state_of(model)
    return vars(model).get(ADAPTERS_ATTR) or AdapterSet()


def adapter_names(model: nn.Module) -> list[str]:
    """Every adapter's name, the active one first."""
    found = _adapters(model)
    return [found.active, *found.stored]


def active_adapter(model: nn.Module) -> str:
    """The name of the adapter in use."""
    return _adapters(model).active


def _check_switchable(model: nn.Module, doing: str) -> None:
    if merged_wrappers(model):
        raise TenpeftError(f"the active adapter is merged into the base weights; call tenpeft.unmerge(model) "
                           f"before {doing}")
    if any(w.disabled for _, w in wrappers(model)):
        raise TenpeftError(f"the adapter is disabled (inside tenpeft.disable_adapter); {doing} after the with-block")
    state = state_of(model)
    if state.originals is None:
        raise TenpeftError(f"{state.method} trains so many base parameters in place that inject kept no untouched "
                           f"copy, so it cannot share the model with another adapter")


def _set_aside(model: nn.Module) -> StoredAdapter:
    """Take the active adapter out of ``model`` and give the base its untrained in-place values back."""
    state = state_of(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    values = swap_values(model, state.originals)
    return StoredAdapter(*take_out(model), flags, values)


def _bring_in(model: nn.Module, stored: StoredAdapter) -> None:
    """Put ``stored`` in the (bare) model: wrappers, shared modules, flags and its in-place values; its own
    modules follow the base's device."""
    put_back(model, stored.state, stored.wrappers, stored.shared)
    for _, wrapper in stored.wrappers:  # each next to its base module (a model may span devices)
        device = _device(wrapper.base)
        for name, child in wrapper.named_children():
            if name != "base" and device is not None:
                child.to(device)
    if stored.shared is not None and _device(model) is not None:
        stored.shared.to(_device(model))
    for name, p in model.named_parameters():
        p.requires_grad_(stored.flags.get(name, p.requires_grad))
    swap_values(model, stored.values)


def _device(module: nn.Module) -> torch.device | None:
    return next((p.device for p in module.parameters()), None)


def check_name(name: str) -> None:
    """An adapter name is a non-empty string without '/', not starting with '.'."""
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise TenpeftError(f"adapter name {name!r} must be a non-empty string without '/' (it names a sub-folder)")


def _check_new_name(model: nn.Module, name: str) -> None:
    check_name(name)
    if name in adapter_names(model):
        raise TenpeftError(f"this model already has an adapter named {name!r}; delete_adapter it first or choose "
                           f"another name (it has {adapter_names(model)})")


def name_adapter(model: nn.Module, name: str) -> nn.Module:
    """Give the only adapter of ``model`` (``"default"`` since ``inject``) the name ``name``."""
    if adapter_names(model) != [active_adapter(model)]:
        raise TenpeftError(f"name_adapter names a model's only adapter; this one has {adapter_names(model)}")
    check_name(name)
    vars(model)[ADAPTERS_ATTR] = AdapterSet(active=name)
    return model


def add_built(model: nn.Module, name: str, build: Callable[[nn.Module], None]) -> nn.Module:
    """Add adapter ``name``, made by ``build(bare_model)`` (an inject, or a load), kept aside; the active
    adapter stays active. If ``build`` fails, the model is as it was."""
    _check_new_name(model, name)
    _check_switchable(model, "adding an adapter")
    found = _adapters(model)
    active = _set_aside(model)
    try:
        build(model)
        _check_switchable(model, "adding it")
        new = _set_aside(model)
    except BaseException:
        if hasattr(model, "tenpeft_state"):
            take_out(model)
        _bring_in(model, active)
        if found.stored:  # a failed load unloads, which drops the kept adapters from the model
            vars(model)[ADAPTERS_ATTR] = found
        raise
    _bring_in(model, active)
    found.stored[name] = new
    vars(model)[ADAPTERS_ATTR] = found
    return model


def add_adapter(model: nn.Module, name: str, method: str, **hyperparameters) -> nn.Module:
    """Inject ``method`` as a new adapter ``name`` beside the model's adapters; the active one stays active
    (``set_adapter`` to use the new one). The model must already carry an adapter (``tenpeft.inject``,
    named ``"default"``)."""
    return add_built(model, name, lambda bare: inject(bare, method, **hyperparameters))


def set_adapter(model: nn.Module, name: str) -> nn.Module:
    """Make adapter ``name`` the active one: it alone computes, trains and is saved; the others are kept
    with their values. Refused (model unchanged) for an unknown name, a merged or a disabled adapter."""
    found = _adapters(model)
    if name == found.active:
        return model
    if name not in found.stored:
        raise TenpeftError(f"this model has no adapter named {name!r}; it has {adapter_names(model)}")
    _check_switchable(model, "set_adapter")
    found.stored[found.active] = _set_aside(model)
    _bring_in(model, found.stored.pop(name))
    found.active = name
    vars(model)[ADAPTERS_ATTR] = found
    return model


def delete_adapter(model: nn.Module, name: str) -> nn.Module:
    """Drop adapter ``name``, which must not be the active one (``set_adapter`` another first; to remove the
    last one, ``tenpeft.unload``)."""
    found = _adapters(model)
    if name == found.active:
        others = list(found.stored)
        raise TenpeftError(f"adapter {name!r} is the active one; " + (
            f"set_adapter one of {others} first" if others else "to remove the only adapter call tenpeft.unload"))
    if name not in found.stored:
        raise TenpeftError(f"this model has no adapter named {name!r}; it has {adapter_names(model)}")
    del found.stored[name]
    return model


@contextlib.contextmanager
def activated(model: nn.Module, name: str | None) -> Iterator[nn.Module]:
    """``with activated(model, name):`` adapter ``name`` (None: the active one) is active; the one before
    is active again afterwards."""
    before = active_adapter(model)
    set_adapter(model, before if name is None else name)
    try:
        yield model
    finally:
        set_adapter(model, before)
