"""The command line every study script shares: list types (tasks, seeds, rates), the common flags
(``base_parser``) and ``--import MODULE``."""
from __future__ import annotations

import argparse
import math
import os

from tenpeft.errors import TenpeftError
from tenpeft.plugins import import_plugins
from tenpeft.lab.protocols import PROTOCOLS
from tenpeft.lab.workers import add_launch_flags


def csv_list(kind, what: str = "value"):
    """An argparse type for a non-empty comma-separated list of ``kind``."""

    def parse(text: str) -> list:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} holds no {what}; give one or more, comma-separated")
        try:
            return [kind(x) for x in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: each item must be a {what}") from None

    return parse


def task_list(text: str) -> list[str]:
    """An argparse type for comma-separated tasks, each as a run stores it (``canonical_ref``: ``SST-2`` as
    ``sst2``, a task file checked and stored as its real path); an unknown name is left to the runs' checks."""
    from tenpeft.lab.tasks import canonical_ref

    try:
        return [canonical_ref(t) for t in csv_list(str, "task name")(text)]
    except TenpeftError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _rate(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise ValueError(text)
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def base_parser(description: str, *, tasks="sst2", seeds="0,1,2,3,4", max_steps=200, train_size=1000,
                validation_size=500, test_size=0, eval_every=50, batch_size=16,
                lr_grid: bool = False) -> argparse.ArgumentParser:
    """The flags every study takes; each study adds its own and sets its defaults (``lr_grid``: whether it
    sweeps each method's rate grid by default, as the comparative studies do)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="minilm", help="alias (minilm, smollm2, tiny-bert, tiny-llama), hub id or path")
    p.add_argument("--tasks", type=task_list, default=csv_list(str)(tasks),
                   help="comma-separated tasks: GLUE names, or task files (.json/.toml; tenpeft.lab.tasks.custom)")
    p.add_argument("--seeds", type=csv_list(int, "integer seed"), default=csv_list(int)(seeds))
    p.add_argument("--lrs", type=csv_list(_rate, "finite positive learning rate"), default=None,
                   help="learning-rate sweep (every method); the best by validation loss is plotted")
    rates = p.add_mutually_exclusive_group()
    rates.add_argument("--lr-grid", dest="lr_grid", action="store_true", default=lr_grid,
                       help="sweep each method's own grid (its default rate x 1/3, 1, 3), chosen on validation")
    rates.add_argument("--one-lr", dest="lr_grid", action="store_false",
                       help="train each method at its one default rate (no grid; the study says so)")
    p.add_argument("--grid-seeds", type=_count, default=1, metavar="K",
                   help="with more than one rate: the first K seeds train at every rate, the others only at the "
                        "rate chosen on those K seeds' validation loss (0: every seed at every rate)")
    p.add_argument("--max-steps", type=int, default=max_steps)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--eval-every", type=int, default=eval_every)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--train-size", type=int, default=train_size,
                   help="training rows, drawn by each run's seed (0 = the rest of the train split)")
    p.add_argument("--validation-size", type=int, default=validation_size,
                   help="validation rows carved from train by the fixed split seed: every choice (checkpoint, "
                        "rate, rank) is made on them (0 = a tenth of train)")
    p.add_argument("--test-size", "--eval-size", dest="test_size", type=int, default=test_size,
                   help="reported rows of the task's labelled held-out split, drawn by the split seed (0 = all)")
    p.add_argument("--data-dir", default=os.environ.get("TENPEFT_DATA_DIR"),
                   help="local GLUE folder (<dir>/<task>/<split>.jsonl); default TENPEFT_DATA_DIR, else the hub")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="extra method argument, e.g. lora.alpha=16 (VALUE parsed as JSON)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--figures-dir", default="figures")
    p.add_argument("--paper", nargs="?", const="study", default=None, metavar="PROTOCOL",
                   help="alone: the study's paper scale (whole splits, hours on a GPU); with a protocol name "
                        f"({', '.join(sorted(PROTOCOLS))}): also that paper's per-task epochs, batch size, "
                        "max length, schedule and both learning rates (tenpeft.lab.protocols)")
    p.add_argument("--head-lr", type=_rate, default=None,
                   help="the task head's own learning rate (default: the adapter's)")
    p.add_argument("--no-progress", action="store_true")
    add_import_flag(p)
    add_launch_flags(p)
    return p


class _ImportNow(argparse.Action):
    """``--import MODULE``: import it while the command line is read, so the methods, formats and
    families it registers are known to everything after (the grid, the checks, the runs)."""

    def __call__(self, parser, namespace, value, option_string=None):
        try:
            import_plugins([value])
        except TenpeftError as err:
            parser.error(str(err))
        getattr(namespace, self.dest).append(value)


def add_import_flag(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``--import MODULE`` flag (user methods, formats, families; see tenpeft.plugins)."""
    parser.add_argument("--import", dest="imports", action=_ImportNow, default=[], metavar="MODULE",
                        help="import a module that registers methods, formats or model families (repeatable)")
