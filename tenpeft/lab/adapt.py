"""One entry point for every method a study compares: a tenpeft method, a PEFT baseline
(``peft_lora``, ``peft_ia3``, ``peft_prefix``, ``peft_prompt``) or ``full`` fine-tuning."""
from __future__ import annotations

from torch import nn

from tenpeft.engine import inject
from tenpeft.errors import TenpeftError
from tenpeft.methods import METHODS
from tenpeft.report import parameter_report

PEFT_BASELINES = {
    "peft_lora": ("LoraConfig", {"r": 8, "lora_alpha": 16}),
    "peft_ia3": ("IA3Config", {}),
    "peft_prefix": ("PrefixTuningConfig", {"num_virtual_tokens": 20}),
    "peft_prompt": ("PromptTuningConfig", {"num_virtual_tokens": 20}),
}
SEQUENCE_CHANGING = ("peft_prefix", "peft_prompt")  # prepend virtual tokens: not for prompt scoring
NEEDS_PAST_KEY_VALUES = ("peft_prefix",)  # PEFT feeds the prefix in as past_key_values


def known_methods() -> list[str]:
    """Every method name a run accepts."""
    return sorted(METHODS) + sorted(PEFT_BASELINES)


def _peft_config(method: str, args: dict, decoder: bool):
    try:
        import peft
    except ImportError:
        raise TenpeftError(f"{method} needs PEFT: pip install peft") from None
    if decoder and method in SEQUENCE_CHANGING:
        raise TenpeftError(f"{method} prepends virtual tokens, which prompt-based classification of a decoder "
                           f"does not support; use peft_lora, peft_ia3 or a tenpeft method")
    class_name, defaults = PEFT_BASELINES[method]
    task_type = "CAUSAL_LM" if decoder else "SEQ_CLS"
    try:
        return getattr(peft, class_name)(task_type=task_type, **{**defaults, **args})
    except TypeError as exc:
        raise TenpeftError(f"bad argument for {method} (peft.{class_name}): {exc}") from None


def apply_method(model: nn.Module, method: str, args: dict, *, decoder: bool) -> nn.Module:
    """Adapt ``model`` in place (tenpeft) or wrap it (PEFT); returns the model to train."""
    if method in METHODS:
        if decoder and "head" not in args:
            args = {**args, "head": "frozen"}  # an LM has no task head to train
        return inject(model, method, **args)
    if method in PEFT_BASELINES:
        import peft

        config = _peft_config(method, args, decoder)
        if method in NEEDS_PAST_KEY_VALUES:
            _check_past_key_values(model, method)
        return peft.get_peft_model(model, config)
    raise TenpeftError(f"unknown method {method!r}; known: {known_methods()}")


def _check_past_key_values(model: nn.Module, method: str) -> None:
    """PEFT's prefix tuning passes the prefix as ``past_key_values``; refuse before training (PEFT
    itself fails at the first forward) when neither the model nor its backbone takes them."""
    import inspect

    import transformers

    backbone = getattr(model, getattr(model, "base_model_prefix", ""), model)
    if not any("past_key_values" in inspect.signature(m.forward).parameters for m in (model, backbone)):
        raise TenpeftError(f"{method} needs a model whose forward takes past_key_values; {type(backbone).__name__} "
                           f"in transformers {transformers.__version__} does not. Use peft_prompt or peft_lora instead "
                           f"(or a transformers release whose {type(backbone).__name__} takes past_key_values)")


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def count_parameters(model: nn.Module) -> dict:
    """Trainable parameters in total and by component (tenpeft's report where there is one)."""
    if hasattr(model, "tenpeft_state"):
        report = parameter_report(model)
        return {"trainable": report.trainable, "components": {k: v for k, v in report.components.items() if v},
                "frozen_stored": report.frozen_stored, "seed_regenerable": report.seed_regenerable,
                "total": sum(p.numel() for p in model.parameters())}
    components: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            part = "head" if any(k in name for k in ("classifier", "score", "modules_to_save")) else "adapter"
            components[part] = components.get(part, 0) + p.numel()
    return {"trainable": sum(components.values()), "components": components,
            "total": sum(p.numel() for p in model.parameters())}
