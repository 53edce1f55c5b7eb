"""Run records on disk: one JSON file per run (schema ``tenpeft-run/3``), written atomically, so
an interrupted study leaves every finished record whole.

A record's ``score`` is ``{metric, value, validation}`` and, optionally, ``higher_is_better`` (absent: true;
false for a loss such as instruction tuning's completion cross-entropy): ``value`` on the test split, never
used for a choice, ``validation`` at the checkpoint chosen on the validation split (``tenpeft.lab.tasks.splits``);
``splits`` gives each task's splits (size, source, fingerprint) and ``predictions`` the test predictions
(``{"pred", "gold"}`` per example, for paired tests over examples). Schema 2 records (before the three
splits) chose and reported on one split; they are read, and summaries say so (``old_protocol_note``).
A record's ``status`` is ``"ok"`` or ``"diverged"`` (a non-finite training loss: ``score.value`` and
``best`` are null, ``diverged`` says where). Schema 1 records (no ``status``) read as ``ok``.
A damaged file is reported by name and its run trained again; a record of a newer schema is an
error, never overwritten.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from tenpeft.atomic import atomic_write_json, sweep_stale
from tenpeft.errors import TenpeftError
from tenpeft.lab.provenance import provenance
from tenpeft.schema import Omittable, kind, schema_error

SCHEMA = "tenpeft-run/3"
READABLE = ("tenpeft-run/1", "tenpeft-run/2", SCHEMA)
STATUSES = ("ok", "diverged")
REQUIRED = ("schema", "study", "run_id", "config", "params", "history", "best", "score", "timings", "provenance")
REQUIRED_CONFIG = ("model", "task", "method", "seed")


def make_record(spec, accelerator, *, params: dict, history: list[dict], best: dict | None, score: dict,
                splits: dict, timings: dict, diverged: dict | None = None, stages: list[dict] | None = None,
                **extra) -> dict:
    """The record of a finished run of ``spec`` (every runner's, one shape): its config and id, parameter
    counts, the validation history and the best entry chosen on it, the score (``{metric, value, validation[,
    higher_is_better]}``: ``value`` on the test split), each task's splits (``{split: {size, source,
    fingerprint}}``), a chain's stages, what the runner adds (``extra``), timings and provenance."""
    return {"schema": SCHEMA, "study": spec.study, "run_id": spec.run_id, "status": "diverged" if diverged else "ok",
            "diverged": diverged, "config": spec.config(), "params": params, "history": history, "best": best,
            "score": score, "splits": splits, "stages": stages, **extra, "timings": timings,
            "provenance": provenance(accelerator)}


def make_score(metric: str, best: dict | None, test: dict | None, higher_is_better: bool | None = None) -> dict:
    """A record's ``score`` for ``metric``: ``value`` from the ``test`` split's metrics, ``validation`` from the
    ``best`` history entry (the checkpoint chosen on validation); both None after a divergence (``best``
    None). ``higher_is_better`` is written when given."""
    score = {"metric": metric, "value": None if best is None or test is None else test[metric],
             "validation": None if best is None else best["metrics"][metric]}
    return score if higher_is_better is None else {**score, "higher_is_better": higher_is_better}


def write_record(path: str | Path, record: dict) -> Path:
    """Write ``record`` to ``path`` atomically (after checking it), sweeping dead writers' temporaries."""
    check_record(record, str(path))
    sweep_stale(Path(path).parent)
    return atomic_write_json(path, record)


def old_protocol_note(records) -> str | None:
    """A note naming how many ``records`` predate the three splits (no ``splits``: their checkpoint and rate
    were chosen on the split they report), or None."""
    old = sum("splits" not in r for r in records)
    if not old:
        return None
    return (f"note: {old} of {len(records)} record(s) predate the three splits (schema tenpeft-run/2 or older): "
            f"their checkpoint and rate were chosen on the split they report; rerun them to compare on test")


def status(record: dict) -> str:
    return record.get("status", "ok")


_SHAPE = {  # each field's type (tenpeft.schema); _field_problems adds the rules that join fields
    "config": {"method_args": Omittable((dict, None)), "axes": Omittable((dict, None))},
    "score": {"metric": str, "value": (float, None), "validation": Omittable((float, None)),
              "higher_is_better": Omittable(bool)},
    "params": {"trainable": float}, "history": list, "timings": dict, "provenance": dict,
}


def check_record(record, where: str, consequence: str = "that run counts as not done") -> None:
    """Raise a TenpeftError naming ``where`` and the field unless ``record`` is a readable run record; a
    damaged one's message ends with ``consequence``."""
    if not isinstance(record, dict):
        raise TenpeftError(f"{where} holds {kind(record)}, not a run record")
    schema = record.get("schema")
    if _newer_schema(record):
        raise TenpeftError(f"{where} was written by a newer tenpeft (record schema {schema!r}; this one reads "
                           f"{list(READABLE)}): upgrade tenpeft or use another --results-dir; nothing was overwritten")
    if schema not in READABLE:
        raise TenpeftError(f"{where} has schema {schema!r}, not a tenpeft run record")
    missing = [k for k in REQUIRED if k not in record]
    bad = [f"missing {missing}"] if missing else _field_problems(record)
    if bad:
        raise TenpeftError(f"{where} is a damaged run record ({'; '.join(bad)}); {consequence}")


def _field_problems(record: dict) -> list[str]:
    shape = schema_error(record, _SHAPE)
    bad = [shape] if shape else []
    config, score = record["config"], record["score"]
    if isinstance(config, dict):
        bad += [f"config.{k} missing" for k in REQUIRED_CONFIG if config.get(k) is None]
    if status(record) not in STATUSES:
        bad.append(f"status {record.get('status')!r} not one of {list(STATUSES)}")
    elif isinstance(score, dict) and "value" in score and score["value"] is None and status(record) != "diverged":
        bad.append("score.value is null, yet the status is 'ok' (only a diverged run has no score)")
    return bad


class DamagedRecord(UserWarning):
    """A file where a run record should be that is not one; the run counts as not done."""


def read_record(path: str | Path) -> dict | None:
    """The record at ``path``; None if there is no file, or (with a :class:`DamagedRecord` warning
    naming the file and the problem) if it is damaged, so the run is trained again. A record of a
    newer schema raises a TenpeftError: it is never overwritten."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        check_record(record, str(path))
    except FileNotFoundError:
        return None
    except TenpeftError as err:
        if _newer_schema(record):
            raise
        warnings.warn(f"{err}", DamagedRecord, stacklevel=2)
        return None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        warnings.warn(f"{path} is not a readable run record ({type(err).__name__}: {err}); "
                      f"that run counts as not done", DamagedRecord, stacklevel=2)
        return None
    return record


def _newer_schema(record) -> bool:
    schema = record.get("schema") if isinstance(record, dict) else None
    return isinstance(schema, str) and schema.startswith("tenpeft-run/") and schema not in READABLE


def refuse_newer(paths) -> None:
    """Raise a TenpeftError if any existing file of ``paths`` is a record of a newer schema (checked
    before a study trains anything, so no run is wasted on a folder that cannot be written)."""
    for path in paths:
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if _newer_schema(record):
            check_record(record, str(path))


def load_records(results_dir: str | Path, studies: list[str] | None = None) -> list[dict]:
    """Every readable record under ``results_dir`` (optionally only some studies), sorted by path;
    damaged files are skipped with a warning naming them."""
    root = Path(results_dir)
    if not root.is_dir():
        raise TenpeftError(f"no results folder {str(root)!r}; run a study first (python studies/rank_ablation.py)")
    paths = [p for p in sorted(root.glob("*/*.json")) if not studies or p.parent.name in studies]
    return [r for r in map(read_record, paths) if r is not None]
