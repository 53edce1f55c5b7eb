"""What the lab's trl runners (DPO in ``dpo.py``, SFT in ``sft.py``) share: the checks before training (a
decoder, one task, trl installed, the method on the meta device, the kind's three splits read and screened),
the adapted policy, the trl training arguments built from the run's TrainConfig, the reference context, the
divergence test of the history and the record (the runners keep the checkpoint of the lowest validation
loss with ``loop.BestCheckpoint`` and score the test split once, there).

Gradient checkpointing: trl's configs turn it on by default; here it is set explicitly (on with a GPU, where
memory binds; off on CPU, where it only costs a recomputed forward per step) and written into the record.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time

import torch

import tenpeft
from tenpeft.errors import TenpeftError
from tenpeft.lab.adapt import apply_method, count_parameters
from tenpeft.lab.models import is_decoder, load_config, load_model, load_tokenizer, resolve_model
from tenpeft.lab.records import make_record
from tenpeft.lab.runners.base import Runner
from tenpeft.lab.spec import adapt_on_meta, decode_args
from tenpeft.lab.tasks.instruction import screen
from tenpeft.lab.tasks.splits import SPLITS, Splits


def screened(spec, tokenizer, splits: Splits, replies: tuple[str, ...]) -> tuple[Splits, dict]:
    """``(splits, skipped)``: the three splits without the rows whose prompt fills ``--max-length`` (see
    ``tasks.instruction.screen``), and how many of each were skipped, as records keep it."""
    kept, skipped = {}, {}
    for name in SPLITS:
        kept[name], skipped[name] = screen(getattr(splits, name), tokenizer, spec.train.max_length,
                                           f"{spec.task} {name} rows", replies)
    return dataclasses.replace(splits, **kept), skipped


def note_skipped(spec, skipped: dict) -> None:
    """Say on stderr, once per task and length, how many rows ``screened`` skipped (if any)."""
    if any(skipped.values()):
        counts = ", ".join(f"{skipped[name]} {name}" for name in SPLITS)
        _note(f"note: {spec.task}: skipping {counts} row(s) whose prompt fills --max-length {spec.train.max_length}")


@functools.lru_cache(maxsize=None)
def _note(text: str) -> None:
    """Print ``text`` to stderr once (every run of a study checks the same data)."""
    print(text, file=sys.stderr)


def gradient_checkpointing() -> bool:
    """Whether trl runs recompute activations in the backward: only with a GPU."""
    return torch.cuda.is_available()


def check_trl_run(spec, config, what: str, trainer: str) -> None:
    """What can fail before a trl run trains: a decoder, one task, trl installed, the method on the meta device."""
    if not is_decoder(config):
        raise TenpeftError(f"{what} trains a causal LM; {spec.model} is an encoder (use e.g. "
                           f"--model smollm2, tiny-llama or a LLaMA-family model)")
    if len(spec.tasks) > 1:
        raise TenpeftError(f"{what} task {spec.task!r} cannot be chained with others")
    try:
        import trl  # noqa: F401
    except ImportError:
        raise TenpeftError(f"{what} runs trl's {trainer} trainer: pip install 'trl>=1.0,<2'") from None
    adapt_on_meta(config, spec.model, spec.method, spec.method_args, 2)  # it decodes the arguments


def tokenizer_for(source):
    """The run's tokenizer, with an EOS token (a decoder on an encoder's vocabulary, tiny-llama, takes its
    config's) and a pad token (the EOS when it has none)."""
    tokenizer = load_tokenizer(source)
    if tokenizer.eos_token is None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(load_config(source).eos_token_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def adapted_policy(spec, source):
    """``(model, params)``: the base causal LM with the run's method (its JSON arguments decoded, as the GLUE
    path does), and its parameter counts."""
    model = load_model(source, 2, seed=spec.seed)
    model = apply_method(model, spec.method, decode_args(spec.method_args), decoder=True)
    return model, count_parameters(model)


def reference_context(model):
    """The block in which ``model`` computes as its base: tenpeft's or PEFT's disable_adapter."""
    if hasattr(model, "tenpeft_state"):
        return tenpeft.disable_adapter(model, adapters_only=model.tenpeft_state.originals is None)
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def trl_arguments(spec, output_dir: str, progress: bool) -> dict:
    """The keyword arguments of a trl config (DPOConfig, SFTConfig) that the run's TrainConfig sets."""
    cfg = spec.train
    return dict(
        output_dir=output_dir, per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        max_steps=cfg.max_steps, learning_rate=cfg.lr, warmup_steps=int(cfg.warmup_ratio * cfg.max_steps),  # as loop.py
        lr_scheduler_type=cfg.schedule if cfg.schedule != "constant" else "constant_with_warmup",
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip or 0.0, max_length=cfg.max_length,
        logging_steps=cfg.eval_every, save_strategy="no", seed=spec.seed, report_to=[], disable_tqdm=not progress,
        gradient_checkpointing=gradient_checkpointing(), use_cpu=not torch.cuda.is_available(),
        bf16=cfg.mixed_precision == "bf16", fp16=cfg.mixed_precision == "fp16")


def diverged(history: list[dict], task: str, val_metric: str) -> dict | None:
    """Where the first non-finite training or held-out loss appeared (the lab's ``diverged``), or None."""
    for entry in history:
        if entry["train_loss"] is not None and not math.isfinite(entry["train_loss"]):
            return {"task": task, "step": entry["step"], "loss": "train", "value": str(entry["train_loss"])}
        if entry["val_loss"] is None:
            return {"task": task, "step": entry["step"], "loss": "validation", "value": str(entry["metrics"][val_metric])}
    return None


def outcome(spec, history: list[dict], val_metric: str, start: float, train_s: float, eval_s: float):
    """``(diverged, best, timings)`` of a finished trl run: where it diverged (``diverged``), the entry of the
    lowest held-out loss (None if it diverged), and the record's timings from the run's ``start``, its
    ``train_s`` (evaluations included) and the ``eval_s`` within it."""
    stopped = diverged(history, spec.task, val_metric)
    best = None if stopped or not history else min(history, key=lambda e: e["val_loss"])
    timings = {"total_s": time.perf_counter() - start, "train_s": train_s - eval_s, "eval_s": eval_s,
               "steps_per_s": spec.train.max_steps / max(train_s - eval_s, 1e-9)}
    return stopped, best, timings


def kind_rows(spec, kind, tokenizer) -> tuple[Splits, dict]:
    """``(splits, skipped)``: the kind's three splits for run ``spec``, screened (``screened``)."""
    return screened(spec, tokenizer, kind.rows(spec, tokenizer), kind.replies)


def trl_record(spec, accelerator, kind, splits: Splits, *, best: dict | None, test: dict | None, timings: dict,
               **fields) -> dict:
    """The record of a trl run: the lab's ``make_record`` with the kind's score (on test, and on validation at
    the chosen checkpoint), the ``test`` split's loss and metrics (``{loss, metrics, seconds}``; None after a
    divergence), its seconds in the timings, and the three splits' sizes, sources and fingerprints."""
    test_s = test["seconds"] if test else 0.0
    extra = {"test": {key: test[key] for key in ("loss", "metrics")}} if test else {}
    return make_record(spec, accelerator, best=best, score=kind.score(best, test and test["metrics"]),
                       splits={kind.label: splits.describe(kind.columns)}, **extra, **fields,
                       timings={**timings, "test_s": test_s, "total_s": timings["total_s"] + test_s})


class TrlRunner(Runner):
    """A runner on a trl trainer: ``what`` it does and the ``trainer`` it uses, for the checks' messages."""

    what: str = ""
    trainer: str = ""

    def check(self, spec, kinds: list, config) -> None:
        check_trl_run(spec, config, self.what, self.trainer)
        kinds[0].check(spec, config)
        note_skipped(spec, kind_rows(spec, kinds[0], tokenizer_for(resolve_model(spec.model)))[1])
