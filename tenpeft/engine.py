"""The injection engine: ``inject(model, method, **hyperparameters)``.

Everything is validated and built before the model is touched; the model is then changed in one
step that is undone if anything fails, so bad input never leaves a half-injected model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch import nn

from .errors import TenpeftError
from .layouts.bottleneck import TensorizedUpdate
from .methods import BuildContext, MethodConfig, Plan, get_method
from .formats import get_format
from .placements import ParallelUpdate
from .shapes import matrix_shape
from .structure import ModelStructure, Target, discover, norm_modules, task_head
from .targets import select_targets


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


def state_of(model: nn.Module) -> TenpeftState:
    """The injection state of ``model``, or a TenpeftError if it has no tenpeft adapters."""
    state = getattr(model, "tenpeft_state", None)
    if state is None:
        raise TenpeftError("this model has no tenpeft adapters; call tenpeft.inject(model, method) first")
    return state


def inject(model: nn.Module, method: str, **hyperparameters) -> nn.Module:
    """Freeze ``model`` and put ``method``'s adapters in place; returns the same model object.

    Raises TenpeftError (model untouched) for an unknown method or hyperparameter, a bad rank or
    shape, targets matching nothing, or an unsupported family."""
    if hasattr(model, "tenpeft_state"):
        raise TenpeftError(f"this model already has tenpeft adapters ({model.tenpeft_state.method}); "
                           f"inject into a fresh base model")
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
    _add_norms_and_head(ctx, plan, expected, method_trains_norms=spec.name == "full")
    _check_shared_fits(model, plan, method)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    components, stored = _apply(model, plan)
    model.tenpeft_state = TenpeftState(method, config, structure, targets, components, stored, expected, head,
                                       flags)
    return model


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


def _add_norms_and_head(ctx: BuildContext, plan: Plan, expected: dict[str, int], method_trains_norms: bool):
    """Trainable norms and the task head, common to every method."""
    c = ctx.config
    if c.train_norms and not method_trains_norms:
        for name in ctx.norms:
            for pname, p in ctx.modules[name].named_parameters(recurse=False):
                if f"{name}.{pname}" not in plan.trainable:  # bitfit already trains norm biases
                    plan.trainable[f"{name}.{pname}"] = "norms"
                    expected["norms"] = expected.get("norms", 0) + p.numel()
    squares = {}
    if c.head == "tt":
        squares = {f"{h}.{n}" if n else h: m for h in ctx.head for n, m in ctx.modules[h].named_modules()
                   if isinstance(m, nn.Linear) and m.in_features == m.out_features}
    if c.head_shape is not None and not squares:
        raise TenpeftError(f"head_shape={list(c.head_shape)} applies only with head='tt' on a task head that has "
                           f"a square linear (this model's head: {ctx.head or 'none'}); drop head_shape")
    if not ctx.head or c.head == "frozen":
        return
    for h in ctx.head:
        for pname, p in ctx.modules[h].named_parameters():
            full = f"{h}.{pname}"
            if full.rpartition(".")[0] in squares:
                plan.stored.append(full)
            else:
                plan.trainable[full] = "head"
                expected["head"] = expected.get("head", 0) + p.numel()
    for name, linear in squares.items():
        width = linear.in_features
        shape = matrix_shape(width, width, {f"{width}x{width}": c.head_shape} if c.head_shape else None)
        update = TensorizedUpdate(width, c.head_rank, shape, **ctx.placement_of(linear))
        plan.replacements[name] = ParallelUpdate(linear, [update], [None])
        expected["head"] = expected.get("head", 0) + get_format("tt").count(
            shape, get_format("tt").resolve_rank(shape, c.head_rank))


def _check_shared_fits(model: nn.Module, plan: Plan, method: str) -> None:
    """Shared modules live in ``model.tenpeft_shared``; an ``nn.Sequential`` would run that child as a layer."""
    if plan.shared and isinstance(model, nn.Sequential):
        raise TenpeftError(f"{method} keeps factors shared across layers ({', '.join(sorted(plan.shared))}) in a "
                           f"tenpeft_shared child, which an nn.Sequential would run as a layer; wrap the Sequential "
                           f"in a module with its own forward, or use a method without shared factors (e.g. lora)")


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
    after = dict(model.named_parameters())
    components = {n: by_id[id(p)] for n, p in after.items() if id(p) in by_id}
    return components, [n for n, p in after.items() if id(p) in stored_ids]
