"""The one atomic file writer: readers see the old file or the new one, never a part.

A temporary file ``.<name>.<host>-<pid>.<random>.tmp`` is written in the target's folder, flushed to
disk, given the permissions a plain ``open()`` would (``0o666`` less the umask, not ``mkstemp``'s
``0o600``) and moved over the target with ``os.replace``. A writer killed midway (``kill -9``)
leaves its temporary file behind; :func:`sweep_stale` removes those whose process is gone (on
this host) or that are older than a day (another host's, on a shared folder).
"""
from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable

_TMP = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
FOREIGN_STALE_S = 86400.0


def host() -> str:
    """This machine's name as it appears in temporary and claim files."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{host()}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` (UTF-8) at ``path``, atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data, indent: int = 1) -> Path:
    """``data`` as strict JSON (no NaN/inf) at ``path``, atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False, default=str) + "\n")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of writers in ``directory`` whose process no longer runs."""
    removed = []
    folder = Path(directory)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(".*.tmp"):
        match = _TMP.match(tmp.name)
        if not match:
            continue
        mine = match["host"] == host()
        if (mine and not pid_alive(int(match["pid"]))) or (not mine and _age(tmp) > FOREIGN_STALE_S):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
