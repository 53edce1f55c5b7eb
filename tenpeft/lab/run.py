"""One run of a study: a spec, its checks before training, its execution and its JSON record.

A record (schema ``tenpeft-run/2``) is written atomically to ``<results>/<study>/<run_id>.json``;
the ``run_id`` ends in a hash of the full config, so a rerun of the same config finds its file and
skips it, and a run killed midway loses only itself. A run is claimed (``claims.py``) before it
trains, so processes sharing a results folder split the runs and never train one twice."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from tenpeft.errors import TenpeftError
from tenpeft.formats import Budget
from tenpeft.structure import task_head
from tenpeft.lab.adapt import apply_method, base_model, count_parameters, is_known, known_methods
from tenpeft.lab.loop import TrainConfig, evaluate, train
from tenpeft.lab.models import ChoiceScorer, PromptClassifier, is_decoder, load_config, load_model, load_tokenizer, max_positions, resolve_model
from tenpeft.lab.provenance import provenance
from tenpeft.lab.claims import Claim, try_claim
from tenpeft.lab.records import SCHEMA, read_record, write_record
from tenpeft.lab.tasks.custom import definition, is_task_file, task_label


@dataclass
class DataConfig:
    """Which examples: ``train_size``/``eval_size`` subsample (None = all) with ``data_seed``;
    ``data_dir`` a local GLUE-like folder (None = ``TENPEFT_DATA_DIR`` or the hub), kept as its
    real absolute path so a run's identity does not depend on how the path was spelled."""

    train_size: int | None = 2000
    eval_size: int | None = None
    data_dir: str | None = None
    data_seed: int = 0

    def __post_init__(self):
        if self.data_dir:
            self.data_dir = os.path.realpath(os.path.expanduser(self.data_dir))


@dataclass
class RunSpec:
    """Everything that defines one run. ``task`` may chain tasks (``"sst2>mrpc>rte"``) for
    sequential training; ``axes`` names the study's independent variables for plots; ``efficiency``
    measures the trained run's cost into its record (``tenpeft.lab.efficiency``)."""

    study: str
    model: str
    task: str
    method: str
    method_args: dict = field(default_factory=dict)
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    axes: dict = field(default_factory=dict)
    efficiency: bool = False

    @property
    def tasks(self) -> list[str]:
        return self.task.split(">")

    def config(self) -> dict:
        """The full config as JSON data (what the record stores and the run id hashes)."""
        config = {"model": self.model, "task": self.task, "method": self.method, "method_args": self.method_args,
                  "seed": self.seed, "lr": self.train.lr, "axes": self.axes, "train": self.train.to_dict(),
                  "data": dataclasses.asdict(self.data)}
        if len(self.tasks) > 1:
            config["chain_heads"] = "per_task"  # see TaskHeads
        if self.efficiency:
            config["efficiency"] = True
        files = {t: definition(t) for t in self.tasks if is_task_file(t)}
        if files:  # an edited task file is a new run, never the old record
            config["task_files"] = files
        return config

    @property
    def run_id(self) -> str:
        text = json.dumps(self.config(), sort_keys=True, default=str)
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        args = "-".join(f"{k}{v}" for k, v in sorted(self.axes.items()) if k != "lr")
        name = "-".join(x for x in ("+".join(map(task_label, self.tasks)), Path(self.model).name, self.method, args,
                                    f"lr{self.train.lr:g}", f"s{self.seed}") if x)
        return f"{re.sub(r'[^A-Za-z0-9_.+=-]', '_', name)[:100]}-{digest}"


def decode_args(args: dict) -> dict:
    """JSON method arguments to Python: ``{"budget": n}`` becomes ``tenpeft.Budget(n)``."""
    return {k: Budget(v["budget"]) if isinstance(v, dict) and set(v) == {"budget"} else v for k, v in args.items()}


def check_spec(spec: RunSpec) -> None:
    """Everything but training, fast: model, task data, method and arguments (built on the meta
    device). Raises a TenpeftError naming the problem."""
    from tenpeft.lab.tasks import get_prompt, get_task, load_task_data
    from tenpeft.lab.tasks.choices import CHOICES, get_choices, is_choice_task
    from tenpeft.lab.tasks.encode import check_encoder_task
    from tenpeft.lab.tasks.instruction import is_instruction
    from tenpeft.lab.tasks.preference import is_preference

    if not is_known(spec.method):
        raise TenpeftError(f"unknown method {spec.method!r}; known: {known_methods()}")
    if spec.efficiency and any(is_preference(t) or is_instruction(t) for t in spec.tasks):
        raise TenpeftError(f"the cost of a trl (DPO/SFT) run on {spec.task!r} is not measured; the efficiency "
                           f"study takes classification and regression tasks")
    if any(is_preference(t) for t in spec.tasks):
        from tenpeft.lab.dpo import check_preference
        return check_preference(spec)
    if any(is_instruction(t) for t in spec.tasks):
        from tenpeft.lab.sft import check_instruction
        return check_instruction(spec)
    tasks = [get_task(t) for t in spec.tasks]
    for name, task in zip(spec.tasks, tasks):
        if name != task.ref:  # one spelling per task, or the same run gets two ids
            raise TenpeftError(f"task {name!r} is written {task.ref!r}: pass --tasks {task.ref} (or --chain)")
    if len({t.name for t in tasks}) < len(tasks):
        raise TenpeftError(f"the chain {' > '.join(t.name for t in tasks)} names a task twice; a chain's stages and "
                           f"scores are keyed by task name")
    config = load_config(resolve_model(spec.model))
    limit = max_positions(config)
    if limit and spec.train.max_length > limit:
        raise TenpeftError(f"--max-length {spec.train.max_length} exceeds the {limit} positions of {spec.model}; "
                           f"use --max-length {limit} or less")
    if spec.train.head_lr is not None and (is_decoder(config) or spec.method_args.get("head") == "frozen"):
        raise TenpeftError(f"--head-lr {spec.train.head_lr:g}: {spec.model} with {spec.method} trains no task head "
                           f"(a decoder scores label words; head='frozen' trains none); drop --head-lr")
    if len({t.num_labels for t in tasks}) > 1 and not is_decoder(config):
        raise TenpeftError(f"sequential tasks {spec.task} need the same number of labels to share a head")
    if is_decoder(config) and len({is_choice_task(t) for t in tasks}) > 1:
        raise TenpeftError(f"the chain {spec.task} mixes multiple-choice tasks ({', '.join(CHOICES)}) with label-word "
                           f"tasks, which a decoder scores differently; chain tasks of one kind")
    for task in tasks:  # a decoder needs the task's prompt, an encoder at most two text columns; then the data
        if is_decoder(config):
            (get_choices if is_choice_task(task) else get_prompt)(task)
        else:
            check_encoder_task(task)
        load_task_data(task, spec.data.data_dir, train_size=spec.data.train_size, eval_size=spec.data.eval_size,
                       data_seed=spec.data.data_seed)
    adapt_on_meta(config, spec.model, spec.method, spec.method_args, tasks[0].num_labels)


def adapt_on_meta(config, model: str, method: str, method_args: dict, num_labels: int):
    """``method`` applied to the model of ``config`` built on the meta device (no weights, no
    compute); a TenpeftError if it cannot be."""
    from tenpeft.presets import build_model

    decoder = is_decoder(config)
    if not decoder:
        config.num_labels = num_labels
    built = build_model(config, "causal-lm" if decoder else "seq-cls", device="meta")
    try:
        return apply_method(built, method, decode_args(method_args), decoder=decoder)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, TenpeftError):
            raise
        raise TenpeftError(f"{method} with {method_args} cannot be applied to {model}: {exc}") from None


@functools.lru_cache(maxsize=256)
def _trainable_fraction(model: str, method: str, args_json: str) -> float:
    adapted = adapt_on_meta(load_config(resolve_model(model)), model, method, json.loads(args_json), 2)
    counts = count_parameters(adapted)
    return counts["trainable"] / counts["total"]


def trainable_fraction(model: str, method: str, method_args: dict) -> float:
    """The share of ``model``'s parameters that ``method`` trains (counted on the meta device)."""
    return _trainable_fraction(model, method, json.dumps(method_args, sort_keys=True, default=str))


class PreparedTask(NamedTuple):
    """One task of a run, encoded: its spec, datasets, collator, label-word ids (decoders) and
    which split is evaluated."""

    task: object
    train_set: object
    eval_set: object
    collate: object
    label_ids: list[int] | None
    eval_split: str


def _prepare_task(name, spec: RunSpec, tokenizer, decoder: bool) -> PreparedTask:
    from tenpeft.lab.tasks import encode_classification, encode_prompt, get_task, label_word_ids, load_task_data, make_collator
    from tenpeft.lab.tasks.choices import encode_choices, is_choice_task

    task = get_task(name)
    data = load_task_data(task, spec.data.data_dir, train_size=spec.data.train_size, eval_size=spec.data.eval_size,
                          data_seed=spec.data.data_seed)
    choice = decoder and is_choice_task(task)  # scored by candidate likelihood, not label words
    encode = encode_choices if choice else encode_prompt if decoder else encode_classification
    labels = label_word_ids(task, tokenizer) if decoder and not choice else None
    return PreparedTask(task, encode(task, tokenizer, data.train, spec.train.max_length),
                        encode(task, tokenizer, data.eval, spec.train.max_length), make_collator(tokenizer, task),
                        labels, data.eval_split)


def _build(spec: RunSpec, source, decoder: bool, num_labels: int, label_ids):
    model = load_model(source, num_labels, seed=spec.seed)
    adapted = apply_method(model, spec.method, decode_args(spec.method_args), decoder=decoder)
    params = count_parameters(adapted)
    if not decoder:
        return adapted, params
    lm = base_model(adapted)
    return (PromptClassifier(lm, label_ids) if label_ids is not None else ChoiceScorer(lm)), params


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


def execute(spec: RunSpec, accelerator, progress: bool = True) -> dict:
    """Run ``spec`` (every stage of a chained task; a preference task through trl's DPO, an instruction task
    through trl's SFT) and return its record."""
    from accelerate.utils import set_seed

    from tenpeft.lab.tasks.instruction import is_instruction
    from tenpeft.lab.tasks.preference import is_preference

    if is_preference(spec.task):
        from tenpeft.lab.dpo import execute_preference
        return execute_preference(spec, accelerator, progress)
    if is_instruction(spec.task):
        from tenpeft.lab.sft import execute_instruction
        return execute_instruction(spec, accelerator, progress)

    set_seed(spec.seed)
    source = resolve_model(spec.model)
    decoder = is_decoder(load_config(source))
    tokenizer = load_tokenizer(source)
    prepared = [_prepare_task(t, spec, tokenizer, decoder) for t in spec.tasks]
    model, params = _build(spec, source, decoder, prepared[0].task.num_labels, prepared[0].label_ids)
    stages, timings, diverged = [], {"total_s": 0.0, "train_s": 0.0, "eval_s": 0.0}, None
    heads = TaskHeads(model) if len(prepared) > 1 and not decoder else None
    for task, train_set, eval_set, collate, labels, _ in prepared:
        if labels is not None:
            model.label_ids = torch.tensor(labels, device=model.label_ids.device)
        if heads:
            heads.start(task.name)
        result = train(model, task, train_set, eval_set, collate, spec.train, seed=spec.seed,
                       accelerator=accelerator, progress=progress)
        for key in timings:
            timings[key] += result.timings[key]
        stages.append({"task": task.name, "history": result.history, "best": result.best})
        if result.diverged:
            diverged = {"task": task.name, **result.diverged}
            break
        if heads:
            heads.finish(task.name)
        if len(prepared) > 1:
            stages[-1]["scores"] = _score_all(model, prepared, accelerator, progress, heads)
    record = make_record(spec, params, stages, prepared, timings, diverged, accelerator)
    if spec.efficiency and not diverged:
        from tenpeft.lab.efficiency import measure

        last = prepared[-1]
        record["efficiency"] = measure(model, last.task, last.train_set, last.collate, spec.train.batch_size)
    accelerator.free_memory()
    return record


def make_record(spec: RunSpec, params: dict, stages: list[dict], prepared: list[PreparedTask], timings: dict,
                diverged: dict | None, accelerator) -> dict:
    """The record of a finished run: its config, parameter counts, the last stage's history, best
    entry and headline score, every stage of a chain, timings and provenance."""
    last, metric = stages[-1], prepared[-1].task.headline_metric
    record = {"schema": SCHEMA, "study": spec.study, "run_id": spec.run_id, "status": "diverged" if diverged else "ok",
              "diverged": diverged, "config": spec.config(), "params": params, "history": last["history"],
              "best": last["best"], "score": {"metric": metric, "value": None if diverged else last["best"]["metrics"][metric]},
              "eval_split": {p.task.name: p.eval_split for p in prepared}, "stages": stages if len(prepared) > 1 else None,
              "timings": {**timings, "steps_per_s": spec.train.max_steps * len(stages) / max(timings["train_s"], 1e-9)}}
    record["provenance"] = provenance(accelerator)
    return record


def _score_all(model, prepared, accelerator, progress, heads: TaskHeads | None) -> dict[str, float]:
    """The headline score of every task of a chain on its evaluation split, with the adapter as it
    is now (and each task's own head, or label words)."""
    from torch.utils.data import DataLoader

    scores = {}
    for task, _, eval_set, collate, labels, _ in prepared:
        if labels is not None:
            model.label_ids = torch.tensor(labels, device=model.label_ids.device)
        if heads:
            heads.use(task.name)
        loader = accelerator.prepare(DataLoader(eval_set, batch_size=64, collate_fn=collate))
        scores[task.name] = evaluate(model, loader, task, accelerator, progress)[1][task.headline_metric]
    return scores


def record_path(spec: RunSpec, results_dir: str | Path) -> Path:
    """Where the record of ``spec`` goes: ``<results_dir>/<study>/<run_id>.json``."""
    return Path(results_dir) / spec.study / f"{spec.run_id}.json"


def _finished(path: Path, spec: RunSpec) -> dict | None:
    existing = read_record(path)
    if existing is not None and existing.get("config") == json.loads(json.dumps(spec.config())):
        return existing
    return None


def finished(spec: RunSpec, results_dir: str | Path) -> dict | None:
    """The record of ``spec`` if it is on disk and whole (for its exact config), else None."""
    return _finished(record_path(spec, results_dir), spec)


def _decide(spec: RunSpec, path: Path, accelerator) -> tuple[dict | None, object]:
    """On the main process: the finished record, or a claim to train it, or neither (busy);
    the other processes of a multi-process run follow the main one's decision."""
    existing, claim = None, None
    if accelerator.is_main_process:
        existing = _finished(path, spec)
        claim = None if existing else try_claim(path)
        if claim and (existing := _finished(path, spec)):  # finished while we were claiming
            claim.done()
            claim = None
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        existing, held = broadcast_object_list([existing, claim is not None])
        claim = claim or (True if held else None)
    return existing, claim


def run(spec: RunSpec, results_dir: str | Path, accelerator, progress: bool = True,
        started=None) -> tuple[dict | None, str]:
    """Execute ``spec`` unless its record is on disk or another process has claimed it
    (``started()``, if given, is called once the claim is held, before training).

    Returns ``(record, "kept")``, ``(record, "ran")`` or ``(None, "busy")`` (claimed elsewhere:
    ask again later)."""
    path = record_path(spec, results_dir)
    existing, claim = _decide(spec, path, accelerator)
    if existing is not None:
        return existing, "kept"
    if claim is None:
        return None, "busy"
    try:
        if started is not None:
            started()
        record = execute(spec, accelerator, progress)
        if accelerator.is_main_process:
            write_record(path, record)
    except BaseException:
        if isinstance(claim, Claim):
            claim.release()
        raise
    if isinstance(claim, Claim):
        claim.done()
    return record, "ran"


__all__ = ["DataConfig", "RunSpec", "adapt_on_meta", "check_spec", "decode_args", "execute", "finished", "record_path", "run", "trainable_fraction"]
