"""``transformers.Trainer`` (and trl's trainers, which are Trainers) with adapter-only checkpoints.

An injected model's ``save_pretrained`` writes its tenpeft adapter (``tenpeft.model_methods.AdapterSave``), so
``trainer.save_model()`` and every checkpoint hold the adapter (with the trained head and norms), the
optimizer, scheduler, RNG and trainer state, and no base weights. Trainer restores a checkpoint itself
only for full models and PEFT adapters, so :func:`adapter_checkpoints` teaches one trainer to restore a
tenpeft checkpoint: ``resume_from_checkpoint`` and ``load_best_model_at_end`` load the adapter into the
model in place (``tenpeft.load_adapter``: same method, settings and base, else one clear error).
"""
from __future__ import annotations

import os

from torch import nn

from .errors import TenpeftError
from .io import adapter_files, load_adapter
from .state import state_of


def is_adapter_checkpoint(directory: str | None) -> bool:
    """Whether ``directory`` holds a tenpeft adapter (under the current or the legacy names)."""
    if not directory or not os.path.isdir(directory):
        return False
    try:
        return os.path.isfile(adapter_files(directory)[0])
    except TenpeftError:
        return False


def adapter_checkpoints(trainer):
    """Make ``trainer`` (a ``transformers.Trainer`` or subclass holding a tenpeft-injected model) restore
    tenpeft checkpoints on ``train(resume_from_checkpoint=...)`` and ``load_best_model_at_end``; other
    checkpoints load as before. Returns ``trainer``."""
    model = getattr(trainer, "model", None)
    if not isinstance(model, nn.Module) or not hasattr(trainer, "_load_from_checkpoint"):
        raise TenpeftError(f"adapter_checkpoints takes a transformers.Trainer holding a tenpeft model, got "
                           f"{type(trainer).__name__}")
    state_of(model)  # a model without adapters: say so now, not at the first save
    load_checkpoint, load_best = trainer._load_from_checkpoint, trainer._load_best_model

    def _load_from_checkpoint(resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        if not is_adapter_checkpoint(resume_from_checkpoint):
            return load_checkpoint(resume_from_checkpoint, model)
        target = trainer.accelerator.unwrap_model(model if model is not None else trainer.model)
        load_adapter(target, resume_from_checkpoint)

    def _load_best_model() -> None:
        best = trainer.state.best_model_checkpoint
        if not is_adapter_checkpoint(best):
            return load_best()
        load_adapter(trainer.accelerator.unwrap_model(trainer.model), best)

    trainer._load_from_checkpoint, trainer._load_best_model = _load_from_checkpoint, _load_best_model
    return trainer
