"""The claim processes hold on a database: a `flock` on `<db>.lock`.

The OS releases it when the process ends, however it ends (SIGKILL included), so there
is no stale lock to clean up. A server alone on its database holds it exclusively; the
nodes of a cluster (`--redis`) share it, so a lone server and a cluster never write one
file together. Each holder writes one line about itself (where it listens) into the file;
a CLI command that finds the lock taken sends its request to a live holder's address
instead of touching the database under running servers (whose rooms would not hear of the
change).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from collab.errors import DatabaseInUse


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class DatabaseLock:
    """Held from `acquire` to `release`."""

    def __init__(self, path: Path, fd: int, shared: bool = False) -> None:
        self.path = path
        self._fd: int | None = fd
        self._shared = shared

    @classmethod
    def acquire(cls, db: Path, *, shared: bool = False, **about: Any) -> DatabaseLock:
        """Take the lock of `db` and record `about` (e.g. url=...) in it; `shared` for a
        cluster node, which other nodes (but no lone server) may hold with it.

        Raises:
            DatabaseInUse: another process holds it; the message says which.
        """
        path = lock_path(db)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # First alone, which tells that the lines left in the file are of processes
            # gone (they are cleared); a node then lowers its claim to a shared one.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not (shared and _share(fd)):
                found = _live(_read(fd))
                os.close(fd)
                raise _in_use(db, found, shared) from None
        else:
            os.ftruncate(fd, 0)
            if shared:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        lock = cls(path, fd, shared)
        lock.publish(pid=os.getpid(), **about)
        return lock

    def publish(self, **about: Any) -> None:
        """Add a line about this holder to the lock file (the newest line of a process
        is what it says about itself)."""
        if self._fd is None:
            raise RuntimeError("lock released")
        line = json.dumps({**about, "shared": self._shared} if self._shared else about)
        # One write of one line in append mode: several nodes never interleave.
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line + "\n")

    def release(self) -> None:
        if self._fd is not None:
            if not self._shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _share(fd: int) -> bool:
    """Take a shared claim; False if a lone server holds the lock. A node starting at the
    same moment holds it alone for the instant it clears the file, so a few tries are
    made."""
    for attempt in range(20):
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < 19:
                time.sleep(0.05)
    return False


def _in_use(db: Path, found: list[dict[str, Any]], shared: bool) -> DatabaseInUse:
    holder = found[-1] if found else {}
    kind = "a cluster of" if len(found) > 1 or holder.get("shared") else "process"
    return DatabaseInUse(
        f"{db} is in use by collab {kind} {holder.get('pid', '?')}"
        + (f" serving {holder['url']}" if "url" in holder else "")
        + ("" if shared or not holder.get("shared") else " (a cluster: pass --redis)")
    )


def holder(db: Path) -> dict[str, Any] | None:
    """What a process holding the lock of `db` (the newest that said where it listens)
    says about itself; None if nobody holds it."""
    path = lock_path(db)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            found = _live(_read(fd))
            with_url = [entry for entry in found if "url" in entry]
            return (with_url or found or [{}])[-1]
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> list[dict[str, Any]]:
    """The lines of the lock file; of each process, its newest one."""
    newest: dict[Any, dict[str, Any]] = {}
    for line in os.pread(fd, 1 << 20, 0).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            newest.pop(entry.get("pid"), None)
            newest[entry.get("pid")] = entry
    return list(newest.values())


def _live(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of processes still running (a killed node leaves its line)."""
    alive = []
    for entry in entries:
        pid = entry.get("pid")
        if isinstance(pid, int):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
        alive.append(entry)
    return alive
