"""ProseMirror JSON documents checked against a schema and put in the shape TipTap's
`editor.getJSON()` gives: attributes with their defaults filled in (and left out for types
without any), `content` left out when empty, marks in rank order, adjacent text with the
same marks as one node. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collab.prosemirror.schema import BUNDLED, Attr, NodeSpec, Schema

MAX_DEPTH = 100  # far deeper than anyone nests lists; keeps recursion bounded
_NODE_KEYS = frozenset({"type", "attrs", "content", "marks", "text"})

Node = dict[str, Any]


class SchemaError(ValueError):
    """A document the schema cannot hold; the message says where (`content[2].content[0]`)."""


def normalise(doc: Any, schema: Schema = BUNDLED) -> Node:
    """`doc` checked against `schema`, as getJSON would give it back.

    An empty document gets the one empty paragraph an editor shows for it.

    Raises:
        SchemaError: an unknown node or mark type, content where its parent does not
            allow it, a bad or unknown attribute, a malformed node.
    """
    if not isinstance(doc, dict) or doc.get("type") != schema.top:
        raise SchemaError(f"a document is an object {{'type': {schema.top!r}, 'content': [...]}}")
    node = _node(doc, schema, "doc", 0)
    node.setdefault("content", [{"type": "paragraph"}])
    return node


def with_trailing_paragraph(doc: Node) -> Node:
    """`doc` ending in a paragraph: the bundled editor (StarterKit's TrailingNode) adds an
    empty one after any other last block, and every open editor does so at once when
    such content arrives (measured: two empty paragraphs after a PUT seen by two
    editors). Content that ends in one already is left as every editor shows it."""
    content = doc.get("content", [])
    if content and content[-1]["type"] != "paragraph":
        return {**doc, "content": [*content, {"type": "paragraph"}]}
    return doc


def _node(data: Any, schema: Schema, where: str, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise SchemaError(f"{where}: nested more than {MAX_DEPTH} deep")
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: a node is an object with a 'type'")
    if unknown := sorted(set(data) - _NODE_KEYS):
        raise SchemaError(f"{where}: unknown keys {unknown}")
    name = data.get("type")
    spec = schema.nodes.get(name) if isinstance(name, str) else None
    if spec is None:
        raise SchemaError(f"{where}: unknown node type {name!r}")
    if spec.name == "text":
        return _text(data, schema, where)
    if "text" in data or "marks" in data:
        raise SchemaError(f"{where}: only text nodes have 'text' and 'marks'")
    node: Node = {"type": spec.name}
    attrs = checked_attrs(spec.attrs, data.get("attrs"), f"{where}.attrs")
    if spec.attrs:
        node["attrs"] = attrs
    content = data.get("content", [])
    if not isinstance(content, list):
        raise SchemaError(f"{where}.content: a list of nodes")
    children = joined(
        [
            _node(child, schema, f"{where}.content[{i}]", depth + 1)
            for i, child in enumerate(content)
        ]
    )
    _check_content(spec, children, schema, where)
    if children:
        node["content"] = children
    return node


def _check_content(spec: NodeSpec, children: list[Node], schema: Schema, where: str) -> None:
    types = [child["type"] for child in children]
    if spec.name != schema.top or types:  # an empty document is filled in by normalise
        if not schema.matches(spec.content, types):
            shown = ", ".join(types) or "nothing"
            raise SchemaError(f"{where}: a {spec.name} holds {spec.content!r}, not {shown}")
    for i, child in enumerate(children):
        for mark in child.get("marks", ()):
            if not spec.allows_mark(mark["type"]):
                raise SchemaError(f"{where}.content[{i}]: no {mark['type']} in a {spec.name}")


def _text(data: Mapping[str, Any], schema: Schema, where: str) -> Node:
    text = data.get("text")
    if not isinstance(text, str) or not text:
        raise SchemaError(f"{where}: a text node has a non-empty 'text'")
    if "content" in data or "attrs" in data:
        raise SchemaError(f"{where}: a text node has no 'content' or 'attrs'")
    marks = data.get("marks", [])
    if not isinstance(marks, list):
        raise SchemaError(f"{where}.marks: a list of marks")
    node: Node = {"type": "text", "text": text}
    checked = [_mark(mark, schema, f"{where}.marks[{i}]") for i, mark in enumerate(marks)]
    checked.sort(key=lambda mark: schema.marks[mark["type"]].rank)
    for i, mark in enumerate(checked):
        for other in checked[i + 1 :]:
            a, b = schema.marks[mark["type"]], schema.marks[other["type"]]
            if a.excludes_mark(b.name) or b.excludes_mark(a.name):
                raise SchemaError(f"{where}.marks: {a.name} and {b.name} cannot be together")
    if checked:
        node["marks"] = checked
    return node


def _mark(data: Any, schema: Schema, where: str) -> Node:
    if not isinstance(data, dict) or set(data) - {"type", "attrs"}:
        raise SchemaError(f"{where}: a mark is an object with a 'type' (and 'attrs')")
    name = data.get("type")
    spec = schema.marks.get(name) if isinstance(name, str) else None
    if spec is None:
        raise SchemaError(f"{where}: unknown mark type {name!r}")
    mark: Node = {"type": spec.name}
    attrs = checked_attrs(spec.attrs, data.get("attrs"), f"{where}.attrs")
    if spec.attrs:
        mark["attrs"] = attrs
    return mark


def checked_attrs(specs: Mapping[str, Attr], given: Any, where: str) -> dict[str, Any]:
    """The attributes of a node or mark: those `given`, the defaults for the others.

    Raises:
        SchemaError: `given` is not an object, names an attribute the type has not, or
            holds a value the attribute cannot take.
    """
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise SchemaError(f"{where}: attributes are an object")
    if unknown := sorted(set(given) - set(specs)):
        raise SchemaError(f"{where}: unknown attributes {unknown}")
    attrs = {name: given.get(name, spec.default) for name, spec in specs.items()}
    for name, value in attrs.items():
        if not specs[name].check(value):
            raise SchemaError(f"{where}.{name}: {value!r} is not a value it takes")
    return attrs


def filled_attrs(specs: Mapping[str, Attr], stored: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes an editor shows for what a document stores: the schema's, with
    the defaults for those not stored; what the schema has not is dropped (ProseMirror's
    `computeAttrs`). Unchecked: a document holds what its editors wrote."""
    return {name: stored.get(name, spec.default) for name, spec in specs.items()}


def joined(children: list[Node]) -> list[Node]:
    """Adjacent text nodes with the same marks as one (ProseMirror's Fragment does so)."""
    out: list[Node] = []
    for child in children:
        previous = out[-1] if out else None
        if (
            previous is not None
            and child["type"] == previous["type"] == "text"
            and child.get("marks") == previous.get("marks")
        ):
            previous["text"] += child["text"]
        else:
            out.append(child)
    return out
