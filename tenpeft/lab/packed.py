"""Packed runs: K runs of one model trained in one process, their frozen base weights held once.

Each run keeps its own adapter, task head, optimizer, schedule, seeded data order, evaluation and
random stream (Python, NumPy and torch states are swapped in before each of its steps), and the
runs take steps in turn, so each record equals the record of the same run trained alone (the
test: ``tests/lab/test_packed.py``). Frozen parameters equal bit for bit across the runs (the
pretrained base; a random-init base only among runs of the same seed) are replaced by one tensor.

What it saves is memory and set-up (one tokenizer, one encoding of each task's data, one process),
not arithmetic: every run still computes its own forward and backward through the base, one after
another. ``benchmarks/packed_runs.py`` measures packed against sequential and parallel runs.
"""
from __future__ import annotations

import dataclasses
import json
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from tenpeft.errors import TenpeftError
from tenpeft.lab.claims import Claim
from tenpeft.lab.loop import RunLoop
from tenpeft.lab.models import is_decoder, load_config, load_tokenizer, resolve_model
from tenpeft.lab.records import write_record
from tenpeft.lab.run import _decide, record_path
from tenpeft.lab.runners.supervised import build, score_test, supervised_record
from tenpeft.lab.spec import RunSpec
from tenpeft.lab.tasks import find_kind


class RNGState:
    """The global random streams a run draws from (Python, NumPy, torch CPU and CUDA), kept per run:
    ``with state.active():`` restores them, and saves them again on the way out."""

    def __init__(self):
        self.save()

    def save(self) -> None:
        self.python, self.numpy, self.torch = random.getstate(), np.random.get_state(), torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)

    @contextmanager
    def active(self):
        self.restore()
        try:
            yield
        finally:
            self.save()


class FrozenPool:
    """Frozen parameters held once: ``share(model)`` points each frozen parameter of ``model`` that
    equals (bit for bit, same shape, dtype and device) one already held at the held one, so the
    model's own copy is freed. ``shared_bytes`` counts the bytes freed so far."""

    def __init__(self):
        self.held: dict[tuple, list[torch.nn.Parameter]] = {}
        self.shared_bytes = 0

    @staticmethod
    def _key(t: torch.Tensor) -> tuple:
        flat = t.detach().reshape(-1)
        return tuple(t.shape), t.dtype, str(t.device), float(flat.double().sum()), tuple(flat[:8].tolist())

    def _match(self, param: torch.nn.Parameter) -> torch.nn.Parameter:
        candidates = self.held.setdefault(self._key(param), [])
        for held in candidates:
            if held is param or torch.equal(held, param):
                return held
        candidates.append(param)
        return param

    @torch.no_grad()
    def share(self, model: torch.nn.Module) -> None:
        replaced: dict[int, torch.nn.Parameter] = {}  # tied weights stay tied
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if param is None or param.requires_grad or param.device.type == "meta":
                    continue
                if id(param) not in replaced:
                    replaced[id(param)] = self._match(param)
                    if replaced[id(param)] is not param:
                        self.shared_bytes += param.numel() * param.element_size()
                module._parameters[name] = replaced[id(param)]


def why_not_packable(spec: RunSpec) -> str | None:
    """Why ``spec`` cannot join a pack (a chain, a task of a kind that trains alone, a measured run), or None."""
    if len(spec.tasks) > 1:
        return "a chain of tasks"
    kind = find_kind(spec.task)
    if kind is not None and not kind.packable:
        return f"a {kind.name} task ({kind.objective} runner)"
    if spec.efficiency:
        return "a run whose cost is measured (peak memory is per process)"
    return None


def check_pack(specs: list[RunSpec], accelerator) -> None:
    """One TenpeftError unless ``specs`` can be trained as one pack in this process."""
    if accelerator.num_processes > 1:
        raise TenpeftError(f"packed runs train in one process, not {accelerator.num_processes}: "
                           f"run without torchrun/accelerate launch, or drop --pack")
    models = sorted({spec.model for spec in specs})
    if len(models) > 1:
        raise TenpeftError(f"a pack shares one base model; these runs use {models}")
    for spec in specs:
        if (why := why_not_packable(spec)) is not None:
            raise TenpeftError(f"{spec.run_id} is {why}, which trains alone: drop --pack for it")


@dataclass
class _Member:
    spec: RunSpec
    params: dict
    prepared: object
    loop: RunLoop
    rng: RNGState


def _task_key(spec: RunSpec) -> str:
    return json.dumps([spec.task, dataclasses.asdict(spec.data), spec.train.max_length], sort_keys=True)


def _start(spec: RunSpec, source, tokenizer, decoder: bool, data: dict, pool: FrozenPool, accelerator) -> _Member:
    """Build one run of the pack exactly as ``run.execute`` would, on its own seeded stream."""
    from accelerate.utils import set_seed

    set_seed(spec.seed)
    key, kind = _task_key(spec), find_kind(spec.task)
    if key not in data:
        data[key] = kind.prepare(spec, tokenizer, decoder)
    prepared = data[key]
    model, params = build(spec, source, decoder, kind, prepared)
    pool.share(model)
    if prepared.label_ids is not None:
        model.label_ids = torch.tensor(prepared.label_ids, device=model.label_ids.device)
    loop = RunLoop(model, prepared.task, prepared.train_set, prepared.validation_set, prepared.collate, spec.train,
                   seed=spec.seed, accelerator=accelerator, progress=False)
    return _Member(spec, params, prepared, loop, RNGState())


def _finish(member: _Member, accelerator, pack: dict) -> dict:
    with member.rng.active():
        result = member.loop.finish()
    task = member.prepared.task
    stages = [{"task": task.name, "history": result.history, "best": result.best}]
    diverged = {"task": task.name, **result.diverged} if result.diverged else None
    timings = {k: result.timings[k] for k in ("total_s", "train_s", "eval_s")}
    test = None if diverged else score_test(member.loop.model, member.prepared, member.spec.train, accelerator, False)
    record = supervised_record(member.spec, member.params, stages, [member.prepared], timings, diverged, accelerator,
                               test)
    record["packed"] = pack
    return record


def execute_packed(specs: list[RunSpec], accelerator, progress: bool = True) -> list[dict]:
    """Train ``specs`` as one pack (their steps in turn) and return their records, in order. Each
    record's ``timings`` count that run's own work; ``packed`` says the pack's size, members, wall
    time and the frozen bytes it held once instead of K times."""
    check_pack(specs, accelerator)
    t0 = time.perf_counter()
    source = resolve_model(specs[0].model)
    decoder = is_decoder(load_config(source))
    tokenizer, data, pool = load_tokenizer(source), {}, FrozenPool()
    members = [_start(spec, source, tokenizer, decoder, data, pool, accelerator) for spec in specs]
    bar = tqdm(total=sum(s.train.max_steps for s in specs), desc=f"pack of {len(specs)}",
               disable=not progress, leave=False)
    while pending := [m for m in members if not m.loop.done]:
        for member in pending:
            with member.rng.active():
                member.loop.step()
            bar.update()
    bar.close()
    pack = {"size": len(specs), "runs": [s.run_id for s in specs], "wall_s": time.perf_counter() - t0,
            "shared_frozen_bytes": pool.shared_bytes}
    records = [_finish(member, accelerator, pack) for member in members]
    accelerator.free_memory()
    return records


def run_pack(specs: list[RunSpec], results_dir, accelerator, progress: bool = True) -> list[tuple[dict | None, str]]:
    """``run.run`` for a pack: each spec's ``(record, "kept" | "ran" | "busy")``, in order. The runs
    whose records are on disk are read back, those claimed elsewhere are left, the rest are claimed
    and trained as one pack; if the pack fails, every claim is released and nothing is written."""
    decided = [(spec, *_decide(spec, record_path(spec, results_dir), accelerator)) for spec in specs]
    outcome = {spec.run_id: (existing, "kept") if existing is not None else (None, "busy")
               for spec, existing, claim in decided if existing is not None or claim is None}
    claimed = [(spec, claim) for spec, existing, claim in decided if existing is None and claim is not None]
    if claimed:
        try:
            records = execute_packed([spec for spec, _ in claimed], accelerator, progress)
            for (spec, _), record in zip(claimed, records):
                write_record(record_path(spec, results_dir), record)
        except BaseException:
            for _, claim in claimed:
                if isinstance(claim, Claim):
                    claim.release()
            raise
        for (spec, claim), record in zip(claimed, records):
            claim.done()
            outcome[spec.run_id] = (record, "ran")
    return [outcome[spec.run_id] for spec in specs]


def pack_groups(specs: list[RunSpec], size: int) -> list[list[RunSpec]]:
    """``specs`` in packs of at most ``size`` runs of the same model, in order of first appearance;
    a run that cannot be packed is a pack of its own."""
    groups, open_by_model = [], {}
    for spec in specs:
        if why_not_packable(spec) is not None:
            groups.append([spec])
            continue
        group = open_by_model.get(spec.model)
        if group is None or len(group) >= size:
            group = open_by_model[spec.model] = []
            groups.append(group)
        group.append(spec)
    return groups


__all__ = ["FrozenPool", "RNGState", "check_pack", "execute_packed", "pack_groups", "run_pack", "why_not_packable"]
