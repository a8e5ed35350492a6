"""Yjs 14 clients (@y/y 14.0.0-rc.7 over @y/websocket 4.0.0-3, in Node): text written
straight into elements, elements nested in them, attributes, all exported whole and
restored exactly; each client's own document equals the version, as Yjs 14 itself reads
it, and undoing its earlier edits leaves the restored content alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import RunningServer
from tests.editor_pages import fresh_json
from tests.test_restore_undo import (
    editors,  # noqa: F401 - the fixture
    settle,
    version_then_restore,
)

DOC = "yjs14/doc"


def as_export(node: Any) -> Any:
    """What Yjs 14's own `toJSON` of an XML type says, in the shape of collab's export:
    an independent reading of the same document to compare with the server's."""
    if isinstance(node, str):
        return {"text": node}
    found: dict[str, Any] = {"element": node["name"]}
    if node.get("attrs"):
        found["attributes"] = node["attrs"]
    if node.get("children"):
        found["children"] = [as_export(child) for child in node["children"]]
    return found


async def own_reading(editor: Any) -> list[Any]:
    fragment = (await editor.do(report=True))["json"]["default"]
    return [as_export(child) for child in fragment["children"]]


async def test_yjs14_documents_export_whole_and_restore_exactly(
    server: RunningServer,
    editors: Callable[..., Any],  # noqa: F811
) -> None:
    alpha, bravo = await editors(server, DOC, 14), await editors(server, DOC, 14)
    await alpha.edit({"build14": "default"})
    await bravo.wait_json(lambda found: "default" in found)
    await bravo.edit({"xml": "default", "paragraph": [1, "second paragraph"]})
    await alpha.wait_json(lambda found: len(found["default"]) == 2)
    written = await own_reading(alpha)

    async def later() -> None:
        await alpha.edit({"xml": "default", "in": 0, "insert": [0, "LATER "]})
        await bravo.edit({"xml": "default", "in": 1, "delete": [0, 7]})
        await bravo.edit({"xml": "default", "paragraph": [2, "third"]})

    exported = await version_then_restore(server, DOC, later, alpha, bravo)
    paragraph = next(node for node in exported["default"] if node.get("attributes"))
    assert paragraph["attributes"] == {"level": 2}
    assert sorted(child.get("text") or child["element"] for child in paragraph["children"]) == [
        "quote",
        "v14 paragraph text",
    ]
    quote = next(child for child in paragraph["children"] if "element" in child)
    assert quote == {"element": "quote", "children": [{"text": "nested quote text"}]}
    assert exported["default"] == written  # the server reads what Yjs 14 wrote
    for editor in (alpha, bravo):
        assert await own_reading(editor) == written  # as Yjs 14 itself reads it
    assert await fresh_json(server, DOC) == exported

    assert await alpha.undo_all() == 0 and await bravo.undo_all() == 0
    assert await settle(server, DOC, alpha, bravo) == exported
    assert await own_reading(alpha) == written
