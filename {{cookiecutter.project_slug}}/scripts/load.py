"""Load a running instance through its own ``/ws``: delivered messages/s and p99 latency, nothing lost.

    python scripts/load.py --url http://127.0.0.1:8000 --clients 200 --rooms 4 --messages 5 --rate 1

Client *i* gets a token (``/api/signup``, or ``/api/login`` where there are no accounts), opens
``/ws``, authenticates with its first frame, joins room *i* mod R and, once every client has joined,
sends M messages at RATE messages/s. Each text carries
``client:seq:send-time``, so every member checks it hears each message of its room exactly once and
measures send-to-receive latency (one clock: all clients are in this process). It prints one JSON
line and exits 1 when a message was lost or duplicated. Keep ``--rate`` under the server's
``APP_RATE_LIMIT_PER_SECOND``, and raise its ``APP_HANDSHAKE_RATE_PER_ADDRESS`` for more than a few
dozen clients: they all come from this one address. Against the comparison peers: the template's ``bench/ws_load.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import websockets


def post(url: str, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def token_for(base: str, username: str) -> str:
    """A fresh account's token; where the service has no accounts, a login by name."""
    credentials = {"username": username, "password": secrets.token_urlsafe(16)}
    status, body = post(f"{base}/api/signup", credentials)
    if status in (404, 405):
        status, body = post(f"{base}/api/login", credentials)
    if "token" not in body:
        raise SystemExit(f"no token for {username}: HTTP {status}")
    return str(body["token"])


def frames(raw: str | bytes) -> list[dict[str, Any]]:
    """A frame, or the JSON array the server sends frames that queued up for a busy socket as."""
    data = json.loads(raw)
    return data if isinstance(data, list) else [data]


class Tally:
    """First deliveries of every client; ``complete`` is set when all expected have arrived."""

    def __init__(self) -> None:
        self.expected = 0
        self.delivered = 0
        self.complete = asyncio.Event()

    def count(self) -> None:
        self.delivered += 1
        if self.delivered >= self.expected:
            self.complete.set()


class Client:
    def __init__(self, cid: int, room: str, tally: Tally) -> None:
        self.cid, self.room, self.tally = cid, room, tally
        self.heard: Counter[tuple[int, int]] = Counter()
        self.latencies: list[float] = []
        self.last = 0.0
        self.ws: Any = None

    async def connect(self, ws_url: str, token: str) -> None:
        self.ws = await websockets.connect(ws_url, open_timeout=30, max_queue=None)
        await self.ws.send(json.dumps({"type": "auth", "token": token}))
        await self.ws.send(json.dumps({"type": "join", "room": self.room}))
        while not any(f.get("type") == "joined" and f.get("room") == self.room for f in frames(await self.ws.recv())):
            pass

    async def read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                now = time.monotonic()
                for frame in frames(raw):
                    if frame.get("type") == "message" and frame.get("room") == self.room:
                        sender, seq, sent = frame["text"].split(":")
                        key = (int(sender), int(seq))
                        self.heard[key] += 1
                        if self.heard[key] == 1:
                            self.latencies.append(now - float(sent))
                            self.last = now
                            self.tally.count()

    async def send(self, seq: int) -> None:
        text = f"{self.cid}:{seq}:{time.monotonic():.6f}"
        await self.ws.send(json.dumps({"type": "message", "room": self.room, "text": text}))


async def run(url: str, clients: int, rooms: int, messages: int, rate: float, drain: float) -> dict[str, Any]:
    """Connect, send, wait until everything arrived (or ``drain`` seconds passed); the counts and figures."""
    run_id = secrets.token_hex(3)
    tally = Tally()
    members = [Client(i, f"load-{run_id}-{i % rooms}", tally) for i in range(clients)]
    ws_url = url.replace("http", "ws", 1).rstrip("/") + "/ws"
    gate = asyncio.Semaphore(50)

    async def connect(client: Client) -> None:
        async with gate:
            token = await asyncio.to_thread(token_for, url.rstrip("/"), f"load{run_id}{client.cid}")
            await client.connect(ws_url, token)

    await asyncio.gather(*(connect(c) for c in members))
    size = Counter(c.room for c in members)
    tally.expected = expected = sum(size[c.room] for c in members) * messages
    readers = [asyncio.create_task(c.read()) for c in members]
    start = time.monotonic()

    async def sender(client: Client) -> None:
        for seq in range(messages):
            await asyncio.sleep(max(0.0, start + seq / rate - time.monotonic()))
            await client.send(seq)

    try:
        await asyncio.gather(*(sender(c) for c in members))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.complete.wait(), drain)
        await asyncio.sleep(0.3)  # a late duplicate shows
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*(c.ws.close() for c in members), *readers, return_exceptions=True)
    delivered = tally.delivered
    latencies = sorted(t for c in members for t in c.latencies)
    last = max((c.last for c in members), default=0.0)
    return {
        "clients": clients, "rooms": rooms, "messages": messages, "expected": expected, "delivered": delivered,
        "lost": expected - delivered, "duplicated": sum(n - 1 for c in members for n in c.heard.values()),
        "msgs_per_s": round(delivered / (last - start), 1) if last > start else 0.0,
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2)
        if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service's HTTP base URL")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--messages", type=int, default=5, help="messages per client")
    parser.add_argument("--rate", type=float, default=1.0, help="messages/s per client")
    parser.add_argument("--drain", type=float, default=30.0, help="most seconds to wait for deliveries")
    args = parser.parse_args(argv)
    if min(args.clients, args.rooms, args.messages) < 1 or args.rate <= 0 or args.rooms > args.clients:
        parser.error("--clients, --rooms, --messages and --rate must be positive, and rooms at most clients")
    report = asyncio.run(run(args.url, args.clients, args.rooms, args.messages, args.rate, args.drain))
    print(json.dumps(report))
    return 1 if report["lost"] or report["duplicated"] else 0


if __name__ == "__main__":
    sys.exit(main())
