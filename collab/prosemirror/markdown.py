"""Markdown in and out of ProseMirror JSON, by way of HTML. Pure.

In: markdown-it-py (CommonMark, with GFM's ~~strikethrough~~) renders HTML, which goes
through the same sanitiser and parse rules as HTML put by a client (collab.prosemirror.dom):
raw HTML in Markdown is held to what the schema can hold like any other.
Out: markdownify over the HTML `to_html` renders. It escapes what Markdown would read as
syntax and writes nested lists, code fences with their language and links; a renderer of
our own would be one more escaping scheme to get right. Underline has no Markdown: its
text is kept, the mark is lost.
"""

from __future__ import annotations

from typing import Any

from markdown_it import MarkdownIt
from markdownify import markdownify

from collab.prosemirror.dom import from_html
from collab.prosemirror.html import to_html
from collab.prosemirror.node import Node

_LANGUAGE_PREFIX = "language-"


def from_markdown(text: str) -> Node:
    """Markdown as a normalised ProseMirror document of the bundled schema."""
    parser = MarkdownIt("commonmark").enable("strikethrough")
    doc = from_html(parser.render(text))
    _trim_fences(doc)
    return doc


def _trim_fences(node: Node) -> None:
    """A fenced block's text ends in the newline before its closing fence, which is no
    part of the code (an editor's code block does not end in one)."""
    for child in node.get("content", ()):
        if child["type"] == "codeBlock" and child.get("content"):
            text = child["content"][0]
            text["text"] = text["text"].removesuffix("\n")
            if not text["text"]:
                del child["content"]
        else:
            _trim_fences(child)


def to_markdown(doc: Node) -> str:
    """`doc` (normalised) as CommonMark with ~~strikethrough~~."""
    markdown: str = markdownify(
        to_html(doc),
        heading_style="ATX",
        bullets="-",
        strong_em_symbol="*",
        newline_style="BACKSLASH",
        code_language_callback=_language,
    )
    return markdown.strip("\n") + "\n"


def _language(pre: Any) -> str | None:
    code = pre.find("code")
    classes = code.get("class", []) if code is not None else []
    for name in classes:
        if name.startswith(_LANGUAGE_PREFIX):
            return str(name[len(_LANGUAGE_PREFIX) :])
    return None
