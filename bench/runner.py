"""One benchmark process: drives one channel layer implementation, reports JSON lines on stdout.

Runs under *any* virtualenv (ours, or the peers' one made by ``bench/setup_peers.sh``), so it imports
only the standard library at module level and the implementation's own packages on demand.

    python bench/runner.py --impl seed:redis --role group-recv --prefix bx1 --group g --members 250 ...
    python bench/runner.py --impl ours:redis --project /tmp/bake/realtime_chat --role p2p-recv ...

``ours:*`` imports ``app.channels`` from the baked project that ``--project`` names.

Roles: ``p2p-recv``/``p2p-send`` (a pair in two processes, flow-controlled through a Unix socket so at
most ``--window`` messages are in flight), ``group-recv``/``group-send``, ``p2p-local``/``group-local``
(both sides in this process, for process-local layers) and ``cleanup``. Every role prints
``{"event": "ready", ...}`` when set up (receivers) and one ``{"event": "result", ...}`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from typing import Any

ACK_EVERY = 5
REDIS_URL = os.environ.get("FASTAPI_WEBSOCKETS_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("FASTAPI_WEBSOCKETS_POSTGRESQL_DSN", "postgresql://postgres@127.0.0.1:5432/test")
NATS_URL = os.environ.get("FASTAPI_WEBSOCKETS_NATS_SERVERS", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("FASTAPI_WEBSOCKETS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
GROUP = "bench-room"
SEED_PG_POOL = 5
#: The schema the Django ``channels_postgres`` peer migrates into, apart from everything else.
CHANNELS_POSTGRES_SCHEMA = "bench_channels_postgres"
SEED_CLASSES = {
    "inmemory": "InMemoryChannelLayer",
    "redis": "RedisChannelLayer",
    "postgresql": "PostgreSQLChannelLayer",
    "nats": "NATSChannelLayer",
    "rabbitmq": "RabbitMQChannelLayer",
}


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def now() -> float:
    """CLOCK_MONOTONIC: one clock for every process on this machine, so latencies cross processes."""
    return time.monotonic()


# ---------------------------------------------------------------------------- implementations


class Impl:
    """The seed's API (send/receive/new_channel/group_add/group_send/close) plus setup and cleanup."""

    distributed = True

    def __init__(self, backend: str, prefix: str, project: str = "") -> None:
        self.backend = backend
        self.prefix = prefix
        #: The baked project whose ``app`` package ``Ours`` imports.
        self.project = project
        self.layer: Any = None
        #: Set in receiving roles: the channels (and their broker queues) are this process's.
        self.receiver = False

    async def open(self) -> None:
        raise NotImplementedError

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self.layer.send(channel, message)

    async def receive(self, channel: str) -> dict[str, Any]:
        return dict(await self.layer.receive(channel))

    async def new_channel(self) -> str:
        return str(await self.layer.new_channel())

    async def group_add(self, group: str, channel: str) -> None:
        await self.layer.group_add(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self.layer.group_send(group, message)

    async def close(self) -> None:
        if self.layer is not None:
            await self.layer.close()

    async def prepare(self) -> None:
        """One-time broker setup before a case's processes start (so they do not race to create it)."""

    async def cleanup(self) -> None:
        """Remove everything this run's prefix left on the broker (a separate process, after the case)."""


class Ours(Impl):
    async def open(self) -> None:
        if not self.project:
            raise SystemExit("ours:* needs --project (a baked copy of the template)")
        sys.path.insert(0, self.project)
        from app.channels.config import build_layer

        self.distributed = self.backend != "inmemory"
        config: dict[str, Any] = {"prefix": self.prefix}
        if self.backend == "redis":
            config["url"] = REDIS_URL
        elif self.backend == "postgresql":
            config["dsn"] = PG_DSN
        elif self.backend == "nats":
            config["servers"] = NATS_URL.split(",")
        elif self.backend == "rabbitmq":
            config["url"] = AMQP_URL
        self.layer = build_layer(self.backend, config)

    async def cleanup(self) -> None:
        await self.open()
        await self.layer.flush()
        await self.layer.close()
        if self.backend == "rabbitmq":
            # flush() in a fresh process only removes what that process declared: the prefix's
            # group exchange (declared by the case's processes) would stay behind.
            await amqp_delete(exchanges=[f"{self.prefix}.groups"], queue_prefix=None)


class Seed(Impl):
    """``fastapi-websockets==0.1.0``: it has no flush, so cleanup removes its prefix's broker state directly."""

    def _config(self) -> dict[str, Any]:
        p = self.prefix
        configs: dict[str, dict[str, Any]] = {
            "inmemory": {},
            "redis": {"url": REDIS_URL, "prefix": p},
            "postgresql": {"dsn": PG_DSN, "schema": p},
            "nats": {
                "servers": NATS_URL.split(","), "prefix": p, "group_bucket": f"{p}_groups", "stream_name": p.upper(),
            },
            "rabbitmq": {"url": AMQP_URL, "exchange_name": p, "queue_prefix": p, "queue_expiry": 60_000},
        }
        return configs[self.backend]

    async def open(self) -> None:
        from fastapi_websockets import get_channel_layer

        self.distributed = self.backend != "inmemory"
        path = f"fastapi_websockets.backends.{self.backend}.{SEED_CLASSES[self.backend]}"
        self.layer = get_channel_layer({"default": {"BACKEND": path, "CONFIG": self._config()}})
        if self.backend == "postgresql":
            import asyncpg

            # The shared server allows 100 clients; the seed's default pool of 10 per process would exhaust it.
            self.layer._pool = await asyncpg.create_pool(PG_DSN, min_size=1, max_size=SEED_PG_POOL)

    async def prepare(self) -> None:
        if self.backend == "postgresql":
            await self.open()
            await self.layer._get_pool()  # creates the schema once, before receivers race to
            await self.layer.close()

    async def close(self) -> None:
        owned = self.backend == "rabbitmq" and self.receiver
        queues = list(getattr(self.layer, "_declared_queues", {})) if owned else []
        await self.layer.close()
        if queues:
            await amqp_delete(exchanges=[], queue_prefix=None, queues=queues)

    async def cleanup(self) -> None:
        p = self.prefix
        if self.backend == "redis":
            await redis_delete_prefix(p)
        elif self.backend == "postgresql":
            import asyncpg

            conn = await asyncpg.connect(PG_DSN)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{p}" CASCADE')
            await conn.close()
        elif self.backend == "nats":
            import nats

            nc = await nats.connect(servers=NATS_URL.split(","))
            js = nc.jetstream()
            with contextlib.suppress(Exception):
                await js.delete_stream(p.upper())
            with contextlib.suppress(Exception):
                await js.delete_key_value(f"{p}_groups")
            await nc.close()
        elif self.backend == "rabbitmq":
            await amqp_delete(exchanges=[p, f"{p}.group.{GROUP}"], queue_prefix=p)


class ChannelsRedis(Impl):
    """``channels_redis`` 4.3: ``core`` (lists + Lua) or ``pubsub``."""

    async def open(self) -> None:
        configure_django()
        if self.backend == "pubsub":
            from channels_redis.pubsub import RedisPubSubChannelLayer

            self.layer = RedisPubSubChannelLayer(hosts=[REDIS_URL], prefix=self.prefix)
        else:
            from channels_redis.core import RedisChannelLayer

            self.layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=self.prefix)

    async def close(self) -> None:
        close = getattr(self.layer, "close_pools", None) or getattr(self.layer, "close", None)
        if close is not None:
            await close()

    async def cleanup(self) -> None:
        await redis_delete_prefix(self.prefix)


class ChannelsPostgres(Impl):
    async def open(self) -> None:
        configure_django()
        from channels_postgres.core import PostgresChannelLayer

        self.layer = PostgresChannelLayer(prefix=self.prefix, **django_database())

    async def prepare(self) -> None:
        """Its tables come from Django migrations: apply them once, in a schema of their own."""
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {CHANNELS_POSTGRES_SCHEMA}")
        await conn.close()
        configure_django()
        from asgiref.sync import sync_to_async
        from django.core.management import call_command

        await sync_to_async(call_command)("migrate", "channels_postgres", verbosity=0)

    async def close(self) -> None:
        """channels_postgres has no close(): its listener task ends with the process."""

    async def cleanup(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        with contextlib.suppress(Exception):
            await conn.execute(f"SET search_path TO {CHANNELS_POSTGRES_SCHEMA}")
            await conn.execute("DELETE FROM channels_postgres_message WHERE channel LIKE $1", f"{self.prefix}%")
            await conn.execute("DELETE FROM channels_postgres_groupchannel WHERE group_key LIKE $1", f"{self.prefix}%")
        await conn.close()


class ChannelsRabbitmq(Impl):
    async def open(self) -> None:
        configure_django()
        from channels_rabbitmq.core import RabbitmqChannelLayer

        self.layer = RabbitmqChannelLayer(host=AMQP_URL, groups_exchange=self.prefix)

    async def new_channel(self) -> str:
        # Its queue exists only once connected; a consumer is connected before anyone sends to it.
        await self.layer.carehare_connection
        return str(await self.layer.new_channel())

    async def cleanup(self) -> None:
        await amqp_delete(exchanges=[self.prefix], queue_prefix=None)


def configure_django() -> None:
    """The minimal settings a Django Channels layer needs outside a Django project."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["channels_postgres"] if _has_module("channels_postgres") else [],
            DATABASES={"default": django_database()},
            USE_TZ=True,
        )
        import django

        django.setup()


def django_database() -> dict[str, Any]:
    from urllib.parse import urlsplit

    url = urlsplit(PG_DSN)
    return {
        "ENGINE": "django.db.backends.postgresql", "TIME_ZONE": None, "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False,
        "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False, "TEST": {},
        "NAME": url.path.lstrip("/") or "postgres",
        "USER": url.username or "postgres",
        "PASSWORD": url.password or "",
        "HOST": url.hostname or "127.0.0.1",
        "PORT": str(url.port or 5432),
        "OPTIONS": {"options": f"-c search_path={CHANNELS_POSTGRES_SCHEMA}"},
    }


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


async def redis_delete_prefix(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"*{prefix}*", count=1000)]
    for start in range(0, len(keys), 500):
        await client.delete(*keys[start:start + 500])
    await client.aclose()


async def amqp_delete(exchanges: list[str], queue_prefix: str | None, queues: list[str] | None = None) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    names = list(queues or [])
    for name in names:
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            await channel.queue_delete(name)
    for name in exchanges:
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            await channel.exchange_delete(name)
    await connection.close()


# ---------------------------------------------------------------------------- raw clients


class Raw(Impl):
    """A broker client used directly: the ceiling a layer on that broker could reach."""

    batch = False

    async def send_batch(self, channel: str, messages: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def group_add(self, group: str, channel: str) -> None:
        raise NotImplementedError("raw clients have no groups")

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        raise NotImplementedError("raw clients have no groups")


def pack(message: dict[str, Any]) -> bytes:
    import msgpack

    return msgpack.packb(message, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> dict[str, Any]:
    import msgpack

    return msgpack.unpackb(data, raw=False)  # type: ignore[no-any-return]


class RawRedis(Raw):
    """``redis-awaited``: one RPUSH per message, BLPOP per message. ``redis-pipelined``: batched both ways."""

    async def open(self) -> None:
        import redis.asyncio as aioredis

        self.batch = self.backend.endswith("pipelined")
        self.client = aioredis.from_url(REDIS_URL, max_connections=64)
        self.buffer: list[bytes] = []

    async def new_channel(self) -> str:
        return f"{self.prefix}:{uuid.uuid4().hex}"

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self.client.rpush(channel, pack(message))

    async def send_batch(self, channel: str, messages: list[dict[str, Any]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.rpush(channel, pack(message))
            await pipe.execute()

    async def receive(self, channel: str) -> dict[str, Any]:
        if not self.buffer:
            popped: Any = await self.client.blpop([channel], timeout=0)
            self.buffer.append(popped[1])
            if self.batch:
                more: Any = await self.client.lpop(channel, 99)
                self.buffer.extend(more or [])
        return unpack(self.buffer.pop(0))

    async def close(self) -> None:
        await self.client.aclose()

    async def cleanup(self) -> None:
        await redis_delete_prefix(self.prefix)


class RawNats(Raw):
    """``nats-core``: plain publish/subscribe. ``nats-jetstream``: acked publish into a stream, pull consumer."""

    async def open(self) -> None:
        import nats

        self.nc = await nats.connect(servers=NATS_URL.split(","))
        self.js = self.nc.jetstream()
        self.jet = self.backend.endswith("jetstream")
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.sub: Any = None

    async def new_channel(self) -> str:
        subject = f"{self.prefix}.{uuid.uuid4().hex}"
        if self.jet:
            await self.js.add_stream(name=self.prefix.upper(), subjects=[f"{self.prefix}.>"])
            self.sub = await self.js.pull_subscribe(subject, durable=None)
        else:
            async def handler(msg: Any) -> None:
                self.queue.put_nowait(msg.data)

            self.sub = await self.nc.subscribe(subject, cb=handler)
            await self.nc.flush()
        return subject

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if self.jet:
            await self.js.publish(channel, pack(message))
        else:
            await self.nc.publish(channel, pack(message))

    async def receive(self, channel: str) -> dict[str, Any]:
        if self.jet and self.queue.empty():
            import nats.errors

            while True:
                try:
                    msgs = await self.sub.fetch(100, timeout=1)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for msg in msgs:
                    self.queue.put_nowait(msg.data)
                    await msg.ack()
                break
        return unpack(await self.queue.get())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()

    async def cleanup(self) -> None:
        await self.open()
        with contextlib.suppress(Exception):
            await self.js.delete_stream(self.prefix.upper())
        await self.close()


class RawRabbitmq(Raw):
    """Publisher-confirmed publish to the default exchange; one auto-deleted queue, consumed with auto-ack."""

    async def open(self) -> None:
        import aio_pika

        self.connection = await aio_pika.connect(AMQP_URL)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.channel.set_qos(prefetch_count=200)
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def new_channel(self) -> str:
        name = f"{self.prefix}.{uuid.uuid4().hex}"
        queue = await self.channel.declare_queue(name, auto_delete=True, arguments={"x-expires": 60_000})

        async def on_message(message: Any) -> None:
            self.queue.put_nowait(message.body)

        await queue.consume(on_message, no_ack=True)
        return name

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        import aio_pika

        await self.channel.default_exchange.publish(aio_pika.Message(pack(message)), routing_key=channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        return unpack(await self.queue.get())

    async def close(self) -> None:
        await self.connection.close()


class RawPostgres(Raw):
    """``postgresql-insert``: INSERT, receiver polls DELETE ... RETURNING. ``postgresql-notify``: pg_notify/LISTEN."""

    async def open(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(PG_DSN, min_size=1, max_size=16)
        self.notify = self.backend.endswith("notify")
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.listener: Any = None

    @property
    def table(self) -> str:
        return f'"{self.prefix}"'

    async def new_channel(self) -> str:
        name = f"{self.prefix}_{uuid.uuid4().hex[:12]}"
        if self.notify:
            self.listener = await self.pool.acquire()

            def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                self.queue.put_nowait(payload.encode("latin-1"))

            await self.listener.add_listener(name, on_notify)
        else:
            await self.pool.execute(
                f"CREATE UNLOGGED TABLE IF NOT EXISTS {self.table} (id bigserial primary key, body bytea)"
            )
        return name

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if self.notify:
            await self.pool.execute("SELECT pg_notify($1, $2)", channel, json.dumps(message))
        else:
            await self.pool.execute(f"INSERT INTO {self.table} (body) VALUES ($1)", pack(message))

    async def receive(self, channel: str) -> dict[str, Any]:
        if self.notify:
            return json.loads(await self.queue.get())  # type: ignore[no-any-return]
        while self.queue.empty():
            rows = await self.pool.fetch(
                f"DELETE FROM {self.table} WHERE id IN (SELECT id FROM {self.table} ORDER BY id LIMIT 100"
                " FOR UPDATE SKIP LOCKED) RETURNING id, body"
            )
            for row in sorted(rows, key=lambda r: r["id"]):
                self.queue.put_nowait(row["body"])
            if not rows:
                await asyncio.sleep(0.0005)
        return unpack(await self.queue.get())

    async def close(self) -> None:
        if self.listener is not None:
            await self.pool.release(self.listener)
        await self.pool.close()

    async def cleanup(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        await conn.close()


def make_impl(spec: str, prefix: str, project: str = "") -> Impl:
    kind, _, backend = spec.partition(":")
    classes: dict[str, type[Impl]] = {
        "ours": Ours, "seed": Seed, "channels_redis": ChannelsRedis, "channels_postgres": ChannelsPostgres,
        "channels_rabbitmq": ChannelsRabbitmq,
    }
    if kind == "raw":
        broker = backend.split("-")[0]
        raw: dict[str, type[Impl]] = {
            "redis": RawRedis, "nats": RawNats, "rabbitmq": RawRabbitmq, "postgresql": RawPostgres,
        }
        return raw[broker](backend, prefix)
    return classes[kind](backend, prefix, project)


# ---------------------------------------------------------------------------- roles


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Receiver:
    """Counts deliveries per (member, n) so lost and duplicated messages show."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()  # key: member << 32 | n
        self.latencies: list[float] = []
        self.first: float | None = None
        self.last: float | None = None
        self.errors: list[str] = []

    def got(self, member: int, message: dict[str, Any]) -> None:
        t = now()
        self.first = self.first or t
        self.last = t
        self.counts[member << 32 | message["n"]] += 1
        self.latencies.append(t - float(message["t"]))

    def report(self, expected: int) -> dict[str, Any]:
        unique = len(self.counts)
        return {
            "event": "result", "expected": expected, "unique": unique,
            "duplicates": sum(self.counts.values()) - unique, "first": self.first, "last": self.last,
            "p50": percentile(self.latencies, 0.5), "p99": percentile(self.latencies, 0.99),
            "errors": self.errors[:3],
        }


async def drain(impl: Impl, channels: list[str], per_channel: int, rx: Receiver, deadline: float,
                on_message: Any = None) -> None:
    """Receive ``per_channel`` messages on every channel until ``deadline``; then look briefly for extras."""

    async def one(member: int, channel: str, count: int) -> None:
        for _ in range(count):
            rx.got(member, await impl.receive(channel))
            if on_message is not None:  # a closure read: the extras phase below turns it off
                on_message()

    tasks = [asyncio.ensure_future(one(i, c, per_channel)) for i, c in enumerate(channels)]
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - now()))
    for task in done:
        if task.exception() is not None:
            rx.errors.append(repr(task.exception()))
    for task in pending:
        task.cancel()
    # Anything past the expected count is a duplicate: give it a moment to show up.
    on_message = None
    extras = [asyncio.ensure_future(one(i, c, 1)) for i, c in enumerate(channels)]
    await asyncio.wait(extras, timeout=0.3)
    for task in extras:
        task.cancel()
    await asyncio.gather(*tasks, *extras, return_exceptions=True)


def message(n: int, payload: str) -> dict[str, Any]:
    return {"type": "bench.message", "n": n, "t": now(), "p": payload}


async def send_window(impl: Impl, channel: str, count: int, window: int, payload: str, credit: Any,
                      wake: asyncio.Event) -> dict[str, Any]:
    """Send ``count`` messages keeping at most ``window`` unreceived.

    ``credit()`` says how many were received; whoever updates it sets ``wake``.
    """
    sent = 0
    errors: list[str] = []
    start = now()

    async def worker() -> None:
        nonlocal sent
        while sent < count and not errors:
            if sent - credit() >= window:
                wake.clear()
                await wake.wait()
                continue
            n = sent
            sent += 1
            try:
                await impl.send(channel, message(n, payload))
            except Exception as exc:
                errors.append(repr(exc))

    async def batcher() -> None:
        nonlocal sent
        while sent < count and not errors:
            room = min(window - (sent - credit()), count - sent)
            if room <= 0:
                wake.clear()
                await wake.wait()
                continue
            batch = [message(sent + i, payload) for i in range(room)]
            sent += room
            try:
                await impl.send_batch(channel, batch)  # type: ignore[attr-defined]
            except Exception as exc:
                errors.append(repr(exc))

    if isinstance(impl, Raw) and impl.batch:
        await batcher()
    else:
        await asyncio.gather(*(worker() for _ in range(window)))
    return {"event": "result", "start": start, "end": now(), "sent": sent, "errors": errors[:3]}


async def role_p2p_recv(impl: Impl, args: argparse.Namespace) -> None:
    channel = await impl.new_channel()
    writers: list[asyncio.StreamWriter] = []
    connected = asyncio.Event()

    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        connected.set()

    server = await asyncio.start_unix_server(on_connect, path=args.ack_path)
    emit(event="ready", channel=channel)
    rx = Receiver()
    await asyncio.wait_for(connected.wait(), args.deadline)
    received = 0

    def ack() -> None:
        nonlocal received
        received += 1
        if received % ACK_EVERY == 0 or received == args.count:
            writers[0].write(f"{received}\n".encode())

    await drain(impl, [channel], args.count, rx, now() + args.deadline, ack)
    emit(**rx.report(args.count))
    server.close()
    await impl.close()


async def role_p2p_send(impl: Impl, args: argparse.Namespace) -> None:
    reader, writer = await asyncio.open_unix_connection(args.ack_path)
    acked = 0
    wake = asyncio.Event()

    async def read_acks() -> None:
        nonlocal acked
        while line := await reader.readline():
            acked = int(line)
            wake.set()

    reader_task = asyncio.ensure_future(read_acks())
    sending = send_window(impl, args.channel, args.count, args.window, "x" * args.payload, lambda: acked, wake)
    try:
        emit(**await asyncio.wait_for(sending, args.deadline))
    except TimeoutError:
        emit(event="result", start=None, end=now(), sent=None, errors=["sender deadline"])
    reader_task.cancel()
    writer.close()
    await impl.close()


async def role_p2p_local(impl: Impl, args: argparse.Namespace) -> None:
    channel = await impl.new_channel()
    rx = Receiver()
    received = 0
    wake = asyncio.Event()

    def ack() -> None:
        nonlocal received
        received += 1
        wake.set()

    emit(event="ready", channel=channel)
    receiving = asyncio.ensure_future(drain(impl, [channel], args.count, rx, now() + args.deadline, ack))
    sending = send_window(impl, channel, args.count, args.window, "x" * args.payload, lambda: received, wake)
    try:
        sent = await asyncio.wait_for(sending, args.deadline)
    except TimeoutError:
        sent = {"start": None, "errors": ["sender deadline"]}
    await receiving
    report = rx.report(args.count)
    report.update(start=sent["start"], errors=sent["errors"] + report["errors"])
    emit(**report)
    await impl.close()


async def role_group_recv(impl: Impl, args: argparse.Namespace) -> None:
    channels = [await impl.new_channel() for _ in range(args.members)]
    for channel in channels:
        await impl.group_add(args.group, channel)
    emit(event="ready", members=len(channels))
    go = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    deadline = now() + float(go or args.deadline)
    rx = Receiver()
    await drain(impl, channels, args.messages, rx, deadline)
    emit(**rx.report(args.messages * len(channels)))
    await impl.close()


async def role_group_send(impl: Impl, args: argparse.Namespace) -> None:
    start = now()
    errors: list[str] = []
    for n in range(args.messages):
        try:
            await impl.group_send(args.group, message(n, "x" * args.payload))
        except Exception as exc:
            errors.append(repr(exc))
            break
    emit(event="result", start=start, end=now(), errors=errors)
    await impl.close()


async def role_group_local(impl: Impl, args: argparse.Namespace) -> None:
    """All group_sends first (timed alone: the in-process enqueue rate), then every member drains."""
    channels = [await impl.new_channel() for _ in range(args.members)]
    for channel in channels:
        await impl.group_add(args.group, channel)
    emit(event="ready", members=len(channels))
    rx = Receiver()
    errors: list[str] = []
    start = now()
    for n in range(args.messages):
        try:
            await impl.group_send(args.group, message(n, "x" * args.payload))
        except Exception as exc:
            errors.append(repr(exc))
            break
    sent = now()
    await drain(impl, channels, args.messages, rx, now() + args.deadline)
    report = rx.report(args.messages * len(channels))
    report.update(start=start, sent=sent, errors=errors + report["errors"])
    emit(**report)
    await impl.close()


async def main(args: argparse.Namespace) -> None:
    impl = make_impl(args.impl, args.prefix, args.project)
    if args.role in ("prepare", "cleanup"):
        await (impl.prepare() if args.role == "prepare" else impl.cleanup())
        emit(event="result")
        return
    impl.receiver = args.role.endswith(("-recv", "-local"))
    await impl.open()
    roles = {
        "p2p-recv": role_p2p_recv, "p2p-send": role_p2p_send, "p2p-local": role_p2p_local,
        "group-recv": role_group_recv, "group-send": role_group_send, "group-local": role_group_local,
    }
    await roles[args.role](impl, args)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", required=True, help="ours:redis, seed:nats, channels_redis:core, raw:redis-awaited")
    parser.add_argument("--role", required=True)
    parser.add_argument("--prefix", required=True, help="unique per case: every name on the broker starts with it")
    parser.add_argument("--project", default="", help="the baked project (for ours:*)")
    parser.add_argument("--channel", default="")
    parser.add_argument("--group", default=GROUP)
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--payload", type=int, default=16)
    parser.add_argument("--deadline", type=float, default=30.0)
    parser.add_argument("--ack-path", default="")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
