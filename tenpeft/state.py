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
from .placements import AdapterWrapper, Update, has_per_forward, refresh_per_forward
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


# what transformers' save_pretrained takes that a tenpeft adapter has no use for (one safetensors file, never sharded)
_IGNORED_SAVE_OPTIONS = {"safe_serialization", "max_shard_size", "variant", "save_function", "token"}


class AdapterSave:
    """``model.save_pretrained`` of an injected model (``inject`` installs it, ``unload`` removes it): writes
    the tenpeft adapter, not the base, so ``Trainer.save_model``, every Trainer/trl checkpoint and
    ``model.push_to_hub`` hold the adapter alone, and no save silently drops it. ``state_dict`` (a gathered
    full state dict, from FSDP or DeepSpeed) supplies the tensors it holds; ``is_main_process=False`` writes
    nothing (but joins the gathering of FSDP2 shards)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, save_directory: str, is_main_process: bool = True, state_dict: dict | None = None,
                 push_to_hub: bool = False, **options) -> None:
        unknown = sorted(set(options) - _IGNORED_SAVE_OPTIONS)
        if unknown or push_to_hub:
            raise TenpeftError(f"save_pretrained of a tenpeft model writes its adapter and takes no "
                               f"{unknown or ['push_to_hub']}; push with tenpeft.push_to_hub(model, repo_id)")
        from .io import save_adapter  # io builds on the state, so it is imported when first needed

        save_adapter(self.model, save_directory, state_dict=state_dict, is_main_process=is_main_process)


class CheckpointingGuard:
    """``model.gradient_checkpointing_enable`` of a model with factors shared across layers: refuses
    ``use_reentrant=True``. Reentrant checkpointing recomputes each layer in its own backward pass, so DDP
    all-reduces a shared tensor's gradient before the other layers have added theirs, and the ranks drift
    apart silently (LoRTA, 2 gloo ranks, 3 steps: parameter sums -2.9757 vs -3.0331; non-reentrant, the
    default of transformers 5, is exact and agrees across ranks)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs):
        if (gradient_checkpointing_kwargs or {}).get("use_reentrant"):
            raise TenpeftError(f"{state_of(self.model).method} shares factors across layers, which reentrant "
                               f"checkpointing lets drift apart between DDP ranks; use "
                               f"gradient_checkpointing_kwargs={{'use_reentrant': False}} (transformers' default)")
        return type(self.model).gradient_checkpointing_enable(self.model, gradient_checkpointing_kwargs, **kwargs)


def attach_model_methods(model: nn.Module) -> None:
    """Make ``model.save_pretrained`` write its tenpeft adapter (:class:`AdapterSave`), register the forward
    pre-hook ``placements.refresh_per_forward`` when a shared module keeps a per-forward cache, and, if
    factors are shared across layers, guard ``gradient_checkpointing_enable`` (:class:`CheckpointingGuard`)."""
    if has_per_forward(model) and refresh_per_forward not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(refresh_per_forward)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained = AdapterSave(model)
    shared = getattr(model, "tenpeft_shared", None)
    if hasattr(model, "gradient_checkpointing_enable") and shared is not None and any(
            p.requires_grad for p in shared.parameters()):
        model.gradient_checkpointing_enable = CheckpointingGuard(model)


def detach_model_methods(model: nn.Module) -> None:
    """Give ``model`` back its class's ``save_pretrained`` and ``gradient_checkpointing_enable``, and remove the
    per-forward pre-hook."""
    for key in [k for k, hook in model._forward_pre_hooks.items() if hook is refresh_per_forward]:
        del model._forward_pre_hooks[key]
    for name, kind in (("save_pretrained", AdapterSave), ("gradient_checkpointing_enable", CheckpointingGuard)):
        if isinstance(vars(model).get(name), kind):
            delattr(model, name)


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
