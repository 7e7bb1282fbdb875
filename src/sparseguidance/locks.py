"""One job per output: a lock file that names its holder, released even by a killed process.

`hold(folder)` creates `folder/.lock`, takes an exclusive `flock` on it and writes the holder (pid, host,
start time, command). The kernel drops a flock when its process dies, so a lock is free again after a
kill -9; the file it leaves names the dead holder, and the next job takes it over with a warning. A second
job while the first runs gets a LockedError naming the first.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sparseguidance.errors import ConfigError, SparseGuidanceError

LOCK_NAME = ".lock"


class LockedError(SparseGuidanceError):
    """Another job holds the output this one would write."""


def holder_record() -> dict[str, Any]:
    """Who this process is: pid, host, start time, command line."""
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": " ".join(sys.argv)}


def describe(holder: dict[str, Any]) -> str:
    """`pid 123 on host-a since 2026-01-01 10:00:00 UTC` (or what is known of it)."""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"


def read_holder(fd: int) -> dict[str, Any]:
    """The holder record in an open lock file ({} when empty or unreadable)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        record = json.loads(os.read(fd, 65536).decode() or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def open_locked(path: Path, what: str) -> int:
    """A descriptor of `path` with an exclusive flock on it, or LockedError naming the live holder."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"{what} is in use by another job ({describe(holder)}): wait for it to end, or choose another output"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file that its holder unlinked while we waited for the flock
            return fd
        os.close(fd)


@contextmanager
def hold(folder: str | Path, what: str | None = None) -> Iterator[Path]:
    """Hold the lock of `folder` (created if needed) for the duration; `what` names it in the errors."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = open_locked(path, what or str(folder))
    except OSError as e:
        raise ConfigError(f"cannot lock {what or folder}: {e.strerror or e} ({e.filename or path})") from None
    try:
        stale = read_holder(fd)
        if stale:  # its holder died without releasing (kill -9, power loss): the flock went with it
            warnings.warn(
                f"taking over the stale lock of {what or folder} ({describe(stale)})", RuntimeWarning, stacklevel=3
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_record()).encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)  # (someone may have deleted it by hand)
        os.close(fd)
        for directory in created:  # leave no empty folders behind a job that failed before writing anything
            try:
                directory.rmdir()
            except OSError:
                break
