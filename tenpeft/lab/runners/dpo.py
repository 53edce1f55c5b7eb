"""One preference-optimisation run: trl's DPO on an adapted causal LM, written as a lab record.

The policy is the model with the run's method (tenpeft or PEFT). The reference model costs no second
copy of the base: trl precomputes the reference log-probs of the train and held-out rows while the trainer
is built, with the adapter disabled (``tenpeft.disable_adapter``, PEFT's ``disable_adapter``). The record
has the lab's schema: one history entry per evaluation (held-out DPO loss as ``val_loss``, reward accuracy
and margin), the best by held-out loss, and the reward accuracy there as the score.
"""
from __future__ import annotations

import math
import time

from tenpeft.lab.models import resolve_model
from tenpeft.lab.records import make_record
from tenpeft.lab.runners.trl import (TrlRunner, adapted_policy, gradient_checkpointing, kind_rows, outcome,
                                     reference_context, tokenizer_for, trl_arguments, trl_splits)
from tenpeft.lab.tasks.preference import METRICS

BETA = 0.1  # trl's default DPO temperature, recorded with each run


def _dpo_config(spec, output_dir: str, progress: bool):
    import trl

    return trl.DPOConfig(**trl_arguments(spec, output_dir, progress), eval_strategy="steps",
                         eval_steps=spec.train.eval_every, precompute_ref_log_probs=True, beta=BETA)


def _history(log: list[dict]) -> list[dict]:
    """One entry per evaluation, in the lab's shape, from trl's ``log_history``."""
    out, train_loss = [], None
    for entry in log:
        if "loss" in entry:
            train_loss = entry["loss"]
        if "eval_loss" in entry:
            val = entry["eval_loss"]
            metrics = {"dpo_loss": val, "reward_accuracy": entry.get("eval_rewards/accuracies"),
                       "reward_margin": entry.get("eval_rewards/margins")}
            out.append({"step": entry["step"], "train_loss": train_loss,
                        "val_loss": val if math.isfinite(val) else None, "metrics": metrics})
    return out


class DPORunner(TrlRunner, objective="dpo"):
    """trl's DPO on the kind's pairs; the reference is the policy with its adapter disabled."""

    what, trainer = "preference optimisation", "DPO"

    def execute(self, spec, kinds: list, accelerator, progress: bool = True) -> dict:
        import tempfile

        import trl
        from accelerate.utils import set_seed

        set_seed(spec.seed)
        start, kind, source = time.perf_counter(), kinds[0], resolve_model(spec.model)
        tokenizer = tokenizer_for(source)
        train_rows, eval_rows, skipped = kind_rows(spec, kind, tokenizer)
        model, params = adapted_policy(spec, source)
        with tempfile.TemporaryDirectory() as scratch:
            with reference_context(model):
                trainer = trl.DPOTrainer(model=model, args=_dpo_config(spec, scratch, progress),
                                         train_dataset=train_rows, eval_dataset=eval_rows, processing_class=tokenizer)
            train_start = time.perf_counter()
            trainer.train()
            train_s = time.perf_counter() - train_start  # the evaluations included
        history = _history(trainer.state.log_history)
        eval_s = sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history)  # within train_s
        stopped, best, timings = outcome(spec, history, "dpo_loss", start, train_s, eval_s)
        metric = METRICS[0]
        dpo = {"beta": BETA, "reference": "precomputed with the adapter disabled", "metrics": list(METRICS),
               "gradient_checkpointing": gradient_checkpointing(),
               "rows": {"train": len(train_rows), "eval": len(eval_rows)}, "skipped_rows": skipped}
        return make_record(spec, accelerator, params=params, history=history, best=best, diverged=stopped,
                           score={"metric": metric, "value": None if best is None else best["metrics"][metric]},
                           splits=trl_splits(kind, train_rows, eval_rows), dpo=dpo, timings=timings)
