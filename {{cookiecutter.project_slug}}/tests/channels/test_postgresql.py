"""The PostgreSQL layer beyond the conformance suite: schema safety, migrations, leases, pruning,
bounded connections, LISTEN reconnects and a PostgreSQL crash/restart on a private cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.channels import BackendNotInstalled, BrokerUnavailable, ChannelFull, ConfigurationError, LayerClosed
from app.channels.backends.postgresql.layer import PostgreSQLChannelLayer
from app.channels.config import build_layer, get_channel_layer_from_env

from ..brokers import URLS, installed_backends, require_broker
from .postgresql_cluster import PrivateCluster, private_cluster
from .test_batching import assert_concurrent_sends_share_batches

pytestmark = [
    pytest.mark.skipif("postgresql" not in installed_backends(), reason="postgresql backend not selected"),
    pytest.mark.timeout(90),
]
ROOT = Path(__file__).resolve().parents[2]
DSN = URLS["postgresql"]
SCHEMA = "fastapi_websockets"  # the layer's default schema
Factory = Callable[..., Any]


@pytest.fixture
async def admin() -> AsyncIterator[Any]:
    """A plain asyncpg connection to look at the tables from outside the layer."""
    require_broker("postgresql")
    import asyncpg

    conn = await asyncpg.connect(DSN)
    yield conn
    await conn.close()


@pytest.fixture
async def layers(prefix: str) -> AsyncIterator[Factory]:
    """PostgreSQL layers sharing a fresh prefix; flushed and closed afterwards."""
    require_broker("postgresql")
    made: list[Any] = []

    def make(**config: Any) -> Any:
        layer = build_layer("postgresql", {"dsn": DSN, "prefix": prefix, **config})
        made.append(layer)
        return layer

    yield make
    open_layers = [layer for layer in made if not layer.closed]
    if open_layers:
        with contextlib.suppress(BrokerUnavailable, ConfigurationError):  # an unreachable server, a dropped schema
            await open_layers[0].flush()
    for layer in open_layers:
        await layer.close()


async def receive(layer: Any, channel: str, seconds: float = 10) -> dict[str, Any]:
    result: dict[str, Any] = await asyncio.wait_for(layer.receive(channel), seconds)
    return result


async def until(check: Callable[[], Any], what: str, seconds: float = 15) -> None:
    """Wait for an async condition (bounded); fail naming it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


async def drop_schema(admin: Any, schema: str) -> None:
    await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ---------------------------------------------------------------------- configuration


HOSTILE_SCHEMAS = [
    "x; drop table",
    'a"b',
    "",
    "a" * 64,
    "pg_catalog",
    "1abc",
    "sch ema",
    "public.x",
    "schéma",
    "x'--",
]


@pytest.mark.parametrize("schema", HOSTILE_SCHEMAS)
def test_hostile_schema_names_never_reach_sql(schema: str) -> None:
    with pytest.raises(ConfigurationError, match="schema name"):
        build_layer("postgresql", {"dsn": "postgresql://nobody@127.0.0.1:1/none", "schema": schema})


@pytest.mark.parametrize("schema", ["x; drop table", 'a"b', "a" * 64])
def test_hostile_schema_from_environment(monkeypatch: pytest.MonkeyPatch, schema: str) -> None:
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_BACKEND", "postgresql")
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_POSTGRESQL_SCHEMA", schema)
    with pytest.raises(ConfigurationError, match="schema name"):
        get_channel_layer_from_env()


async def test_no_hostile_schema_was_ever_created(admin: Any) -> None:
    names = await admin.fetch("SELECT nspname FROM pg_namespace WHERE nspname ~ '[;\"'' ]'")
    assert [row["nspname"] for row in names] == []


async def test_mixed_case_schema_is_quoted(layers: Factory, admin: Any) -> None:
    schema = f"Chan_Case_{secrets.token_hex(3)}"
    try:
        layer = layers(schema=schema)
        await layer.send("test.case", {"type": "m", "n": 1})
        assert (await receive(layer, "test.case"))["n"] == 1
        found = await admin.fetchval("SELECT nspname FROM pg_namespace WHERE lower(nspname) = lower($1)", schema)
        assert found == schema  # created with its exact case, so it was quoted
    finally:
        await drop_schema(admin, schema)


def test_environment_reaches_the_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "BACKEND": "postgresql",
        "POSTGRESQL_DSN": "postgresql://u:secret@db.example:5433/app",
        "POSTGRESQL_SCHEMA": "chan_env",
        "POSTGRESQL_CHANNEL_EXPIRY": "12.5",
        "POSTGRESQL_GROUP_EXPIRY": "300",
        "POSTGRESQL_POLL_INTERVAL": "0.25",
        "POSTGRESQL_PRUNE_INTERVAL": "30",
        "POSTGRESQL_ENSURE_SCHEMA": "false",
        "POSTGRESQL_CAPACITY": "7",
    }
    for key, value in env.items():
        monkeypatch.setenv(f"FASTAPI_WEBSOCKETS_{key}", value)
    layer = get_channel_layer_from_env()
    assert isinstance(layer, PostgreSQLChannelLayer)
    assert (layer.dsn, layer.schema, layer.expiry, layer.group_expiry) == (env["POSTGRESQL_DSN"], "chan_env", 12.5, 300)
    assert (layer.poll_interval, layer.prune_interval, layer.capacity) == (0.25, 30, 7)
    assert layer._auto_schema is False
    monkeypatch.setenv("FASTAPI_WEBSOCKETS_POSTGRESQL_ENSURE_SCHEMA", "perhaps")
    with pytest.raises(ConfigurationError, match="FASTAPI_WEBSOCKETS_POSTGRESQL_ENSURE_SCHEMA"):
        get_channel_layer_from_env()


@pytest.mark.parametrize(
    ("config", "message"),
    [({"pool_size": 0}, "pool_size"), ({"poll_interval": -1}, "poll_interval"), ({"dsn": ""}, "dsn"),
     ({"prune_interval": 0}, "prune_interval"), ({"pool": 3}, "unknown CONFIG key")],
)
def test_bad_values_are_configuration_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build_layer("postgresql", config)


def test_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(BackendNotInstalled, match=r"\[postgresql\]"):
        build_layer("postgresql", {})


async def test_broker_down_is_broker_unavailable(layers: Factory) -> None:
    from .postgresql_cluster import free_port

    layer = layers(dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    with pytest.raises(BrokerUnavailable, match="unavailable"):
        await layer.send("test.down", {"type": "m"})
    with pytest.raises(BrokerUnavailable):
        await layer.group_send("g", {"type": "m"})


# ---------------------------------------------------------------------- schema and migrations


async def test_concurrent_ensure_schema(layers: Factory, admin: Any, prefix: str) -> None:
    schema = f"chan_{prefix}"
    racers = [layers(schema=schema) for _ in range(6)]
    again = [layers(schema=schema) for _ in range(3)]
    try:
        versions = await asyncio.gather(*(layer.ensure_schema() for layer in racers))
        assert versions == [1] * 6
        rows = await admin.fetch(f'SELECT version FROM "{schema}".schema_version ORDER BY version')
        assert [row["version"] for row in rows] == [1]
        tables = await admin.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", schema)
        assert [row["tablename"] for row in tables] == ["inbox", "membership", "message", "schema_version"]
        # idempotent, and layers whose first operation triggers it at the same time work too
        await asyncio.gather(*(layer.send(f"test.race{n}", {"type": "m"}) for n, layer in enumerate(again)))
        assert await racers[0].ensure_schema() == 1
        assert await admin.fetchval(f'SELECT count(*) FROM "{schema}".schema_version') == 1
    finally:
        for layer in (*racers, *again):
            await layer.close()
        await drop_schema(admin, schema)


async def test_without_ensure_schema_missing_tables_are_explained(layers: Factory, prefix: str) -> None:
    layer = layers(schema=f"chan_missing_{prefix}", ensure_schema=False)
    with pytest.raises(ConfigurationError, match="ensure_schema"):
        await layer.send("test.nowhere", {"type": "m"})


# ---------------------------------------------------------------------- delivery


async def test_two_readers_never_get_the_same_message(layers: Factory) -> None:
    sender, first, second = layers(capacity=1000), layers(capacity=1000), layers(capacity=1000)
    total = 300  # capacity above total: under load the readers may lag; this test is about exclusivity
    got: list[int] = []

    async def read(layer: Any) -> None:
        while len(got) < total:
            try:
                got.append((await asyncio.wait_for(layer.receive("work.queue"), 0.5))["n"])
            except TimeoutError:
                continue

    readers = [asyncio.create_task(read(layer)) for layer in (first, second)]
    for n in range(total):
        await sender.send("work.queue", {"type": "m", "n": n})
    await asyncio.wait_for(asyncio.gather(*readers), 30)
    assert sorted(got) == list(range(total))


async def test_inbox_capacity_of_another_process(layers: Factory) -> None:
    sender = layers(inbox_capacity=5)
    channel = f"specific.{secrets.token_hex(8)}!abc"  # a process that never drains its inbox
    for n in range(5):
        await sender.send(channel, {"type": "m", "n": n})
    with pytest.raises(ChannelFull, match="inbox"):
        await sender.send(channel, {"type": "m", "n": 5})


async def test_concurrent_sends_share_one_statement_and_fail_alone(layers: Factory) -> None:
    """Sends made while a statement is in flight go together in the next; a full target fails only its sends."""
    sender, receiver, small = layers(capacity=20), layers(), layers(inbox_capacity=5)
    await assert_concurrent_sends_share_batches(sender, receiver, sender._sends, "test.pgfull")
    undrained = f"specific.{secrets.token_hex(8)}!abc"
    results = await asyncio.gather(*(small.send(undrained, {"type": "m", "n": n}) for n in range(8)),
                                   return_exceptions=True)
    assert results[:5] == [None] * 5 and all(isinstance(result, ChannelFull) for result in results[5:])


async def test_dead_process_gets_one_row_per_group_send_then_nothing(
    layers: Factory, admin: Any, prefix: str
) -> None:
    group_expiry = 1.5  # process leases last 3 refresh intervals = 1.5 s
    config = {"dsn": DSN, "prefix": prefix, "group_expiry": group_expiry}
    member = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.channels.postgresql_member", json.dumps(config), "room", "50",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert member.stdout is not None
        dead = json.loads(await asyncio.wait_for(member.stdout.readline(), 30))["process_id"]
    finally:
        member.send_signal(signal.SIGKILL)  # no close(): its membership stays behind
        await asyncio.wait_for(member.wait(), 10)
    sender, live = layers(), layers()  # live leases are renewed, and last longer anyway
    channels = [await live.new_channel() for _ in range(20)]
    for channel in channels:
        await live.group_add("room", channel)
    await sender.group_add("room", "test.named-member")

    async def inbox_rows() -> int:
        count: int = await admin.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.inbox WHERE prefix = $1 AND process = $2", prefix, dead
        )
        return count

    await sender.group_send("room", {"type": "m", "n": 1})
    assert await inbox_rows() == 1  # fifty members, one row for their process
    for channel in channels:
        assert (await receive(live, channel))["n"] == 1
    assert (await receive(sender, "test.named-member"))["n"] == 1

    await asyncio.sleep(group_expiry + 0.5)  # the dead process's lease runs out; the live one is renewed
    await sender.group_send("room", {"type": "m", "n": 2})
    assert await inbox_rows() == 1  # nothing new for the dead process
    for channel in channels:
        assert (await receive(live, channel))["n"] == 2
    await sender.prune()
    leases = await admin.fetchval(
        f"SELECT count(*) FROM {SCHEMA}.membership WHERE prefix = $1 AND member = $2", prefix, dead
    )
    assert leases == 0


async def test_expired_rows_and_stale_memberships_are_pruned(layers: Factory, admin: Any, prefix: str) -> None:
    layer = layers(expiry=0.5, group_expiry=0.5, capacity=1000)
    for n in range(650):  # more than one prune batch
        await layer.send("test.unread", {"type": "m", "n": n})
    await layer.group_add("g", "test.member")

    async def rows() -> tuple[int, int]:
        messages = await admin.fetchval(f"SELECT count(*) FROM {SCHEMA}.message WHERE prefix = $1", prefix)
        members = await admin.fetchval(f"SELECT count(*) FROM {SCHEMA}.membership WHERE prefix = $1", prefix)
        return messages, members

    assert await rows() == (650, 1)
    await asyncio.sleep(0.8)
    assert await rows() == (650, 1)  # expired, not yet deleted
    assert await layer.prune() >= 651
    assert await rows() == (0, 0)


async def test_prune_runs_by_itself(layers: Factory, admin: Any, prefix: str) -> None:
    layer = layers(expiry=0.3, prune_interval=0.3)
    await layer.send("test.unread", {"type": "m"})

    async def gone() -> bool:
        count = await admin.fetchval(f"SELECT count(*) FROM {SCHEMA}.message WHERE prefix = $1", prefix)
        return bool(count == 0)

    await until(gone, "the prune loop to delete an expired message")


async def connections_of(admin: Any, layer: Any) -> int:
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1", f"app.channels % {layer.process_id}"
    )
    return count


async def test_connections_stay_bounded(layers: Factory, admin: Any) -> None:
    sender, layer = layers(pool_size=2), layers(pool_size=2)
    groups = [f"room{n}" for n in range(30)]
    channels = [await layer.new_channel() for _ in range(300)]
    await asyncio.gather(*(layer.group_add(groups[n % 30], channel) for n, channel in enumerate(channels)))
    named = [f"test.bounded{n}" for n in range(10)]
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await connections_of(admin, layer))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    readers = [asyncio.create_task(receive(layer, name)) for name in named]
    await asyncio.gather(
        *(sender.group_send(group, {"type": "m", "g": group}) for group in groups),
        *(sender.send(name, {"type": "m"}) for name in named),
        *(layer.group_send(group, {"type": "m", "g": group}) for group in groups[:5]),
    )
    await asyncio.gather(*readers)
    for n, channel in enumerate(channels):
        assert (await receive(layer, channel))["g"] == groups[n % 30]
    done.set()
    await sampler
    assert 1 <= peak <= 3  # the pool (2) and the LISTEN connection, whatever the channel count
    assert await connections_of(admin, layer) <= 3


async def test_close_closes_every_connection(layers: Factory, admin: Any) -> None:
    """The pool, the LISTEN connection and a read in flight: none is left once close() returns."""
    layer, sender = layers(), layers()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await sender.group_send("room", {"type": "m"})
    assert (await receive(layer, channel))["type"] == "m"
    blocked = asyncio.create_task(layer.receive("test.nobody-sends"))
    await until(lambda: connections_of(admin, layer), "the layer's connections to show")
    names = {row["application_name"] for row in await admin.fetch(
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE $1", f"% {layer.process_id}")}
    assert names == {layer.application_name("pool"), layer.application_name("listen")}
    await layer.close()
    with pytest.raises(LayerClosed):
        await blocked

    async def none_left() -> bool:  # a closed connection's server process takes a moment to exit
        return await connections_of(admin, layer) == 0

    await until(none_left, "the server to see every connection of the layer closed")


async def test_a_receive_that_left_holds_no_message(layers: Factory, admin: Any, prefix: str) -> None:
    """A pop whose receive left is not cancelled mid-statement: a row it took goes back in its place."""
    schema = f"chan_left_{prefix}"
    quitter, sender, other = (layers(schema=schema) for _ in range(3))
    try:
        await sender.send("test.left", {"type": "m", "n": 1})
        await sender.send("test.left", {"type": "m", "n": 2})
        async with admin.transaction():  # the pop's DELETE waits for this lock: cancel it meanwhile
            await admin.execute(f'LOCK TABLE "{schema}".message IN ACCESS EXCLUSIVE MODE')
            read = asyncio.create_task(quitter._receive("test.left"))

            async def waiting_for_the_lock() -> bool:
                await admin.execute("SELECT pg_stat_clear_snapshot()")  # a transaction sees one snapshot
                return bool(await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    quitter.application_name("pool")))

            await until(waiting_for_the_lock, "the pop to wait for the table lock")
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read
        await asyncio.wait_for(quitter.close(), 30)  # returns once the row is back
        rows = await admin.fetch(f'SELECT data FROM "{schema}".message WHERE prefix = $1 ORDER BY id', prefix)
        assert len(rows) == 2
        assert [(await receive(other, "test.left"))["n"] for _ in range(2)] == [1, 2]  # in its place
    finally:
        for layer in (quitter, sender, other):
            await layer.close()
        await drop_schema(admin, schema)


# ---------------------------------------------------------------------- faults


async def test_listen_connection_drop_falls_back_and_reconnects(layers: Factory, admin: Any) -> None:
    receiver, sender = layers(), layers()
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    await sender.group_send("room", {"type": "m", "n": 0})
    assert (await receive(receiver, channel))["n"] == 0
    name = f"app.channels listen {receiver.process_id}"
    killed = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", name
    )
    assert killed == 1
    for n in range(1, 4):  # delivered by polling or by the new LISTEN connection
        await sender.group_send("room", {"type": "m", "n": n})
        await sender.send("test.after-drop", {"type": "m", "n": n})
        assert (await receive(receiver, channel))["n"] == n
        assert (await receive(receiver, "test.after-drop"))["n"] == n

    async def listening_again() -> bool:
        return bool(await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name))

    await until(listening_again, "the LISTEN connection to come back")


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as started:
        yield started


async def test_group_send_is_one_statement(cluster: PrivateCluster, prefix: str) -> None:
    """Counted in the server's statement log: one statement per group_send, no pool reset query."""
    import asyncpg

    admin = await asyncpg.connect(cluster.dsn)
    await admin.execute("ALTER SYSTEM SET log_statement = 'all'")
    await admin.execute("SELECT pg_reload_conf()")
    config = {"dsn": cluster.dsn, "prefix": prefix, "pool_size": 1}
    sender, members = build_layer("postgresql", config), [build_layer("postgresql", config) for _ in range(3)]
    try:
        for layer in members:
            for channel in [await layer.new_channel() for _ in range(20)]:
                await layer.group_add("room", channel)
        await sender.group_add("room", "test.named")
        await sender.group_send("room", {"type": "m", "n": 0})  # prepares the statement
        backend = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", f"app.channels pool {sender.process_id}"
        )
        log = cluster.root / "log"
        start = log.stat().st_size
        await sender.group_send("room", {"type": "m", "n": 1})
        await admin.execute("SELECT 'mark'")  # logged after the group_send's lines
        text = log.read_text()[start:]
        ours = [line for line in text.splitlines() if f"[{backend}]" in line and "LOG:" in line]
        assert len(ours) == 1 and "execute" in ours[0], ours  # statement text follows on the next lines
        assert "pg_notify" in text and "RESET ALL" not in text
        for layer in members:
            assert (await receive(layer, next(iter(layer._local))))["n"] == 0
    finally:
        await admin.execute("ALTER SYSTEM RESET log_statement")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
        for layer in (sender, *members):
            await layer.close()


async def test_postgresql_crash_and_restart(cluster: PrivateCluster, prefix: str) -> None:
    config = {"dsn": cluster.dsn, "prefix": prefix}
    receiver, sender = build_layer("postgresql", config), build_layer("postgresql", config)
    try:
        channel = await receiver.new_channel()
        await receiver.group_add("room", channel)
        await sender.group_send("room", {"type": "m", "n": 0})
        assert (await receive(receiver, channel))["n"] == 0
        for cycle in (1, 2):
            await asyncio.to_thread(cluster.kill)
            with pytest.raises(BrokerUnavailable, match="unavailable"):
                await sender.group_send("room", {"type": "m"})
            with pytest.raises(BrokerUnavailable):
                await sender.send("test.named", {"type": "m"})
            pending = asyncio.create_task(receive(receiver, channel, seconds=40))
            named = asyncio.create_task(receive(receiver, "test.named", seconds=40))
            await asyncio.sleep(0.5)  # readers poll a dead server meanwhile
            assert not pending.done() and not named.done()
            await asyncio.to_thread(cluster.start)

            async def sent(cycle: int = cycle) -> bool:
                try:
                    await sender.group_send("room", {"type": "m", "n": cycle})
                except BrokerUnavailable:
                    return False
                return True

            await until(sent, "a group_send to succeed after the restart", seconds=30)
            await sender.send("test.named", {"type": "m", "n": cycle})
            for task, name in ((pending, channel), (named, "test.named")):
                seen = [(await task)["n"]]
                while seen[-1] != cycle:  # a crash may re-deliver what was read just before it
                    seen.append((await receive(receiver, name))["n"])
                assert set(seen) <= set(range(cycle + 1)), seen
    finally:
        await receiver.close()
        await sender.close()
