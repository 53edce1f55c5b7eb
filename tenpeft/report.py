"""Parameter reports: trainable parameters split by component, checked against each method's
closed-form formula; frozen-but-stored and seed-regenerable buffers counted apart."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from .errors import TenpeftError
from .placements import AdapterWrapper

COMPONENTS = ("factors", "shared_factors", "norms", "head", "biases", "base")


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
    state = getattr(model, "tenpeft_state", None)
    if state is None:
        raise TenpeftError("this model has no tenpeft adapters; call tenpeft.inject(model, method) first")
    head = tuple(f"{name}." for name in state.head)
    report = ParameterReport(state.method, {name: 0 for name in COMPONENTS}, dict(state.expected))
    stored = set(state.stored)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            if name in stored:
                report.frozen_stored += p.numel()
            else:
                report.base_frozen += p.numel()
            continue
        component = state.components.get(name) or (
            "shared_factors" if name.startswith("tenpeft_shared.") else "head" if name.startswith(head) else "factors")
        report.components[component] += p.numel()
    report.seed_regenerable = _regenerable(model)
    return report


def _regenerable(model: nn.Module) -> int:
    """Non-persistent buffers of tenpeft modules (frozen random factors), each counted once."""
    seen, total = set(), 0
    roots = [m for m in model.modules() if isinstance(m, AdapterWrapper)] + [model.tenpeft_shared]
    for root in roots:
        for module in root.modules():
            for bname in module._non_persistent_buffers_set:
                buf = module._buffers.get(bname)
                if buf is not None and id(buf) not in seen and buf.is_floating_point():
                    seen.add(id(buf))
                    total += buf.numel()
    return total
