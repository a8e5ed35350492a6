"""ProseMirror JSON, HTML and Markdown for the bundled schema: literals in, exact results out
(collab/prosemirror/). What the live editor does with the same content is
tests/test_editor_formats.py's."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest

from collab.prosemirror.dom import from_html
from collab.prosemirror.html import to_html
from collab.prosemirror.mapping import state_of, to_prosemirror
from collab.prosemirror.markdown import from_markdown, to_markdown
from collab.prosemirror.node import MAX_DEPTH, SchemaError, normalise, with_trailing_paragraph
from collab.prosemirror.schema import BUNDLED
from collab.yjs import content
from collab.yjs.tree import Tree

LINK = {
    "href": "https://example.com/?a=1&b=2",
    "target": "_blank",
    "rel": "noopener noreferrer nofollow",
    "class": None,
    "title": None,
}


def text(value: str, *marks: str | dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": value}
    if marks:
        node["marks"] = [{"type": m} if isinstance(m, str) else m for m in marks]
    return node


def block(kind: str, *content: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"type": kind}
    if attrs:
        node["attrs"] = attrs
    if content:
        node["content"] = list(content)
    return node


def item(*content: dict[str, Any]) -> dict[str, Any]:
    return block("listItem", *content)


# Every node and mark of the schema, normalised.
EVERYTHING = block(
    "doc",
    block("heading", text("Title"), level=1),
    block(
        "paragraph",
        text("bold", "bold"),
        text(" "),
        text("both", "bold", "italic"),
        text(" "),
        text("struck", "strike"),
        text(" "),
        text("under", "underline"),
        text(" "),
        text("x()", "code"),
        {"type": "hardBreak"},
        text("a link", {"type": "link", "attrs": LINK}),
    ),
    block("bulletList", item(block("paragraph", text("one"))), item(block("paragraph"))),
    block(
        "orderedList",
        item(
            block("paragraph", text("three")),
            block("bulletList", item(block("paragraph", text("nested")))),
        ),
        start=3,
        type=None,
    ),
    block("blockquote", block("paragraph", text("quoted"))),
    block("codeBlock", text("x = 1\n  y < 2"), language="python"),
    {"type": "horizontalRule"},
    block("heading", text("Six"), level=6),
    block("paragraph"),
)


# --- normalise


def test_normalise_fills_defaults_orders_marks_and_joins_text() -> None:
    given = {
        "type": "doc",
        "content": [
            {"type": "heading", "content": [text("a"), text("b")]},
            {"type": "orderedList", "content": [item(block("paragraph"))]},
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "x", "marks": [{"type": "italic"}, {"type": "bold"}]},
                    {
                        "type": "text",
                        "text": "y",
                        "marks": [{"type": "link", "attrs": {"href": "/"}}],
                    },
                ],
            },
            {"type": "codeBlock"},
        ],
    }
    link = {**LINK, "href": "/"}
    assert normalise(given) == block(
        "doc",
        block("heading", text("ab"), level=1),
        block("orderedList", item(block("paragraph")), start=1, type=None),
        block("paragraph", text("x", "bold", "italic"), text("y", {"type": "link", "attrs": link})),
        block("codeBlock", language=None),
    )


def test_normalise_keeps_a_normalised_document_as_it_is() -> None:
    assert normalise(EVERYTHING) == EVERYTHING


def test_an_empty_document_is_one_empty_paragraph() -> None:
    assert normalise({"type": "doc"}) == block("doc", block("paragraph"))
    assert normalise({"type": "doc", "content": []}) == block("doc", block("paragraph"))


def test_a_trailing_paragraph_is_added_after_any_other_last_block() -> None:
    ends_in_rule = block("doc", {"type": "horizontalRule"})
    assert with_trailing_paragraph(ends_in_rule) == block(
        "doc", {"type": "horizontalRule"}, block("paragraph")
    )
    assert with_trailing_paragraph(EVERYTHING) is EVERYTHING


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "a document is an object"),
        ({"type": "paragraph"}, "a document is an object"),
        (block("doc", {"type": "image"}), r"doc.content\[0\]: unknown node type 'image'"),
        (block("doc", text("loose")), "a doc holds 'block\\+', not text"),
        (block("doc", item(block("paragraph"))), "not listItem"),
        (block("doc", block("bulletList")), "a bulletList holds 'listItem\\+', not nothing"),
        (block("doc", block("bulletList", block("paragraph"))), "not paragraph"),
        (
            block("doc", block("bulletList", item(block("bulletList", item(block("paragraph")))))),
            "a listItem holds 'paragraph block\\*', not bulletList",
        ),
        (block("doc", block("heading", level=7)), r"attrs.level: 7 is not a value"),
        (block("doc", block("heading", level="2")), r"attrs.level: '2' is not a value"),
        (block("doc", block("paragraph", align="left")), r"unknown attributes \['align'\]"),
        (block("doc", block("orderedList", item(block("paragraph")), start=1.5)), "start"),
        (block("doc", block("codeBlock", text("x", "bold"))), "no bold in a codeBlock"),
        (block("doc", block("paragraph", text("x", "code", "bold"))), "bold and code cannot"),
        (block("doc", block("paragraph", text("x", "bold", "bold"))), "bold and bold cannot"),
        (block("doc", block("paragraph", text("x", "comment"))), "unknown mark type 'comment'"),
        (block("doc", block("paragraph", {"type": "text", "text": ""})), "non-empty 'text'"),
        (block("doc", block("paragraph", {"type": "text", "text": 3})), "non-empty 'text'"),
        ({"type": "doc", "content": "text"}, "a list of nodes"),
        ({"type": "doc", "content": [{"type": "paragraph", "id": 1}]}, r"unknown keys \['id'\]"),
        (block("doc", block("paragraph", text("x", {"type": "link", "attrs": {"href": 1}}))), "1"),
    ],
)
def test_a_document_the_schema_cannot_hold_is_refused_saying_where(doc: Any, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        normalise(doc)


def test_nesting_is_bounded() -> None:
    deep: dict[str, Any] = block("paragraph")
    for _ in range(MAX_DEPTH + 1):
        deep = block("blockquote", deep)
    with pytest.raises(SchemaError, match=f"nested more than {MAX_DEPTH} deep"):
        normalise(block("doc", deep))


def test_content_expressions_match_as_prosemirror_would() -> None:
    assert BUNDLED.matches("paragraph block*", ["paragraph", "bulletList", "paragraph"])
    assert not BUNDLED.matches("paragraph block*", ["bulletList"])
    assert BUNDLED.matches("inline*", []) and BUNDLED.matches("inline*", ["text", "hardBreak"])
    assert not BUNDLED.matches("block+", []) and not BUNDLED.matches("", ["text"])


# --- y-prosemirror's mapping


def test_a_document_survives_its_yjs_state() -> None:
    assert to_prosemirror(Tree(state_of(EVERYTHING))) == EVERYTHING
    assert to_prosemirror(Tree(state_of(EVERYTHING, "body")), "body") == EVERYTHING


def test_the_state_holds_the_content_as_y_prosemirror_writes_it() -> None:
    doc = block(
        "doc",
        block("heading", text("Hi ", "bold"), text("there", "italic"), level=2),
        block("codeBlock", language=None),
        block("paragraph", text("a"), {"type": "hardBreak"}, text("b")),
    )
    tree = Tree(state_of(doc))
    assert content.to_json(tree, {"default": "xml"}) == {
        "default": [
            {
                "element": "heading",
                "attributes": {"level": 2},
                "children": [
                    {"text": "Hi ", "attributes": {"bold": {}}},
                    {"text": "there", "attributes": {"italic": {}}},
                ],
            },
            {"element": "codeBlock"},  # null attributes are not written
            {
                "element": "paragraph",
                "children": [{"text": "a"}, {"element": "hardBreak"}, {"text": "b"}],
            },
        ]
    }


def test_another_editors_content_is_read_faithfully() -> None:
    ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
    fragment = ydoc.get("default", type=pycrdt.XmlFragment)
    figure = fragment.children.append(pycrdt.XmlElement("figure"))
    figure.attributes["src"] = "cat.png"
    heading = fragment.children.append(pycrdt.XmlElement("heading"))  # no level stored
    runs = heading.children.append(pycrdt.XmlText())
    runs.insert(0, "note", attrs={"comment--a1B2c3D4": {"id": 7}, "bold": True})
    runs.insert(4, "!", attrs={"link": {"href": "/x", "data": "dropped"}})
    assert to_prosemirror(Tree(ydoc.get_update())) == block(
        "doc",
        block("figure", src="cat.png"),
        block(
            "heading",
            text("note", "bold", {"type": "comment", "attrs": {"id": 7}}),
            text("!", {"type": "link", "attrs": {**LINK, "href": "/x"}}),
            level=1,
        ),
    )


def test_an_empty_fragment_reads_as_the_paragraph_an_editor_shows() -> None:
    assert to_prosemirror(Tree(pycrdt.Doc().get_update())) == block("doc", block("paragraph"))


# --- HTML


EVERYTHING_HTML = (
    "<h1>Title</h1>"
    "<p><strong>bold</strong> <strong><em>both</em></strong> <s>struck</s> <u>under</u> "
    '<code>x()</code><br><a target="_blank" rel="noopener noreferrer nofollow" '
    'href="https://example.com/?a=1&amp;b=2">a link</a></p>'
    "<ul><li><p>one</p></li><li><p></p></li></ul>"
    '<ol start="3"><li><p>three</p><ul><li><p>nested</p></li></ul></li></ol>'
    "<blockquote><p>quoted</p></blockquote>"
    '<pre><code class="language-python">x = 1\n  y &lt; 2</code></pre>'
    "<hr><h6>Six</h6><p></p>"
)


def test_html_is_rendered_as_tiptaps_get_html() -> None:
    assert to_html(EVERYTHING) == EVERYTHING_HTML


def test_html_escapes_text_and_attributes_and_blanks_a_script_href() -> None:
    doc = block(
        "doc",
        block(
            "paragraph",
            text('<b> & "q"\u00a0'),
            text("x", {"type": "link", "attrs": {**LINK, "href": "javascript:alert(1)"}}),
            text("y", {"type": "link", "attrs": {**LINK, "href": '/?q="<>"', "title": "t"}}),
        ),
        block("orderedList", item(block("paragraph")), start=1, type="a"),
    )
    assert to_html(doc) == (
        '<p>&lt;b&gt; &amp; "q"&nbsp;'
        '<a target="_blank" rel="noopener noreferrer nofollow" href="">x</a>'
        '<a target="_blank" rel="noopener noreferrer nofollow" href="/?q=&quot;&lt;&gt;&quot;" '
        'title="t">y</a></p><ol type="a"><li><p></p></li></ol>'
    )


def test_html_in_is_read_back_into_the_same_document() -> None:
    assert from_html(EVERYTHING_HTML) == EVERYTHING


def test_html_in_is_sanitised_and_read_by_the_parse_rules() -> None:
    html = (
        '<div onclick="steal()"><script>alert(1)</script><style>p{}</style>'
        "<p>  Hello \n <b>bold</b><i>it</i><del>d</del><strike>s</strike>"
        '<span style="color:red">plain</span>  </p><!-- comment -->'
        '<a href="javascript:alert(1)">no link</a> <img src="x.png" alt="pic">'
        "<ul><li>tight</li><li><ul><li>inner</li></ul></li></ul>"
        "<code><strong>code wins</strong></code>"
        '<pre><code class="hl language-js">a\n  b</code></pre><h3>Three</h3></div>'
    )
    assert from_html(html) == block(
        "doc",
        block(
            "paragraph",
            text("Hello "),
            text("bold", "bold"),
            text("it", "italic"),
            text("ds", "strike"),
            text("plain"),
        ),
        block("paragraph", text("no link")),
        block(
            "bulletList",
            item(block("paragraph", text("tight"))),
            item(block("paragraph"), block("bulletList", item(block("paragraph", text("inner"))))),
        ),
        block("paragraph", text("code wins", "code")),
        block("codeBlock", text("a\n  b"), language="js"),
        block("heading", text("Three"), level=3),
    )


def test_html_nesting_is_bounded() -> None:
    with pytest.raises(SchemaError, match="nested more than"):
        from_html("<blockquote>" * (MAX_DEPTH + 5) + "deep")


# --- Markdown


MARKDOWN = """# Title

**bold** ***both*** ~~struck~~ `x()`\\
[a link](https://example.com/?a=1&b=2 "Tip")

- one
- two
  1. nested

3. three

> quoted

```python
x = 1
  y < 2
```

---

Escaped \\*stars\\* and 1\\. not a list
"""


def test_markdown_is_read_as_commonmark_with_strikethrough() -> None:
    assert from_markdown(MARKDOWN) == block(
        "doc",
        block("heading", text("Title"), level=1),
        block(
            "paragraph",
            text("bold", "bold"),
            text(" "),
            text("both", "bold", "italic"),
            text(" "),
            text("struck", "strike"),
            text(" "),
            text("x()", "code"),
            {"type": "hardBreak"},
            text("a link", {"type": "link", "attrs": {**LINK, "title": "Tip"}}),
        ),
        block(
            "bulletList",
            item(block("paragraph", text("one"))),
            item(
                block("paragraph", text("two")),
                block("orderedList", item(block("paragraph", text("nested"))), start=1, type=None),
            ),
        ),
        block("orderedList", item(block("paragraph", text("three"))), start=3, type=None),
        block("blockquote", block("paragraph", text("quoted"))),
        block("codeBlock", text("x = 1\n  y < 2"), language="python"),
        {"type": "horizontalRule"},
        block("paragraph", text("Escaped *stars* and 1. not a list")),
    )


def test_markdown_out_reads_back_as_the_same_document() -> None:
    doc = from_markdown(MARKDOWN)
    assert from_markdown(to_markdown(doc)) == doc


def test_markdown_out_keeps_the_text_of_what_it_cannot_say() -> None:
    markdown = to_markdown(EVERYTHING)
    assert " under " in markdown and "<u>" not in markdown  # no underline in Markdown
    assert "- one\n\n3. three" in markdown  # nor an empty list item


def test_markdown_out_is_what_it_says() -> None:
    doc = block(
        "doc",
        block("heading", text("A *title*"), level=2),
        block("paragraph", text("x", "bold"), {"type": "hardBreak"}, text("y")),
        block("codeBlock", text("a\nb"), language="sh"),
    )
    assert to_markdown(doc) == "## A \\*title\\*\n\n**x**\\\ny\n\n```sh\na\nb\n```\n"
