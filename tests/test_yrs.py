"""What Yrs itself does, on a bare `pycrdt.Doc`, where collab works around it: rows 1-3 of
the checklist in collab/yjs/README.md. Each test fails when an upgrade changes the
behaviour; then revisit the workaround its docstring names."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from pycrdt import write_var_uint as v

EMPTY_UPDATE = pycrdt.Doc().get_update()


def test_yrs_integrates_a_struct_after_a_clock_gap() -> None:
    """README row 1. If this fails, Yrs now keeps such structs pending as Yjs does: drop
    `update.hold_gaps` (and the holding in `Document.apply` and `Document.diff`), and keep
    the tests that row cites."""
    source: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1)
    source.get("t", type=pycrdt.Text).insert(0, "abcde")  # clocks 0..4
    before = source.get_state()
    source.get("m", type=pycrdt.Map)["k"] = "v"  # clock 5
    gap = source.get_update(before)
    assert gap == bytes.fromhex("010101052801016d016b0177017600")  # test_fuzz.py's `gap`
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(gap)
    assert doc.get("m", type=pycrdt.Map).to_py() == {"k": "v"}  # Yjs shows nothing yet
    assert doc.get_state() == v(1) + v(1) + v(0)  # client 1 at clock 0: not counted


def test_yrs_leaves_what_waits_for_its_dependencies_out_of_get_update() -> None:
    """README row 2. If this fails, `Doc.get_update()` now encodes the structs and deletions
    still waiting for their dependencies: `Document._with_pending` (in `Document.state()`)
    can go, and the tests that row cites must still pass."""
    first: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1)
    first.get("t", type=pycrdt.Text).insert(0, "ab")
    second: pycrdt.Doc[Any] = pycrdt.Doc(client_id=2)
    second.apply_update(first.get_update())
    before = second.get_state()
    second.get("t", type=pycrdt.Text).insert(1, "y")  # its origin is (1, 0)
    del second.get("t", type=pycrdt.Text)[2:3]  # deletes (1, 1)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(second.get_update(before))  # before its origin: it waits
    assert doc.get_update() == EMPTY_UPDATE  # the keystroke and the deletion are left out
    reloaded: pycrdt.Doc[Any] = pycrdt.Doc()
    reloaded.apply_update(doc.get_update())
    for copy in (doc, reloaded):
        copy.apply_update(first.get_update())
    assert str(doc.get("t", type=pycrdt.Text)) == "ay"  # Yrs kept both waiting
    assert str(reloaded.get("t", type=pycrdt.Text)) == "ab"  # a snapshot lost both


def test_yrs_fails_halfway_on_an_item_whose_parent_is_not_a_type() -> None:
    """README row 3. If this fails because Yrs now refuses such an update whole (nothing
    integrated), `Document._partly` and `_forget_yrs_pending` can go; the refusal
    (`update.parent_refs`, `Document._misplaced`) stays, since Yjs peers would still break.
    If only the error's type or text changed, collab does not depend on it (`_integrate`
    turns any `Exception` into `UpdateRejected`): update this test."""
    string = b"\x04" + v(1) + v(1) + b"t" + v(2) + b"ab"  # (9, 0..1) "ab" in root "t"
    child = b"\x04" + v(0) + v(9) + v(1) + v(1) + b"x"  # (9, 2), parent (9, 1): a character
    update = v(1) + v(2) + v(9) + v(0) + string + child + b"\x00"
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for _ in range(2):  # and again on a retry
        with pytest.raises(RuntimeError, match="must be deleted or shared ref type"):
            doc.apply_update(update)
        assert str(doc.get("t", type=pycrdt.Text)) == "ab"  # what came first is integrated
        assert doc.get_state() == v(1) + v(9) + v(2)  # and counted; (9, 2) is not
