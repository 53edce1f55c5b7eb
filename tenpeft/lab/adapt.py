"""One entry point for every method a study compares: a tenpeft method (``full`` fine-tuning
included) or an external baseline (``tenpeft.lab.baselines``: any PEFT method)."""
from __future__ import annotations

from torch import nn

from tenpeft.engine import inject
from tenpeft.errors import TenpeftError
from tenpeft.lab.baselines import NAMED, PREFIX, Baseline, get_baseline, is_baseline
from tenpeft.methods import METHODS
from tenpeft.plugins import lookup
from tenpeft.report import count_parameters  # noqa: F401  (re-exported: spec.py and the runners import it from here)


def known_methods() -> list[str]:
    """Every method name a run accepts (``peft:<type>`` standing for any PEFT method)."""
    return sorted(METHODS) + sorted(NAMED) + [f"{PREFIX}<type>"]


def _tenpeft_method(method: str):
    """The registered tenpeft method ``method`` (installed plugins loaded if needed), or None."""
    return lookup(METHODS, method)


def is_known(method: str) -> bool:
    """Whether a run accepts ``method`` (a ``peft:<type>`` is checked against PEFT when built)."""
    return _tenpeft_method(method) is not None or is_baseline(method)


def rank_arg(method: str) -> str | None:
    """The name of ``method``'s rank argument (``rank``, PEFT's ``r``), or None if it has none (or
    is unknown: the checks before training say so)."""
    if not is_known(method):
        return None
    if _tenpeft_method(method) is not None:
        import dataclasses

        return "rank" if "rank" in {f.name for f in dataclasses.fields(_tenpeft_method(method).config)} else None
    return get_baseline(method).rank_arg


def _peft_config(baseline: Baseline, args: dict, decoder: bool):
    if decoder and baseline.changes_sequence:
        raise TenpeftError(f"{baseline.name} prepends virtual tokens, which prompt-based classification of a decoder "
                           f"does not support; use peft_lora, peft_ia3 or a tenpeft method")
    cls = baseline.config_class()
    try:
        return cls(task_type="CAUSAL_LM" if decoder else "SEQ_CLS", **{**baseline.defaults, **args})
    except (TypeError, ValueError) as exc:
        raise TenpeftError(f"bad argument for {baseline.name} (peft.{cls.__name__}): {exc}") from None


def apply_method(model: nn.Module, method: str, args: dict, *, decoder: bool) -> nn.Module:
    """Adapt ``model`` in place (tenpeft) or wrap it (PEFT); returns the model to train."""
    if _tenpeft_method(method) is not None:
        if decoder and "head" not in args:
            args = {**args, "head": "frozen"}  # an LM has no task head to train
        return inject(model, method, **args)
    if is_baseline(method):
        import peft

        baseline = get_baseline(method)
        config = _peft_config(baseline, args, decoder)
        if baseline.needs_past_key_values:
            _check_past_key_values(model, method)
        try:
            return peft.get_peft_model(model, config)
        except (TypeError, ValueError) as exc:
            raise TenpeftError(f"{method} cannot adapt this model (peft: {exc})") from None
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
