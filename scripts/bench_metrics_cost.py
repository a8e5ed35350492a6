"""What counting for /metrics costs, in instructions: a fixed fan-out, run under
callgrind, whose count does not depend on what else the machine does (timed runs here
vary by +-10 % from one repetition to the next, more than the 3 % to be shown).

One process: a collab server (collab.app.start, on a SQLite file in a temp dir) and
its clients (collab.client), 1 writer and --readers readers of one document. The writer
types --updates characters, one at a time: each waits until every reader has it, so
every commit holds one update and the work is the same whatever the timing. Run it with
the interpreter of each variant's venv, under callgrind, and with --updates 0 for the
cost of starting and stopping alone:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null VENV/bin/python \\
        scripts/bench_metrics_cost.py --updates 300 --readers 20 [--metrics off]

The difference of the two counts is the fan-out's; callgrind prints it as "Collected".
(--metrics is passed only when given: a version without metrics has no such setting.)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from functools import partial
from pathlib import Path

import pycrdt

from collab.app import start
from collab.client import Client
from collab.config import Settings


def _holds(text: pycrdt.Text, length: int) -> bool:
    return len(text) == length


async def fan_out(updates: int, readers: int, metrics: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        extra = {} if metrics is None else {"metrics": metrics}
        settings = Settings(port=0, db=Path(tmp) / "collab.db", **extra)  # type: ignore[arg-type]
        runner, port = await start(settings)
        url = f"ws://127.0.0.1:{port}"
        try:
            writer = Client(url, "doc")
            others = [Client(url, "doc") for _ in range(readers)]
            for client in (writer, *others):
                await client.connect()
            text = writer.doc.get("t", type=pycrdt.Text)
            texts = [reader.doc.get("t", type=pycrdt.Text) for reader in others]
            for i in range(updates):
                text.insert(i, "x")
                for reader, got in zip(others, texts, strict=True):
                    await reader.wait_for(partial(_holds, got, i + 1), timeout=60)
            for client in (writer, *others):
                await client.close()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--metrics", choices=("on", "off"), default=None)
    args = parser.parse_args()
    asyncio.run(fan_out(args.updates, args.readers, args.metrics))


if __name__ == "__main__":
    main()
