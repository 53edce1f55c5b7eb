"""Load a task's train and evaluation splits (GLUE, SuperGLUE: the Hub or a local folder; a task file: its files), validated."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from tenpeft.errors import TenpeftError
from tenpeft.lab.tasks.specs import TaskSpec, get_task
from tenpeft.lab.tasks.splits import make_splits

ENV_VAR = "TENPEFT_DATA_DIR"
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
LAYOUT = "DIR/<task>/<split>.jsonl (or .json, .csv, .parquet), like ../shared/data/glue"


@dataclass
class TaskData:
    """A task's three disjoint splits (``tenpeft.lab.tasks.splits``): ``train``, ``validation`` (choices) and
    ``test`` (reported); ``splits`` describes each (size, source, fingerprint); ``source`` is where the data is."""

    task: TaskSpec
    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset
    splits: dict
    source: str

    @property
    def test_split(self) -> str:
        """Where the reported rows came from (a split name, or the file they were carved from)."""
        return self.splits["test"]["source"]


def load_task_data(task, data_dir: str | os.PathLike | None = None, *, train_size: int | None = None,
                   validation_size: int | None = None, test_size: int | None = None,
                   data_seed: int = 0) -> TaskData:
    """Load ``task`` from ``data_dir`` (else ``$TENPEFT_DATA_DIR``, else ``datasets.load_dataset(*spec.hub_source)``)
    as three disjoint splits (``tenpeft.lab.tasks.splits.make_splits``).

    Test is the first of ``task.eval_splits`` present with labels (GLUE's private test labels skip it); validation
    is carved from train by the fixed split seed; ``train_size`` training rows are drawn by ``data_seed``,
    ``validation_size``/``test_size`` rows by the split seed (None: a tenth of train / every test row). Labels and
    text columns are validated; only the text columns, ``label`` and ``idx`` (if present) are kept. A task-file
    task reads its own files (``data_dir`` unused); without an eval file its test rows are carved from train.
    """
    spec = get_task(task)
    for name, size in (("train_size", train_size), ("validation_size", validation_size), ("test_size", test_size)):
        _check_size(name, size)
    if isinstance(data_seed, bool) or not isinstance(data_seed, (int, np.integer)):
        raise TenpeftError(f"data_seed must be an integer, not {data_seed!r}")
    sizes = {"train_size": train_size, "validation_size": validation_size, "test_size": test_size,
             "data_seed": int(data_seed)}
    if spec.file is not None:
        return _load_file_task(spec, sizes)
    from_env = data_dir is None and bool(os.environ.get(ENV_VAR))
    if from_env:
        data_dir = os.environ[ENV_VAR]
    if data_dir is None:
        splits, source = _hub_splits(spec), "hub:{}/{}".format(*spec.hub_source)
        wheres, found = {split: f"{source} split {split!r}" for split in splits}, sorted(splits)
    else:
        splits, source = _local_files(spec, Path(data_dir), from_env)
        wheres = {split: str(path) for split, path in splits.items()}
        found = sorted(p.name for p in Path(source).iterdir())
    test_split, test = _pick_test_split(spec, splits, source, found)
    train = _validate(spec, _read(splits["train"]), wheres["train"])
    test = _validate(spec, test, wheres[test_split])
    return _task_data(spec, train, test, wheres["train"], wheres[test_split], source, sizes)


def _task_data(spec: TaskSpec, train, test, train_where: str, test_where: str | None, source: str,
               sizes: dict) -> TaskData:
    parts = make_splits(train, test, spec.text_columns, task=spec.name, train_source=train_where,
                        test_source=test_where, **sizes)
    return TaskData(spec, parts.train, parts.validation, parts.test, parts.describe(spec.text_columns), source)


def _load_file_task(spec: TaskSpec, sizes: dict) -> TaskData:
    train = _file_split(spec, spec.file.train)
    test = None if spec.file.eval is None else _file_split(spec, spec.file.eval)
    return _task_data(spec, train, test, spec.file.train, spec.file.eval, spec.file.source, sizes)


def _file_split(spec: TaskSpec, path: str) -> datasets.Dataset:
    """One data file of a task-file task with its label column as ``label`` (class names as indices)."""
    ds, column = read_data_file(Path(path)), spec.file.label_column
    missing = [c for c in (*spec.text_columns, column) if c not in ds.column_names]
    if missing:
        raise TenpeftError(f"{path} lacks column(s) {missing} that task file {spec.file.source!r} names; "
                           f"columns found: {ds.column_names}; fix the file or the task file's column names")
    ds = ds.select_columns([*spec.text_columns, column])
    names = spec.file.label_names
    values = ds.with_format("arrow")[column]
    if names and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        _check_no_nulls(values, column, path)
        index = {name: i for i, name in enumerate(names)}
        unknown = [(row, v) for row, v in enumerate(values.to_pylist()) if v not in index]
        if unknown:
            row, value = unknown[0]
            raise TenpeftError(f"label {value!r} in row {row} (0-based) of {path} is not one of the task file's "
                               f"labels {list(names)}; fix the label or add the class")
        ds = ds.map(lambda batch: {"label": [index[v] for v in batch[column]]}, batched=True,
                    remove_columns=[column], features=_with_int_label(ds.features, column))
    elif column != "label":
        ds = ds.rename_column(column, "label")
    return _validate(spec, ds, path)


def _with_int_label(features: datasets.Features, column: str) -> datasets.Features:
    out = datasets.Features({k: v for k, v in features.items() if k != column})
    out["label"] = datasets.Value("int64")
    return out


def _check_size(name: str, size) -> None:
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise TenpeftError(f"{name} must be a positive integer or None (all rows), not {size!r}")


def _hub_splits(spec: TaskSpec) -> dict[str, datasets.Dataset]:
    hub, config = spec.hub_source
    try:
        return dict(datasets.load_dataset(hub, config))
    except Exception as err:  # network, auth and hub errors all mean: use local data instead
        raise TenpeftError(
            f"could not load {hub}/{config} ({spec.name!r}) from the Hugging Face Hub ({type(err).__name__}: {err}); "
            f"without network access pass --data-dir DIR or set {ENV_VAR}=DIR, laid out as {LAYOUT}") from err


def _local_files(spec: TaskSpec, data_dir: Path, from_env: bool) -> tuple[dict[str, Path], str]:
    if not data_dir.is_dir():
        origin = f" (from {ENV_VAR})" if from_env else ""
        raise TenpeftError(f"data directory {str(data_dir)!r}{origin} does not exist or is not a directory; "
                           f"pass --data-dir / {ENV_VAR} pointing to a folder laid out as {LAYOUT}")
    task_dir = data_dir / spec.name
    if not task_dir.is_dir():
        found = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
        hint = ""
        if any((data_dir / f"train{ext}").exists() for ext in BUILDERS):
            hint = f" ({str(data_dir)!r} looks like a task folder itself: pass its parent)"
        raise TenpeftError(f"no folder for task {spec.name!r} in data directory {str(data_dir)!r}{hint}; "
                           f"task folders found: {found}; expected layout {LAYOUT}")
    files: dict[str, Path] = {}
    for path in sorted(task_dir.iterdir()):
        if path.is_file() and path.suffix.lower() in BUILDERS:
            if path.stem in files:
                raise TenpeftError(f"two files for split {path.stem!r} in {str(task_dir)!r}: "
                                   f"{files[path.stem].name} and {path.name}; keep one")
            files[path.stem] = path
    return files, str(task_dir)


def _read(split) -> datasets.Dataset:
    return read_data_file(split) if isinstance(split, Path) else split


def _labelled(spec: TaskSpec, rows: datasets.Dataset) -> bool:
    """Whether a held-out split has labels to score (GLUE's and SuperGLUE's test splits mark them -1 or empty)."""
    if spec.answers:
        column = spec.answers[1]  # a missing column is the validation's error to name
        return column not in rows.column_names or any(rows[column])
    return "label" not in rows.column_names or any(v != -1 for v in rows["label"])


def _pick_test_split(spec: TaskSpec, splits: dict, source: str, found: list[str]) -> tuple[str, datasets.Dataset]:
    """``(name, rows)`` of the reported split: the first of ``spec.eval_splits`` present and labelled."""
    if "train" not in splits:
        raise TenpeftError(f"no train split for {spec.name!r} in {source}: expected train.jsonl "
                           f"(or .json, .csv, .parquet); found {found}")
    for split in spec.eval_splits:
        if split in splits and _labelled(spec, rows := _read(splits[split])):
            return split, rows
    raise TenpeftError(f"no labelled test split for {spec.name!r} in {source}: looked for "
                       f"{', '.join(spec.eval_splits)} (in that order; labels all -1 mark an unlabelled split); "
                       f"found {found}")


def _check_text_file(path: Path) -> None:
    """An empty file or bytes that are not UTF-8 are errors naming the file and line (datasets
    would fail obscurely on the first and silently replace the second)."""
    data = path.read_bytes()
    if not data.strip():
        raise TenpeftError(f"{str(path)!r} is empty; put the split's labelled examples in it or remove the file")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise TenpeftError(f"{str(path)!r} line {line} (byte {err.start}) is not UTF-8 text; save the file as UTF-8 "
                           f"(e.g. iconv -f latin1 -t utf-8)") from None


def read_split(path: Path, what: str) -> tuple[datasets.Dataset, str]:
    """``(rows, where)`` of data file ``path`` (:func:`read_data_file`), the one reader of every task kind's
    local files; a TenpeftError ``no PATH: what`` (what the task reads) if there is no such file."""
    if not path.is_file():
        raise TenpeftError(f"no {path}: {what}")
    if path.suffix.lower() not in BUILDERS:
        raise TenpeftError(f"{path} is not one of {', '.join(BUILDERS)}; save it as JSON Lines (.jsonl)")
    return read_data_file(path), str(path)


def read_data_file(path: Path) -> datasets.Dataset:
    """The rows of a .jsonl, .json, .csv or .parquet file; an empty or non-UTF-8 text file, or one its
    parser refuses, is a TenpeftError naming the file."""
    if path.suffix.lower() != ".parquet":
        _check_text_file(path)
    try:
        return datasets.load_dataset(BUILDERS[path.suffix.lower()], data_files={"train": str(path)}, split="train")
    except Exception as err:  # malformed files surface as assorted datasets/pyarrow errors
        cause = err.__cause__ or err  # DatasetGenerationError wraps the parser's message
        raise TenpeftError(f"could not read {str(path)!r} ({type(cause).__name__}: {cause}); "
                           f"fix or replace the file") from err


def _validate(spec: TaskSpec, ds: datasets.Dataset, where: str) -> datasets.Dataset:
    if spec.answers:
        ds = _answers_as_label(spec, ds, where)
    needed = [*spec.text_columns, "label"]
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise TenpeftError(f"{where} lacks column(s) {missing} that task {spec.name!r} needs "
                           f"({', '.join(needed)}); columns found: {ds.column_names}")
    if len(ds) == 0:
        raise TenpeftError(f"{where} has no rows; give it labelled examples")
    for col in spec.text_columns:
        values = ds.with_format("arrow")[col]
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise TenpeftError(f"column {col!r} of {where} holds {values.type}, not text; store it as strings")
        _check_no_nulls(values, col, where)
    labels = ds.with_format("arrow")["label"]
    _check_no_nulls(labels, "label", where)
    if not spec.answers:  # a derived label is a candidate index by construction
        _check_labels(spec, labels, where)
    kept = spec.answers or (["idx"] if "idx" in ds.column_names else [])
    ds = ds.select_columns([*spec.text_columns, "label", *kept])
    dtype = "float32" if spec.is_regression else "int64"
    if labels.type != pa.type_for_alias(dtype):  # ClassLabel (hub) is int64 underneath and stays as is
        ds = ds.cast_column("label", datasets.Value(dtype))
    return ds


def _answers_as_label(spec: TaskSpec, ds: datasets.Dataset, where: str) -> datasets.Dataset:
    """A per-row-candidates task (ReCoRD) with ``label``: the index of its first correct answer among the
    row's candidates, the training target of MeZO's ``--train_as_classification``."""
    candidates, answers = spec.answers
    missing = [c for c in (*spec.text_columns, candidates, answers) if c not in ds.column_names]
    if missing:
        raise TenpeftError(f"{where} lacks column(s) {missing} that task {spec.name!r} needs "
                           f"({', '.join((*spec.text_columns, candidates, answers))}); columns found: {ds.column_names}")
    labels = []
    for row, (options, gold) in enumerate(zip(ds[candidates], ds[answers])):
        for col, values in ((candidates, options), (answers, gold)):
            if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
                raise TenpeftError(f"column {col!r} of {where} in row {row} (0-based) is {values!r}; expected a "
                                   f"non-empty list of strings; fix the row or drop it")
        absent = [g for g in gold if g not in options]
        if absent:
            raise TenpeftError(f"row {row} (0-based) of {where}: answer {absent[0]!r} is not among its {candidates} "
                               f"{options}; every correct answer must be a candidate; fix the row or drop it")
        labels.append(options.index(gold[0]))
    return ds.remove_columns([c for c in ("label",) if c in ds.column_names]).add_column("label", labels)


def _check_no_nulls(values, col: str, where: str) -> None:
    if values.null_count:
        row = int(np.flatnonzero(np.asarray(values.is_null()))[0])
        raise TenpeftError(f"column {col!r} of {where} is empty in row {row} (0-based); "
                           f"fill it or drop the row")


def _check_labels(spec: TaskSpec, labels, where: str) -> None:
    if not (pa.types.is_integer(labels.type) or pa.types.is_floating(labels.type)):
        raise TenpeftError(f"column 'label' of {where} holds {labels.type}; expected "
                           f"{'numbers' if spec.is_regression else 'integer class indices'}; convert the labels")
    values = labels.to_numpy()
    if spec.is_regression:
        bad = ~np.isfinite(values)
        expected = "finite similarity scores (0 to 5)"
    else:
        bad = (values < 0) | (values >= spec.num_labels) | (values != np.round(values))
        expected = f"integer class indices 0..{spec.num_labels - 1}"
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = values[row].item()
        hint = " (GLUE test splits are unlabelled, marked -1)" if value == -1 else ""
        raise TenpeftError(f"label {value!r} in row {row} (0-based) of {where} is not valid for "
                           f"{spec.name!r}: expected {expected}{hint}; fix the label or drop the row")
