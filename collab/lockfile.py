"""The claim one process holds on a database: an exclusive `flock` on `<db>.lock`.

The OS releases it when the process ends, however it ends (SIGKILL included), so there
is no stale lock to clean up. A server writes where it listens into the file; a CLI
command that finds the lock taken sends its request to that address instead of touching
the database under a running server (whose next snapshot would not know of the change).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from collab.errors import DatabaseInUse


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class DatabaseLock:
    """Held from `acquire` to `release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, db: Path, **about: Any) -> DatabaseLock:
        """Take the lock of `db` and record `about` (e.g. url=...) in it.

        Raises:
            DatabaseInUse: another process holds it; the message says which.
        """
        path = lock_path(db)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise DatabaseInUse(
                f"{db} is in use by collab process {holder.get('pid', '?')}"
                + (f" serving {holder['url']}" if "url" in holder else "")
            ) from None
        lock = cls(path, fd)
        lock.publish(pid=os.getpid(), **about)
        return lock

    def publish(self, **about: Any) -> None:
        """Replace what the lock file says about its holder."""
        if self._fd is None:
            raise RuntimeError("lock released")
        data = json.dumps(about).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def holder(db: Path) -> dict[str, Any] | None:
    """What the process holding the lock of `db` says about itself; None if nobody does."""
    path = lock_path(db)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> dict[str, Any]:
    try:
        found = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
