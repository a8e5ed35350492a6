"""The CLI's document commands: reach the documents (see access.py), do one thing, print
the records it returns for people (or as the API's JSON with --json). Results go to
stdout; notes and progress to stderr, so output can be piped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from collab.cli.access import Reach, connect
from collab.config import Settings
from collab.store import iso_time


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )


def size_text(count: int) -> str:
    """`count` bytes for people: 42 B, 3.1 KB, 100.3 MB."""
    for unit in ("B", "KB", "MB"):
        if count < 1024 or unit == "MB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]  # float from here on
    return str(count)


async def docs(reach: Reach, args: argparse.Namespace) -> None:
    found = await reach.documents.summaries()
    if args.json:
        print(json.dumps([doc.as_json() for doc in found], indent=2, ensure_ascii=False))
    elif not found:
        _note("no documents")
    else:
        rows = [["NAME", "SIZE", "UPDATES", "CLIENTS", "LAST CHANGE"]]
        rows += [
            [d.name, size_text(d.size), str(d.update_count), str(d.clients), iso_time(d.updated_at)]
            for d in found
        ]
        _table(rows, sys.stdout)


async def export(reach: Reach, args: argparse.Namespace) -> None:
    body = (await reach.documents.export(args.name, args.format, args.version, args.field)).body
    if args.output and args.output != "-":
        await asyncio.to_thread(Path(args.output).write_bytes, body)
        _note(f"wrote {len(body)} bytes to {args.output}")
    elif args.format == "update" and sys.stdout.isatty():
        raise SystemExit("collab: the update format is binary: give -o FILE or redirect stdout")
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()


async def import_(reach: Reach, args: argparse.Namespace) -> None:
    source = sys.stdin.buffer.read if args.file == "-" else Path(args.file).read_bytes
    data = await asyncio.to_thread(source)
    _note(f"importing {size_text(len(data))} into {args.name!r} through the {reach.where}")
    if args.format == "update":
        await reach.documents.import_update(args.name, data)
        print(f"imported {len(data)} bytes into {args.name}")
        return
    created = await reach.documents.replace(args.name, args.format, data, args.field)
    done = "created" if created else "replaced the content of"
    print(f"{done} {args.name} ({args.field}) from {len(data)} bytes of {args.format}")


async def versions(reach: Reach, args: argparse.Namespace) -> None:
    found = await reach.documents.versions(args.name)
    if args.json:
        print(json.dumps([v.as_json() for v in found], indent=2, ensure_ascii=False))
        return
    rows = [["ID", "TIME", "KIND", "SIZE", "LABEL"]]
    rows += [
        [str(v.id), iso_time(v.created_at), v.kind, size_text(v.size), v.label or ""] for v in found
    ]
    _table(rows, sys.stdout)


async def version(reach: Reach, args: argparse.Namespace) -> None:
    made = await reach.documents.take_version(args.name, args.label)
    print(f"version {made.id} of {args.name}: {made.label}")


async def restore(reach: Reach, args: argparse.Namespace) -> None:
    done = await reach.documents.restore(args.name, args.version)
    print(
        f"restored {args.name} to version {done.restored.id}; "
        f"the state before is version {done.pre_restore.id} (restore it to undo this)"
    )


async def compact(reach: Reach, args: argparse.Namespace) -> None:
    def progress(done: int, total: int, name: str) -> None:
        _note(f"[{done}/{total}] {name}")

    _note(f"compacting through the {reach.where}")
    deleted = await reach.documents.compact(progress)
    print(f"deleted {deleted} versions the retention policy no longer keeps")


Command = Callable[[Reach, argparse.Namespace], Coroutine[Any, Any, None]]

# name -> (what it does, whether it may create the database)
COMMANDS: dict[str, tuple[Command, bool]] = {
    "docs": (docs, False),
    "export": (export, False),
    "import": (import_, True),
    "versions": (versions, False),
    "version": (version, False),
    "restore": (restore, False),
    "compact": (compact, False),
}


async def run(command: str, settings: Settings, args: argparse.Namespace, token: str = "") -> None:
    """Run one document command; `token` is shown to a server, if the command uses one."""
    action, creates = COMMANDS[command]
    async with connect(settings, server=args.server, create=creates, token=token) as reach:
        await action(reach, args)
