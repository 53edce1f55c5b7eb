"""The injection engine: ``inject(model, method, **hyperparameters)``.

Everything is validated and built before the model is touched; the model is then changed in one
step that is undone if anything fails, so bad input never leaves a half-injected model.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from .errors import TenpeftError
from .heads import add_head_and_norms
from .methods import BuildContext, MethodConfig, Plan, get_method
from .placements import ParallelUpdate
from .model_methods import attach_model_methods, check_checkpointing
from .state import TenpeftState
from .structure import discover, norm_modules, task_head
from .targets import select_targets

ORIGINALS_MAX_SHARE = 0.1  # base parameters trained in place up to this share of the model are copied at injection


def inject(model: nn.Module, method: str, **hyperparameters) -> nn.Module:
    """Freeze ``model`` and put ``method``'s adapters in place; returns the same model object.

    Raises TenpeftError (model untouched) for an unknown method or hyperparameter, a bad rank or
    shape, targets matching nothing, or an unsupported family."""
    if hasattr(model, "tenpeft_state"):
        raise TenpeftError(f"this model already has tenpeft adapters ({model.tenpeft_state.method}); inject into a "
                           f"fresh base model, or add another named one with tenpeft.add_adapter(model, name, method)")
    spec = get_method(method)
    config = _make_config(spec, hyperparameters)
    structure, family_error = _try_discover(model)
    if spec.needs_structure and structure is None:
        raise TenpeftError(f"{method} needs the attention structure (layers, heads, Q/K/V/O). {family_error}")
    modules = dict(model.named_modules())
    head, norms = task_head(model), norm_modules(model)
    targets = select_targets(model, structure, config.roles, config.target_modules, config.exclude_modules,
                             head, family_error) if spec.uses_targets else []
    ctx = BuildContext(model, config, structure, targets, modules, head, norms)
    plan = spec.build(ctx)
    expected = spec.formula(ctx)
    add_head_and_norms(ctx, plan, expected, trains_norms=spec.trains_norms)
    _check_shared_fits(model, plan, method)
    _check_shared_declared(plan, method)
    check_checkpointing(model, plan, method)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    components, stored = _apply(model, plan)
    model.tenpeft_state = TenpeftState(method, config, structure, targets, components, stored, expected, head,
                                       flags, _originals(model, components))
    attach_model_methods(model)
    return model


def _originals(model: nn.Module, components: dict[str, str]):
    """CPU copies of the base parameters the method trains in place (norms, head, biases), taken before
    any training, so ``disable_adapter`` and named adapters can give each one back; None when they are
    more than ``ORIGINALS_MAX_SHARE`` of the model (``full``), which is then not copied."""
    params = dict(model.named_parameters())
    in_place = sum(params[n].numel() for n in components)
    if in_place > ORIGINALS_MAX_SHARE * sum(p.numel() for p in model.parameters()):
        return None
    return {n: params[n].detach().to("meta" if params[n].is_meta else "cpu", copy=True) for n in components}


def _make_config(spec, hyperparameters) -> MethodConfig:
    names = {f.name for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(hyperparameters) - names)
    if unknown:
        raise TenpeftError(f"{spec.name} has no hyperparameter(s) {unknown}; it takes {sorted(names)}")
    try:
        return spec.config(**hyperparameters)
    except TypeError as err:
        raise TenpeftError(f"bad hyperparameters for {spec.name}: {err}") from None


def _try_discover(model):
    try:
        return discover(model), None
    except TenpeftError as err:
        return None, err


def _check_shared_fits(model: nn.Module, plan: Plan, method: str) -> None:
    """Shared modules live in ``model.tenpeft_shared``; an ``nn.Sequential`` would run that child as a layer."""
    if plan.shared and isinstance(model, nn.Sequential):
        raise TenpeftError(f"{method} keeps factors shared across layers ({', '.join(sorted(plan.shared))}) in a "
                           f"tenpeft_shared child, which an nn.Sequential would run as a layer; wrap the Sequential "
                           f"in a module with its own forward, or use a method without shared factors (e.g. lora)")


def _check_shared_declared(plan: Plan, method: str) -> None:
    """Updates declare the shared modules they read (``Update.shared_modules``), so a merge notices when
    those change: every declared module must be in ``plan.shared`` and, where the plan holds parallel
    updates only, every shared module must be declared by one of them."""
    updates = [u for m in plan.replacements.values() if isinstance(m, ParallelUpdate) for u in m.updates]
    registered = {id(sub) for m in plan.shared.values() for sub in m.modules()}
    declared = set()
    for update in updates:
        for module in update.shared_modules():
            if id(module) not in registered:
                raise TenpeftError(f"{method}: {type(update).__name__} declares a shared {type(module).__name__} "
                                   f"module that the plan does not register in plan.shared; add it there (it is "
                                   f"then trained, saved and merged once)")
            declared.update(id(sub) for sub in module.modules())
    if not updates or not all(isinstance(m, ParallelUpdate) for m in plan.replacements.values()):
        return
    undeclared = [k for k, m in plan.shared.items() if not any(id(sub) in declared for sub in m.modules())]
    if undeclared:
        raise TenpeftError(f"{method} keeps shared module(s) {sorted(undeclared)} that no update declares in "
                           f"Update.shared_modules(); return them from shared_modules() of the updates that read "
                           f"them, so that a merge notices when they change")


def _apply(model: nn.Module, plan: Plan) -> tuple[dict[str, str], list[str]]:
    """Freeze, mark trainable, swap modules, register shared ones (no empty ``tenpeft_shared`` on an
    ``nn.Sequential``); all or nothing."""
    params = dict(model.named_parameters())
    missing = [n for n in (*plan.trainable, *plan.stored) if n not in params]
    if missing:
        raise TenpeftError(f"internal: parameters {missing[:3]} not found in the model")
    flags = {n: p.requires_grad for n, p in params.items()}
    by_id = {id(params[n]): comp for n, comp in plan.trainable.items()}
    stored_ids = {id(params[n]) for n in plan.stored}
    swapped = []
    try:
        for name, p in params.items():
            p.requires_grad_(name in plan.trainable)
        for name, new in plan.replacements.items():
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            swapped.append((parent, attr, getattr(parent, attr)))
            setattr(parent, attr, new)
        if plan.shared or not isinstance(model, nn.Sequential):
            model.add_module("tenpeft_shared", nn.ModuleDict(plan.shared))
    except BaseException:
        for parent, attr, old in reversed(swapped):
            setattr(parent, attr, old)
        if "tenpeft_shared" in model._modules:
            del model._modules["tenpeft_shared"]
        for name, p in params.items():
            p.requires_grad_(flags[name])
        raise
    added = [*plan.replacements.values(), *([model.tenpeft_shared] if "tenpeft_shared" in model._modules else [])]
    _match_mode(model, added, [old for _, _, old in swapped])
    after = dict(model.named_parameters())
    components = {n: by_id[id(p)] for n, p in after.items() if id(p) in by_id}
    return components, [n for n, p in after.items() if id(p) in stored_ids]


def _match_mode(model: nn.Module, added: list[nn.Module], replaced: list[nn.Module]) -> None:
    """Put every new adapter submodule in the model's mode (train or eval), as PEFT does; the base modules
    inside a wrapper keep theirs."""
    base = {id(sub) for module in replaced for sub in module.modules()}
    for module in added:
        for sub in module.modules():
            if id(sub) not in base:
                sub.training = model.training
