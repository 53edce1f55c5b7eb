"""One instruction-tuning run: trl's SFTTrainer on an adapted causal LM, written as a lab record.

The data are ``prompt`` / ``completion`` rows (``tasks/instruction.py``) trained with
``completion_only_loss=True``: the prompt tokens get label -100, so only the reply is learnt. Neither packing
nor padding-free batching is used, and gradient checkpointing is set as ``trl_runs`` says (off on CPU).

The score is the held-out completion cross-entropy, computed here every ``eval_every`` steps rather than
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

from tenpeft.lab.models import resolve_model
from tenpeft.lab.records import make_record
from tenpeft.lab.runners.trl import (TrlRunner, adapted_policy, gradient_checkpointing, kind_rows, outcome,
                                     tokenizer_for, trl_arguments, trl_splits)
from tenpeft.lab.tasks.instruction import METRICS

IGNORE = -100  # the label of a token that is not trained or scored


def sft_config(spec, output_dir: str, progress: bool):
    """trl's SFTConfig of ``spec``: completion-only loss, no packing, no padding-free, no trl evaluation."""
    import trl

    return trl.SFTConfig(**trl_arguments(spec, output_dir, progress), completion_only_loss=True, packing=False,
                         padding_free=False, eval_strategy="no")


def build_trainer(spec, model, tokenizer, train, held, output_dir: str, progress: bool):
    """The SFTTrainer of ``spec`` (its datasets tokenized, the prompt tokens labelled ``IGNORE``)."""
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


def _evaluator(trainer, every: int, out: list, scorer=None):
    """A trl callback appending ``(step, ce, tokens, seconds, extra)`` to ``out`` every ``every`` steps and at
    the end; ``extra`` is ``scorer(model)`` (a generation task's exact match and F1), else empty."""
    from transformers import TrainerCallback

    class Evaluate(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                start = time.perf_counter()
                ce, tokens = completion_ce(trainer.model, trainer.get_eval_dataloader())
                extra = scorer(trainer.model) if scorer else {}
                out.append((state.global_step, ce, tokens, time.perf_counter() - start, extra))

    return Evaluate()


def _history(evaluations: list, log: list[dict]) -> list[dict]:
    """One entry per evaluation in the lab's shape, the training loss the last trl logged by then."""
    out = []
    for step, ce, tokens, _, extra in evaluations:
        losses = [e["loss"] for e in log if "loss" in e and e["step"] <= step]
        metrics = {"completion_ce": ce, "perplexity": math.exp(ce) if ce < math.log(sys.float_info.max) else math.inf,
                   "eval_tokens": tokens, **extra}
        out.append({"step": step, "train_loss": losses[-1] if losses else None,
                    "val_loss": ce if math.isfinite(ce) else None, "metrics": metrics})
    return out


class SFTRunner(TrlRunner, objective="sft"):
    """trl's SFT on the kind's prompt/completion rows, the completion tokens only; the held-out completion
    cross-entropy (and the kind's own score, e.g. a generation task's F1) every ``eval_every`` steps."""

    what, trainer = "instruction tuning", "SFT"

    def execute(self, spec, kinds: list, accelerator, progress: bool = True) -> dict:
        import tempfile

        from accelerate.utils import set_seed

        set_seed(spec.seed)
        start, kind = time.perf_counter(), kinds[0]
        source = resolve_model(spec.model)
        tokenizer = tokenizer_for(source)
        train, held, skipped = kind_rows(spec, kind, tokenizer)
        held, scorer = kind.scorer(spec, tokenizer, held)
        train = train.select_columns(["prompt", "completion"])  # trl reads prompt and completion only
        model, params = adapted_policy(spec, source)
        evaluations: list = []
        with tempfile.TemporaryDirectory() as scratch:
            trainer = build_trainer(spec, model, tokenizer, train, held, scratch, progress)
            trainer.add_callback(_evaluator(trainer, spec.train.eval_every, evaluations, scorer))
            train_start = time.perf_counter()
            trainer.train()
            train_s = time.perf_counter() - train_start  # the evaluations included
        history = _history(evaluations, trainer.state.log_history)
        stopped, best, timings = outcome(spec, history, "completion_ce", start, train_s, sum(e[3] for e in evaluations))
        sft = {"loss": "completion tokens only (completion_only_loss)", "metrics": list(METRICS),
               "ce": "token-weighted mean over held-out completion tokens", "packing": False,
               "generation": None if scorer is None else "greedy to a newline or EOS; exact match and F1 (tasks.generation)",
               "padding_free": False, "gradient_checkpointing": gradient_checkpointing(),
               "rows": {"train": len(train), "eval": len(held)}, "skipped_rows": skipped}
        return make_record(spec, accelerator, params=params, history=history, best=best, score=kind.score(best),
                           splits=trl_splits(kind, train, held), diverged=stopped, sft=sft, timings=timings)
