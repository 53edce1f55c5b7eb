"""One preference-optimisation run: trl's DPO on an adapted causal LM, written as a lab record.

The policy is the model with the run's method (tenpeft or PEFT). The reference model costs no second
copy of the base: trl precomputes the reference log-probs of the train and held-out rows while the trainer
is built, with the adapter disabled (``tenpeft.disable_adapter``, PEFT's ``disable_adapter``). The record
has the lab's schema: one history entry per evaluation of the validation split (its DPO loss as
``val_loss``, reward accuracy and margin), the best by validation loss (its trainable parameters kept,
``BestCheckpoint``), the test split evaluated once at that checkpoint, and the reward accuracy on test as
the score (on validation beside it).
"""
from __future__ import annotations

import math
import time

from tenpeft.lab.loop import BestCheckpoint
from tenpeft.lab.models import resolve_model
from tenpeft.lab.runners.trl import (TrlRunner, adapted_policy, gradient_checkpointing, kind_rows,
                                     outcome, reference_context, tokenizer_for, trl_arguments, trl_record)
from tenpeft.lab.tasks.preference import METRICS
from tenpeft.lab.tasks.splits import SPLITS

BETA = 0.1  # trl's default DPO temperature, recorded with each run


def _dpo_config(spec, output_dir: str, progress: bool):
    import trl

    return trl.DPOConfig(**trl_arguments(spec, output_dir, progress), eval_strategy="steps",
                         eval_steps=spec.train.eval_every, precompute_ref_log_probs=True, beta=BETA)


def _metrics(log: dict) -> dict:
    """The DPO loss, reward accuracy and margin of one trl evaluation (logged as ``eval_*``)."""
    return {"dpo_loss": log["eval_loss"], "reward_accuracy": log.get("eval_rewards/accuracies"),
            "reward_margin": log.get("eval_rewards/margins")}


def _keeper(trainer, best: BestCheckpoint):
    """A trl callback offering the model to ``best`` after each evaluation of the validation split."""
    from transformers import TrainerCallback

    class Keep(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            best.offer(trainer.model, metrics["eval_loss"])

    return Keep()


def score_test(trainer, test, best: BestCheckpoint, keeper) -> dict:
    """The ``test`` rows (their reference log-probs precomputed) at the checkpoint chosen on
    validation: ``{loss, metrics, seconds}``. trl logs its reward metrics as ``eval_*`` whatever the
    evaluation's prefix, so test is evaluated under that prefix, after the validation history is read and
    with the ``keeper`` callback removed."""
    trainer.remove_callback(keeper)
    best.restore(trainer.model)
    trainer.eval_dataset = test
    log = trainer.evaluate()
    return {"loss": log["eval_loss"], "metrics": _metrics(log), "seconds": log["eval_runtime"]}


def _history(log: list[dict]) -> list[dict]:
    """One entry per evaluation of the validation split, in the lab's shape, from trl's ``log_history``."""
    out, train_loss = [], None
    for entry in log:
        if "loss" in entry:
            train_loss = entry["loss"]
        if "eval_loss" in entry:
            val = entry["eval_loss"]
            out.append({"step": entry["step"], "train_loss": train_loss,
                        "val_loss": val if math.isfinite(val) else None, "metrics": _metrics(entry)})
    return out


class DPORunner(TrlRunner, objective="dpo"):
    """trl's DPO on the kind's pairs; the reference is the policy with its adapter disabled; the checkpoint
    chosen on validation, the test split scored there once."""

    what, trainer = "preference optimisation", "DPO"

    def execute(self, spec, kinds: list, accelerator, progress: bool = True) -> dict:
        import tempfile

        import trl
        from accelerate.utils import set_seed

        set_seed(spec.seed)
        start, kind, source = time.perf_counter(), kinds[0], resolve_model(spec.model)
        tokenizer = tokenizer_for(source)
        splits, skipped = kind_rows(spec, kind, tokenizer)
        model, params = adapted_policy(spec, source)
        best_checkpoint = BestCheckpoint()
        with tempfile.TemporaryDirectory() as scratch:
            with reference_context(model):  # the reference log-probs of every split, precomputed here
                trainer = trl.DPOTrainer(model=model, args=_dpo_config(spec, scratch, progress),
                                         train_dataset=splits.train, processing_class=tokenizer,
                                         eval_dataset={"validation": splits.validation, "test": splits.test})
            held, trainer.eval_dataset = trainer.eval_dataset, trainer.eval_dataset["validation"]  # evaluated while training
            keeper = _keeper(trainer, best_checkpoint)
            trainer.add_callback(keeper)
            train_start = time.perf_counter()
            trainer.train()
            train_s = time.perf_counter() - train_start  # the evaluations included
            history = _history(trainer.state.log_history)
            eval_s = sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history)  # within train_s
            stopped, best, timings = outcome(spec, history, "dpo_loss", start, train_s, eval_s)
            tested = None if best is None else score_test(trainer, held["test"], best_checkpoint, keeper)
        dpo = {"beta": BETA, "reference": "precomputed with the adapter disabled", "metrics": list(METRICS),
               "gradient_checkpointing": gradient_checkpointing(),
               "rows": {name: len(getattr(splits, name)) for name in SPLITS}, "skipped_rows": skipped}
        return trl_record(spec, accelerator, kind, splits, best=best, test=tested, timings=timings, params=params,
                          history=history, diverged=stopped, dpo=dpo)
