"""The training loop, top to bottom, on ``accelerate``: AdamW with a warmed-up linear/cosine
schedule, evaluation every ``eval_every`` steps, and the best checkpoint by validation loss
restored at the end; a non-finite training or validation loss stops the run as diverged. CPU or GPU, bf16/fp16, several processes under ``accelerate launch`` or
``torchrun`` with no code change; a seeded CPU run repeats bit for bit."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tenpeft.errors import TenpeftError
from tenpeft.lab.batching import ROW_INDEX, grouped_loader, sorted_loader

SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Optimisation settings of one run (``max_steps`` optimizer steps of ``batch_size`` examples
    per process; ``warmup_ratio`` of them warm the rate up linearly from 0). The schedule, warm-up
    and evaluation cadence count optimizer steps, whatever the number of processes. ``head_lr``:
    the task head's own rate (LoRTA's ``classifier_lr``); None trains it at ``lr``. ``group_by_length``:
    batches of rows of similar length (``tenpeft.lab.batching``), else uniformly shuffled batches."""

    lr: float = 1e-3
    head_lr: float | None = None
    max_steps: int = 300
    batch_size: int = 16
    eval_batch_size: int = 64
    eval_every: int = 50
    eval_at_start: bool = False
    warmup_ratio: float = 0.06
    schedule: str = "linear"
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    max_length: int = 128
    mixed_precision: str = "no"
    group_by_length: bool = True

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise TenpeftError(f"schedule={self.schedule!r}; choose one of {SCHEDULES}")
        if self.mixed_precision not in PRECISIONS:
            raise TenpeftError(f"mixed_precision={self.mixed_precision!r}; choose one of {PRECISIONS}")
        for name in ("max_steps", "batch_size", "eval_batch_size", "eval_every", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TenpeftError(f"{name} must be an int >= 1, got {value!r}")
        if self.head_lr is not None and not 0 < self.head_lr < math.inf:
            raise TenpeftError(f"head_lr must be a finite rate > 0 (or None: the head trains at lr), got {self.head_lr}")
        if not (0 < self.lr < math.inf and 0 <= self.warmup_ratio < 1 and 0 <= self.weight_decay < math.inf):
            raise TenpeftError(f"need a finite lr > 0, 0 <= warmup_ratio < 1, a finite weight_decay >= 0; got lr={self.lr}, "
                               f"warmup_ratio={self.warmup_ratio}, weight_decay={self.weight_decay}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TenpeftError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """Metric history (one entry per evaluation), the best entry, wall-clock timings, and where
    the run diverged (``{"step", "loss", "value"}``; None if it did not)."""

    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    timings: dict = field(default_factory=dict)
    diverged: dict | None = None


NOT_INPUTS = ("labels", "gold", ROW_INDEX)  # batch keys the model does not read


def _forward(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = {k: v for k, v in batch.items() if k not in NOT_INPUTS}
    return model(**inputs).logits, batch["labels"]


def batch_loss(model: nn.Module, batch: dict, task) -> torch.Tensor:
    """The task's training loss (``task.loss``) of ``model`` on ``batch``."""
    return task.loss(*_forward(model, batch))


@torch.no_grad()
def predict_split(model, loader, task, accelerator, progress: bool = True) -> tuple[float, dict, dict]:
    """``(loss, metrics, predictions)`` over every process's examples: the example-weighted loss, the task's
    metrics (``task.score``) and ``{"pred", "gold"}`` per example in the split's row order (what a paired
    bootstrap over examples resamples), from an :func:`eval_loader` (batches tagged with their rows'
    indices, in any order). Each process reduces its batch to per-example losses and ``task.predict``'s
    predictions first, so candidate counts may differ."""
    model.eval()
    predictions, labels, losses, rows = [], [], [], []
    for batch in tqdm(loader, desc="eval", leave=False, disable=not (progress and accelerator.is_main_process)):
        logits = _forward(model, batch)[0]
        pred, y = task.predict(logits.float(), batch)
        loss, pred, y, index = accelerator.gather_for_metrics(
            (task.loss(logits, batch["labels"], reduction="none"), pred, y, batch[ROW_INDEX]))
        for kept, value in zip((losses, predictions, labels, rows), (loss, pred, y, index)):
            kept.append(value)
    model.train()
    order = torch.argsort(torch.cat(rows).cpu())
    pred, gold = torch.cat(predictions).cpu()[order].numpy(), torch.cat(labels).cpu()[order].numpy()
    return torch.cat(losses).mean().item(), task.score(pred, gold), {"pred": pred.tolist(), "gold": gold.tolist()}


def evaluate(model, loader, task, accelerator, progress: bool = True) -> tuple[float, dict]:
    """``(loss, metrics)`` of :func:`predict_split`."""
    return predict_split(model, loader, task, accelerator, progress)[:2]


def _batches(loader):
    """Batches forever, epoch after epoch (reshuffled by the seeded sampler)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def _restore(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


class BestCheckpoint:
    """The trainable parameters at the lowest validation loss seen so far (the first of equals), kept on the
    CPU: the lab's loop restores them at the end, the trl runners before they score the test split once."""

    def __init__(self):
        self.loss, self.state = math.inf, None

    def offer(self, model, loss: float) -> bool:
        """Keep ``model``'s trainable parameters if ``loss`` is the lowest yet (a non-finite loss never is);
        whether it was."""
        kept = math.isfinite(loss) and loss < self.loss
        if kept:
            self.loss, self.state = loss, _snapshot(model)
        return kept

    def restore(self, model) -> None:
        """Put the kept parameters back into ``model``."""
        if self.state is None:
            raise TenpeftError("no finite validation loss was seen, so there is no checkpoint to score on test")
        _restore(model, self.state)


def make_loaders(train_set, validation_set, collate, cfg: TrainConfig, seed: int, processes: int = 1):
    """The seeded train loader (length-grouped batches for ``processes`` processes when
    ``cfg.group_by_length``, else shuffled rows) and the validation loader (:func:`eval_loader`)."""
    if cfg.group_by_length:
        train = grouped_loader(train_set, collate, cfg.batch_size, seed, processes)
    else:
        generator = torch.Generator().manual_seed(seed)
        train = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate, generator=generator)
    return train, eval_loader(validation_set, collate, cfg)


def eval_loader(rows, collate, cfg: TrainConfig) -> DataLoader:
    """A loader of evaluation ``rows`` (validation or test) in batches of ``cfg.eval_batch_size``, longest
    rows first (little padding) and each batch tagged with its rows' indices (``batching.sorted_loader``)."""
    return sorted_loader(rows, collate, cfg.eval_batch_size)


def head_parameter_names(model: nn.Module) -> set[str]:
    """The task head's parameter names: the head tenpeft planned (``state.head``), or PEFT's
    ``modules_to_save`` copies for a PEFT baseline."""
    state = getattr(model, "tenpeft_state", None)
    if state is not None:
        prefixes = tuple(f"{h}." for h in state.head)
        return {n for n, _ in model.named_parameters() if prefixes and n.startswith(prefixes)}
    return {n for n, _ in model.named_parameters() if ".modules_to_save." in n}


def param_groups(model: nn.Module, params: dict[str, nn.Parameter], cfg: TrainConfig) -> list[dict]:
    """One AdamW group at ``lr``, or two when ``head_lr`` is set: the head's parameters at ``head_lr``."""
    if cfg.head_lr is None:
        return [{"params": list(params.values())}]
    head = head_parameter_names(model) & set(params)
    if not head:
        raise TenpeftError("head_lr is set but this model trains no task head (a causal LM, or head='frozen'); "
                           "drop --head-lr")
    rest = [p for n, p in params.items() if n not in head]
    return [g for g in ({"params": rest}, {"params": [params[n] for n in sorted(head)], "lr": cfg.head_lr})
            if g["params"]]


def make_optimizer(model: nn.Module, cfg: TrainConfig):
    """AdamW over the trainable parameters and the warmed-up schedule of ``cfg.schedule``."""
    from transformers import get_scheduler

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise TenpeftError("the model has no trainable parameters; inject a method first")
    optimizer = torch.optim.AdamW(param_groups(model, params, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * cfg.max_steps)
    return optimizer, get_scheduler(cfg.schedule if cfg.schedule != "constant" else "constant_with_warmup",
                                    optimizer, num_warmup_steps=warmup, num_training_steps=cfg.max_steps)


class RunLoop:
    """One run's training, a step at a time (``step()`` until ``done``, then ``finish()``): AdamW and
    its schedule, the seeded train order, evaluation every ``cfg.eval_every`` steps and at the end,
    the lowest-validation-loss parameters restored by ``finish``. ``train`` drives one loop; packed
    runs (``tenpeft.lab.packed``) interleave several. Timings count only the time spent in this
    loop's own calls, so a loop interleaved with others reports its own cost."""

    def __init__(self, model, task, train_set, validation_set, collate, cfg: TrainConfig, *, seed: int, accelerator,
                 progress: bool = True):
        t0 = time.perf_counter()
        self.task, self.cfg, self.accelerator, self.progress = task, cfg, accelerator, progress
        optimizer, self.scheduler = make_optimizer(model, cfg)
        train_loader, validation_loader = make_loaders(train_set, validation_set, collate, cfg, seed,
                                                       accelerator.num_processes)
        # The schedule is not prepared: accelerate would step it once per process at every optimizer step
        # (its rule for a batch that grows with the processes), so under N processes it ran N times as fast.
        self.model, self.optimizer, train_loader, self.validation_loader = accelerator.prepare(
            model, optimizer, train_loader, validation_loader)
        self.result, self.checkpoint, self.steps, self.losses = TrainResult(), BestCheckpoint(), 0, []
        self.busy_s, self.eval_s = 0.0, 0.0
        self.bar = tqdm(total=cfg.max_steps, desc="train", disable=not (progress and accelerator.is_main_process))
        self.model.train()
        if cfg.eval_at_start:
            self._checkpoint(0)
        self.batches = _batches(train_loader)
        self.busy_s += time.perf_counter() - t0

    @property
    def done(self) -> bool:
        return self.result.diverged is not None or self.steps >= self.cfg.max_steps

    def _checkpoint(self, step: int) -> None:
        t0 = time.perf_counter()
        val_loss, metrics = evaluate(self.model, self.validation_loader, self.task, self.accelerator, self.progress)
        self.eval_s += time.perf_counter() - t0
        losses = self.losses
        entry = {"step": step, "train_loss": sum(losses) / len(losses) if losses else None,
                 "val_loss": val_loss if math.isfinite(val_loss) else None, "metrics": metrics}
        losses.clear()
        self.result.history.append(entry)
        if entry["val_loss"] is None:
            self.result.diverged = {"step": step, "loss": "validation", "value": str(val_loss)}
        elif self.checkpoint.offer(self.accelerator.unwrap_model(self.model), val_loss):
            self.result.best = entry

    def step(self) -> None:
        """One optimizer step (and the evaluation due after it); a non-finite loss ends the run."""
        t0 = time.perf_counter()
        self.steps += 1
        self._train_step(self.steps)
        self.bar.update()
        self.busy_s += time.perf_counter() - t0

    def _train_step(self, step: int) -> None:
        model, cfg, accelerator = self.model, self.cfg, self.accelerator
        loss = batch_loss(model, next(self.batches), self.task)
        self.losses.append(accelerator.reduce(loss.detach(), "mean").item())  # the mean over every process's batch
        if not math.isfinite(self.losses[-1]):
            self.result.diverged = {"step": step, "loss": "train", "value": str(self.losses[-1])}
            return
        accelerator.backward(loss)
        if cfg.grad_clip:
            accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            self._checkpoint(step)

    def finish(self) -> TrainResult:
        """The result, with the best parameters restored (none if the run diverged)."""
        t0 = time.perf_counter()
        self.bar.close()
        result = self.result
        if result.diverged:
            result.best = None
        else:
            self.checkpoint.restore(self.accelerator.unwrap_model(self.model))
        total = self.busy_s + time.perf_counter() - t0
        result.timings = {"total_s": total, "eval_s": self.eval_s, "train_s": total - self.eval_s,
                          "steps_per_s": self.cfg.max_steps / max(total - self.eval_s, 1e-9)}
        return result


def train(model, task, train_set, validation_set, collate, cfg: TrainConfig, *, seed: int, accelerator,
          progress: bool = True) -> TrainResult:
    """Train ``model`` for ``cfg.max_steps`` steps, evaluating on ``validation_set`` every ``cfg.eval_every``
    and at the end; the parameters of the lowest validation loss are restored before returning. A non-finite
    loss stops training: ``result.diverged`` says where, ``result.best`` is None."""
    loop = RunLoop(model, task, train_set, validation_set, collate, cfg, seed=seed, accelerator=accelerator,
                   progress=progress)
    while not loop.done:
        loop.step()
    return loop.finish()
