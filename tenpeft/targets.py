"""Choosing the weights to adapt: by role on a known family, or by name (list: exact names or
dotted suffixes; str: one regex matched against the whole name), minus ``exclude_modules``."""
from __future__ import annotations

import re
from typing import Sequence

from torch import nn

from .errors import TenpeftError
from .structure import ROLE_ALIASES, ModelStructure, Target, expand_roles, linear_dims


def name_matches(name: str, spec: Sequence[str] | str | None) -> bool:
    """PEFT's rule: a str is a full-match regex; a list matches exact names or ``.suffix``es."""
    if spec is None:
        return False
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(name == s or name.endswith("." + s) for s in spec)


def select_targets(model: nn.Module, structure: ModelStructure | None, roles: Sequence[str],
                   target_modules, exclude_modules, head: Sequence[str],
                   family_error: TenpeftError | None = None) -> list[Target]:
    """The targets of one injection, or a TenpeftError saying why there are none."""
    if target_modules is None:
        if structure is None:
            raise family_error
        targets = _role_targets(structure, roles)
    else:
        targets = _named_targets(model, structure, target_modules, head)
    targets = [t for t in targets if not name_matches(t.name, exclude_modules)]
    if not targets:
        what = f"target_modules={target_modules!r}" if target_modules is not None else f"roles={list(roles)}"
        raise TenpeftError(f"{what} (minus exclude_modules={exclude_modules!r}) matched no linear layer of "
                           f"{type(model).__name__}; linear layers look like: {_examples(model)}")
    return targets


def _role_targets(structure: ModelStructure, roles: Sequence[str]) -> list[Target]:
    """Roles named one by one must exist; roles reached through an alias (attn/ffn/all) may not."""
    available = {r for layer in structure.layers for r in layer}
    chosen: list[str] = []
    for role in roles:
        expanded = expand_roles((role,))
        if role not in ROLE_ALIASES and role not in available:
            raise TenpeftError(f"family {structure.family!r} has no {role!r} linear (it has {sorted(available)})")
        chosen += [r for r in expanded if r in available and r not in chosen]
    return [layer[r] for layer in structure.layers for r in chosen if r in layer]


def _named_targets(model, structure, spec, head) -> list[Target]:
    known = {t.name: t for layer in (structure.layers if structure else []) for t in layer.values()
             if t.out_slice is None}
    skip = tuple(f"{h}." for h in head) + ("lm_head.",)
    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    targets = []
    for name, module in model.named_modules():
        dims = linear_dims(module)
        if dims is None or (name + ".").startswith(skip) or module is output_embeddings:
            continue
        if name_matches(name, spec):
            layer = re.search(r"\.(\d+)(?:\.|$)", name)
            targets.append(known.get(name) or Target(name, re.sub(r"\.\d+\.", ".*.", name),
                                                     int(layer.group(1)) if layer else None, *dims))
    return targets


def _examples(model: nn.Module, count: int = 6) -> list[str]:
    names = [n for n, m in model.named_modules() if linear_dims(m) is not None]
    return names[:count] + (["..."] if len(names) > count else [])
