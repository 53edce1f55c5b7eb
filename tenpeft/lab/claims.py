"""Claims on runs, so that processes (or machines) sharing one results folder split a study's
runs and never train one twice.

A claim is an exclusive ``flock`` on ``<results>/<study>/<run_id>.claim``, a file holding the
owner's host and pid. The operating system drops the lock when its owner exits in any way
(``kill -9`` included), so a claim whose owner is gone is stale and the next process takes it
over. The owner writes the run's record *before* it deletes the claim file; whoever gets a claim
checks for the record again before training. Together these mean a run is trained at most once:
two processes can only both hold a lock on a file if one of them locked a file already deleted,
and a claim file is deleted only after its record exists.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from tenpeft.atomic import host


class Claim:
    """A held claim on one run; :meth:`done` after the record is written, :meth:`release` otherwise."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def done(self) -> None:
        """The record is on disk: delete the claim file, then let go."""
        self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        """Let go without a record (the run failed or was interrupted): the next process may train it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def claim_path(record_path: Path) -> Path:
    return record_path.with_suffix(".claim")


def try_claim(record_path: Path) -> Claim | None:
    """Claim the run whose record goes to ``record_path``; None if a live process holds it."""
    path = claim_path(record_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    owner = json.dumps({"host": host(), "pid": os.getpid(), "since": time.time()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, owner, 0)
    return Claim(path, fd)


def owner(record_path: Path) -> str:
    """Who holds the claim, as ``pid P on host H`` (for progress messages)."""
    try:
        data = json.loads(claim_path(record_path).read_text() or "{}")
        return f"pid {data.get('pid')} on host {data.get('host')}"
    except (OSError, ValueError, AttributeError):
        return "another process"
