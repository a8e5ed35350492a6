"""`collab backup DEST`: the online backup of collab/store/backup.py, its progress on
stderr and its result on stdout. It reads the SQLite file itself, never through a server
(whose lock it leaves alone); PostgreSQL has tools of its own, which the refusal names.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from collab.cli.commands import size_text
from collab.config import Settings, describe_db
from collab.errors import BadRequest
from collab.store.backup import back_up


class ProgressLines:
    """Prints `backup: 37% (1200/3244 pages)` after the first step, then at most one line
    every `every` seconds, and the last: a person sees it move, a log is not flooded."""

    def __init__(
        self,
        out: TextIO,
        every: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._every = every
        self._clock = clock
        self._printed: float | None = None

    def __call__(self, copied: int, total: int) -> None:
        now = self._clock()
        if copied < total and self._printed is not None and now - self._printed < self._every:
            return
        self._printed = now
        percent = copied * 100 // total if total else 100
        print(f"backup: {percent}% ({copied}/{total} pages)", file=self._out, flush=True)


def run(settings: Settings, args: argparse.Namespace) -> None:
    """Raises: CollabError: the backup was refused or failed (DEST is left as it was)."""
    if not isinstance(settings.db, Path):
        raise BadRequest(
            f"collab backup copies a SQLite file, and {describe_db(settings.db)} is "
            f"PostgreSQL: use its pg_dump, e.g. pg_dump -Fc -f {args.dest} "
            f"'{describe_db(settings.db)}' (restore with pg_restore; docs/operations.md)"
        )
    done = back_up(
        settings.db, Path(args.dest), force=args.force, progress=ProgressLines(sys.stderr)
    )
    restarts = f", restarted {done.restarts} times" if done.restarts else ""
    print(
        f"backed up {done.docs} documents ({size_text(done.size)}) from "
        f"{settings.db} to {done.dest} in {done.seconds:.1f} s{restarts}"
    )
