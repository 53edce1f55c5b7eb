"""External baselines: every PEFT method, each described by one record.

``peft:<type>`` names any method PEFT ships (its ``PeftType`` in lower case, e.g. ``peft:loha``,
``peft:lokr``, ``peft:vera``, ``peft:boft``; ``peft:prefix`` and ``peft:prompt`` for prefix and
prompt tuning), built from PEFT's own config class with PEFT's defaults. The four named baselines
(``peft_lora``, ``peft_ia3``, ``peft_prefix``, ``peft_prompt``) keep the defaults earlier records
were trained with.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tenpeft.errors import TenpeftError

PREFIX = "peft:"
ALIASES = {"prefix": "prefix_tuning", "prompt": "prompt_tuning"}
PAST_KEY_VALUES = ("prefix_tuning",)  # PEFT feeds these in as past_key_values


@dataclass(frozen=True)
class Baseline:
    """One external baseline: the PEFT type it builds, the defaults tenpeft sets on top of PEFT's,
    the name of its rank argument (None: no rank), whether it prepends virtual tokens (so a decoder
    cannot be scored by prompt) and whether the model's forward must take ``past_key_values``."""

    name: str
    peft_type: str
    defaults: dict = field(default_factory=dict)
    rank_arg: str | None = None
    changes_sequence: bool = False
    needs_past_key_values: bool = False

    def config_class(self):
        """PEFT's config class for this baseline."""
        return _peft_types()[self.peft_type]


NAMED = {b.name: b for b in (
    Baseline("peft_lora", "lora", {"r": 8, "lora_alpha": 16}, rank_arg="r"),
    Baseline("peft_ia3", "ia3"),
    Baseline("peft_prefix", "prefix_tuning", {"num_virtual_tokens": 20}, changes_sequence=True,
             needs_past_key_values=True),
    Baseline("peft_prompt", "prompt_tuning", {"num_virtual_tokens": 20}, changes_sequence=True),
)}


def register_baseline(baseline: Baseline) -> Baseline:
    """Add a named baseline (e.g. a PEFT method with other defaults) for the study scripts."""
    if not isinstance(baseline, Baseline) or baseline.name.startswith(PREFIX):
        raise TenpeftError(f"register a Baseline whose name does not start with {PREFIX!r} (that prefix names "
                           f"PEFT's own methods); got {baseline!r}")
    NAMED[baseline.name] = baseline
    return baseline


def _peft_types() -> dict:
    try:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    except ImportError:
        raise TenpeftError("PEFT baselines need PEFT: pip install peft") from None
    return {str(getattr(k, "value", k)).lower(): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


def is_baseline(name: str) -> bool:
    """Whether ``name`` names an external baseline (known or not)."""
    return name in NAMED or name.startswith(PREFIX)


def get_baseline(name: str) -> Baseline:
    """The record of baseline ``name`` (a named one or ``peft:<type>``); a TenpeftError listing
    PEFT's types for an unknown one."""
    if name in NAMED:
        return NAMED[name]
    if not name.startswith(PREFIX):
        raise TenpeftError(f"{name!r} is not a PEFT baseline; write peft:<type> or one of {sorted(NAMED)}")
    kind = ALIASES.get(name[len(PREFIX):], name[len(PREFIX):])
    types = _peft_types()
    if kind not in types:
        raise TenpeftError(f"PEFT has no method {kind!r} ({name}); its methods: {', '.join(sorted(types))}")
    cls = types[kind]
    import peft

    fields = {f.name for f in dataclasses.fields(cls)}
    return Baseline(name, kind, rank_arg="r" if "r" in fields else None,
                    changes_sequence=issubclass(cls, peft.PromptLearningConfig),
                    needs_past_key_values=kind in PAST_KEY_VALUES)
