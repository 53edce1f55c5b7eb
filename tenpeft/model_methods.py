"""What ``inject`` installs on a model and ``unload`` removes: ``save_pretrained`` that writes the tenpeft
adapter (:class:`AdapterSave`), the per-forward pre-hook of shared tensors' caches, and the guard
against reentrant gradient checkpointing of factors shared across layers (:class:`CheckpointingGuard`)."""
from __future__ import annotations

from torch import nn

from .errors import TenpeftError
from .placements import has_per_forward, refresh_per_forward
from .state import state_of
from .writer import write_adapter

# transformers 5 names the method twice; each takes its options dict under its own keyword
_CHECKPOINTING = {"gradient_checkpointing_enable": "gradient_checkpointing_kwargs",
                  "activation_checkpointing_enable": "activation_checkpointing_kwargs"}
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
        write_adapter(self.model, save_directory, state_dict=state_dict, is_main_process=is_main_process)


_REENTRANT_SHARED = ("shares factors across layers, which reentrant checkpointing cannot train: each layer's "
                     "recomputation runs its own backward through the shared factors (under DDP the ranks drift "
                     "apart; with a per-forward cache the backward fails)")


class CheckpointingGuard:
    """``model.gradient_checkpointing_enable`` (and transformers 5's ``activation_checkpointing_enable``)
    of a model with factors shared across layers: refuses ``use_reentrant=True``. Reentrant
    checkpointing recomputes each layer in its own backward pass, so DDP all-reduces a shared tensor's
    gradient before the other layers have added theirs, and the ranks drift apart silently (LoRTA, 2 gloo
    ranks, 3 steps: parameter sums -2.9757 vs -3.0331; non-reentrant, the default of transformers 5, is
    exact and agrees across ranks)."""

    def __init__(self, model: nn.Module, name: str):
        self.model, self.name = model, name

    def __call__(self, kwargs: dict | None = None, **options):
        chosen = kwargs if kwargs is not None else options.pop(_CHECKPOINTING[self.name], None)
        if (chosen or {}).get("use_reentrant"):
            raise TenpeftError(f"{state_of(self.model).method} {_REENTRANT_SHARED}; use "
                               f"{_CHECKPOINTING[self.name]}={{'use_reentrant': False}} (transformers' default)")
        return getattr(type(self.model), self.name)(self.model, chosen, **options)


def reentrant_checkpointing(model: nn.Module) -> bool:
    """Whether reentrant gradient checkpointing is on in ``model`` (transformers sets each layer's
    ``_gradient_checkpointing_func`` to ``partial(checkpoint, use_reentrant=...)``)."""
    return any(getattr(m, "gradient_checkpointing", False)
               and getattr(getattr(m, "_gradient_checkpointing_func", None), "keywords", {}).get("use_reentrant")
               for m in model.modules())


def check_checkpointing(model: nn.Module, plan, method: str) -> None:
    """Refuse, before ``inject`` changes anything, trained shared factors in a model that already has
    reentrant checkpointing on."""
    shared = any(p.requires_grad for m in plan.shared.values() for p in m.parameters())
    if shared and reentrant_checkpointing(model):
        raise TenpeftError(f"{method} {_REENTRANT_SHARED}, and this model has reentrant gradient checkpointing on; "
                           f"call model.gradient_checkpointing_disable(), then after inject "
                           f"model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={{'use_reentrant': False}})")


def attach_model_methods(model: nn.Module) -> None:
    """Make ``model.save_pretrained`` write its tenpeft adapter (:class:`AdapterSave`), register the forward
    pre-hook ``placements.refresh_per_forward`` when a shared module keeps a per-forward cache, and, if
    factors are shared across layers, guard ``gradient_checkpointing_enable`` (:class:`CheckpointingGuard`)."""
    if has_per_forward(model) and refresh_per_forward not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(refresh_per_forward)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained = AdapterSave(model)
    shared = getattr(model, "tenpeft_shared", None)
    if shared is not None and any(p.requires_grad for p in shared.parameters()):
        for name in _CHECKPOINTING:
            if hasattr(model, name):
                setattr(model, name, CheckpointingGuard(model, name))


def detach_model_methods(model: nn.Module) -> None:
    """Give ``model`` back its class's ``save_pretrained`` and ``gradient_checkpointing_enable``, and remove the
    per-forward pre-hook."""
    for key in [k for k, hook in model._forward_pre_hooks.items() if hook is refresh_per_forward]:
        del model._forward_pre_hooks[key]
    for name, kind in (("save_pretrained", AdapterSave), *((n, CheckpointingGuard) for n in _CHECKPOINTING)):
        if isinstance(vars(model).get(name), kind):
            delattr(model, name)
