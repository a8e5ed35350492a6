"""The bus (collab/bus.py) between servers on one PostgreSQL database and one real
redis-server: what one server commits reaches the clients of the others at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pycrdt

from collab.bus import key_prefix
from collab.client import Client
from tests.conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]


def text_of(client: Client) -> str:
    return str(client.doc.get("t", type=pycrdt.Text))


async def test_edits_on_either_server_reach_the_clients_of_the_other_at_once(
    postgres_url: str, redis_url: str, make_server: MakeServer
) -> None:
    a = await make_server(db=postgres_url, redis=redis_url, node_id="a")
    b = await make_server(db=postgres_url, redis=redis_url, node_id="b")
    async with Client(a.url, "doc") as alice, Client(b.url, "doc") as bob:
        alice.doc.get("t", type=pycrdt.Text).insert(0, "from a")
        await bob.wait_for(lambda: text_of(bob) == "from a", timeout=5)
        bob.doc.get("t", type=pycrdt.Text).insert(6, ", then b")
        await alice.wait_for(lambda: text_of(alice) == "from a, then b", timeout=5)
        async with Client(b.url, "doc") as late:  # a fresh client of either has it all
            assert text_of(late) == "from a, then b"


async def test_rooms_whose_names_are_prefixes_of_each_other_never_mix(
    postgres_url: str, redis_url: str, make_server: MakeServer
) -> None:
    a = await make_server(db=postgres_url, redis=redis_url, node_id="a")
    b = await make_server(db=postgres_url, redis=redis_url, node_id="b")
    async with (
        Client(a.url, "doc") as short,
        Client(b.url, "doc") as short_b,
        Client(b.url, "doc2") as long_b,
    ):
        short.doc.get("t", type=pycrdt.Text).insert(0, "short")
        await short_b.wait_for(lambda: text_of(short_b) == "short", timeout=5)
        long_b.doc.get("t", type=pycrdt.Text).insert(0, "long")
        async with Client(a.url, "doc2") as long_a:
            await long_a.wait_for(lambda: text_of(long_a) == "long", timeout=5)
        assert text_of(short_b) == "short" and text_of(long_b) == "long"


def test_clusters_on_one_redis_do_not_share_keys() -> None:
    one, other = key_prefix("postgresql://h/one"), key_prefix("postgresql://h/other")
    assert one != other and one.startswith("collab:") and one == key_prefix("postgresql://h/one")
