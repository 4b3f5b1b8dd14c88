"""Several gunicorn workers (and two gunicorn masters) cooperating only through the channel layer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.channels.config import build_layer
from app.chat.protocol import room_group, user_group

from ..brokers import distributed_backends, layer_config, require_broker
from ..live_server import LiveServer, live_server, service_env
from .client import ChatClient, Frame, clients_on_distinct_workers

pytestmark = pytest.mark.slow


@pytest.fixture(params=distributed_backends())
def server(request: pytest.FixtureRequest, prefix: str, tmp_path: Path) -> Iterator[LiveServer]:
    require_broker(request.param)
    with live_server(service_env(request.param, prefix), workers=3, tmp_path=tmp_path) as running:
        yield running


async def test_room_presence_typing_and_dms_cross_workers(server: LiveServer) -> None:
    alice, bob = await clients_on_distinct_workers(server.ws_url, [server.login("alice"), server.login("bob")])
    assert alice.worker != bob.worker
    await alice.join("lobby")
    joined = await bob.join("lobby")
    assert "bob" in joined["members"] and joined["truncated"] is False
    presence = await alice.expect("presence", lambda f: "bob" in f["joined"])
    assert presence["count"] == 2 and "members" not in presence

    await bob.send(type="message", room="lobby", text="hello from bob")
    message = await alice.expect("message")
    assert (message["from"], message["text"]) == ("bob", "hello from bob")
    assert (await bob.expect("message"))["id"] == message["id"]

    await alice.send(type="typing", room="lobby", typing=True)
    typing = await bob.expect("typing")
    assert (typing["from"], typing["typing"]) == ("alice", True)

    # a DM reaches every connection of its user, on any worker, and no one else
    bob_again, carol = await clients_on_distinct_workers(server.ws_url, [server.login("bob"), server.login("carol")])
    await alice.send(type="direct", to="bob", text="psst")
    for client in (bob, bob_again):
        direct = await client.expect("direct")
        assert (direct["from"], direct["text"]) == ("alice", "psst")
    with pytest.raises(TimeoutError):
        await carol.expect("direct", timeout=1)

    await bob.send(type="rooms")
    rooms = await bob.expect("rooms")
    assert {"name": "lobby", "members": 2} in rooms["rooms"]
    await bob.close()
    await bob_again.close()
    left = await alice.expect("presence", lambda f: "bob" in f["left"])
    assert left["count"] == 1
    for client in (alice, carol):
        await client.close()


@pytest.fixture(params=distributed_backends())
def two_workers(request: pytest.FixtureRequest, prefix: str, tmp_path: Path) -> Iterator[LiveServer]:
    """Two gunicorn workers that list 3 names at most in ``joined`` and ``members``."""
    require_broker(request.param)
    with live_server(service_env(request.param, prefix, APP_MEMBER_LIST_LIMIT="3"), workers=2,
                     tmp_path=tmp_path) as running:
        yield running


async def follow(watcher: ChatClient, room: str, known: set[str], until: Callable[[set[str], int], bool]) -> int:
    """Applies ``presence`` frames to ``known`` as the page does, until ``until(known, count)``; the count."""
    async with asyncio.timeout(20):
        while True:
            frame = await watcher.expect("presence", lambda f: f["room"] == room)
            known |= set(frame["joined"])
            known -= set(frame["left"])
            if until(known, frame["count"]):
                return int(frame["count"])


async def who(client: ChatClient, room: str, count: int) -> Frame:
    """The ``members`` answer once this client's worker counts ``count`` (the other's deltas come a moment later)."""
    async with asyncio.timeout(15):
        while True:
            await client.send(type="who", room=room)
            frame = await client.expect("members", lambda f: f["room"] == room)
            if frame["count"] == count:
                return frame
            await asyncio.sleep(0.1)


async def test_member_counts_and_deltas_across_two_workers(two_workers: LiveServer) -> None:
    server = two_workers
    watcher, first = await clients_on_distinct_workers(server.ws_url, [server.login("wanda"), server.login("m00")])
    joined = await watcher.join("crowd")
    assert (joined["members"], joined["count"], joined["truncated"]) == (["wanda"], 1, False)
    names = [f"m{n:02}" for n in range(12)]
    clients = [first, *[await ChatClient.connect(server.ws_url, server.login(name)) for name in names[1:]]]
    await asyncio.gather(*(client.join("crowd") for client in clients))
    everyone = {"wanda", *names}

    known = {"wanda"}  # what the watcher's page knows: its joined frame, then the deltas
    assert await follow(watcher, "crowd", known, lambda k, count: count == 13 and k == everyone) == 13
    for client in (watcher, first):  # each worker: the first 3 names by count of all, on both workers
        members = await who(client, "crowd", 13)
        assert (members["members"], members["truncated"]) == (["m00", "m01", "m02"], True)
    late = await clients[-1].join("crowd")  # a rejoin: the list is the first 3 again, not all 13
    assert (late["members"], late["count"], late["truncated"]) == (["m00", "m01", "m02"], 13, True)

    gone, staying = clients[1::2], clients[::2]  # first (on the other worker) stays
    for client in gone:
        await client.close()
    remaining = everyone - {names[n] for n in range(1, 12, 2)}
    assert await follow(watcher, "crowd", known, lambda k, count: count == 7 and k == remaining) == 7
    assert (await who(first, "crowd", 7))["members"] == ["m00", "m02", "m04"]
    token = server.login("m00")
    async with asyncio.timeout(15):  # the HTTP count, from whichever worker answers
        while {"name": "crowd", "members": 7} not in server.request("GET", "/api/rooms", token=token)[1]:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    for client in (watcher, *staying):
        await client.close()


async def test_history_and_http_api_cross_workers(server: LiveServer) -> None:
    token = server.login("dave")
    status, body = server.post("/api/rooms/news/messages", {"text": "posted over HTTP"}, token=token)
    assert (status, body["detail"]) == (403, "join room 'news' on a socket first")
    dave = await ChatClient.connect(server.ws_url, token)
    await dave.join("news")
    erin, frank = await clients_on_distinct_workers(server.ws_url, [server.login("erin"), server.login("frank")])
    await erin.join("news")
    await frank.join("news")
    async with asyncio.timeout(15):  # the HTTP request may reach a worker that hears of dave's join a moment later
        while (status := server.post("/api/rooms/news/messages", {"text": "first"}, token=token)[0]) == 403:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    assert status == 202
    status, body = server.post("/api/rooms/news/messages", {"text": "second"}, token=token)
    assert status == 202
    for client in (erin, frank):
        assert (await client.expect("message", lambda f: f["text"] == "second"))["id"] == body["id"]
    status, _ = server.post("/api/users/frank/notify", {"text": "ping"}, token=token)
    assert status == 202
    assert (await frank.expect("direct"))["text"] == "ping"
    # presence travels between workers through the layer: the worker answering may learn of it a moment later
    async with asyncio.timeout(15):
        rooms = server.request("GET", "/api/rooms", token=token)
        while {"name": "news", "members": 3} not in rooms[1]:
            await asyncio.sleep(0.2)
            rooms = server.request("GET", "/api/rooms", token=token)
    assert rooms[0] == 200
    assert server.get("/api/rooms")[0] == 401
    status, _ = server.post("/api/rooms/news/messages", {"text": "x"}, token="forged")
    assert status == 401
    for client in (dave, erin, frank):
        await client.close()


async def test_a_repeated_job_message_reaches_each_client_once(server: LiveServer, prefix: str) -> None:
    """Jobs deliver at least once: a retry resends a send whose reply the broker blip lost.

    The consumer drops a repeat of the same job message (by id and recipient or room), so
    clients see each once, and a different job or room still gets through.
    """
    backend = server.env["FASTAPI_WEBSOCKETS_BACKEND"]
    kate = await ChatClient.connect(server.ws_url, server.login("kate"))
    await kate.join("deck")
    layer = build_layer(backend, layer_config(backend, prefix))
    try:
        direct = {"type": "chat.direct", "id": "job-1", "from": "ops", "to": "kate", "text": "once", "ts": 1.0}
        for message in (direct, {**direct, "ts": 2.0}, {**direct, "id": "job-2"}):
            await layer.group_send(user_group("kate"), message)
        announcement = {"type": "chat.announcement", "id": "job-3", "room": "deck", "text": "hi", "ts": 1.0}
        for message in (announcement, {**announcement, "ts": 2.0}, {**announcement, "id": "job-4"}):
            await layer.group_send(room_group("deck"), message)
    finally:
        await layer.close()
    assert [(await kate.expect("direct"))["id"] for _ in range(2)] == ["job-1", "job-2"]
    assert [(await kate.expect("announcement"))["id"] for _ in range(2)] == ["job-3", "job-4"]
    for kind in ("direct", "announcement"):
        with pytest.raises(TimeoutError):
            await kate.expect(kind, timeout=1)
    await kate.close()


async def test_two_hosts_share_rooms(request: pytest.FixtureRequest, prefix: str, tmp_path: Path) -> None:
    backend = distributed_backends()[0] if distributed_backends() else pytest.skip("no distributed backend")
    require_broker(backend)
    env = service_env(backend, prefix)
    with live_server(env, workers=1, tmp_path=tmp_path) as one, live_server(env, workers=1, tmp_path=tmp_path) as two:
        gina = await ChatClient.connect(one.ws_url, one.login("gina"))
        hank = await ChatClient.connect(two.ws_url, two.login("hank"))
        await gina.join("hall")
        await hank.join("hall")
        await gina.expect("presence", lambda f: "hank" in f["joined"])
        await hank.send(type="message", room="hall", text="across hosts")
        assert (await gina.expect("message"))["text"] == "across hosts"
        await gina.close()
        await hank.close()


async def test_sigterm_closes_with_1001_and_other_workers_keep_serving(server: LiveServer) -> None:
    ivan, judy = await clients_on_distinct_workers(server.ws_url, [server.login("ivan"), server.login("judy")])
    await ivan.join("ops")
    if "ivan" not in (await judy.join("ops"))["members"]:  # ivan's worker tells the others within 100 ms
        await judy.expect("presence", lambda f: "ivan" in f["joined"])
    victim = next(pid for pid in server.worker_pids() if str(pid) == ivan.worker.rsplit(":", 1)[1])
    import os
    import signal

    os.kill(victim, signal.SIGTERM)
    with pytest.raises(Exception) as closed:
        await ivan.expect("never", timeout=15)
    assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 1001  # type: ignore[attr-defined]
    # ivan's entry leaves the room at once (the worker left its groups), and judy keeps chatting
    await judy.expect("presence", lambda f: "ivan" in f["left"], timeout=15)
    await asyncio.sleep(0.2)
    ivan_back = await ChatClient.connect(server.ws_url, server.login("ivan"))
    await ivan_back.join("ops")
    await judy.send(type="message", room="ops", text="still here")
    assert (await ivan_back.expect("message"))["text"] == "still here"
    await judy.close()
    await ivan_back.close()
