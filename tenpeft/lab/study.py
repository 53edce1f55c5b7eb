"""What every study script shares: the command line (``tenpeft.lab.flags``), the expansion of a grid into runs, the
checks of every run before the first one trains, and the loop over runs (skipping finished ones)."""
from __future__ import annotations

import gc
import json
import os
import shutil
import time
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tenpeft.assign import parse_assignment
from tenpeft.errors import TenpeftError
from tenpeft.lab.flags import add_import_flag, base_parser, csv_list, task_list  # noqa: F401  (the studies' import)
from tenpeft.lab.loop import TrainConfig
from tenpeft.lab.packed import pack_groups, run_pack
from tenpeft.lab.protocols import get_protocol
from tenpeft.lab.provenance import git_commit
from tenpeft.lab.claims import owner
from tenpeft.lab.records import old_protocol_note, refuse_newer, status
from tenpeft.lab.rates import (ADAPTER_LR, FULL_LR, FULL_SHARE, at_chosen_rates, choice_lines, chosen_runs,  # noqa: F401
                              default_lr, grid_phases, rates_for)
from tenpeft.lab.run import DataConfig, RunSpec, check_spec, record_path, run
from tenpeft.lab.tasks import load_task_data
from tenpeft.lab.workers import (check_launch, describe, failed_runs, failure_log, forget_failures,
                                 launch, quiet, uses_launcher)

@dataclass
class Variant:
    """One point of a study's grid: a method, its arguments and the axis values it stands for."""

    method: str
    method_args: dict = field(default_factory=dict)
    axes: dict = field(default_factory=dict)


def parse_sets(items: list[str]) -> dict[str, dict]:
    """``["lora.alpha=16"]`` -> ``{"lora": {"alpha": 16}}``."""
    out: dict[str, dict] = {}
    for item in items:
        key, value = parse_assignment(item, "--set", "lora.alpha=16 (METHOD.KEY=VALUE)")
        method, dot, name = key.partition(".")
        if not dot or not method or not name:
            raise TenpeftError(f"--set {item!r}: write METHOD.KEY=VALUE, e.g. lora.alpha=16")
        out.setdefault(method, {})[name] = value
    return out


def _check_sets(extra: dict[str, dict], variants: list[Variant]) -> None:
    """``--set`` must name a method of the study and no argument the study itself varies."""
    methods = sorted({v.method for v in variants})
    for method, values in extra.items():
        if method not in methods:
            raise TenpeftError(f"--set {method}.{next(iter(values))}=...: method {method!r} is not in this study "
                               f"(its methods: {', '.join(methods)}); fix the name or add it to --methods")
        for variant in (v for v in variants if v.method == method):
            clash = sorted(set(values) & set(variant.method_args))
            if clash:
                raise TenpeftError(f"--set {method}.{clash[0]}=... would override the {clash[0]!r} this study sets "
                                   f"for each run ({variant.axes or variant.method_args}), mislabelling them; "
                                   f"drop it and use the study's own flag (e.g. --ranks)")


def expand(study: str, args, variants: list[Variant], task_chains: list[str] | None = None,
           train_overrides: dict | None = None) -> list[RunSpec]:
    """Runs for every variant x task x learning rate x seed, with the common flags applied."""
    extra = parse_sets(args.set)
    _check_sets(extra, variants)
    data = DataConfig(train_size=args.train_size or None, validation_size=args.validation_size or None,
                      test_size=args.test_size or None, data_dir=args.data_dir)
    specs, protocols = [], _protocol_settings(args, task_chains or args.tasks)
    for variant in variants:
        method_args = {**variant.method_args, **extra.get(variant.method, {})}
        for task in task_chains or args.tasks:
            paper = protocols.get(task, {})
            lrs = rates_for(args, variant.method, method_args, paper)
            for lr in lrs:
                common = {"max_steps": args.max_steps, "batch_size": args.batch_size, "max_length": args.max_length}
                train = TrainConfig.from_dict({**common, "eval_every": args.eval_every,
                                               "mixed_precision": args.mixed_precision, **paper, "lr": lr,
                                               "head_lr": args.head_lr or paper.get("head_lr"),
                                               **(train_overrides or {})})
                axes = {**variant.axes, **({"lr": lr} if len(lrs) > 1 or args.lrs else {})}
                specs += [RunSpec(study, args.model, task, variant.method, method_args, seed, train, data, axes)
                          for seed in args.seeds]
    return specs


def rank_variants(methods: list[str], ranks: list[int]) -> list[Variant]:
    """A variant per method and rank (axis ``rank``); a method without a rank argument once."""
    from tenpeft.lab.adapt import rank_arg

    out = []
    for method in methods:
        arg = rank_arg(method)
        out += [Variant(method)] if arg is None else [Variant(method, {arg: r}, {"rank": r}) for r in ranks]
    return out


def _protocol_settings(args, tasks: list[str]) -> dict[str, dict]:
    """Per task, the TrainConfig fields of ``--paper PROTOCOL`` (epochs counted over the training
    split as this study samples it); empty without a protocol name."""
    name = getattr(args, "paper", None)
    if name in (None, "study"):
        return {}
    if any(">" in t for t in tasks):
        raise TenpeftError(f"--paper {name} sets per-task settings; a chain of tasks takes --paper alone")
    out = {}
    for task in tasks:
        protocol = get_protocol(name, task)
        examples = len(load_task_data(task, args.data_dir, train_size=args.train_size or None).train)
        out[task] = protocol.train_settings(examples)
    return out


def check_all(specs: list[RunSpec]) -> None:
    """Check every distinct run before any trains; one error lists every problem found."""
    problems, seen = [], set()
    for spec in specs:
        key = json.dumps({**spec.config(), "seed": 0, "lr": 0, "train": None}, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_spec(spec)
        except TenpeftError as exc:
            message = f"{spec.method} on {spec.task}: {exc}"
            if message not in problems:
                problems.append(message)
    if len(problems) == 1:
        raise TenpeftError(f"nothing was run: {problems[0]}")
    if problems:
        raise TenpeftError("nothing was run; fix these first:\n  " + "\n  ".join(problems))


MIN_FREE_MB = 50
POLL_S = 2.0


def check_writable(folder: str | Path, flag: str) -> None:
    """``folder`` can be created and written, with at least ``MIN_FREE_MB`` free; else a TenpeftError
    naming ``flag``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TenpeftError(f"{flag} {str(folder)!r} is not writable ({type(err).__name__}: {err.strerror or err}); "
                           f"choose a folder you can write to") from None
    free_mb = shutil.disk_usage(folder).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise TenpeftError(f"{flag} {str(folder)!r} is on a disk with {free_mb:.0f} MB free (need {MIN_FREE_MB} MB); "
                           f"free some space or choose another folder")


def run_all(specs: list[RunSpec], args) -> list[dict]:
    """Check, then run every spec; finished ones are read back, runs claimed by other processes
    sharing the results folder are waited for. Ctrl-C keeps every finished record (exit 130).
    With ``--workers N`` or ``--launcher`` the runs go to other processes (``workers.launch``).
    A swept rate grid runs in two phases (``rates.grid_phases``, ``--grid-seeds``): the other seeds
    train only at the rate chosen on validation."""
    forget_failures()
    check_launch(args)
    quiet(not args.no_progress)
    check_all(specs)
    if not specs:
        raise TenpeftError("this study expands to no runs; give at least one method, task and seed")
    refuse_newer(record_path(spec, args.results_dir) for spec in specs)
    check_writable(Path(args.results_dir) / specs[0].study, "--results-dir")
    check_writable(args.figures_dir, "--figures-dir")
    git_commit()  # pin the commit of the code that runs, before the first run
    gc.collect()  # then what is alive now (modules, caches) lives on: each run's gc.collect (accelerate's
    gc.freeze()   # free_memory) skips it instead of walking it again (0.25 s a run on MiniLM's imports)
    first, rest = grid_phases(specs, getattr(args, "grid_seeds", 0))
    records = _execute(first, args)
    if rest:  # the other seeds, at the rate each configuration's grid seeds chose on validation
        records += _execute(at_chosen_rates(rest, records), args)
    return records


def _execute(specs: list[RunSpec], args) -> list[dict]:
    """Run (or read back) ``specs`` here, or on the workers or launcher ``args`` names; their records."""
    from accelerate import Accelerator

    if not specs:
        return []
    if uses_launcher(args):
        return launch(specs, args)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=not torch.cuda.is_available())
    done: dict[str, dict] = {}
    announced: set[str] = set()
    bar = tqdm(total=len(specs), desc=specs[0].study, disable=args.no_progress or not accelerator.is_main_process)
    try:
        pending = list(specs)
        while pending:
            busy = [spec for group in pack_groups(pending, getattr(args, "pack", 1))
                    for spec, ok in zip(group, _run_group(group, args, accelerator, done, bar, announced)) if not ok]
            if busy and len(busy) == len(pending):
                time.sleep(POLL_S)
            pending = busy
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(done)} finished run(s) kept in {Path(args.results_dir) / specs[0].study}; "
              f"rerun to continue", file=sys.stderr)
        raise SystemExit(130)
    bar.close()
    return [done[spec.run_id] for spec in specs]


def _run_group(group: list[RunSpec], args, accelerator, done: dict, bar, announced: set) -> list[bool]:
    """Run (or read back) a group of specs into ``done``, as one pack if more than one (``--pack``);
    for each spec, False if another process is training it."""
    if len(group) == 1:
        outcomes = [run(group[0], args.results_dir, accelerator, not args.no_progress)]
    else:
        outcomes = run_pack(group, args.results_dir, accelerator, not args.no_progress)
    return [_report(spec, record, how, args, accelerator, done, bar, announced)
            for spec, (record, how) in zip(group, outcomes)]


def _report(spec: RunSpec, record, how: str, args, accelerator, done: dict, bar, announced: set) -> bool:
    if how == "busy":
        if spec.run_id not in announced:
            announced.add(spec.run_id)
            tqdm.write(f"wait {spec.run_id}: {owner(record_path(spec, args.results_dir))} is training it")
        return False
    done[spec.run_id] = record
    bar.update()
    if accelerator.is_main_process:
        if how == "ran":
            failure_log(spec, args.results_dir).unlink(missing_ok=True)  # a failed earlier attempt's
        tqdm.write(f"{how:4} {spec.run_id}: {describe(record)}")
    return True


def best_lr_only(records: list[dict]) -> list[dict]:
    """For each configuration swept over learning rates, the runs of the rate chosen on validation
    (``rates.lr_choices``: the lowest mean validation loss over seeds); diverged runs are then left out,
    with a note naming every diverged run (a rate that diverged on a seed loses the choice)."""
    kept = {id(r) for r in without_diverged(records)}
    return [r for r in chosen_runs(records) if id(r) in kept]


def print_summary(records: list[dict], by: list[str], within: list[str] | None = None, between: str = "method",
                  swept: list[dict] | None = None):
    """Print per group the test score's mean and 95% t-interval over seeds (with the validation mean and
    trainable parameters), the learning rate chosen per configuration, and paired comparisons of the
    ``between`` values (methods) on shared seeds within each group of ``within`` (default: ``by`` less
    ``between``; Holm-corrected). ``swept``: every run the rates were chosen from (default ``records``,
    which ``best_lr_only`` may have cut to the chosen rates); return the summary frame (columns ``by``, ``trainable``,
    ``score_mean``, ``score_std``, ``score_ci``, ``seeds``)."""
    from tenpeft.lab.plots import runs_frame, summarize
    from tenpeft.lab.stats import compare

    frame = runs_frame(records)
    summary = summarize(frame, by).rename(columns={"mean": "score_mean", "std": "score_std", "ci": "score_ci",
                                                   "count": "seeds"})
    summary = summary.merge(frame.groupby(by, dropna=False).agg(
        trainable=("trainable", "max"), validation=("validation", "mean")).reset_index(), on=by)
    metric = ", ".join(sorted(frame["metric"].unique()))
    print(f"\n{' | '.join(by)} | trainable | test {metric}: mean [95% CI] (seeds) | validation mean")
    for row in summary.itertuples(index=False):
        keys = " | ".join(str(getattr(row, c)) for c in by)
        ci = "one seed" if row.score_ci != row.score_ci else f"{row.score_mean - row.score_ci:.4f}, " \
             f"{row.score_mean + row.score_ci:.4f}"
        print(f"{keys} | {row.trainable:,} | {row.score_mean:.4f} [{ci}] ({row.seeds}) | {row.validation:.4f}")
    for line in [*choice_lines(records if swept is None else swept), old_protocol_note(records)]:
        if line:
            print(line)
    try:
        within = within or [c for c in by if c != between]
        table = compare(frame, [*within, between], between)
    except TenpeftError as err:
        print(f"no paired comparison: {err}")
        return summary
    print("\npaired comparisons on shared seeds (test split; paired t-test, Holm-corrected):")
    for row in table.itertuples(index=False):
        keys = " ".join(f"{c}={getattr(row, c)}" for c in within)
        print(f"{keys} {row.a} - {row.b}: {row.diff:+.4f} [{row.low:+.4f}, {row.high:+.4f}] over {row.seeds} seeds, "
              f"p={row.p:.3g}, Holm p={row.p_holm:.3g}{' (significant)' if row.significant else ''}")
    return summary


def without_diverged(records: list[dict]) -> list[dict]:
    """The records that can be summarised; prints a note naming the diverged ones left out."""
    diverged = [r for r in records if status(r) == "diverged"]
    if diverged and main_process():
        print(f"note: {len(diverged)} diverged run(s) left out of summaries and figures (their records say where "
              f"they diverged): " + ", ".join(r["run_id"] for r in diverged))
    return [r for r in records if status(r) != "diverged"]


def main_process() -> bool:
    """Whether this is the process that writes (the only one, or rank 0 of a multi-process run)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def conclude(records: list[dict], by: list[str], figure, name: str, figures_dir: str,
             within: list[str] | None = None) -> list[dict]:
    """The end of a study: keep the rate chosen on validation per configuration, leave out diverged runs
    (with a note), and on the main process print the summary over seeds (``print_summary``; methods are
    compared within ``within``) and save
    ``figure(records)`` as ``<figures_dir>/<name>_<model>.png`` and ``.pdf``; returns the kept records."""
    from tenpeft.lab.plots import figure_name, save_figure

    swept, records = records, best_lr_only(records)
    if not main_process():
        return records
    if not records:
        print("every run diverged (or failed): no summary or figure; try smaller learning rates (--lrs)")
        return []
    print_summary(records, by, within, swept=swept)
    for path in save_figure(figure(records), figures_dir, figure_name(name, records)):
        print(f"wrote {path}")
    return records


def script(main) -> None:
    """Run a study's ``main()`` as a command: a TenpeftError (bad input) prints one line and exits
    2; other errors keep their traceback; runs that failed on workers (the others concluded)
    are named with their log files, exit 1."""
    try:
        main()
    except TenpeftError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    failed = failed_runs()
    if failed:
        print(f"error: {len(failed)} run(s) failed, the others finished; tracebacks in: "
              + ", ".join(log for _, log in failed), file=sys.stderr)
        raise SystemExit(1)
