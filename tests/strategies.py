"""Hypothesis strategies for untrusted bytes: lib0 integers at their edges, and mutations of
valid input. The property tests of each reader use them (test_protocol.py, test_update.py,
test_awareness.py); the live-server counterpart is tests/fuzz.py (run by test_fuzz.py)."""

from __future__ import annotations

from hypothesis import strategies as st
from pycrdt import write_var_uint

# Where lib0's varuint changes length, where JavaScript numbers lose precision, and the
# ends of 32 and 64 bits.
EDGES = sorted(
    {0, 1, 2**53 - 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1}
    | {2 ** (7 * n) - 1 for n in range(1, 10)}
    | {2 ** (7 * n) for n in range(1, 10)}
    | {2**31 - 1, 2**31, 2**32 - 1, 2**32}
)
varuints = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1))


def mutate(data: st.DataObject, blob: bytes) -> bytes:
    """One to three random mutations of `blob`: bit flips, truncation, insertion,
    deletion, an edge byte, or a varuint (a length, a count, a clock) replaced."""
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        kind = data.draw(
            st.sampled_from(["flip", "truncate", "insert", "delete", "byte", "varuint"]),
            label="kind",
        )
        at = data.draw(st.integers(0, len(out)), label="at")
        if kind == "flip" and at < len(out):
            out[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
        elif kind == "delete":
            del out[at : at + data.draw(st.integers(1, 8), label="deleted")]
        elif kind == "byte" and at < len(out):
            out[at] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]), label="byte")
        elif kind == "varuint" and at < len(out):
            end = at
            while end < len(out) and out[end] & 0x80:
                end += 1
            out[at : end + 1] = write_var_uint(data.draw(varuints, label="value"))
    return bytes(out)
