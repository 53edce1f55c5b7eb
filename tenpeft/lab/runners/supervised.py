"""The ``supervised`` runner: the lab's own loop (``tenpeft.lab.loop``) over encoded task rows, for the
classification and multiple-choice kinds, one stage per task of a chain (sequential training, each task
scored after every stage so forgetting can be read off the record)."""
from __future__ import annotations

import time

import torch

from tenpeft.errors import TenpeftError
from tenpeft.structure import task_head
from tenpeft.lab.adapt import apply_method, base_model, count_parameters
from tenpeft.lab.loop import eval_loader, predict_split, train
from tenpeft.lab.models import is_decoder, load_config, load_model, load_tokenizer, max_positions, resolve_model
from tenpeft.lab.records import make_record, make_score
from tenpeft.lab.runners.base import Runner
from tenpeft.lab.spec import RunSpec, adapt_on_meta, decode_args


def build(spec: RunSpec, source, decoder: bool, kind, prepared):
    """``(model, params)``: the run's model with its method; a decoder wrapped as the kind's scorer."""
    model = load_model(source, prepared.task.num_labels, seed=spec.seed)
    adapted = apply_method(model, spec.method, decode_args(spec.method_args), decoder=decoder)
    params = count_parameters(adapted)
    return (kind.scorer(base_model(adapted), prepared) if decoder else adapted), params


class TaskHeads:
    """One classification head per task of a chain (encoders; a decoder's heads are the label words):
    every task starts from the same initial head, and each task is scored with its own last-trained
    head, so forgetting measures what the shared adapter lost, not a head re-mapped to new labels."""

    def __init__(self, model):
        base = base_model(model)
        prefixes = tuple(f"{name}." for name in task_head(base))
        self.params = {n: p for n, p in base.named_parameters() if p.requires_grad and prefixes and n.startswith(prefixes)}
        self.initial, self.trained = self._get(), {}

    def _get(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def _set(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.params[name].copy_(value)

    def start(self, task: str) -> None:
        self._set(self.initial)

    def finish(self, task: str) -> None:
        self.trained[task] = self._get()

    def use(self, task: str) -> None:
        self._set(self.trained.get(task, self.initial))


def _use_labels(model, prepared) -> None:
    """Point a label-word scorer at this task's label words (a no-op for other models)."""
    if prepared.label_ids is not None:
        model.label_ids = torch.tensor(prepared.label_ids, device=model.label_ids.device)


def score_test(model, prepared, cfg, accelerator, progress: bool = True) -> dict:
    """The chosen checkpoint on the test split, the one it was never chosen by: ``{loss, metrics,
    predictions, seconds}`` (``predictions``: ``{"pred", "gold"}`` per test example, in order)."""
    t0 = time.perf_counter()
    _use_labels(model, prepared)
    loader = accelerator.prepare(eval_loader(prepared.test_set, prepared.collate, cfg))
    loss, metrics, predictions = predict_split(model, loader, prepared.task, accelerator, progress)
    return {"loss": loss, "metrics": metrics, "predictions": predictions, "seconds": time.perf_counter() - t0}


def supervised_record(spec: RunSpec, params: dict, stages: list[dict], prepared: list, timings: dict,
                      diverged: dict | None, accelerator, test: dict | None) -> dict:
    """The record of a supervised run: the last stage's history and best entry (chosen on validation), its
    headline score on test (``score.value``) beside its validation score there (``score.validation``),
    the test predictions, each task's splits, every stage of a chain."""
    last, metric = stages[-1], prepared[-1].task.headline_metric
    score = make_score(metric, None if diverged else last["best"], test and test["metrics"])
    steps_per_s = spec.train.max_steps * len(stages) / max(timings["train_s"], 1e-9)
    test_s = test["seconds"] if test else 0.0
    extra = {"test": {k: test[k] for k in ("loss", "metrics")}, "predictions": test["predictions"]} if test else {}
    return make_record(spec, accelerator, params=params, history=last["history"], best=last["best"], score=score,
                       splits={p.task.name: p.splits for p in prepared}, diverged=diverged,
                       stages=stages if len(prepared) > 1 else None, **extra,
                       timings={**timings, "test_s": test_s, "total_s": timings["total_s"] + test_s,
                                "steps_per_s": steps_per_s})


def _score_all(model, prepared, cfg, accelerator, progress, heads: TaskHeads | None) -> dict[str, float]:
    """The headline score of every task of a chain on its test split, with the adapter as it is now
    (and each task's own head, or label words)."""
    scores = {}
    for task in prepared:
        if heads:
            heads.use(task.task.name)
        scores[task.task.name] = score_test(model, task, cfg, accelerator, progress)["metrics"][task.task.headline_metric]
    return scores


class SupervisedRunner(Runner, objective="supervised"):
    """Encoded rows, the lab's loop, the best checkpoint by validation loss; chains train stage by stage."""

    def check(self, spec: RunSpec, kinds: list, config) -> None:
        tasks = [kind.task for kind in kinds]
        if len({t.name for t in tasks}) < len(tasks):
            raise TenpeftError(f"the chain {' > '.join(t.name for t in tasks)} names a task twice; a chain's stages "
                               f"and scores are keyed by task name")
        limit, decoder = max_positions(config), is_decoder(config)
        if limit and spec.train.max_length > limit:
            raise TenpeftError(f"--max-length {spec.train.max_length} exceeds the {limit} positions of {spec.model}; "
                               f"use --max-length {limit} or less")
        if spec.train.head_lr is not None and (decoder or spec.method_args.get("head") == "frozen"):
            raise TenpeftError(f"--head-lr {spec.train.head_lr:g}: {spec.model} with {spec.method} trains no task "
                               f"head (a decoder scores label words; head='frozen' trains none); drop --head-lr")
        if len({t.num_labels for t in tasks}) > 1 and not decoder:
            raise TenpeftError(f"sequential tasks {spec.task} need the same number of labels to share a head")
        for kind in kinds:
            kind.check(spec, config)
        adapt_on_meta(config, spec.model, spec.method, spec.method_args, tasks[0].num_labels)

    def prepare(self, spec: RunSpec, kinds: list, tokenizer, decoder: bool) -> list:
        """Every task of ``spec`` encoded for the model (``PreparedTask``s)."""
        return [kind.prepare(spec, tokenizer, decoder) for kind in kinds]

    def execute(self, spec: RunSpec, kinds: list, accelerator, progress: bool = True) -> dict:
        from accelerate.utils import set_seed

        set_seed(spec.seed)
        source = resolve_model(spec.model)
        decoder = is_decoder(load_config(source))
        prepared = self.prepare(spec, kinds, load_tokenizer(source), decoder)
        model, params = build(spec, source, decoder, kinds[0], prepared[0])
        stages, timings, diverged = [], {"total_s": 0.0, "train_s": 0.0, "eval_s": 0.0}, None
        heads = TaskHeads(model) if len(prepared) > 1 and not decoder else None
        for task in prepared:
            _use_labels(model, task)
            if heads:
                heads.start(task.task.name)
            result = train(model, task.task, task.train_set, task.validation_set, task.collate, spec.train,
                           seed=spec.seed, accelerator=accelerator, progress=progress)
            for key in timings:
                timings[key] += result.timings[key]
            stages.append({"task": task.task.name, "history": result.history, "best": result.best})
            if result.diverged:
                diverged = {"task": task.task.name, **result.diverged}
                break
            if heads:
                heads.finish(task.task.name)
            if len(prepared) > 1:
                stages[-1]["scores"] = _score_all(model, prepared, spec.train, accelerator, progress, heads)
        if heads and not diverged:
            heads.use(prepared[-1].task.name)
        test = None if diverged else score_test(model, prepared[-1], spec.train, accelerator, progress)
        record = supervised_record(spec, params, stages, prepared, timings, diverged, accelerator, test)
        if spec.efficiency and not diverged:
            from tenpeft.lab.efficiency import measure

            last = prepared[-1]
            record["efficiency"] = measure(model, last.task, last.train_set, last.collate, spec.train.batch_size)
        accelerator.free_memory()
        return record


__all__ = ["SupervisedRunner", "TaskHeads", "build", "score_test", "supervised_record"]
