"""The bundled editor's ProseMirror schema as data: its nodes, marks, attribute defaults
and mark order, as TipTap's StarterKit builds it (frontend/src/editor.js). Pure.

The table is read off the live editor (`editor.schema` in Chromium); the test
tests/test_editor_formats.py::test_the_schema_table_is_the_live_editors compares the two,
so an upgrade of TipTap that changes the schema fails it instead of drifting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

Check = Callable[[Any], bool]


def _text_or_null(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _level(value: Any) -> bool:
    return type(value) is int and 1 <= value <= 6


def _start(value: Any) -> bool:
    return type(value) is int and -(2**31) <= value < 2**31


@dataclass(frozen=True, slots=True)
class Attr:
    """One attribute: its default, and what a value must be (TipTap does not check
    values; these are what its renderers and parsers make sense of)."""

    default: Any = None
    check: Check = _text_or_null


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    content: str = ""  # a ProseMirror content expression
    group: str = ""
    inline: bool = False
    marks: str | None = None  # None: every mark (where it holds inline content); "": none
    code: bool = False
    atom: bool = False
    defining: bool = False
    attrs: Mapping[str, Attr] = field(default_factory=dict)

    def allows_mark(self, mark: str) -> bool:
        return self.marks is None or self.marks == "_" or mark in self.marks.split()


@dataclass(frozen=True, slots=True)
class MarkSpec:
    name: str
    rank: int
    excludes: str | None = None  # None: itself only; "_": every mark
    inclusive: bool | None = None
    attrs: Mapping[str, Attr] = field(default_factory=dict)

    def excludes_mark(self, other: str) -> bool:
        if self.excludes is None:
            return other == self.name
        return self.excludes == "_" or other in self.excludes.split()


@dataclass(frozen=True, slots=True)
class Schema:
    top: str
    nodes: Mapping[str, NodeSpec]
    marks: Mapping[str, MarkSpec]  # in rank order

    def in_group(self, node: str, name: str) -> bool:
        """Whether `node` is what a content expression's `name` (a node or a group) allows."""
        return node == name or name in self.nodes[node].group.split()

    def matches(self, content: str, children: Sequence[str]) -> bool:
        """Whether the node types `children` satisfy the content expression `content`.
        Handles the forms the bundled schema uses: terms `name`, `name*`, `name+`,
        `name?` in sequence (greedy: no two of its terms compete for one node)."""
        position = 0
        for term in content.split():
            match = _TERM.fullmatch(term)
            assert match is not None, term
            name, quantifier = match.groups()
            count = 0
            while (
                position < len(children)
                and self.in_group(children[position], name)
                and (quantifier in "*+" or count == 0)
            ):
                position, count = position + 1, count + 1
            if count == 0 and quantifier in ("", "+"):
                return False
        return position == len(children)

    def dump(self) -> dict[str, Any]:
        """The table in the shape the live editor's schema is dumped in (the test's)."""
        return {
            "topNode": self.top,
            "nodes": [
                {
                    "name": n.name,
                    "attrs": {k: {"default": a.default} for k, a in n.attrs.items()},
                    "content": n.content,
                    "group": n.group,
                    "inline": n.inline,
                    "marks": n.marks,
                    "code": n.code,
                    "atom": n.atom,
                    "defining": n.defining,
                }
                for n in self.nodes.values()
            ],
            "marks": [
                {
                    "name": m.name,
                    "rank": m.rank,
                    "attrs": {k: {"default": a.default} for k, a in m.attrs.items()},
                    "excludes": m.excludes,
                    "inclusive": m.inclusive,
                }
                for m in self.marks.values()
            ],
        }


_TERM = re.compile(r"([A-Za-z_][\w-]*)([*+?]?)")


def _schema(nodes: Sequence[NodeSpec], marks: Sequence[MarkSpec]) -> Schema:
    return Schema(
        "doc",
        MappingProxyType({n.name: n for n in nodes}),
        MappingProxyType({m.name: m for m in sorted(marks, key=lambda m: m.rank)}),
    )


# StarterKit 3.31.3 with undoRedo off and link {openOnClick: false, autolink: true}, in
# the order `editor.schema` lists them.
BUNDLED = _schema(
    [
        NodeSpec("paragraph", "inline*", "block"),
        NodeSpec("blockquote", "block+", "block", defining=True),
        NodeSpec("bulletList", "listItem+", "block list"),
        NodeSpec(
            "codeBlock",
            "text*",
            "block",
            marks="",
            code=True,
            defining=True,
            attrs={"language": Attr()},
        ),
        NodeSpec("doc", "block+"),
        NodeSpec("hardBreak", "", "inline", inline=True, atom=True),
        NodeSpec("heading", "inline*", "block", defining=True, attrs={"level": Attr(1, _level)}),
        NodeSpec("horizontalRule", "", "block", atom=True),
        NodeSpec("listItem", "paragraph block*", defining=True),
        NodeSpec(
            "orderedList",
            "listItem+",
            "block list",
            attrs={"start": Attr(1, _start), "type": Attr()},
        ),
        NodeSpec("text", "", "inline", inline=True, atom=True),
    ],
    [
        MarkSpec(
            "link",
            0,
            inclusive=True,
            attrs={
                "href": Attr(),
                "target": Attr("_blank"),
                "rel": Attr("noopener noreferrer nofollow"),
                "class": Attr(),
                "title": Attr(),
            },
        ),
        MarkSpec("bold", 1),
        MarkSpec("code", 2, excludes="_"),
        MarkSpec("italic", 3),
        MarkSpec("strike", 4),
        MarkSpec("underline", 5),
    ],
)
