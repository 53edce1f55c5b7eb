"""What defines one run of a study (``RunSpec``: model, task, method, seed, training and data settings) and
its identity (``run_id``: a readable name and a hash of the full config), plus the method checks that need
no weights (the model built on the meta device)."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tenpeft.errors import TenpeftError
from tenpeft.formats import Budget
from tenpeft.lab.adapt import apply_method, count_parameters
from tenpeft.lab.loop import TrainConfig
from tenpeft.lab.models import is_decoder, load_config, resolve_model
from tenpeft.lab.tasks import find_kind


def task_label(ref: str) -> str:
    """The short name of a task argument for run ids and figures (a task file's declared name)."""
    kind = find_kind(ref)
    return ref if kind is None else kind.label


@dataclass
class DataConfig:
    """Which examples (``tenpeft.lab.tasks.splits``): ``train_size`` training rows drawn by ``data_seed``
    (None: the run's seed, so each seed trains on its own subset), ``validation_size`` rows carved from train
    and ``test_size`` reported rows, both by the fixed split seed (None = all, or a tenth of train for a
    carved split); ``data_dir`` a local GLUE-like folder (None = ``TENPEFT_DATA_DIR`` or the hub), kept as its
    real absolute path so a run's identity does not depend on how the path was spelled."""

    train_size: int | None = 2000
    validation_size: int | None = None
    test_size: int | None = None
    data_dir: str | None = None
    data_seed: int | None = None

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

    def __post_init__(self):
        if self.data.data_seed is None:  # a copy: one DataConfig may serve many runs
            self.data = dataclasses.replace(self.data, data_seed=self.seed)

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
        files = {t: kind.identity for t in self.tasks if (kind := find_kind(t)) is not None and kind.identity}
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


__all__ = ["DataConfig", "RunSpec", "adapt_on_meta", "decode_args", "task_label", "trainable_fraction"]
