"""What a document holds, as JSON or plain text, read from its `Tree`. No I/O.

Every root and nested type is shown whole, whatever mix of content it holds:

- A Map is an object; an Array a list; a Text a string, or when it has formatting or
  embeds, a list of runs: `{"text": "...", "attributes": {...}}` for text (attributes
  such as `{"bold": true}`, left out when empty) and `{"embed": value}` for an embed.
- An XmlFragment is a list of nodes; an element is `{"element": tag, "attributes": {...},
  "children": [...]}` (empty parts left out) whose children are nodes and runs in
  document order (Yjs 14 writes text straight into elements). An XmlText among nodes
  gives its runs, or, when it has attributes of its own (Lexical's paragraphs),
  `{"xmltext": [runs], "attributes": {...}}`; a nested XmlFragment is `{"fragment":
  [nodes]}` and an XmlHook `{"hook": name, "attributes": {...}}`.
- A shared type embedded in a text is a run `{"embed": <its JSON>, "type": "Map"}`
  (`Text`, `Array`, `XmlElement`, ...), so it is not mistaken for a plain embed.
- A type that holds what its kind does not (a Map with a sequence, a Text or an Array
  with map entries) is `{"type": kind, "attributes": {...}, "children": [...]}`; a root
  with both entries and a sequence (Lexical's root XmlText, Yjs 14's types) is
  `{"attributes": {...}, "children": [...]}`.
- Values are JSON as written; whole numbers are ints; binary is `{"base64": "..."}`;
  undefined is null; a subdocument is `{"subdocument": guid}`: its content lives in
  another document.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from collab.yjs.roots import RootType
from collab.yjs.tree import Item, Shared, Tree
from collab.yjs.update import (
    ANY,
    BINARY,
    DOC,
    EMBED,
    FORMAT,
    JSON,
    STRING,
    TYPE,
    Y_ARRAY,
    Y_MAP,
    Y_TEXT,
    Y_XML_ELEMENT,
    Y_XML_FRAGMENT,
    Y_XML_HOOK,
    Y_XML_TEXT,
    UpdateFormatError,
    UpdateReader,
)

_BLOCK_SEPARATOR = "\n"
KIND_NAMES = {
    Y_ARRAY: "Array",
    Y_MAP: "Map",
    Y_TEXT: "Text",
    Y_XML_ELEMENT: "XmlElement",
    Y_XML_FRAGMENT: "XmlFragment",
    Y_XML_HOOK: "XmlHook",
    Y_XML_TEXT: "XmlText",
}
_ROOT_REFS: dict[RootType, int] = {
    "text": Y_TEXT,
    "map": Y_MAP,
    "array": Y_ARRAY,
    "xml": Y_XML_FRAGMENT,
}


def to_json(tree: Tree, types: dict[str, RootType | None]) -> dict[str, Any]:
    """Every root of `tree` as JSON-ready values; roots of unknown type are left out."""
    return {
        name: _shared(tree.root(name), _ROOT_REFS[kind])
        for name, kind in sorted(types.items())
        if kind
    }


def to_text(tree: Tree, types: dict[str, RootType | None]) -> str:
    """The plain text of every Text and XmlFragment root, in name order."""
    texts = (
        _plain(tree.root(name), in_element=False)
        for name, kind in sorted(types.items())
        if kind in ("text", "xml")
    )
    return "\n\n".join(text for text in texts if text)


# --- JSON


def _shared(shared: Shared, kind: int) -> Any:
    """A shared type as JSON, given the kind it is read as."""
    entries = {key: _entry(item) for key, item in sorted(shared.attributes().items())}
    children = list(shared.children())
    if shared.item is None and entries and children:
        return _generic(None, entries, children)
    if kind == Y_MAP:
        return entries if not children else _generic(kind, entries, children)
    if kind == Y_ARRAY:
        if entries or any(item.kind in (STRING, FORMAT, EMBED) for item in children):
            return _generic(kind, entries, children)
        return [value for item in children for value in _values(item)]
    if kind == Y_TEXT:
        if entries:
            return _generic(kind, entries, children)
        runs = _runs(children, embed_types=True)
        if all(set(run) == {"text"} for run in runs):
            return "".join(run["text"] for run in runs)
        return runs
    if kind == Y_XML_ELEMENT:
        node: dict[str, Any] = {"element": shared.name}
        return _with_parts(node, entries, _nodes(children))
    if kind == Y_XML_TEXT:
        return _with_parts({"xmltext": _runs(children, embed_types=True)}, entries, [])
    if kind == Y_XML_HOOK:
        return _with_parts({"hook": shared.name}, entries, [])
    nodes = _nodes(children)  # an XmlFragment
    return nodes if shared.item is None else _with_parts({"fragment": nodes}, entries, [])


def _generic(kind: int | None, entries: dict[str, Any], children: list[Item]) -> dict[str, Any]:
    """A type with content its kind does not hold; a root's kind was only read from its
    content, so a root says none."""
    node = {"type": KIND_NAMES[kind]} if kind is not None else {}
    return _with_parts(node, entries, _nodes(children))


def _with_parts(
    node: dict[str, Any], entries: dict[str, Any], children: list[Any]
) -> dict[str, Any]:
    if entries:
        node["attributes"] = entries
    if children:
        node["children"] = children
    return node


def _entry(item: Item) -> Any:
    values = _values(item)
    return values[-1] if values else None


def _values(item: Item) -> list[Any]:
    """The values an item of a sequence or a map holds, as JSON."""
    if item.kind == TYPE:
        assert item.shared is not None and item.shared.type_ref is not None
        return [_shared(item.shared, item.shared.type_ref)]
    if item.kind == ANY:
        assert isinstance(item.content, list)
        return [decode_any(raw) for raw in item.content]
    if item.kind == JSON:
        assert isinstance(item.content, list)
        return [_json_element(raw) for raw in item.content]
    if item.kind == BINARY:
        assert isinstance(item.content, bytes)
        return [_binary(UpdateReader(item.content).var_bytes())]
    if item.kind == DOC:
        assert isinstance(item.content, bytes)
        guid = UpdateReader(item.content).var_bytes().decode("utf-8", "surrogatepass")
        return [{"subdocument": guid}]
    if item.kind == EMBED:
        return [{"embed": _embed(item)}]
    if item.kind == STRING:
        assert isinstance(item.content, str)
        return [{"text": item.content}]
    return []  # formatting, outside a text, says nothing


def _nodes(children: list[Item]) -> list[Any]:
    """The children of an XML node, or of a type read generically: nodes, and runs of
    text where the type holds text itself."""
    nodes: list[Any] = []
    texts: list[Item] = []
    for item in children:
        if item.kind in (STRING, EMBED, FORMAT):
            texts.append(item)
            continue
        nodes.extend(_runs(texts, embed_types=False))
        texts = []
        if item.kind == TYPE and item.shared is not None and item.shared.type_ref == Y_XML_TEXT:
            xmltext: dict[str, Any] = _shared(item.shared, Y_XML_TEXT)
            nodes.extend(xmltext["xmltext"] if set(xmltext) == {"xmltext"} else [xmltext])
        elif item.kind == TYPE:
            nodes.extend(_values(item))
        else:
            nodes.extend({"value": value} for value in _values(item))
    nodes.extend(_runs(texts, embed_types=False))
    return nodes


def _runs(items: list[Item], *, embed_types: bool) -> list[dict[str, Any]]:
    """Text, embeds (and with `embed_types`, nested types) as runs with the formatting
    that FORMAT items in between set, as Yjs' `toDelta`."""
    runs: list[dict[str, Any]] = []
    attributes: dict[str, Any] = {}
    for item in items:
        if item.kind == FORMAT:
            key, value = format_of(item)
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
            continue
        if item.kind == STRING:
            assert isinstance(item.content, str)
            run: dict[str, Any] = {"text": item.content}
        elif item.kind == EMBED:
            run = {"embed": _embed(item)}
        elif item.kind == TYPE and embed_types and item.shared is not None:
            assert item.shared.type_ref is not None
            run = {"embed": _values(item)[0], "type": KIND_NAMES[item.shared.type_ref]}
        else:
            for value in _values(item):
                runs.append({"embed": value})
            continue
        if attributes:
            run["attributes"] = dict(sorted(attributes.items()))
        previous = runs[-1] if runs else None
        if (
            "text" in run
            and previous is not None
            and "text" in previous
            and previous.get("attributes") == run.get("attributes")
        ):
            previous["text"] += run["text"]
        else:
            runs.append(run)
    return runs


def format_of(item: Item) -> tuple[str, Any]:
    """The key and the value (None: remove the format) of a FORMAT item."""
    assert isinstance(item.content, bytes)
    reader = UpdateReader(item.content)
    key = reader.var_bytes().decode("utf-8", "surrogatepass")
    return key, _plain_value(json.loads(reader.var_bytes()))


def _embed(item: Item) -> Any:
    assert isinstance(item.content, bytes)
    return _plain_value(json.loads(UpdateReader(item.content).var_bytes()))


def _json_element(raw: bytes) -> Any:
    text = UpdateReader(raw).var_bytes()
    return None if text == b"undefined" else _plain_value(json.loads(text))


# --- plain text


def _plain(shared: Shared, *, in_element: bool) -> str:
    """The text of a type: its strings, with a line between blocks. An XmlText right
    inside an element is inline text (y-prosemirror's); anywhere else, as Lexical's
    paragraphs in its root XmlText, it is a block."""
    parts: list[str] = []
    line: list[str] = []
    blocks = False
    for item in shared.children():
        if item.kind == STRING:
            assert isinstance(item.content, str)
            line.append(item.content)
        elif item.kind == TYPE and item.shared is not None:
            nested = item.shared.type_ref
            if nested == Y_XML_TEXT and in_element:
                line.append(_plain(item.shared, in_element=False))
            elif nested in (Y_XML_ELEMENT, Y_XML_FRAGMENT, Y_XML_TEXT, Y_TEXT):
                if line:
                    parts.append("".join(line))
                    line = []
                parts.append(_plain(item.shared, in_element=nested == Y_XML_ELEMENT))
                blocks = True
    if line or not blocks:
        parts.append("".join(line))
    return _BLOCK_SEPARATOR.join(parts)


# --- lib0 values


def decode_any(raw: bytes) -> Any:
    """One lib0 `any` value as JSON: undefined is null, whole numbers are ints.

    Raises:
        UpdateFormatError: the bytes are not one value.
    """
    reader = UpdateReader(raw)
    value = _any(reader, 0)
    reader.expect_end()
    return value


def _any(reader: UpdateReader, depth: int) -> Any:
    if depth > 64:
        raise UpdateFormatError("value nested too deeply")
    kind = reader.byte()
    if kind in (127, 126):
        return None
    if kind in (121, 120):
        return kind == 120
    if kind == 125:
        return _var_int(reader)
    if kind in (124, 123, 122):
        size = {124: 4, 123: 8, 122: 8}[kind]
        start = reader.pos
        reader.skip(size)
        chunk = reader.data[start : reader.pos]
        number = struct.unpack({124: ">f", 123: ">d", 122: ">q"}[kind], chunk)[0]
        return _plain_value(number)
    if kind == 119:
        return reader.var_bytes().decode("utf-8", "surrogatepass")
    if kind == 118:
        entries = {}
        for _ in range(reader.var_uint()):
            key = reader.var_bytes().decode("utf-8", "surrogatepass")
            entries[key] = _any(reader, depth + 1)
        return entries
    if kind == 117:
        return [_any(reader, depth + 1) for _ in range(reader.var_uint())]
    if kind == 116:
        return _binary(reader.var_bytes())
    raise UpdateFormatError(f"unknown value kind {kind}")


def _var_int(reader: UpdateReader) -> int:
    byte = reader.byte()
    negative = bool(byte & 0x40)
    value, shift = byte & 0x3F, 6
    while byte & 0x80:
        byte = reader.byte()
        value |= (byte & 0x7F) << shift
        shift += 7
    return -value if negative else value


def _binary(data: bytes) -> dict[str, str]:
    return {"base64": base64.b64encode(data).decode()}


def _plain_value(value: Any) -> Any:
    """Whole floats become ints, in nested values too."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _plain_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_value(item) for item in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)
