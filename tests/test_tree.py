"""collab.yjs.tree reads documents as Yjs integrates them, and export and restore built on it
are exact for nested documents of every type.

The oracle is pycrdt's own reading (Yrs) of the same documents, through its typed API,
rendered in the shape collab/yjs/content.py documents: random documents whose replicas
insert concurrently, so every YATA conflict rule is met.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import pycrdt
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.protocol import EMPTY_UPDATE
from collab.yjs import content
from collab.yjs.roots import root_types
from collab.yjs.tree import Shared, Tree
from collab.yjs.update import decode_state_vector
from tests.docgen import NESTED_ROOTS, nested_edit, random_doc, random_nested_doc, restore, restored


def plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bytes | bytearray):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def runs(delta: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for chunk, attributes in delta:
        if isinstance(chunk, str):
            run: dict[str, Any] = {"text": chunk}
        elif isinstance(chunk, pycrdt.Map | pycrdt.XmlText | pycrdt.Text | pycrdt.Array):
            run = {"embed": view(chunk), "type": type(chunk).__name__}
        else:
            run = {"embed": plain(chunk)}
        if attributes:
            run["attributes"] = dict(sorted(plain(attributes).items()))
        if found and "text" in run and "text" in found[-1]:
            if found[-1].get("attributes") == run.get("attributes"):
                found[-1]["text"] += run["text"]
                continue
        found.append(run)
    return found


def view(value: Any, root: bool = False) -> Any:
    """What pycrdt says a shared type holds, in the export's shape."""
    if isinstance(value, pycrdt.Text):
        found = runs(value.diff())
        return (
            "".join(r["text"] for r in found) if all(set(r) == {"text"} for r in found) else found
        )
    if isinstance(value, pycrdt.Map):
        return {key: view(item) for key, item in sorted(value.items())}
    if isinstance(value, pycrdt.Array):
        return [view(item) for item in value]
    if isinstance(value, pycrdt.XmlText):
        node: dict[str, Any] = {"xmltext": runs(value.diff())}
        if attributes := dict(value.attributes):
            node["attributes"] = dict(sorted(plain(attributes).items()))
        return node
    if isinstance(value, pycrdt.XmlElement):
        node = {"element": value.tag}
        if attributes := dict(value.attributes):
            node["attributes"] = dict(sorted(plain(attributes).items()))
        if children := nodes(value):
            node["children"] = children
        return node
    if isinstance(value, pycrdt.XmlFragment):
        return nodes(value) if root else {"fragment": nodes(value)}
    return plain(value)


def nodes(parent: Any) -> list[Any]:
    found: list[Any] = []
    for child in parent.children:
        shown = view(child)
        if isinstance(child, pycrdt.XmlText) and set(shown) == {"xmltext"}:
            found.extend(shown["xmltext"])
        else:
            found.append(shown)
    return found


def oracle(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    """The doc's roots as pycrdt reads them (only roots that hold something)."""
    state = doc.get_update()
    shown = {}
    for name, kind in root_types(state).items():
        if kind:
            shown[name] = view(doc.get(name, type=NESTED_ROOTS[kind]), root=True)
    return held(shown)


def held(roots: dict[str, Any]) -> dict[str, Any]:
    """Roots that hold something: an emptied root and a missing one say the same."""
    return {name: value for name, value in roots.items() if value not in ({}, [], "")}


def export(state: bytes) -> dict[str, Any]:
    return held(content.to_json(Tree(state), root_types(state)))


def copy(state: bytes) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(state)
    return doc


def owners(shared: Shared) -> set[int]:
    """The clients whose items make up what a type shows, at any depth."""
    found = set()
    for item in [*shared.children(), *shared.attributes().values()]:
        found.add(item.client)
        if item.shared is not None:
            found |= owners(item.shared)
    return found


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), clients=st.integers(1, 4))
def test_the_tree_reads_nested_documents_as_yrs_does(seed: int, clients: int) -> None:
    doc = random_nested_doc(seed, clients=clients, steps=70)
    assert export(doc.get_update()) == oracle(doc)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_the_tree_reads_concurrent_multi_byte_text_as_yrs_does(seed: int) -> None:
    doc = random_doc(seed, clients=4, steps=80)  # emoji, CJK: UTF-16 clocks, split items
    state = doc.get_update()
    tree = Tree(state)
    assert "".join(str(i.content) for i in tree.root("text").children()) == str(
        doc.get("text", type=pycrdt.Text)
    )
    assert export(state)["plain"] == view(doc.get("plain", type=pycrdt.Text))
    assert tree.state_vector() == decode_state_vector(doc.get_state())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), later=st.integers(1, 40))
def test_a_restore_makes_the_whole_tree_equal_to_the_version_with_new_items_only(
    seed: int, later: int
) -> None:
    version = random_nested_doc(seed, clients=2, steps=50)
    live = copy(version.get_update())
    rng = random.Random(seed)
    for _ in range(later):
        nested_edit(live, rng)
    before = set(decode_state_vector(live.get_state()))
    restore(live, version.get_update())
    assert oracle(live) == oracle(version)
    assert export(live.get_update()) == export(version.get_update())
    tree = Tree(live.get_update())
    made = set().union(*(owners(root) for root in tree.roots.values()))
    assert len(made) <= 1 and not made & before  # nothing an editor's undo stack holds


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_export_then_import_gives_the_same_tree_as_an_update_and_as_a_fresh_copy(
    seed: int,
) -> None:
    doc = random_nested_doc(seed, clients=3, steps=60)
    state = doc.get_update()
    imported = copy(state)  # `format=update`, then `collab import`
    assert oracle(imported) == oracle(doc)
    fresh = copy(restored(EMPTY_UPDATE, state))  # every item written anew by collab
    assert oracle(fresh) == oracle(doc)
    assert export(fresh.get_update()) == export(state)


def test_items_that_build_on_what_a_state_lacks_stay_out_as_in_yjs() -> None:
    """A room's state holds the updates that arrived before what they build on; like
    Yjs, the tree leaves them out (pending) and reads the rest."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    text += "ab"
    base = doc.get_update()
    text.insert(1, "X")
    later = doc.get_update(copy(base).get_state())  # builds on "ab"
    other: pycrdt.Doc[Any] = pycrdt.Doc()
    other.get("m", type=pycrdt.Map)["k"] = "v"
    state = pycrdt.merge_updates(other.get_update(), later)  # "ab" itself is missing
    assert export(state) == {"m": {"k": "v"}}
    assert export(pycrdt.merge_updates(base, later)) == {"t": "aXb"}


def test_a_cycle_of_origins_stays_out_instead_of_hanging() -> None:
    # Client 1, two items whose left origins are each other (found by fuzzing).
    cycle = bytes.fromhex("01020100880101017701788801000177017800")
    assert Tree(cycle).roots == {}
