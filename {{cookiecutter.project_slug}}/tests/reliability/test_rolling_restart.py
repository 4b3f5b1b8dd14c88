"""Rolling restart under load (issue 18's test c): every client's view of its room equals the store.

3 gunicorn workers; 200 clients in 10 rooms post continuously, each with a ``client_id`` and an
outbox it resends after a reconnect; each worker is restarted in turn (SIGTERM: it drains with
1001, gunicorn starts a new one), twice. Once more with the broker killed (-9) and restarted in the
middle of the run (a private broker). At the end each client has seen each seq of its room exactly
once and in order: 0 lost, 0 duplicated, 0 out of order. The figures go to docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets

from ..brokers import distributed_backends, require_broker
from ..chat.client import ChatClient
from ..live_server import BROKER_ENV, LiveServer, live_server, service_env
from .accounts import seeded_tokens
from .brokerfaults import private_broker
from .report import report

pytestmark = pytest.mark.slow
CLIENTS, ROOMS, POST_EVERY = 200, 10, 3.0  # about 67 messages/s, each to 20 members
LIMITS = {"APP_RATE_LIMIT_PER_SECOND": "1000", "APP_RATE_LIMIT_BURST": "1000",
          "APP_HANDSHAKE_RATE_PER_ADDRESS": "10000", "APP_MAX_CONNECTIONS_PER_USER": "50"}


@dataclass
class Member:
    """A client as the page is one: remembers its last seq, rejoins with since, resends its outbox."""

    server: LiveServer
    token: str
    room: str
    view: list[int] = field(default_factory=list)
    outbox: dict[str, str] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    reconnects: list[float] = field(default_factory=list)  # seconds from losing the socket to `joined`
    client: ChatClient | None = None
    incomplete: int = 0
    errors: list[str] = field(default_factory=list)  # for the failure message

    def state(self) -> str:
        return (f"{self.room} connected={self.client is not None} last={self.last} unacked={len(self.outbox)}"
                f" errors={self.errors[-3:]}")

    @property
    def last(self) -> int:
        return max(self.view, default=0)

    async def run(self, stop: asyncio.Event) -> None:
        lost_at: float | None = None
        while not stop.is_set():
            try:
                self.client = await ChatClient.connect(self.server.ws_url, self.token)
                await self.client.send(type="join", room=self.room, since=self.last)
                while not stop.is_set():
                    frame = await self.client.next_frame()
                    if isinstance(frame, dict):
                        self.on_frame(frame)
                        if frame.get("type") == "joined" and lost_at is not None:
                            self.reconnects.append(time.monotonic() - lost_at)
                            lost_at = None
            except (websockets.ConnectionClosed, OSError, TimeoutError, AssertionError):
                lost_at = lost_at or time.monotonic()
                self.client = None
                await asyncio.sleep(random.uniform(0.1, 0.5))

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "joined" and frame["room"] == self.room:
            self.incomplete += frame.get("recovered") is False
            self.view.extend(m["seq"] for m in frame["history"])
            for key, text in list(self.outbox.items()):  # unacknowledged: resend with the same client_id
                self._send(key, text)
        elif kind == "message" and frame["room"] == self.room:
            self.view.append(frame["seq"])
        elif kind == "error":
            self.errors.append(f"{frame.get('code')}: {frame.get('detail')}")
        elif kind == "ack":
            self.acked[frame["client_id"]] = frame["seq"]
            self.outbox.pop(frame["client_id"], None)

    def post(self, text: str) -> None:
        key = uuid.uuid4().hex
        self.outbox[key] = text
        self._send(key, text)

    def _send(self, key: str, text: str) -> None:
        if self.client is not None:
            frame = {"type": "message", "room": self.room, "text": text, "client_id": key}
            task = asyncio.ensure_future(self.client.send(**frame))
            task.add_done_callback(lambda t: t.exception())  # a closed socket: the outbox resends it


async def post_forever(members: list[Member], stop: asyncio.Event) -> None:
    async def one(member: Member) -> None:
        await asyncio.sleep(random.uniform(0, POST_EVERY))
        while not stop.is_set():
            member.post(f"{member.room} {len(member.outbox) + len(member.acked)}")
            await asyncio.sleep(random.uniform(0.5, 1.5) * POST_EVERY)

    await asyncio.gather(*(one(member) for member in members))


def store_seqs(server: LiveServer, token: str, room: str) -> list[int]:
    """Every stored seq of ``room``, oldest first, paged back through the HTTP history API."""
    seqs: list[int] = []
    before = ""
    while True:
        status, page = server.request("GET", f"/api/rooms/{room}/messages?limit=200{before}", token=token)
        assert status == 200, page
        if not page["messages"]:
            return seqs
        seqs[:0] = [m["seq"] for m in page["messages"]]
        before = f"&before={page['messages'][0]['id']}"


def started(server: LiveServer) -> bool:
    """Every current worker has finished its startup (a worker that cannot boot stops gunicorn's master)."""
    logs = server.logs()
    return all(f"[{pid}] [INFO] Application startup complete." in logs for pid in server.worker_pids())


async def restart_each_worker(server: LiveServer) -> None:
    """SIGTERM one worker at a time (it drains with 1001); wait until gunicorn has a full set again."""
    for pid in server.worker_pids():
        os.kill(pid, signal.SIGTERM)
        await until(lambda pid=pid: pid not in (pids := server.worker_pids()) and len(pids) >= server.workers
                    and started(server), f"a new worker for {pid}", timeout=60)
        await asyncio.sleep(2)  # load goes on against the new worker


async def until(condition: Any, what: str, timeout: float = 90, members: list[Member] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        stuck = [m.state() for m in members or [] if m.outbox][:5]
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {stuck}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("fault", ["restarts", "restarts+broker_kill"])
@pytest.mark.parametrize("backend", distributed_backends()[:1])  # redis in the full bake: one backend, run once
async def test_rolling_restart_under_load(backend: str, fault: str, prefix: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        extra = dict(LIMITS)
        broker = None
        if fault.endswith("broker_kill"):
            broker = stack.enter_context(private_broker(backend, tmp_path))
            value = broker.config.get("url") or broker.config.get("dsn") or ",".join(broker.config["servers"])
            extra[BROKER_ENV[backend]] = value
        else:
            require_broker(backend)
        server = stack.enter_context(live_server(service_env(backend, prefix, **extra), workers=3, tmp_path=tmp_path))
        rooms = [f"r{i}" for i in range(ROOMS)]
        tokens = seeded_tokens(server, [f"u{i:03d}" for i in range(CLIENTS)])
        members = [Member(server, token, rooms[i % ROOMS]) for i, token in enumerate(tokens)]
        stop_clients, stop_posting = asyncio.Event(), asyncio.Event()
        clients = [asyncio.create_task(member.run(stop_clients)) for member in members]
        await until(lambda: all(m.client is not None for m in members), "every client connected")
        await asyncio.sleep(2)  # every join answered before the first post
        posting = asyncio.create_task(post_forever(members, stop_posting))
        started = time.monotonic()
        await asyncio.sleep(3)
        await restart_each_worker(server)
        if broker is not None:
            broker.kill()
            await asyncio.sleep(3)
            broker.start()
            await asyncio.sleep(5)
        await restart_each_worker(server)
        stop_posting.set()
        await posting
        await until(lambda: not any(m.outbox for m in members), "every send acknowledged", members=members)
        for room in rooms:  # the room's next message fills any gap the live path left (docs/protocol.md)
            next(m for m in members if m.room == room).post("last")
        await until(lambda: not any(m.outbox for m in members), "the last sends acknowledged")
        token = server.login("auditor")
        stored = {room: store_seqs(server, token, room) for room in rooms}
        await until(lambda: all(m.last >= len(stored[m.room]) for m in members), "every view caught up")
        stop_clients.set()
        for member in members:
            if member.client is not None:
                await member.client.close()
        await asyncio.gather(*clients, return_exceptions=True)

    for room in rooms:
        sent = [key for m in members if m.room == room for key in m.acked]
        assert stored[room] == list(range(1, len(sent) + 1)), room  # each send stored once, contiguous seqs
    lost = sum(len(set(stored[m.room]) - set(m.view)) for m in members)
    duplicated = sum(len(m.view) - len(set(m.view)) for m in members)
    out_of_order = sum(b <= a for m in members for a, b in zip(m.view, m.view[1:], strict=False))
    recoveries = [s for m in members for s in m.reconnects]
    report("DELIVERY", {"backend": backend, "fault": fault, "clients": CLIENTS, "rooms": ROOMS,
                        "stored": sum(map(len, stored.values())), "seconds": round(time.monotonic() - started, 1),
                        "reconnects": len(recoveries), "lost": lost, "duplicated": duplicated,
                        "out_of_order": out_of_order, "incomplete_recoveries": sum(m.incomplete for m in members),
                        "recovery_median_s": round(statistics.median(recoveries), 2) if recoveries else None,
                        "recovery_max_s": round(max(recoveries), 2) if recoveries else None})
    assert recoveries, "no client was moved by the restarts"
    assert (lost, duplicated, out_of_order) == (0, 0, 0)
