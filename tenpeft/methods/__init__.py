"""Every method, registered by name in this one place."""
from __future__ import annotations

from ..errors import TenpeftError
from ..plugins import lookup
from .base import BuildContext, Method, MethodConfig, Plan
from .baselines import BitfitConfig, FullConfig, bitfit_formula, build_bitfit, build_full, full_formula
from .per_target import (KronaConfig, LoraConfig, LorettaRepConfig, build_lora, build_loretta_rep, lora_formula,
                         loretta_rep_formula)
from .quanta import QuantaConfig, build_quanta, quanta_formula
from .serial import AdapterConfig, LorettaAdpConfig, build_serial, serial_formula
from .shared import (LortaConfig, LortaTTConfig, LortaTuckerConfig, SharedFFNConfig, SharedTensorConfig, build_shared,
                     shared_formula)
from .stack import (FactTKConfig, FactTTConfig, LotrConfig, MetaTTConfig, StackConfig, TensLoraConfig,
                    build_stack, stack_formula)
from .stacked import NolaConfig, VeraConfig, build_nola, build_vera, nola_formula, vera_formula

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lora", LoraConfig, build_lora, lora_formula, "parallel"),
    Method("vera", VeraConfig, build_vera, vera_formula, "parallel"),
    Method("nola", NolaConfig, build_nola, nola_formula, "parallel"),
    Method("krona", KronaConfig, build_lora, lora_formula, "parallel"),
    Method("quanta", QuantaConfig, build_quanta, quanta_formula, "parallel"),
    Method("loretta_rep", LorettaRepConfig, build_loretta_rep, loretta_rep_formula, "parallel"),
    Method("lorta", LortaConfig, build_shared, shared_formula, "parallel", needs_structure=True),
    Method("lorta_tucker", LortaTuckerConfig, build_shared, shared_formula, "parallel", needs_structure=True),
    Method("lorta_tt", LortaTTConfig, build_shared, shared_formula, "parallel", needs_structure=True),
    Method("shared_ffn", SharedFFNConfig, build_shared, shared_formula, "parallel", needs_structure=True),
    Method("lotr", LotrConfig, build_stack, stack_formula, "parallel", needs_structure=True),
    Method("fact_tt", FactTTConfig, build_stack, stack_formula, "parallel", needs_structure=True),
    Method("fact_tk", FactTKConfig, build_stack, stack_formula, "parallel", needs_structure=True),
    Method("metatt", MetaTTConfig, build_stack, stack_formula, "parallel", needs_structure=True),
    Method("tenslora", TensLoraConfig, build_stack, stack_formula, "parallel", needs_structure=True),
    Method("adapter", AdapterConfig, build_serial, serial_formula, "serial"),
    Method("loretta_adp", LorettaAdpConfig, build_serial, serial_formula, "serial"),
    Method("bitfit", BitfitConfig, build_bitfit, bitfit_formula, "base", uses_targets=False),
    Method("full", FullConfig, build_full, full_formula, "base", uses_targets=False, trains_norms=True),
)}


def register_method(method: Method) -> Method:
    """Add a method (e.g. a preset over an existing layout with another format)."""
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The method registered under ``name`` (installed plugins are loaded if it is not yet)."""
    method = lookup(METHODS, name)
    if method is None:
        raise TenpeftError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    return method


__all__ = ["BuildContext", "METHODS", "Method", "MethodConfig", "Plan", "SharedTensorConfig", "StackConfig", "build_shared", "build_stack", "get_method",
           "register_method", "shared_formula", "stack_formula"]
