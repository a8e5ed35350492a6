"""The durability promise under SIGKILL: a short run of tests/crash.py.

A real `collab serve` child process is killed while clients edit; after the restart, every
update any client had received from the server must still be there. The long run is
`python scripts/crash_test.py --rounds 200`. The same on a cluster of three nodes (one
killed per round, or each stopped in turn), whose long run is
`python scripts/crash_test.py --nodes 3 --clients 6 --rooms 2 --rounds 20 [--rolling]`;
and on a cluster whose redis-server is killed instead (`--kill-redis`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from tests import crash


@pytest.mark.timeout(120)
async def test_nothing_a_client_received_is_lost_when_the_server_is_killed(
    tmp_path: Path,
) -> None:
    seed = random.randrange(2**32)
    options = crash.Options(clients=4, rooms=2, rounds=3, seed=seed, min_kill=0.4, max_kill=0.8)
    summary = await crash.run(options, tmp_path)
    about = f"seed {seed}\n{summary.table()}"
    assert summary.error is None, about
    assert summary.kills == 3, about
    assert not summary.losses, about
    assert summary.final_sync == "equal (2 rooms)", about
    assert not summary.failed, about
    for result in summary.rounds:
        assert len(result.clients) == 4, about
        for client in result.clients:
            # Not vacuous: each client received many live edits of the other client in
            # its room (and after round 1, the document in its first sync), and every one
            # of them was checked against the restarted server.
            assert client.sync_updates == (result.round > 1), about
            assert client.live_updates >= 5, about
            assert client.verified == client.received, about
            assert client.edits >= 5, about
        assert all(size > 100 for size in result.state_bytes.values()), about
    # The documents carry on across crashes: later rounds start from what survived.
    assert (
        summary.rounds[-1].state_bytes["crash-test/room-0"]
        > summary.rounds[0].state_bytes["crash-test/room-0"]
    ), about


CLUSTER = {"nodes": 3, "clients": 6, "rooms": 2, "min_kill": 0.3, "max_kill": 0.6}


@pytest.mark.slow  # starts three server processes, several times
@pytest.mark.timeout(120)
async def test_nothing_a_client_received_is_lost_when_any_node_of_a_cluster_is_killed(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """Three nodes on one PostgreSQL database and Redis, each room's clients on all three;
    a random node is SIGKILLed each round, its clients move to the others and carry on."""
    seed = random.randrange(2**32)
    options = crash.Options(rounds=4, seed=seed, db=postgres_url, redis=redis_url, **CLUSTER)
    summary = await crash.run(options, tmp_path)
    about = f"seed {seed}\n{summary.table()}"
    assert summary.error is None, about
    assert summary.kills == 4 and not summary.losses, about
    assert summary.final_sync == "equal (2 rooms, on every node)", about
    assert not summary.failed, about
    for result in summary.rounds:
        assert len(result.stopped) == 1 and result.checked_on not in result.stopped, about
        assert not result.diverged, about
        # Each node had two clients (one per room): the killed node's both moved.
        assert result.moves == 2, about
        for client in result.clients:
            assert client.live_updates >= 5 and client.edits >= 5, about
            assert client.verified == client.received, about
    assert (
        summary.rounds[-1].state_bytes["crash-test/room-0"]
        > summary.rounds[0].state_bytes["crash-test/room-0"]
    ), about


@pytest.mark.slow  # starts three server processes, and restarts each
@pytest.mark.timeout(120)
async def test_a_rolling_restart_of_a_cluster_loses_nothing_and_leaves_no_room_diverged(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """SIGTERM each node in turn while clients type, waiting for its exit and restarting
    it: its clients move on, and at the end every node holds the same rooms."""
    seed = random.randrange(2**32)
    options = crash.Options(
        rounds=1, rolling=True, seed=seed, db=postgres_url, redis=redis_url, **CLUSTER
    )
    summary = await crash.run(options, tmp_path)
    about = f"seed {seed}\n{summary.table()}"
    assert summary.error is None and not summary.failed, about
    (result,) = summary.rounds
    assert result.stopped == ["n0", "n1", "n2"] and result.exit_codes == [0, 0, 0], about
    assert not result.diverged and not result.lost, about
    assert result.moves >= 6, about  # every node's clients moved at least once
    assert summary.final_sync == "equal (2 rooms, on every node)", about
    for client in result.clients:
        assert client.live_updates >= 5 and client.verified == client.received, about


@pytest.mark.slow  # starts three server processes and a redis-server of its own, three times
@pytest.mark.timeout(120)
async def test_redis_killed_under_a_cluster_loses_nothing_and_nobody_notices_but_a_delay(
    tmp_path: Path, postgres_url: str
) -> None:
    """kill -9 of the cluster's redis-server while every node's clients type, a new empty
    one on its port 2-3 s later: nothing is lost, the nodes converge, no connection ends,
    the clients of each node keep receiving the others' edits (from the database, even at
    a node whose clients only read meanwhile), and every node relays again within 2 s."""
    seed = random.randrange(2**32)
    options = crash.Options(
        rounds=3, kill_redis=True, min_down=2.2, max_down=2.8, seed=seed, db=postgres_url, **CLUSTER
    )
    summary = await crash.run(options, tmp_path)
    about = f"seed {seed}\n{summary.table()}"
    assert summary.error is None and not summary.failed, about
    assert summary.kills == 3 and not summary.losses, about
    assert summary.final_sync == "equal (2 rooms, on every node)", about
    for result in summary.rounds:
        measured = result.redis
        assert measured is not None and not measured.problems, about
        assert not result.diverged and result.moves == 0 and not measured.closes, about
        assert measured.down_seconds >= 2.2, about
        assert set(measured.resume_seconds) == {"n0", "n1", "n2"}, about
        assert measured.resumed <= 2.0, about
        # Not vacuous: every client got edits made on other nodes while Redis was down,
        # the quiet node's through its reads of the log, and the relay carried edits after.
        assert all(count > 0 for count in measured.down_cross.values()), about
        assert measured.quiet_delays and measured.relay_delays, about
        for client in result.clients:
            assert client.live_updates >= 5 and client.verified == client.received, about


def test_the_convergence_check_tells_apart_states_that_differ() -> None:
    """Two nodes' states are equal for the check only if they hold the same structs,
    deletions and content: one lacking an edit, or only a deletion, differs."""
    rng = random.Random(3)
    doc = pycrdt.Doc(client_id=1)
    _edits(doc, 40, rng)
    before = doc.get_update()
    assert crash._fingerprint(before) == crash._fingerprint(doc.get_update())
    other = pycrdt.Doc()
    other.apply_update(before)
    assert crash._fingerprint(other.get_update()) == crash._fingerprint(before)
    _edits_of(doc, lambda: doc.get("content", type=pycrdt.Text).__delitem__(slice(0, 2)))
    deleted = doc.get_update()
    assert crash._fingerprint(deleted) != crash._fingerprint(before)
    assert "lacks 0 struct ranges, 1 deletions" in crash._difference(
        "room", "n1", before, "n0", deleted
    )


def _edits(doc: pycrdt.Doc[Any], count: int, rng: random.Random) -> list[bytes]:
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    for _ in range(count):
        crash.edit_once(doc, rng)
    doc.unobserve(subscription)
    return updates


def test_the_check_finds_missing_edits_and_deletions() -> None:
    """The check itself is not vacuous: a server state lacking received updates fails it."""
    rng = random.Random(5)
    alice, bob = pycrdt.Doc(client_id=1), pycrdt.Doc(client_id=2)
    from_alice = _edits(alice, 60, rng)
    bob.apply_update(alice.get_update())
    from_bob = _edits(bob, 60, rng)
    received = from_alice + from_bob

    whole = pycrdt.Doc()
    for update in received:
        whole.apply_update(update)
    server = crash.ServerState(whole.get_update())
    assert [server.missing(i, u) for i, u in enumerate(received)] == [None] * len(received)
    assert crash.changes_applied(server, received) is None

    partial = pycrdt.Doc()
    for update in received[:-5]:
        partial.apply_update(update)
    server = crash.ServerState(partial.get_update())
    missing = [m for i, u in enumerate(received) if (m := server.missing(i, u)) is not None]
    assert [m.index for m in missing] == list(range(len(received) - 5, len(received)))
    assert crash.changes_applied(server, received) is not None

    # A lost deletion alone (its item is on the server) is found too.
    text = bob.get("content", type=pycrdt.Text)
    server = crash.ServerState(bob.get_update())
    deletion = _edits_of(bob, lambda: text.__delitem__(slice(0, 2)))
    lost = server.missing(0, deletion)
    assert lost is not None and lost.deletions and not lost.structs
    assert crash.changes_applied(server, [deletion]) is not None

    # Nothing on the server at all (the document was never stored).
    server = crash.ServerState(crash.EMPTY_UPDATE)
    assert server.missing(0, received[0]) is not None


def _edits_of(doc: pycrdt.Doc[Any], change: Any) -> bytes:
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    change()
    doc.unobserve(subscription)
    assert len(updates) == 1
    return updates[0]
