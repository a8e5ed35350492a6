"""CPU cost of export and restore (no server): reading a state into collab's tree, the JSON
and text exports, and computing a restore, beside pycrdt decoding the same state.

    python scripts/bench_history.py [--trace path/to/automerge-paper.json.gz ...] [--reps 5]

Documents: each trace replayed (a version at 90 % of its edits, live at its end), and a
generated rich-text document of 2,000 formatted paragraphs. Prints medians in ms, and
each figure as a multiple of pycrdt's own decode (`Doc.apply_update`) of that state, which
is the ratio to compare across runs on a noisy machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt

from collab.yjs import content
from collab.yjs.restore import restore_updates
from collab.yjs.roots import root_types
from collab.yjs.tree import Tree


def trace_states(path: Path) -> tuple[bytes, bytes]:
    """(version, live): the trace replayed to 90 % of its transactions, and to its end."""
    trace = json.loads(gzip.open(path).read())
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    if trace["startContent"]:
        text += trace["startContent"]
    txns = trace["txns"]
    version = b""
    for index, txn in enumerate(txns):
        if index == len(txns) * 9 // 10:
            version = doc.get_update()
        with doc.transaction():
            for position, deleted, inserted in txn["patches"]:
                if deleted:
                    del text[position : position + deleted]
                if inserted:
                    text.insert(position, inserted)
    return version, doc.get_update()


def rich_states(paragraphs: int = 2000) -> tuple[bytes, bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    fragment = doc.get("default", type=pycrdt.XmlFragment)
    for index in range(paragraphs):
        text = pycrdt.XmlText()
        fragment.children.append(pycrdt.XmlElement("paragraph", {"n": index}, [text]))
        text.insert(0, f"Paragraph {index} has ")
        text.insert(len(text), "bold", {"bold": True})
        text.insert(len(text), " and plain words in it.")
    version = doc.get_update()
    for index in range(0, paragraphs, 10):
        fragment.children[index].children[0].insert(0, "edited ")
    return version, doc.get_update()


def median_ms(action: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def row(name: str, version: bytes, live: bytes, reps: int) -> None:
    def decode() -> None:
        pycrdt.Doc().apply_update(live)

    def export_json() -> None:
        tree = Tree(live)
        content.dumps(content.to_json(tree, root_types(tree)))

    def export_text() -> None:
        tree = Tree(live)
        content.to_text(tree, root_types(tree))

    base = median_ms(decode, reps)
    figures = {
        "tree": median_ms(lambda: Tree(live), reps),
        "json": median_ms(export_json, reps),
        "text": median_ms(export_text, reps),
        "restore": median_ms(lambda: restore_updates(live, version), reps),
    }
    cells = "  ".join(f"{key} {ms:7.1f} ms ({ms / base:4.1f}x)" for key, ms in figures.items())
    print(f"{name:24} {len(live) / 1024:8.0f} KiB  pycrdt decode {base:6.1f} ms  {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, action="append", default=[])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    row("rich text, 2,000 paras", *rich_states(), args.reps)
    for path in args.trace:
        row(path.name.split(".")[0], *trace_states(path), args.reps)


if __name__ == "__main__":
    main()
