"""End-to-end WebSocket load: this project's chat vs python-socketio vs encode/broadcaster, all on Redis.

    python -m bench.ws_load                      # defaults: W=2 workers, C=1000 clients, R=10 rooms
    python -m bench.ws_load --clients 300 --impl ours,socketio --messages 3 --rate 0.5 --project build/realtime_chat

Each case starts the real servers (gunicorn, W workers, its own session), connects C clients (client i
joins room i % R), measures the workers' RSS before and after connecting, then every client sends
``--messages`` messages at ``--rate`` msg/s (random phase). The text carries ``sender:seq:send-time``, so
each receiver checks that every message of its room arrives exactly once (lost / dup) and measures
sender-to-receiver latency. CPU seconds are the server processes' utime+stime (from /proc) from before
connecting to the end of the drain. Every case has a deadline and its servers' process group is killed.

``ours`` is a baked project (``--project PATH``, or a fresh bake of this template) served by this
interpreter, which needs the generated project's dependencies. The clients run in this process
(asyncio + ``websockets``); the peers run in ``bench/.venv-peers``, created on first use
(``bench/project.py``; ``--peers-python``). socket.io is spoken as raw Engine.IO v4 over WebSocket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from bench.project import BROKER_URLS, PEERS_VENV, TEMPLATE, peers_python, project

REDIS_URL = BROKER_URLS["redis"]
POSTGRESQL_DSN = BROKER_URLS["postgresql"]
PEERS_PYTHON = os.environ.get("PEERS_PYTHON", str(PEERS_VENV / "bin" / "python"))
IMPLS = ("ours", "socketio", "broadcaster")
#: Diagnostic rows: frame batching off; the store on PostgreSQL instead of SQLite; every send with a
#: client_id (acknowledged and idempotent: the seq + ack path) instead of none.
DIAGNOSTICS = {"ours-nobatch": {"APP_SEND_BATCH_FRAMES": "1"}, "ours-pg": {}, "ours-ack": {}}
LABELS = {"ours": "ours (redis, SQLite store)", "ours-pg": "ours (redis, PostgreSQL store)",
          "ours-ack": "ours (redis, SQLite store, client_id + ack)",
          "ours-nobatch": "ours (redis, SQLite store, frame batching off)",
          "socketio": "python-socketio (AsyncRedisManager)", "broadcaster": "broadcaster (redis)"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def frames_of(raw: str | bytes) -> list[dict[str, Any]]:
    """Our server sends frames that queued up for a busy socket as one JSON array."""
    data = json.loads(raw)
    return data if isinstance(data, list) else [data]


# ---------------------------------------------------------------------------- servers


@dataclass
class Server:
    impl: str
    process: subprocess.Popen[bytes]
    port: int
    workers: int
    log: Path
    cwd: Path
    env: dict[str, str]

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def pids(self) -> list[int]:
        return [self.process.pid, *self.worker_pids()]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def ours_env(prefix: str, workers: int, bind: str, extra: dict[str, str]) -> dict[str, str]:
    """The baked service on Redis under ``prefix``, rate limits raised so the load is not refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTAPI_WEBSOCKETS_", "APP_"))}
    env.update({
        "FASTAPI_WEBSOCKETS_BACKEND": "redis", "FASTAPI_WEBSOCKETS_REDIS_URL": REDIS_URL,
        "FASTAPI_WEBSOCKETS_REDIS_PREFIX": prefix, "APP_ENVIRONMENT": "test",
        "APP_SECRET_KEY": secrets.token_urlsafe(48),
        "WEB_CONCURRENCY": str(workers), "BIND": bind, "GRACEFUL_TIMEOUT": "3", "ACCESS_LOG": "",
        "APP_RATE_LIMIT_PER_SECOND": "1000", "APP_RATE_LIMIT_BURST": "1000", "APP_IDLE_TIMEOUT_SECONDS": "3600",
        "APP_PRESENCE_INTERVAL_SECONDS": "5", "PYTHONUNBUFFERED": "1",
        # every client comes from 127.0.0.1, each its own user
        "APP_HANDSHAKE_RATE_PER_ADDRESS": "100000", "APP_MAX_CONNECTIONS_PER_USER": "100",
        # a database of the run's own, shared by its workers (SQLite, WAL), removed with its Redis keys
        "APP_DATABASE_URL": f"sqlite+aiosqlite:///{database(prefix)}", **extra,
    })
    return env


def postgresql_database(prefix: str, drop: bool = False) -> str:
    """A database of the run's own on the loopback PostgreSQL (created, or dropped); its SQLAlchemy URL."""
    statement = f'DROP DATABASE IF EXISTS "{prefix}" WITH (FORCE)' if drop else f'CREATE DATABASE "{prefix}"'
    subprocess.run(["psql", POSTGRESQL_DSN, "-q", "-c", statement], check=True, capture_output=True, timeout=60)
    return POSTGRESQL_DSN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{prefix}"


def database(prefix: str) -> Path:
    return Path(tempfile.gettempdir()) / f"ws_load-{prefix}.db"


def start_server(impl: str, workers: int, prefix: str, peers_python: str, project: Path) -> Server:
    """``ours`` from the baked ``project`` under this interpreter; a peer from the template's bench/peers."""
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"ws_load-{impl}-{port}.log"
    bind = f"127.0.0.1:{port}"
    if impl.startswith("ours"):
        extra = dict(DIAGNOSTICS.get(impl, {}))
        if impl == "ours-pg":
            extra["APP_DATABASE_URL"] = postgresql_database(prefix)
        env = ours_env(prefix, workers, bind, extra)
        cmd, cwd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app.main:app"], project
    else:
        env = {**os.environ, "BENCH_REDIS_URL": REDIS_URL, "BENCH_PREFIX": prefix, "PYTHONUNBUFFERED": "1"}
        cmd = [peers_python, "-m", "gunicorn", "-c", "bench/peers/gunicorn_peers.py", "-w", str(workers),
               "-b", bind, f"bench.peers.{impl}_app:app"]
        cwd = TEMPLATE
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(impl, process, port, workers, log, cwd, env)
    health = "/readyz" if impl.startswith("ours") else "/healthz"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{impl} server exited:\n{log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://{bind}{health}", timeout=2) as response:
                if response.status == 200 and len(server.worker_pids()) >= workers:
                    time.sleep(1.0)  # let every worker finish booting
                    return server
            time.sleep(0.2)
        raise TimeoutError(f"{impl} server not ready:\n{log.read_text(errors='replace')[-2000:]}")
    except BaseException:
        server.kill()
        raise


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(master: int, workers: list[int]) -> float:
    """utime+stime of the master and its live workers, plus the master's reaped children (dead workers)."""
    total = 0.0
    for pid in [master, *workers]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
            if pid == master:
                total += (int(fields[13]) + int(fields[14])) / CLK_TCK  # cutime, cstime
    return total


def cleanup_redis(prefix: str) -> None:
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


# ---------------------------------------------------------------------------- clients


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    first_send: float = 0.0
    last_receive: float = 0.0
    deliveries: int = 0


class Client:
    def __init__(self, impl: str, cid: int, room: str, stats: Stats) -> None:
        self.impl, self.cid, self.room, self.stats = impl, cid, room, stats
        self.ws: Any = None
        self.received: dict[tuple[int, int], int] = {}
        self.reader: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = False

    async def connect(self, port: int, token: str | None) -> None:
        if self.impl == "socketio":
            url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        else:
            url = f"ws://127.0.0.1:{port}/ws"
        self.ws = await websockets.connect(url, compression=None, open_timeout=30, max_queue=None,
                                           ping_interval=None)
        if token is not None:  # ours: the first frame authenticates (never a token in the URL)
            await self.ws.send(json.dumps({"type": "auth", "token": token}))
        if self.impl == "socketio":
            assert (await self.ws.recv()).startswith("0")  # Engine.IO open
            await self.ws.send("40")
            while not (await self.ws.recv()).startswith("40"):
                pass
            await self.ws.send("420" + json.dumps(["join", {"room": self.room}]))
            while True:
                raw = await self.ws.recv()
                if raw.startswith("430"):
                    break
                if raw == "2":
                    await self.ws.send("3")
        else:
            await self.ws.send(json.dumps({"type": "join", "room": self.room}))
            joined = False
            while not joined:
                joined = any(f.get("type") == "joined" and f.get("room") == self.room
                             for f in frames_of(await self.ws.recv()))
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        stats, received, impl = self.stats, self.received, self.impl
        with contextlib.suppress(websockets.ConnectionClosed, asyncio.CancelledError):
            async for raw in self.ws:
                if impl == "socketio":
                    if raw == "2":
                        await self.ws.send("3")
                        continue
                    if not raw.startswith("42"):
                        continue
                    event, frame = json.loads(raw[2:])
                    frames = [frame] if event == "message" else []
                else:
                    frames = [f for f in frames_of(raw) if f.get("type") == "message"]
                now = time.monotonic()
                for frame in frames:
                    sender, seq, sent = frame["text"].split(":")
                    key = (int(sender), int(seq))
                    count = received.get(key, 0)
                    received[key] = count + 1
                    if count == 0:
                        stats.deliveries += 1
                        stats.latencies.append(now - float(sent))
                        stats.last_receive = now

    async def send(self, seq: int) -> None:
        """Send message ``seq``; a connection the server closed stops sending (its members count it lost)."""
        if self.dropped:
            return
        text = f"{self.cid}:{seq}:{time.monotonic():.6f}"
        try:
            if self.impl == "socketio":
                await self.ws.send("42" + json.dumps(["chat", {"room": self.room, "text": text}]))
            elif self.impl == "ours-ack":
                await self.ws.send(json.dumps({"type": "message", "room": self.room, "text": text,
                                               "client_id": f"{self.cid}-{seq}"}))
            else:
                await self.ws.send(json.dumps({"type": "message", "room": self.room, "text": text}))
        except websockets.ConnectionClosed:
            self.dropped = True
            return
        self.sent = seq + 1

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)


# ---------------------------------------------------------------------------- one case


@dataclass
class Result:
    impl: str
    clients: int
    workers: int
    rooms: int
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    dup: int = 0
    rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rss_worker_mib: float = 0.0
    rss_idle_conn_kib: float = 0.0
    cpu_s: float = 0.0
    status: str = "ok"
    run: int = 1


#: Accounts made directly in the service's store (one password hash for all, no argon2 per client):
#: the benchmark measures the WebSocket path, not 1,000 sign-ups (tokens are real, sessions stored).
SEED_ACCOUNTS = r"""
import asyncio, sys
from app.accounts.store import AccountStore
from app.accounts.tokens import issue_token
from app.db.engine import make_engine
from app.settings import get_settings

async def main(names):
    settings = get_settings()
    engine = make_engine(settings.database_url.get_secret_value())
    store = AccountStore(engine)
    for name in names:
        await store.create_user(name, None)
        print(issue_token(settings, name, await store.create_session(name, settings.token_ttl_seconds)))
    await engine.dispose()

asyncio.run(main(sys.stdin.read().split()))
"""


def seed_accounts(server: Server, names: list[str]) -> list[str]:
    """A token per name, for accounts and sessions written into the running service's own database."""
    done = subprocess.run([sys.executable, "-c", SEED_ACCOUNTS], input="\n".join(names), capture_output=True,
                          text=True, cwd=server.cwd, env=server.env, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"seeding accounts failed: {done.stderr[-2000:]}")
    return done.stdout.split()


async def drive(server: Server, result: Result, clients: int, rooms: int, messages: int, rate: float,
                drain: float) -> None:
    stats = Stats()
    run_id = uuid.uuid4().hex[:6]
    room_names = [f"r{run_id}-{i}" for i in range(rooms)]
    members = [Client(server.impl, i, room_names[i % rooms], stats) for i in range(clients)]
    first_workers = server.worker_pids()
    rss_before = sum(rss_kib(pid) for pid in first_workers)
    cpu_before = cpu_seconds(server.process.pid, first_workers)
    gate = asyncio.Semaphore(50)
    tokens: list[str | None] = [None] * clients
    if server.impl.startswith("ours"):
        tokens[:] = await asyncio.to_thread(seed_accounts, server, [f"u{run_id}-{c.cid}" for c in members])

    async def connect(client: Client) -> None:
        async with gate:
            await client.connect(server.port, tokens[client.cid])

    try:
        await asyncio.gather(*(connect(c) for c in members))
        await asyncio.sleep(2.0)  # presence and join traffic settles before the idle RSS reading
        workers = server.worker_pids()
        rss_after = sum(rss_kib(pid) for pid in workers)
        result.rss_idle_conn_kib = (rss_after - rss_before) / clients

        start = time.monotonic() + 0.5
        stats.first_send = start

        async def sender(client: Client) -> None:
            offset = random.random() / rate
            for seq in range(messages):
                await asyncio.sleep(max(0.0, start + offset + seq / rate - time.monotonic()))
                await client.send(seq)

        await asyncio.gather(*(sender(c) for c in members))
        per_room = {room: sum(1 for c in members if c.room == room) for room in room_names}
        result.expected = sum(per_room[c.room] * c.sent for c in members)
        end = time.monotonic() + drain
        last, last_progress = -1, time.monotonic()
        while stats.deliveries < result.expected and time.monotonic() < end:
            await asyncio.sleep(0.2)
            if stats.deliveries != last:
                last, last_progress = stats.deliveries, time.monotonic()
            elif time.monotonic() - last_progress > 10:
                break
        await asyncio.sleep(0.5)  # late duplicates
        now_workers = server.worker_pids()
        result.cpu_s = cpu_seconds(server.process.pid, now_workers) - cpu_before
        result.rss_worker_mib = statistics.mean(rss_kib(pid) for pid in now_workers) / 1024
        if stats.deliveries < result.expected:
            result.status = "timeout"
        dropped = sum(1 for c in members if c.dropped or (c.reader is not None and c.reader.done()))
        if dropped:
            result.status += f", {dropped} connection(s) closed by the server"
        if set(now_workers) != set(first_workers):
            result.status += f", {len(set(first_workers) - set(now_workers))} worker(s) restarted"
    finally:
        await asyncio.gather(*(c.close() for c in members), return_exceptions=True)

    sent_by_room: dict[str, list[tuple[int, int]]] = {room: [] for room in room_names}
    for c in members:
        sent_by_room[c.room].extend((c.cid, seq) for seq in range(c.sent))
    for c in members:
        for key in sent_by_room[c.room]:
            count = c.received.get(key, 0)
            result.lost += count == 0
            result.dup += max(0, count - 1)
    result.delivered = stats.deliveries
    span = (stats.last_receive or time.monotonic()) - stats.first_send
    result.rate = stats.deliveries / span if span > 0 else 0.0
    if stats.latencies:
        ordered = sorted(stats.latencies)
        result.p50_ms = ordered[len(ordered) // 2] * 1000
        result.p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def run_case(impl: str, project: Path, clients: int = 1000, workers: int = 2, rooms: int = 10,
                   messages: int = 3, rate: float = 0.5, drain: float = 60, deadline: float = 300,
                   peers_python: str = PEERS_PYTHON) -> Result:
    """One implementation, one bounded run; its servers are killed whatever happens."""
    result = Result(impl, clients, workers, rooms)
    prefix = f"wsload{uuid.uuid4().hex[:8]}"
    server = await asyncio.to_thread(start_server, impl, workers, prefix, peers_python, project)
    try:
        await asyncio.wait_for(drive(server, result, clients, rooms, messages, rate, drain), deadline)
    except TimeoutError:
        result.status = "deadline"
    except Exception as exc:  # reported in the table
        result.status = f"error: {type(exc).__name__}: {exc}"[:120]
    finally:
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(cleanup_redis, prefix)
        for path in Path(tempfile.gettempdir()).glob(f"{database(prefix).name}*"):  # with -wal, -shm
            path.unlink(missing_ok=True)
        if impl == "ours-pg":
            await asyncio.to_thread(postgresql_database, prefix, True)
    return result


# ---------------------------------------------------------------------------- report


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2g}x" if a and b else "—"


def table(results: list[Result]) -> str:
    runs = max((r.run for r in results), default=1)
    lines = ["| run | implementation | clients | workers | delivered msgs/s | p50 ms | p99 ms | lost | dup | "
             "RSS/worker MiB | RSS/idle conn KiB | CPU s | server CPU µs/delivery | status | msgs/s ÷ socketio | "
             "p99 ÷ socketio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = next((b for b in results if b.impl == "socketio" and b.run == r.run), None)
        rate_ratio = ratio(r.rate, base.rate) if base else "—"
        p99_ratio = ratio(r.p99_ms, base.p99_ms) if base else "—"
        per_delivery = f"{r.cpu_s / r.delivered * 1e6:.0f}" if r.delivered else "—"
        lines.append(f"| {r.run if runs > 1 else ''} | {LABELS.get(r.impl, r.impl)} | {r.clients} | {r.workers} | "
                     f"{r.rate:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.lost} | {r.dup} | {r.rss_worker_mib:.1f} | "
                     f"{r.rss_idle_conn_kib:.1f} | {r.cpu_s:.1f} | {per_delivery} | {r.status} | {rate_ratio} | "
                     f"{p99_ratio} |")
    return "\n".join(lines)


def verdict(results: list[Result]) -> str:
    """The target on the median of the per-run ratios (a noisy machine: one run decides nothing)."""
    pairs = [(ours, base) for ours in results if ours.impl == "ours"
             for base in results if base.impl == "socketio" and base.run == ours.run and base.rate and base.p99_ms]
    if not pairs:
        return "Target not evaluated (ours and python-socketio both needed)."
    rate = statistics.median(ours.rate / base.rate for ours, base in pairs)
    p99 = statistics.median(ours.p99_ms / base.p99_ms for ours, base in pairs)
    clean = all(ours.lost == 0 and ours.dup == 0 for ours, _ in pairs)
    met = rate >= 2 and p99 <= 0.5 and clean
    over = f" (median of {len(pairs)} runs)" if len(pairs) > 1 else ""
    return (f"Target (≥2x python-socketio's msgs/s at ≤½ its p99, nothing lost): **{'met' if met else 'not met'}** — "
            f"throughput {rate:.2f}x, p99 {p99:.2f}x{over}.")


def plot(results: list[Result], path: Path) -> Path | None:
    """Delivered msgs/s and p99 per implementation, one bar per run (lossy runs hatched)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    impls = list(dict.fromkeys(r.impl for r in results))
    runs = sorted({r.run for r in results})
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(runs)
    for axis, metric, title in ((axes[0], "rate", "delivered msgs/s (higher is better)"),
                                (axes[1], "p99_ms", "p99 latency, ms (lower is better)")):
        for n, run in enumerate(runs):
            for x, impl in enumerate(impls):
                row = next((r for r in results if r.impl == impl and r.run == run), None)
                if row is not None:
                    axis.bar(x + (n - (len(runs) - 1) / 2) * width, getattr(row, metric), width, color=f"C{x}",
                             hatch="//" if row.lost or row.dup else None, edgecolor="black", linewidth=0.5)
        axis.set_xticks(range(len(impls)), [LABELS.get(i, i).replace(" (", "\n(") for i in impls], fontsize=8)
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{results[0].clients:,} clients, {results[0].rooms} rooms, {results[0].workers} workers, Redis; "
                 f"{len(runs)} run(s) side by side; hatched: lost messages")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", default=",".join(IMPLS))
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--messages", type=int, default=3, help="messages per client")
    parser.add_argument("--rate", type=float, default=0.5, help="msg/s per client")
    parser.add_argument("--drain", type=float, default=60, help="max seconds to wait for deliveries")
    parser.add_argument("--deadline", type=float, default=300, help="max seconds per case")
    parser.add_argument("--project", type=Path, help="a baked copy of the template (default: bake one into a temp dir)")
    parser.add_argument("--peers-python", default=PEERS_PYTHON)
    parser.add_argument("--no-setup", action="store_true", help="never create the peers' virtualenv")
    parser.add_argument("--out", default=str(TEMPLATE / "docs" / "benchmarks" / "ws_load.md"),
                        help="the report (markdown, and its plot beside it); '' writes none")
    parser.add_argument("--note", default="")
    parser.add_argument("--repeat", type=int, default=1, help="run every implementation N times, interleaved")
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    impls = args.impl.split(",")
    if any(not impl.startswith("ours") for impl in impls) and not Path(args.peers_python).exists():
        peers_python(Path(args.peers_python).parent.parent, create=not args.no_setup)
    results = []
    with project(args.project) as baked:
        for run in range(1, args.repeat + 1):
            for impl in impls:
                result = asyncio.run(run_case(impl, baked, args.clients, args.workers, args.rooms, args.messages,
                                              args.rate, args.drain, args.deadline, args.peers_python))
                result.run = run
                print(json.dumps(result.__dict__), flush=True)
                results.append(result)
    body = table(results)
    print(body)
    print(verdict(results))
    if args.out:
        doc = [
            "# End-to-end WebSocket load benchmark", "",
            f"Run {started} on {os.cpu_count()} cores, Redis and every socket on loopback: `python -m bench.ws_load "
            f"--clients {args.clients} --workers {args.workers} --rooms {args.rooms} --messages {args.messages} "
            f"--rate {args.rate}" + (f" --repeat {args.repeat}" if args.repeat > 1 else "") + "`.", "",
            f"{args.clients} WebSocket clients over {args.workers} gunicorn workers, client *i* in room *i* mod "
            f"{args.rooms}; each client sends {args.messages} messages at {args.rate} msg/s (random phase) and every "
            "member of the room (the sender too) must get each exactly once. `delivered msgs/s`: unique deliveries "
            "from the first send to the last delivery. Latency: sender's send time (in the text) to the "
            "receiver's read, both in the one client process. `RSS/idle conn`: growth of the workers' RSS from "
            "before connecting to after every client joined, per client. `CPU s`: utime+stime of the gunicorn "
            "master and workers from before connecting to the end of the drain; per delivery, the servers' cost "
            "of one message reaching one client. The clients (asyncio, "
            "`websockets`) share the cores with the servers, so absolute numbers are noisy; ratios from the "
            "same run are the signal.", "",
            "Implementations: `ours` = this project's chat (`FASTAPI_WEBSOCKETS_BACKEND=redis`, rate limits "
            "raised); `python-socketio` = `bench/peers/socketio_app.py` (ASGI, AsyncRedisManager, uvicorn "
            "workers under gunicorn, WebSocket transport, spoken to as raw Engine.IO v4); `broadcaster` = "
            "`bench/peers/broadcaster_app.py` (FastAPI + encode/broadcaster on Redis pub/sub).", "",
            body, "", verdict(results), "",
        ]
        if args.note:
            doc += [args.note, ""]
        picture = plot(results, Path(args.out).with_suffix(".png"))
        if picture is not None:
            doc += [f"![delivered msgs/s and p99 per implementation and run]({picture.name})", ""]
        Path(args.out).write_text("\n".join(doc))


if __name__ == "__main__":
    main()
