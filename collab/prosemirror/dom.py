"""HTML in: sanitised by nh3 to what the bundled schema can hold, then read into
ProseMirror JSON by the schema's parse rules (TipTap's `parseHTML`, with whitespace
collapsed as ProseMirror's DOMParser collapses it). Pure.

Scripts, styles, comments and event handlers are gone before anything is read; tags the
schema has no node or mark for are dropped and their text kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import nh3

from collab.prosemirror.html import allowed_href
from collab.prosemirror.node import MAX_DEPTH, Node, SchemaError, normalise
from collab.prosemirror.schema import BUNDLED

_ALLOWED_TAGS = {
    *("p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li", "pre", "hr"),
    *("br", "strong", "b", "em", "i", "s", "del", "strike", "u", "code", "a"),
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "target", "rel", "title", "class"},
    "ol": {"start", "type"},
    "code": {"class"},
}
_VOID = {"br", "hr"}
_MARKS = {
    **dict.fromkeys(("strong", "b"), "bold"),
    **dict.fromkeys(("em", "i"), "italic"),
    **dict.fromkeys(("s", "del", "strike"), "strike"),
    "u": "underline",
    "code": "code",
    "a": "link",
}
_BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li", "pre", "hr"}
_SPACE = re.compile(r"[ \t\r\n\f]+")
_LANGUAGE_PREFIX = "language-"


@dataclass(slots=True)
class _Element:
    tag: str
    attrs: dict[str, str]
    children: list[_Element | str] = field(default_factory=list)


def sanitize(html: str) -> str:
    """`html` with only what the bundled schema can hold (nh3)."""
    return nh3.clean(
        html, tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES, link_rel=None, strip_comments=True
    )


def from_html(html: str) -> Node:
    """HTML as a normalised ProseMirror document of the bundled schema.

    Raises:
        SchemaError: elements nested deeper than `MAX_DEPTH`.
    """
    root = _parse(sanitize(html))
    return normalise({"type": "doc", "content": _blocks(root.children, [])})


class _TreeBuilder(HTMLParser):
    """Sanitised HTML (every element closed, by nh3's serialiser) as a tree."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack = [_Element("body", {})]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = _Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in _VOID:
            if len(self.stack) > MAX_DEPTH:
                raise SchemaError(f"HTML elements nested more than {MAX_DEPTH} deep")
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        if tag not in _VOID and len(self.stack) > 1 and self.stack[-1].tag == tag:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def _parse(html: str) -> _Element:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.stack[0]


Marks = list[Node]


def _blocks(children: list[_Element | str], marks: Marks) -> list[Node]:
    """Block content: blocks as they come, loose inline content in paragraphs."""
    blocks: list[Node] = []
    inline: list[Node] = []

    def flush() -> None:
        if content := _finished(inline):
            blocks.append({"type": "paragraph", "content": content})
        inline.clear()

    def walk(nodes: list[_Element | str], marks: Marks) -> None:
        for child in nodes:
            if isinstance(child, _Element) and child.tag in _BLOCKS:
                flush()
                blocks.extend(_block(child, marks))
            elif isinstance(child, _Element) and child.tag in _MARKS:
                walk(child.children, _with_mark(marks, child))
            elif isinstance(child, _Element) and child.tag != "br":
                walk(child.children, marks)
            else:
                inline.extend(_inline([child], marks))

    walk(children, marks)
    flush()
    return blocks


def _block(element: _Element, marks: Marks) -> list[Node]:
    tag = element.tag
    if tag == "p":
        return [_textblock({"type": "paragraph"}, element, marks)]
    if tag[0] == "h" and tag[1:].isdigit():
        return [_textblock({"type": "heading", "attrs": {"level": int(tag[1:])}}, element, marks)]
    if tag == "hr":
        return [{"type": "horizontalRule"}]
    if tag == "pre":
        return [_code_block(element)]
    if tag == "blockquote":
        return [{"type": "blockquote", "content": _blocks(element.children, marks) or _EMPTY}]
    if tag in ("ul", "ol"):
        return [_list(element, marks)]
    return _item_content(element, marks)  # an <li> outside a list: its content


_EMPTY = [{"type": "paragraph"}]


def _textblock(node: Node, element: _Element, marks: Marks) -> Node:
    if content := _finished(_inline(element.children, marks)):
        node["content"] = content
    return node


def _list(element: _Element, marks: Marks) -> Node:
    items: list[Node] = []
    loose: list[_Element | str] = []  # what stands between items goes in an item
    for child in [*element.children, None]:
        if child is not None and not (isinstance(child, _Element) and child.tag == "li"):
            loose.append(child)
            continue
        if _blocks(loose, marks):
            items.append(
                {"type": "listItem", "content": _item_content(_Element("li", {}, loose), marks)}
            )
        loose = []
        if child is not None:
            items.append({"type": "listItem", "content": _item_content(child, marks)})
    node: Node = {"type": "bulletList" if element.tag == "ul" else "orderedList", "content": items}
    if not items:
        node["content"] = [{"type": "listItem", "content": list(_EMPTY)}]
    if element.tag == "ol":
        node["attrs"] = {
            "start": _start(element.attrs.get("start")),
            "type": element.attrs.get("type"),
        }
    return node


def _item_content(element: _Element, marks: Marks) -> list[Node]:
    """A list item's blocks: a paragraph first, as the schema needs."""
    content = _blocks(element.children, marks)
    if not content or content[0]["type"] != "paragraph":
        content.insert(0, {"type": "paragraph"})
    return content


def _start(value: str | None) -> int:
    try:
        start = int(value) if value is not None else 1
    except ValueError:
        return 1
    return start if -(2**31) <= start < 2**31 else 1


def _code_block(element: _Element) -> Node:
    first = next((c for c in element.children if isinstance(c, _Element)), None)
    classes = first.attrs.get("class", "").split() if first is not None else []
    languages = [c[len(_LANGUAGE_PREFIX) :] for c in classes if c.startswith(_LANGUAGE_PREFIX)]
    node: Node = {"type": "codeBlock", "attrs": {"language": languages[0] if languages else None}}
    if text := _text_content(element):
        node["content"] = [{"type": "text", "text": text}]
    return node


def _text_content(element: _Element) -> str:
    return "".join(
        child if isinstance(child, str) else "\n" if child.tag == "br" else _text_content(child)
        for child in element.children
    )


def _inline(children: list[_Element | str], marks: Marks) -> list[Node]:
    """Inline content: text with the marks around it, hard breaks; blocks nested in
    inline content give their text."""
    out: list[Node] = []
    for child in children:
        if isinstance(child, str):
            out.append({"type": "text", "text": child, "marks": marks})
        elif child.tag == "br":
            out.append({"type": "hardBreak"})
        elif child.tag in _MARKS:
            out.extend(_inline(child.children, _with_mark(marks, child)))
        else:
            out.extend(_inline(child.children, marks))
    return out


def _finished(inline: list[Node]) -> list[Node]:
    """Whitespace collapsed as ProseMirror's DOMParser does: runs of it are one space,
    none at the start of a block, after a break or after a space, none at the end."""
    out: list[Node] = []
    for node in inline:
        if node["type"] != "text":
            out.append(node)
            continue
        text = _SPACE.sub(" ", node["text"])
        previous = out[-1] if out else None
        if text.startswith(" ") and (
            previous is None or previous["type"] == "hardBreak" or previous["text"].endswith(" ")
        ):
            text = text[1:]
        if text:
            out.append({**node, "text": text})
    if out and out[-1]["type"] == "text":
        out[-1]["text"] = out[-1]["text"].rstrip(" ")
        if not out[-1]["text"]:
            out.pop()
    return [_without_empty_marks(node) for node in out]


def _without_empty_marks(node: Node) -> Node:
    if "marks" in node and not node["marks"]:
        return {key: value for key, value in node.items() if key != "marks"}
    return node


def _with_mark(marks: Marks, element: _Element) -> Marks:
    """`marks` with the element's mark added as ProseMirror's `Mark.addToSet` adds it:
    a mark that excludes another replaces it; one excluded by another is not added."""
    mark = _mark(element)
    if mark is None:
        return marks
    spec = BUNDLED.marks[mark["type"]]
    kept: Marks = []
    for other in marks:
        if spec.excludes_mark(other["type"]):
            continue
        if BUNDLED.marks[other["type"]].excludes_mark(mark["type"]):
            return marks
        kept.append(other)
    return [*kept, mark]


def _mark(element: _Element) -> Node | None:
    name = _MARKS[element.tag]
    if name != "link":
        return {"type": name}
    href = allowed_href(element.attrs.get("href"))
    if not href:  # TipTap's rule is a[href], for an href it allows
        return None
    attrs: dict[str, Any] = {"href": href}
    for attr in ("target", "rel", "class", "title"):
        if attr in element.attrs:
            attrs[attr] = element.attrs[attr]
    return {"type": "link", "attrs": attrs}
