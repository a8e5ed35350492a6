"""What a document holds, as JSON or plain text, given each root's type. No I/O.

JSON: a Text root is a string, a Map an object, an Array a list, and an XmlFragment a list
of nodes: `{"element": tag, "attributes": {...}, "children": [...]}` for elements and
`{"text": "...", "attributes": {...}}` for runs of text (attributes carry formatting,
such as `{"bold": {}}` or `{"link": {"href": ...}}`, and are left out when empty).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pycrdt

from collab.roots import RootType

_BLOCK_SEPARATOR = "\n"


def read_root(doc: pycrdt.Doc[Any], name: str, kind: RootType) -> Any:
    """The root `name` of `doc` as the pycrdt type `kind` (this fixes its type in `doc`)."""
    shared = {
        "text": pycrdt.Text,
        "map": pycrdt.Map,
        "array": pycrdt.Array,
        "xml": pycrdt.XmlFragment,
    }[kind]
    return doc.get(name, type=shared)


def to_json(doc: pycrdt.Doc[Any], types: dict[str, RootType | None]) -> dict[str, Any]:
    """Every root of `doc` as JSON-ready values; roots of unknown type are left out."""
    return {
        name: _value(read_root(doc, name, kind)) for name, kind in sorted(types.items()) if kind
    }


def to_text(doc: pycrdt.Doc[Any], types: dict[str, RootType | None]) -> str:
    """The plain text of every Text and XmlFragment root, in name order."""
    parts = []
    for name, kind in sorted(types.items()):
        if kind == "text":
            parts.append(str(read_root(doc, name, kind)))
        elif kind == "xml":
            fragment = read_root(doc, name, kind)
            parts.append(_BLOCK_SEPARATOR.join(_plain(child) for child in fragment.children))
    return "\n\n".join(parts)


def _plain(node: Any) -> str:
    if isinstance(node, pycrdt.XmlText):
        return "".join(chunk for chunk, _ in node.diff() if isinstance(chunk, str))
    children = list(node.children)
    inline = all(isinstance(child, pycrdt.XmlText) for child in children)
    return ("" if inline else _BLOCK_SEPARATOR).join(_plain(child) for child in children)


def _value(value: Any) -> Any:
    """A JSON-ready copy of a shared type or plain value."""
    if isinstance(value, pycrdt.Text):
        return str(value)
    if isinstance(value, pycrdt.Map):
        return {key: _value(item) for key, item in sorted(value.items())}
    if isinstance(value, pycrdt.Array):
        return [_value(item) for item in value]
    if isinstance(value, pycrdt.XmlFragment):
        return _xml_nodes(value)
    if isinstance(value, pycrdt.XmlElement | pycrdt.XmlText):
        return _xml(value)
    return _plain_value(value)


def _xml_nodes(parent: Any) -> list[dict[str, Any]]:
    """The children of an XML node; the runs of an XmlText stand among them."""
    nodes: list[dict[str, Any]] = []
    for child in parent.children:
        nodes.extend(_xml(child))
    return nodes


def _xml(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, pycrdt.XmlText):
        return [_run(chunk, attributes) for chunk, attributes in node.diff()]
    element: dict[str, Any] = {"element": node.tag}
    if attributes := {key: _plain_value(item) for key, item in node.attributes}:
        element["attributes"] = dict(sorted(attributes.items()))
    if children := _xml_nodes(node):
        element["children"] = children
    return [element]


def _run(chunk: Any, attributes: dict[str, Any] | None) -> dict[str, Any]:
    run: dict[str, Any] = {"text": chunk} if isinstance(chunk, str) else {"embed": chunk}
    if attributes:
        run["attributes"] = _plain_value(attributes)
    return run


def _plain_value(value: Any) -> Any:
    """Yjs numbers arrive as floats: whole ones become ints; bytes become base64."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bytes | bytearray):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {key: _plain_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_value(item) for item in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)
