"""The error tree: each class knows its HTTP status, close code and API code; the edges
answer with them, subclasses included; a client rebuilds the class from the API's JSON."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pycrdt
import pytest

from collab import errors, protocol, ws
from collab.auth import AuthRequest, Grant
from collab.errors import (
    HTTP_ERROR,
    CollabError,
    DatabaseInUse,
    DocNotFound,
    Forbidden,
    NotFound,
    StoreError,
    TooMany,
    Unauthorized,
    VersionNotFound,
    error_class,
    error_classes,
    error_from_json,
)
from tests.conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def test_every_class_of_the_tree_has_its_own_code_a_status_and_a_close_code() -> None:
    tree = [kind for kind in error_classes() if kind.__module__ == errors.__name__]
    assert len(tree) == len(
        {v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, CollabError)}
    )
    codes = [kind.code for kind in tree]
    assert len(set(codes)) == len(codes) and HTTP_ERROR not in codes
    for kind in tree:
        assert "code" in vars(kind), f"{kind.__name__} inherits its code"
        assert 400 <= kind.status < 600, kind
        assert 1000 <= kind.close_code < 1015 or 4000 <= kind.close_code < 5000, kind
        assert kind.__name__ in (errors.__doc__ or ""), f"{kind.__name__} is not drawn"


@pytest.mark.parametrize(
    ("kind", "status", "close_code"),
    [
        (errors.ProtocolError, 500, 1002),
        (errors.UpdateRejected, 500, 1002),
        (errors.UnsupportedMessage, 500, 1003),
        (errors.InvalidDocName, 400, 4400),
        (errors.BadRequest, 400, 4400),
        (Unauthorized, 401, 4401),
        (errors.TokenExpired, 401, 4501),
        (Forbidden, 403, 4403),
        (DocNotFound, 404, 4404),
        (VersionNotFound, 404, 4404),
        (errors.Conflict, 409, 4409),
        (errors.QuotaExceeded, 413, 4413),
        (TooMany, 429, 4429),
        (StoreError, 503, 1011),
        (DatabaseInUse, 503, 1011),
    ],
)
def test_each_error_answers_with_its_status_and_close_code(
    kind: type[CollabError], status: int, close_code: int
) -> None:
    assert (kind("x").status, kind.close_code) == (status, close_code)


def test_a_full_server_is_503_and_a_full_room_429() -> None:
    assert TooMany("room", server_full=False).status == 429
    assert TooMany("server", server_full=True).status == 503


def test_a_subclass_made_elsewhere_answers_as_its_parent() -> None:
    class NotOnTheTeam(Forbidden):
        pass

    error = NotOnTheTeam("ask the team")
    assert (error.status, error.close_code, error.code) == (403, 4403, "forbidden")
    assert type(error_from_json(403, error.as_json())) is Forbidden


@pytest.mark.parametrize(
    "error",
    [
        DocNotFound("no document named 'a'"),
        VersionNotFound("document 'a' has no version 9"),
        Unauthorized("token expired"),
        errors.TokenExpired("token expired"),
        errors.QuotaExceeded("too big"),
        errors.Conflict("root changed type"),
    ],
)
def test_an_error_is_rebuilt_from_its_json(error: CollabError) -> None:
    rebuilt = error_from_json(error.status, error.as_json())
    assert type(rebuilt) is type(error) and str(rebuilt) == str(error)


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (None, 404, NotFound),  # the most general class of a status
        ("no_such_code", 404, NotFound),
        (HTTP_ERROR, 400, errors.BadRequest),
        (None, 503, StoreError),
        (None, 500, CollabError),
        (None, 502, CollabError),  # a proxy's, say
    ],
)
def test_an_unknown_code_falls_back_by_status(
    code: str | None, status: int, kind: type[CollabError]
) -> None:
    assert error_class(code, status) is kind


def test_a_body_that_is_not_an_error_gives_the_class_of_its_status() -> None:
    assert str(error_from_json(503, "Service Unavailable")) == "Service Unavailable"
    assert type(error_from_json(404, {"docs": []})) is NotFound


class NotOnTheTeam(Forbidden):
    """What an embedding application's authorizer might raise."""


class Unknown(Unauthorized):
    """Likewise."""


async def gatekeeper(request: AuthRequest) -> Grant:
    if request.doc == "secret":
        raise NotOnTheTeam("only the team may open 'secret'")
    if request.doc == "who":
        raise Unknown("who are you?")
    return Grant("write")


async def test_an_authorizers_own_errors_answer_as_their_parents_on_every_edge(
    make_server: MakeServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_server(authorizer=gatekeeper)
    async with http.get(f"{server.http}/api/docs/secret") as response:
        assert response.status == 403
        body = await response.json()
        assert body["error"] == {
            "status": 403,
            "code": "forbidden",
            "message": "only the team may open 'secret'",
        }
    async with http.get(f"{server.http}/api/docs/who") as response:
        assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
        assert (await response.json())["error"]["code"] == "unauthorized"
    # Before the WebSocket opens, by the same attributes (this was a 503 when the upgrade
    # mapped errors by their exact type).
    for path, status in [("secret", 403), ("who?token=mine", 401)]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with http.ws_connect(f"{server.url}/{path}"):
                pass
        assert refused.value.status == status
        if status == 401:
            assert refused.value.headers is not None
            assert refused.value.headers["WWW-Authenticate"] == "Bearer"
    # With no token at all the socket opens (a Hocuspocus provider's comes in its first
    # frame); a y-websocket client then gets the same error's close code and message.
    monkeypatch.setattr(ws, "REFUSAL_HOLD_SECONDS", 0.1)
    async with http.ws_connect(f"{server.url}/who") as stranger:
        await stranger.send_bytes(protocol.encode_sync_step1(pycrdt.Doc().get_state()))
        async with asyncio.timeout(10):
            message = await stranger.receive()
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert (stranger.close_code, message.extra) == (4401, "who are you?")


async def test_errors_of_http_itself_are_json_with_the_http_error_code(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with http.put(f"{server.http}/api/docs") as response:
        body: dict[str, Any] = await response.json()
    assert body["error"]["status"] == 405 and body["error"]["code"] == HTTP_ERROR
