"""The guard on a live server: tokens at the upgrade and on the API, read-only editors,
Origins, permission changes mid-session, authorizers, and the connection limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pycrdt
import pytest

from collab import protocol, ws
from collab.auth import AuthRequest, Grant, mint
from collab.client import Client
from collab.config import Secret
from tests.conftest import RunningServer

SECRET = Secret("correct horse battery staple, long enough")
MakeServer = Callable[..., Awaitable[RunningServer]]


def token(docs: str, permission: str = "write", ttl: float | None = 600, **kw: Any) -> str:
    return mint(SECRET, docs, permission, now=time.time(), ttl=ttl, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def secured(make_server: MakeServer) -> RunningServer:
    return await make_server(auth="token", auth_secret=SECRET)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def upgrade_status(url: str, **kwargs: Any) -> int:
    """The HTTP status of a refused upgrade (101 if it was accepted)."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, **kwargs):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def text_of(client: Client) -> str:
    return str(client.doc.get("t", type=pycrdt.Text))


def api(server: RunningServer, name: str, *rest: str) -> str:
    return "/".join([f"{server.http}/api/docs/{quote(name, safe='')}", *rest])


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("?token=garbage", 401),  # not a token
        (
            f"?token={mint('another secret of enough length!!', 'doc', 'write', now=time.time())}",
            401,
        ),  # signed by someone else
        (f"?token={mint(SECRET, 'doc', 'write', now=time.time() - 100, ttl=10)}", 401),  # expired
        (f"?token={mint(SECRET, 'other', 'write', now=time.time())}", 403),  # another doc
        (f"?token={mint(SECRET, 'doc', 'write', now=time.time())}", 101),
        (f"?token={mint(SECRET, 'd*', 'read', now=time.time())}", 101),  # a pattern
    ],
)
async def test_upgrades_are_refused_before_the_websocket_opens(
    secured: RunningServer, query: str, status: int
) -> None:
    assert await upgrade_status(f"{secured.url}/doc{query}") == status


async def test_with_no_credential_at_all_the_socket_opens_and_a_y_websocket_client_gets_4401(
    secured: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Hocuspocus provider sends its token in its first frame, so the upgrade cannot be
    # refused for the lack of one; a y-websocket client is then told 4401 (what a page
    # can read, unlike an HTTP 401), after a hold that slows its reconnects.
    monkeypatch.setattr(ws, "REFUSAL_HOLD_SECONDS", 1.0)
    async with Client(secured.url, "doc", params={"token": token("doc")}) as writer:
        writer.doc.get("t", type=pycrdt.Text).insert(0, "kept")
        await writer.flush()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{secured.url}/doc") as stranger:
            opened = time.monotonic()
            await stranger.send_bytes(protocol.encode_sync_step1(pycrdt.Doc().get_state()))
            await stranger.send_bytes(b"\xff garbage, dropped")
            async with asyncio.timeout(10):
                message = await stranger.receive()
            held = time.monotonic() - opened
    assert message.type is aiohttp.WSMsgType.CLOSE  # and nothing of the document before it
    assert stranger.close_code == 4401
    assert "a token is needed" in message.extra
    assert held >= 0.9
    async with Client(secured.url, "doc", params={"token": token("doc", "read")}) as reader:
        await reader.wait_for(lambda: text_of(reader) == "kept")


async def test_a_refused_upgrade_says_why_and_asks_for_a_bearer(secured: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{secured.http}/doc?token=garbage",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        ) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "invalid token" in await response.text()


async def test_read_only_editors_see_everything_but_change_nothing(
    secured: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with (
        Client(secured.url, "shared", params={"token": token("shared")}) as writer,
        Client(secured.url, "shared", params={"token": token("shared", "read")}) as reader,
    ):
        writer.doc.get("t", type=pycrdt.Text).insert(0, "from the writer")
        await reader.wait_for(lambda: text_of(reader) == "from the writer")
        reader.set_awareness({"user": "reader"})  # presence is allowed
        await writer.wait_for(lambda: reader.client_id in writer.awareness)
        reader.doc.get("t", type=pycrdt.Text).insert(0, "SNEAKY ")
        await reader.wait_for(lambda: reader.denied is not None)
        assert "read-only" in (reader.denied or "")
        await asyncio.sleep(0.3)
        assert text_of(writer) == "from the writer"  # not relayed
    async with Client(secured.url, "shared", params={"token": token("shared")}) as later:
        assert text_of(later) == "from the writer"  # not applied, not stored
    stored = await http.get(api(secured, "shared"), headers=bearer(token("shared", "read")))
    assert await stored.json() == {"t": "from the writer"}


async def test_the_api_checks_the_same_permissions(
    secured: RunningServer, http: aiohttp.ClientSession
) -> None:
    update = pycrdt.Doc()
    update.get("t", type=pycrdt.Text).insert(0, "x")
    body = update.get_update()
    cases = [
        ("GET", api(secured, "doc"), None, 401),
        ("POST", api(secured, "doc", "updates"), token("doc", "read"), 403),
        ("POST", api(secured, "doc", "updates"), token("doc"), 200),
        ("GET", api(secured, "doc"), token("doc", "read"), 200),
        ("GET", api(secured, "doc"), token("elsewhere", "admin"), 403),
        ("POST", api(secured, "doc", "versions"), token("doc", "read"), 403),
        ("DELETE", api(secured, "doc"), token("doc", "read"), 403),
        ("POST", f"{secured.http}/api/compact", token("doc", "admin"), 403),  # not '*'
        ("POST", f"{secured.http}/api/compact", token("*", "admin"), 200),
    ]
    for method, url, credential, status in cases:
        headers = bearer(credential) if credential else {}
        kwargs: dict[str, Any] = {"data": body} if method == "POST" and "updates" in url else {}
        if url.endswith("/versions"):
            kwargs = {"json": {"label": "x"}}
        async with http.request(method, url, headers=headers, **kwargs) as response:
            assert response.status == status, (method, url, await response.text())


async def test_the_document_list_shows_only_what_a_token_may_read(
    secured: RunningServer, http: aiohttp.ClientSession
) -> None:
    for name in ("team/a", "team/b", "private"):
        async with Client(secured.url, name, params={"token": token(name)}) as client:
            client.doc.get("t", type=pycrdt.Text).insert(0, name)
            await client.flush()
            await asyncio.sleep(0.1)
    async with http.get(f"{secured.http}/api/docs", headers=bearer(token("team/*", "read"))) as r:
        assert [d["name"] for d in (await r.json())["docs"]] == ["team/a", "team/b"]
    async with http.get(
        f"{secured.http}/api/docs/team%2Fa/access", headers=bearer(token("team/*", "read"))
    ) as r:
        assert await r.json() == {"doc": "team/a", "permission": "read"}


async def test_origins_other_than_ours_and_the_allowed_ones_are_refused(
    make_server: MakeServer,
) -> None:
    server = await make_server(allowed_origins="https://app.example.com")
    url = f"{server.url}/doc"
    assert await upgrade_status(url, origin="https://evil.example.net") == 403
    assert await upgrade_status(url, origin="https://app.example.com") == 101
    assert await upgrade_status(url, origin=server.http) == 101  # the editor it serves
    assert await upgrade_status(url) == 101  # no Origin: not a browser
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{server.http}/api/docs", headers={"Origin": "https://evil.example.net"}
        ) as response:
            assert response.status == 403


async def test_an_expiring_token_closes_its_connection_with_4501(secured: RunningServer) -> None:
    # Expiry is in whole seconds: a ttl of 3 leaves 2 to 3 s, time enough to connect.
    async with Client(secured.url, "doc", params={"token": token("doc", ttl=3)}) as short:
        async with Client(secured.url, "doc", params={"token": token("doc")}) as other:
            await asyncio.wait_for(short.closed.wait(), 10)
            assert short.close_code == 4501
            assert not other.closed.is_set()


async def test_revoking_a_token_closes_it_now_and_refuses_it_later(
    secured: RunningServer, http: aiohttp.ClientSession
) -> None:
    doomed, kept, admin = token("doc"), token("doc"), token("*", "admin")
    async with (
        Client(secured.url, "doc", params={"token": doomed}) as victim,
        Client(secured.url, "doc", params={"token": kept}) as bystander,
    ):
        token_id = secured_token_id(doomed)
        async with http.post(
            f"{secured.http}/api/revocations", headers=bearer(admin), json={"token_id": token_id}
        ) as response:
            assert response.status == 201
            assert (await response.json())["connections"] == 1
        await asyncio.wait_for(victim.closed.wait(), 5)
        assert victim.close_code == 4403
        bystander.doc.get("t", type=pycrdt.Text).insert(0, "still here")
        await bystander.flush()
        assert not bystander.closed.is_set()
    assert await upgrade_status(f"{secured.url}/doc?token={doomed}") == 403


def secured_token_id(value: str) -> str:
    from collab.auth import verify

    token_id = verify(SECRET, value, now=time.time()).token_id
    assert token_id is not None
    return token_id


async def test_downgrading_a_user_makes_their_connections_read_only(
    secured: RunningServer, http: aiohttp.ClientSession
) -> None:
    mine = token("doc", subject="bob")
    async with (
        Client(secured.url, "doc", params={"token": mine}) as bob,
        Client(secured.url, "doc", params={"token": token("doc", subject="ann")}) as ann,
    ):
        async with http.post(
            f"{secured.http}/api/revocations",
            headers=bearer(token("doc", "admin")),
            json={"subject": "bob", "docs": "doc", "permission": "read"},
        ) as r:
            assert (await r.json())["connections"] == 1
        await bob.wait_for(lambda: bob.denied is not None)
        bob.doc.get("t", type=pycrdt.Text).insert(0, "after")
        ann.doc.get("t", type=pycrdt.Text).insert(0, "ann ")
        await bob.wait_for(lambda: "ann" in text_of(bob))
        await asyncio.sleep(0.3)
        assert "after" not in text_of(ann)
        assert not bob.closed.is_set() and not ann.closed.is_set()


async def test_revocations_outlive_a_restart(make_server: MakeServer) -> None:
    first = await make_server(auth="token", auth_secret=SECRET)
    doomed = token("doc")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{first.http}/api/revocations",
            headers=bearer(token("*", "admin")),
            json={"token_id": secured_token_id(doomed)},
        ) as response:
            assert response.status == 201
    await first.stop()
    second = await make_server(auth="token", auth_secret=SECRET)
    assert await upgrade_status(f"{second.url}/doc?token={doomed}") == 403
    assert await upgrade_status(f"{second.url}/doc?token={token('doc')}") == 101


async def test_an_authorizer_decides_from_headers_and_cookies(make_server: MakeServer) -> None:
    seen: list[AuthRequest] = []

    async def authorize(request: AuthRequest) -> Grant | str:
        seen.append(request)
        if request.cookies.get("session") == "alice":
            return Grant("write", "notes/*", subject="alice")
        if request.headers.get("X-Guest") == "yes":
            return "read"
        return "none"

    server = await make_server(authorizer=authorize)
    url = f"{server.url}/notes/today"
    assert await upgrade_status(url) == 403
    assert await upgrade_status(url, headers={"Cookie": "session=alice"}) == 101
    assert (
        await upgrade_status(f"{server.url}/elsewhere", headers={"Cookie": "session=alice"}) == 403
    )
    async with Client(server.url, "notes/today", headers={"X-Guest": "yes"}) as guest:
        guest.doc.get("t", type=pycrdt.Text).insert(0, "nope")
        await guest.wait_for(lambda: guest.denied is not None)
    assert seen[0].doc == "notes/today"


async def test_tokens_never_reach_the_log(
    secured: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    secret_token = token("other")
    assert await upgrade_status(f"{secured.url}/doc?token={secret_token}") == 403
    async with Client(secured.url, "doc", params={"token": token("doc")}) as client:
        await client.flush()
    assert caplog.text  # something was logged about these connections
    assert secret_token not in caplog.text
    assert "token=" not in caplog.text


async def test_connection_limits_answer_429_and_503(make_server: MakeServer) -> None:
    server = await make_server(max_connections_per_room=2, max_connections=4)
    async with aiohttp.ClientSession() as session:
        room = [await session.ws_connect(f"{server.url}/busy") for _ in range(2)]
        assert await upgrade_status(f"{server.url}/busy") == 429  # the room is full
        others = [await session.ws_connect(f"{server.url}/other{i}") for i in range(2)]
        assert await upgrade_status(f"{server.url}/another") == 503  # the server is full
        await room[0].close()
        await asyncio.sleep(0.1)
        assert await upgrade_status(f"{server.url}/busy") == 101  # a place came free
        for ws in room[1:] + others:
            await ws.close()


async def test_connections_per_address_are_limited(make_server: MakeServer) -> None:
    server = await make_server(max_connections_per_address=2)
    async with aiohttp.ClientSession() as session:
        kept = [await session.ws_connect(f"{server.url}/r{i}") for i in range(2)]
        assert await upgrade_status(f"{server.url}/r3") == 429
        for ws in kept:
            await ws.close()
