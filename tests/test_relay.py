"""What the ASGI relay asks collab's aiohttp app for: the path relative to the mount."""

from __future__ import annotations

from typing import Any

import pytest

from collab.relay import PEER_HEADER, forwarded_headers, relative_path


def scope(path: str, root: str = "", raw: bytes | None = None, query: bytes = b"") -> Any:
    made: dict[str, Any] = {"path": path, "root_path": root, "query_string": query}
    if raw is not None:
        made["raw_path"] = raw
    return made


@pytest.mark.parametrize(
    ("given", "relative"),
    [
        # Starlette: the full path, the mount in root_path, the raw path as sent.
        (scope("/collab/notes", "/collab", b"/collab/notes"), "/notes"),
        (scope("/collab/api/docs/a/b", "/collab", b"/collab/api/docs/a%2Fb"), "/api/docs/a%2Fb"),
        (scope("/collab", "/collab", b"/collab"), "/"),
        (scope("/x/y/doc", "/x/y", b"/x/y/doc", b"token=t"), "/doc?token=t"),
        # A host that strips the mount from the path and gives no raw path.
        (scope("/notes", "/collab"), "/notes"),
        (scope("/a b", "/collab"), "/a%20b"),
        # Served at the root.
        (scope("/notes", "", b"/notes"), "/notes"),
    ],
)
def test_the_path_is_relative_to_the_mount(given: Any, relative: str) -> None:
    assert relative_path(given) == relative


def test_the_client_address_replaces_any_the_client_sent() -> None:
    given = {
        "headers": [
            (b"x-collab-peer", b"10.0.0.1:1"),
            (b"origin", b"http://a"),
            (b"upgrade", b"x"),
        ],
        "client": ("192.0.2.7", 5555),
    }
    assert forwarded_headers(given) == [("origin", "http://a"), (PEER_HEADER, "192.0.2.7:5555")]
