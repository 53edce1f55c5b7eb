"""Parameter counts, the one place that counts them: trainable parameters split by component, checked
against each method's closed-form formula; frozen-but-stored and seed-regenerable buffers counted apart;
the total. ``parameter_report`` counts a tenpeft model, ``count_parameters`` any model (a run record's
``params``), ``saved_counts`` a saved adapter's tensors from its config."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from torch import nn

from .state import adapter_tensors, state_of

COMPONENTS = ("factors", "shared_factors", "norms", "head", "biases", "base")
ADAPTER_COMPONENTS = ("factors", "shared_factors")  # the adapter's own; the rest are base parameters trained in place
SAVED_COMPONENTS = (*COMPONENTS, "frozen_stored", "seed_regenerable")  # what a saved tensor can be
_HEAD_NAMES = ("classifier", "score", "modules_to_save")  # a task head's parameter names (transformers, PEFT)


@dataclass
class ParameterReport:
    """Counts for one adapted model. ``components`` sums to ``trainable``; ``expected`` is the
    method's closed-form formula; ``frozen_stored`` are frozen entries saved with the adapter
    (e.g. a tensorized head's base weight); ``seed_regenerable`` are frozen random factors rebuilt
    from a saved seed (never stored); ``base_frozen`` the rest of the model."""

    method: str
    components: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)
    frozen_stored: int = 0
    seed_regenerable: int = 0
    base_frozen: int = 0

    @property
    def trainable(self) -> int:
        return sum(self.components.values())

    @property
    def total(self) -> int:
        """Every parameter of the model (trainable, frozen and stored, frozen base); buffers are not parameters."""
        return self.trainable + self.frozen_stored + self.base_frozen

    @property
    def adapter(self) -> int:
        """The adapter's own trainable parameters (``ADAPTER_COMPONENTS``): no head, norms, biases or base."""
        return sum(self.components.get(c, 0) for c in ADAPTER_COMPONENTS)

    @property
    def trained_in_place(self) -> dict[str, int]:
        """The non-zero components that are base parameters trained in place (norms, head, biases, base)."""
        return {k: n for k, n in self.components.items() if n and k not in ADAPTER_COMPONENTS}

    @property
    def matches_formula(self) -> bool:
        return {k: v for k, v in self.components.items() if v} == {k: v for k, v in self.expected.items() if v}

    def to_dict(self) -> dict:
        return {**asdict(self), "trainable": self.trainable, "matches_formula": self.matches_formula}

    def __str__(self) -> str:
        rows = [(name, self.components.get(name, 0), self.expected.get(name, 0)) for name in COMPONENTS]
        lines = [f"tenpeft parameter report: {self.method}", f"{'component':<18}{'count':>14}{'formula':>14}"]
        lines += [f"{n:<18}{c:>14,}{e:>14,}" for n, c, e in rows if c or e]
        lines += [f"{'trainable':<18}{self.trainable:>14,}{sum(self.expected.values()):>14,}",
                  f"{'frozen, stored':<18}{self.frozen_stored:>14,}",
                  f"{'seed-regenerable':<18}{self.seed_regenerable:>14,}",
                  f"{'base (frozen)':<18}{self.base_frozen:>14,}",
                  f"matches formula: {self.matches_formula}"]
        return "\n".join(lines)


def parameter_report(model: nn.Module) -> ParameterReport:
    """Count ``model``'s parameters by component (shared factors once). Works on the meta device."""
    state = state_of(model)
    report = ParameterReport(state.method, {name: 0 for name in COMPONENTS}, dict(state.expected))
    for tensor, component in adapter_tensors(model, include_regenerable=True).values():
        if component == "frozen_stored":
            report.frozen_stored += tensor.numel()
        elif component == "seed_regenerable":
            report.seed_regenerable += tensor.numel()
        else:
            report.components[component] += tensor.numel()
    report.base_frozen = sum(p.numel() for p in model.parameters()) - report.trainable - report.frozen_stored
    return report


def count_parameters(model: nn.Module) -> dict:
    """The parameters of any model as JSON (a run record's ``params``): ``trainable``, its non-zero ``components``
    and ``total``; a tenpeft model's from its report, with ``frozen_stored`` and ``seed_regenerable``; any other
    (a PEFT model) its trainable ones split by name into ``head`` and ``adapter``."""
    if hasattr(model, "tenpeft_state"):
        report = parameter_report(model)
        return {"trainable": report.trainable, "components": {k: v for k, v in report.components.items() if v},
                "frozen_stored": report.frozen_stored, "seed_regenerable": report.seed_regenerable,
                "total": report.total}
    components: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            part = "head" if any(k in name for k in _HEAD_NAMES) else "adapter"
            components[part] = components.get(part, 0) + p.numel()
    return {"trainable": sum(components.values()), "components": components,
            "total": sum(p.numel() for p in model.parameters())}


def saved_counts(tensors: dict) -> dict:
    """A saved adapter's parameters from its config's ``tensors`` (shape and component of each): the non-zero
    ``components`` (trainable ones first), ``trainable`` and ``total`` (every stored one)."""
    components = dict.fromkeys(SAVED_COMPONENTS, 0)
    for info in tensors.values():
        components[info["component"]] = components.get(info["component"], 0) + math.prod(info["shape"])
    return {"components": {k: v for k, v in components.items() if v},
            "trainable": sum(components[k] for k in COMPONENTS), "total": sum(components.values())}
