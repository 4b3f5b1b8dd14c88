"""Bounded soak: N clients in rooms across 3 gunicorn workers send a fixed count of messages each.

Reported (``SOAK`` lines; appended as JSON to ``$RELIABILITY_REPORT`` if set): deliveries expected,
lost and duplicated (asserted zero), and per worker its RSS, open file descriptors and sockets at
start, at peak and after each round (client sockets asserted back to zero, fds and RSS not growing
from one round's end to the next; the broker and store pools may warm up to their sizes).
Sizes: ``RELIABILITY_SOAK_CLIENTS`` (300), ``RELIABILITY_SOAK_MESSAGES`` per client (3), 10 per room,
``RELIABILITY_SOAK_ROUNDS`` (2: the same load twice, so growth between the rounds' ends shows a leak).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from ..brokers import distributed_backends, require_broker
from ..chat.client import unpack
from ..live_server import LiveServer, live_server, service_env
from .accounts import seeded_tokens
from .procstats import open_fds, rss_bytes, tcp_sockets
from .report import report

pytestmark = pytest.mark.slow

CLIENTS = int(os.environ.get("RELIABILITY_SOAK_CLIENTS", "300"))
MESSAGES = int(os.environ.get("RELIABILITY_SOAK_MESSAGES", "3"))
ROOM_SIZE = 10
WORKERS = 3
ROUNDS = int(os.environ.get("RELIABILITY_SOAK_ROUNDS", "2"))
# TCP sockets a worker may hold besides its clients: the service's listener and metrics/health
# sockets (4), plus the layer's pool and inbox and the history store's pool, at their sizes
BROKER_SOCKETS = {"redis": 4 + 50 + 1 + 16, "postgresql": 4 + 2 + 1 + 2, "nats": 4 + 1 + 1, "rabbitmq": 4 + 1}
# files a worker may hold on its SQLite store: two engines (accounts, messages) of 5 pooled connections,
# each with the database and its WAL open, and the one shared-memory index
STORE_FILES = 2 * 5 * 2 + 1


class Member:
    def __init__(self, name: str, room: str, connection: ClientConnection, worker: str) -> None:
        self.name, self.room, self.connection, self.worker = name, room, connection, worker
        self.got: Counter[str] = Counter()
        self.joined = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.connection:
                for frame in unpack(raw):
                    assert isinstance(frame, dict)
                    if frame["type"] == "message":
                        self.got[frame["text"]] += 1
                    elif frame["type"] == "joined":
                        self.joined.set()


async def _connect(server: LiveServer, index: int, token: str) -> Member:
    connection = await websockets.connect(server.ws_url, open_timeout=60, ping_interval=None)
    await connection.send(json.dumps({"type": "auth", "token": token}))
    welcome = unpack(await asyncio.wait_for(connection.recv(), 60))[0]
    assert isinstance(welcome, dict)
    member = Member(f"u{index}", f"soak{index // ROOM_SIZE}", connection, str(welcome["worker"]))
    await connection.send(json.dumps({"type": "join", "room": member.room}))
    return member


def _store_files(server: LiveServer, pid: int) -> int:
    """Descriptors ``pid`` holds on the SQLite store's files (the database, its WAL and shared memory)."""
    database = server.env["APP_DATABASE_URL"].partition(":///")[2]
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed since listed
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(database)
    return count


def _snapshot(server: LiveServer) -> dict[int, dict[str, float]]:
    """Per worker: RSS, open fds, sockets of WebSocket clients (on the service port), other (broker) sockets
    and the store's files."""
    snapshot: dict[int, dict[str, float]] = {}
    for pid in server.worker_pids():
        sockets = tcp_sockets(pid)
        clients = sum(1 for local, remote in sockets if local == server.port and remote)  # not the listener
        snapshot[pid] = {"rss_mib": round(rss_bytes(pid) / 2**20, 1), "fds": open_fds(pid), "client_sockets": clients,
                         "broker_sockets": len(sockets) - clients, "store_files": _store_files(server, pid)}
    return snapshot


async def _round(server: LiveServer, tokens: list[str]) -> dict[str, Any]:
    """Connect every client, join, send MESSAGES each, wait for the deliveries, disconnect."""
    members: list[Member] = []
    began = time.monotonic()
    try:
        for batch in range(0, CLIENTS, 50):
            members += await asyncio.gather(*(_connect(server, i, tokens[i])
                                              for i in range(batch, min(batch + 50, CLIENTS))))
        async with asyncio.timeout(120):
            await asyncio.gather(*(m.joined.wait() for m in members))
        await asyncio.sleep(2)  # group memberships settle on every worker
        for k in range(MESSAGES):
            await asyncio.gather(*(m.connection.send(json.dumps(
                {"type": "message", "room": m.room, "text": f"{m.name}:{k}"})) for m in members))
        expected: dict[str, Counter[str]] = {}
        for m in members:
            expected.setdefault(m.room, Counter()).update(f"{m.name}:{k}" for k in range(MESSAGES))
        total = sum(sum(expected[m.room].values()) for m in members)
        for _ in range(360):  # bounded: 180 s
            if sum(sum(m.got.values()) for m in members) >= total:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)  # late duplicates
        peak = _snapshot(server)
        return {"deliveries": total, "lost": sum(sum((expected[m.room] - m.got).values()) for m in members),
                "duplicated": sum(sum((m.got - expected[m.room]).values()) for m in members),
                "seconds": round(time.monotonic() - began, 1),
                "clients_per_worker": sorted(Counter(m.worker for m in members).values()), "peak": peak}
    finally:
        for m in members:
            with contextlib.suppress(Exception):
                await m.connection.close()
            m.reader.cancel()


async def _settled(server: LiveServer) -> dict[int, dict[str, float]]:
    for _ in range(100):  # bounded: every client socket is released once its client is gone
        snapshot = _snapshot(server)
        if all(worker["client_sockets"] == 0 for worker in snapshot.values()):
            break
        await asyncio.sleep(0.2)
    return snapshot


@pytest.mark.parametrize("backend", distributed_backends())
async def test_soak(backend: str, prefix: str, tmp_path: Path) -> None:
    require_broker(backend)
    env = service_env(backend, prefix, APP_RATE_LIMIT_BURST="1000", APP_RATE_LIMIT_PER_SECOND="1000",
                      APP_HISTORY_SIZE="0", APP_IDLE_TIMEOUT_SECONDS="600")
    with live_server(env, workers=WORKERS, tmp_path=tmp_path) as server:
        start = _snapshot(server)
        tokens = seeded_tokens(server, [f"u{i}" for i in range(CLIENTS)])
        rounds, ends = [], []
        for _ in range(ROUNDS):  # the same load again: what a leak would add shows up between round ends
            rounds.append(await _round(server, tokens))
            ends.append(await _settled(server))
        row: dict[str, Any] = {
            "backend": backend, "clients": CLIENTS, "messages_per_client": MESSAGES, "rounds": ROUNDS,
            "deliveries": sum(r["deliveries"] for r in rounds), "lost": sum(r["lost"] for r in rounds),
            "duplicated": sum(r["duplicated"] for r in rounds), "seconds": [r["seconds"] for r in rounds],
            "clients_per_worker": rounds[0]["clients_per_worker"],
            "workers": {str(pid): {"start": start[pid], "peak": rounds[-1]["peak"].get(pid),
                                   "ends": [end.get(pid) for end in ends]} for pid in start},
        }
        report("SOAK", row)
        assert server.worker_pids() == list(start), "a worker restarted"
        assert (row["lost"], row["duplicated"]) == (0, 0)
        for pid in start:  # client sockets must all be gone; other files must not pile up
            assert all(end[pid]["client_sockets"] == 0 for end in ends), f"worker {pid} kept client sockets"
            files = [end[pid]["fds"] - end[pid]["broker_sockets"] - end[pid]["store_files"] for end in ends]
            assert files[-1] <= files[0], f"worker {pid}: more open files (not broker or store pools) after each round"
            # the pools warm up to their sizes under a round's peak concurrency, then stay there
            assert max(end[pid]["broker_sockets"] for end in ends) <= BROKER_SOCKETS[backend], f"worker {pid}"
            assert max(end[pid]["store_files"] for end in ends) <= STORE_FILES, f"worker {pid}"
            # the allocator settles over a few rounds (300 clients x 10 rounds: +20 to 30 MiB, then flat)
            growth_bound = max(48.0, CLIENTS * 0.1)
            assert ends[-1][pid]["rss_mib"] - ends[0][pid]["rss_mib"] < growth_bound, f"worker {pid}: RSS keeps growing"
