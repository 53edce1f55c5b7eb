"""One preference-optimisation run: trl's DPO on an adapted causal LM, written as a lab record.

The policy is the model with the run's method (tenpeft or PEFT). The reference model costs no second
copy of the base: trl precomputes the reference log-probs of the train and held-out rows while the trainer
is built, with the adapter disabled (``tenpeft.disable_adapter``, PEFT's ``disable_adapter``). The record
has the lab's schema: one history entry per evaluation (held-out DPO loss as ``val_loss``, reward accuracy
and margin), the best by held-out loss, and the reward accuracy there as the score.
"""
from __future__ import annotations

import contextlib
import math
import time

import torch

import tenpeft
from tenpeft.errors import TenpeftError
from tenpeft.lab.adapt import apply_method, count_parameters
from tenpeft.lab.models import is_decoder, load_config, load_model, load_tokenizer, resolve_model
from tenpeft.lab.provenance import provenance
from tenpeft.lab.records import SCHEMA
from tenpeft.lab.tasks.preference import METRICS, PREFERENCE_TASKS, load_preference

BETA = 0.1  # trl's default DPO temperature, recorded with each run


def check_preference(spec, adapt_on_meta) -> None:
    """What can fail before training: a decoder, trl installed, the data, the method on the meta device."""
    config = load_config(resolve_model(spec.model))
    if not is_decoder(config):
        raise TenpeftError(f"preference optimisation trains a causal LM; {spec.model} is an encoder (use e.g. "
                           f"--model smollm2, tiny-llama or a LLaMA-family model)")
    if len(spec.tasks) > 1:
        raise TenpeftError(f"preference task {spec.task!r} cannot be chained with others")
    try:
        import trl  # noqa: F401
    except ImportError:
        raise TenpeftError("preference optimisation runs trl's DPO trainer: pip install 'trl>=1.0,<2'") from None
    load_preference(spec.task, spec.data.data_dir, spec.data.train_size, spec.data.eval_size, spec.data.data_seed)
    adapt_on_meta(config, spec.model, spec.method, spec.method_args, 2)


def _reference_context(model):
    """The block in which ``model`` computes as its base: tenpeft's or PEFT's disable_adapter."""
    if hasattr(model, "tenpeft_state"):
        return tenpeft.disable_adapter(model, adapters_only=model.tenpeft_state.originals is None)
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def _dpo_config(spec, output_dir: str, progress: bool):
    import trl

    cfg = spec.train
    return trl.DPOConfig(
        output_dir=output_dir, per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        max_steps=cfg.max_steps, learning_rate=cfg.lr, warmup_steps=int(cfg.warmup_ratio * cfg.max_steps),  # as loop.py
        lr_scheduler_type=cfg.schedule if cfg.schedule != "constant" else "constant_with_warmup",
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip or 0.0, max_length=cfg.max_length,
        eval_strategy="steps", eval_steps=cfg.eval_every, logging_steps=cfg.eval_every, save_strategy="no",
        precompute_ref_log_probs=True, beta=BETA, seed=spec.seed, report_to=[], disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(), bf16=cfg.mixed_precision == "bf16", fp16=cfg.mixed_precision == "fp16")


def _diverged(history: list[dict], task: str) -> dict | None:
    """Where the first non-finite training or held-out loss appeared (the lab's ``diverged``), or None."""
    for entry in history:
        if entry["train_loss"] is not None and not math.isfinite(entry["train_loss"]):
            return {"task": task, "step": entry["step"], "loss": "train", "value": str(entry["train_loss"])}
        if entry["val_loss"] is None:
            return {"task": task, "step": entry["step"], "loss": "validation", "value": str(entry["metrics"]["dpo_loss"])}
    return None


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


def execute_preference(spec, accelerator, progress: bool = True) -> dict:
    """Run ``spec`` (a preference task) with trl's DPO trainer and return its record."""
    import tempfile

    import trl
    from accelerate.utils import set_seed

    set_seed(spec.seed)
    start = time.perf_counter()
    source = resolve_model(spec.model)
    tokenizer = load_tokenizer(source)
    train_rows, eval_rows = load_preference(spec.task, spec.data.data_dir, spec.data.train_size,
                                            spec.data.eval_size, spec.data.data_seed)
    model = load_model(source, 2, seed=spec.seed)
    if tokenizer.eos_token is None:  # a decoder on an encoder's vocabulary (tiny-llama): its config's EOS
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(model.config.eos_token_id)
    model = apply_method(model, spec.method, spec.method_args, decoder=True)
    params = count_parameters(model)
    with tempfile.TemporaryDirectory() as scratch:
        with _reference_context(model):
            trainer = trl.DPOTrainer(model=model, args=_dpo_config(spec, scratch, progress), train_dataset=train_rows,
                                     eval_dataset=eval_rows, processing_class=tokenizer)
        train_start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - train_start  # the evaluations included
    history = _history(trainer.state.log_history)
    diverged = _diverged(history, spec.task)
    best = None if diverged or not history else min(history, key=lambda e: e["val_loss"])
    eval_s = sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history)  # trl's evaluations, within train_s
    metric = PREFERENCE_TASKS[spec.task].headline_metric
    total = time.perf_counter() - start
    return {"schema": SCHEMA, "study": spec.study, "run_id": spec.run_id, "status": "diverged" if diverged else "ok",
            "diverged": diverged, "config": spec.config(), "params": params, "history": history, "best": best,
            "score": {"metric": metric, "value": None if best is None else best["metrics"][metric]},
            "eval_split": {spec.task: PREFERENCE_TASKS[spec.task].eval_split}, "stages": None,
            "dpo": {"beta": BETA, "reference": "precomputed with the adapter disabled", "metrics": list(METRICS)},
            "timings": {"total_s": total, "train_s": train_s - eval_s, "eval_s": eval_s,
                        "steps_per_s": spec.train.max_steps / max(train_s - eval_s, 1e-9)},
            "provenance": provenance(accelerator)}
