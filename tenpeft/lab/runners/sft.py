"""One instruction-tuning run: trl's SFTTrainer on an adapted causal LM, written as a lab record.

The data are ``prompt`` / ``completion`` rows (``tasks/instruction.py``) trained with
``completion_only_loss=True``: the prompt tokens get label -100, so only the reply is learnt. Neither packing
nor padding-free batching is used, and gradient checkpointing is set as ``trl_runs`` says (off on CPU).

The checkpoint is chosen by the validation completion cross-entropy, computed here every ``eval_every``
steps (the trainable parameters at its lowest are kept, ``BestCheckpoint``); the test split is scored once,
at that checkpoint, and is the record's ``score.value``. The cross-entropy is computed here rather than
taken from trl: trl's ``eval_loss`` averages per-batch means, which weighs the tokens of short batches more.
This one sums the cross-entropy of every held-out completion token and divides by their count
(token-weighted); the perplexity is its exponential. Lower is better, and the record says so
(``score.higher_is_better`` false).
"""
from __future__ import annotations

import math
import sys
import time

import torch

from tenpeft.lab.loop import BestCheckpoint
from tenpeft.lab.models import resolve_model
from tenpeft.lab.runners.trl import (TrlRunner, adapted_policy, gradient_checkpointing, kind_rows,
                                     outcome, tokenizer_for, trl_arguments, trl_record)
from tenpeft.lab.tasks.instruction import METRICS
from tenpeft.lab.tasks.splits import SPLITS

IGNORE = -100  # the label of a token that is not trained or scored


def sft_config(spec, output_dir: str, progress: bool):
    """trl's SFTConfig of ``spec``: completion-only loss, no packing, no padding-free, no trl evaluation."""
    import trl

    return trl.SFTConfig(**trl_arguments(spec, output_dir, progress), completion_only_loss=True, packing=False,
                         padding_free=False, eval_strategy="no")


def build_trainer(spec, model, tokenizer, train, held: dict, output_dir: str, progress: bool):
    """The SFTTrainer of ``spec`` (its datasets tokenized, the prompt tokens labelled ``IGNORE``); ``held``
    names the held-out splits (``validation``, ``test``) that ``get_eval_dataloader(name)`` loads."""
    import trl

    return trl.SFTTrainer(model=model, args=sft_config(spec, output_dir, progress), train_dataset=train,
                          eval_dataset=held, processing_class=tokenizer)


@torch.no_grad()
def completion_ce(model, loader) -> tuple[float, int]:
    """``(mean, tokens)``: the cross-entropy of every labelled (completion) token of ``loader``'s batches,
    summed and divided by their number."""
    was_training, total, count = model.training, 0.0, 0
    model.eval()
    device = next(model.parameters()).device
    for batch in loader:
        labels = batch["labels"].to(device)[:, 1:]
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch.get("attention_mask", torch.ones_like(batch["input_ids"])).to(device)).logits
        total += torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(),
                                                   ignore_index=IGNORE, reduction="sum").item()
        count += int((labels != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1), count


def evaluate(trainer, split: str, scorer=None) -> tuple[float, int, dict]:
    """``(ce, tokens, extra)`` of the model as it is on held-out ``split``: the completion cross-entropy
    (``completion_ce``) and ``scorer(model)`` (a generation task's exact match and F1; else empty)."""
    ce, tokens = completion_ce(trainer.model, trainer.get_eval_dataloader(split))
    return ce, tokens, scorer(trainer.model) if scorer else {}


def _evaluator(trainer, every: int, out: list, best: BestCheckpoint, scorer=None):
    """A trl callback appending ``(step, ce, tokens, seconds, extra)`` of the validation split to ``out``
    every ``every`` steps and at the end (``evaluate``), offering each checkpoint to ``best``."""
    from transformers import TrainerCallback

    class Evaluate(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                start = time.perf_counter()
                ce, tokens, extra = evaluate(trainer, "validation", scorer)
                best.offer(trainer.model, ce)
                out.append((state.global_step, ce, tokens, time.perf_counter() - start, extra))

    return Evaluate()


def _metrics(ce: float, tokens: int, extra: dict) -> dict:
    """One evaluation's metrics: the cross-entropy, its perplexity, the tokens scored and the kind's extra."""
    perplexity = math.exp(ce) if ce < math.log(sys.float_info.max) else math.inf
    return {"completion_ce": ce, "perplexity": perplexity, "eval_tokens": tokens, **extra}


def score_test(trainer, best: BestCheckpoint, scorer=None) -> dict:
    """The test split at the checkpoint chosen on validation: ``{loss, metrics, seconds}``."""
    start = time.perf_counter()
    best.restore(trainer.model)
    ce, tokens, extra = evaluate(trainer, "test", scorer)
    return {"loss": ce, "metrics": _metrics(ce, tokens, extra), "seconds": time.perf_counter() - start}


def _history(evaluations: list, log: list[dict]) -> list[dict]:
    """One entry per evaluation in the lab's shape, the training loss the last trl logged by then."""
    out = []
    for step, ce, tokens, _, extra in evaluations:
        losses = [e["loss"] for e in log if "loss" in e and e["step"] <= step]
        out.append({"step": step, "train_loss": losses[-1] if losses else None,
                    "val_loss": ce if math.isfinite(ce) else None, "metrics": _metrics(ce, tokens, extra)})
    return out


class SFTRunner(TrlRunner, objective="sft"):
    """trl's SFT on the kind's prompt/completion rows, the completion tokens only; the validation completion
    cross-entropy (and the kind's own score, e.g. a generation task's F1) every ``eval_every`` steps, the
    test split once at the checkpoint of the lowest validation cross-entropy."""

    what, trainer = "instruction tuning", "SFT"

    def execute(self, spec, kinds: list, accelerator, progress: bool = True) -> dict:
        import tempfile

        from accelerate.utils import set_seed

        set_seed(spec.seed)
        start, kind = time.perf_counter(), kinds[0]
        source = resolve_model(spec.model)
        tokenizer = tokenizer_for(source)
        splits, skipped = kind_rows(spec, kind, tokenizer)
        (validation, val_scorer), (test, test_scorer) = (kind.scorer(spec, tokenizer, rows)
                                                         for rows in (splits.validation, splits.test))
        train = splits.train.select_columns(["prompt", "completion"])  # trl reads prompt and completion only
        model, params = adapted_policy(spec, source)
        evaluations, best_checkpoint = [], BestCheckpoint()
        with tempfile.TemporaryDirectory() as scratch:
            trainer = build_trainer(spec, model, tokenizer, train, {"validation": validation, "test": test}, scratch,
                                    progress)
            trainer.add_callback(_evaluator(trainer, spec.train.eval_every, evaluations, best_checkpoint, val_scorer))
            train_start = time.perf_counter()
            trainer.train()
            train_s = time.perf_counter() - train_start  # the evaluations included
            history = _history(evaluations, trainer.state.log_history)
            stopped, best, timings = outcome(spec, history, "completion_ce", start, train_s,
                                             sum(e[3] for e in evaluations))
            tested = None if best is None else score_test(trainer, best_checkpoint, test_scorer)
        sft = {"loss": "completion tokens only (completion_only_loss)", "metrics": list(METRICS),
               "ce": "token-weighted mean over held-out completion tokens", "packing": False,
               "generation": None if test_scorer is None else "greedy to a newline or EOS; exact match and F1 (tasks.generation)",
               "padding_free": False, "gradient_checkpointing": gradient_checkpointing(),
               "rows": {name: len(getattr(splits, name)) for name in SPLITS},
               "skipped_rows": skipped}
        return trl_record(spec, accelerator, kind, splits, best=best, test=tested, timings=timings, params=params,
                          history=history, diverged=stopped, sft=sft)
