"""What an injection leaves on a model, and what a save of it contains.

:class:`TenpeftState` is ``model.tenpeft_state``. A saved adapter is two files in one directory:
``CONFIG_NAME`` (the fields :func:`adapter_config` lists) and ``WEIGHTS_NAME`` (the tensors
:func:`adapter_tensors` lists: trainable ones, shared factors once, trained norms and heads, and
frozen tensors that cannot be rebuilt). The config's ``plugins`` lists the modules outside tenpeft
the adapter needs imported (``tenpeft.plugins``). ``tenpeft.io`` writes, reads and checks the files.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import TenpeftError
from .formats import Budget, Factorization
from .methods import METHODS, MethodConfig
from .placements import AdapterWrapper, Update
from .plugins import defining_modules
from .structure import ModelStructure, Target
from .version import __version__

# Not PEFT's adapter_config.json / adapter_model.safetensors, so that PEFT and transformers never take a tenpeft
# adapter for theirs; tenpeft 0.1.0 wrote those names, and a folder holding them is still read (``tenpeft.io``).
CONFIG_NAME, WEIGHTS_NAME = "tenpeft_config.json", "tenpeft_model.safetensors"
LEGACY_NAMES = ("adapter_config.json", "adapter_model.safetensors")
ADAPTERS_ATTR = "tenpeft_adapters"  # the named adapters that are not active (``tenpeft.adapters``)
FORMAT, FORMAT_VERSION = "tenpeft-adapter", 1
IDENTITY_DIMS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                 "vocab_size")


@dataclass
class TenpeftState:
    """What an injection left on the model (``model.tenpeft_state``)."""

    method: str
    config: MethodConfig
    structure: ModelStructure | None
    targets: list[Target]
    components: dict[str, str]  # trainable base parameter name -> component
    stored: list[str]  # frozen parameters that must be saved with the adapter
    expected: dict[str, int] = field(default_factory=dict)  # closed-form counts per component
    head: list[str] = field(default_factory=list)  # top-level modules of the task head
    original_flags: dict[str, bool] = field(default_factory=dict)  # base requires_grad, for unload
    # the untrained values of the base parameters trained in place (keys of ``components``), on the CPU;
    # None when they were too many to copy (``engine.ORIGINALS_MAX_SHARE``)
    originals: dict[str, torch.Tensor] | None = field(default_factory=dict)


def state_of(model: nn.Module) -> TenpeftState:
    """The injection state of ``model``, or a TenpeftError if it has no tenpeft adapters."""
    state = getattr(model, "tenpeft_state", None)
    if state is None:
        raise TenpeftError("this model has no tenpeft adapters; call tenpeft.inject(model, method) first")
    return state


def base_identity(model: nn.Module) -> dict:
    """What an adapter must match: the model class, family and dimensions."""
    config = getattr(model, "config", None)
    dims = {k: getattr(config, k, None) for k in IDENTITY_DIMS}
    return {"class": type(model).__name__, "model_type": getattr(config, "model_type", None),
            "name_or_path": getattr(config, "_name_or_path", "") or "", "dims": dims}


def _jsonable(value):
    if isinstance(value, Budget):
        return {"budget": value.parameters}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def saved_hyperparameters(config: MethodConfig) -> dict:
    """Every field of a method config as ``CONFIG_NAME`` holds it (JSON values)."""
    return _jsonable({f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


def adapter_tensors(model: nn.Module, include_regenerable: bool = False) -> dict[str, tuple[torch.Tensor, str]]:
    """Every tensor of the adapter by name, with its component: trainable parameters (shared ones
    once), frozen parameters stored with the adapter (``frozen_stored``) and, if asked, the frozen
    random factors rebuilt from the seed (``seed_regenerable``)."""
    state = state_of(model)
    head, stored = tuple(f"{name}." for name in state.head), set(state.stored)
    tensors = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            tensors[name] = (p, state.components.get(name) or (
                "shared_factors" if name.startswith("tenpeft_shared.") else "head" if name.startswith(head)
                else "factors"))
        elif name in stored:
            tensors[name] = (p, "frozen_stored")
    if include_regenerable:
        tensors.update({name: (buf, "seed_regenerable") for name, buf in _regenerable(model)})
    return tensors


def _regenerable(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Non-persistent floating buffers of tenpeft modules (frozen random factors), each once."""
    roots = [n for n, m in model.named_modules() if isinstance(m, AdapterWrapper)] + ["tenpeft_shared"]
    found = []
    for name, buf in model.named_buffers():
        owner_name, _, bname = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if (buf.is_floating_point() and bname in owner._non_persistent_buffers_set
                and any(name.startswith(root + ".") for root in roots)):
            found.append((name, buf))
    return found


def plugin_modules(model: nn.Module) -> list[str]:
    """The modules outside tenpeft that an adapter needs imported: those defining its method's config,
    build and formula, and the classes of its formats, updates and wrappers."""
    spec = METHODS.get(state_of(model).method)
    parts = [type(m) for m in model.modules() if isinstance(m, (Factorization, Update, AdapterWrapper))]
    return defining_modules([*((spec.config, spec.build, spec.formula) if spec else ()), *parts])


def adapter_config(model: nn.Module, tensors: dict[str, tuple[torch.Tensor, str]], store_frozen_random: bool,
                   report: dict) -> dict:
    """The content of ``CONFIG_NAME`` for ``model`` whose adapter tensors are ``tensors``
    (:func:`adapter_tensors`) and whose parameter report is ``report``."""
    state = state_of(model)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "tenpeft_version": __version__,
        "method": state.method,
        "hyperparameters": saved_hyperparameters(state.config),
        "targets": [t.name for t in state.targets],
        "base_model": base_identity(model),
        "frozen_random_stored": store_frozen_random,
        "tensors": {n: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "component": c}
                    for n, (t, c) in tensors.items()},
        "parameter_report": report,
        "plugins": plugin_modules(model),
    }
