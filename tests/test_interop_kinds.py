"""Kinds pycrdt cannot write, made by Yjs itself in Node (tests/interop/kinds.mjs):
Lexical's XmlText root with attributes, embedded Maps and formatted runs; a
subdocument; a Text with attributes; Yjs 14 types holding attributes, text and values.
collab exports each in its documented shape, and Yjs reads a copy that collab wrote (the
restore's writer) exactly as it reads the original."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from typing import Any

import pycrdt
import pytest

from collab.protocol import EMPTY_UPDATE
from collab.yjs import content
from collab.yjs.roots import root_types
from collab.yjs.tree import Tree
from tests.docgen import restored
from tests.test_interop import INTEROP

SCRIPT = INTEROP / "kinds.mjs"
pytestmark = pytest.mark.slow  # Node makes and reads the documents


def node(*args: str, stdin: str = "") -> str:
    executable = shutil.which("node")
    if executable is None or not (INTEROP / "node_modules" / "@y" / "y").is_dir():
        pytest.fail("node and `npm ci --prefix tests/interop` are needed", pytrace=False)
    done = subprocess.run(
        [executable, str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=INTEROP,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def made() -> dict[str, bytes]:
    return {kind: base64.b64decode(state) for kind, state in json.loads(node("make")).items()}


def canonical(value: Any) -> Any:
    """Yjs' reading with how text happens to be cut into items left out: adjacent runs
    of equal formatting joined, object keys sorted."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        joined: list[Any] = []
        for item in value:
            if (
                joined
                and isinstance(item, dict)
                and "text" in item
                and "text" in joined[-1]
                and item.get("attributes") == joined[-1].get("attributes")
            ):
                joined[-1] = {**joined[-1], "text": joined[-1]["text"] + item["text"]}
            else:
                joined.append(item)
        return [canonical(item) for item in joined]
    return value


def yjs_reads(major: int, *states: bytes) -> list[Any]:
    lines = "".join(f"{major} {base64.b64encode(state).decode()}\n" for state in states)
    return [canonical(json.loads(line)) for line in node("read", stdin=lines).splitlines()]


def export(state: bytes) -> dict[str, Any]:
    return content.to_json(Tree(state), root_types(state))


def test_lexicals_document_exports_whole(made: dict[str, bytes]) -> None:
    assert export(made["lexical"]) == {
        "root": {
            "attributes": {"__dir": "ltr"},
            "children": [
                {
                    "xmltext": [
                        {"embed": {"__format": 1, "__type": "text"}, "type": "Map"},
                        {"text": "bold words plain", "attributes": {"bold": True}},
                    ],
                    "attributes": {"__type": "paragraph"},
                }
            ],
        }
    }
    assert content.to_text(Tree(made["lexical"]), root_types(made["lexical"])) == (
        "bold words plain"
    )


def test_subdocuments_attributes_and_values_export_in_their_shapes(
    made: dict[str, bytes],
) -> None:
    assert export(made["v13kinds"]) == {
        "attributed": {"attributes": {"lang": "en"}, "children": [{"text": "has attributes"}]},
        "docs": {"child": {"subdocument": "sub-guid-1"}},
        "mixed": [1, "two", {"base64": "AwQ="}, {"five": [5]}, "six"],
    }
    assert export(made["v14kinds"]) == {
        "default": {
            "attributes": {"version": 2},
            "children": [
                {"element": "paragraph", "children": [{"text": "text in an element"}]},
                {"fragment": [{"value": 1}, {"value": "two"}], "attributes": {"k": "v"}},
            ],
        }
    }


def test_a_yjs_xml_hook_is_read_by_yrs_only_since_it_stopped_failing(
    made: dict[str, bytes],
) -> None:
    """XmlHook, pinned: Yrs 0.28 cannot decode the XmlHook Yjs writes (it reads past the
    end), so a client that writes one is refused (1002) and none can be stored. collab's
    own reader shows one as {"hook": name, "attributes": {...}}."""
    assert export(made["hook"]) == {"hooks": [{"hook": "widget", "attributes": {"size": 3}}]}
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    with pytest.raises(ValueError, match="Cannot decode update"):
        doc.apply_update(made["hook"])


@pytest.mark.parametrize(("kind", "major"), [("lexical", 13), ("v13kinds", 13), ("v14kinds", 14)])
def test_yjs_reads_collabs_copy_of_a_document_as_the_original(
    made: dict[str, bytes], kind: str, major: int
) -> None:
    original = made[kind]
    fresh_copy = restored(EMPTY_UPDATE, original)
    states = [original, fresh_copy]
    if major == 13:  # and restored over a document whose roots are all other ones
        other = made["v13kinds" if kind == "lexical" else "lexical"]
        states.append(restored(other, original))
    seen = yjs_reads(major, *states)
    assert seen[1] == seen[0]
    if major == 13:
        assert holding(seen[2]) == holding(seen[0])  # the other document's roots emptied


def holding(view: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in view.items() if value["entries"] or value["sequence"]}
