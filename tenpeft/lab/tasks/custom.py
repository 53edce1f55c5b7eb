"""Your own task, described in a small JSON or TOML file, usable by every study as ``--tasks FILE``.

A task file names its data files (paths relative to the task file), its columns, its kind and its
metrics; nothing else is needed, no Python::

    {"name": "reviews", "kind": "classification",
     "train": "reviews/train.csv", "eval": "reviews/dev.csv",
     "text_columns": ["review"], "label_column": "stars", "labels": ["bad", "good"],
     "metrics": ["accuracy", "f1"],
     "prompt": "{review}\\nWas the review good? Yes or No?\\n", "label_words": [" No", " Yes"]}

* ``kind``: ``classification`` (integer class indices, or the class names of ``labels``),
  ``regression`` (numbers) or ``lm`` (causal-LM loss on the replies, through the instruction path:
  ``columns`` maps ``instruction`` / ``input`` / ``output`` or ``messages`` to the file's columns).
* ``eval``: optional; without it the held-out rows are carved from ``train`` by ``data_seed``.
* ``prompt`` and ``label_words``: how a decoder scores a classification task (label-word scoring, as
  for GLUE); encoders ignore them.

A study stores the task as the file's real path and hashes the file's parsed definition into the run
id, so an edited task file never reuses a record made under the old definition.
"""
from __future__ import annotations

import functools
import json
import os
import tomllib
from pathlib import Path

from tenpeft.errors import TenpeftError
from tenpeft.lab.tasks.kinds import KINDS as TASK_KINDS, TaskKind
from tenpeft.lab.tasks.specs import TaskFile, TaskSpec
from tenpeft.schema import kind as json_kind

SUFFIXES = (".json", ".toml")
KINDS = ("classification", "regression", "lm")
ROLES = ("instruction", "input", "output", "messages")  # the instruction path's standard columns
COMMON = ("name", "kind", "train", "eval", "description")
ALLOWED = {"classification": COMMON + ("text_columns", "label_column", "labels", "num_labels", "metrics", "prompt",
                                       "label_words"),
           "regression": COMMON + ("text_columns", "label_column", "metrics"),
           "lm": COMMON + ("columns",)}
CLASS_METRICS, REGRESSION_METRICS = ("accuracy", "f1", "matthews"), ("spearman", "pearson")


FILE_KINDS = {"classification": "classification", "regression": "classification", "lm": "instruction"}


class TaskFileKind(TaskKind, name="task_file"):
    """A user's task file (a ``.json`` or ``.toml`` path): bound to the kind its ``kind`` field names
    (:data:`FILE_KINDS`), stored as its real path, labelled by its declared name, and identified by its
    parsed definition (an edited file is a new run)."""

    @classmethod
    def owns(cls, ref: str) -> bool:
        return ref.lower().endswith(SUFFIXES)

    @classmethod
    def bind(cls, ref: str) -> TaskKind:
        path = task_ref(ref)
        spec = load_task_file(path)
        kind = TASK_KINDS[FILE_KINDS[spec.file.kind]]
        return kind(path, label=spec.name, identity=definition(path), task=spec)


def task_ref(name: str) -> str:
    """A task file argument as a study stores it: its real path (so one file has one id however it is
    spelled). A missing task file is a TenpeftError."""
    path = Path(os.path.expanduser(name))
    if not path.is_file():
        raise TenpeftError(f"no task file {name!r}; a task ending in {' or '.join(SUFFIXES)} is read as a task file "
                           f"(see tenpeft.lab.tasks.custom for its fields)")
    return os.path.realpath(path)


def record_task_label(config: dict) -> str:
    """A record's task for tables and figures, each task file by its declared name, read from the
    record's own ``task_files`` (the file need not exist where the records are plotted)."""
    files = config.get("task_files") or {}
    return ">".join(files[t]["name"] if t in files else t for t in str(config["task"]).split(">"))


def definition(name: str) -> dict:
    """The parsed, checked definition of task file ``name`` (what a run id hashes)."""
    return _cached(os.path.realpath(name), os.stat(name).st_mtime_ns)[1]


def load_task_file(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of a task file, checked: fields, kind, columns, labels, metrics, files."""
    path = task_ref(name)
    return _cached(path, os.stat(path).st_mtime_ns)[0]


@functools.lru_cache(maxsize=64)
def _cached(path: str, mtime_ns: int) -> tuple[TaskSpec, dict]:
    raw = _parse(Path(path))
    spec = _spec(raw, Path(path))
    return spec, raw


def _parse(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise TenpeftError(f"task file {str(path)!r} is not valid {path.suffix[1:].upper()}: {err}") from None
    if not isinstance(raw, dict):
        raise TenpeftError(f"task file {str(path)!r} must hold one object of fields, not {json_kind(raw)}")
    return raw


def _spec(raw: dict, path: Path) -> TaskSpec:
    where = f"task file {str(path)!r}"
    kind = raw.get("kind")
    if kind not in KINDS:
        raise TenpeftError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    unknown = sorted(set(raw) - set(ALLOWED[kind]))
    if unknown:
        raise TenpeftError(f"{where}: unknown field(s) {unknown} for kind {kind!r}; its fields: "
                           f"{', '.join(ALLOWED[kind])}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "/>,"):
        raise TenpeftError(f"{where}: 'name' must be a short non-empty name without '/', '>' or ',', not {name!r}")
    files = {"train": _data_file(raw, "train", path, where, required=True),
             "eval": _data_file(raw, "eval", path, where, required=False)}
    if kind == "lm":
        return TaskSpec(name, (), 0, ("completion_ce", "perplexity"), (),
                        TaskFile(str(path), kind, files["train"], files["eval"], columns=_columns(raw, where)))
    text_columns = _strings(raw.get("text_columns"), "text_columns", where, max_items=2)
    label_column = raw.get("label_column", "label")
    if not isinstance(label_column, str) or not label_column:
        raise TenpeftError(f"{where}: 'label_column' must be a column name, not {label_column!r}")
    if kind == "regression":
        metrics = _metrics(raw, REGRESSION_METRICS, REGRESSION_METRICS, where)
        return TaskSpec(name, text_columns, 1, metrics, (),
                        TaskFile(str(path), kind, files["train"], files["eval"], label_column))
    names, num_labels = _classes(raw, where)
    metrics = _metrics(raw, ("accuracy",), CLASS_METRICS, where)
    if "f1" in metrics and num_labels != 2:
        raise TenpeftError(f"{where}: metric 'f1' is binary (class 1 positive) but the task has {num_labels} classes; "
                           f"use accuracy or matthews")
    prompt = _prompt(raw, text_columns, num_labels, where)
    return TaskSpec(name, text_columns, num_labels, metrics, (),
                    TaskFile(str(path), kind, files["train"], files["eval"], label_column, names, *prompt))


def _data_file(raw: dict, key: str, path: Path, where: str, *, required: bool) -> str | None:
    from tenpeft.lab.tasks.data import BUILDERS

    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise TenpeftError(f"{where}: '{key}' must be the path of a data file (relative to the task file), "
                           f"not {value!r}")
    file = (path.parent / os.path.expanduser(value)).resolve()
    if file.suffix.lower() not in BUILDERS:
        raise TenpeftError(f"{where}: '{key}' file {value!r} is not one of {', '.join(BUILDERS)}")
    if not file.is_file():
        raise TenpeftError(f"{where}: '{key}' file {str(file)!r} does not exist (paths are relative to the task file)")
    return str(file)


def _strings(value, key: str, where: str, max_items: int | None = None) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value)
            or len(set(value)) != len(value)):
        raise TenpeftError(f"{where}: '{key}' must be a list of distinct non-empty strings, not {value!r}")
    if max_items and len(value) > max_items:
        raise TenpeftError(f"{where}: '{key}' has {len(value)} entries; a task reads one text or a pair of texts")
    return tuple(value)


def _classes(raw: dict, where: str) -> tuple[tuple[str, ...] | None, int]:
    names = _strings(raw["labels"], "labels", where) if "labels" in raw else None
    count = raw.get("num_labels", len(names) if names else None)
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise TenpeftError(f"{where}: a classification task needs 'labels' (the class names) or 'num_labels' "
                           f"(2 or more), got {count!r}")
    if names and count != len(names):
        raise TenpeftError(f"{where}: 'num_labels' {count} disagrees with the {len(names)} 'labels'; drop one")
    return names, count


def _metrics(raw: dict, default: tuple[str, ...], allowed: tuple[str, ...], where: str) -> tuple[str, ...]:
    metrics = _strings(raw["metrics"], "metrics", where) if "metrics" in raw else default
    bad = [m for m in metrics if m not in allowed]
    if bad:
        raise TenpeftError(f"{where}: metric(s) {bad} do not apply; this kind takes {', '.join(allowed)} "
                           f"(the first is the headline)")
    return metrics


def _prompt(raw: dict, text_columns, num_labels: int, where: str) -> tuple[str | None, tuple[str, ...] | None]:
    if ("prompt" in raw) != ("label_words" in raw):
        raise TenpeftError(f"{where}: 'prompt' and 'label_words' go together (a decoder scores one label word per "
                           f"class after the prompt); give both or neither")
    if "prompt" not in raw:
        return None, None
    from tenpeft.lab.tasks.prompts import PromptTemplate

    template, words = raw["prompt"], _strings(raw["label_words"], "label_words", where)
    if not isinstance(template, str):
        raise TenpeftError(f"{where}: 'prompt' must be a str.format template, not {template!r}")
    if len(words) != num_labels:
        raise TenpeftError(f"{where}: {len(words)} 'label_words' for {num_labels} classes; give one per class")
    try:
        columns = PromptTemplate(template, words).columns
    except ValueError as err:
        raise TenpeftError(f"{where}: 'prompt' is not a valid template ({err}); write columns as {{column}}") from None
    if set(columns) != set(text_columns):
        raise TenpeftError(f"{where}: 'prompt' reads columns {sorted(columns)} but 'text_columns' are "
                           f"{list(text_columns)}; the template must read exactly the text columns")
    return template, words


def _columns(raw: dict, where: str) -> tuple[tuple[str, str], ...]:
    columns = raw.get("columns", {})
    if not isinstance(columns, dict) or not all(isinstance(v, str) and v for v in columns.values()):
        raise TenpeftError(f"{where}: 'columns' maps {', '.join(ROLES)} to the file's column names, not {columns!r}")
    unknown = sorted(set(columns) - set(ROLES))
    if unknown:
        raise TenpeftError(f"{where}: 'columns' has unknown role(s) {unknown}; roles: {', '.join(ROLES)}")
    if "messages" in columns and set(columns) - {"messages"}:
        raise TenpeftError(f"{where}: 'columns' maps either 'messages' or instruction/input/output, not both")
    return tuple(sorted(columns.items()))
