"""The delivery contract, black-box against real gunicorn workers on every backend (docs/protocol.md).

Room messages carry a per-room ``seq``; a rejoin with ``since`` recovers what a client missed and
goes on live with no gap and no duplicate at the seam; a send with a ``client_id`` is acked once
stored and a resend stores nothing new; direct messages wait in the store for a user with no socket.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from ..brokers import installed_backends, require_broker
from ..live_server import LiveServer, live_server, service_env
from ..reliability.report import report
from .client import ChatClient, Frame, clients_on_distinct_workers

pytestmark = pytest.mark.slow
NO_RATE_LIMIT = {"APP_RATE_LIMIT_PER_SECOND": "1000", "APP_RATE_LIMIT_BURST": "1000"}


@pytest.fixture(params=installed_backends())
def server(request: pytest.FixtureRequest, prefix: str, tmp_path: Path) -> Iterator[LiveServer]:
    require_broker(request.param)
    workers = 1 if request.param == "inmemory" else 3
    with live_server(service_env(request.param, prefix, **NO_RATE_LIMIT), workers=workers,
                     tmp_path=tmp_path) as running:
        yield running


async def clients(server: LiveServer, *names: str) -> list[ChatClient]:
    """One client per name, on distinct workers where there are several."""
    tokens = [server.login(name) for name in names]
    if server.workers == 1:
        return [await ChatClient.connect(server.ws_url, token) for token in tokens]
    return await clients_on_distinct_workers(server.ws_url, tokens)


async def messages_until(client: ChatClient, room: str, seq: int, timeout: float = 30) -> list[Frame]:
    """The room's message frames this client receives, up to the one with ``seq``."""
    received: list[Frame] = []
    async with asyncio.timeout(timeout):
        while not received or received[-1]["seq"] < seq:
            received.append(await client.expect("message", lambda f: f["room"] == room))
    return received


def cid() -> str:
    return uuid.uuid4().hex


async def test_rejoin_since_recovers_the_missed_then_live_without_gap_or_duplicate(server: LiveServer) -> None:
    alice, bob, carol = await clients(server, "alice", "bob", "carol")
    for client in (alice, bob, carol):
        await client.join("lobby")
    first = await bob.say("lobby", "before", cid())
    last_seen = (await messages_until(alice, "lobby", first["seq"]))[-1]["seq"]
    await alice.close()

    missed = [await bob.say("lobby", f"missed {i}", cid()) for i in range(100)]
    assert [ack["seq"] for ack in missed] == list(range(last_seen + 1, last_seen + 101))

    carol_acks: list[Frame] = []
    rejoined, posting, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def chatter() -> None:  # carol posts before, during and well after alice's rejoin
        after_rejoin = 0
        while after_rejoin < 40:
            carol_acks.append(await carol.say("lobby", f"live {len(carol_acks)}", cid()))
            if len(carol_acks) == 5:
                posting.set()
            after_rejoin += rejoined.is_set()
            await asyncio.sleep(0.01)
        done.set()

    task = asyncio.create_task(chatter())
    await asyncio.wait_for(posting.wait(), 30)
    token = server.login("alice")
    asked = time.monotonic()
    alice = await ChatClient.connect(server.ws_url, token)
    joined = await alice.join("lobby", since=last_seen)
    recovery = time.monotonic() - asked
    rejoined.set()
    await asyncio.wait_for(done.wait(), 30)
    await task

    assert joined["recovered"] is True
    history = joined["history"]
    assert [f["text"] for f in history[:100]] == [f"missed {i}" for i in range(100)]
    final = carol_acks[-1]["seq"]
    live = await messages_until(alice, "lobby", final) if history[-1]["seq"] < final else []
    view = [f["seq"] for f in history + live]
    expected = list(range(last_seen + 1, final + 1))
    report("RECOVERY", {"backend": server.env["FASTAPI_WEBSOCKETS_BACKEND"], "missed": len(missed),
                        "recovered": len(history), "live_after": len(live), "lost": len(set(expected) - set(view)),
                        "duplicated": len(view) - len(set(view)),
                        "out_of_order": sum(b <= a for a, b in pairwise(view)),
                        "recovery_s": round(recovery, 3)})
    assert view == expected  # 0 lost, 0 duplicated, 0 out of order
    assert joined["seq"] == history[-1]["seq"]
    for client in (alice, bob, carol):
        await client.close()


async def test_a_resend_is_stored_once_and_acked_alike(server: LiveServer) -> None:
    dave, erin = await clients(server, "dave", "erin")
    await dave.join("news")
    await erin.join("news")
    key = cid()
    first = await dave.say("news", "once", key)
    assert set(first) == {"type", "client_id", "id", "seq", "room"} and first["room"] == "news"
    assert await dave.say("news", "once", key) == first
    dave_again = await ChatClient.connect(server.ws_url, server.login("dave"))  # a reconnect, maybe elsewhere
    await dave_again.join("news")
    assert await dave_again.say("news", "once", key) == first

    delivered = await erin.expect("message", lambda f: f["client_id"] == key)
    assert (delivered["id"], delivered["seq"]) == (first["id"], first["seq"])
    with pytest.raises(TimeoutError):
        await erin.expect("message", lambda f: f["client_id"] == key, timeout=1.5)
    status, page = server.request("GET", "/api/rooms/news/messages", token=server.login("erin"))
    assert status == 200
    assert [(m["seq"], m["client_id"]) for m in page["messages"]] == [(first["seq"], key)]

    await dave.send(type="message", room="elsewhere", text="x", client_id="refused-1")
    refused = await dave.expect("error")
    assert (refused["code"], refused["client_id"]) == ("not_in_room", "refused-1")
    for client in (dave, dave_again, erin):
        await client.close()


async def test_direct_messages_wait_for_a_user_with_no_socket(server: LiveServer) -> None:
    (gina,) = await clients(server, "gina")
    server.login("hank")  # hank exists, but has no socket
    key = cid()
    await gina.send(type="direct", to="hank", text="kept for you", client_id=key)
    ack = await gina.expect("ack", lambda f: f["client_id"] == key)
    assert (ack["to"], ack["seq"]) == ("hank", 1)
    await gina.send(type="direct", to="hank", text="kept for you", client_id=key)
    assert await gina.expect("ack", lambda f: f["client_id"] == key) == ack
    await gina.send(type="direct", to="hank", text="and this one")
    assert (await gina.expect("direct_sent"))["seq"] == 2

    hank = await ChatClient.connect(server.ws_url, server.login("hank"))
    await hank.send(type="sync", dm_since=0)
    synced = await hank.expect("directs")
    assert [(d["seq"], d["from"], d["text"]) for d in synced["messages"]] == [
        (1, "gina", "kept for you"), (2, "gina", "and this one")]
    assert (synced["recovered"], synced["seq"]) == (True, 2)
    await hank.send(type="sync", dm_since=1)
    assert [d["seq"] for d in (await hank.expect("directs"))["messages"]] == [2]
    await gina.send(type="direct", to="hank", text="live now")
    live = await hank.expect("direct")
    assert (live["seq"], live["text"]) == (3, "live now")
    for client in (gina, hank):
        await client.close()
