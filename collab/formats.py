"""The formats a document's content goes out and comes in: their names, their content
types, and the conversions between a full state and each. Pure and CPU-bound: callers
run them in a thread (measured: 400 KB of Markdown, about 100 pages, takes 3.5 s to a
state, and back out 2.6 s as ProseMirror JSON, 3.4 s as HTML, 6.8 s as Markdown, mostly
in markdown-it-py, html.parser and markdownify's BeautifulSoup).

Out: `json` and `text` (every root, collab's own shape), `update` (the state itself), and
`prosemirror`, `html`, `markdown` (one XmlFragment root, the bundled editor's `field`).
In: `prosemirror`, `html`, `markdown` become a target state of that one root.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal, get_args

from collab.errors import BadRequest, UnsupportedMediaType
from collab.prosemirror.dom import from_html
from collab.prosemirror.html import to_html
from collab.prosemirror.mapping import DEFAULT_FIELD as DEFAULT_FIELD
from collab.prosemirror.mapping import state_of, to_prosemirror
from collab.prosemirror.markdown import from_markdown, to_markdown
from collab.prosemirror.node import Node, SchemaError, normalise, with_trailing_paragraph
from collab.yjs import content
from collab.yjs.roots import root_types
from collab.yjs.tree import Tree

Format = Literal["json", "text", "update", "prosemirror", "html", "markdown"]
FORMATS: tuple[Format, ...] = get_args(Format)
RichFormat = Literal["prosemirror", "html", "markdown"]
RICH_FORMATS: tuple[RichFormat, ...] = get_args(RichFormat)
CONTENT_TYPES: dict[Format, str] = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "update": "application/octet-stream",
    "prosemirror": "application/json",
    "html": "text/html; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
}
# The body a PUT of content may have, by its Content-Type (parameters aside).
PUT_TYPES: dict[str, RichFormat] = {
    "application/json": "prosemirror",
    "text/html": "html",
    "text/markdown": "markdown",
}
MAX_FIELD_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Exported:
    body: bytes
    content_type: str


def check_format(fmt: str) -> Format:
    """`fmt` if it is one of FORMATS."""
    for known in FORMATS:
        if fmt == known:
            return known
    raise BadRequest(f"format must be one of {', '.join(FORMATS)}")


def check_rich_format(fmt: str) -> RichFormat:
    """`fmt` if it is one of RICH_FORMATS."""
    for known in RICH_FORMATS:
        if fmt == known:
            return known
    raise BadRequest(f"format must be one of {', '.join(RICH_FORMATS)}")


def check_field(field: str) -> str:
    """A root's name: 1 to 200 characters, no control characters."""
    if (
        not field
        or len(field) > MAX_FIELD_LENGTH
        or any(unicodedata.category(char) == "Cc" for char in field)
    ):
        raise BadRequest(f"a field is 1 to {MAX_FIELD_LENGTH} characters, no control characters")
    return field


def rich_format_of(content_type: str) -> RichFormat:
    """The format of a body of `content_type` (its parameters aside).

    Raises:
        UnsupportedMediaType: none of PUT_TYPES.
    """
    media = content_type.split(";")[0].strip().lower()
    if media not in PUT_TYPES:
        raise UnsupportedMediaType(f"send content as one of {', '.join(PUT_TYPES)}, not {media!r}")
    return PUT_TYPES[media]


def export(
    state: bytes, fmt: Format, hints: dict[str, Any], field: str = DEFAULT_FIELD
) -> Exported:
    """A full state rendered as `fmt`.

    Raises:
        UpdateFormatError: the state cannot be read.
        BadRequest: a rich format of a root that is no XmlFragment.
    """
    if fmt == "update":
        return Exported(state, CONTENT_TYPES[fmt])
    tree = Tree(state)
    types = root_types(tree, hints)
    if fmt == "text":
        body = content.to_text(tree, types)
    elif fmt == "json":
        body = content.dumps(content.to_json(tree, types))
    else:
        if types.get(field) not in (None, "xml"):
            raise BadRequest(f"root {field!r} is a {types[field]}, not rich text (an XmlFragment)")
        doc = to_prosemirror(tree, field)
        body = _render(doc, fmt)
    return Exported(body.encode(), CONTENT_TYPES[fmt])


def _render(doc: Node, fmt: RichFormat) -> str:
    if fmt == "html":
        return to_html(doc)
    if fmt == "markdown":
        return to_markdown(doc)
    return json.dumps(doc, ensure_ascii=False)


def parse(fmt: RichFormat, body: bytes) -> Node:
    """A body of `fmt` as a normalised ProseMirror document of the bundled schema, as the
    bundled editor shows it (ending in a paragraph).

    Raises:
        BadRequest: the body is not UTF-8, not JSON, or not a document the schema holds.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8: {exc}") from None
    try:
        return with_trailing_paragraph(_read(fmt, text))
    except SchemaError as exc:
        raise BadRequest(f"not a document of the bundled editor's schema: {exc}") from None


def _read(fmt: RichFormat, text: str) -> Node:
    if fmt == "html":
        return from_html(text)
    if fmt == "markdown":
        return from_markdown(text)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    return normalise(data)


def target_state(fmt: RichFormat, body: bytes, field: str = DEFAULT_FIELD) -> bytes:
    """A full state whose root `field` holds the document a body of `fmt` gives (see
    `parse` for what it raises)."""
    return state_of(parse(fmt, body), field)
