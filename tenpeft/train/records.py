"""Run records on disk: one JSON file per run, written atomically (a temporary file in the same
folder, then ``os.replace``), so an interrupted study leaves every finished record whole."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import TenpeftError

SCHEMA = "tenpeft-run/1"
REQUIRED = ("schema", "study", "run_id", "config", "params", "history", "best", "score", "timings", "provenance")


def write_json_atomic(path: str | Path, data) -> Path:
    """Write ``data`` as JSON to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, allow_nan=False, default=str)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(path: str | Path) -> dict | None:
    """The record at ``path``, or None if there is none or it is not a complete record."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA or any(k not in record for k in REQUIRED):
        return None
    return record


def load_records(results_dir: str | Path, studies: list[str] | None = None) -> list[dict]:
    """Every complete record under ``results_dir`` (optionally only some studies), sorted by path."""
    root = Path(results_dir)
    if not root.is_dir():
        raise TenpeftError(f"no results folder {str(root)!r}; run a study first (python studies/rank_ablation.py)")
    records = []
    for path in sorted(root.glob("*/*.json")):
        if studies and path.parent.name not in studies:
            continue
        record = read_record(path)
        if record is not None:
            records.append(record)
    return records
