"""ProseMirror JSON rendered as HTML the way TipTap's `editor.getHTML()` renders the
bundled schema: each node's and mark's `renderHTML`, marks nested as ProseMirror's
DOMSerializer nests them, escaped as Chromium's `innerHTML` serialises. Pure.

Node and mark types the schema has not are rendered as their content alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from collab.prosemirror.node import Node

# What a DOM serialises escaped, in text and in attribute values (Chromium 138 and later
# escape < and > in attributes too; measured with the bundled editor's getHTML()).
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\u00a0": "&nbsp;"})
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", '"': "&quot;", "<": "&lt;", ">": "&gt;", "\u00a0": "&nbsp;"}
)

# TipTap's Link renders an href it does not allow (javascript:, say) as "": allowed are
# the usual schemes, and relative URLs. Whitespace and control characters are ignored first.
_ALLOWED_URI = re.compile(
    r"^(?:(?:https?|ftps?|mailto|tel|callto|sms|cid|xmpp):|[^a-z]|[a-z0-9+.\-]+(?:[^a-z+.\-:]|$))",
    re.IGNORECASE,
)
_URI_IGNORED = re.compile(r"[\u0000-\u0020\u00a0\u1680\u180e\u2000-\u2029\u205f\u3000]")

Tag = tuple[str, dict[str, Any]]

_BLOCK_TAGS: dict[str, Callable[[dict[str, Any]], Tag]] = {
    "paragraph": lambda a: ("p", {}),
    "heading": lambda a: (f"h{a.get('level', 1)}", {}),
    "blockquote": lambda a: ("blockquote", {}),
    "bulletList": lambda a: ("ul", {}),
    "orderedList": lambda a: (
        "ol",
        {"start": None if a.get("start", 1) == 1 else a["start"], "type": a.get("type")},
    ),
    "listItem": lambda a: ("li", {}),
}
_VOID_TAGS = {"hardBreak": "br", "horizontalRule": "hr"}
_MARK_TAGS: dict[str, Callable[[dict[str, Any]], Tag]] = {
    "link": lambda a: (
        "a",
        {
            "target": a.get("target"),
            "rel": a.get("rel"),
            "class": a.get("class"),
            "href": allowed_href(a.get("href")),
            "title": a.get("title"),
        },
    ),
    "bold": lambda a: ("strong", {}),
    "code": lambda a: ("code", {}),
    "italic": lambda a: ("em", {}),
    "strike": lambda a: ("s", {}),
    "underline": lambda a: ("u", {}),
}


def to_html(doc: Node) -> str:
    """`doc` (normalised) as the bundled editor's getHTML() gives it."""
    out: list[str] = []
    _children(doc.get("content", []), out)
    return "".join(out)


def allowed_href(href: Any) -> str | None:
    """The href a link is rendered (and read) with: "" for one TipTap does not allow."""
    if href is None:
        return None
    return str(href) if _ALLOWED_URI.match(_URI_IGNORED.sub("", str(href))) else ""


def escape_text(text: str) -> str:
    return text.translate(_TEXT_ESCAPES)


def _open(tag: str, attrs: dict[str, Any]) -> str:
    shown = "".join(
        f' {name}="{str(value).translate(_ATTR_ESCAPES)}"'
        for name, value in attrs.items()
        if value is not None
    )
    return f"<{tag}{shown}>"


def _node(node: Node, out: list[str]) -> None:
    name, attrs = node["type"], node.get("attrs", {})
    if name == "text":
        out.append(escape_text(node["text"]))
    elif name in _VOID_TAGS:
        out.append(f"<{_VOID_TAGS[name]}>")
    elif name == "codeBlock":
        language = attrs.get("language")
        out.append("<pre>" + _open("code", {"class": f"language-{language}" if language else None}))
        _children(node.get("content", []), out)
        out.append("</code></pre>")
    elif name in _BLOCK_TAGS:
        tag, tag_attrs = _BLOCK_TAGS[name](attrs)
        out.append(_open(tag, tag_attrs))
        _children(node.get("content", []), out)
        out.append(f"</{tag}>")
    else:  # a type of another schema: its content
        _children(node.get("content", []), out)


def _children(children: list[Node], out: list[str]) -> None:
    """Children in order, their marks opened and closed as DOMSerializer does: the marks
    a node shares (in order) with the open ones stay open, the others close."""
    active: list[tuple[dict[str, Any], str]] = []  # open marks, and their closing tags
    for child in children:
        marks = [mark for mark in child.get("marks", ()) if mark["type"] in _MARK_TAGS]
        keep = 0
        while keep < len(active) and keep < len(marks) and marks[keep] == active[keep][0]:
            keep += 1
        while len(active) > keep:
            out.append(active.pop()[1])
        for mark in marks[keep:]:
            tag, tag_attrs = _MARK_TAGS[mark["type"]](mark.get("attrs", {}))
            out.append(_open(tag, tag_attrs))
            active.append((mark, f"</{tag}>"))
        _node(child, out)
    while active:
        out.append(active.pop()[1])
