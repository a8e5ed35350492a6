"""y-prosemirror's mapping between a Yjs XmlFragment and ProseMirror JSON, both ways. Pure.

An XmlElement is a node: its name the node type, its attributes the node's attributes.
An XmlText holds text nodes: each run's formatting attributes are its marks
(`{markName: markAttrs}`; where a schema lets one text hold several marks of a type,
y-prosemirror keys them `name--<8 characters of hash>`). Reading fills in what an editor
would (defaults, mark order); writing puts content as y-prosemirror would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pycrdt

from collab.prosemirror.node import Node, filled_attrs, joined
from collab.prosemirror.schema import BUNDLED, Schema
from collab.yjs import content
from collab.yjs.tree import Tree

DEFAULT_FIELD = "default"  # TipTap's Collaboration `field`, the bundled editor's
_MARK_KEY = re.compile(r"(.+)--[A-Za-z0-9+/=]{8}")


def to_prosemirror(tree: Tree, field: str = DEFAULT_FIELD, schema: Schema = BUNDLED) -> Node:
    """The root `field` of a document, read as an XmlFragment, as `editor.getJSON()`.

    Node and mark types the schema has not (another editor's) are kept with the
    attributes they hold; what is no ProseMirror content (embeds, hooks, nested
    fragments) is left out.
    """
    nodes = content.to_json(tree, {field: "xml"})[field]
    return {"type": schema.top, "content": _nodes(nodes, schema) or [{"type": "paragraph"}]}


def _nodes(nodes: list[Any], schema: Schema) -> list[Node]:
    out: list[Node] = []
    for node in nodes:
        if "element" in node:
            out.append(_element(node, schema))
        elif "xmltext" in node:  # an XmlText with attributes of its own: its text counts
            out.extend(_text(run, schema) for run in node["xmltext"] if run.get("text"))
        elif node.get("text"):
            out.append(_text(node, schema))
    return joined(out)


def _element(node: Mapping[str, Any], schema: Schema) -> Node:
    name = node["element"]
    stored = node.get("attributes", {})
    out: Node = {"type": name}
    spec = schema.nodes.get(name)
    if spec is not None and spec.attrs:
        out["attrs"] = filled_attrs(spec.attrs, stored)
    elif spec is None and stored:
        out["attrs"] = dict(stored)
    children = _nodes(node.get("children", []), schema)
    if children:
        out["content"] = children
    return out


def _text(run: Mapping[str, Any], schema: Schema) -> Node:
    out: Node = {"type": "text", "text": run["text"]}
    marks = [_mark(key, value, schema) for key, value in run.get("attributes", {}).items()]
    if marks:
        unranked = len(schema.marks)
        marks.sort(
            key=lambda m: (
                schema.marks[m["type"]].rank if m["type"] in schema.marks else unranked,
                m["type"],
            )
        )
        out["marks"] = marks
    return out


def _mark(key: str, value: Any, schema: Schema) -> Node:
    match = _MARK_KEY.fullmatch(key)
    name = match.group(1) if match else key
    mark: Node = {"type": name}
    spec = schema.marks.get(name)
    stored = value if isinstance(value, dict) else {}
    if spec is not None and spec.attrs:
        mark["attrs"] = filled_attrs(spec.attrs, stored)
    elif spec is None and stored:
        mark["attrs"] = dict(stored)
    return mark


def state_of(doc: Node, field: str = DEFAULT_FIELD) -> bytes:
    """A full Yjs state whose root `field` holds `doc` (normalised: see
    `collab.prosemirror.node.normalise`) as y-prosemirror writes it: an XmlElement per
    node with its non-null attributes, an XmlText per run of text nodes with the marks
    as formatting attributes."""
    ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
    _write(ydoc.get(field, type=pycrdt.XmlFragment), doc.get("content", []))
    return ydoc.get_update()


def _write(parent: pycrdt.XmlFragment | pycrdt.XmlElement, children: list[Node]) -> None:
    texts: list[Node] = []
    for child in [*children, None]:
        if child is not None and child["type"] == "text":
            texts.append(child)
            continue
        if texts:
            ytext = parent.children.append(pycrdt.XmlText())
            for text in texts:
                marks = {mark["type"]: mark.get("attrs", {}) for mark in text.get("marks", ())}
                ytext.insert(len(ytext), text["text"], attrs=marks or None)
            texts = []
        if child is not None:
            element = parent.children.append(pycrdt.XmlElement(child["type"]))
            for key, value in child.get("attrs", {}).items():
                if value is not None:
                    element.attributes[key] = value
            _write(element, child.get("content", []))
