"""Restore computes forward edits that make a document equal to a version, exactly."""

from __future__ import annotations

import random
from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.protocol import EMPTY_UPDATE
from collab.yjs.restore import RootTypeConflict, restore_updates
from collab.yjs.tree import Tree
from collab.yjs.update import decode_state_vector
from tests.docgen import content, edit, random_doc, restore


def visible(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    return {key: value for key, value in content(doc).items() if key != "state_vector"}


def copy(state: bytes) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(state)
    return doc


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), later_edits=st.integers(1, 60))
def test_restoring_an_older_version_brings_back_exactly_its_content(
    seed: int, later_edits: int
) -> None:
    version = random_doc(seed, clients=2, steps=40)
    live = copy(version.get_update())
    rng = random.Random(seed)
    for step in range(later_edits):
        edit(live, rng, 1000 + step)
    assert visible(live) != visible(version)
    restore(live, version.get_update())
    assert visible(live) == visible(version)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_restoring_an_unrelated_document_makes_it_equal(seed: int) -> None:
    live, other = random_doc(seed, steps=30), random_doc(seed + 1, steps=30)
    restore(live, other.get_update())
    assert visible(live) == visible(other)


def test_a_restore_merges_with_concurrent_edits_made_elsewhere() -> None:
    version = random_doc(3, steps=20)
    server = copy(version.get_update())
    server.get("text", type=pycrdt.Text).insert(0, "LATER ")
    elsewhere = copy(server.get_update())
    updates = restore_updates(server.get_update(), version.get_update())
    elsewhere.get("map", type=pycrdt.Map)["concurrent"] = "kept"
    for doc in (server, elsewhere):
        for update in updates:
            doc.apply_update(update)
    server.apply_update(elsewhere.get_update(server.get_state()))
    elsewhere.apply_update(server.get_update(elsewhere.get_state()))
    assert visible(server) == visible(elsewhere)
    assert server.get("map", type=pycrdt.Map)["concurrent"] == "kept"
    assert not str(server.get("text", type=pycrdt.Text)).startswith("LATER")


def test_rich_text_keeps_marks_and_element_attributes() -> None:
    def build(doc: pycrdt.Doc[Any], words: str) -> None:
        fragment = doc.get("default", type=pycrdt.XmlFragment)
        heading = fragment.children.append(pycrdt.XmlElement("heading", {"level": 2}))
        heading.children.append(pycrdt.XmlText()).insert(0, "Title", {"italic": {}})
        paragraph = fragment.children.append(pycrdt.XmlElement("paragraph"))
        text = paragraph.children.append(pycrdt.XmlText())
        text.insert(0, words, {})
        text.format(0, 4, {"bold": {}})
        text.format(5, 9, {"link": {"href": "https://example.org"}})

    version: pycrdt.Doc[Any] = pycrdt.Doc()
    build(version, "bold link rest")
    live = copy(version.get_update())
    fragment = live.get("default", type=pycrdt.XmlFragment)
    del fragment.children[0]
    fragment.children.append(pycrdt.XmlElement("paragraph", {}, [pycrdt.XmlText("new")]))
    restore(live, version.get_update())
    assert str(live.get("default", type=pycrdt.XmlFragment)) == str(
        version.get("default", type=pycrdt.XmlFragment)
    )
    attributes = dict(live.get("default", type=pycrdt.XmlFragment).children[0].attributes)
    assert attributes == {"level": 2.0}


def test_restoring_the_same_content_rewrites_it_as_new_items_of_one_new_client() -> None:
    live = random_doc(9, steps=10)
    before = visible(live)
    clients = set(decode_state_vector(live.get_state()))
    restore(live, live.get_update())
    assert visible(live) == before
    tree = Tree(live.get_update())
    owners = {
        item.client
        for root in tree.roots.values()
        for item in [*root.children(), *root.attributes().values()]
    }
    assert len(owners) == 1 and not owners & clients  # no editor's undo stack holds any


def test_restoring_an_empty_document_into_an_empty_one_is_no_update_at_all() -> None:
    assert restore_updates(EMPTY_UPDATE, EMPTY_UPDATE) == []


def test_a_root_that_changed_type_is_a_conflict() -> None:
    then: pycrdt.Doc[Any] = pycrdt.Doc()
    then["root"] = pycrdt.Text("text")
    now: pycrdt.Doc[Any] = pycrdt.Doc()
    now["root"] = pycrdt.Map({"a": 1})
    with pytest.raises(RootTypeConflict):
        restore_updates(now.get_update(), then.get_update())


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_restoring_some_roots_leaves_every_other_root_and_its_items_alone(seed: int) -> None:
    live, other = random_doc(seed, steps=30), random_doc(seed + 1, steps=30)
    before = visible(live)
    others = [name for name in Tree(live.get_update()).roots if name != "xml"]
    kept_items = {
        (item.client, item.clock, item.length)
        for name in others
        for item in Tree(live.get_update()).roots[name].children()
    }
    for update in restore_updates(live.get_update(), other.get_update(), roots=["xml"]):
        live.apply_update(update)
    after = visible(live)
    assert after["xml"] == visible(other)["xml"]
    assert {k: v for k, v in after.items() if k != "xml"} == {
        k: v for k, v in before.items() if k != "xml"
    }
    tree = Tree(live.get_update())
    assert {
        (item.client, item.clock, item.length)
        for name in others
        for item in tree.roots[name].children()
    } == kept_items  # not copied anew: their editors' undo and history go on as before
