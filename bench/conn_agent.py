"""The load side of bench/connections.py: a process that holds thousands of chat sockets and obeys commands.

Each agent is its own process (``multiprocessing``, spawned), so the clients can use more than one core
while the controller stays idle enough to time ``/healthz``. Commands arrive over a pipe as
``(op, kwargs)``; each answers one dict. Sockets are ``bench.wsclient`` protocols, not ``websockets``
clients: at 20,000 sockets per run the client must cost less than the servers it measures. Only frames
a phase needs are parsed (``joined``, ``message``, ``error``); presence frames are skipped unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from bench.wsclient import HandshakeError, WebSocketClient

#: Client sockets spread over these source addresses (bound before connect), so ports and TIME_WAIT last.
SOURCES = [f"127.0.0.{n}" for n in range(2, 10)]
HOST = "127.0.0.1"
PATHS = {"ours": "/ws", "socketio": "/socket.io/?EIO=4&transport=websocket"}
#: What a broadcast's text starts with: ``bc:<n>:<monotonic send time>`` (one clock for every process).
BROADCAST = "bc:"
#: What a slow readers' burst message starts with (its sender counts them coming back).
BURST = "slow:"


class Closed(ConnectionError):
    """The server closed the socket (with this code) before it had joined its rooms."""

    def __init__(self, code: int) -> None:
        super().__init__(f"closed {code}")
        self.code = code


class Member(WebSocketClient):
    """One chat user's socket: authenticates (ours), joins its rooms, records broadcasts and the last seq."""

    __slots__ = ("agent", "cid", "token", "rooms", "seq", "pending", "ready", "acks", "joining", "expected", "up")

    def __init__(self, agent: Agent, cid: int, token: str | None, rooms: list[str],
                 seq: dict[str, int] | None = None) -> None:
        super().__init__()
        self.agent, self.cid, self.token, self.rooms = agent, cid, token, rooms
        self.seq: dict[str, int] = seq if seq is not None else {}
        self.pending: set[str] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks: dict[int, str] = {}
        self.joining = list(rooms)  # socket.io: joined once its namespace is connected
        self.expected = True  # False while the agent itself drops the socket
        self.up = False  # connected, authenticated and joined once

    @property
    def live(self) -> bool:
        return self.up and not self.closed

    def again(self) -> Member:
        """A new socket for the same user, rooms and seqs (a reconnect)."""
        return Member(self.agent, self.cid, self.token, self.rooms, self.seq)

    def join(self, rooms: list[str]) -> asyncio.Future[None]:
        """Join more rooms; the future resolves when every one of them is acknowledged."""
        self.ready = asyncio.get_running_loop().create_future()
        self.rooms = self.rooms + [r for r in rooms if r not in self.rooms]
        self._send_joins(rooms)
        return self.ready

    def _send_joins(self, rooms: list[str]) -> None:
        self.pending.update(rooms)
        for room in rooms:
            if self.agent.impl == "ours":
                frame: dict[str, Any] = {"type": "join", "room": room}
                if room in self.seq:
                    frame["since"] = self.seq[room]
                self.send_text(json.dumps(frame))
            else:
                ack = len(self.acks)
                self.acks[ack] = room
                self.send_text(f'42{ack}["join",{{"room":"{room}"}}]')

    def say(self, room: str, text: str) -> None:
        if self.agent.impl == "ours":
            self.send_text(json.dumps({"type": "message", "room": room, "text": text}))
        else:
            self.send_text("42" + json.dumps(["chat", {"room": room, "text": text}]))

    def _joined(self, room: str) -> None:
        self.pending.discard(room)
        if not self.pending and not self.ready.done():
            self.ready.set_result(None)

    # ------------------------------------------------------------------ wsclient callbacks

    def on_open(self) -> None:
        if self.agent.impl == "ours":  # auth, then the joins at once: the server reads them in order
            self.send_text(json.dumps({"type": "auth", "token": self.token}))
            self._send_joins(self.joining)
            self.joining = []

    def on_text(self, data: bytes) -> None:
        self.agent.read_bytes += len(data)
        if self.agent.impl == "ours":
            self._ours(data)
        else:
            self._socketio(data)

    def _ours(self, data: bytes) -> None:
        if b'"type":"message"' not in data and b'"type":"joined"' not in data and b'"type":"error"' not in data:
            return  # welcome, presence (a member list per change): nothing a phase reads
        parsed = json.loads(data)
        for frame in parsed if isinstance(parsed, list) else [parsed]:
            kind = frame.get("type")
            if kind == "message":
                room = frame["room"]
                self.seq[room] = max(self.seq.get(room, 0), frame["seq"])
                if frame["text"].startswith(BROADCAST):
                    self.agent.delivered(frame["text"])
                elif frame["text"].startswith(BURST):
                    self.agent.burst_seen += 1
            elif kind == "joined":
                self.seq[frame["room"]] = frame["seq"]
                self._joined(frame["room"])
            elif kind == "error":
                self.agent.errors[str(frame.get("code"))] += 1

    def _socketio(self, data: bytes) -> None:
        if data == b"2":  # Engine.IO ping
            self.send_text("3")
        elif data.startswith(b"42"):
            event, payload = json.loads(data[2:])
            if event == "message" and payload["text"].startswith(BROADCAST):
                self.agent.delivered(payload["text"])
            elif event == "message" and payload["text"].startswith(BURST):
                self.agent.burst_seen += 1
        elif data.startswith(b"43"):
            self._joined(self.acks.get(int(data[2:data.index(b"[")]), ""))
        elif data.startswith(b"40"):  # the namespace is connected
            self._send_joins(self.joining)
            self.joining = []
        elif data.startswith(b"44"):
            self.agent.errors["connect_error"] += 1
            self.abort()
        elif data.startswith(b"0"):  # Engine.IO open: connect the default namespace
            self.send_text("40")

    def on_close(self, code: int) -> None:
        if not self.ready.done():
            self.ready.set_exception(Closed(code))
            self.ready.exception()  # retrieved: nobody may be awaiting it (an idle socket the server closed)
        if self.expected and self.up:  # a socket that never got up is a failed attempt, counted there
            self.agent.closes[code] += 1


def reason(exc: BaseException) -> tuple[str, str]:
    """("refused" | "failed", what): refused is the server saying no, failed is anything else."""
    if isinstance(exc, Closed):
        return ("refused", f"close {exc.code}") if exc.code != 1006 else ("failed", "reset")
    if isinstance(exc, HandshakeError):
        return "refused", f"http {str(exc)[9:12]}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "ECONNREFUSED"
    if isinstance(exc, TimeoutError):
        return "failed", "timeout"
    return "failed", type(exc).__name__


class Agent:
    def __init__(self, index: int, impl: str, port: int) -> None:
        self.index, self.impl, self.port = index, impl, port
        self.members: dict[int, Member] = {}
        self.deliveries: dict[int, list[float]] = {}
        self.errors: Counter[str] = Counter()
        self.closes: Counter[int] = Counter()
        self.burst_seen = 0  # burst messages read by the sockets that read
        self.read_bytes = 0  # text payload read, by every socket of this agent

    def delivered(self, text: str) -> None:
        _, n, sent = text.split(":", 2)
        self.deliveries.setdefault(int(n), []).append(time.monotonic() - float(sent))

    async def _open(self, member: Member, timeout: float, rcvbuf: int | None = None) -> None:
        """Connect, authenticate and join: done when every room answered (else the socket is dropped)."""
        self.members[member.cid] = member  # the latest socket of each client, up or not
        try:
            async with asyncio.timeout(timeout):
                await member.connect(HOST, self.port, PATHS[self.impl], SOURCES[member.cid % len(SOURCES)], rcvbuf)
                await member.ready
        except BaseException:
            member.expected = False
            member.abort()
            raise
        member.up = True

    # ------------------------------------------------------------------ commands

    async def connect(self, clients: list[tuple[int, str | None, list[str]]], at_once: int, timeout: float,
                      rcvbuf: int | None = None, pause: bool = False) -> dict[str, Any]:
        """Each client connected, authenticated and joined, ``at_once`` at a time; none retried."""
        gate = asyncio.Semaphore(at_once)
        failures: Counter[str] = Counter()
        started = time.monotonic()

        async def one(cid: int, token: str | None, rooms: list[str]) -> None:
            async with gate:
                member = Member(self, cid, token, rooms)
                try:
                    await self._open(member, timeout, rcvbuf)
                except Exception as exc:
                    failures[":".join(reason(exc))] += 1
                    return
                if pause:  # a client that never reads again
                    member.pause_reading()

        await asyncio.gather(*(one(cid, token, rooms) for cid, token, rooms in clients))
        return {"ok": len(clients) - sum(failures.values()), "failures": dict(failures), "start": started,
                "end": time.monotonic()}

    async def join(self, cids: list[int], room: str, at_once: int, timeout: float) -> dict[str, Any]:
        """One more room for each of ``cids`` (already connected), ``at_once`` at a time."""
        gate = asyncio.Semaphore(at_once)
        failures: Counter[str] = Counter()
        started = time.monotonic()

        async def one(member: Member) -> None:
            async with gate:
                try:
                    async with asyncio.timeout(timeout):
                        await member.join([room])
                except Exception as exc:
                    failures[":".join(reason(exc))] += 1

        live = [self.members[c] for c in cids if c in self.members and self.members[c].live]
        await asyncio.gather(*(one(m) for m in live))
        return {"ok": len(live) - sum(failures.values()), "failures": dict(failures), "start": started,
                "end": time.monotonic()}

    async def say(self, cid: int | None, room: str, texts: list[str], rate: float = 0.0) -> dict[str, Any]:
        """Send ``texts`` from ``cid`` (None: any live member of ``room`` here) to ``room``, at most ``rate`` a
        second (0: at once); ``{t}`` in a text: the send time."""
        if cid is None:
            cid = next((c for c, m in self.members.items() if m.live and room in m.rooms), None)
        if cid is None or not self.members[cid].live:
            raise RuntimeError(f"no open socket to send to {room} from")
        member, step = self.members[cid], max(1, int(rate / 10)) if rate else max(1, len(texts))
        started = time.monotonic()
        for n in range(0, len(texts), step):
            if n:
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            for text in texts[n:n + step]:
                member.say(room, text.replace("{t}", f"{time.monotonic():.6f}"))
        return {"sent": len(texts), "cid": cid}

    async def collect(self, n: int, room: str, timeout: float) -> dict[str, Any]:
        """The latencies of broadcast ``n``, once every live member of ``room`` here has it (or at the deadline)."""
        expected = sum(1 for m in self.members.values() if room in m.rooms and m.live)
        deadline = time.monotonic() + timeout
        while len(self.deliveries.get(n, [])) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return {"expected": expected, "latencies": self.deliveries.pop(n, [])}

    async def storm(self, cids: list[int], timeout: float, attempt_timeout: float) -> dict[str, Any]:
        """Drop every open socket of ``cids`` at once (RST), then reconnect all of ``cids`` at once (those a
        previous storm left out too), each retrying with the page's backoff (app.js: 0.25 s doubling to 10 s,
        jittered; it retries a refusal too) until it is back (auth + join with ``since``) or the deadline."""
        old = [self.members[c] for c in cids if c in self.members]
        dropped = 0
        for member in old:
            member.expected = False
            if member.live:
                dropped += 1
            member.abort()
        await asyncio.sleep(0.05)  # the aborted transports' connection_lost callbacks run first
        failures: Counter[str] = Counter()
        started = time.monotonic()
        deadline = started + timeout
        finished: list[float] = []

        async def back(member: Member) -> None:
            for attempt in range(1000):
                fresh = member.again()
                try:
                    await self._open(fresh, max(0.1, min(attempt_timeout, deadline - time.monotonic())))
                except Exception as exc:
                    failures[":".join(reason(exc))] += 1
                    pause = min(10.0, 0.25 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.0)
                    if time.monotonic() + pause >= deadline:
                        return
                    await asyncio.sleep(pause)
                    continue
                finished.append(time.monotonic())
                return

        await asyncio.gather(*(back(m) for m in old))
        end = max(finished) if finished and len(finished) == len(old) else time.monotonic()  # else: not done
        return {"back": len(finished), "clients": len(old), "dropped": dropped, "failures": dict(failures),
                "start": started, "end": end}

    async def resume(self, cids: list[int], timeout: float) -> dict[str, Any]:
        """Read again on ``cids`` (slow readers): how many the server had closed, by code, and how many are open."""
        members = [self.members[c] for c in cids if c in self.members and self.members[c].live]
        for member in members:
            member.expected = False  # counted here, not among the sockets closed unasked
            member.resume_reading()
        deadline = time.monotonic() + timeout
        quiet_since, last = time.monotonic(), (-1, -1)
        while time.monotonic() < deadline:  # until every one is closed, or 2 s with no close and no byte read
            closed = sum(m.closed for m in members)
            if closed == len(members):
                break
            if (closed, self.read_bytes) != last:
                quiet_since, last = time.monotonic(), (closed, self.read_bytes)
            elif time.monotonic() - quiet_since > 2:
                break
            await asyncio.sleep(0.1)
        codes = Counter(str(m.close_code) for m in members if m.closed)
        return {"closed": dict(codes), "open": sum(not m.closed for m in members)}

    async def close_all(self, timeout: float, cids: list[int] | None = None) -> dict[str, Any]:
        """A close frame on every open socket (of ``cids``); whatever has not closed by the deadline is aborted."""
        chosen = self.members if cids is None else {c: self.members[c] for c in cids if c in self.members}
        members = [m for m in chosen.values() if m.live]
        for member in members:
            member.expected = False
            member.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(m.closed for m in members):
            await asyncio.sleep(0.1)
        aborted = 0
        for member in members:
            if not member.closed:
                aborted += 1
                member.abort()
        for cid in list(chosen):
            del self.members[cid]
        await asyncio.sleep(0.1)
        return {"closed": len(members) - aborted, "aborted": aborted}

    async def progress(self) -> dict[str, Any]:
        return {"burst_seen": self.burst_seen}

    async def counters(self) -> dict[str, Any]:
        """Sockets the server closed unasked, by code, and error frames, since the last call."""
        closes, errors = {str(k): v for k, v in self.closes.items()}, dict(self.errors)
        self.closes.clear()
        self.errors.clear()
        return {"closes": closes, "errors": errors, "open": sum(m.live for m in self.members.values())}


async def serve(conn: Connection, agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    while True:
        op, kwargs = await loop.run_in_executor(None, conn.recv)
        if op == "quit":
            return
        cpu, wall = time.process_time(), time.monotonic()
        try:
            answer = await getattr(agent, op)(**kwargs)
        except Exception as exc:  # the controller reports it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answer["cpu"] = time.process_time() - cpu
        answer["wall"] = time.monotonic() - wall
        conn.send(answer)


def main(conn: Connection, index: int, impl: str, port: int) -> None:
    """The agent process: answers commands until ``quit`` (or its pipe closes)."""
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        asyncio.run(serve(conn, Agent(index, impl, port)))
