"""Root types read from a document's own content."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest

from collab.yjs.roots import parse_hints, root_types
from tests.docgen import random_doc


def state_of(build: Any) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    build(doc)
    return doc.get_update()


def test_every_root_type_is_recognised() -> None:
    def build(doc: pycrdt.Doc[Any]) -> None:
        doc["text"] = pycrdt.Text("hello")
        doc["map"] = pycrdt.Map({"a": 1, "nested": pycrdt.Map({"b": pycrdt.Array([1])})})
        doc["array"] = pycrdt.Array([1, "two", pycrdt.Map({"k": "v"}), pycrdt.Text("t")])
        doc["xml"] = pycrdt.XmlFragment([pycrdt.XmlElement("p", {}, [pycrdt.XmlText("hi")])])
        doc["xml_text_only"] = pycrdt.XmlFragment([pycrdt.XmlText("just text")])

    assert root_types(state_of(build)) == {
        "text": "text",
        "map": "map",
        "array": "array",
        "xml": "xml",
        "xml_text_only": "xml",
    }


def test_a_long_history_of_edits_is_still_read_right() -> None:
    assert root_types(random_doc(11, clients=3, steps=200).get_update()) == {
        "text": "text",
        "plain": "text",
        "map": "map",
        "array": "array",
        "xml": "xml",
    }


def test_formatting_alone_marks_a_text() -> None:
    def build(doc: pycrdt.Doc[Any]) -> None:
        text = doc.get("t", type=pycrdt.Text)
        text += "bold"
        text.format(0, 4, {"bold": True})

    assert root_types(state_of(build)) == {"t": "text"}


def test_emptied_roots_keep_what_can_be_known() -> None:
    def build(doc: pycrdt.Doc[Any]) -> None:
        doc["map"] = pycrdt.Map({"gone": 1})
        del doc["map"]["gone"]
        doc["text"] = pycrdt.Text("bye")
        del doc["text"][0:3]

    # A map's deleted entries are still entries; a deleted text could have been anything.
    assert root_types(state_of(build)) == {"map": "map", "text": None}


def test_hints_fill_in_and_override() -> None:
    def build(doc: pycrdt.Doc[Any]) -> None:
        doc["text"] = pycrdt.Text("bye")
        del doc["text"][0:3]

    assert root_types(state_of(build), {"text": "text", "other": "xml"}) == {
        "text": "text",
        "other": "xml",
    }


def test_hints_are_parsed_and_checked() -> None:
    assert parse_hints("default=xml, title=text") == {"default": "xml", "title": "text"}
    assert parse_hints("") == {}
    for bad in ("default", "default=blob", "=xml"):
        with pytest.raises(ValueError):
            parse_hints(bad)
