"""The REST API on a live server: content, import, delete, versions, restore (held to the
size quota), errors, CORS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pycrdt
import pytest

from collab import protocol
from collab.client import Client
from tests.conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def doc_url(server: RunningServer, name: str, *rest: str) -> str:
    return "/".join([f"{server.http}/api/docs/{quote(name, safe='')}", *rest])


async def call(
    http: aiohttp.ClientSession, method: str, url: str, status: int, **kwargs: Any
) -> Any:
    async with http.request(method, url, **kwargs) as response:
        body = await response.read()
        assert response.status == status, body
        if response.content_type == "application/json":
            return await response.json()
        return body


def text_update(text: str, name: str = "t") -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get(name, type=pycrdt.Text).insert(0, text)
    return doc.get_update()


async def write(server: RunningServer, name: str, text: str) -> Client:
    client = Client(server.url, name)
    await client.connect()
    client.doc.get("t", type=pycrdt.Text).insert(0, text)
    await client.flush()
    await asyncio.sleep(0.1)
    return client


def text_of(client: Client) -> str:
    return str(client.doc.get("t", type=pycrdt.Text))


async def test_content_in_every_format(server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with Client(server.url, "team/notes") as client:
        client.doc.get("t", type=pycrdt.Text).insert(0, "hello")
        client.doc.get("m", type=pycrdt.Map)["k"] = 1
        await client.flush()
        await asyncio.sleep(0.1)
        as_json = await call(http, "GET", doc_url(server, "team/notes"), 200)
        assert as_json == {"m": {"k": 1}, "t": "hello"}
        as_text = await call(
            http, "GET", doc_url(server, "team/notes"), 200, params={"format": "text"}
        )
        assert as_text == b"hello"
        state = await call(
            http, "GET", doc_url(server, "team/notes"), 200, params={"format": "update"}
        )
        copy: pycrdt.Doc[Any] = pycrdt.Doc()
        copy.apply_update(state)
        assert str(copy.get("t", type=pycrdt.Text)) == "hello"
        await call(http, "GET", doc_url(server, "team/notes"), 400, params={"format": "pdf"})


async def test_list_shows_size_last_change_and_clients(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with Client(server.url, "listed") as client:
        client.doc.get("t", type=pycrdt.Text).insert(0, "x" * 100)
        await client.flush()
        await asyncio.sleep(0.1)
        found = (await call(http, "GET", f"{server.http}/api/docs", 200))["docs"]
    assert [(d["name"], d["clients"]) for d in found] == [("listed", 1)]
    assert found[0]["size"] > 100 and found[0]["update_count"] == 1
    assert found[0]["updated_at"].endswith("+00:00")


async def test_unknown_documents_and_versions_are_404(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    for method, url in [
        ("GET", doc_url(server, "nobody")),
        ("GET", doc_url(server, "nobody", "versions")),
        ("DELETE", doc_url(server, "nobody")),
        ("POST", doc_url(server, "nobody", "versions", "1", "restore")),
    ]:
        error = await call(http, method, url, 404)
        assert error["error"]["status"] == 404 and "nobody" in error["error"]["message"]
    client = await write(server, "somebody", "x")
    await call(http, "GET", doc_url(server, "somebody", "versions", "999"), 404)
    await client.close()


async def test_invalid_names_are_400(server: RunningServer, http: aiohttp.ClientSession) -> None:
    error = await call(http, "GET", doc_url(server, " padded"), 400)
    assert "whitespace" in error["error"]["message"]


async def test_import_reaches_live_clients_and_is_stored(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with Client(server.url, "imported") as live:
        update = text_update("from the API")
        url = doc_url(server, "imported", "updates")
        assert await call(http, "POST", url, 200, data=update) == {"applied": len(update)}
        await live.wait_for(lambda: text_of(live) == "from the API")
    async with Client(server.url, "imported") as later:
        assert text_of(later) == "from the API"


@pytest.mark.parametrize("body", [b"", b"\x00\x00", b"not an update", b"\x01\x01\x05\x00\x04x"])
async def test_bad_uploads_are_400_and_change_nothing(
    server: RunningServer, http: aiohttp.ClientSession, body: bytes
) -> None:
    client = await write(server, "guarded", "keep")
    before = await call(http, "GET", doc_url(server, "guarded"), 200, params={"format": "update"})
    error = await call(http, "POST", doc_url(server, "guarded", "updates"), 400, data=body)
    assert error["error"]["status"] == 400
    after = await call(http, "GET", doc_url(server, "guarded"), 200, params={"format": "update"})
    assert after == before
    await client.close()


async def test_delete_disconnects_clients_and_forgets_everything(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    live = await write(server, "doomed", "bye")
    await call(http, "POST", doc_url(server, "doomed", "versions"), 201, json={"label": "v"})
    await call(http, "DELETE", doc_url(server, "doomed"), 204)
    await asyncio.wait_for(live.closed.wait(), 5)
    assert live.close_code == 4404
    await call(http, "GET", doc_url(server, "doomed"), 404)
    await call(http, "GET", doc_url(server, "doomed", "versions"), 404)
    async with Client(server.url, "doomed") as fresh:
        assert text_of(fresh) == ""
    await live.close()


async def test_named_version_restore_and_undo_reach_live_clients(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with Client(server.url, "story") as alice, Client(server.url, "story") as bob:
        text = alice.doc.get("t", type=pycrdt.Text)
        text += "Once upon a time."
        await bob.wait_for(lambda: text_of(bob) == "Once upon a time.")
        first = await call(
            http, "POST", doc_url(server, "story", "versions"), 201, json={"label": "the opening"}
        )
        assert (first["kind"], first["label"]) == ("named", "the opening")
        text += " The end."
        await bob.wait_for(lambda: text_of(bob).endswith("The end."))
        done = await call(
            http, "POST", doc_url(server, "story", "versions", str(first["id"]), "restore"), 200
        )
        assert done["restored"]["id"] == first["id"]
        assert done["pre_restore"]["kind"] == "pre-restore"
        for client in (alice, bob):
            await client.wait_for(lambda c=client: text_of(c) == "Once upon a time.")
        # Restoring the pre-restore version undoes the restore.
        undo = str(done["pre_restore"]["id"])
        await call(http, "POST", doc_url(server, "story", "versions", undo, "restore"), 200)
        for client in (alice, bob):
            await client.wait_for(lambda c=client: text_of(c) == "Once upon a time. The end.")
        versions = (await call(http, "GET", doc_url(server, "story", "versions"), 200))["versions"]
        kinds = [v["kind"] for v in versions]
        assert kinds.count("pre-restore") == 2 and kinds.count("named") == 1
        assert [v["id"] for v in versions] == sorted((v["id"] for v in versions), reverse=True)
        old = await call(
            http,
            "GET",
            doc_url(server, "story", "versions", str(first["id"])),
            200,
            params={"format": "text"},
        )
        assert old == b"Once upon a time."


@pytest.mark.parametrize("body", [{"label": ""}, {"label": "x" * 201}, {"no": "label"}, [1]])
async def test_bad_labels_are_400(
    server: RunningServer, http: aiohttp.ClientSession, body: Any
) -> None:
    client = await write(server, "labelled", "x")
    await call(http, "POST", doc_url(server, "labelled", "versions"), 400, json=body)
    await call(http, "POST", doc_url(server, "labelled", "versions"), 400, data=b"{not json")
    await client.close()


async def test_errors_under_api_are_json_with_their_status(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    error = await call(http, "GET", f"{server.http}/api/no/such/route", 404)
    assert error["error"]["status"] == 404
    error = await call(http, "PUT", f"{server.http}/api/docs", 405)
    assert error["error"]["status"] == 405


async def test_compact_thins_versions_by_the_policy(
    make_server: Any, http: aiohttp.ClientSession
) -> None:
    # A policy that keeps no automatic version older than a second.
    server = await make_server(retention="1s:all", retention_seconds=0)
    client = await write(server, "thin", "a")
    for _ in range(3):
        client.doc.get("t", type=pycrdt.Text).insert(0, "b")
        await client.flush()
        await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session:  # force automatic versions through
            await call(session, "POST", f"{server.http}/api/compact", 200)
    await call(http, "POST", doc_url(server, "thin", "versions"), 201, json={"label": "keep"})
    await asyncio.sleep(1.2)
    answer = await call(http, "POST", f"{server.http}/api/compact", 200)
    assert answer["deleted_versions"] >= 2
    versions = (await call(http, "GET", doc_url(server, "thin", "versions"), 200))["versions"]
    # Left: the named version (always kept), which is also the newest.
    assert [(v["kind"], v["label"]) for v in versions] == [("named", "keep")]
    await client.close()


async def test_the_background_task_thins_versions_by_the_policy(
    make_server: Any, http: aiohttp.ClientSession
) -> None:
    # Every update makes an automatic version; none older than a second is kept.
    server = await make_server(retention="1s:all", retention_seconds=0.3, version_updates=1)
    url = doc_url(server, "aging", "versions")

    async def kinds() -> list[str]:
        return [v["kind"] for v in (await call(http, "GET", url, 200))["versions"]]

    async with Client(server.url, "aging") as client:
        for _ in range(3):
            client.doc.get("t", type=pycrdt.Text).insert(0, "b")
            await client.flush()
            await asyncio.sleep(0.1)
            await call(http, "POST", url, 201, json={"label": "n"})
        async with asyncio.timeout(5):
            while (await kinds()).count("auto") < 2:
                await asyncio.sleep(0.05)
        async with asyncio.timeout(10):
            while (await kinds()).count("auto") > 1:  # the task's work, nobody asked
                await asyncio.sleep(0.2)
    # Named versions stay whatever their age; of the automatic ones, only the newest.
    assert (await kinds()).count("named") == 3


async def test_a_restore_across_a_change_of_root_type_is_409_and_changes_nothing(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    await call(http, "POST", doc_url(server, "shape", "updates"), 200, data=text_update("hi", "r"))
    then = await call(http, "POST", doc_url(server, "shape", "versions"), 201, json={"label": "t"})
    # The text is deleted, and a client that knows the root as a Map writes an entry.
    emptied: pycrdt.Doc[Any] = pycrdt.Doc()
    state = await call(http, "GET", doc_url(server, "shape"), 200, params={"format": "update"})
    emptied.apply_update(state)
    before = emptied.get_state()
    emptied.get("r", type=pycrdt.Text).clear()
    as_map: pycrdt.Doc[Any] = pycrdt.Doc()
    as_map.get("r", type=pycrdt.Map)["k"] = "v"
    for change in (emptied.get_update(before), as_map.get_update()):
        await call(http, "POST", doc_url(server, "shape", "updates"), 200, data=change)
    now = await call(http, "GET", doc_url(server, "shape"), 200)
    restore = doc_url(server, "shape", "versions", str(then["id"]), "restore")
    error = await call(http, "POST", restore, 409)
    assert error["error"]["status"] == 409
    assert await call(http, "GET", doc_url(server, "shape"), 200) == now


async def test_openapi_document_is_served(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    spec = await call(http, "GET", f"{server.http}/api/openapi.json", 200)
    assert spec["openapi"].startswith("3.")
    assert "/api/docs/{name}/versions/{version}/restore" in spec["paths"]


async def test_a_document_holding_an_update_that_waits_for_its_base_exports_what_it_has(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    """An update that arrived before the one it builds on is held (pending), as in Yjs;
    the export shows the rest, and a restore to a version works around it."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    text += "base"
    base_state = pycrdt.Doc()
    base_state.apply_update(doc.get_update())
    text.insert(4, " later")
    later = doc.get_update(base_state.get_state())  # builds on "base", which never came
    async with Client(server.url, "waiting") as client:
        client.doc.get("m", type=pycrdt.Map)["k"] = "v"
        await client.flush()
    async with http.ws_connect(f"{server.url}/waiting") as ws:
        await ws.send_bytes(protocol.encode_update(later))
    url = doc_url(server, "waiting")
    async with asyncio.timeout(10):
        while (await call(http, "GET", url, 200)).get("m") != {"k": "v"}:
            await asyncio.sleep(0.05)
    assert await call(http, "GET", url, 200) == {"m": {"k": "v"}}
    assert await call(http, "GET", url + "?format=text", 200) == b""
    versions = doc_url(server, "waiting", "versions")
    version = await call(http, "POST", versions, 201, json={"label": "with a wait"})
    await call(http, "POST", f"{versions}/{version['id']}/restore", 200)
    assert await call(http, "GET", url, 200) == {"m": {"k": "v"}}


async def test_cors_answers_only_the_configured_origins(make_server: MakeServer) -> None:
    server = await make_server(cors_origins="https://app.example.com")
    async with aiohttp.ClientSession() as session:
        preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
        async with session.options(
            f"{server.http}/api/docs/x/updates", headers=preflight
        ) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        async with session.get(
            f"{server.http}/api/docs", headers={"Origin": "https://app.example.com"}
        ) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        async with session.get(
            f"{server.http}/api/docs", headers={"Origin": "https://other.example.com"}
        ) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_a_restore_is_held_to_the_quota_by_the_size_it_leaves(
    make_server: MakeServer,
) -> None:
    """A restore writes the version anew: what counts is the state it leaves (about the
    version's size), not the live state plus the copy, which would refuse every version
    over half the quota. A version over the quota (lowered since) is refused, unchanged."""
    server = await make_server(max_doc_bytes=64 * 1024)
    url = f"{server.http}/api/docs/big"
    async with Client(server.url, "big") as writer, aiohttp.ClientSession() as session:
        text = writer.doc.get("t", type=pycrdt.Text)
        text.insert(0, "v" * 40_000)
        await writer.flush()
        async with session.post(f"{url}/versions", json={"label": "40 KB"}) as response:
            assert response.status == 201
            version = (await response.json())["id"]
        # Made room for by a version in between: the quota counts the log since the last.
        del text[0 : len(text)]
        await writer.flush()
        async with session.post(f"{url}/versions", json={"label": "emptied"}) as response:
            assert response.status == 201
        text.insert(0, "n" * 30_000)
        async with asyncio.timeout(10):
            while (await (await session.get(f"{url}?format=text")).text()) != "n" * 30_000:
                await asyncio.sleep(0.05)
        async with session.post(f"{url}/versions/{version}/restore") as response:
            assert response.status == 200, await response.text()
        await writer.wait_for(lambda: text_of(writer) == "v" * 40_000)
        text.insert(0, "still editable ")  # the document is under its quota again
        await writer.flush()
        async with asyncio.timeout(10):
            while not (await (await session.get(f"{url}?format=text")).text()).startswith(
                "still editable v"
            ):
                await asyncio.sleep(0.05)
        assert writer.denied is None

    await server.stop()
    lowered = await make_server(max_doc_bytes=20 * 1024)  # the same database
    async with aiohttp.ClientSession() as session:
        restore = f"{lowered.http}/api/docs/big/versions/{version}/restore"
        async with session.post(restore) as response:
            assert response.status == 413
            assert "quota" in (await response.json())["error"]["message"]
        async with session.get(f"{lowered.http}/api/docs/big?format=text") as response:
            assert (await response.text()).startswith("still editable v")
