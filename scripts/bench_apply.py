"""What `Document.apply` costs for one keystroke, hot and with cold caches.

Six pycrdt clients type into one text (80 % inserts at random places, 20 % deletions of
one character), and their 3,000 updates are applied to a `collab.yjs.document.Document`:
in a loop (hot caches), and with 8 MiB of memory touched between two updates (the caches
as a server leaves them between two edits of a busy document: every other document,
socket and commit passes in between). Also plain pycrdt, observed as collab observes it.

    python scripts/bench_apply.py
"""

from __future__ import annotations

import random
import time
from functools import partial

import pycrdt

from collab.yjs.document import Document


def _collect(into: list[bytes], event: pycrdt.TransactionEvent) -> None:
    into.append(event.update)


def keystrokes(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    clients: list[pycrdt.Doc[pycrdt.Text]] = [pycrdt.Doc() for _ in range(6)]
    texts = [client.get("text", type=pycrdt.Text) for client in clients]
    updates: list[bytes] = []
    for i in range(count):
        k = rng.randrange(len(clients))
        got: list[bytes] = []
        subscription = clients[k].observe(partial(_collect, got))
        text = texts[k]
        with clients[k].transaction():
            if len(text) > 5 and rng.random() < 0.2:
                at = rng.randrange(len(text) - 1)
                del text[at : at + 1]
            else:
                text.insert(rng.randrange(len(text) + 1), f"e{i} ")
        clients[k].unobserve(subscription)
        updates.append(got[0])
        for j, other in enumerate(clients):
            if j != k:
                other.apply_update(got[0])
    return updates


def per_update_us(updates: list[bytes], apply: object, *, thrash: bool) -> float:
    scratch = bytearray(8 << 20)
    ones = b"\x01" * (len(scratch) // 64)
    spent = 0
    for update in updates:
        if thrash:
            scratch[::64] = ones  # one write to every cache line of 8 MiB
        start = time.thread_time_ns()
        apply(update)  # type: ignore[operator]
        spent += time.thread_time_ns() - start
    return spent / len(updates) / 1e3


def main() -> None:
    updates = keystrokes(3000)
    print(f"{len(updates)} updates, {sum(map(len, updates)) / len(updates):.0f} bytes each")
    for thrash in (False, True):
        plain: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
        observed: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
        observed.observe(partial(_collect, []))
        print("caches thrashed:" if thrash else "hot:")
        for name, apply in (
            ("Document.apply", Document().apply),
            ("pycrdt apply_update", plain.apply_update),
            ("... observed", observed.apply_update),
        ):
            print(f"  {name:22s} {per_update_us(updates, apply, thrash=thrash):6.1f} us")


if __name__ == "__main__":
    main()
