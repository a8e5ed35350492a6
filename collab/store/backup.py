"""The online backup of a SQLite database: one consistent copy, taken while servers commit,
by SQLite's backup API (never a file copy: a live WAL database is the file and its WAL).

It only reads: the source is opened read-only and none of lockfile.py's locks is taken,
so it runs beside a server or without one. The copy is written beside DEST and renamed
into place only once it is whole, checked and on disk, so DEST is never half a database.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collab.errors import Conflict, DatabaseInUse, StoreError
from collab.lockfile import holder

Progress = Callable[[int, int], None]  # pages copied, pages in all

# Pages a step copies: about 4 MiB (measured: a 100 MB database takes 25 steps and 0.23 s
# here), so a large database reports progress often and the callback costs nothing.
_STEP_BYTES = 4 * 1024 * 1024

# The files SQLite keeps beside a database. A stale one beside a new copy would be taken
# for its own (a WAL is replayed into whatever database carries its name).
_SIDECARS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True, slots=True)
class Backup:
    """What a finished backup wrote."""

    dest: Path
    pages: int
    page_size: int
    docs: int
    seconds: float
    restarts: int  # times SQLite began the copy anew; 0 while the snapshot holds

    @property
    def size(self) -> int:
        return self.pages * self.page_size


def back_up(
    source: Path, dest: Path, *, force: bool = False, progress: Progress | None = None
) -> Backup:
    """Copy the collab database at `source` to `dest`, as it was when the copy began.

    Args:
        force: replace `dest` (and files SQLite left beside it) if it exists.
        progress: called after every step with (pages copied, pages in all).

    Raises:
        StoreError: no collab database at `source`; the copy cannot be written or fails
            its integrity check.
        Conflict: `dest` exists (without `force`), or is `source` itself.
        DatabaseInUse: a server holds `dest` (it cannot be replaced under it).
    """
    if not source.exists():
        raise StoreError(f"there is no database at {source}")
    _check_dest(source, dest, force)
    started = time.monotonic()
    try:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    except OSError as exc:
        raise StoreError(f"cannot write beside {dest}: {exc}") from exc
    partial = Path(name)
    try:
        try:
            # The copy holds what the database holds: the same readers (not mkstemp's 0600).
            os.fchmod(fd, source.stat().st_mode & 0o777)
        finally:
            os.close(fd)
        pages, page_size, restarts = _copy(source, partial, progress)
        docs = _finish(partial)
        _place(partial, dest, force)
    except OSError as exc:
        _discard(partial)
        raise StoreError(f"cannot write {dest}: {exc}") from exc
    except BaseException:
        _discard(partial)
        raise
    return Backup(dest, pages, page_size, docs, time.monotonic() - started, restarts)


def _discard(partial: Path) -> None:
    for path in (partial, *_sidecars(partial)):
        path.unlink(missing_ok=True)


def _sidecars(db: Path) -> list[Path]:
    return [db.with_name(db.name + suffix) for suffix in _SIDECARS]


def _check_dest(source: Path, dest: Path, force: bool) -> None:
    """Refuse before any work is done (a backup of a large database takes a while)."""
    if dest.is_dir():
        raise Conflict(f"{dest} is a directory: give the path of the copy's file")
    taken = [path for path in (dest, *_sidecars(dest)) if path.exists() or path.is_symlink()]
    if not taken:
        return
    if not force:
        raise Conflict(f"{taken[0]} exists: give --force to replace it")
    if dest.exists() and source.samefile(dest):
        raise Conflict(f"{dest} is the database being backed up")
    found = holder(dest)
    if found is not None:
        raise DatabaseInUse(
            f"{dest} is in use by collab process {found.get('pid', '?')}: stop it first"
        )


def _open_source(source: Path) -> sqlite3.Connection:
    """`source`, read-only, in a read transaction begun: the snapshot the copy is of."""
    conn = sqlite3.connect(source.absolute().as_uri() + "?mode=ro", uri=True, isolation_level=None)
    try:
        # The backup API starts the copy again whenever another connection commits to the
        # source between two steps, so under constant typing it may never finish. A read
        # transaction held on the source connection for the whole copy fixes its WAL
        # snapshot: the steps read that one state, commits go on past it, and no restart
        # is ever seen (tests/test_backup.py commits between every two steps to show it).
        conn.execute("BEGIN")
        found = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'docs'"
        ).fetchone()[0]
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot read the database {source}: {exc}") from exc
    if not found:
        conn.close()
        raise StoreError(f"{source} is not a collab database (it has no documents table)")
    return conn


def _copy(source: Path, partial: Path, progress: Progress | None) -> tuple[int, int, int]:
    """Copy the snapshot into `partial`; (pages, page size, restarts)."""
    src = _open_source(source)
    try:
        page_size = int(src.execute("PRAGMA page_size").fetchone()[0])
        dst = sqlite3.connect(partial, isolation_level=None)
        try:
            # The partial file is thrown away if anything fails: no journal, no syncs.
            dst.execute("PRAGMA journal_mode=OFF")
            dst.execute("PRAGMA synchronous=OFF")
            restarts, left, total = 0, -1, 0

            def step(status: int, remaining: int, pages: int) -> None:
                nonlocal restarts, left, total
                # A step that copied and yet left as much to do began again from page 1
                # (a busy step copies nothing and is no restart).
                if status == sqlite3.SQLITE_OK and 0 <= left <= remaining:
                    restarts += 1
                left, total = remaining, pages
                if progress is not None:
                    progress(pages - remaining, pages)

            src.backup(dst, pages=max(1, _STEP_BYTES // page_size), progress=step)
            # The copy says it is in WAL mode, as its source does: back to a rollback
            # journal, so the file alone is the whole database (no -wal needed to open it).
            mode = dst.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            if mode != "delete":
                raise StoreError(f"the copy stays in journal mode {mode}")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise StoreError(f"the backup failed: {exc}") from exc
    finally:
        src.close()  # the snapshot ends: the server's checkpoints may reset the WAL again
    return total, page_size, restarts


def _finish(partial: Path) -> int:
    """Check the copy and put it on disk; its number of documents."""
    try:
        with contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as conn:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
            if problems != ["ok"]:
                raise StoreError(f"the copy fails its integrity check: {'; '.join(problems[:5])}")
            docs = int(conn.execute("SELECT count(*) FROM docs").fetchone()[0])
    except sqlite3.Error as exc:
        raise StoreError(f"cannot check the copy: {exc}") from exc
    _fsync(partial)
    return docs


def _place(partial: Path, dest: Path, force: bool) -> None:
    """Rename the finished copy to `dest`, and make the rename durable."""
    if force:
        for path in _sidecars(dest):
            path.unlink(missing_ok=True)
    elif dest.exists():  # made while the copy was taken
        raise Conflict(f"{dest} exists: give --force to replace it")
    os.replace(partial, dest)
    _fsync(dest.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
